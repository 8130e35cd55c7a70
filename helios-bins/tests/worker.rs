//! The worker runtime against a real gateway and a test service, all on 127.0.0.1: jobs
//! done exactly once from the queue's view by three workers, error classes (retry with
//! backoff, dead-letter), the registry, and drains that lose no job.

mod common;

use common::hook::{Hook, Interposed, Running, start_worker, until, worker_gateway};
use common::*;
use helios_bins::app::client::{Credentials, Gateway};
use helios_bins::worker::config::{ServiceSpec, WorkerSettings};
use helios_bins::worker::metrics::JobOutcome;
use helios_bins::worker::{Connectors, HttpSource};
use helios_queue::JobState;
use http::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

fn settings(queue: &str, spec: ServiceSpec, id: &str) -> WorkerSettings {
    let mut w = WorkerSettings {
        id: id.to_owned(),
        lease_ms: 5_000,
        poll_wait_ms: 1_000,
        drain_timeout_ms: 5_000,
        registry_ttl_ms: 3_000,
        ..WorkerSettings::default()
    };
    w.services.insert(queue.to_owned(), spec);
    w
}

/// A worker over the gateway, logged in as `worker`.
fn run_worker(s: &Server, cfg: &WorkerSettings) -> Running {
    let gateway = Gateway::new(
        &format!("http://{}", s.addr),
        Credentials::Login {
            username: "worker".into(),
            password: USER_PW.into(),
        },
    );
    start_worker(
        Arc::new(HttpSource::new(gateway)),
        cfg,
        &Connectors::default(),
    )
}

