//! Request handling: the fixed middleware order of the module docs, then the routes.
//!
//! Routes (see `docs/openapi.yaml`):
//! - `GET /healthz`, `GET /readyz`, `GET /metrics` (no auth);
//! - `POST /api/v1/auth/register|login|refresh` (no token; their own stricter limit),
//!   `POST /api/v1/auth/logout`, `GET /api/v1/auth/me`;
//! - `GET /api/v1/kv` (list), `GET|PUT|DELETE /api/v1/kv/{key}`.

// Handlers return `Err(response)` to answer early; the response is moved once per request,
// so boxing it (what this lint asks) would only add an allocation.
#![allow(clippy::result_large_err)]

use super::State;
use super::metrics::RequestLabels;
use super::problem::{Body, empty, json, problem};
use bytes::Bytes;
use helios_atlas::{
    AtlasError, Expiry, KeyTtl, Precondition, SetCondition, SetOptions, WriteBatch,
};
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
    KvList,
    KvItem,
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
    AdminUsers,
    AdminUserRoles,
    AdminUserRole,
    AdminUserAction,
    AdminRoles,
    AdminRole,
    AdminRateLimits,
}

impl Route {
    const ALL: [Route; 30] = [
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
        Route::KvList,
        Route::KvItem,
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
        Route::AdminUsers,
        Route::AdminUserRoles,
        Route::AdminUserRole,
        Route::AdminUserAction,
        Route::AdminRoles,
        Route::AdminRole,
        Route::AdminRateLimits,
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
            Route::KvList => "/api/v1/kv",
            Route::KvItem => "/api/v1/kv/{key}",
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
            Route::AdminUsers => "/admin/users",
            Route::AdminUserRoles => "/admin/users/{id}/roles",
            Route::AdminUserRole => "/admin/users/{id}/roles/{role}",
            Route::AdminUserAction => "/admin/users/{id}/{action}",
            Route::AdminRoles => "/admin/roles",
            Route::AdminRole => "/admin/roles/{name}",
            Route::AdminRateLimits => "/admin/rate-limits",
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
            | Route::KvList => &[Method::GET],
            Route::Register | Route::Login | Route::Refresh | Route::Logout => &[Method::POST],
            Route::KvItem => &[Method::GET, Method::PUT, Method::DELETE],
            Route::Jobs => &[Method::GET, Method::POST],
            Route::JobClaim | Route::JobAction | Route::DlqRedrive => &[Method::POST],
            Route::Job | Route::Queues | Route::Dlq => &[Method::GET],
            Route::AdminStats | Route::AdminUsers | Route::AdminRoles => &[Method::GET],
            Route::AdminSnapshot
            | Route::AdminRewrite
            | Route::AdminUserRoles
            | Route::AdminUserAction => &[Method::POST],
            Route::AdminUserRole => &[Method::DELETE],
            Route::AdminRole => &[Method::PUT, Method::DELETE],
            Route::AdminRateLimits => &[Method::GET, Method::PUT],
        }
    }

    /// Every route needs a token except the ops endpoints and the three ways to get one
    /// (an allowlist: a new route is protected unless listed here).
    fn needs_token(self) -> bool {
        !(self.is_ops() || matches!(self, Route::Register | Route::Login | Route::Refresh))
    }

    /// The routes that skip authentication, rate limiting and RBAC.
    fn is_ops(self) -> bool {
        matches!(
            self,
            Route::Index
                | Route::ApiIndex
                | Route::OpenApi
                | Route::Healthz
                | Route::Readyz
                | Route::Metrics
        )
    }

    fn permission(self, method: &Method) -> Option<&'static str> {
        match (self, method) {
            (Route::Me, _) => Some(perms::USERS_READ_SELF),
            (Route::KvList, _) | (Route::KvItem, &Method::GET) => Some(perms::KV_READ),
            (Route::KvItem, _) => Some(perms::KV_WRITE),
            (Route::Jobs, &Method::POST) | (Route::Job, _) => Some(perms::JOBS_ENQUEUE),
            (Route::JobClaim, _) | (Route::JobAction, _) => Some(perms::JOBS_WORK),
            (Route::Jobs, _) | (Route::Queues, _) | (Route::Dlq, _) | (Route::DlqRedrive, _) => {
                Some(perms::JOBS_ADMIN)
            }
            (Route::AdminStats, _) | (Route::AdminSnapshot, _) | (Route::AdminRewrite, _) => {
                Some(perms::ADMIN_ALL)
            }
            (Route::AdminUsers, _)
            | (Route::AdminUserRoles, _)
            | (Route::AdminUserRole, _)
            | (Route::AdminUserAction, _)
            | (Route::AdminRoles, _)
            | (Route::AdminRole, _)
            | (Route::AdminRateLimits, _) => Some(perms::USERS_ADMIN),
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
        for r in Route::ALL {
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

async fn read_body(state: &State, body: Incoming) -> Result<Bytes, Response<Body>> {
    let limit = state.config.http.body_size_max as usize;
    let timeout = Duration::from_millis(state.config.http.body_read_timeout_ms);
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(problem(
            StatusCode::REQUEST_TIMEOUT,
            "body-timeout",
            "the request body did not arrive in time",
        )),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload-too-large",
                    format!("the body is over {limit} bytes"),
                ))
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
        .map(str::to_owned);
    let action = m.params.get("action").map(str::to_owned);
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
    let work = route_request(state, route, raw_key, action, extra, req, peer);
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

async fn route_request(
    state: &Arc<State>,
    route: Route,
    raw_key: Option<String>,
    action: Option<String>,
    extra: Option<String>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, Response<Body>> {
    if route.is_ops() {
        return Ok(ops(state, route));
    }
    let (parts, body) = req.into_parts();
    let body = if matches!(parts.method, Method::POST | Method::PUT) {
        read_body(state, body).await?
    } else {
        Bytes::new()
    };
    // Authentication.
    let claims: Option<Arc<Claims>> = if route.needs_token() {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                let mut r = problem(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "a Bearer token is required",
                );
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            })?;
        Some(state.auth.verify_access_shared(token).map_err(|e| {
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
            }
            r
        })?)
    } else {
        None
    };
    // Rate limit: per user when authenticated, else per address; auth endpoints have
    // their own stricter limiter.
    let now = state.clock.now_ms();
    let decision = match &claims {
        Some(c) => {
            let mut client = String::with_capacity(5 + c.sub.len());
            client.push_str("user.");
            client.push_str(&c.sub);
            state.limiter.check(&client, &c.roles, 1, now)
        }
        None => state
            .login_limiter
            .check(&format!("ip.{}", peer.ip()), &[], 1, now),
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
    // RBAC, failing closed: a route with a permission and no verified caller is refused.
    if let Some(p) = route.permission(&parts.method) {
        let allowed = claims
            .as_ref()
            .is_some_and(|c| state.auth.authorize(&c.sub, p));
        if !allowed {
            return Err(problem(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("missing permission {p}"),
            ));
        }
    }
    let result = match route {
        Route::Register => register(state, &body).await,
        Route::Login => login(state, &body, peer.ip().to_string()).await,
        Route::Refresh => refresh(state, &body).await,
        Route::Logout => logout(state, claims).await,
        Route::Me => me(state, claims),
        Route::KvList => kv_list(state, parts.uri.query().unwrap_or("")),
        Route::KvItem => kv_item(state, &parts, raw_key, &body).await,
        Route::Jobs if parts.method == Method::POST => super::jobs::enqueue(state, &body).await,
        Route::Jobs => super::jobs::list(state, parts.uri.query().unwrap_or("")),
        Route::JobClaim => super::jobs::claim(state, &body).await,
        Route::Job => super::jobs::get(state, raw_key),
        Route::JobAction => super::jobs::action(state, raw_key, action, &body).await,
        Route::Queues => super::jobs::queues(state),
        Route::Dlq => super::jobs::dlq(state, raw_key, parts.uri.query().unwrap_or("")),
        Route::DlqRedrive => super::jobs::redrive(state, raw_key, &body).await,
        Route::AdminStats
        | Route::AdminSnapshot
        | Route::AdminRewrite
        | Route::AdminUsers
        | Route::AdminUserRoles
        | Route::AdminUserRole
        | Route::AdminUserAction
        | Route::AdminRoles
        | Route::AdminRole
        | Route::AdminRateLimits => {
            super::admin::handle(
                state,
                route_name(route),
                &parts.method,
                raw_key,
                action.or(extra),
                &body,
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
            Some(e) => problem(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable", e),
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

fn etag(value: &[u8]) -> String {
    // FNV-1a 64: a content tag, not a security boundary.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in value {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut tag = String::with_capacity(18);
    tag.push('"');
    helios_core::digits::push_hex16_str(&mut tag, h);
    tag.push('"');
    tag
}

fn kv_key(raw: Option<String>) -> Result<(String, String), Response<Body>> {
    let key = raw
        .as_deref()
        .and_then(percent_decode)
        .filter(|k| !k.is_empty() && k.len() <= 1024)
        .ok_or_else(|| {
            problem(
                StatusCode::BAD_REQUEST,
                "invalid-field",
                "key: 1..=1024 bytes of UTF-8 (percent-encoded in the path)",
            )
        })?;
    let full = format!("{}{key}", helios_core::keys::KV_PREFIX);
    Ok((key, full))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    value: serde_json::Value,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

async fn kv_item(
    state: &Arc<State>,
    parts: &http::request::Parts,
    raw_key: Option<String>,
    body: &[u8],
) -> Result<Response<Body>, Response<Body>> {
    let (key, full) = kv_key(raw_key)?;
    match parts.method {
        Method::GET => {
            let v = state.atlas.get(&full).ok_or_else(|| {
                problem(
                    StatusCode::NOT_FOUND,
                    "not-found",
                    format!("no key {key:?}"),
                )
            })?;
            let ttl = match state.atlas.ttl(&full) {
                KeyTtl::Expires { remaining_ms, .. } => Some(remaining_ms.div_ceil(1000)),
                _ => None,
            };
            // The stored bytes are JSON this gateway wrote (checked at PUT): splice them
            // into the answer instead of parsing and re-encoding them.
            let stored_is_json = serde_json::from_slice::<serde::de::IgnoredAny>(&v).is_ok();
            let mut body = Vec::with_capacity(v.len() + key.len() + 48);
            body.extend_from_slice(b"{\"key\":");
            // Writing a string into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut body, &key);
            body.extend_from_slice(b",\"value\":");
            if stored_is_json {
                body.extend_from_slice(&v);
            } else {
                body.extend_from_slice(b"null");
            }
            body.extend_from_slice(b",\"ttl_seconds\":");
            match ttl {
                Some(t) => {
                    let mut text = String::new();
                    push_dec(&mut text, t);
                    body.extend_from_slice(text.as_bytes());
                }
                None => body.extend_from_slice(b"null"),
            }
            body.extend_from_slice(b"}\n");
            let mut r = Response::new(http_body_util::Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Ok(v) = HeaderValue::from_str(&etag(&v)) {
                r.headers_mut().insert(header::ETAG, v);
            }
            Ok(r)
        }
        Method::PUT => {
            let b: PutBody = parse(body)?;
            let value = serde_json::to_vec(&b.value).unwrap_or_default();
            let expiry = match b.ttl_seconds {
                Some(0) => {
                    return Err(problem(
                        StatusCode::BAD_REQUEST,
                        "invalid-field",
                        "ttl_seconds: must be positive",
                    ));
                }
                Some(s) => Expiry::InMs(s.saturating_mul(1000)),
                None => Expiry::Never,
            };
            let if_none_match = parts
                .headers
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok());
            let if_match = parts
                .headers
                .get(header::IF_MATCH)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let existed = state.atlas.exists(&full);
            let atlas = state.atlas.clone();
            let tag = etag(&value);
            let create_only = if_none_match == Some("*");
            let written = blocking(move || -> Result<bool, AtlasError> {
                if create_only {
                    return atlas.set_with(
                        &full,
                        value,
                        SetOptions {
                            condition: SetCondition::IfAbsent,
                            expiry,
                        },
                    );
                }
                if let Some(want) = if_match {
                    let Some(current) = atlas.get(&full) else {
                        return Ok(false);
                    };
                    if want != "*" && etag(&current) != want {
                        return Ok(false);
                    }
                    let mut batch = WriteBatch::new();
                    batch
                        .require(full.clone(), Precondition::Equals(current))
                        .set(full, value, expiry);
                    return match atlas.write_batch(batch) {
                        Ok(()) => Ok(true),
                        Err(AtlasError::PreconditionFailed { .. }) => Ok(false),
                        Err(e) => Err(e),
                    };
                }
                atlas.set_with(
                    &full,
                    value,
                    SetOptions {
                        condition: SetCondition::Always,
                        expiry,
                    },
                )
            })
            .await?
            .map_err(store_error)?;
            if !written {
                return Err(problem(
                    StatusCode::PRECONDITION_FAILED,
                    "precondition-failed",
                    "the key's current state does not match If-Match / If-None-Match",
                ));
            }
            let status = if existed && !create_only {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let mut r = json(status, &serde_json::json!({"key": key}));
            if let Ok(v) = HeaderValue::from_str(&tag) {
                r.headers_mut().insert(header::ETAG, v);
            }
            Ok(r)
        }
        _ => {
            let atlas = state.atlas.clone();
            let existed = blocking(move || atlas.delete(&full))
                .await?
                .map_err(store_error)?;
            if existed {
                Ok(empty(StatusCode::NO_CONTENT))
            } else {
                Err(problem(
                    StatusCode::NOT_FOUND,
                    "not-found",
                    format!("no key {key:?}"),
                ))
            }
        }
    }
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

fn kv_list(state: &State, query: &str) -> Result<Response<Body>, Response<Body>> {
    let mut prefix = String::new();
    let mut limit = 100usize;
    let mut cursor: Option<String> = None;
    for (k, v) in query_pairs(query)? {
        match k.as_str() {
            "prefix" => prefix = v,
            "limit" => limit = page_limit(&v)?,
            "cursor" => cursor = Some(v),
            other => {
                return Err(problem(
                    StatusCode::BAD_REQUEST,
                    "invalid-field",
                    format!("unknown query parameter {other:?}"),
                ));
            }
        }
    }
    let kv = helios_core::keys::KV_PREFIX;
    let full_cursor = cursor.map(|c| format!("{kv}{c}"));
    let page = state
        .atlas
        .scan(&format!("{kv}{prefix}"), full_cursor.as_deref(), limit)
        .map_err(store_error)?;
    let items: Vec<serde_json::Value> = page
        .entries
        .iter()
        .map(|(k, v)| {
            serde_json::json!({
                "key": k.strip_prefix(kv).unwrap_or(k),
                "value": serde_json::from_slice::<serde_json::Value>(v).unwrap_or(serde_json::Value::Null),
            })
        })
        .collect();
    let next = page
        .next_cursor
        .map(|c| c.strip_prefix(kv).unwrap_or(&c).to_owned());
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"items": items, "next_cursor": next}),
    ))
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
    }

    #[test]
    fn every_route_but_ops_and_login_needs_a_token_and_most_a_permission() {
        for r in Route::ALL {
            let open = matches!(
                r,
                Route::Index
                    | Route::ApiIndex
                    | Route::OpenApi
                    | Route::Healthz
                    | Route::Readyz
                    | Route::Metrics
                    | Route::Register
                    | Route::Login
                    | Route::Refresh
            );
            assert_eq!(r.needs_token(), !open, "{r:?}");
            for m in r.methods() {
                let exempt = open || r == Route::Logout;
                assert_eq!(r.permission(m).is_some(), !exempt, "{r:?} {m}");
            }
        }
    }

    #[test]
    fn etag_is_quoted_fnv1a_hex() {
        let v = b"{\"a\":1}";
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in v {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        assert_eq!(etag(v), format!("\"{h:016x}\""));
    }
}
