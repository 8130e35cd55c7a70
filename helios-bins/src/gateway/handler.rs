//! Request handling: the fixed middleware order of the module docs, then the routes.
//!
//! Routes (see `docs/openapi.yaml`):
//! - `GET /healthz`, `GET /readyz`, `GET /metrics` (no auth);
//! - `POST /api/v1/auth/register|login|refresh` (no token; their own stricter limit),
//!   `POST /api/v1/auth/logout`, `GET /api/v1/auth/me`, `POST /api/v1/auth/password`
//!   (`account.rs`; a token, no permission);
//! - `GET /api/v1/kv` (list), `GET|PUT|DELETE /api/v1/kv/{key}`.

// Handlers return `Err(response)` to answer early; the response is moved once per request,
// so boxing it (what this lint asks) would only add an allocation.
#![allow(clippy::result_large_err)]

use super::State;
use super::kv::Space;
use super::metrics::RequestLabels;
use super::problem::{Body, empty, json, problem};
pub(super) use crate::net::client_key;
use bytes::Bytes;
use helios_atlas::AtlasError;
use helios_auth::rbac::perms;
use helios_auth::{AuthError, Claims, Decision};
use helios_core::digits::{push_dec_str as push_dec, push_hex_str as push_hex};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// The route-level permission of the job routes decided per job (see
/// `Route::checked_per_object`): some permission on `jobs`.
const JOBS_SOME: &str = "jobs:*";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Index,
    ApiIndex,
    OpenApi,
    Healthz,
    Readyz,
    Metrics,
    Register,
    Login,
    Refresh,
    Logout,
    Me,
    Password,
    KvList,
    KvItem,
    NsKvList,
    NsKvItem,
    AdminUserKvList,
    AdminUserKvItem,
    Jobs,
    JobClaim,
    Job,
    JobAction,
    Queues,
    Dlq,
    DlqRedrive,
    AdminStats,
    AdminSnapshot,
    AdminRewrite,
    AdminBackup,
    AdminUsers,
    AdminUserRoles,
    AdminUserRole,
    AdminUserAction,
    AdminRoles,
    AdminRole,
    AdminRateLimits,
    AdminLockouts,
    AdminLockout,
}

impl Route {
    const ALL: &[Route] = &[
        Route::Index,
        Route::ApiIndex,
        Route::OpenApi,
        Route::Healthz,
        Route::Readyz,
        Route::Metrics,
        Route::Register,
        Route::Login,
        Route::Refresh,
        Route::Logout,
        Route::Me,
        Route::Password,
        Route::KvList,
        Route::KvItem,
        Route::NsKvList,
        Route::NsKvItem,
        Route::AdminUserKvList,
        Route::AdminUserKvItem,
        Route::Jobs,
        Route::JobClaim,
        Route::Job,
        Route::JobAction,
        Route::Queues,
        Route::Dlq,
        Route::DlqRedrive,
        Route::AdminStats,
        Route::AdminSnapshot,
        Route::AdminRewrite,
        Route::AdminBackup,
        Route::AdminUsers,
        Route::AdminUserRoles,
        Route::AdminUserRole,
        Route::AdminUserAction,
        Route::AdminRoles,
        Route::AdminRole,
        Route::AdminRateLimits,
        Route::AdminLockouts,
        Route::AdminLockout,
    ];

