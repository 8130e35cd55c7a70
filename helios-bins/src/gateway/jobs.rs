//! The job routes: enqueue (with writes to the caller's own KV namespace in the same atomic
//! batch: `kv`), get, list, claim (with long polling), ack / nack / heartbeat / cancel,
//! batches of acks, nacks and heartbeats, queue stats, the dead-letter list and its
//! redrive. Each maps onto one
//! `helios_queue::Queue` call, a commit to ATLAS ([`commit`]: on the runtime thread when
//! it cannot wait for an fsync, on the blocking pool when it can; the redrive, which may
//! move a whole dead-letter list, always on the pool).
//!
//! Jobs belong to someone: an enqueue records the caller's user id as the job's owner (and
//! scopes its dedup id to that owner and queue). Access is decided per job, here, once the
//! job is loaded and before anything of it is read ([`Caller`]):
//! - get, list, cancel: `jobs:enqueue` for one's own jobs, `jobs:admin` for everyone's
//!   (and for jobs without an owner); a job of someone else is `404`, exactly as a missing
//!   one (no existence oracle). Without either permission, `403`.
//! - claim: `jobs:work` or `jobs:work:{queue}` for the body's queue, else `403`; ack, nack,
//!   heartbeat: some `jobs:work` permission, else `403`, then `jobs:work` or
//!   `jobs:work:{queue}` for the job's queue, else `404`. A batch of them
//!   (`POST /api/v1/jobs/batch`) is checked the same way, the `404` per item, and settled
//!   as one queue call.
//! - queue stats, the dead-letter list and redrive: `jobs:admin` (checked by the router).
//!
//! Job ids in paths and bodies are the 32 lowercase hex digits of the UUIDv7 (the UUID's
//! `simple` form); anything else (the hyphenated form included) is a `400`.

// Handlers return `Err(response)` to answer early (see handler.rs).
#![allow(clippy::result_large_err)]

use super::State;
use super::handler::{blocking, commit, page_limit, parse, percent_decode, query_pairs};
use crate::app::http::{Body, empty, json, problem};
use crate::app::trace;
use helios_atlas::Expiry;
use helios_auth::Claims;
use helios_auth::rbac::perms;
use helios_queue::{
    Claim, EnqueueRequest, Job, JobId, JobState, KvWrite, QueueError, Settle, Settled, limits,
    validate_queue_name,
};
use http::{HeaderValue, Response, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json as j};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;
use tracing::field::Empty;

/// Longest a claim may wait for work.
const WAIT_S_MAX: u64 = 60;

/// The status, problem type and detail of the queue errors a caller can cause about one
/// job (`None` for the others: a full queue, the store, a bug).
fn job_problem(e: &QueueError) -> Option<(StatusCode, &'static str, String)> {
    Some(match e {
        QueueError::NotFound { id } => (StatusCode::NOT_FOUND, "not-found", format!("no job {id}")),
        QueueError::BadJobId { text } => (
            StatusCode::BAD_REQUEST,
            "invalid-field",
            format!("{text:?} is not a job id"),
        ),
        QueueError::StaleToken { .. } | QueueError::LeaseExpired { .. } => {
            (StatusCode::CONFLICT, "stale-lease", e.to_string())
        }
        QueueError::WrongState { .. } => (StatusCode::CONFLICT, "wrong-state", e.to_string()),
        QueueError::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid-field", e.to_string()),
        _ => return None,
    })
}

