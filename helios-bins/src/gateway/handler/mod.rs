//! Request handling: the fixed middleware order of the module docs, then the routes.
//!
//! Routes (see `docs/openapi.yaml`; the full table with each route's permission is in
//! `router.rs`):
//! - `GET /healthz`, `GET /readyz` (no auth), `GET /metrics` (`metrics:read`; served openly
//!   on `metrics_listen` instead when that is set);
//! - `POST /api/v1/auth/register|login|refresh` (no token; their own stricter limit),
//!   `POST /api/v1/auth/logout`, `GET /api/v1/auth/me`, `POST /api/v1/auth/password`
//!   (`account.rs`; a token, no permission);
//! - `GET /api/v1/kv` (list), `GET|PUT|DELETE /api/v1/kv/{key}`.
//!
//! Files, one job each:
//! - this file: the entry point [`handle`] (request id, tracing span, a child of the
//!   request's `traceparent` when spans are exported, metrics around
//!   `dispatch::dispatch`) and the names the rest of the gateway uses;
//! - `router.rs`: the route table, the [`Router`], the permission each route needs;
//! - `middleware.rs`: the per-request pipeline in front of the routes: request id,
//!   authentication, rate limit, RBAC (on the head alone), body limits;
//! - `dispatch.rs`: path and method matching, the request deadline, and the call from
//!   a route to its handler;
//! - `problems.rs`: the cores' errors (auth, store) as problem+json responses;
//! - `support.rs`: what route handlers share (JSON bodies, query strings, blocking work);
//! - `auth_routes.rs`: register, login, refresh, logout, me;
//! - `audit.rs`: which requests are security events, and their audit log lines;
//! - `meta.rs`: `/`, `/api/v1`, `/openapi.yaml`, health, readiness, metrics.
//!
//! The KV, job, worker registry, schedule, admin and account routes are in `kv.rs`,
//! `jobs.rs`, `workers.rs`, `schedules.rs`, `admin.rs` and `account.rs` next to this
//! folder.

// Handlers return `Err(response)` to answer early; the response is moved once per request,
// so boxing it (what this lint asks) would only add an allocation. (The attribute covers
// this module's files too.)
#![allow(clippy::result_large_err)]

mod audit;
mod auth_routes;
mod dispatch;
mod meta;
mod middleware;
mod problems;
mod router;
mod support;

use super::State;
use super::metrics::RequestLabels;
use crate::app::http::Body;
use dispatch::dispatch;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use middleware::{request_id, static_method};
use router::Route;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

pub(super) use meta::metrics_text;
pub(super) use problems::{auth_error, store_error};
pub(super) use router::Router;
pub use router::routes;
pub(super) use support::{
    blocking, commit, page_limit, parse, percent_decode, percent_decode_bytes, query_pairs,
};

/// Handles one request through every step.
pub(super) async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let started = Instant::now();
    let rid = request_id(&req, &state);
    let method = req.method().clone();
    let span = tracing::info_span!("request", request_id = %rid, method = %method, path = %req.uri().path(), trace_id = tracing::field::Empty, otel.kind = "server", http.response.status_code = tracing::field::Empty);
    // An incoming `traceparent` names the trace on the request's log lines, and is the
    // span's parent (when spans are exported).
    let parent = crate::app::trace::from_headers(req.headers());
    if let Some(p) = &parent {
        span.record("trace_id", p.trace_id_hex());
    }
    if crate::app::trace::exporting() {
        crate::app::trace::set_parent(&span, parent.as_ref());
    }
    let (route, mut resp) = dispatch(&state, req, peer, &rid)
        .instrument(span.clone())
        .await;
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
        .observe_duration(route.map(Route::index), elapsed);
    span.record("http.response.status_code", resp.status().as_u16());
    span.in_scope(|| {
        tracing::info!(
            status = resp.status().as_u16(),
            micros = elapsed.as_micros() as u64,
            "served"
        );
    });
    resp
}
