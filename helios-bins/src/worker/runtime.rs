//! The worker runtime: claims jobs from a [`Source`], runs each through its queue's
//! [`Connector`], and reports the outcome (ack, nack with an error class, heartbeat) with
//! the lease's fencing token.
//!
//! Per queue a claim loop holds `concurrency` running slots and twice as many unsettled
//! places: it takes every free pair (up to `batch_max`), claims that many jobs in one
//! request (long-polled), and spawns one task per job. A finished attempt gives its
//! running slot back at once and goes to the settler, which sends whatever outcomes have
//! piled up as one batch (up to [`SETTLE_BATCH_MAX`] items and [`SETTLE_BATCH_BYTES_MAX`]
//! bytes; one request at a time, a second beside it only once the first has taken
//! [`SETTLE_ALONE`], at most [`SETTLES_IN_FLIGHT`]); its unsettled place frees when
//! the outcome is settled, so a slow or unreachable queue bounds the work held, not just
//! the work running.
//! A heartbeat loop, every third of the lease, extends the leases of attempts running
//! longer than a sixth of it; a lease found lost (expired and re-claimed) stops its
//! attempt. A connector that panics fails its attempt (a retryable error). A registry loop
//! keeps `worker:{id}` alive.
//!
//! Retries: a retryable error is nacked with full-jitter exponential backoff
//! (`random(0, min(backoff_max, backoff_base * 2^(attempt-1)))`, as in AWS's
//! architecture blog); a permanent one, or any error once the service's `max_attempts`
//! is reached, is nacked permanent (dead-letter).
//!
//! Drain (`stop`): claiming stops (a claim in flight is awaited, and its jobs are released
//! at once), attempts in flight finish up to `drain_timeout`; those still running then are
//! stopped and nacked to run again at once; every outcome is settled before `run` returns.
//! `force` returns at once: the leases then expire and the jobs run again elsewhere.
//!
//! Invariants: every claimed job is settled exactly once by this worker (ack, nack,
//! release) or found lost; at most `concurrency` attempts per queue run at once, and at
//! most `2 * concurrency` jobs are claimed and unsettled;
//! a settle batch never holds the same job twice.

use super::connector::{BoxFuture, Connector, ConnectorError, ErrorClass, JobInput};
use super::metrics::{JobOutcome, Metrics, QueueMetrics};
use super::source::{Claimed, ItemResult, Source};
use crate::app::Context;
use crate::app::trace;
use helios_queue::registry::WorkerRecord;
use helios_queue::{JobId, JobState, Settle, Settled};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tracing::Instrument;

/// The most outcomes in one settle request.
pub const SETTLE_BATCH_MAX: usize = 1000;
/// Settle requests in flight at once, at most.
pub const SETTLES_IN_FLIGHT: usize = 2;
/// How long the settler waits for its settle request before it sends the next batch
/// beside it. Under it one request is in flight: the outcomes that finish while it is on
/// its way make the next batch, so batches grow with the load (docs/performance.md: half
/// the settle requests of two at once, the HTTP drain ~20% faster). Past it, a slow or
/// stuck request (the HTTP source gives up after 30 s) no longer holds every outcome back.
pub const SETTLE_ALONE: Duration = Duration::from_secs(1);
/// The most bytes of outcomes (results, errors) in one settle request: well under the
/// gateway's default body limit (1 MiB).
pub const SETTLE_BATCH_BYTES_MAX: usize = 512 * 1024;
/// The largest result stored with a job (its JSON); a larger one is not stored (the job
/// is still acked, and the size logged).
pub const RESULT_BYTES_MAX: usize = 64 * 1024;
/// How long the outcomes left at the end of a drain may take to be settled.
const SETTLE_GRACE: Duration = Duration::from_secs(10);
/// The bytes of an outcome in a settle request besides its result and error.
const SETTLE_ITEM_BYTES: usize = 160;
/// The longest error text sent (the queue keeps 4096 bytes).
const ERROR_BYTES_MAX: usize = 4096;

/// What a worker is and how it claims.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The worker's id (its registry key, the claims' `worker_id`).
    pub worker_id: String,
    /// Lease asked for per claim.
    pub lease: Duration,
    /// How long a claim waits for work (long poll).
    pub poll_wait: Duration,
    /// The most jobs claimed in one request.
    pub batch_max: usize,
    /// How long a drain lets attempts finish.
    pub drain_timeout: Duration,
    /// The registry record's lifetime (refreshed every third of it).
    pub registry_ttl: Duration,
    /// Recorded in the registry.
    pub version: String,
    /// Recorded in the registry.
    pub host: String,
}

