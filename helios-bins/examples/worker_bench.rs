//! Load for `benches/worker_vs_bullmq.sh`: the worker runtime end to end.
//!
//! - `embedded N CONCURRENCY`: a queue in a temporary ATLAS (everysec) and a worker over it
//!   in the same process (no HTTP), noop connector. Prints two figures: "drain" (N jobs
//!   enqueued first, then the worker takes them all) and "end to end" (a producer thread
//!   enqueues N jobs in batches of 100 while the worker runs), each as jobs/s from the
//!   first job to the last ack.
//! - `produce URL TOKEN QUEUE N CONNECTIONS [wait]`: enqueues N jobs on a gateway over
//!   HTTP, one per request on CONNECTIONS keep-alive connections (from one thread, as
//!   BullMQ's node producer), and prints the rate; with
//!   `wait`, then waits until the queue counts N jobs done and prints the end-to-end rate
//!   from the first enqueue to the last ack (a worker runs meanwhile).
//! - `wait URL TOKEN QUEUE N`: waits until the queue counts N jobs done; prints the rate
//!   from its own start (start the worker right after it: the drain figure).
//!
//! - `store N BATCH`: the ceiling the store sets on the embedded figure. Writes, through a
//!   bare ATLAS (everysec) and nothing else, the records the queue writes for N jobs: each
//!   job's whole record (as the queue encodes it; batches of 100, as the embedded
//!   producer), then its claim's state record, then its ack's (batches of BATCH, the
//!   worker's claim size). Prints each phase's rate and the jobs/s the three together allow
//!   on one thread: the queue's lock serializes every transition, so no enqueue -> claim ->
//!   ack cycle over this store, with the queue's own work and the worker's on top, can go
//!   faster on this machine.
//!
//! Run: `cargo run --release -p helios-bins --example worker_bench -- embedded 200000 50`.

use bytes::Bytes;
use helios_atlas::{Atlas, FsyncPolicy, Options};
use helios_bins::app::Context;
use helios_bins::worker::config::{ServiceSpec, WorkerSettings, build_services};
use helios_bins::worker::{Connectors, EmbeddedSource, Worker};
use helios_core::{Clock, SystemClock};
use helios_queue::registry::Registry;
use helios_queue::{EnqueueRequest, JobId, JobState, Queue, QueueConfig, job_key, job_state_key};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

// With the opt-in `mimalloc` feature, as the binaries it is compared with.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: u64| -> u64 { args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d) };
    match args.first().map(String::as_str) {
        Some("embedded") => embedded(num(1, 200_000), num(2, 50) as usize),
        Some("store") => store(num(1, 200_000), num(2, 50) as usize),
        Some("produce") if args.len() >= 4 => produce(
            &args[1],
            &args[2],
            &args[3],
            num(4, 50_000),
            num(5, 32) as usize,
            args.get(6).is_some_and(|a| a == "wait"),
        ),
        Some("wait") if args.len() >= 4 => {
            let runtime = tokio::runtime::Runtime::new()?;
            let started = Instant::now();
            let n = num(4, 50_000);
            runtime.block_on(wait_done(&args[1], &args[2], &args[3], n))?;
            report("drain", n, started);
            Ok(())
        }
        _ => Err("usage: worker_bench embedded N CONCURRENCY | store N BATCH | produce URL TOKEN QUEUE N CONNECTIONS [wait] | wait URL TOKEN QUEUE N".into()),
    }
}

/// ATLAS in `dir`, fsyncing every second (as the binaries and Redis in the comparison).
fn everysec_atlas(dir: &std::path::Path) -> Result<Atlas, helios_atlas::AtlasError> {
    Atlas::open(
        dir,
        Options {
            fsync: FsyncPolicy::Everysec,
            ..Options::default()
        },
    )
}

