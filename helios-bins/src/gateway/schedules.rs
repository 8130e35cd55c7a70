//! The cron schedule routes, over `helios_queue::Queue`'s schedules (records under
//! `job:schedule:{id}`, fired by the queue's tick, which the gateway runs every 200 ms):
//! - `POST /api/v1/schedules`: create one, owned by the caller; needs `jobs:enqueue` (as
//!   enqueueing a job; checked by the router). `201` with the schedule.
//! - `GET /api/v1/schedules`: one's own with `jobs:enqueue`, everyone's with `jobs:admin`;
//!   `?limit=` (1..=1000, default 100) and `?cursor=` (the `next_cursor` of the last page).
//! - `GET` and `DELETE /api/v1/schedules/{id}`: one's own with `jobs:enqueue`, any with
//!   `jobs:admin`; someone else's is `404`, exactly as a missing one (no existence oracle);
//!   without either permission `403`.
//!
//! Schedule ids are 32 lowercase hex digits (a UUIDv7, as job ids); anything else is a
//! `400`. Times in responses are ms since the Unix epoch; cron expressions are UTC.
//! Writes run on the blocking pool (they may fsync).

// Handlers return `Err(response)` to answer early (see handler.rs).
#![allow(clippy::result_large_err)]

use super::State;
use super::handler::{blocking, page_limit, parse, query_pairs};
use crate::app::http::{Body, empty, json, problem};
use helios_auth::Claims;
use helios_auth::rbac::perms;
use helios_queue::{QueueError, Schedule, ScheduleId, ScheduleRequest};
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

fn not_found(id: ScheduleId) -> Response<Body> {
    problem(
        StatusCode::NOT_FOUND,
        "not-found",
        format!("no schedule {id}"),
    )
}

fn schedule_error(e: QueueError) -> Response<Body> {
    match e {
        QueueError::ScheduleNotFound { id } => not_found(id),
        QueueError::BadJobId { text } => problem(
            StatusCode::BAD_REQUEST,
            "invalid-field",
            format!("{text:?} is not a schedule id (32 hex digits)"),
        ),
        QueueError::Invalid { .. } => {
            problem(StatusCode::BAD_REQUEST, "invalid-field", e.to_string())
        }
        QueueError::ScheduleLimit { .. } => {
            problem(StatusCode::CONFLICT, "too-many-schedules", e.to_string())
        }
        QueueError::Store(e) => super::handler::store_error(e),
        other => {
            tracing::error!(error = %other, "schedule failure");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

/// The verified caller and whether they hold `jobs:admin`; `403` without `jobs:enqueue`
/// or `jobs:admin` (and without claims: a backstop, the router verified a token).
fn reader<'a>(
    state: &State,
    claims: Option<&'a Claims>,
) -> Result<(&'a str, bool), Response<Body>> {
    let user_id = claims
        .map(|c| c.sub.as_str())
        .ok_or_else(|| forbidden(perms::JOBS_ENQUEUE))?;
    let admin = state.auth.authorize(user_id, perms::JOBS_ADMIN);
    if admin || state.auth.authorize(user_id, perms::JOBS_ENQUEUE) {
        Ok((user_id, admin))
    } else {
        Err(forbidden(perms::JOBS_ENQUEUE))
    }
}

fn schedule_id(raw: Option<String>) -> Result<ScheduleId, Response<Body>> {
    raw.as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(schedule_error)
}

fn view(s: &Schedule) -> Value {
    j!({
        "id": s.id,
        "owner": s.owner,
        "queue": s.queue,
        "cron": s.cron,
        "payload": s.payload,
        "priority": s.priority,
        "max_attempts": s.attempts_max,
        "next_run_at": s.next_run_ms,
        "last_run_at": s.last_run_ms,
        "last_job_id": s.last_job,
        "runs": s.runs_count,
        "skipped": s.skipped_count,
        "denied": s.denied_count,
        "created_at": s.created_at_ms,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    queue: String,
    cron: String,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    max_attempts: Option<u32>,
}

pub(super) async fn create(
    state: &Arc<State>,
    claims: Option<&Claims>,
    body: &[u8],
) -> Result<Response<Body>, Response<Body>> {
    // The router checked `jobs:enqueue`; claims are there.
    let user_id = claims
        .map(|c| c.sub.as_str())
        .ok_or_else(|| forbidden(perms::JOBS_ENQUEUE))?;
    let b: CreateBody = parse(body)?;
    let mut req = ScheduleRequest::new(b.queue, b.cron, b.payload);
    req.owner = Some(Arc::from(user_id));
    req.priority = b.priority;
    req.attempts_max = b.max_attempts;
    let q = state.queue.clone();
    let s = blocking(move || q.create_schedule(&req))
        .await?
        .map_err(|e| match e {
            // The field as the caller spelled it.
            QueueError::Invalid {
                field: "attempts_max",
                reason,
            } => problem(
                StatusCode::BAD_REQUEST,
                "invalid-field",
                format!("invalid max_attempts: {reason}"),
            ),
            other => schedule_error(other),
        })?;
    Ok(json(StatusCode::CREATED, &view(&s)))
}

pub(super) fn get(
    state: &State,
    claims: Option<&Claims>,
    raw: Option<String>,
) -> Result<Response<Body>, Response<Body>> {
    let (user_id, admin) = reader(state, claims)?;
    let id = schedule_id(raw)?;
    let s = state
        .queue
        .schedule(id)
        .filter(|s| admin || s.owner.as_deref() == Some(user_id))
        .ok_or_else(|| not_found(id))?;
    Ok(json(StatusCode::OK, &view(&s)))
}

pub(super) async fn delete(
    state: &Arc<State>,
    claims: Option<&Claims>,
    raw: Option<String>,
) -> Result<Response<Body>, Response<Body>> {
    let (user_id, admin) = reader(state, claims)?;
    let id = schedule_id(raw)?;
    let owner = (!admin).then(|| user_id.to_owned());
    let q = state.queue.clone();
    blocking(move || q.delete_schedule(id, owner.as_deref()))
        .await?
        .map_err(schedule_error)?;
    Ok(empty(StatusCode::NO_CONTENT))
}

pub(super) fn list(
    state: &State,
    claims: Option<&Claims>,
    query: &str,
) -> Result<Response<Body>, Response<Body>> {
    let (user_id, admin) = reader(state, claims)?;
    let mut limit = 100usize;
    let mut cursor = None;
    for (k, v) in query_pairs(query)? {
        match k.as_str() {
            "limit" => limit = page_limit(&v)?,
            "cursor" => cursor = Some(v.parse::<ScheduleId>().map_err(schedule_error)?),
            other => {
                return Err(problem(
                    StatusCode::BAD_REQUEST,
                    "invalid-field",
                    format!("unknown query parameter {other:?}"),
                ));
            }
        }
    }
    let owner = (!admin).then_some(user_id);
    let (items, next) = state
        .queue
        .list_schedules(owner, cursor, limit)
        .map_err(schedule_error)?;
    Ok(json(
        StatusCode::OK,
        &j!({"items": items.iter().map(view).collect::<Vec<_>>(), "next_cursor": next}),
    ))
}