    fn pattern(self) -> &'static str {
        match self {
            Route::Index => "/",
            Route::ApiIndex => "/api/v1",
            Route::OpenApi => "/openapi.yaml",
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::Register => "/api/v1/auth/register",
            Route::Login => "/api/v1/auth/login",
            Route::Refresh => "/api/v1/auth/refresh",
            Route::Logout => "/api/v1/auth/logout",
            Route::Me => "/api/v1/auth/me",
            Route::Password => "/api/v1/auth/password",
            Route::KvList => "/api/v1/kv",
            Route::KvItem => "/api/v1/kv/{key}",
            Route::NsKvList => "/api/v1/ns/{ns}/kv",
            Route::NsKvItem => "/api/v1/ns/{ns}/kv/{key}",
            Route::AdminUserKvList => "/admin/users/{id}/kv",
            Route::AdminUserKvItem => "/admin/users/{id}/kv/{key}",
            Route::Jobs => "/api/v1/jobs",
            Route::JobClaim => "/api/v1/jobs/claim",
            Route::Job => "/api/v1/jobs/{id}",
            Route::JobAction => "/api/v1/jobs/{id}/{action}",
            Route::Queues => "/api/v1/queues",
            Route::Dlq => "/api/v1/queues/{queue}/dlq",
            Route::DlqRedrive => "/api/v1/queues/{queue}/dlq/redrive",
            Route::AdminStats => "/admin/stats",
            Route::AdminSnapshot => "/admin/snapshot",
            Route::AdminRewrite => "/admin/aof/rewrite",
            Route::AdminBackup => "/admin/backup",
            Route::AdminUsers => "/admin/users",
            Route::AdminUserRoles => "/admin/users/{id}/roles",
            Route::AdminUserRole => "/admin/users/{id}/roles/{role}",
            Route::AdminUserAction => "/admin/users/{id}/{action}",
            Route::AdminRoles => "/admin/roles",
            Route::AdminRole => "/admin/roles/{name}",
            Route::AdminRateLimits => "/admin/rate-limits",
            Route::AdminLockouts => "/admin/lockouts",
            Route::AdminLockout => "/admin/lockouts/{username}",
        }
    }

    fn methods(self) -> &'static [Method] {
        match self {
            Route::Index
            | Route::ApiIndex
            | Route::OpenApi
            | Route::Healthz
            | Route::Readyz
            | Route::Metrics
            | Route::Me
            | Route::KvList
            | Route::NsKvList
            | Route::AdminUserKvList => &[Method::GET],
            Route::Register | Route::Login | Route::Refresh | Route::Logout | Route::Password => {
                &[Method::POST]
            }
            Route::KvItem | Route::NsKvItem | Route::AdminUserKvItem => {
                &[Method::GET, Method::PUT, Method::DELETE]
            }
            Route::Jobs => &[Method::GET, Method::POST],
            Route::JobClaim | Route::JobAction | Route::DlqRedrive => &[Method::POST],
            Route::Job | Route::Queues | Route::Dlq => &[Method::GET],
            Route::AdminStats | Route::AdminUsers | Route::AdminRoles => &[Method::GET],
            Route::AdminSnapshot
            | Route::AdminRewrite
            | Route::AdminBackup
            | Route::AdminUserRoles
            | Route::AdminUserAction => &[Method::POST],
            Route::AdminUserRole => &[Method::DELETE],
            Route::AdminRole => &[Method::PUT, Method::DELETE],
            Route::AdminRateLimits => &[Method::GET, Method::PUT],
            Route::AdminLockouts => &[Method::GET],
            Route::AdminLockout => &[Method::DELETE],
        }
    }

    /// Every route needs a token except the ops endpoints and the three ways to get one
    /// (an allowlist: a new route is protected unless listed here).
    fn needs_token(self) -> bool {
        !(self.is_ops() || matches!(self, Route::Register | Route::Login | Route::Refresh))
    }

    /// The routes that skip authentication, rate limiting and RBAC. `/metrics` is not one
    /// on the API listener (it needs `metrics:read`; `metrics_listen` serves it openly,
    /// on an address the operator chooses).
    fn is_ops(self) -> bool {
        matches!(
            self,
            Route::Index | Route::ApiIndex | Route::OpenApi | Route::Healthz | Route::Readyz
        )
    }

    fn permission(self, method: &Method) -> Option<&'static str> {
        match (self, method) {
            (Route::Me, _) => Some(perms::USERS_READ_SELF),
            (Route::Metrics, _) => Some(perms::METRICS_READ),
            (Route::KvList, _) | (Route::KvItem, &Method::GET) => Some(perms::KV_READ),
            (Route::KvItem, _) => Some(perms::KV_WRITE),
            (Route::AdminUserKvList, _) | (Route::AdminUserKvItem, _) => Some(perms::ADMIN_ALL),
            (Route::Jobs, &Method::POST) => Some(perms::JOBS_ENQUEUE),
            // Decided per job in jobs.rs (see `checked_per_object`).
            (Route::Jobs, _) | (Route::Job, _) | (Route::JobAction, _) => Some(JOBS_SOME),
            (Route::JobClaim, _) => Some(perms::JOBS_WORK),
            (Route::Queues, _) | (Route::Dlq, _) | (Route::DlqRedrive, _) => {
                Some(perms::JOBS_ADMIN)
            }
            // Rate limits bind every client, admins included: setting them is admin:*'s
            // (with users:admin, a limit of one request a day on the admin's id would
            // lock the admin out).
            (Route::AdminStats, _)
            | (Route::AdminSnapshot, _)
            | (Route::AdminRewrite, _)
            | (Route::AdminBackup, _)
            | (Route::AdminRateLimits, &Method::PUT) => Some(perms::ADMIN_ALL),
            (Route::AdminUsers, _)
            | (Route::AdminUserRoles, _)
            | (Route::AdminUserRole, _)
            | (Route::AdminUserAction, _)
            | (Route::AdminRoles, _)
            | (Route::AdminRole, _)
            | (Route::AdminRateLimits, &Method::GET)
            | (Route::AdminLockouts, _)
            | (Route::AdminLockout, _) => Some(perms::USERS_ADMIN),
            _ => None,
        }
    }

    /// Whether the route's permission is decided per object by its handler (jobs.rs: the
    /// owner, `jobs:admin`, `jobs:work:{queue}` of the job's or the body's queue): the RBAC
    /// step then asks only for some of [`Route::permission`] (`Auth::authorize_some`:
    /// `jobs:work:emails` is some of `jobs:work`, anything on `jobs` some of `jobs:*`), so
    /// a caller with none of it is refused before the body is read.
    fn checked_per_object(self, method: &Method) -> bool {
        matches!(
            (self, method),
            (Route::Jobs, &Method::GET) | (Route::Job | Route::JobAction | Route::JobClaim, _)
        )
    }

    /// For routes whose permission names the object in the path: the permission's
    /// `resource:action`, completed with the path's scope (`kv:read:{ns}`).
    fn scoped_permission(self, method: &Method) -> Option<&'static str> {
        match (self, method) {
            (Route::NsKvList, _) | (Route::NsKvItem, &Method::GET) => Some(perms::KV_READ),
            (Route::NsKvItem, _) => Some(perms::KV_WRITE),
            _ => None,
        }
    }
}