fn embedded(n: u64, concurrency: usize) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Runtime::new()?;
    for mode in ["drain", "end to end"] {
        let dir = tempfile::tempdir()?;
        let atlas = everysec_atlas(dir.path())?;
        let queue = Arc::new(Queue::open(
            atlas.clone(),
            QueueConfig {
                depth_max: n + 1,
                ..QueueConfig::default()
            },
        )?);
        let registry = Arc::new(Registry::new(atlas.clone(), Arc::new(SystemClock)));
        let ready = Arc::new(tokio::sync::Notify::new());
        let enqueue_all = {
            let (queue, ready) = (queue.clone(), ready.clone());
            move |batch: usize| -> Result<(), helios_queue::QueueError> {
                let mut left = n;
                while left > 0 {
                    let k = left.min(batch as u64);
                    let reqs: Vec<EnqueueRequest> = (0..k)
                        .map(|_| EnqueueRequest::new("bench", serde_json::json!({"n": 1})))
                        .collect();
                    queue.enqueue_batch(&reqs)?;
                    ready.notify_waiters();
                    left -= k;
                }
                Ok(())
            }
        };
        let started = Instant::now();
        let producer = if mode == "drain" {
            enqueue_all(1000)?;
            None
        } else {
            Some(std::thread::spawn(move || {
                enqueue_all(100)?;
                Ok::<_, helios_queue::QueueError>(started.elapsed())
            }))
        };
        let t0 = if mode == "drain" {
            Instant::now()
        } else {
            started
        };
        let mut settings = WorkerSettings {
            id: "bench".into(),
            batch_max: 256,
            poll_wait_ms: 100,
            ..WorkerSettings::default()
        };
        let mut spec = ServiceSpec::new("noop", "");
        spec.concurrency = concurrency;
        settings.services.insert("bench".into(), spec);
        let services = build_services(&settings, "workers", &Connectors::default())?;
        let ctx = Context::system();
        let worker = Worker::new(
            Arc::new(EmbeddedSource::new(queue.clone(), registry, ready)),
            services,
            settings.runtime_settings("bench", "localhost", ctx.random_u64()),
            ctx,
        );
        let q = queue.clone();
        runtime.block_on(worker.run(
            async move {
                while q.stats("bench").done_count < n {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            },
            std::future::pending(),
        ));
        let took = t0.elapsed();
        if let Some(p) = producer {
            let produced: Duration = p.join().map_err(|_| "the producer panicked")??;
            println!(
                "embedded: the producer's {n} enqueues (batches of 100) took {:.2} s",
                produced.as_secs_f64()
            );
        }
        let s = queue.stats("bench");
        assert_eq!(s.done_count, n);
        assert!(queue.with_state(|st| st.jobs().all(|j| j.state == JobState::Done)));
        println!(
            "embedded {mode}: {n} jobs in {:.2} s = {:.0} jobs/s (concurrency {concurrency})",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64()
        );
        atlas.close()?;
    }
    Ok(())
}

/// The records of one job as the queue writes them: its whole record at the enqueue, its
/// state record at the claim and at the ack (taken from a real queue).
fn job_records() -> Result<[Vec<u8>; 3], Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let atlas = Atlas::open(dir.path(), Options::default())?;
    let queue = Queue::open(atlas.clone(), QueueConfig::default())?;
    let id = queue
        .enqueue(EnqueueRequest::new("bench", serde_json::json!({"n": 1})))?
        .id;
    let (mut whole, mut claimed, mut acked) = (Vec::new(), Vec::new(), Vec::new());
    queue.get(id).ok_or("no job")?.encode_json(&mut whole)?;
    let claim = queue
        .claim("bench", "bench", 1, 30_000)?
        .pop()
        .ok_or("no claim")?;
    claim.job.encode_state_json(&mut claimed)?;
    queue.ack(id, claim.token, None)?;
    queue
        .get(id)
        .ok_or("no job")?
        .encode_state_json(&mut acked)?;
    atlas.close()?;
    Ok([whole, claimed, acked])
}

