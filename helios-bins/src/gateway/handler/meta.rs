//! The routes about the service itself: `/`, `/api/v1` (link indexes), `/openapi.yaml`,
//! `/healthz`, `/readyz` and `/metrics` on the API listener, and the Prometheus text
//! that the metrics listener serves too.
//!
//! Invariants: all but `/metrics` skip authentication, rate limits and RBAC (ops
//! routes); `/readyz` keeps the store's error text in the log; with a metrics listener
//! configured, the API listener's `/metrics` is a 404.

use super::router::Route;
use crate::app::http::{Body, json, problem};
use crate::gateway::State;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// The API description served at `/openapi.yaml` (the same file the OpenAPI test checks
/// against the router).
const OPENAPI_YAML: &str = include_str!("../../../../docs/openapi.yaml");

pub(super) fn ops(state: &State, route: Route, headers: &http::HeaderMap) -> Response<Body> {
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
        _ => metrics_response(state, headers),
    }
}

/// `/metrics`: every family, negotiated by [`crate::app::metrics::respond`].
pub(in crate::gateway) fn metrics_response(
    state: &State,
    headers: &http::HeaderMap,
) -> Response<Body> {
    crate::app::metrics::respond(headers, metrics_text(state))
}

/// Every family of the gateway in OpenMetrics form (no `# EOF`): its own, its store's
/// and queue's, and the embedded workers' (`workers` section).
pub(in crate::gateway) fn metrics_text(state: &State) -> String {
    let mut text = state.metrics.encode(&state.atlas, &state.queue);
    if let Some(w) = state.workers.lock().clone() {
        text.push_str(&w.metrics().text());
    }
    text
}
