//! `helios-worker` as a process against a gateway and a test service on 127.0.0.1: a bad
//! service map or missing credentials stop it at start naming the key; `kill -9` mid-job
//! re-runs the job after its lease and it is acked once; SIGTERM drains with nothing
//! lost; and the total-queue check (lost / unexpected / duplicated) with workers killed
//! and restarted while they work.

mod common;

use common::hook::{Hook, until, worker_gateway};
use common::*;
use helios_queue::JobState;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WORKER: &str = env!("CARGO_BIN_EXE_helios-worker");

/// Runs the worker binary with `args` to completion (it must stop by itself): its output.
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(WORKER);
    c.args(args)
        .env_remove("HELIOS_WORKER_TOKEN")
        .env_remove("HELIOS_WORKER_USERNAME")
        .env_remove("HELIOS_WORKER_PASSWORD")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(20));
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    });
    let out = child.wait_with_output().unwrap();
    drop(watchdog);
    out
}

#[test]
fn a_bad_service_map_or_no_credentials_stops_it_at_start() {
    let token = [("HELIOS_WORKER_TOKEN", "t")];
    for (args, key) in [
        (
            &["--queue", "emails", "--connector", "smtp", "--target", "x"][..],
            "worker.services.emails.connector",
        ),
        (
            &[
                "--queue",
                "emails",
                "--connector",
                "http",
                "--target",
                "not a url",
            ][..],
            "worker.services.emails.target",
        ),
        (
            &["--queue", "emails", "--connector", "http"][..],
            "worker.services.emails.target",
        ),
        (
            &["--queue", "bad name!", "--connector", "noop"][..],
            "worker.services.bad name!",
        ),
        (&["--queue", "emails"][..], "--connector"),
        (&[][..], "worker.services"),
        (
            &[
                "--gateway",
                "gateway:8080",
                "--queue",
                "q",
                "--connector",
                "noop",
            ][..],
            "worker.gateway",
        ),
    ] {
        let out = run_to_exit(args, &token);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(key), "{args:?} should name {key}: {err}");
    }
    let out = run_to_exit(&["--queue", "q", "--connector", "noop"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("HELIOS_WORKER_TOKEN"), "{err}");
    // A service map file with an unknown field names it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.yaml");
    std::fs::write(
        &path,
        "worker:\n  services:\n    emails:\n      connector: noop\n      concurency: 5\n",
    )
    .unwrap();
    let out = run_to_exit(&["--config", path.to_str().unwrap()], &token);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("worker.services.emails.concurency"), "{err}");
}

