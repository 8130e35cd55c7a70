//! From a request to its route's response: match the path (404), check the method (405
//! with `Allow`), apply the request deadline, run the head through the gate, read the
//! body, and call the route's handler (here, in `kv.rs`, `jobs.rs`, `workers.rs`,
//! `schedules.rs`, `admin.rs`, `proxy_admin.rs` or `account.rs`).
//!
//! Invariants: every request but a long-polling claim has a deadline
//! (`http.request_timeout_ms`); a request refused before its handler that declared a
//! body has its HTTP/1 connection closed rather than drained; the credential routes read
//! at most `CREDENTIALS_BODY_MAX` bytes; every limited response carries the rate-limit
//! headers.

use super::audit::Pending;
use super::auth_routes::{login, logout, me, refresh, register};
use super::meta::ops;
use super::middleware::{CREDENTIALS_BODY_MAX, gate, rate_headers, read_body};
use super::router::{Route, route_name};
use crate::app::http::{Body, problem};
use crate::gateway::proxy_admin::{self, Kind};
use crate::gateway::proxy_feed;
use crate::gateway::{State, account, admin, jobs, kv, schedules, workers};
use crate::net::client_key;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub(super) async fn dispatch(
    state: &Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
    request_id: &str,
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
    let work = route_request(state, route, params, req, peer, request_id);
    // Every request has a deadline; a long-polling claim bounds its own wait instead, and
    // a feed's head is answered at once (its stream ends by its own rules).
    let result = if matches!(route, Route::JobClaim | Route::AdminProxyFeed) {
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
    request_id: &str,
) -> Result<Response<Body>, Response<Body>> {
    let PathParams {
        raw_key,
        action,
        extra,
        scope,
    } = params;
    if route.is_ops() {
        return Ok(ops(state, route, req.headers()));
    }
    let audit = Pending::of(
        route,
        req.method(),
        [scope.as_deref(), raw_key.as_deref(), extra.as_deref()],
        action.as_deref(),
    );
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
            // Refused before its handler: audited when a verified caller was refused by
            // RBAC (anonymous and rate-limited refusals name nobody; see audit.rs).
            if let Some(a) = audit
                && r.status() == StatusCode::FORBIDDEN
            {
                let actor = parts
                    .headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .and_then(|t| state.auth.verify_access_shared(t).ok());
                if let Some(c) = actor {
                    a.finish(state, Some(&c.sub), &[], peer.ip(), request_id, &r);
                }
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
    // The acting user, for the audit line (the handlers take the claims).
    let actor = audit.as_ref().and(claims.as_ref()).map(|c| c.sub.clone());
    let result = match route {
        Route::Register => register(state, &body).await,
        Route::Login => login(state, &body, client).await,
        Route::Refresh => refresh(state, &body).await,
        Route::Logout => logout(state, claims).await,
        Route::Me => me(state, claims),
        Route::Password => account::change_password(state, claims, &body, client).await,
        Route::KvList | Route::NsKvList | Route::AdminUserKvList => match &space {
            Some(sp) => kv::list(state, sp, parts.uri.query().unwrap_or("")),
            None => Err(no_space()),
        },
        Route::KvItem | Route::NsKvItem | Route::AdminUserKvItem => match space {
            Some(sp) => kv::item(state, &parts, sp, raw_key, &body).await,
            None => Err(no_space()),
        },
        Route::Jobs if parts.method == Method::POST => {
            jobs::enqueue(state, claims.as_deref(), &parts.headers, &body).await
        }
        Route::Jobs => jobs::list(state, claims.as_deref(), parts.uri.query().unwrap_or("")),
        Route::JobClaim => jobs::claim(state, claims.as_deref(), &body).await,
        Route::JobBatch => jobs::batch(state, claims.as_deref(), &body).await,
        Route::Workers => workers::list(state, claims.as_deref()),
        Route::Worker if parts.method == Method::PUT => {
            workers::put(state, claims.as_deref(), raw_key, &body).await
        }
        Route::Worker => workers::delete(state, claims.as_deref(), raw_key).await,
        Route::Schedules if parts.method == Method::POST => {
            schedules::create(state, claims.as_deref(), &body).await
        }
        Route::Schedules => {
            schedules::list(state, claims.as_deref(), parts.uri.query().unwrap_or(""))
        }
        Route::Schedule if parts.method == Method::DELETE => {
            schedules::delete(state, claims.as_deref(), raw_key).await
        }
        Route::Schedule => schedules::get(state, claims.as_deref(), raw_key),
        Route::Job => jobs::get(state, claims.as_deref(), raw_key),
        Route::JobAction => jobs::action(state, claims.as_deref(), raw_key, action, &body).await,
        Route::Queues => jobs::queues(state),
        Route::Dlq => jobs::dlq(state, raw_key, parts.uri.query().unwrap_or("")),
        Route::DlqRedrive => jobs::redrive(state, raw_key, &body).await,
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
            admin::handle(
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
        Route::AdminProxyRouteList | Route::AdminProxyRouteItem => {
            proxy_admin::handle(state, Kind::Routes, &parts.method, raw_key, &body).await
        }
        Route::AdminProxyBackendList | Route::AdminProxyBackendItem => {
            proxy_admin::handle(state, Kind::Backends, &parts.method, raw_key, &body).await
        }
        Route::AdminProxyFeed => {
            // The stream ends when the token does (RBAC ran; claims are there).
            let expires_ms = claims.as_ref().map_or(0, |c| c.exp.saturating_mul(1000));
            proxy_feed::handle(
                state,
                &parts.headers,
                parts.uri.query().unwrap_or(""),
                expires_ms,
            )
        }
        Route::Index
        | Route::ApiIndex
        | Route::OpenApi
        | Route::Healthz
        | Route::Readyz
        | Route::Metrics => Ok(ops(state, route, &parts.headers)),
    };
    // Every limited response carries the rate-limit headers, errors included.
    let mut resp = match result {
        Ok(r) | Err(r) => r,
    };
    rate_headers(&mut resp, &decision);
    if let Some(a) = audit {
        a.finish(state, actor.as_deref(), &body, peer.ip(), request_id, &resp);
    }
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