/// The method as a static label (anything unusual is `OTHER`, so labels stay bounded).
fn static_method(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

fn route_name(r: Route) -> &'static str {
    r.pattern()
}

/// The route table.
#[derive(Debug)]
pub(super) struct Router {
    inner: matchit::Router<Route>,
}

impl Router {
    pub(super) fn new() -> Self {
        let mut inner = matchit::Router::new();
        for &r in Route::ALL {
            // The patterns above are distinct and valid: a failure is a bug.
            inner
                .insert(r.pattern(), r)
                .expect("route patterns are valid and distinct");
        }
        Self { inner }
    }
}

/// The patterns and methods the router serves (the OpenAPI test compares them).
pub fn routes() -> Vec<(&'static str, Vec<Method>)> {
    Route::ALL
        .iter()
        .map(|r| (r.pattern(), r.methods().to_vec()))
        .collect()
}

fn request_id(req: &Request<Incoming>, state: &State) -> String {
    if let Some(v) = req.headers().get("x-request-id")
        && let Ok(s) = v.to_str()
        && !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| b.is_ascii_graphic())
    {
        return s.to_owned();
    }
    let n = state.metrics.requests_seen();
    let mut id = String::with_capacity(33);
    push_hex(&mut id, state.clock.now_ms());
    id.push('-');
    push_hex(&mut id, n);
    id
}

/// Handles one request through every step.
pub(super) async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let started = Instant::now();
    let rid = request_id(&req, &state);
    let method = req.method().clone();
    let span = tracing::info_span!("request", request_id = %rid, method = %method, path = %req.uri().path());
    let (route, mut resp) = dispatch(&state, req, peer).instrument(span.clone()).await;
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let elapsed = started.elapsed();
    state.metrics.count_request(RequestLabels {
        route: route.map_or("unmatched", Route::pattern),
        method: static_method(&method),
        status: resp.status().as_u16(),
    });
    state
        .metrics
        .duration
        .observe_us(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    span.in_scope(|| {
        tracing::info!(
            status = resp.status().as_u16(),
            micros = elapsed.as_micros() as u64,
            "served"
        );
    });
    resp
}

/// Reads a request body (after the head passed authentication, rate limit and RBAC):
/// a declared length over `http.body_size_max` is refused before a byte is read, and
/// bodies in flight share `http.body_bytes_in_flight_max` (a request waits up to a second
/// for its share, else 503), so stalled bodies cannot grow memory without bound.
async fn read_body(
    state: &State,
    parts: &http::request::Parts,
    body: Incoming,
    limit: usize,
) -> Result<Bytes, Response<Body>> {
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        let mut r = problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            format!("the body is over {limit} bytes"),
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    if declared == Some(0) {
        return Ok(Bytes::new());
    }
    // Reserve the most this body may take (its declared length, else the limit).
    let share = declared.map_or(limit, |n| n as usize).min(limit);
    let share = u32::try_from(share).unwrap_or(u32::MAX);
    let permit = match tokio::time::timeout(
        Duration::from_secs(1),
        state.body_budget.clone().acquire_many_owned(share),
    )
    .await
    {
        Ok(Ok(p)) => p,
        _ => {
            let mut r = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many request bodies in flight; retry shortly",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Err(r);
        }
    };
    let timeout = Duration::from_millis(state.config.http.body_read_timeout_ms);
    let read = tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await;
    drop(permit);
    match read {
        Err(_) => Err(problem(
            StatusCode::REQUEST_TIMEOUT,
            "body-timeout",
            "the request body did not arrive in time",
        )),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(too_large())
            } else {
                Err(problem(StatusCode::BAD_REQUEST, "bad-body", e.to_string()))
            }
        }
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

