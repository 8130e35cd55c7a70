//! Where a worker's jobs come from and where their outcomes go: the gateway over HTTP
//! ([`HttpSource`]: long-polled batch claims, one batch request for many acks, nacks and
//! heartbeats, the registry's routes) or the queue in the same process
//! ([`EmbeddedSource`]: the same calls on the shared store, no HTTP hop).
//!
//! Invariant: a source answers every item of a settle batch, in order; an item the queue
//! refused (a lease lost to expiry, a job someone cancelled) is that item's error, and
//! only a failure to reach the queue at all fails the whole batch (the runtime then
//! retries it while the leases last).

use super::connector::BoxFuture;
use crate::app::client::{CallError, Gateway};
use helios_core::TraceContext;
use helios_queue::registry::{Registry, WorkerRecord};
use helios_queue::{JobId, JobState, Queue, Settle, Settled};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// A claimed job, under its lease.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The job.
    pub id: JobId,
    /// The fencing token of this lease.
    pub token: u64,
    /// Its queue.
    pub queue: String,
    /// This attempt (1 for the first).
    pub attempt: u32,
    /// The attempts allowed in all.
    pub max_attempts: u32,
    /// The payload.
    pub payload: Arc<Value>,
    /// The W3C trace context stored with the job at enqueue: the attempt continues it.
    pub trace: Option<TraceContext>,
}

/// What one settled item came to.
pub type ItemResult = Result<Settled, ItemError>;

/// A settle item the queue refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    /// The lease is gone (expired and re-claimed, cancelled, unknown): the job is not
    /// this worker's any more.
    pub lost: bool,
    /// The queue's reason.
    pub detail: String,
}

/// The queue could not be reached, or answered what no queue answers.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The gateway: unreachable, refused the login, or timed out.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The gateway answered with an error status for the whole request.
    #[error("{what}: {status} {detail}")]
    Refused {
        /// The request.
        what: &'static str,
        /// The status.
        status: StatusCode,
        /// The problem's detail.
        detail: String,
    },
    /// The embedded queue failed (the store refused writes).
    #[error("queue: {0}")]
    Queue(#[from] helios_queue::QueueError),
    /// An answer that does not parse.
    #[error("{what}: unexpected answer: {detail}")]
    Answer {
        /// The request.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl SourceError {
    /// Whether the worker cannot go on: the gateway refused its credentials (an expired or
    /// revoked token, a login refused). Restarting with good credentials is the fix.
    pub fn fatal(&self) -> bool {
        matches!(self, SourceError::Call(CallError::Login(_)))
    }

    /// The status of a refusal of the whole request, if it was one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            SourceError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether retrying can help: a refusal of the credentials or the request itself
    /// (4xx other than 408/429) will be refused again.
    pub fn transient(&self) -> bool {
        match self {
            SourceError::Call(CallError::Login(_)) => false,
            SourceError::Refused { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
            _ => true,
        }
    }
}

/// A queue a worker claims from and reports to.
pub trait Source: Send + Sync + 'static {
    /// Claims up to `count` jobs of `queue` for `worker` under leases of `lease_ms`,
    /// waiting up to `wait` for one to be ready.
    fn claim<'a>(
        &'a self,
        queue: &'a str,
        worker: &'a str,
        count: usize,
        lease_ms: u64,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<Claimed>, SourceError>>;

    /// Acks, nacks and extends leases: one answer per item, in order.
    fn settle(&self, items: Vec<Settle>) -> BoxFuture<'_, Result<Vec<ItemResult>, SourceError>>;

    /// Puts the worker's registry record (a heartbeat: it lives for `record.ttl_ms`).
    fn register(&self, record: WorkerRecord) -> BoxFuture<'_, Result<(), SourceError>>;

    /// Removes the worker's registry record (a clean exit).
    fn deregister<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), SourceError>>;
}

/// The gateway's routes: `POST /api/v1/jobs/claim`, `POST /api/v1/jobs/batch`,
/// `PUT|DELETE /api/v1/workers/{id}`, with a token holding `jobs:work` (or
/// `jobs:work:{queue}` for each queue served).
#[derive(Debug)]
pub struct HttpSource {
    gateway: Gateway,
}

impl HttpSource {
    /// A source over `gateway`.
    pub fn new(gateway: Gateway) -> Self {
        HttpSource { gateway }
    }
}

/// The problem detail of an error answer (or its text).
fn detail(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["detail"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned())
}

/// A `200` answer of request `what` parsed as `T`; any other status is the request's
/// refusal, with the problem's detail.
fn answer<T: serde::de::DeserializeOwned>(
    what: &'static str,
    status: StatusCode,
    body: &[u8],
) -> Result<T, SourceError> {
    if status != StatusCode::OK {
        return Err(SourceError::Refused {
            what,
            status,
            detail: detail(body),
        });
    }
    serde_json::from_slice(body).map_err(|e| SourceError::Answer {
        what,
        detail: e.to_string(),
    })
}