/// One queue served: its connector and limits.
pub struct Service {
    /// The queue.
    pub queue: String,
    /// Does its jobs.
    pub connector: Arc<dyn Connector>,
    /// Jobs of this queue claimed and unsettled at once, at most.
    pub concurrency: usize,
    /// How long one attempt may run (the connector's own bound; the runtime stops an
    /// attempt a second after it).
    pub timeout: Duration,
    /// Attempts this worker allows (0: the job's own `max_attempts`); an error on the
    /// last one dead-letters the job.
    pub max_attempts: u32,
    /// Backoff base (the first retry waits up to this).
    pub backoff_base: Duration,
    /// Backoff cap.
    pub backoff_max: Duration,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("queue", &self.queue)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// A job claimed by this worker and not yet settled.
struct Running {
    token: u64,
    service: usize,
    claimed_at: Instant,
    /// Set once its outcome went to the settler (or it was released or lost).
    finished: bool,
    abort: Option<AbortHandle>,
}

/// An outcome on its way to the queue.
struct Done {
    id: JobId,
    /// The lease the outcome is for (a job claimed again holds a new one).
    token: u64,
    service: usize,
    item: Settle,
    /// Bytes of result and error text it carries (the request size bound).
    bytes: usize,
    /// What the outcome counts as when settled (a release is a nack counted apart).
    released: bool,
    _slot: Option<Slot>,
}

/// A claimed job's places: one of the queue's `concurrency` running slots (given back
/// when its attempt ends) and one of its unsettled places (given back when its outcome is
/// settled).
struct Slot {
    _running: Option<OwnedSemaphorePermit>,
    _held: OwnedSemaphorePermit,
}

impl Slot {
    /// The attempt is over: its running slot goes back; the job stays held until settled.
    fn attempt_done(&mut self) {
        self._running = None;
    }
}

/// Jobs of a queue claimed and not yet settled, at most: its running slots, and room for
/// the outcomes of as many on their way to the queue (a slow or unreachable queue bounds
/// the work held, not only the work running).
fn unsettled_max(concurrency: usize) -> usize {
    concurrency.max(1).saturating_mul(2)
}

/// A worker: services over one source. See the module docs.
pub struct Worker {
    source: Arc<dyn Source>,
    services: Vec<Service>,
    settings: Settings,
    metrics: Arc<Metrics>,
    ctx: Context,
    running: Mutex<HashMap<JobId, Running>>,
    /// Woken whenever a job leaves `running`.
    settled: tokio::sync::Notify,
    /// Why the worker cannot go on (its credentials were refused), once it is so.
    fatal: Mutex<Option<String>>,
    /// Notified (once) when `fatal` is set: the worker drains and stops.
    fatal_stop: tokio::sync::Notify,
    started_at_ms: u64,
    /// Randomness that needs no secrecy (span ids, backoff jitter), seeded once from
    /// `ctx`: one system call per worker, not one per attempt.
    draws: Mutex<rand::rngs::StdRng>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("settings", &self.settings)
            .field("services", &self.services)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker serving `services` from `source`; time and randomness (backoff jitter,
    /// trace span ids: a generator seeded from `ctx`'s randomness) from `ctx`.
    pub fn new(
        source: Arc<dyn Source>,
        services: Vec<Service>,
        settings: Settings,
        ctx: Context,
    ) -> Arc<Self> {
        let metrics = Arc::new(Metrics::new(services.iter().map(|s| s.queue.as_str())));
        let started_at_ms = ctx.clock.now_ms();
        let mut seed = [0u8; 32];
        ctx.random.fill(&mut seed);
        let draws = Mutex::new(rand::SeedableRng::from_seed(seed));
        Arc::new(Worker {
            source,
            services,
            settings,
            metrics,
            ctx,
            running: Mutex::new(HashMap::new()),
            settled: tokio::sync::Notify::new(),
            fatal: Mutex::new(None),
            fatal_stop: tokio::sync::Notify::new(),
            started_at_ms,
            draws,
        })
    }

    /// The worker's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The worker's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Why the worker stopped by itself (the gateway refused its credentials: an expired
    /// or revoked token, a changed password), if it did. The binary then exits 1.
    pub fn fatal_error(&self) -> Option<String> {
        self.fatal.lock().clone()
    }

    /// Records why the worker cannot go on and starts its drain.
    fn fail(&self, why: String) {
        let mut f = self.fatal.lock();
        if f.is_none() {
            tracing::error!(error = %why, "the worker cannot go on; stopping");
            *f = Some(why);
            self.fatal_stop.notify_one();
        }
    }

    /// Jobs claimed and not yet settled.
    pub fn in_flight(&self) -> usize {
        self.running.lock().len()
    }

    fn queue_metrics(&self, service: usize) -> Option<&QueueMetrics> {
        self.metrics.queues.get(&self.services[service].queue)
    }

    /// Serves until `stop` (then drains, see the module docs) or `force` (returns at once).
    pub async fn run(
        self: Arc<Self>,
        stop: impl Future<Output = ()>,
        force: impl Future<Output = ()>,
    ) {
        let (stopping_tx, stopping) = watch::channel(false);
        let (tx, rx) = mpsc::unbounded_channel::<Done>();
        let mut settler = tokio::spawn(self.clone().settle_loop(rx));
        let heartbeats = tokio::spawn(self.clone().heartbeat_loop());
        let registry = tokio::spawn(self.clone().registry_loop());
        let claimers: Vec<JoinHandle<()>> = (0..self.services.len())
            .map(|i| tokio::spawn(self.clone().claim_loop(i, tx.clone(), stopping.clone())))
            .collect();
        let mut tasks: Vec<AbortHandle> = claimers.iter().map(JoinHandle::abort_handle).collect();
        tasks.extend([
            settler.abort_handle(),
            heartbeats.abort_handle(),
            registry.abort_handle(),
        ]);
        tracing::info!(
            worker = %self.settings.worker_id,
            queues = ?self.services.iter().map(|s| &s.queue).collect::<Vec<_>>(),
            "worker started"
        );
        tokio::pin!(force);
        tokio::select! {
            () = stop => {}
            () = self.fatal_stop.notified() => {}
            () = &mut force => return self.abort_all(&tasks),
        }
        tracing::info!(
            in_flight = self.in_flight(),
            deadline_ms = self.settings.drain_timeout.as_millis() as u64,
            "draining: no new claims; letting jobs in flight finish"
        );
        stopping_tx.send_replace(true);
        let drained = async {
            // A claim loop ends once its claim in flight returns.
            for c in claimers {
                let _ = c.await;
            }
            self.wait_unfinished().await;
        };
        let claim_loops = self.services.len();
        tokio::select! {
            () = drained => {}
            () = tokio::time::sleep(self.settings.drain_timeout) => {
                self.release_unfinished(&tx);
                // A claim still waiting is given up (what it may have claimed comes back
                // when its lease runs out).
                for t in &tasks[..claim_loops] {
                    t.abort();
                }
            }
            () = &mut force => return self.abort_all(&tasks),
        }
        drop(tx);
        // Every outcome settled (the settler ends when the last sender is gone: the claim
        // loops' and the attempts' senders went with them), within a bounded grace.
        tokio::select! {
            _ = &mut settler => {}
            () = tokio::time::sleep(SETTLE_GRACE) => {
                tracing::warn!("outcomes still unsettled after the drain; their jobs run again after their leases");
                return self.abort_all(&tasks);
            }
            () = &mut force => return self.abort_all(&tasks),
        }
        heartbeats.abort();
        registry.abort();
        if let Err(e) = self.source.deregister(&self.settings.worker_id).await {
            tracing::warn!(error = %e, "cannot remove the registry record; it expires by TTL");
        }
        tracing::info!(worker = %self.settings.worker_id, "worker drained");
    }

    /// A forced stop: every task and attempt stops where it is.
    fn abort_all(&self, tasks: &[AbortHandle]) {
        tracing::warn!(
            in_flight = self.in_flight(),
            "stopping at once; the leases in flight will expire"
        );
        for t in tasks {
            t.abort();
        }
        for r in self.running.lock().values() {
            if let Some(a) = &r.abort {
                a.abort();
            }
        }
    }

    /// Waits until every attempt in flight has finished (its outcome may still be on its
    /// way to the queue).
    async fn wait_unfinished(&self) {
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.running.lock().values().all(|r| r.finished) {
                return;
            }
            // Finishing notifies too (see `finish`).
            notified.await;
        }
    }