fn store(n: u64, batch: usize) -> Result<(), Box<dyn std::error::Error>> {
    let [whole, claimed, acked] = job_records()?.map(Bytes::from);
    println!(
        "store: records of {} / {} / {} bytes (enqueue / claim / ack), claim and ack batches of {batch}",
        whole.len(),
        claimed.len(),
        acked.len()
    );
    let dir = tempfile::tempdir()?;
    let atlas = everysec_atlas(dir.path())?;
    // Ids laid out as the queue's (UUIDv7: the ms, a counter within it, then random bits;
    // a multiplicative hash of the index stands in for the rng), 1,000 per ms, so the key
    // order and the maps see what they see under the queue.
    let base_ms = u128::from(SystemClock.now_ms());
    let id = |i: u64| {
        let (ms, counter) = (base_ms + u128::from(i / 1000), u128::from(i % 1000));
        let random = u128::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 2) | (0b10 << 62);
        JobId::from_u128((ms << 80) | (7 << 76) | (counter << 66) | random)
    };
    let mut total = Duration::ZERO;
    type KeyOf = fn(JobId) -> String;
    let phases: [(&str, usize, &Bytes, KeyOf); 3] = [
        ("enqueue", 100, &whole, job_key),
        ("claim", batch.max(1), &claimed, job_state_key),
        ("ack", batch.max(1), &acked, job_state_key),
    ];
    for (phase, size, value, key_of) in phases {
        let started = Instant::now();
        let mut i = 0;
        while i < n {
            let mut b = helios_atlas::WriteBatch::new();
            for _ in 0..(size as u64).min(n - i) {
                b.set(key_of(id(i)), value.clone(), helios_atlas::Expiry::Never);
                i += 1;
            }
            atlas.write_batch(b)?;
        }
        let took = started.elapsed();
        total += took;
        println!(
            "store {phase}: {n} records in {:.2} s = {:.0} records/s",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64()
        );
    }
    println!(
        "store ceiling: {:.2} us of store writes per job = at most {:.0} jobs/s end to end",
        total.as_secs_f64() * 1e6 / n as f64,
        n as f64 / total.as_secs_f64()
    );
    atlas.close()?;
    Ok(())
}

fn produce(
    url: &str,
    token: &str,
    queue: &str,
    n: u64,
    connections: usize,
    wait: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let next = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let (client, next) = (client.clone(), next.clone());
            let uri = format!("{}/api/v1/jobs", url.trim_end_matches('/'));
            let auth = format!("Bearer {token}");
            let body = Bytes::from(format!("{{\"queue\":\"{queue}\",\"payload\":{{\"n\":1}}}}"));
            tasks.push(tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let req = http::Request::post(&uri)
                        .header("authorization", &auth)
                        .header("content-type", "application/json")
                        .body(Full::new(body.clone()))
                        .map_err(|e| e.to_string())?;
                    let resp = client.request(req).await.map_err(|e| e.to_string())?;
                    let status = resp.status();
                    let _ = resp.into_body().collect().await;
                    if status != 201 {
                        return Err(format!("enqueue: {status}"));
                    }
                }
                Ok::<(), String>(())
            }));
        }
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        let took = started.elapsed();
        println!(
            "produced {n} jobs in {:.2} s = {:.0} enqueues/s ({connections} connections)",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64()
        );
        if wait {
            wait_done(url, token, queue, n).await?;
            report("end to end", n, started);
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

fn report(what: &str, n: u64, started: Instant) {
    let took = started.elapsed();
    println!(
        "http {what}: {n} jobs in {:.2} s = {:.0} jobs/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}

/// Polls `GET /api/v1/queues` every 5 ms until `queue` counts `n` jobs done.
async fn wait_done(url: &str, token: &str, queue: &str, n: u64) -> Result<(), String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri = format!("{}/api/v1/queues", url.trim_end_matches('/'));
    loop {
        let req = http::Request::get(&uri)
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let done = v["queues"]
            .as_array()
            .and_then(|qs| qs.iter().find(|q| q["queue"] == queue))
            .and_then(|q| q["done"].as_u64())
            .unwrap_or(0);
        if done >= n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