#[derive(Deserialize)]
struct ClaimAnswer {
    jobs: Vec<ClaimedJob>,
}

#[derive(Deserialize)]
struct ClaimedJob {
    id: JobId,
    lease_token: String,
    queue: String,
    attempt: u32,
    max_attempts: u32,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    trace: Option<TraceContext>,
}

#[derive(Deserialize)]
struct BatchAnswer {
    items: Vec<BatchItem>,
}

#[derive(Deserialize)]
struct BatchItem {
    status: u16,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    state: Option<JobState>,
    #[serde(default)]
    lease_expires_at: Option<u64>,
}

fn settle_json(item: &Settle) -> Value {
    match item {
        Settle::Ack { id, token, result } => {
            let mut v = json!({"id": id, "lease_token": token.to_string(), "action": "ack"});
            if let Some(r) = result {
                v["result"] = r.clone();
            }
            v
        }
        Settle::Nack {
            id,
            token,
            error,
            retry_delay_ms,
            permanent,
        } => {
            let mut v = json!({
                "id": id, "lease_token": token.to_string(), "action": "nack",
                "error": error, "permanent": permanent,
            });
            if let Some(ms) = retry_delay_ms {
                v["retry_in_ms"] = json!(ms);
            }
            v
        }
        Settle::Heartbeat {
            id,
            token,
            lease_ms,
        } => json!({
            "id": id, "lease_token": token.to_string(), "action": "heartbeat",
            "lease_ms": lease_ms,
        }),
    }
}

/// How long a request may take beyond its own long-poll wait.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Source for HttpSource {
    fn claim<'a>(
        &'a self,
        queue: &'a str,
        worker: &'a str,
        count: usize,
        lease_ms: u64,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<Claimed>, SourceError>> {
        Box::pin(async move {
            let body = json!({
                "queue": queue,
                "worker_id": worker,
                "max_jobs": count,
                "lease_seconds": lease_ms.div_ceil(1000).max(1),
                "wait_seconds": wait.as_secs(),
            });
            let (status, bytes) = self
                .gateway
                .call(
                    Method::POST,
                    "/api/v1/jobs/claim",
                    Some(&body),
                    wait + CALL_TIMEOUT,
                )
                .await?;
            let a: ClaimAnswer = answer("claim", status, &bytes)?;
            a.jobs
                .into_iter()
                .map(|j| {
                    Ok(Claimed {
                        id: j.id,
                        token: j.lease_token.parse().map_err(|_| SourceError::Answer {
                            what: "claim",
                            detail: format!("lease_token {:?}", j.lease_token),
                        })?,
                        queue: j.queue,
                        attempt: j.attempt,
                        max_attempts: j.max_attempts,
                        payload: Arc::new(j.payload),
                        // One that does not check out is not passed on.
                        trace: j.trace.filter(|t| t.validate().is_ok()),
                    })
                })
                .collect()
        })
    }

    fn settle(&self, items: Vec<Settle>) -> BoxFuture<'_, Result<Vec<ItemResult>, SourceError>> {
        Box::pin(async move {
            let body = json!({"items": items.iter().map(settle_json).collect::<Vec<_>>()});
            let (status, bytes) = self
                .gateway
                .call(
                    Method::POST,
                    "/api/v1/jobs/batch",
                    Some(&body),
                    CALL_TIMEOUT,
                )
                .await?;
            let a: BatchAnswer = answer("settle", status, &bytes)?;
            if a.items.len() != items.len() {
                return Err(SourceError::Answer {
                    what: "settle",
                    detail: format!("{} answers for {} items", a.items.len(), items.len()),
                });
            }
            Ok(items
                .iter()
                .zip(a.items)
                .map(|(item, r)| {
                    if (200..300).contains(&r.status) {
                        Ok(match item {
                            Settle::Ack { .. } => Settled::Acked,
                            Settle::Nack { .. } => {
                                Settled::Nacked(r.state.unwrap_or(JobState::Pending))
                            }
                            Settle::Heartbeat { .. } => Settled::Extended {
                                lease_expires_at_ms: r.lease_expires_at.unwrap_or_default(),
                            },
                        })
                    } else {
                        Err(ItemError {
                            lost: r.status == 404 || r.status == 409,
                            detail: format!("{} {}", r.status, r.detail.unwrap_or_default()),
                        })
                    }
                })
                .collect())
        })
    }

    fn register(&self, record: WorkerRecord) -> BoxFuture<'_, Result<(), SourceError>> {
        Box::pin(async move {
            let body = json!({
                "version": record.version,
                "queues": record.queues,
                "in_flight": record.in_flight,
                "started_at": record.started_at_ms,
                "host": record.host,
                "ttl_seconds": record.ttl_ms.div_ceil(1000),
            });
            let path = format!("/api/v1/workers/{}", record.id);
            let (status, bytes) = self
                .gateway
                .call(Method::PUT, &path, Some(&body), CALL_TIMEOUT)
                .await?;
            if !status.is_success() {
                return Err(SourceError::Refused {
                    what: "register",
                    status,
                    detail: detail(&bytes),
                });
            }
            Ok(())
        })
    }

    fn deregister<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            let path = format!("/api/v1/workers/{id}");
            let (status, bytes) = self
                .gateway
                .call(Method::DELETE, &path, None, CALL_TIMEOUT)
                .await?;
            if !status.is_success() && status != StatusCode::NOT_FOUND {
                return Err(SourceError::Refused {
                    what: "deregister",
                    status,
                    detail: detail(&bytes),
                });
            }
            Ok(())
        })
    }
}

