//! A producer and two consumers over the durable job queue, embedded in one process.
//!
//! The producer enqueues 200 jobs (some with priorities, some delayed, one duplicate
//! suppressed by its dedup id). Two consumer threads claim in small batches under leases,
//! "process" them, fail some on purpose (nack: retried with backoff, dead-lettered when
//! out of attempts), and ack the rest. The main thread runs the periodic `tick` that
//! expires leases. At the end the stats are printed and checked.
//!
//! Run: `cargo run --example queue -- [DATA_DIR]` (default: a temporary directory).

use helios::atlas::{Atlas, FsyncPolicy, Options};
use helios::queue::{Backoff, EnqueueRequest, JobState, Queue, QueueConfig};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

fn main() -> ExitCode {
    let (dir, temporary) = match std::env::args().nth(1) {
        Some(d) => (PathBuf::from(d), false),
        None => (
            std::env::temp_dir().join(format!("helios-queue-example-{}", std::process::id())),
            true,
        ),
    };
    let result = run(&dir);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let atlas = Atlas::open(
        dir,
        Options {
            fsync: FsyncPolicy::Everysec,
            ..Options::default()
        },
    )?;
    let config = QueueConfig {
        attempts_max_default: 2,
        backoff_default: Backoff::Fixed { delay_ms: 20 },
        ..QueueConfig::default()
    };
    let queue = Arc::new(Queue::open(atlas.clone(), config)?);

    // Producer.
    let mut ids = Vec::new();
    for i in 0..200 {
        let mut req =
            EnqueueRequest::new("emails", json!({ "to": format!("user{i}@example.com") }));
        req.priority = if i % 10 == 0 { 5 } else { 0 };
        if i % 50 == 0 {
            req.delay_ms = Some(50);
        }
        ids.push(queue.enqueue(req)?.id);
    }
    let mut dup = EnqueueRequest::new("emails", json!({ "to": "once@example.com" }));
    dup.dedup_id = Some("welcome-42".into());
    let first = queue.enqueue(dup.clone())?;
    let second = queue.enqueue(dup)?;
    assert!(second.deduplicated && second.id == first.id);
    println!("enqueued 201 jobs (a duplicate was suppressed)");

    // Two consumers.
    let consumers: Vec<_> = (0..2)
        .map(|w| {
            let queue = queue.clone();
            std::thread::spawn(move || -> Result<u64, helios::queue::QueueError> {
                let worker = format!("consumer-{w}");
                let mut done = 0;
                let mut idle = 0;
                while idle < 50 {
                    let claims = queue.claim("emails", &worker, 8, 5_000)?;
                    if claims.is_empty() {
                        idle += 1;
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    idle = 0;
                    for c in claims {
                        let to = c.job.payload["to"].as_str().unwrap_or_default().to_owned();
                        if to.ends_with("7@example.com") {
                            queue.nack(c.job.id, c.token, "mailbox full", None, false)?;
                        } else {
                            queue.ack(c.job.id, c.token, Some(json!({ "sent_by": worker })))?;
                            done += 1;
                        }
                    }
                }
                Ok(done)
            })
        })
        .collect();
    for _ in 0..40 {
        queue.tick()?;
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut done = 0;
    for c in consumers {
        done += c.join().map_err(|_| "consumer panicked")??;
    }
    let stats = queue.stats("emails");
    println!("consumers acked {done}; stats: {stats:?}");
    let (dlq, _) = queue.list("emails", JobState::Failed, None, 100)?;
    println!(
        "dead-lettered: {} (addresses ending in 7 always fail)",
        dlq.len()
    );
    assert_eq!(stats.done_count + stats.failed_count, 201);
    assert_eq!(stats.failed_count, 20);
    atlas.close()?;
    Ok(())
}