    /// The drain deadline passed: stops the attempts still running and nacks them to
    /// run again at once.
    fn release_unfinished(&self, tx: &mpsc::UnboundedSender<Done>) {
        let mut running = self.running.lock();
        let mut n = 0;
        for (id, r) in running.iter_mut().filter(|(_, r)| !r.finished) {
            if let Some(a) = r.abort.take() {
                a.abort();
            }
            r.finished = true;
            n += 1;
            let _ = tx.send(Done {
                id: *id,
                token: r.token,
                service: r.service,
                item: release(*id, r.token),
                bytes: 0,
                released: true,
                _slot: None,
            });
        }
        if n > 0 {
            tracing::warn!(
                jobs = n,
                "drain deadline: attempts still running stopped and released"
            );
        }
    }

    async fn claim_loop(
        self: Arc<Self>,
        service: usize,
        tx: mpsc::UnboundedSender<Done>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let svc = &self.services[service];
        let slots = Arc::new(Semaphore::new(svc.concurrency.max(1)));
        let unsettled = Arc::new(Semaphore::new(unsettled_max(svc.concurrency)));
        let mut backoff = Duration::from_millis(100);
        loop {
            if *stopping.borrow() {
                return;
            }
            let first = tokio::select! {
                p = async {
                    let running = slots.clone().acquire_owned().await?;
                    let held = unsettled.clone().acquire_owned().await?;
                    Ok::<_, tokio::sync::AcquireError>(Slot { _running: Some(running), _held: held })
                } => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = stopping.changed() => return,
            };
            let mut permits = vec![first];
            while permits.len() < self.settings.batch_max.max(1) {
                let (Ok(running), Ok(held)) = (
                    slots.clone().try_acquire_owned(),
                    unsettled.clone().try_acquire_owned(),
                ) else {
                    break;
                };
                permits.push(Slot {
                    _running: Some(running),
                    _held: held,
                });
            }
            let lease_ms = u64::try_from(self.settings.lease.as_millis()).unwrap_or(u64::MAX);
            let asked = Instant::now();
            // Not cancelled by a stop: jobs it claims are released at once instead.
            let claimed = self
                .source
                .claim(
                    &svc.queue,
                    &self.settings.worker_id,
                    permits.len(),
                    lease_ms,
                    self.settings.poll_wait,
                )
                .await;
            match claimed {
                Ok(jobs) => {
                    backoff = Duration::from_millis(100);
                    self.metrics
                        .claimed
                        .fetch_add(jobs.len() as u64, Ordering::Relaxed);
                    let stop_now = *stopping.borrow();
                    let empty = jobs.is_empty();
                    for job in jobs {
                        let slot = permits.pop();
                        // More than asked for (a misbehaving source): given back at once,
                        // so `concurrency` still bounds what runs.
                        let extra = slot.is_none();
                        if extra {
                            tracing::warn!(job = %job.id, "claimed more than asked; released");
                        }
                        self.start(service, job, slot, &tx, stop_now || extra);
                    }
                    // A source that answered "nothing" before the poll wait was over (HTTP
                    // waits whole seconds) is asked again only once it is.
                    let rest = self.settings.poll_wait.saturating_sub(asked.elapsed());
                    if empty && !rest.is_zero() {
                        drop(permits);
                        tokio::select! {
                            () = tokio::time::sleep(rest) => {}
                            _ = stopping.changed() => return,
                        }
                    }
                }
                Err(e) => {
                    self.metrics.claim_failures.fetch_add(1, Ordering::Relaxed);
                    if e.fatal() {
                        self.fail(e.to_string());
                        return;
                    }
                    tracing::warn!(queue = %svc.queue, error = %e, "claim failed");
                    let wait = if e.transient() {
                        backoff
                    } else {
                        Duration::from_secs(5)
                    };
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = stopping.changed() => return,
                    }
                }
            }
        }
    }

