//! Job-queue benchmarks (criterion), through the embedded API on a real-FS ATLAS store
//! with fsync `everysec`.
//!
//! Run: `cargo bench --bench queue` (about two minutes). Measured:
//! - `queue/enqueue`: one enqueue per iteration, single thread;
//! - `queue/cycle_1`: enqueue -> claim -> ack of one job, single thread, on a fresh store;
//!   done jobs are purged every 10k cycles, as a retention policy would (measured too);
//! - `queue/cycle_4`: the same cycle from 4 threads (`iter_custom`, wall time);
//! - `queue/claim_1M_pending`: claim + ack of one job while 1M jobs are pending (a claim
//!   must take the first ready job from an index, not scan).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use helios::atlas::{Atlas, FsyncPolicy, Options};
use helios::queue::{EnqueueRequest, Queue, QueueConfig};
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test")
}

fn open(dir: &std::path::Path) -> Arc<Queue> {
    let atlas = Atlas::open(
        dir,
        Options {
            fsync: FsyncPolicy::Everysec,
            auto_snapshot_aof_size: Some(256 * 1024 * 1024),
            ..Options::default()
        },
    )
    .expect("open atlas");
    Arc::new(
        Queue::open(
            atlas,
            QueueConfig {
                depth_max: 10_000_000,
                ..QueueConfig::default()
            },
        )
        .expect("open queue"),
    )
}

fn payload() -> serde_json::Value {
    serde_json::json!({ "to": "user@example.com", "template": "welcome" })
}

fn cycle(q: &Queue, queue: &str, worker: &str, i: u64) {
    q.enqueue(EnqueueRequest::new(queue, payload()))
        .expect("enqueue");
    let c = q.claim(queue, worker, 1, 60_000).expect("claim");
    for c in c {
        q.ack(c.job.id, c.token, None).expect("ack");
    }
    // Steady state, as with a retention policy: done jobs are purged now and then (the
    // purge is part of the measured cost).
    if i % 10_000 == 9_999 {
        while q.purge(0, false).expect("purge") > 0 {}
    }
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue");
    g.throughput(Throughput::Elements(1));
    g.warm_up_time(Duration::from_secs(1));

    // Enqueue-only grows the store without bound (~100 MB of AOF a second): measured for
    // 4 s, then its files are removed, so their writeback does not slow the next cases.
    g.measurement_time(Duration::from_secs(4));
    let tmp = tempfile::tempdir().expect("tempdir");
    let q = open(tmp.path());
    g.bench_function("enqueue", |b| {
        b.iter(|| {
            black_box(
                q.enqueue(EnqueueRequest::new("bench", payload()))
                    .expect("enqueue"),
            )
        })
    });
    drop(q);
    drop(tmp);

    // Each remaining case starts from a fresh store.
    g.measurement_time(Duration::from_secs(10));
    let tmp = tempfile::tempdir().expect("tempdir");
    let q = open(tmp.path());
    let mut i = 0u64;
    g.bench_function("cycle_1", |b| {
        b.iter(|| {
            i += 1;
            cycle(&q, "cycle", "w", i)
        })
    });
    g.bench_function("cycle_4", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(4);
            let barrier = Arc::new(Barrier::new(5));
            let threads: Vec<_> = (0..4)
                .map(|t| {
                    let q = q.clone();
                    let barrier = barrier.clone();
                    std::thread::spawn(move || {
                        let name = format!("w{t}");
                        barrier.wait();
                        for i in 0..per {
                            cycle(&q, "cycle4", &name, i);
                        }
                    })
                })
                .collect();
            barrier.wait();
            let start = Instant::now();
            for t in threads {
                t.join().expect("thread");
            }
            start.elapsed()
        })
    });
    drop(q);
    drop(tmp);

    // The 1M-job prefill runs only when this case is selected (criterion's filter skips
    // the closure, not code outside it).
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut deep: Option<Arc<Queue>> = None;
    g.bench_function("claim_1M_pending", |b| {
        let q = deep.get_or_insert_with(|| {
            let q = open(tmp.path());
            let pending = if test_mode() { 10_000 } else { 1_000_000 };
            let t = Instant::now();
            let reqs: Vec<_> = (0..1000)
                .map(|_| EnqueueRequest::new("deep", payload()))
                .collect();
            for _ in 0..pending / 1000 {
                q.enqueue_batch(&reqs).expect("prefill");
            }
            eprintln!(
                "queue: prefilled {pending} pending jobs in {:.1?}",
                t.elapsed()
            );
            q
        });
        b.iter(|| {
            let c = q.claim("deep", "w", 1, 60_000).expect("claim");
            for c in c {
                q.ack(c.job.id, c.token, None).expect("ack");
            }
        })
    });
    g.finish();
}

criterion_group!(queue_benches, benches);
criterion_main!(queue_benches);