/// The queue in this process (the gateway's `workers:` section): the same transitions as
/// the HTTP routes, committed where they commit ([`queue_call`]), with no HTTP hop. `ready` is the gateway's
/// wake-up for long-polling claims (enqueues, nacks, expired leases).
pub struct EmbeddedSource {
    queue: Arc<Queue>,
    registry: Arc<Registry>,
    ready: Arc<tokio::sync::Notify>,
    /// The owner recorded on the registry entry (none: the gateway itself).
    owner: Option<String>,
}

impl std::fmt::Debug for EmbeddedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedSource").finish_non_exhaustive()
    }
}

impl EmbeddedSource {
    /// A source over `queue` and `registry`; `ready` is notified when jobs may be ready.
    pub fn new(
        queue: Arc<Queue>,
        registry: Arc<Registry>,
        ready: Arc<tokio::sync::Notify>,
    ) -> Self {
        EmbeddedSource {
            queue,
            registry,
            ready,
            owner: None,
        }
    }
}

/// Runs a queue call that writes to ATLAS ([`crate::app::store_call`]): on the blocking
/// pool when `may_wait` ([`Queue::writes_may_wait`]), on this thread otherwise, as the
/// gateway's routes do.
async fn queue_call<T: Send + 'static>(
    may_wait: bool,
    f: impl FnOnce() -> Result<T, helios_queue::QueueError> + Send + 'static,
) -> Result<T, SourceError> {
    crate::app::store_call(may_wait, f)
        .await
        .map_err(|detail| SourceError::Answer {
            what: "queue",
            detail,
        })?
        .map_err(SourceError::Queue)
}

impl Source for EmbeddedSource {
    fn claim<'a>(
        &'a self,
        queue: &'a str,
        worker: &'a str,
        count: usize,
        lease_ms: u64,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<Claimed>, SourceError>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                // Registered before looking, so a wake-up in between is not missed.
                let notified = self.ready.notified();
                let q = self.queue.clone();
                let (name, w) = (queue.to_owned(), worker.to_owned());
                let claims = queue_call(q.writes_may_wait(), move || {
                    q.claim(&name, &w, count, lease_ms)
                })
                .await?;
                if !claims.is_empty() || tokio::time::Instant::now() >= deadline {
                    return Ok(claims
                        .into_iter()
                        .map(|c| Claimed {
                            id: c.job.id,
                            token: c.token,
                            queue: c.job.queue.clone(),
                            attempt: c.job.attempts,
                            max_attempts: c.job.attempts_max,
                            payload: c.job.payload.clone(),
                            trace: c.job.trace.clone(),
                        })
                        .collect());
                }
                let _ = tokio::time::timeout_at(deadline, notified).await;
            }
        })
    }

    fn settle(&self, items: Vec<Settle>) -> BoxFuture<'_, Result<Vec<ItemResult>, SourceError>> {
        Box::pin(async move {
            let q = self.queue.clone();
            let out = queue_call(q.writes_may_wait(), move || q.settle(&items)).await?;
            if out
                .iter()
                .any(|r| matches!(r, Ok(Settled::Nacked(JobState::Pending))))
            {
                self.ready.notify_waiters();
            }
            Ok(out
                .into_iter()
                .map(|r| {
                    r.map_err(|e| ItemError {
                        lost: matches!(
                            e,
                            helios_queue::QueueError::NotFound { .. }
                                | helios_queue::QueueError::StaleToken { .. }
                                | helios_queue::QueueError::LeaseExpired { .. }
                                | helios_queue::QueueError::WrongState { .. }
                        ),
                        detail: e.to_string(),
                    })
                })
                .collect())
        })
    }

    fn register(&self, mut record: WorkerRecord) -> BoxFuture<'_, Result<(), SourceError>> {
        Box::pin(async move {
            record.owner = self.owner.clone();
            let r = self.registry.clone();
            queue_call(true, move || r.put(record)).await
        })
    }

    fn deregister<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            let (r, id, owner) = (self.registry.clone(), id.to_owned(), self.owner.clone());
            queue_call(true, move || r.remove(&id, owner.as_deref()).map(|_| ())).await
        })
    }
}