pub(super) fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Response<Body>> {
    serde_json::from_slice(body).map_err(|e| {
        problem(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            format!("request body: {e}"),
        )
    })
}

fn rate_headers(resp: &mut Response<Body>, d: &Decision) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&d.policy) {
        h.insert("ratelimit-policy", v);
    }
    let name = d.policy.split(';').next().unwrap_or("\"default\"");
    let mut value = String::with_capacity(name.len() + 24);
    value.push_str(name);
    value.push_str(";r=");
    push_dec(&mut value, d.remaining);
    value.push_str(";t=");
    push_dec(&mut value, d.reset_s);
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert("ratelimit", v);
    }
    if let Some(s) = d.retry_after_s {
        h.insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
}

pub(super) fn auth_error(e: AuthError) -> Response<Body> {
    match e {
        AuthError::InvalidCredentials => problem(
            StatusCode::UNAUTHORIZED,
            "invalid-credentials",
            "invalid username or password",
        ),
        AuthError::LockedOut { retry_after_ms } => {
            let mut r = problem(
                StatusCode::TOO_MANY_REQUESTS,
                "locked-out",
                "too many failed logins",
            );
            if let Ok(v) = HeaderValue::from_str(&retry_after_ms.div_ceil(1000).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        AuthError::Disabled => problem(
            StatusCode::FORBIDDEN,
            "account-disabled",
            "account is disabled",
        ),
        AuthError::UsernameTaken(u) => problem(
            StatusCode::CONFLICT,
            "username-taken",
            format!("username {u:?} is taken"),
        ),
        AuthError::Invalid { field, reason } => problem(
            StatusCode::BAD_REQUEST,
            "invalid-field",
            format!("{field}: {reason}"),
        ),
        AuthError::RegistrationClosed => problem(
            StatusCode::FORBIDDEN,
            "registration-closed",
            "self-registration is disabled",
        ),
        AuthError::RefreshReuse => problem(
            StatusCode::UNAUTHORIZED,
            "refresh-reuse",
            "refresh token reuse detected; the session is revoked",
        ),
        AuthError::InvalidToken { .. } => problem(
            StatusCode::UNAUTHORIZED,
            "invalid-token",
            "the token is not valid",
        ),
        AuthError::TokenExpired => problem(
            StatusCode::UNAUTHORIZED,
            "token-expired",
            "the access token has expired: renew it with POST /api/v1/auth/refresh",
        ),
        AuthError::Store(e) => store_error(e),
        other => {
            tracing::error!(error = %other, "auth failure");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

pub(super) fn store_error(e: AtlasError) -> Response<Body> {
    match e {
        AtlasError::MemoryLimit { .. } => problem(
            StatusCode::INSUFFICIENT_STORAGE,
            "memory-limit",
            "the store is at its memory limit; deletes still work",
        ),
        AtlasError::KeyInvalid { .. }
        | AtlasError::ValueTooLarge { .. }
        | AtlasError::InvalidArgument { .. }
        | AtlasError::BatchTooLarge { .. } => {
            problem(StatusCode::BAD_REQUEST, "invalid-field", e.to_string())
        }
        AtlasError::PreconditionFailed { .. } => problem(
            StatusCode::PRECONDITION_FAILED,
            "precondition-failed",
            "the precondition does not hold",
        ),
        other => {
            tracing::error!(error = %other, "store refused a write");
            let mut r = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "the store cannot take writes now; reads still work",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
    }
}

/// Runs blocking work (bcrypt, writes that may fsync) off the reactor.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response<Body>> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "blocking task failed");
        problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    })
}

async fn dispatch(
    state: &Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> (Option<Route>, Response<Body>) {
    let Ok(m) = state.router.inner.at(req.uri().path()) else {
        return (
            None,
            problem(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no route for {}", req.uri().path()),
            ),
        );
    };
    let route = *m.value;
    let raw_key = m
        .params
        .get("key")
        .or_else(|| m.params.get("id"))
        .or_else(|| m.params.get("queue"))
        .or_else(|| m.params.get("username"))
        .map(str::to_owned);
    let action = m.params.get("action").map(str::to_owned);
    // The namespace a KV route acts on: a shared one by name, or (admin) a user's by id.
    let scope = match route {
        Route::NsKvList | Route::NsKvItem => m.params.get("ns").map(str::to_owned),
        Route::AdminUserKvList | Route::AdminUserKvItem => m.params.get("id").map(str::to_owned),
        _ => None,
    };
    let extra = m
        .params
        .get("role")
        .or_else(|| m.params.get("name"))
        .map(str::to_owned);
    let method = req.method().clone();
    if !route.methods().contains(&method) {
        let allow: Vec<&str> = route.methods().iter().map(Method::as_str).collect();
        let mut r = problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            format!("{method} is not allowed on {}", route.pattern()),
        );
        if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
            r.headers_mut().insert(header::ALLOW, v);
        }
        return (Some(route), r);
    }
    let params = PathParams {
        raw_key,
        action,
        extra,
        scope,
    };
    let work = route_request(state, route, params, req, peer);
    // Every request has a deadline; a long-polling claim bounds its own wait instead.
    let result = if route == Route::JobClaim {
        work.await
    } else {
        let limit = Duration::from_millis(state.config.http.request_timeout_ms);
        match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => Err(problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!("no answer within {} ms", limit.as_millis()),
            )),
        }
    };
    let resp = match result {
        Ok(r) | Err(r) => r,
    };
    (Some(route), resp)
}