async fn enqueue_n(
    s: &Server,
    token: &str,
    queue: &str,
    payloads: impl Iterator<Item = Value>,
) -> Vec<String> {
    let mut ids = Vec::new();
    for p in payloads {
        let (st, v) = enqueue(s, token, json!({"queue": queue, "payload": p})).await;
        assert_eq!(st, 201, "{v}");
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    ids
}

fn job_state(s: &Server, id: &str) -> (JobState, u32) {
    let j = s.state.queue.get(id.parse().unwrap()).unwrap();
    (j.state, j.attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_do_every_job_once() {
    let (_dir, s, producer) = worker_gateway(|_| {}).await;
    let hook = Hook::start().await;
    let mut spec = ServiceSpec::new("http", &hook.url);
    spec.concurrency = 8;
    let workers: Vec<Running> = (0..3)
        .map(|i| run_worker(&s, &settings("emails", spec.clone(), &format!("w{i}"))))
        .collect();
    let ids = enqueue_n(&s, &producer, "emails", (0..150).map(|n| json!({"n": n}))).await;
    until(30, "every job done", || {
        ids.iter().all(|id| job_state(&s, id).0 == JobState::Done)
    })
    .await;
    // From the queue's view: each done on its first attempt (no lease ran out).
    for id in &ids {
        assert_eq!(job_state(&s, id), (JobState::Done, 1), "{id}");
        assert_eq!(hook.count(id), 1, "the service saw {id} once");
    }
    let seen = hook.seen.lock().clone();
    assert!(seen.iter().all(|x| x.attempt == 1));
    let tp = &seen[0].traceparent;
    assert!(
        tp.starts_with(&format!("00-{}-", seen[0].key)) && tp.len() == 55,
        "traceparent {tp}"
    );
    // The work was shared, and every outcome counted (a worker counts an ack when the
    // gateway's answer reaches it, a moment after the job is done in the store).
    let acked = || -> Vec<u64> {
        workers
            .iter()
            .map(|w| w.worker.metrics().queues["emails"].count(JobOutcome::Acked))
            .collect()
    };
    until(10, "every ack counted", || {
        acked().iter().sum::<u64>() == 150
    })
    .await;
    let acked = acked();
    assert_eq!(acked.iter().sum::<u64>(), 150, "{acked:?}");
    // The registry lists the three, to the admin.
    let admin = admin_token(&s).await;
    let (st, v) = s.get("/api/v1/workers", &admin).await;
    assert_eq!(st, 200, "{v}");
    let mut names: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["w0", "w1", "w2"]);
    for w in workers {
        w.drain().await;
    }
    // A clean exit removes the record.
    let (_, v) = s.get("/api/v1/workers", &admin).await;
    assert_eq!(v["items"], json!([]), "{v}");
    s.stop().await;
}

/// Shows a trace that started upstream of the gateway continues at the service, with no
/// span exported (this test binary starts no telemetry, whatever the build's features):
/// the enqueue's `traceparent` and `tracestate` are stored with the job, shown in its
/// view, handed to the worker by the claim and sent to the service as they came; a bad
/// `traceparent` is not stored, and a job without one keeps the id-derived form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_given_at_enqueue_reaches_the_service() {
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (_dir, s, producer) = worker_gateway(|_| {}).await;
    let hook = Hook::start().await;
    let w = run_worker(
        &s,
        &settings("traced", ServiceSpec::new("http", &hook.url), "w"),
    );
    let mut ids = Vec::new();
    for headers in [
        &[("traceparent", TP), ("tracestate", "vendor=abc")][..],
        &[("traceparent", "00-garbage")][..],
        &[][..],
    ] {
        let (st, _, v) = s
            .call(
                Method::POST,
                "/api/v1/jobs",
                Some(&producer),
                Some(json!({"queue": "traced", "payload": {}})),
                headers,
            )
            .await;
        assert_eq!(st, 201, "{v}");
        ids.push(v["id"].as_str().unwrap().to_owned());
        if headers.len() == 2 {
            assert_eq!(
                v["trace"],
                json!({"traceparent": TP, "tracestate": "vendor=abc"}),
                "{v}"
            );
        } else {
            assert_eq!(v["trace"], Value::Null, "{v}");
        }
    }
    until(20, "every job done", || {
        ids.iter().all(|id| job_state(&s, id).0 == JobState::Done)
    })
    .await;
    let seen = hook.seen.lock().clone();
    let of = |id: &str| seen.iter().find(|x| x.key == id).unwrap().clone();
    let traced = of(&ids[0]);
    assert_eq!(traced.traceparent, TP);
    assert_eq!(traced.tracestate, "vendor=abc");
    for id in &ids[1..] {
        let x = of(id);
        assert!(x.traceparent.starts_with(&format!("00-{id}-")), "{x:?}");
        assert_eq!(x.tracestate, "");
    }
    w.drain().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_retried_with_backoff_or_dead_lettered() {
    let (_dir, s, producer) = worker_gateway(|_| {}).await;
    let hook = Hook::start().await;
    let mut spec = ServiceSpec::new("http", &hook.url);
    spec.backoff_base_ms = 20;
    spec.backoff_max_ms = 100;
    let w = run_worker(&s, &settings("q", spec, "w"));
    let mut ids = Vec::new();
    for (payload, attempts) in [
        (json!({"status": 422}), 3),
        (json!({"status": 503}), 3),
        (json!({"status": 429}), 2),
        (json!({"status": 200}), 3),
    ] {
        let (st, v) = enqueue(
            &s,
            &producer,
            json!({"queue": "q", "payload": payload, "max_attempts": attempts}),
        )
        .await;
        assert_eq!(st, 201);
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    until(20, "every job finished", || {
        ids.iter().all(|id| job_state(&s, id).0.is_finished())
    })
    .await;
    // 4xx: permanent, dead-lettered on the first attempt.
    assert_eq!(job_state(&s, &ids[0]), (JobState::Failed, 1));
    // 5xx and 429: retried until the attempts ran out.
    assert_eq!(job_state(&s, &ids[1]), (JobState::Failed, 3));
    assert_eq!(job_state(&s, &ids[2]), (JobState::Failed, 2));
    assert_eq!(job_state(&s, &ids[3]), (JobState::Done, 1));
    let j = s.state.queue.get(ids[1].parse().unwrap()).unwrap();
    assert!(
        j.last_error.as_deref().unwrap_or_default().contains("503"),
        "{:?}",
        j.last_error
    );
    // The service saw the same key on every attempt, with the attempt number.
    let attempts: Vec<u32> = hook
        .seen
        .lock()
        .iter()
        .filter(|x| x.key == ids[1])
        .map(|x| x.attempt)
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
    let m = w.worker.metrics();
    let q = &m.queues["q"];
    assert_eq!(q.count(JobOutcome::DeadLettered), 3);
    assert_eq!(q.count(JobOutcome::Retried), 3);
    let text = m.text();
    assert!(
        text.contains("worker_connector_errors_total{queue=\"q\",class=\"permanent\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("worker_connector_errors_total{queue=\"q\",class=\"server\"} 5"),
        "{text}"
    );
    w.drain().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_finishes_jobs_in_flight_and_loses_none() {
    let (_dir, s, producer) = worker_gateway(|_| {}).await;
    let hook = Hook::start().await;
    let mut spec = ServiceSpec::new("http", &hook.url);
    spec.concurrency = 4;
    let w = run_worker(&s, &settings("slow", spec.clone(), "a"));
    let ids = enqueue_n(
        &s,
        &producer,
        "slow",
        (0..12).map(|n| json!({"n": n, "sleep_ms": 300})),
    )
    .await;
    until(10, "jobs in flight", || w.worker.in_flight() == 4).await;
    w.drain().await;
    // The four in flight finished; nothing else was taken.
    let done = ids
        .iter()
        .filter(|id| job_state(&s, id).0 == JobState::Done)
        .count();
    assert!((4..12).contains(&done), "{done} done at the drain");
    assert!(
        ids.iter()
            .all(|id| matches!(job_state(&s, id).0, JobState::Done | JobState::Pending)),
        "no job is left leased"
    );
    // Another worker does the rest; every job exactly once.
    let w2 = run_worker(&s, &settings("slow", spec, "b"));
    until(20, "every job done", || {
        ids.iter().all(|id| job_state(&s, id).0 == JobState::Done)
    })
    .await;
    for id in &ids {
        assert_eq!(job_state(&s, id), (JobState::Done, 1));
        assert_eq!(hook.count(id), 1);
    }
    w2.drain().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_deadline_releases_running_jobs_at_once() {
    let (_dir, s, producer) = worker_gateway(|_| {}).await;
    let hook = Hook::start().await;
    let mut spec = ServiceSpec::new("http", &hook.url);
    spec.concurrency = 2;
    let mut cfg = settings("long", spec.clone(), "a");
    cfg.drain_timeout_ms = 200;
    let w = run_worker(&s, &cfg);
    let ids = enqueue_n(
        &s,
        &producer,
        "long",
        (0..2).map(|_| json!({"sleep_ms": 60_000})),
    )
    .await;
    until(10, "jobs in flight", || w.worker.in_flight() == 2).await;
    let t = Instant::now();
    w.drain().await;
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // Released: pending again, ready now (not after the lease), the attempt counted.
    for id in &ids {
        let j = s.state.queue.get(id.parse().unwrap()).unwrap();
        assert_eq!(j.state, JobState::Pending);
        assert!(j.run_at_ms <= s.state.queue.now_ms());
        assert!(
            j.last_error
                .as_deref()
                .unwrap_or_default()
                .contains("released")
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_runs_workers_on_its_own_queue() {
    let hook = Hook::start().await;
    let (_dir, s) = start_temp_with(100_000, ADMIN_PW, |c| {
        c.workers.id = "inside".into();
        c.workers
            .services
            .insert("fast".into(), ServiceSpec::new("noop", ""));
        c.workers
            .services
            .insert("hooked".into(), ServiceSpec::new("http", &hook.url));
    })
    .await;
    let producer = login(&s, "producer").await;
    let fast = enqueue_n(&s, &producer, "fast", (0..50).map(|n| json!({"n": n}))).await;
    let hooked = enqueue_n(&s, &producer, "hooked", (0..5).map(|n| json!({"n": n}))).await;
    until(20, "every job done", || {
        fast.iter()
            .chain(&hooked)
            .all(|id| job_state(&s, id) == (JobState::Done, 1))
    })
    .await;
    assert!(hooked.iter().all(|id| hook.count(id) == 1));
    let admin = admin_token(&s).await;
    let (st, v) = s.get("/api/v1/workers", &admin).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["items"][0]["id"], "inside", "{v}");
    assert_eq!(v["items"][0]["queues"], json!(["fast", "hooked"]), "{v}");
    let (_, _, body) = s
        .call(Method::GET, "/metrics", Some(&admin), None, &[])
        .await;
    let text = body.as_str().unwrap_or_default().to_owned();
    assert!(
        text.contains("worker_jobs_processed_total{queue=\"fast\",outcome=\"acked\"} 50"),
        "{text}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_longer_than_its_lease_keeps_it_by_heartbeats() {
    let (_dir, s, producer) = worker_gateway(|_| {}).await;
    let hook = Hook::start().await;
    let spec = ServiceSpec::new("http", &hook.url);
    let mut a = settings("slow", spec.clone(), "a");
    a.lease_ms = 1_000;
    let wa = run_worker(&s, &a);
    let ids = enqueue_n(
        &s,
        &producer,
        "slow",
        std::iter::once(json!({"sleep_ms": 2_500})),
    )
    .await;
    until(10, "the job started", || hook.count(&ids[0]) == 1).await;
    // A second worker polls the queue meanwhile: the job is never free to take.
    let mut b = settings("slow", spec, "b");
    b.lease_ms = 1_000;
    let wb = run_worker(&s, &b);
    until(15, "the job done", || {
        job_state(&s, &ids[0]).0 == JobState::Done
    })
    .await;
    assert_eq!(job_state(&s, &ids[0]), (JobState::Done, 1));
    assert_eq!(hook.count(&ids[0]), 1);
    assert_eq!(
        wa.worker.metrics().queues["slow"].count(JobOutcome::Acked),
        1
    );
    wa.drain().await;
    wb.drain().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_stops_the_worker_with_its_reason() {
    let (_dir, s, producer) = worker_gateway(|_| {}).await;
    let hook = Hook::start().await;
    let token = login(&s, "worker").await;
    let gateway = Gateway::new(&format!("http://{}", s.addr), Credentials::Token(token));
    let cfg = settings("q", ServiceSpec::new("http", &hook.url), "t");
    // Never stopped: it stops by itself.
    let mut w = start_worker(
        Arc::new(HttpSource::new(gateway)),
        &cfg,
        &Connectors::default(),
    );
    let ids = enqueue_n(&s, &producer, "q", std::iter::once(json!({"n": 1}))).await;
    until(10, "the job done", || {
        job_state(&s, &ids[0]).0 == JobState::Done
    })
    .await;
    // The account's password changes: every earlier session ends, the worker's token with
    // it (401), and a token cannot be renewed.
    let other = login(&s, "worker").await;
    s.expect(
        Method::POST,
        "/api/v1/auth/password",
        Some(&other),
        Some(json!({"current_password": USER_PW, "new_password": "marmalade-zeppelin-93-quartz"})),
        200,
    )
    .await;
    w.finished().await;
    let why = w.worker.fatal_error().expect("a reason");
    assert!(why.contains("refused the token"), "{why}");
    s.stop().await;
}

/// A disabled account (403 `account-disabled`, for its token and for a new login alike)
/// stops the worker with the reason, instead of retrying every few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_account_stops_the_worker_with_its_reason() {
    let (_dir, s, producer) = worker_gateway(|_| {}).await;
    let hook = Hook::start().await;
    let _ = login(&s, "worker").await;
    let creds = Credentials::Login {
        username: "worker".to_owned(),
        password: USER_PW.to_owned(),
    };
    let gateway = Gateway::new(&format!("http://{}", s.addr), creds);
    let cfg = settings("q", ServiceSpec::new("http", &hook.url), "t");
    // Never stopped: it stops by itself.
    let mut w = start_worker(
        Arc::new(HttpSource::new(gateway)),
        &cfg,
        &Connectors::default(),
    );
    let ids = enqueue_n(&s, &producer, "q", std::iter::once(json!({"n": 1}))).await;
    until(10, "the job done", || {
        job_state(&s, &ids[0]).0 == JobState::Done
    })
    .await;
    let admin = admin_token(&s).await;
    let id = common::user_id(&s, &admin, "worker").await;
    s.expect(
        Method::POST,
        &format!("/admin/users/{id}/disable"),
        Some(&admin),
        None,
        204,
    )
    .await;
    w.finished().await;
    let why = w.worker.fatal_error().expect("a reason");
    assert!(why.contains("account-disabled"), "{why}");
    s.stop().await;
}

/// The settler keeps one request in flight while they go through, but a stuck one does
/// not hold every later outcome back: after `SETTLE_ALONE` the next batch goes beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_settle_does_not_hold_the_later_outcomes_back() {
    let (_dir, s, producer) = worker_gateway(|_| {}).await;
    let token = login(&s, "worker").await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let settles = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // The first settle request waits for the gate (a stuck connection, say); the later
    // ones go through.
    let source = Interposed::new(Arc::new(HttpSource::new(Gateway::new(
        &format!("http://{}", s.addr),
        Credentials::Token(token),
    ))))
    .before_settle({
        let (gate, settles) = (gate.clone(), settles.clone());
        move |_| {
            let (gate, first) = (gate.clone(), settles.fetch_add(1, SeqCst) == 0);
            Box::pin(async move {
                if first {
                    let _pass = gate.acquire().await;
                }
            })
        }
    });
    let mut cfg = settings("q", ServiceSpec::new("noop", ""), "stuck");
    cfg.lease_ms = 60_000;
    let mut w = start_worker(Arc::new(source), &cfg, &Connectors::default());
    let first = enqueue_n(&s, &producer, "q", std::iter::once(json!({"n": 1}))).await;
    until(10, "the first settle stuck", || settles.load(SeqCst) >= 1).await;
    let second = enqueue_n(&s, &producer, "q", std::iter::once(json!({"n": 2}))).await;
    until(
        10,
        "the second job settled beside the stuck request",
        || job_state(&s, &second[0]).0 == JobState::Done,
    )
    .await;
    assert_eq!(
        job_state(&s, &first[0]).0,
        JobState::InProgress,
        "the first outcome is still on its stuck way"
    );
    gate.add_permits(1);
    until(10, "the first job settled once its request went", || {
        job_state(&s, &first[0]).0 == JobState::Done
    })
    .await;
    w.stop();
    w.finished().await;
    s.stop().await;
}

/// A claim that comes back after the drain began is not run: its jobs are released at
/// once (pending again, runnable by another worker now, not after their lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_a_claim_brings_back_during_a_drain_are_released_not_run() {
    let (_dir, s, producer) = worker_gateway(|_| {}).await;
    let hook = Hook::start().await;
    let token = login(&s, "worker").await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Claims wait for the gate before asking the gateway: the test decides when a claim
    // in flight comes back.
    let source = Interposed::new(Arc::new(HttpSource::new(Gateway::new(
        &format!("http://{}", s.addr),
        Credentials::Token(token),
    ))))
    .before_claim({
        let (gate, waiting) = (gate.clone(), waiting.clone());
        move || {
            waiting.fetch_add(1, SeqCst);
            let gate = gate.clone();
            Box::pin(async move {
                let _pass = gate.acquire().await;
            })
        }
    });
    let mut cfg = settings("q", ServiceSpec::new("http", &hook.url), "gated");
    cfg.lease_ms = 60_000;
    let mut w = start_worker(Arc::new(source), &cfg, &Connectors::default());
    let ids = enqueue_n(&s, &producer, "q", std::iter::once(json!({"n": 1}))).await;
    until(10, "a claim waiting at the gate", || {
        waiting.load(SeqCst) >= 1
    })
    .await;
    // The drain begins while the claim is in flight; then it comes back with the job.
    w.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.add_permits(100);
    w.finished().await;
    assert_eq!(
        w.worker.metrics().claimed.load(SeqCst),
        1,
        "the claim in flight brought the job back"
    );
    assert_eq!(hook.count(&ids[0]), 0, "a job claimed during the drain ran");
    let (state, _) = job_state(&s, &ids[0]);
    assert_eq!(
        state,
        JobState::Pending,
        "released at once, not left to its 60 s lease"
    );
    s.stop().await;
}
