//! The worker registry routes, over `helios_queue::registry::Registry` (`worker:{owner}/{id}`
//! records with a TTL their worker renews):
//! - `PUT /api/v1/workers/{id}`: register or renew a worker, owned by the caller; needs
//!   some `jobs:work` (else `403`). Ids are scoped by owner: another user's worker of the
//!   same id is another record, untouched, and nothing tells the caller it exists. A new
//!   worker past the owner's or the registry's bound is `409` (`too-many-workers`).
//! - `DELETE /api/v1/workers/{id}`: remove one's own worker (`204`), else `404`.
//! - `GET /api/v1/workers`: `jobs:admin` lists every worker, a caller with some `jobs:work`
//!   only their own, anyone else `403`.
//!
//! Writes run on the blocking pool (they may fsync).

// Handlers return `Err(response)` to answer early (see handler.rs).
#![allow(clippy::result_large_err)]

use super::State;
use super::handler::{blocking, parse, percent_decode};
use crate::app::http::{Body, empty, json, problem};
use helios_auth::Claims;
use helios_auth::rbac::perms;
use helios_queue::QueueError;
use helios_queue::registry::WorkerRecord;
use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json as j};
use std::sync::Arc;

fn forbidden(permission: &str) -> Response<Body> {
    problem(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("missing permission {permission}"),
    )
}

fn not_found(id: &str) -> Response<Body> {
    problem(
        StatusCode::NOT_FOUND,
        "not-found",
        format!("no worker {id:?}"),
    )
}

fn registry_error(e: QueueError) -> Response<Body> {
    match e {
        QueueError::WorkerNotFound { id } => not_found(&id),
        QueueError::WorkerLimit { .. } => {
            problem(StatusCode::CONFLICT, "too-many-workers", e.to_string())
        }
        QueueError::Invalid { .. } => {
            problem(StatusCode::BAD_REQUEST, "invalid-field", e.to_string())
        }
        QueueError::Store(e) => super::handler::store_error(e),
        other => {
            tracing::error!(error = %other, "worker registry failure");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

/// The verified caller's user id, or `403` (a backstop: the router verified a token).
fn caller(claims: Option<&Claims>) -> Result<&str, Response<Body>> {
    claims
        .map(|c| c.sub.as_str())
        .ok_or_else(|| forbidden(perms::JOBS_WORK))
}

/// Some `jobs:work` permission (any queue), else `403`.
fn require_worker(state: &State, user_id: &str) -> Result<(), Response<Body>> {
    if state.auth.authorize_some(user_id, perms::JOBS_WORK) {
        Ok(())
    } else {
        Err(forbidden(perms::JOBS_WORK))
    }
}

/// The worker id of the path, percent-decoded.
fn worker_id(raw: Option<String>) -> Result<String, Response<Body>> {
    raw.as_deref().and_then(percent_decode).ok_or_else(|| {
        problem(
            StatusCode::BAD_REQUEST,
            "invalid-field",
            "id: bad percent-encoding",
        )
    })
}

fn view(r: &WorkerRecord) -> Value {
    j!({
        "id": r.id,
        "owner": r.owner,
        "version": r.version,
        "queues": r.queues,
        "in_flight": r.in_flight,
        "started_at": r.started_at_ms,
        "heartbeat_at": r.heartbeat_at_ms,
        "host": r.host,
        "expires_at": r.expires_at_ms(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    version: String,
    queues: Vec<String>,
    in_flight: u64,
    started_at: u64,
    host: String,
    ttl_seconds: u64,
}

pub(super) async fn put(
    state: &Arc<State>,
    claims: Option<&Claims>,
    raw: Option<String>,
    body: &[u8],
) -> Result<Response<Body>, Response<Body>> {
    let user_id = caller(claims)?;
    require_worker(state, user_id)?;
    let id = worker_id(raw)?;
    let b: PutBody = parse(body)?;
    let record = WorkerRecord {
        id,
        owner: Some(user_id.to_owned()),
        version: b.version,
        queues: b.queues,
        in_flight: b.in_flight,
        started_at_ms: b.started_at,
        heartbeat_at_ms: 0,
        host: b.host,
        ttl_ms: b.ttl_seconds.saturating_mul(1000),
    };
    let registry = state.registry.clone();
    let stored = blocking(move || registry.put_stored(record))
        .await?
        .map_err(|e| match e {
            // The limit as the caller wrote it, in seconds.
            QueueError::Invalid {
                field: "ttl_ms", ..
            } => problem(
                StatusCode::BAD_REQUEST,
                "invalid-field",
                format!(
                    "ttl_seconds: {} is outside {}..={}",
                    b.ttl_seconds,
                    helios_queue::limits::WORKER_TTL_MS_MIN / 1000,
                    helios_queue::limits::WORKER_TTL_MS_MAX / 1000
                ),
            ),
            other => registry_error(other),
        })?;
    Ok(json(StatusCode::OK, &view(&stored)))
}

pub(super) async fn delete(
    state: &Arc<State>,
    claims: Option<&Claims>,
    raw: Option<String>,
) -> Result<Response<Body>, Response<Body>> {
    let user_id = caller(claims)?;
    require_worker(state, user_id)?;
    let id = worker_id(raw)?;
    let registry = state.registry.clone();
    let owner = user_id.to_owned();
    let id2 = id.clone();
    let removed = blocking(move || registry.remove(&id2, Some(&owner)))
        .await?
        .map_err(registry_error)?;
    if removed {
        Ok(empty(StatusCode::NO_CONTENT))
    } else {
        Err(not_found(&id))
    }
}

pub(super) fn list(
    state: &State,
    claims: Option<&Claims>,
) -> Result<Response<Body>, Response<Body>> {
    let user_id = caller(claims)?;
    let owner = if state.auth.authorize(user_id, perms::JOBS_ADMIN) {
        None
    } else {
        require_worker(state, user_id)?;
        Some(user_id)
    };
    let records = state.registry.list(owner).map_err(registry_error)?;
    Ok(json(
        StatusCode::OK,
        &j!({"items": records.iter().map(view).collect::<Vec<_>>()}),
    ))
}