/// The largest body of the credential routes (register, login, refresh, password).
const CREDENTIALS_BODY_MAX: usize = 16 * 1024;

/// What the head of a request earned: its verified claims, the KV namespace it acts on,
/// and the rate-limit decision (for the response's headers).
type Gate = (Option<Arc<Claims>>, Option<Space>, Decision);

/// Authentication, rate limit and RBAC, on the request head alone. A missing or bad
/// token is charged to the client address's rate limit, so a flood of them turns from
/// 401 into 429.
async fn gate(
    state: &Arc<State>,
    route: Route,
    parts: &http::request::Parts,
    scope: Option<String>,
    client: &str,
) -> Result<Gate, Response<Body>> {
    let now = state.clock.now_ms();
    let refused_auth = |mut r: Response<Body>| -> Response<Body> {
        let d = state.limiter.check(&format!("ip.{client}"), &[], 1, now);
        if !d.allowed {
            state.metrics.denied.inc();
            r = problem(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "too many requests; see Retry-After",
            );
            rate_headers(&mut r, &d);
        }
        r
    };
    // Authentication.
    let claims: Option<Arc<Claims>> = if route.needs_token() {
        let Some(token) = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            let mut r = problem(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a Bearer token is required",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Err(refused_auth(r));
        };
        match state.auth.verify_access_shared(token) {
            Ok(c) => Some(c),
            Err(e) => {
                // RFC 6750 section 3: an expired token is an invalid_token too; the
                // description (and the problem type) tell the client to refresh.
                let challenge = if matches!(e, AuthError::TokenExpired) {
                    "Bearer error=\"invalid_token\", error_description=\"the access token expired\""
                } else {
                    "Bearer error=\"invalid_token\""
                };
                let mut r = auth_error(e);
                if r.status() == StatusCode::UNAUTHORIZED {
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static(challenge),
                    );
                    return Err(refused_auth(r));
                }
                return Err(r);
            }
        }
    } else {
        None
    };
    // Rate limit: per user when authenticated, else per address; auth endpoints have
    // their own stricter limiter.
    let decision = match &claims {
        Some(c) => {
            let mut client = String::with_capacity(5 + c.sub.len());
            client.push_str("user.");
            client.push_str(&c.sub);
            state.limiter.check(&client, &c.roles, 1, now)
        }
        None => state
            .login_limiter
            // Its own key family: both limiters persist buckets under `rate:{client}`,
            // and the login limiter's small bucket must not become the API limiter's.
            .check(&format!("login.ip.{client}"), &[], 1, now),
    };
    if !decision.allowed {
        state.metrics.denied.inc();
        let mut r = problem(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "too many requests; see Retry-After",
        );
        rate_headers(&mut r, &decision);
        return Err(r);
    }
    // Every limited response carries the rate-limit headers, refusals included.
    match authorize(state, route, parts, scope, claims.as_deref()) {
        Ok(space) => Ok((claims, space, decision)),
        Err(mut r) => {
            rate_headers(&mut r, &decision);
            Err(r)
        }
    }
}