fn queue_error(e: QueueError) -> Response<Body> {
    if let Some((status, slug, detail)) = job_problem(&e) {
        return problem(status, slug, detail);
    }
    match e {
        QueueError::QueueFull { .. } => {
            let mut r = problem(StatusCode::TOO_MANY_REQUESTS, "queue-full", e.to_string());
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        QueueError::Store(e) => super::handler::store_error(e),
        other => {
            tracing::error!(error = %other, "queue failure");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

/// Runs a queue transition within `span` (its `queue.*` span, a child of the request's),
/// the store call itself in an `atlas.commit` span ([`commit`]: the transition's ATLAS
/// batch, the fsync wait included). Spans are made only while they are exported.
async fn transition<T: Send + 'static>(
    state: &State,
    size_hint: usize,
    span: tracing::Span,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response<Body>> {
    commit(&state.atlas, size_hint, f).instrument(span).await
}

fn not_found(id: JobId) -> Response<Body> {
    problem(StatusCode::NOT_FOUND, "not-found", format!("no job {id}"))
}

fn forbidden(permission: &str) -> Response<Body> {
    problem(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("missing permission {permission}"),
    )
}

/// The caller of a job route and what they may do with a given job. Roles are read when
/// asked (`Auth::authorize`), so a role change applies to the next request.
struct Caller<'a> {
    state: &'a State,
    user_id: &'a str,
}

impl<'a> Caller<'a> {
    /// The verified caller, or `403`: a backstop that fails closed (every job route needs
    /// a token, so the router has verified one already).
    fn new(state: &'a State, claims: Option<&'a Claims>) -> Result<Self, Response<Body>> {
        let c = claims.ok_or_else(|| forbidden(perms::JOBS_ENQUEUE))?;
        Ok(Self {
            state,
            user_id: &c.sub,
        })
    }

    fn can(&self, permission: &str) -> bool {
        self.state.auth.authorize(self.user_id, permission)
    }

    /// Reading and cancelling jobs needs `jobs:enqueue` (one's own) or `jobs:admin`.
    fn require_reader(&self) -> Result<bool, Response<Body>> {
        let admin = self.can(perms::JOBS_ADMIN);
        if admin || self.can(perms::JOBS_ENQUEUE) {
            Ok(admin)
        } else {
            Err(forbidden(perms::JOBS_ENQUEUE))
        }
    }

    /// Whether a reader (see `require_reader`, which says `admin`) reaches a job of
    /// `owner`: their own, or any with `jobs:admin`.
    fn reaches(&self, admin: bool, owner: Option<&str>) -> bool {
        admin || owner == Some(self.user_id)
    }

    /// Whether the caller may work `queue`: `jobs:work`, or `jobs:work:{queue}`.
    fn works(&self, queue: &str) -> bool {
        self.can(perms::JOBS_WORK) || self.can(&format!("{}:{queue}", perms::JOBS_WORK))
    }
}

/// The queue and owner of a job (both fixed for its life), without copying the job.
fn scope_of(state: &State, id: JobId) -> Option<(String, Option<Arc<str>>)> {
    state
        .queue
        .with_state(|s| s.job(id).map(|j| (j.queue.clone(), j.owner.clone())))
}

/// A job as the API shows it. Serialized straight from the job (no `Value` built, the
/// payload not copied); the fields in alphabetical order, the order of the JSON objects
/// the API wrote before (serde_json's map sorts its keys).
#[derive(Serialize)]
struct JobView<'a> {
    attempts: u32,
    created_at: u64,
    finished_at: Option<u64>,
    id: JobId,
    last_error: Option<&'a str>,
    max_attempts: u32,
    owner: Option<&'a str>,
    payload: &'a Value,
    priority: i32,
    queue: &'a str,
    result: Option<&'a Value>,
    run_at: u64,
    state: JobState,
    trace: Option<&'a helios_core::TraceContext>,
    updated_at: u64,
}

fn job_view(job: &Job) -> JobView<'_> {
    JobView {
        attempts: job.attempts,
        created_at: job.created_at_ms,
        finished_at: job.finished_at_ms,
        id: job.id,
        last_error: job.last_error.as_deref(),
        max_attempts: job.attempts_max,
        owner: job.owner.as_deref(),
        payload: &job.payload,
        priority: job.priority,
        queue: &job.queue,
        result: job.result.as_ref(),
        run_at: job.run_at_ms,
        state: job.state,
        trace: job.trace.as_ref(),
        updated_at: job.updated_at_ms,
    }
}

/// A claimed job as the claim answers it: serialized straight from the claim, keys in
/// alphabetical order (the order of the `Value` it replaced).
#[derive(Serialize)]
struct ClaimView<'a> {
    attempt: u32,
    id: JobId,
    lease_expires_at: Option<u64>,
    lease_token: String,
    max_attempts: u32,
    payload: &'a Value,
    queue: &'a str,
    trace: Option<&'a helios_core::TraceContext>,
}

fn claim_view(c: &Claim) -> ClaimView<'_> {
    ClaimView {
        attempt: c.job.attempts,
        id: c.job.id,
        lease_expires_at: c.job.lease.as_ref().map(|l| l.expires_at_ms),
        lease_token: c.token.to_string(),
        max_attempts: c.job.attempts_max,
        payload: &c.job.payload,
        queue: &c.job.queue,
        trace: c.job.trace.as_ref(),
    }
}

/// A claim's answer.
#[derive(Serialize)]
struct ClaimPage<'a> {
    jobs: Vec<ClaimView<'a>>,
}

/// A settle batch item's answer: what the queue did with it, or its problem.
#[derive(Serialize)]
#[serde(untagged)]
enum ItemAnswer<'a> {
    Settled(SettledView<'a>),
    Problem(Value),
}