/// Starts a worker process on `queue` over the hook, with a short lease.
fn spawn_worker(s: &Server, hook: &Hook, queue: &str, id: &str, concurrency: u32) -> Child {
    Command::new(WORKER)
        .args([
            "--gateway",
            &format!("http://{}", s.addr),
            "--queue",
            queue,
            "--connector",
            "http",
            "--target",
            &hook.url,
            "--concurrency",
            &concurrency.to_string(),
            "--id",
            id,
            "--threads",
            "1",
        ])
        .env_remove("HELIOS_WORKER_TOKEN")
        .env("HELIOS_WORKER_USERNAME", "worker")
        .env("HELIOS_WORKER_PASSWORD", USER_PW)
        .env("HELIOS_WORKER__LEASE_MS", "1500")
        .env("HELIOS_WORKER__POLL_WAIT_MS", "1000")
        .env("HELIOS_WORKER__DRAIN_TIMEOUT_MS", "10000")
        .env("HELIOS_WORKER__REGISTRY_TTL_MS", "1500")
        .env("HELIOS_LOG__FORMAT", "json")
        .env("HELIOS_LOG__LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Waits for a child to exit by itself, up to `secs`: its exit status.
async fn exited(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the worker did not exit within {secs} s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn enqueue_all(s: &Server, token: &str, queue: &str, payloads: Vec<Value>) -> Vec<String> {
    let mut ids = Vec::new();
    for p in payloads {
        let (st, v) = enqueue(s, token, json!({"queue": queue, "payload": p})).await;
        assert_eq!(st, 201, "{v}");
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    ids
}

fn job(s: &Server, id: &str) -> (JobState, u32) {
    let j = s.state.queue.get(id.parse().unwrap()).unwrap();
    (j.state, j.attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_job_reruns_it_after_its_lease_and_acks_it_once() {
    let (_dir, s, producer) = worker_gateway(|_| {}).await;
    let hook = Hook::start().await;
    let ids = enqueue_all(&s, &producer, "q", vec![json!({"sleep_ms": 700})]).await;
    let id = &ids[0];
    let mut a = spawn_worker(&s, &hook, "q", "a", 1);
    until(15, "the first attempt reached the service", || {
        hook.count(id) == 1
    })
    .await;
    signal(&a, "-9");
    let _ = a.wait();
    // The lease (1.5 s) runs out; another worker takes the job again.
    let mut b = spawn_worker(&s, &hook, "q", "b", 1);
    until(15, "the job done", || job(&s, id).0 == JobState::Done).await;
    assert_eq!(job(&s, id), (JobState::Done, 2));
    // The service saw the job twice (at-least-once), under the same idempotency key.
    let seen: Vec<(String, u32)> = hook
        .seen
        .lock()
        .iter()
        .map(|x| (x.key.clone(), x.attempt))
        .collect();
    assert_eq!(seen, [(id.clone(), 1), (id.clone(), 2)]);
    // The dead worker's record expires by its TTL (1.5 s); the live one stays listed.
    let admin = admin_token(&s).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = s.get("/api/v1/workers", &admin).await;
        let ids: Vec<&str> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["id"].as_str().unwrap())
            .collect();
        if ids == ["b"] {
            break;
        }
        assert!(Instant::now() < deadline, "registry still lists {ids:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&b, "-TERM");
    assert!(exited(&mut b, 15).await.success());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_jobs_in_flight_and_exits_0() {
    let (_dir, s, producer) = worker_gateway(|_| {}).await;
    let hook = Hook::start().await;
    let ids = enqueue_all(
        &s,
        &producer,
        "q",
        (0..8).map(|n| json!({"n": n, "sleep_ms": 500})).collect(),
    )
    .await;
    let mut a = spawn_worker(&s, &hook, "q", "a", 4);
    until(15, "four jobs in flight", || hook.seen.lock().len() == 4).await;
    signal(&a, "-TERM");
    let st = exited(&mut a, 15).await;
    assert!(st.success(), "{st}");
    // The four in flight were finished and acked; the rest were never taken.
    let states: Vec<(JobState, u32)> = ids.iter().map(|id| job(&s, id)).collect();
    let done = states.iter().filter(|j| **j == (JobState::Done, 1)).count();
    let pending = states
        .iter()
        .filter(|j| **j == (JobState::Pending, 0))
        .count();
    assert_eq!((done, pending), (4, 4), "{states:?}");
    // A second worker does the rest: every job once.
    let mut b = spawn_worker(&s, &hook, "q", "b", 4);
    until(15, "every job done", || {
        ids.iter().all(|id| job(&s, id).0 == JobState::Done)
    })
    .await;
    for id in &ids {
        assert_eq!(job(&s, id), (JobState::Done, 1));
        assert_eq!(hook.count(id), 1);
    }
    signal(&b, "-TERM");
    assert!(exited(&mut b, 15).await.success());
    s.stop().await;
}

/// A second signal during a drain exits at once: the job still running keeps its lease
/// (not released, not acked), and another worker runs it after the lease expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_without_waiting_for_the_drain() {
    let (_dir, s, producer) = worker_gateway(|_| {}).await;
    let hook = Hook::start().await;
    let ids = enqueue_all(&s, &producer, "q", vec![json!({"sleep_ms": 4_000})]).await;
    let id = &ids[0];
    let mut a = spawn_worker(&s, &hook, "q", "a", 1);
    until(15, "the job reached the service", || hook.count(id) == 1).await;
    signal(&a, "-TERM");
    // Draining: it waits for the job (up to its 10 s drain deadline).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(a.try_wait().unwrap().is_none(), "the first signal drains");
    let second = Instant::now();
    signal(&a, "-TERM");
    let _ = exited(&mut a, 6).await;
    assert!(
        second.elapsed() < Duration::from_secs(5),
        "the second signal waited {:?}",
        second.elapsed()
    );
    assert_eq!(
        job(&s, id),
        (JobState::InProgress, 1),
        "neither acked nor released"
    );
    // The lease (1.5 s) runs out; another worker takes the job again.
    let mut b = spawn_worker(&s, &hook, "q", "b", 1);
    until(20, "the job done by b", || job(&s, id).0 == JobState::Done).await;
    assert_eq!(job(&s, id), (JobState::Done, 2));
    signal(&b, "-TERM");
    assert!(exited(&mut b, 15).await.success());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_job_is_lost_or_invented_while_workers_are_killed() {
    let (_dir, s, producer) = worker_gateway(|_| {}).await;
    let hook = Hook::start().await;
    // Every job record the queue writes from here on: a job acked twice would show two
    // DONE records.
    let mut records = s
        .state
        .atlas
        .subscribe("job:", s.state.atlas.last_seq() + 1)
        .unwrap();
    let n = 120;
    let ids = enqueue_all(
        &s,
        &producer,
        "q",
        (0..n).map(|i| json!({"n": i, "sleep_ms": 30})).collect(),
    )
    .await;
    let mut workers: Vec<Child> = (0..3)
        .map(|i| spawn_worker(&s, &hook, "q", &format!("w{i}"), 4))
        .collect();
    // Kill one worker at a time with -9 and start a new one, while they work.
    for round in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let i = round % workers.len();
        signal(&workers[i], "-9");
        let _ = workers[i].wait();
        workers[i] = spawn_worker(&s, &hook, "q", &format!("w{i}r{round}"), 4);
    }
    until(60, "every job done", || {
        ids.iter().all(|id| job(&s, id).0 == JobState::Done)
    })
    .await;
    for w in &mut workers {
        signal(w, "-TERM");
    }
    for w in &mut workers {
        assert!(exited(w, 15).await.success());
    }
    // The checker: from the queue's view every job is done exactly once (one DONE record;
    // a stale lease's ack is refused); the service saw no job that was not enqueued, and
    // every job at least once; repeats carry the same idempotency key.
    let enqueued: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for x in hook.seen.lock().iter() {
        *seen.entry(x.key.clone()).or_default() += 1;
    }
    let lost: Vec<&&str> = enqueued
        .iter()
        .filter(|id| !seen.contains_key(**id))
        .collect();
    let unexpected: Vec<&String> = seen
        .keys()
        .filter(|k| !enqueued.contains(k.as_str()))
        .collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(unexpected.is_empty(), "unexpected: {unexpected:?}");
    let repeated = seen.values().filter(|c| **c > 1).count();
    let mut done_records: BTreeMap<helios_atlas::Key, usize> = BTreeMap::new();
    while let Some(ev) = records.try_next().unwrap() {
        for op in ev.changes {
            if let helios_atlas::Op::Set { key, value, .. } = op
                && std::str::from_utf8(&value)
                    .unwrap_or_default()
                    .contains("\"state\":\"DONE\"")
            {
                *done_records.entry(key).or_default() += 1;
            }
        }
    }
    let duplicated: Vec<(&helios_atlas::Key, &usize)> =
        done_records.iter().filter(|(_, c)| **c != 1).collect();
    assert!(duplicated.is_empty(), "done more than once: {duplicated:?}");
    assert_eq!(done_records.len(), n, "every job done once");
    for id in &ids {
        let (state, attempts) = job(&s, id);
        assert_eq!(state, JobState::Done);
        assert!(attempts >= 1 && attempts as usize <= seen[id.as_str()].max(1) + 1);
    }
    eprintln!("{n} jobs, {repeated} run more than once (killed mid-job)");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_stop_the_start() {
    let (_dir, s, _) = worker_gateway(|_| {}).await;
    let url = format!("http://{}", s.addr);
    let out = tokio::task::spawn_blocking(move || {
        run_to_exit(
            &["--gateway", &url, "--queue", "q", "--connector", "noop"],
            &[
                ("HELIOS_WORKER_USERNAME", "worker"),
                ("HELIOS_WORKER_PASSWORD", "not the password"),
            ],
        )
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("refused the credentials"), "{err}");
    s.stop().await;
}