/// The KV namespace a request acts on, and RBAC (failing closed).
fn authorize(
    state: &State,
    route: Route,
    parts: &http::request::Parts,
    scope: Option<String>,
    claims: Option<&Claims>,
) -> Result<Option<Space>, Response<Body>> {
    // The namespace of a KV route (a shared one's name is checked before RBAC uses it).
    let space = match route {
        Route::KvList | Route::KvItem => claims.map(|c| Space::User(c.sub.clone())),
        Route::NsKvList | Route::NsKvItem => Some(Space::shared(scope.as_deref())?),
        Route::AdminUserKvList | Route::AdminUserKvItem => {
            let id = scope
                .as_deref()
                .and_then(percent_decode)
                .unwrap_or_default();
            Some(Space::User(id))
        }
        _ => None,
    };
    // RBAC, failing closed: a route with a permission and no verified caller is refused.
    let needed = match (route.permission(&parts.method), &space) {
        (Some(p), _) => Some(std::borrow::Cow::Borrowed(p)),
        (None, Some(Space::Shared(ns))) => route
            .scoped_permission(&parts.method)
            .map(|p| std::borrow::Cow::Owned(format!("{p}:{ns}"))),
        _ => None,
    };
    if let Some(p) = needed {
        let allowed = claims.is_some_and(|c| {
            if route.checked_per_object(&parts.method) {
                state.auth.authorize_some(&c.sub, &p)
            } else {
                state.auth.authorize(&c.sub, &p)
            }
        });
        if !allowed {
            return Err(problem(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("missing permission {p}"),
            ));
        }
    }
    // An admin reaches an existing user's namespace only.
    if let (Route::AdminUserKvList | Route::AdminUserKvItem, Some(Space::User(id))) =
        (route, &space)
        && state.auth.user(id).is_none()
    {
        return Err(problem(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no user {id:?}"),
        ));
    }
    Ok(space)
}

/// The path parameters a route uses (by role, not by name).
struct PathParams {
    /// `key`, else `id`, else `queue`.
    raw_key: Option<String>,
    /// `action`.
    action: Option<String>,
    /// `role`, else `name`.
    extra: Option<String>,
    /// A KV route's namespace: `ns`, or (admin) the user `id`.
    scope: Option<String>,
}