/// A settled item (keys in alphabetical order, as the `Value` it replaced): 204 for an
/// ack, 200 with the state a nack left, or 200 with a heartbeat's new lease end.
#[derive(Serialize)]
struct SettledView<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_expires_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<JobState>,
    status: u16,
}

fn settled_view(id: &str, settled: Settled) -> SettledView<'_> {
    let (status, state, lease_expires_at) = match settled {
        Settled::Acked => (204, None, None),
        Settled::Nacked(st) => (200, Some(st), None),
        Settled::Extended {
            lease_expires_at_ms,
        } => (200, None, Some(lease_expires_at_ms)),
    };
    SettledView {
        id,
        lease_expires_at,
        state,
        status,
    }
}

/// A settle batch's answer.
#[derive(Serialize)]
struct ItemsPage<'a> {
    items: Vec<ItemAnswer<'a>>,
}

/// A page of jobs (keys in alphabetical order, as [`JobView`]).
#[derive(Serialize)]
struct JobPage<'a> {
    items: Vec<JobView<'a>>,
    next_cursor: Option<JobId>,
}

fn job_id(raw: Option<String>) -> Result<JobId, Response<Body>> {
    raw.as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(queue_error)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnqueueBody {
    queue: String,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    delay_seconds: Option<u64>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    dedup_id: Option<String>,
    /// Writes to the caller's own KV namespace, made in the same atomic batch as the job.
    #[serde(default)]
    kv: Vec<KvWriteBody>,
}

/// One write of a transactional enqueue: a key of the caller's own namespace and its
/// value (with a TTL), or `delete`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KvWriteBody {
    key: String,
    #[serde(default)]
    value: Option<Value>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    delete: bool,
}

/// The queue's writes for `body`, in `user_id`'s own namespace; a `400` names the write.
fn kv_writes(user_id: &str, body: Vec<KvWriteBody>) -> Result<Vec<KvWrite>, Response<Body>> {
    let bad = |detail: String| problem(StatusCode::BAD_REQUEST, "invalid-field", detail);
    body.into_iter()
        .enumerate()
        .map(|(i, w)| {
            let key = super::kv::own_key(user_id, &format!("kv[{i}].key"), &w.key)?;
            match (w.delete, w.value, w.ttl_seconds) {
                (true, None, None) => Ok(KvWrite::Delete { key }),
                (true, _, _) => Err(bad(format!(
                    "kv[{i}]: a delete has no value or ttl_seconds"
                ))),
                (false, None, _) => Err(bad(format!("kv[{i}].value: missing"))),
                (false, Some(_), Some(0)) => {
                    Err(bad(format!("kv[{i}].ttl_seconds: must be positive")))
                }
                (false, Some(v), ttl) => Ok(KvWrite::Set {
                    key,
                    value: serde_json::to_vec(&v).unwrap_or_default(),
                    expiry: ttl.map_or(Expiry::Never, |s| Expiry::InMs(s.saturating_mul(1000))),
                }),
            }
        })
        .collect()
}

