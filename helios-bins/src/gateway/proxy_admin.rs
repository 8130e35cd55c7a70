//! The proxy's dynamic configuration on the gateway (permission `proxy:admin`; RBAC runs
//! before these handlers):
//!
//! - `GET /admin/proxy/routes`, `GET|PUT|DELETE /admin/proxy/routes/{id}`;
//! - `GET /admin/proxy/backends`, `GET|PUT|DELETE /admin/proxy/backends/{id}`.
//!
//! Writes go through [`helios_proxy::ProxyStore`], which keeps the stored catalog one
//! whose route table builds: a `PUT` that would break it is a `400` naming the field, a
//! `DELETE` of a backend routes still name a `409` listing them. Changes land in ATLAS,
//! where proxies follow them (a proxy in this process reads the store; a standalone one
//! the change feed, `proxy_feed.rs`).
//!
//! A `PUT` body is the spec without its id (the path names it); an `id` in the body must
//! be the path's. `201` when created, `200` when replaced, with the spec stored.

// Handlers return `Err(response)` to answer early (see handler.rs).
#![allow(clippy::result_large_err)]

use super::State;
use super::handler::{blocking, parse, percent_decode, store_error};
use crate::app::http::{Body, empty, json, problem};
use helios_proxy::{BackendSpec, ProxyError, Put, RouteBackend, RouteSpec, StoreError};
use http::{Method, Response, StatusCode};
use serde::Deserialize;
use std::sync::Arc;

/// Which collection a route acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Routes,
    Backends,
}

/// A route's `PUT` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteBody {
    id: Option<String>,
    #[serde(default)]
    host: Option<String>,
    path_prefix: String,
    backends: Vec<RouteBackend>,
    #[serde(default = "round_robin")]
    balance: String,
}

fn round_robin() -> String {
    "round-robin".to_owned()
}

/// A backend's `PUT` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendBody {
    id: Option<String>,
    url: String,
}

/// A core or store error as a problem: rules broken 400 (naming the field), unknown
/// ids 404, a backend in use 409, the store's own errors as everywhere else.
fn proxy_error(e: StoreError) -> Response<Body> {
    match e {
        StoreError::Proxy(ProxyError::NotFound { kind, id }) => problem(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no {kind} {id:?}"),
        ),
        StoreError::Proxy(e @ ProxyError::InUse { .. }) => {
            problem(StatusCode::CONFLICT, "backend-in-use", e.to_string())
        }
        StoreError::Proxy(e) => problem(StatusCode::BAD_REQUEST, "invalid-field", e.to_string()),
        StoreError::Atlas(e) => store_error(e),
        other => {
            tracing::error!(error = %other, "proxy store failed");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

fn id_matches(path_id: &str, body_id: Option<String>) -> Result<(), Response<Body>> {
    match body_id {
        Some(b) if b != path_id => Err(problem(
            StatusCode::BAD_REQUEST,
            "invalid-field",
            format!("id: the body's {b:?} is not the path's {path_id:?}"),
        )),
        _ => Ok(()),
    }
}

fn put_status(p: Put) -> StatusCode {
    match p {
        Put::Created => StatusCode::CREATED,
        Put::Replaced => StatusCode::OK,
    }
}

/// Serves one proxy admin request. `raw_id`: the path's `{id}` (none for the lists).
pub(super) async fn handle(
    state: &Arc<State>,
    kind: Kind,
    method: &Method,
    raw_id: Option<String>,
    body: &[u8],
) -> Result<Response<Body>, Response<Body>> {
    let id = match raw_id {
        None => None,
        Some(raw) => Some(
            percent_decode(&raw)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    problem(StatusCode::BAD_REQUEST, "invalid-field", "id: bad encoding")
                })?,
        ),
    };
    let store = state.proxy_store.clone();
    let Some(id) = id else {
        // The lists.
        let loaded = blocking(move || store.catalog())
            .await?
            .map_err(store_error)?;
        for e in &loaded.skipped {
            tracing::warn!(error = %e, "a stored proxy value is not valid; skipped");
        }
        let c = loaded.catalog;
        return Ok(match kind {
            Kind::Routes => json(
                StatusCode::OK,
                &serde_json::json!({ "routes": c.routes.values().collect::<Vec<_>>() }),
            ),
            Kind::Backends => json(
                StatusCode::OK,
                &serde_json::json!({ "backends": c.backends.values().collect::<Vec<_>>() }),
            ),
        });
    };
    match (kind, method) {
        (_, &Method::GET) => {
            let c = blocking(move || store.catalog())
                .await?
                .map_err(store_error)?
                .catalog;
            let found = match kind {
                Kind::Routes => c.routes.get(&id).map(|r| json(StatusCode::OK, r)),
                Kind::Backends => c.backends.get(&id).map(|b| json(StatusCode::OK, b)),
            };
            found.ok_or_else(|| {
                let what = if kind == Kind::Routes {
                    "route"
                } else {
                    "backend"
                };
                problem(
                    StatusCode::NOT_FOUND,
                    "not-found",
                    format!("no {what} {id:?}"),
                )
            })
        }
        (Kind::Routes, &Method::PUT) => {
            let b: RouteBody = parse(body)?;
            id_matches(&id, b.id)?;
            let spec = RouteSpec {
                id,
                host: b.host,
                path_prefix: b.path_prefix,
                backends: b.backends,
                balance: b.balance,
            };
            let stored = spec.clone();
            let put = blocking(move || store.put_route(spec))
                .await?
                .map_err(proxy_error)?;
            tracing::info!(route = %stored.id, "proxy route stored");
            Ok(json(put_status(put), &stored))
        }
        (Kind::Backends, &Method::PUT) => {
            let b: BackendBody = parse(body)?;
            id_matches(&id, b.id)?;
            let spec = BackendSpec { id, url: b.url };
            let stored = spec.clone();
            let put = blocking(move || store.put_backend(spec))
                .await?
                .map_err(proxy_error)?;
            tracing::info!(backend = %stored.id, "proxy backend stored");
            Ok(json(put_status(put), &stored))
        }
        (Kind::Routes, &Method::DELETE) => {
            let what = id.clone();
            blocking(move || store.delete_route(&id))
                .await?
                .map_err(proxy_error)?;
            tracing::info!(route = %what, "proxy route deleted");
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Kind::Backends, &Method::DELETE) => {
            let what = id.clone();
            blocking(move || store.delete_backend(&id))
                .await?
                .map_err(proxy_error)?;
            tracing::info!(backend = %what, "proxy backend deleted");
            Ok(empty(StatusCode::NO_CONTENT))
        }
        // The router allows no other method.
        _ => Err(problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            format!("{method} is not allowed here"),
        )),
    }
}