    /// Takes a claimed job in: runs it, or (stopping) releases it at once.
    fn start(
        self: &Arc<Self>,
        service: usize,
        job: Claimed,
        slot: Option<Slot>,
        tx: &mpsc::UnboundedSender<Done>,
        stopping: bool,
    ) {
        if let Some(m) = self.queue_metrics(service) {
            m.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        let mut running = self.running.lock();
        let id = job.id;
        let old = running.insert(
            id,
            Running {
                token: job.token,
                service,
                claimed_at: Instant::now(),
                finished: stopping,
                abort: None,
            },
        );
        if let Some(old) = old {
            // Claimed again: the old lease ran out (its heartbeats did not get through).
            // Its attempt stops and its outcome, if on its way, is not ours to count.
            if let Some(a) = old.abort {
                a.abort();
            }
            if let Some(m) = self.queue_metrics(old.service) {
                m.in_flight.fetch_sub(1, Ordering::Relaxed);
                m.outcome(JobOutcome::Lost);
            }
            tracing::warn!(job = %id, "claimed again after its lease ran out; the old attempt stops");
        }
        if stopping {
            let _ = tx.send(Done {
                id,
                token: job.token,
                service,
                item: release(id, job.token),
                bytes: 0,
                released: true,
                _slot: slot,
            });
            return;
        }
        let task = tokio::spawn(self.clone().attempt(service, job, slot, tx.clone()));
        if let Some(r) = running.get_mut(&id) {
            r.abort = Some(task.abort_handle());
        }
    }

    /// One attempt of a job, and its outcome sent to the settler.
    async fn attempt(
        self: Arc<Self>,
        service: usize,
        job: Claimed,
        mut slot: Option<Slot>,
        tx: mpsc::UnboundedSender<Done>,
    ) {
        let svc = &self.services[service];
        // The run continues the job's trace: its span is a child of the context stored at
        // enqueue, the connector's call a child of the run, and the service is handed the
        // call's context (or, with no span exported, the stored one as it came; a job
        // without one gets a context made from its id).
        let span = trace::span!(
            "job.run", job_id = %job.id, queue = %job.queue, attempt = job.attempt,
            outcome = tracing::field::Empty,
        );
        trace::set_parent(&span, job.trace.as_ref());
        let call = trace::span!(parent: &span, "connector.call", otel.kind = "client");
        let (traceparent, tracestate) = match trace::outgoing(&call, job.trace.as_ref()) {
            Some(cx) => (cx.traceparent, cx.tracestate),
            None => (self.traceparent(job.id), None),
        };
        let input = JobInput {
            id: job.id.to_string(),
            queue: job.queue.clone(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            payload: job.payload,
            traceparent,
            tracestate,
        };
        let started = Instant::now();
        let out = match tokio::time::timeout(
            svc.timeout + Duration::from_secs(1),
            CatchPanic::call(&*svc.connector, &input).instrument(call),
        )
        .instrument(span.clone())
        .await
        {
            Ok(out) => out,
            Err(_) => Err(ConnectorError::new(
                ErrorClass::Timeout,
                format!("no outcome within {:?}", svc.timeout),
            )),
        };
        let took = started.elapsed();
        if let Some(s) = slot.as_mut() {
            s.attempt_done();
        }
        let m = self.queue_metrics(service);
        if let Some(m) = m {
            m.observe(took);
        }
        let mut bytes = 0;
        span.record(
            "outcome",
            match &out {
                Ok(_) => "ok",
                Err(e) => e.class.as_str(),
            },
        );
        let item = match out {
            Ok(mut result) => {
                tracing::debug!(
                    job = %input.id, attempt = input.attempt, queue = %input.queue,
                    trace_id = trace_id_of(&input.traceparent),
                    ms = took.as_millis() as u64, "job done"
                );
                if let Some(r) = &result {
                    bytes = serde_json::to_vec(r).map_or(usize::MAX, |v| v.len());
                    if bytes > RESULT_BYTES_MAX {
                        tracing::warn!(
                            job = %input.id, bytes, limit = RESULT_BYTES_MAX,
                            "the job's result is too large to store; acked without it"
                        );
                        result = None;
                        bytes = 0;
                    }
                }
                Settle::Ack {
                    id: job.id,
                    token: job.token,
                    result,
                }
            }
            Err(e) => {
                if let Some(m) = m {
                    m.error(e.class);
                }
                let cap = if svc.max_attempts > 0 {
                    svc.max_attempts.min(job.max_attempts)
                } else {
                    job.max_attempts
                };
                let permanent = !e.class.retryable() || job.attempt >= cap;
                let delay = (!permanent).then(|| self.backoff_ms(svc, job.attempt));
                tracing::warn!(
                    job = %input.id, attempt = input.attempt, max_attempts = cap,
                    queue = %input.queue, trace_id = trace_id_of(&input.traceparent),
                    class = e.class.as_str(), error = %e.message,
                    retry_in_ms = delay, "job attempt failed"
                );
                let mut error = format!("{}: {}", e.class.as_str(), e.message);
                if error.len() > ERROR_BYTES_MAX {
                    let mut cut = ERROR_BYTES_MAX;
                    while !error.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    error.truncate(cut);
                }
                bytes = serde_json::to_string(&error).map_or(error.len() * 6, |e| e.len());
                Settle::Nack {
                    id: job.id,
                    token: job.token,
                    error,
                    retry_delay_ms: delay,
                    permanent,
                }
            }
        };
        self.finish(
            Done {
                id: job.id,
                token: job.token,
                service,
                item,
                bytes,
                released: false,
                _slot: slot,
            },
            &tx,
        );
    }

    /// Hands an outcome to the settler, once per job (a release or a lost lease may have
    /// finished it already).
    fn finish(&self, done: Done, tx: &mpsc::UnboundedSender<Done>) {
        let mut running = self.running.lock();
        match running.get_mut(&done.id) {
            Some(r) if !r.finished && r.token == done.token => {
                r.finished = true;
                r.abort = None;
                let _ = tx.send(done);
            }
            _ => {}
        }
        drop(running);
        self.settled.notify_waiters();
    }

    /// A full-jitter backoff for the retry after `attempt`.
    fn backoff_ms(&self, svc: &Service, attempt: u32) -> u64 {
        let base = u64::try_from(svc.backoff_base.as_millis()).unwrap_or(u64::MAX);
        let max = u64::try_from(svc.backoff_max.as_millis()).unwrap_or(u64::MAX);
        let exp = base.saturating_mul(1u64 << attempt.saturating_sub(1).min(40));
        let cap = exp.min(max);
        if cap == 0 {
            return 0;
        }
        self.draw() % (cap + 1)
    }

    fn draw(&self) -> u64 {
        rand::Rng::next_u64(&mut *self.draws.lock())
    }

    /// The W3C trace context of an attempt: the job id is the trace id (16 bytes, never
    /// zero for a UUIDv7), a random span id.
    fn traceparent(&self, id: JobId) -> String {
        let span = self.draw().max(1);
        format!("00-{id}-{span:016x}-01")
    }

    async fn settle_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Done>) {
        let in_flight = Arc::new(Semaphore::new(SETTLES_IN_FLIGHT));
        let mut tasks = tokio::task::JoinSet::new();
        // An outcome that did not fit the last batch's bytes: the next batch's first.
        let mut carried: Option<Done> = None;
        loop {
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                break;
            };
            let first = match carried.take() {
                Some(d) => d,
                None => match rx.recv().await {
                    Some(d) => d,
                    None => break,
                },
            };
            let batch = take_batch(first, &mut rx, &mut carried);
            let me = self.clone();
            let (sent, settled) = tokio::sync::oneshot::channel::<()>();
            tasks.spawn(async move {
                me.settle_batch(batch).await;
                drop(permit);
                let _ = sent.send(());
            });
            // Reap finished ones so the set does not grow.
            while tasks.try_join_next().is_some() {}
            // The next batch forms while this one is on its way, unless it takes long.
            let _ = tokio::time::timeout(SETTLE_ALONE, settled).await;
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Sends one batch, retrying a failed request until it goes through or the leases
    /// it holds have run out (the jobs then run again: at-least-once).
    async fn settle_batch(&self, batch: Vec<Done>) {
        let items: Vec<Settle> = batch.iter().map(|d| d.item.clone()).collect();
        let give_up = Instant::now() + self.settings.lease;
        let mut backoff = Duration::from_millis(50);
        let results: Option<Vec<ItemResult>> = loop {
            match self.source.settle(items.clone()).await {
                Ok(r) => break Some(r),
                Err(e) => {
                    self.metrics.settle_failures.fetch_add(1, Ordering::Relaxed);
                    if e.fatal() {
                        self.fail(e.to_string());
                    }
                    // A request too large or refused as a whole: each half on its own
                    // (down to single items), so one bad outcome does not sink the rest.
                    if matches!(e.status(), Some(s) if s == 400 || s == 413) && batch.len() > 1 {
                        let mut batch = batch;
                        let right = batch.split_off(batch.len() / 2);
                        Box::pin(self.settle_batch(batch)).await;
                        Box::pin(self.settle_batch(right)).await;
                        return;
                    }
                    if !e.transient() || Instant::now() + backoff > give_up {
                        tracing::error!(
                            error = %e, jobs = items.len(),
                            "cannot settle; the jobs will run again after their leases"
                        );
                        break None;
                    }
                    tracing::warn!(error = %e, jobs = items.len(), "settle failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        };
        {
            let mut running = self.running.lock();
            for (i, d) in batch.iter().enumerate() {
                // A job claimed again meanwhile holds a new lease: that entry is not this
                // outcome's (the old one was counted lost when it was replaced).
                if running.get(&d.id).is_none_or(|r| r.token != d.token) {
                    continue;
                }
                running.remove(&d.id);
                let Some(m) = self.queue_metrics(d.service) else {
                    continue;
                };
                m.in_flight.fetch_sub(1, Ordering::Relaxed);
                let outcome = match results.as_ref().and_then(|r| r.get(i)) {
                    Some(Ok(Settled::Acked)) => JobOutcome::Acked,
                    Some(Ok(Settled::Nacked(_))) if d.released => JobOutcome::Released,
                    Some(Ok(Settled::Nacked(JobState::Failed))) => JobOutcome::DeadLettered,
                    Some(Ok(_)) => JobOutcome::Retried,
                    Some(Err(e)) => {
                        tracing::warn!(
                            job = %d.id, detail = %e.detail,
                            "the queue refused the outcome: the lease was lost"
                        );
                        JobOutcome::Lost
                    }
                    None => JobOutcome::Lost,
                };
                m.outcome(outcome);
            }
        }
        self.settled.notify_waiters();
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let lease = self.settings.lease;
        let every = (lease / 3).max(Duration::from_millis(100));
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        // Rounds start every third of the lease, however long the last one took (each is
        // bounded by that third): after one unanswered round the next still comes before
        // the leases it failed to extend run out. An attempt is beaten from half a third
        // after its claim, so its first round, too, leaves room for one that fails.
        let mut rounds = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Heartbeats go on while draining: attempts in flight keep their leases.
            rounds.tick().await;
            let due: Vec<(JobId, u64)> = {
                let running = self.running.lock();
                running
                    .iter()
                    .filter(|(_, r)| !r.finished && r.claimed_at.elapsed() >= every / 2)
                    .map(|(id, r)| (*id, r.token))
                    .collect()
            };
            if due.is_empty() {
                continue;
            }
            // In requests of at most SETTLE_BATCH_MAX (the gateway's batch bound), side by
            // side, each bounded by a third of the lease so a slow answer is not waited
            // for past the point where the next round is due.
            let mut calls = tokio::task::JoinSet::new();
            for chunk in due.chunks(SETTLE_BATCH_MAX) {
                let chunk = chunk.to_vec();
                let me = self.clone();
                calls.spawn(async move {
                    let items = chunk
                        .iter()
                        .map(|(id, token)| Settle::Heartbeat {
                            id: *id,
                            token: *token,
                            lease_ms,
                        })
                        .collect();
                    match tokio::time::timeout(every, me.source.settle(items)).await {
                        Ok(Ok(results)) => {
                            for ((id, token), r) in chunk.iter().zip(results) {
                                if let Err(e) = r
                                    && e.lost
                                {
                                    me.lose(*id, *token, &e.detail);
                                }
                            }
                        }
                        Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat failed"),
                        Err(_) => tracing::warn!(
                            jobs = chunk.len(),
                            "heartbeat not answered within a third of the lease"
                        ),
                    }
                });
            }
            while calls.join_next().await.is_some() {}
        }
    }

    /// A running attempt's lease is gone: stop it; it is not ours to settle.
    fn lose(&self, id: JobId, token: u64, why: &str) {
        let mut running = self.running.lock();
        if let Some(r) = running.get(&id)
            && !r.finished
            && r.token == token
        {
            if let Some(a) = &r.abort {
                a.abort();
            }
            let service = r.service;
            running.remove(&id);
            if let Some(m) = self.queue_metrics(service) {
                m.in_flight.fetch_sub(1, Ordering::Relaxed);
                m.outcome(JobOutcome::Lost);
            }
            tracing::warn!(job = %id, detail = why, "lease lost; attempt stopped");
        }
        drop(running);
        self.settled.notify_waiters();
    }

    async fn registry_loop(self: Arc<Self>) {
        let every = (self.settings.registry_ttl / 3).max(Duration::from_millis(100));
        loop {
            let record = WorkerRecord {
                id: self.settings.worker_id.clone(),
                owner: None,
                version: self.settings.version.clone(),
                queues: self.services.iter().map(|s| s.queue.clone()).collect(),
                in_flight: self.in_flight() as u64,
                started_at_ms: self.started_at_ms,
                heartbeat_at_ms: self.ctx.clock.now_ms(),
                host: self.settings.host.clone(),
                ttl_ms: u64::try_from(self.settings.registry_ttl.as_millis()).unwrap_or(u64::MAX),
            };
            if let Err(e) = self.source.register(record).await {
                tracing::warn!(error = %e, "cannot refresh the registry record");
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// A settle batch: `first`, then what has piled up in `rx`, up to [`SETTLE_BATCH_MAX`]
/// items and [`SETTLE_BATCH_BYTES_MAX`] bytes. The outcome that would pass the bytes, or
/// that names a job already in the batch, ends it and is left in `carried` (the next
/// batch's first). A job re-claimed by this worker while its old outcome waited here has
/// two outcomes queued, and the queue refuses a job named twice in one batch: the second
/// would be answered "invalid" and its valid outcome lost.
fn take_batch(
    first: Done,
    rx: &mut mpsc::UnboundedReceiver<Done>,
    carried: &mut Option<Done>,
) -> Vec<Done> {
    let mut bytes = first.bytes + SETTLE_ITEM_BYTES;
    let mut ids = std::collections::HashSet::from([first.id]);
    let mut batch = vec![first];
    while batch.len() < SETTLE_BATCH_MAX {
        match rx.try_recv() {
            Ok(d)
                if bytes.saturating_add(d.bytes + SETTLE_ITEM_BYTES) > SETTLE_BATCH_BYTES_MAX
                    || !ids.insert(d.id) =>
            {
                *carried = Some(d);
                break;
            }
            Ok(d) => {
                bytes += d.bytes + SETTLE_ITEM_BYTES;
                batch.push(d);
            }
            Err(_) => break,
        }
    }
    batch
}

/// A connector's attempt with its panics caught: a connector that panics (a custom one
/// unwrapping a payload field, say) fails its attempt as a retryable `server` error, so
/// the job is retried and dead-lettered like any failing one. Uncaught, the attempt's task
/// would end without an outcome and its job stay held (heartbeats kept its lease alive)
/// for as long as the worker ran.
struct CatchPanic<'a>(BoxFuture<'a, super::connector::Outcome>);

impl<'a> CatchPanic<'a> {
    /// `connector.call(job)`, a panic in the call itself (before its future) caught too.
    fn call(connector: &'a dyn Connector, job: &'a JobInput) -> Self {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| connector.call(job))) {
            Ok(fut) => CatchPanic(fut),
            Err(panic) => CatchPanic(Box::pin(std::future::ready(Err(panicked(&*panic))))),
        }
    }
}

/// The error of an attempt whose connector panicked with `panic`.
fn panicked(panic: &(dyn std::any::Any + Send)) -> ConnectorError {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned());
    ConnectorError::new(
        ErrorClass::Server,
        format!("the connector panicked: {what}"),
    )
}

impl Future for CatchPanic<'_> {
    type Output = super::connector::Outcome;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let fut = &mut self.get_mut().0;
        // Not polled again after a panic: the attempt is over with the error.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(panic) => std::task::Poll::Ready(Err(panicked(&*panic))),
        }
    }
}

/// The nack that gives a job back to run again at once (drain).
fn release(id: JobId, token: u64) -> Settle {
    Settle::Nack {
        id,
        token,
        error: "released: the worker is stopping".to_owned(),
        retry_delay_ms: Some(0),
        permanent: false,
    }
}

/// The trace id of a W3C `traceparent` (`00-{trace id}-{span id}-{flags}`), for log lines.
fn trace_id_of(traceparent: &str) -> &str {
    traceparent.get(3..35).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(id: u128, token: u64, bytes: usize) -> Done {
        let id = JobId::from_u128(id);
        Done {
            id,
            token,
            service: 0,
            item: Settle::Ack {
                id,
                token,
                result: None,
            },
            bytes,
            released: false,
            _slot: None,
        }
    }

    fn ids(batch: &[Done]) -> Vec<(u128, u64)> {
        batch.iter().map(|d| (d.id.as_u128(), d.token)).collect()
    }

    #[test]
    fn a_batch_never_names_a_job_twice_nor_passes_its_bytes() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut carried = None;
        // Job 1's old outcome (token 10), then its outcome under a new lease (token 11).
        for d in [done(2, 20, 0), done(1, 11, 0), done(3, 30, 0)] {
            tx.send(d).unwrap();
        }
        let batch = take_batch(done(1, 10, 0), &mut rx, &mut carried);
        assert_eq!(ids(&batch), [(1, 10), (2, 20)]);
        let next = carried.take().expect("the second outcome of job 1 waits");
        assert_eq!((next.id.as_u128(), next.token), (1, 11));
        let batch = take_batch(next, &mut rx, &mut carried);
        assert_eq!(ids(&batch), [(1, 11), (3, 30)]);
        assert!(carried.is_none());
        // Past the bytes: the outcome that would pass them starts the next batch.
        let half = SETTLE_BATCH_BYTES_MAX / 2;
        tx.send(done(5, 50, half)).unwrap();
        tx.send(done(6, 60, 1)).unwrap();
        let batch = take_batch(done(4, 40, half), &mut rx, &mut carried);
        assert_eq!(ids(&batch), [(4, 40)]);
        let next = carried.take().unwrap();
        assert_eq!(
            ids(&take_batch(next, &mut rx, &mut carried)),
            [(5, 50), (6, 60)]
        );
        // At most SETTLE_BATCH_MAX items.
        for i in 0..SETTLE_BATCH_MAX as u128 + 5 {
            tx.send(done(100 + i, 1, 0)).unwrap();
        }
        let batch = take_batch(done(99, 1, 0), &mut rx, &mut carried);
        assert_eq!(batch.len(), SETTLE_BATCH_MAX);
        assert!(carried.is_none());
    }
}