/// Enqueues a job. The W3C trace context of the request (`traceparent`, `tracestate`) is
/// stored with the job: with spans exported, the `queue.enqueue` span's own context
/// (a child of the request's span), else the incoming one as it came; the worker that
/// runs the job continues that trace.
pub(super) async fn enqueue(
    state: &Arc<State>,
    claims: Option<&Claims>,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Response<Body>, Response<Body>> {
    let caller = Caller::new(state, claims)?;
    let b: EnqueueBody = parse(body)?;
    // Writes to one's own namespace need what writing it directly needs.
    if !b.kv.is_empty() && !caller.can(perms::KV_WRITE) {
        return Err(forbidden(perms::KV_WRITE));
    }
    let kv = kv_writes(caller.user_id, b.kv)?;
    let mut req = EnqueueRequest::new(b.queue, b.payload);
    req.owner = Some(Arc::from(caller.user_id));
    req.priority = b.priority;
    req.delay_ms = b.delay_seconds.map(|s| s.saturating_mul(1000));
    req.attempts_max = b.max_attempts;
    req.dedup_id = b.dedup_id;
    let span = trace::span!("queue.enqueue", queue = %req.queue, job_id = Empty);
    req.trace = trace::outgoing(&span, trace::from_headers(headers).as_ref());
    let q = state.queue.clone();
    let out = transition(state, body.len(), span.clone(), move || {
        let e = if kv.is_empty() {
            q.enqueue(req)?
        } else {
            q.enqueue_with(req, kv)?
        };
        let job = q.get(e.id);
        Ok::<_, QueueError>((e, job))
    })
    .await?
    .map_err(queue_error)?;
    let (e, job) = out;
    span.record("job_id", tracing::field::display(e.id));
    state.job_ready.notify_waiters();
    let status = if e.deduplicated {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(match &job {
        Some(job) => json(status, &job_view(job)),
        None => json(status, &j!({"id": e.id})),
    })
}

pub(super) fn get(
    state: &State,
    claims: Option<&Claims>,
    raw: Option<String>,
) -> Result<Response<Body>, Response<Body>> {
    let caller = Caller::new(state, claims)?;
    let admin = caller.require_reader()?;
    let id = job_id(raw)?;
    let job = state
        .queue
        .get(id)
        .filter(|j| caller.reaches(admin, j.owner.as_deref()))
        .ok_or_else(|| not_found(id))?;
    Ok(json(StatusCode::OK, &job_view(&job)))
}

/// A page of a queue's jobs in a state; with `owner`, only that owner's (through the
/// owner's own index: a user with few jobs in a big queue costs a few lookups).
fn page(
    state: &State,
    queue: &str,
    job_state: JobState,
    owner: Option<&str>,
    query: &str,
    allow_state: bool,
) -> Result<Response<Body>, Response<Body>> {
    let mut st = job_state;
    let mut limit = 100usize;
    let mut cursor = None;
    let mut queue = queue.to_owned();
    for (k, v) in query_pairs(query)? {
        match k.as_str() {
            "queue" if allow_state => queue = v,
            "state" if allow_state => {
                st =
                    serde_json::from_value(Value::String(v.to_ascii_uppercase())).map_err(|_| {
                        problem(
                            StatusCode::BAD_REQUEST,
                            "invalid-field",
                            "state: PENDING, IN_PROGRESS, DONE, FAILED or CANCELLED",
                        )
                    })?
            }
            "limit" => limit = page_limit(&v)?,
            "cursor" => cursor = Some(v.parse::<JobId>().map_err(queue_error)?),
            other => {
                return Err(problem(
                    StatusCode::BAD_REQUEST,
                    "invalid-field",
                    format!("unknown query parameter {other:?}"),
                ));
            }
        }
    }
    validate_queue_name(&queue).map_err(queue_error)?;
    let (jobs, next) = match owner {
        Some(o) => state.queue.list_owned(&queue, st, o, cursor, limit),
        None => state.queue.list(&queue, st, cursor, limit),
    }
    .map_err(queue_error)?;
    Ok(json(
        StatusCode::OK,
        &JobPage {
            items: jobs.iter().map(job_view).collect(),
            next_cursor: next,
        },
    ))
}

/// Everyone's jobs for `jobs:admin`, one's own for `jobs:enqueue`.
pub(super) fn list(
    state: &State,
    claims: Option<&Claims>,
    query: &str,
) -> Result<Response<Body>, Response<Body>> {
    let caller = Caller::new(state, claims)?;
    let admin = caller.require_reader()?;
    let owner = (!admin).then_some(caller.user_id);
    page(state, "", JobState::Pending, owner, query, true)
}

pub(super) fn dlq(
    state: &State,
    raw: Option<String>,
    query: &str,
) -> Result<Response<Body>, Response<Body>> {
    let queue = raw.as_deref().and_then(percent_decode).unwrap_or_default();
    page(state, &queue, JobState::Failed, None, query, false)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    queue: String,
    worker_id: String,
    lease_seconds: u64,
    #[serde(default)]
    max_jobs: Option<usize>,
    #[serde(default)]
    wait_seconds: Option<u64>,
}

pub(super) async fn claim(
    state: &Arc<State>,
    claims: Option<&Claims>,
    body: &[u8],
) -> Result<Response<Body>, Response<Body>> {
    let caller = Caller::new(state, claims)?;
    let b: ClaimBody = parse(body)?;
    validate_queue_name(&b.queue).map_err(queue_error)?;
    if !caller.works(&b.queue) {
        return Err(forbidden(&format!("{}:{}", perms::JOBS_WORK, b.queue)));
    }
    let wait = Duration::from_secs(b.wait_seconds.unwrap_or(0).min(WAIT_S_MAX));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Register for wake-ups before looking, so an enqueue in between is not missed.
        let notified = state.job_ready.notified();
        let q = state.queue.clone();
        let (queue, worker, count, lease_ms) = (
            b.queue.clone(),
            b.worker_id.clone(),
            b.max_jobs.unwrap_or(1),
            b.lease_seconds.saturating_mul(1000),
        );
        let span = trace::span!("queue.claim", queue = %queue, jobs = Empty);
        let claims = transition(state, 0, span.clone(), move || {
            q.claim(&queue, &worker, count, lease_ms)
        })
        .await?
        .map_err(queue_error)?;
        span.record("jobs", claims.len());
        if !claims.is_empty() || tokio::time::Instant::now() >= deadline {
            let page = ClaimPage {
                jobs: claims.iter().map(claim_view).collect(),
            };
            return Ok(json(StatusCode::OK, &page));
        }
        // Wait for an enqueue, a lease expiry or the deadline; never spin.
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseBody {
    lease_token: String,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    retry_in_seconds: Option<u64>,
    #[serde(default)]
    permanent: bool,
    #[serde(default)]
    lease_seconds: Option<u64>,
}

pub(super) async fn action(
    state: &Arc<State>,
    claims: Option<&Claims>,
    raw: Option<String>,
    action: Option<String>,
    body: &[u8],
) -> Result<Response<Body>, Response<Body>> {
    let caller = Caller::new(state, claims)?;
    let action = action.unwrap_or_default();
    if action == "cancel" {
        let admin = caller.require_reader()?;
        let id = job_id(raw)?;
        match scope_of(state, id) {
            Some((_, owner)) if caller.reaches(admin, owner.as_deref()) => {}
            _ => return Err(not_found(id)),
        }
        let q = state.queue.clone();
        transition(
            state,
            0,
            trace::span!("queue.cancel", job_id = %id),
            move || q.cancel(id),
        )
        .await?
        .map_err(queue_error)?;
        return Ok(empty(StatusCode::NO_CONTENT));
    }
    if !matches!(action.as_str(), "ack" | "nack" | "heartbeat") {
        return Err(problem(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no job action {action:?}"),
        ));
    }
    // Some `jobs:work` first (403 without any), then the job's queue (404 if it is not
    // one the caller works, as if the job did not exist).
    if !state.auth.authorize_some(caller.user_id, perms::JOBS_WORK) {
        return Err(forbidden(perms::JOBS_WORK));
    }
    let id = job_id(raw)?;
    match scope_of(state, id) {
        Some((queue, _)) if caller.works(&queue) => {}
        _ => return Err(not_found(id)),
    }
    let q = state.queue.clone();
    let b: LeaseBody = parse(body)?;
    let token: u64 = b.lease_token.parse().map_err(|_| {
        problem(
            StatusCode::BAD_REQUEST,
            "invalid-field",
            "lease_token: not a token",
        )
    })?;
    match action.as_str() {
        "ack" => {
            transition(
                state,
                body.len(),
                trace::span!("queue.ack", job_id = %id),
                move || q.ack(id, token, b.result),
            )
            .await?
            .map_err(queue_error)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        "nack" => {
            let error = b.error.unwrap_or_else(|| "nack".to_owned());
            let retry = b.retry_in_seconds.map(|s| s.saturating_mul(1000));
            let permanent = b.permanent;
            let st = transition(
                state,
                body.len(),
                trace::span!("queue.nack", job_id = %id),
                move || q.nack(id, token, &error, retry, permanent),
            )
            .await?
            .map_err(queue_error)?;
            state.job_ready.notify_waiters();
            Ok(json(StatusCode::OK, &j!({"state": st})))
        }
        _ => {
            let lease_ms = b.lease_seconds.unwrap_or(30).saturating_mul(1000);
            let until = transition(
                state,
                0,
                trace::span!("queue.heartbeat", job_id = %id),
                move || q.heartbeat(id, token, lease_ms),
            )
            .await?
            .map_err(queue_error)?;
            Ok(json(StatusCode::OK, &j!({"lease_expires_at": until})))
        }
    }
}

/// One item of a batch: a job, its lease token and what to do with it, with the fields of
/// that action only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    id: String,
    lease_token: String,
    action: BatchAction,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    permanent: Option<bool>,
    #[serde(default)]
    retry_in_seconds: Option<u64>,
    /// As `retry_in_seconds`, in ms (a worker's backoff with jitter).
    #[serde(default)]
    retry_in_ms: Option<u64>,
    #[serde(default)]
    lease_seconds: Option<u64>,
    /// As `lease_seconds`, in ms.
    #[serde(default)]
    lease_ms: Option<u64>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum BatchAction {
    Ack,
    Nack,
    Heartbeat,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    items: Vec<BatchItem>,
}

/// One item's answer in a batch: a status, and the problem type and detail of an error.
fn item_problem(id: &str, status: StatusCode, slug: &str, detail: impl Into<String>) -> Value {
    j!({
        "id": id,
        "status": status.as_u16(),
        "type": format!("{}{slug}", crate::app::http::PROBLEM_BASE),
        "detail": detail.into(),
    })
}

impl BatchItem {
    /// The queue call this item asks for, or its 400 (a bad id or token, a field of
    /// another action).
    fn settle(self) -> Result<Settle, (StatusCode, &'static str, String)> {
        let bad = |detail: String| (StatusCode::BAD_REQUEST, "invalid-field", detail);
        let id: JobId = self
            .id
            .parse()
            .map_err(|_| bad(format!("id: {:?} is not a job id", self.id)))?;
        let token: u64 = self
            .lease_token
            .parse()
            .map_err(|_| bad("lease_token: not a token".to_owned()))?;
        let only = |field: &str, given: bool, action: &str| {
            if given {
                Err(bad(format!("{field}: not a field of {action}")))
            } else {
                Ok(())
            }
        };
        if self.retry_in_seconds.is_some() && self.retry_in_ms.is_some() {
            return Err(bad(
                "retry_in_seconds, retry_in_ms: give one of them".to_owned()
            ));
        }
        if self.lease_seconds.is_some() && self.lease_ms.is_some() {
            return Err(bad("lease_seconds, lease_ms: give one of them".to_owned()));
        }
        let retry_delay_ms = self
            .retry_in_ms
            .or(self.retry_in_seconds.map(|s| s.saturating_mul(1000)));
        let lease_ms = self
            .lease_ms
            .or(self.lease_seconds.map(|s| s.saturating_mul(1000)));
        // `"permanent": false` says nothing, so any action may carry it.
        let nack_fields =
            self.error.is_some() || self.permanent == Some(true) || retry_delay_ms.is_some();
        Ok(match self.action {
            BatchAction::Ack => {
                only("error, permanent, retry_in_seconds", nack_fields, "ack")?;
                only("lease_seconds", lease_ms.is_some(), "ack")?;
                Settle::Ack {
                    id,
                    token,
                    result: self.result,
                }
            }
            BatchAction::Nack => {
                only("result", self.result.is_some(), "nack")?;
                only("lease_seconds", lease_ms.is_some(), "nack")?;
                Settle::Nack {
                    id,
                    token,
                    error: self.error.unwrap_or_else(|| "nack".to_owned()),
                    retry_delay_ms,
                    permanent: self.permanent.unwrap_or(false),
                }
            }
            BatchAction::Heartbeat => {
                only("result", self.result.is_some(), "heartbeat")?;
                only(
                    "error, permanent, retry_in_seconds",
                    nack_fields,
                    "heartbeat",
                )?;
                Settle::Heartbeat {
                    id,
                    token,
                    lease_ms: lease_ms.unwrap_or(30_000),
                }
            }
        })
    }
}

/// `POST /api/v1/jobs/batch`: acks, nacks and heartbeats of many jobs, settled as ONE
/// queue call (one ATLAS write). Without any `jobs:work`, `403` for the whole request;
/// then each item is answered on its own, in request order: a job that does not exist or
/// whose queue the caller does not work is that item's `404`, a bad item its `400`, a
/// stale lease its `409`. A store failure is the whole request's error (nothing of the
/// batch happened).
pub(super) async fn batch(
    state: &Arc<State>,
    claims: Option<&Claims>,
    body: &[u8],
) -> Result<Response<Body>, Response<Body>> {
    let caller = Caller::new(state, claims)?;
    if !state.auth.authorize_some(caller.user_id, perms::JOBS_WORK) {
        return Err(forbidden(perms::JOBS_WORK));
    }
    let b: BatchBody = parse(body)?;
    if b.items.len() > limits::BATCH_COUNT_MAX {
        return Err(problem(
            StatusCode::BAD_REQUEST,
            "invalid-field",
            format!(
                "items: {} items; at most {} per batch",
                b.items.len(),
                limits::BATCH_COUNT_MAX
            ),
        ));
    }
    // Each item's answer so far (`None`: sent to the queue as `settles[k]`).
    let mut answers: Vec<Option<Value>> = Vec::with_capacity(b.items.len());
    let mut ids: Vec<String> = Vec::with_capacity(b.items.len());
    let mut settles: Vec<Settle> = Vec::with_capacity(b.items.len());
    let mut planned: Vec<Result<Settle, (StatusCode, &'static str, String)>> =
        Vec::with_capacity(b.items.len());
    for item in b.items {
        ids.push(item.id.clone());
        planned.push(item.settle());
    }
    // The jobs' queues, in one look at the state; whether the caller works each queue,
    // asked once per queue.
    let queues: Vec<Option<String>> = state.queue.with_state(|s| {
        planned
            .iter()
            .map(|p| {
                p.as_ref()
                    .ok()
                    .and_then(|x| s.job(x.id()))
                    .map(|j| j.queue.clone())
            })
            .collect()
    });
    let mut works: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for ((p, queue), id_text) in planned.into_iter().zip(queues).zip(&ids) {
        let item = match p {
            Ok(item) => item,
            Err((status, slug, detail)) => {
                answers.push(Some(item_problem(id_text, status, slug, detail)));
                continue;
            }
        };
        let id = item.id();
        if !seen.insert(id) {
            answers.push(Some(item_problem(
                id_text,
                StatusCode::BAD_REQUEST,
                "invalid-field",
                format!("items: job {id} appears twice"),
            )));
            continue;
        }
        let allowed = queue.is_some_and(|q| match works.get(&q) {
            Some(&w) => w,
            None => {
                let w = caller.works(&q);
                works.insert(q, w);
                w
            }
        });
        if !allowed {
            // A stranger's job is as missing as an absent one.
            answers.push(Some(item_problem(
                id_text,
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no job {id}"),
            )));
            continue;
        }
        answers.push(None);
        settles.push(item);
    }
    let q = state.queue.clone();
    let span = trace::span!("queue.settle", items = settles.len());
    let results = transition(state, body.len(), span, move || q.settle(&settles))
        .await?
        .map_err(queue_error)?;
    let mut requeued = false;
    let mut results = results.into_iter();
    let items: Vec<ItemAnswer<'_>> = answers
        .into_iter()
        .zip(&ids)
        .map(|(answer, id_text)| {
            if let Some(a) = answer {
                return ItemAnswer::Problem(a);
            }
            let Some(r) = results.next() else {
                // One result per item sent: a mismatch is a bug, answered as one.
                return ItemAnswer::Problem(item_problem(
                    id_text,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                ));
            };
            match r {
                Ok(settled) => {
                    requeued |= settled == Settled::Nacked(JobState::Pending);
                    ItemAnswer::Settled(settled_view(id_text, settled))
                }
                Err(e) => ItemAnswer::Problem(match job_problem(&e) {
                    Some((status, slug, detail)) => item_problem(id_text, status, slug, detail),
                    None => {
                        tracing::error!(error = %e, "batch item failure");
                        item_problem(
                            id_text,
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal",
                            "internal error",
                        )
                    }
                }),
            }
        })
        .collect();
    if requeued {
        state.job_ready.notify_waiters();
    }
    Ok(json(StatusCode::OK, &ItemsPage { items }))
}

pub(super) fn queues(state: &State) -> Result<Response<Body>, Response<Body>> {
    let names: Vec<String> = state
        .queue
        .with_state(|s| s.queue_names().map(str::to_owned).collect());
    let items: Vec<Value> = names
        .iter()
        .map(|n| {
            let s = state.queue.stats(n);
            j!({
                "queue": n,
                "pending": s.pending_count,
                "ready": s.ready_count,
                "delayed": s.delayed_count,
                "in_progress": s.in_progress_count,
                "done": s.done_count,
                "failed": s.failed_count,
                "cancelled": s.cancelled_count,
                "oldest_ready_age_ms": s.oldest_ready_age_ms,
            })
        })
        .collect();
    Ok(json(StatusCode::OK, &j!({"queues": items})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveBody {
    #[serde(default)]
    ids: Option<Vec<String>>,
}

pub(super) async fn redrive(
    state: &Arc<State>,
    raw: Option<String>,
    body: &[u8],
) -> Result<Response<Body>, Response<Body>> {
    let queue = raw.as_deref().and_then(percent_decode).unwrap_or_default();
    let b: RedriveBody = if body.is_empty() {
        RedriveBody { ids: None }
    } else {
        parse(body)?
    };
    let ids: Option<Vec<JobId>> = b
        .ids
        .map(|v| v.iter().map(|s| s.parse()).collect::<Result<_, _>>())
        .transpose()
        .map_err(queue_error)?;
    let q = state.queue.clone();
    let n = blocking(move || q.redrive(&queue, ids.as_deref()))
        .await?
        .map_err(queue_error)?;
    state.job_ready.notify_waiters();
    Ok(json(StatusCode::OK, &j!({"redriven": n})))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The views serialized from the job, a claim and settled items write the bytes the
    /// `Value`s built field by field wrote before (serde_json's map sorts keys): with every
    /// optional field set, and with none.
    #[test]
    fn views_write_the_json_of_the_values_they_replaced() {
        let mut full = Job {
            id: "0190000000007000800000000000002a".parse().unwrap(),
            queue: "emails".into(),
            owner: Some(Arc::from("u1")),
            payload: Arc::new(j!({"to": "a@b", "n": [1, 2.5, null], "s": "q\"\n"})),
            state: JobState::Failed,
            priority: -3,
            run_at_ms: 5,
            attempts: 2,
            attempts_max: 3,
            backoff: helios_queue::Backoff::default(),
            lease: None,
            token_last: 9,
            dedup_id: Some("d".into()),
            created_at_ms: 1,
            updated_at_ms: 7,
            finished_at_ms: Some(8),
            last_error: Some("boom \u{7f}".into()),
            result: Some(j!({"ok": false})),
            trace: Some(
                helios_core::TraceContext::parse(
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    Some("k=v"),
                )
                .unwrap(),
            ),
        };
        let old = |job: &Job| -> Value {
            j!({
                "id": job.id,
                "queue": job.queue,
                "owner": job.owner,
                "state": job.state,
                "payload": job.payload,
                "priority": job.priority,
                "run_at": job.run_at_ms,
                "attempts": job.attempts,
                "max_attempts": job.attempts_max,
                "created_at": job.created_at_ms,
                "updated_at": job.updated_at_ms,
                "finished_at": job.finished_at_ms,
                "last_error": job.last_error,
                "result": job.result,
                "trace": job.trace,
            })
        };
        for _ in 0..2 {
            let new = serde_json::to_string(&job_view(&full)).unwrap();
            assert_eq!(new, serde_json::to_string(&old(&full)).unwrap());
            (full.owner, full.finished_at_ms, full.last_error) = (None, None, None);
            (full.result, full.trace, full.state) = (None, None, JobState::Pending);
        }
        let page = JobPage {
            items: vec![job_view(&full)],
            next_cursor: Some(full.id),
        };
        let was = j!({"items": [old(&full)], "next_cursor": full.id});
        assert_eq!(
            serde_json::to_string(&page).unwrap(),
            serde_json::to_string(&was).unwrap()
        );
        // A claim's answer, with a lease and a trace, and without either.
        let mut claim = Claim {
            job: full.clone(),
            token: 1_798_205_440_000_000_001,
        };
        claim.job.lease = Some(helios_queue::Lease {
            worker: "w1".into(),
            token: claim.token,
            expires_at_ms: 30_000,
        });
        claim.job.trace = full.trace.clone().or(Some(
            helios_core::TraceContext::parse(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                None,
            )
            .unwrap(),
        ));
        let old_claim = |c: &Claim| -> Value {
            j!({
                "id": c.job.id,
                "queue": c.job.queue,
                "payload": c.job.payload,
                "attempt": c.job.attempts,
                "max_attempts": c.job.attempts_max,
                "lease_token": c.token.to_string(),
                "lease_expires_at": c.job.lease.as_ref().map(|l| l.expires_at_ms),
                "trace": c.job.trace,
            })
        };
        for _ in 0..2 {
            let page = ClaimPage {
                jobs: vec![claim_view(&claim)],
            };
            assert_eq!(
                serde_json::to_string(&page).unwrap(),
                serde_json::to_string(&j!({"jobs": [old_claim(&claim)]})).unwrap()
            );
            (claim.job.lease, claim.job.trace) = (None, None);
        }
        // A settle batch's answers: each outcome, and a problem.
        let problem = item_problem("x", StatusCode::NOT_FOUND, "not-found", "no job x");
        let items = ItemsPage {
            items: vec![
                ItemAnswer::Settled(settled_view("a", Settled::Acked)),
                ItemAnswer::Settled(settled_view("b", Settled::Nacked(JobState::Pending))),
                ItemAnswer::Settled(settled_view("c", Settled::Nacked(JobState::Failed))),
                ItemAnswer::Settled(settled_view(
                    "d",
                    Settled::Extended {
                        lease_expires_at_ms: 77,
                    },
                )),
                ItemAnswer::Problem(problem.clone()),
            ],
        };
        let was = j!({"items": [
            {"id": "a", "status": 204},
            {"id": "b", "status": 200, "state": JobState::Pending},
            {"id": "c", "status": 200, "state": JobState::Failed},
            {"id": "d", "status": 200, "lease_expires_at": 77},
            problem,
        ]});
        assert_eq!(
            serde_json::to_string(&items).unwrap(),
            serde_json::to_string(&was).unwrap()
        );
    }
}