async fn route_request(
    state: &Arc<State>,
    route: Route,
    params: PathParams,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, Response<Body>> {
    let PathParams {
        raw_key,
        action,
        extra,
        scope,
    } = params;
    if route.is_ops() {
        return Ok(ops(state, route));
    }
    let (parts, body) = req.into_parts();
    // Everything up to the route's handler is decided on the head alone: a request
    // refused there never has its body read (and, if it declared one, its HTTP/1
    // connection is closed rather than drained).
    let declares_body = parts.headers.contains_key(header::TRANSFER_ENCODING)
        || parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let client = client_key(peer.ip());
    let gate = gate(state, route, &parts, scope, &client).await;
    let (claims, space, decision) = match gate {
        Ok(g) => g,
        Err(mut r) => {
            if declares_body && parts.version <= http::Version::HTTP_11 {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return Err(r);
        }
    };
    let body = if matches!(parts.method, Method::POST | Method::PUT) {
        // The routes anyone may call take credentials only: a small body, so that
        // unauthenticated bodies cannot take much of the in-flight budget.
        let limit = match route {
            Route::Register | Route::Login | Route::Refresh | Route::Password => {
                CREDENTIALS_BODY_MAX
            }
            _ => usize::MAX,
        }
        .min(usize::try_from(state.config.http.body_size_max).unwrap_or(usize::MAX));
        match read_body(state, &parts, body, limit).await {
            Ok(b) => b,
            Err(mut r) => {
                rate_headers(&mut r, &decision);
                return Err(r);
            }
        }
    } else {
        Bytes::new()
    };
    let result = match route {
        Route::Register => register(state, &body).await,
        Route::Login => login(state, &body, client).await,
        Route::Refresh => refresh(state, &body).await,
        Route::Logout => logout(state, claims).await,
        Route::Me => me(state, claims),
        Route::Password => super::account::change_password(state, claims, &body, client).await,
        Route::KvList | Route::NsKvList | Route::AdminUserKvList => match &space {
            Some(sp) => super::kv::list(state, sp, parts.uri.query().unwrap_or("")),
            None => Err(no_space()),
        },
        Route::KvItem | Route::NsKvItem | Route::AdminUserKvItem => match space {
            Some(sp) => super::kv::item(state, &parts, sp, raw_key, &body).await,
            None => Err(no_space()),
        },
        Route::Jobs if parts.method == Method::POST => {
            super::jobs::enqueue(state, claims.as_deref(), &body).await
        }
        Route::Jobs => super::jobs::list(state, claims.as_deref(), parts.uri.query().unwrap_or("")),
        Route::JobClaim => super::jobs::claim(state, claims.as_deref(), &body).await,
        Route::Job => super::jobs::get(state, claims.as_deref(), raw_key),
        Route::JobAction => {
            super::jobs::action(state, claims.as_deref(), raw_key, action, &body).await
        }
        Route::Queues => super::jobs::queues(state),
        Route::Dlq => super::jobs::dlq(state, raw_key, parts.uri.query().unwrap_or("")),
        Route::DlqRedrive => super::jobs::redrive(state, raw_key, &body).await,
        Route::AdminStats
        | Route::AdminSnapshot
        | Route::AdminRewrite
        | Route::AdminBackup
        | Route::AdminUsers
        | Route::AdminUserRoles
        | Route::AdminUserRole
        | Route::AdminUserAction
        | Route::AdminRoles
        | Route::AdminRole
        | Route::AdminRateLimits
        | Route::AdminLockouts
        | Route::AdminLockout => {
            // The acting user: role and account changes are checked against its own
            // permissions (no privilege escalation).
            let actor = claims.as_ref().map_or("", |c| c.sub.as_str());
            super::admin::handle(
                state,
                route_name(route),
                &parts.method,
                raw_key,
                action.or(extra),
                &body,
                actor,
            )
            .await
        }
        Route::Index
        | Route::ApiIndex
        | Route::OpenApi
        | Route::Healthz
        | Route::Readyz
        | Route::Metrics => Ok(ops(state, route)),
    };
    // Every limited response carries the rate-limit headers, errors included.
    let mut resp = match result {
        Ok(r) | Err(r) => r,
    };
    rate_headers(&mut resp, &decision);
    Ok(resp)
}

/// A KV route without a namespace: only reachable without claims, which the token step
/// refuses first; kept as a closed failure rather than a panic.
fn no_space() -> Response<Body> {
    problem(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a Bearer token is required",
    )
}

/// The API description served at `/openapi.yaml` (the same file the OpenAPI test checks
/// against the router).
const OPENAPI_YAML: &str = include_str!("../../../docs/openapi.yaml");

fn ops(state: &State, route: Route) -> Response<Body> {
    match route {
        Route::Index => {
            let mut links = serde_json::json!({
                "api": "/api/v1",
                "openapi": "/openapi.yaml",
                "health": "/healthz",
                "ready": "/readyz",
            });
            if state.config.metrics_listen.is_empty() {
                links["metrics"] = "/metrics".into();
            }
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "name": "helios-gateway",
                    "version": env!("CARGO_PKG_VERSION"),
                    "links": links,
                }),
            )
        }
        Route::ApiIndex => json(
            StatusCode::OK,
            &serde_json::json!({
                "version": "v1",
                "links": {
                    "register": "/api/v1/auth/register",
                    "login": "/api/v1/auth/login",
                    "refresh": "/api/v1/auth/refresh",
                    "me": "/api/v1/auth/me",
                    "kv": "/api/v1/kv",
                    "jobs": "/api/v1/jobs",
                    "queues": "/api/v1/queues",
                    "openapi": "/openapi.yaml",
                },
            }),
        ),
        Route::OpenApi => {
            let mut r = Response::new(http_body_util::Full::new(Bytes::from_static(
                OPENAPI_YAML.as_bytes(),
            )));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/yaml"),
            );
            r
        }
        Route::Healthz => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        Route::Readyz => match state.atlas.stats().write_error {
            None => json(StatusCode::OK, &serde_json::json!({"status": "ready"})),
            // The error's text (paths, OS errors) goes to the log, not to anonymous callers.
            Some(e) => {
                tracing::warn!(error = %e, "not ready: the store refuses writes");
                problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    "the store refuses writes after an I/O error; see the server's log",
                )
            }
        },
        // With a metrics listener configured, scrapes go there only.
        _ if !state.config.metrics_listen.is_empty() => problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "/metrics is served on the metrics listener",
        ),
        _ => metrics_response(state),
    }
}

/// The Prometheus text of every metric.
pub(super) fn metrics_response(state: &State) -> Response<Body> {
    let mut r = Response::new(http_body_util::Full::new(Bytes::from(
        state.metrics.encode(&state.atlas, &state.queue),
    )));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    username: String,
    password: String,
}

