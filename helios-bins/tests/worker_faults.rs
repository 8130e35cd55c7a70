//! The worker runtime under faults of its own side, on an embedded queue (no HTTP): a
//! connector that panics, and a heartbeat round that is never answered.

mod common;

use common::hook::{Interposed, start_worker};
use helios_atlas::{Atlas, Options};
use helios_bins::worker::config::{ServiceSpec, WorkerSettings};
use helios_bins::worker::{
    BoxFuture, Connector, Connectors, EmbeddedSource, JobInput, Outcome, Source, Worker,
};
use helios_core::SystemClock;
use helios_queue::registry::Registry;
use helios_queue::{EnqueueRequest, Job, JobId, JobState, Queue, QueueConfig, Settle};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A connector that panics on every call: in its future, or (`true`) in the call itself,
/// before it makes one.
struct Panics(bool);

impl Connector for Panics {
    fn call<'a>(&'a self, job: &'a JobInput) -> BoxFuture<'a, Outcome> {
        let field = || {
            let missing = job.payload.get("missing").and_then(|v| v.as_str());
            missing.expect("a field this payload lacks").to_owned()
        };
        if self.0 {
            let text = field();
            return Box::pin(async move { Ok(Some(serde_json::json!(text))) });
        }
        Box::pin(async move { Ok(Some(serde_json::json!(field()))) })
    }
}

/// A connector that takes `0` to answer.
struct Slow(Duration);

impl Connector for Slow {
    fn call<'a>(&'a self, _job: &'a JobInput) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            tokio::time::sleep(self.0).await;
            Ok(None)
        })
    }
}

struct Embedded {
    _dir: tempfile::TempDir,
    queue: Arc<Queue>,
    source: EmbeddedSource,
}

fn embedded() -> Embedded {
    let dir = tempfile::tempdir().unwrap();
    let atlas = Atlas::open(dir.path(), Options::default()).unwrap();
    let queue = Arc::new(Queue::open(atlas.clone(), QueueConfig::default()).unwrap());
    let registry = Arc::new(Registry::new(atlas, Arc::new(SystemClock)));
    let source = EmbeddedSource::new(queue.clone(), registry, Arc::new(Notify::new()));
    Embedded {
        _dir: dir,
        queue,
        source,
    }
}

/// Runs a worker over `source` until `finished` holds for the job (at most 20 s), then
/// drains it; returns the worker and the job.
async fn run_until(
    source: Arc<dyn Source>,
    connectors: &Connectors,
    mut cfg: WorkerSettings,
    spec: ServiceSpec,
    queue: &Queue,
    id: JobId,
    finished: impl Fn(&Job) -> bool,
) -> (Arc<Worker>, Job) {
    cfg.services.insert("q".to_owned(), spec);
    let w = start_worker(source, &cfg, connectors);
    let started = Instant::now();
    let job = loop {
        let job = queue.get(id).unwrap();
        if finished(&job) {
            break job;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the job did not finish: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let worker = w.worker.clone();
    w.drain().await;
    (worker, job)
}

/// The worker's count of `outcome` (its metrics label) over every queue.
fn outcome_count(worker: &Worker, outcome: &str) -> u64 {
    let label = format!("outcome=\"{outcome}\"");
    worker
        .metrics()
        .text()
        .lines()
        .filter(|l| l.starts_with("worker_jobs_processed_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A connector that panics fails its attempt like any retryable error: the job is retried,
/// then dead-lettered with the panic's message, and the worker holds nothing. (Before, the
/// attempt's task died without an outcome and heartbeats kept the job held while the
/// worker ran.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_connector_fails_its_attempt_and_the_job_is_dead_lettered() {
    for in_call in [false, true] {
        panicking_connector_dead_letters(in_call).await;
    }
}

async fn panicking_connector_dead_letters(in_call: bool) {
    let e = embedded();
    let mut connectors = Connectors::default();
    connectors.register("panics", move |_| Ok(Arc::new(Panics(in_call)) as _));
    let mut req = EnqueueRequest::new("q", serde_json::json!({"n": 1}));
    req.attempts_max = Some(2);
    let id = e.queue.enqueue(req).unwrap().id;
    let mut spec = ServiceSpec::new("panics", "");
    spec.backoff_base_ms = 10;
    spec.backoff_max_ms = 10;
    let cfg = WorkerSettings {
        id: "panics".into(),
        lease_ms: 3_000,
        poll_wait_ms: 100,
        ..WorkerSettings::default()
    };
    let (worker, job) = run_until(
        Arc::new(e.source),
        &connectors,
        cfg,
        spec,
        &e.queue,
        id,
        |j| j.state == JobState::Failed,
    )
    .await;
    assert_eq!(job.attempts, 2, "in the call: {in_call}, {job:?}");
    let error = job.last_error.unwrap_or_default();
    assert!(
        error.contains("the connector panicked: a field this payload lacks"),
        "in the call: {in_call}, {error}"
    );
    assert_eq!(outcome_count(&worker, "dead_lettered"), 1);
}

/// One heartbeat round that is never answered does not cost a running attempt its lease:
/// rounds start every third of the lease whatever the last one took, so the next one
/// extends the lease before it runs out. The attempt (longer than the lease) is acked on
/// its first try. (Before, the loop slept a third of the lease after a round that had
/// itself waited a third, and the next round came after the lease had run out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unanswered_heartbeat_round_does_not_lose_the_lease() {
    let e = embedded();
    let mut connectors = Connectors::default();
    connectors.register("slow", |_| {
        Ok(Arc::new(Slow(Duration::from_millis(4_500))) as _)
    });
    let id = e
        .queue
        .enqueue(EnqueueRequest::new("q", serde_json::json!({"n": 1})))
        .unwrap()
        .id;
    // The first settle request that carries heartbeats is never answered (a connection
    // gone quiet); every other request goes through.
    let heartbeats = Arc::new(AtomicUsize::new(0));
    let source = Interposed::new(Arc::new(e.source)).before_settle({
        let heartbeats = heartbeats.clone();
        move |items| {
            let beats = items.iter().any(|i| matches!(i, Settle::Heartbeat { .. }));
            if beats && heartbeats.fetch_add(1, Ordering::SeqCst) == 0 {
                return Box::pin(std::future::pending());
            }
            Box::pin(std::future::ready(()))
        }
    });
    let cfg = WorkerSettings {
        id: "slow".into(),
        lease_ms: 3_000,
        poll_wait_ms: 100,
        ..WorkerSettings::default()
    };
    let (worker, job) = run_until(
        Arc::new(source),
        &connectors,
        cfg,
        ServiceSpec::new("slow", ""),
        &e.queue,
        id,
        |j| j.state == JobState::Done || j.attempts > 1,
    )
    .await;
    assert!(
        heartbeats.load(Ordering::SeqCst) >= 2,
        "a round after the unanswered one"
    );
    assert_eq!(
        (job.state, job.attempts),
        (JobState::Done, 1),
        "acked on its first attempt: {job:?}"
    );
    assert_eq!(outcome_count(&worker, "lost"), 0);
    assert_eq!(outcome_count(&worker, "acked"), 1);
}
