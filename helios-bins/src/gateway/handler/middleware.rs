//! The per-request pipeline in front of the routes: the request id and the method label
//! (`handle` wraps them with the tracing span and the metrics), authentication, rate
//! limiting and RBAC on the request head (`gate`), and the body limits (`read_body`).
//!
//! Invariants: authentication, rate limit and RBAC are decided on the head alone, so a
//! refused request never has its body read; RBAC fails closed (a route with a permission
//! and no verified caller is refused); a missing or bad token is charged to the client
//! address's limit; every limited response carries the rate-limit headers; bodies are
//! bounded by size, read timeout and the shared in-flight budget.

use super::problems::auth_error;
use super::router::Route;
use super::support::percent_decode;
use crate::app::http::{Body, problem};
use crate::gateway::State;
use crate::gateway::kv::Space;
use bytes::Bytes;
use helios_auth::{AuthError, Claims, Decision};
use helios_core::digits::push_dec_str as push_dec;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;

/// The request's id ([`crate::app::http::request_id`]), counted by the metrics.
pub(super) fn request_id(req: &Request<Incoming>, state: &State) -> String {
    let n = state.metrics.requests_seen();
    crate::app::http::request_id(req.headers(), state.clock.now_ms(), n)
}

/// The method as a static label (anything unusual is `OTHER`, so labels stay bounded).
pub(super) fn static_method(m: &Method) -> &'static str {
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

/// Reads a request body (after the head passed authentication, rate limit and RBAC)
/// within the gateway's limits: `http.body_size_max` (or the route's `limit`), the shared
/// `http.body_bytes_in_flight_max` budget, `http.body_read_timeout_ms`
/// ([`crate::app::http::read_body`]).
pub(super) async fn read_body(
    state: &State,
    parts: &http::request::Parts,
    body: Incoming,
    limit: usize,
) -> Result<Bytes, Response<Body>> {
    let limits = crate::app::http::BodyLimits {
        size_max: limit,
        budget: &state.body_budget,
        read_timeout: Duration::from_millis(state.config.http.body_read_timeout_ms),
    };
    crate::app::http::read_body(&parts.headers, body, &limits).await
}

pub(super) fn rate_headers(resp: &mut Response<Body>, d: &Decision) {
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

/// The largest body of the credential routes (register, login, refresh, password).
pub(super) const CREDENTIALS_BODY_MAX: usize = 16 * 1024;

/// What the head of a request earned: its verified claims, the KV namespace it acts on,
/// and the rate-limit decision (for the response's headers).
pub(super) type Gate = (Option<Arc<Claims>>, Option<Space>, Decision);

/// Authentication, rate limit and RBAC, on the request head alone. A missing or bad
/// token is charged to the client address's rate limit, so a flood of them turns from
/// 401 into 429.
pub(super) async fn gate(
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