async fn register(state: &Arc<State>, body: &[u8]) -> Result<Response<Body>, Response<Body>> {
    let c: Credentials = parse(body)?;
    let auth = state.auth.clone();
    let u = blocking(move || auth.register(&c.username, &c.password))
        .await?
        .map_err(auth_error)?;
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({"id": u.id, "username": u.username}),
    ))
}

async fn login(
    state: &Arc<State>,
    body: &[u8],
    ip: String,
) -> Result<Response<Body>, Response<Body>> {
    let c: Credentials = parse(body)?;
    // A name under attack from many addresses: every attempt waits a bounded delay (never
    // a lock the right password cannot pass), off the blocking pool.
    let delay = state.auth.login_delay_ms(&c.username);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let auth = state.auth.clone();
    let pair = blocking(move || auth.login(&c.username, &c.password, &ip))
        .await?
        .map_err(auth_error)?;
    Ok(json(StatusCode::OK, &pair))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    refresh_token: String,
}

async fn refresh(state: &Arc<State>, body: &[u8]) -> Result<Response<Body>, Response<Body>> {
    let b: RefreshBody = parse(body)?;
    let auth = state.auth.clone();
    let pair = blocking(move || auth.refresh(&b.refresh_token))
        .await?
        .map_err(auth_error)?;
    Ok(json(StatusCode::OK, &pair))
}

async fn logout(
    state: &Arc<State>,
    claims: Option<Arc<Claims>>,
) -> Result<Response<Body>, Response<Body>> {
    let Some(c) = claims else {
        return Err(problem(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a Bearer token is required",
        ));
    };
    let auth = state.auth.clone();
    blocking(move || auth.logout(&c))
        .await?
        .map_err(auth_error)?;
    Ok(empty(StatusCode::NO_CONTENT))
}

fn me(state: &State, claims: Option<Arc<Claims>>) -> Result<Response<Body>, Response<Body>> {
    let sub = claims.map(|c| c.sub.clone()).unwrap_or_default();
    let u = state
        .auth
        .user(&sub)
        .ok_or_else(|| problem(StatusCode::NOT_FOUND, "not-found", "user not found"))?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"id": u.id, "username": u.username, "roles": u.roles}),
    ))
}

pub(super) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The decoded `key=value` pairs of a query string (`+` is a space).
pub(super) fn query_pairs(query: &str) -> Result<Vec<(String, String)>, Response<Body>> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            percent_decode(&v.replace('+', " "))
                .map(|v| (k.to_owned(), v))
                .ok_or_else(|| {
                    problem(
                        StatusCode::BAD_REQUEST,
                        "invalid-field",
                        format!("{k}: bad percent-encoding"),
                    )
                })
        })
        .collect()
}

/// A page size parameter: 1..=1000.
pub(super) fn page_limit(v: &str) -> Result<usize, Response<Body>> {
    v.parse()
        .ok()
        .filter(|l| (1..=1000).contains(l))
        .ok_or_else(|| problem(StatusCode::BAD_REQUEST, "invalid-field", "limit: 1..=1000"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_segments_win_and_permissions() {
        let r = Router::new();
        assert_eq!(
            *r.inner.at("/api/v1/jobs/claim").unwrap().value,
            Route::JobClaim
        );
        assert_eq!(*r.inner.at("/api/v1/jobs/abc").unwrap().value, Route::Job);
        assert_eq!(
            Route::JobClaim.permission(&Method::POST),
            Some(perms::JOBS_WORK)
        );
        // Job routes decided per job; enqueue and the queue admin routes are not.
        assert!(Route::Job.checked_per_object(&Method::GET));
        assert!(Route::JobAction.checked_per_object(&Method::POST));
        assert!(Route::Jobs.checked_per_object(&Method::GET));
        assert!(!Route::Jobs.checked_per_object(&Method::POST));
        assert!(!Route::Dlq.checked_per_object(&Method::GET));
    }

    #[test]
    fn every_route_but_ops_and_login_needs_a_token_and_most_a_permission() {
        for &r in Route::ALL {
            let open = matches!(
                r,
                Route::Index
                    | Route::ApiIndex
                    | Route::OpenApi
                    | Route::Healthz
                    | Route::Readyz
                    | Route::Register
                    | Route::Login
                    | Route::Refresh
            );
            assert_eq!(r.needs_token(), !open, "{r:?}");
            for m in r.methods() {
                let exempt = open || r == Route::Logout || r == Route::Password;
                let guarded = r.permission(m).is_some() || r.scoped_permission(m).is_some();
                assert_eq!(guarded, !exempt, "{r:?} {m}");
            }
        }
    }
}
