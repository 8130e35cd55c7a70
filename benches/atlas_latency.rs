//! ATLAS set latency while a snapshot of 1M keys is being taken, against the same store with
//! no snapshot running. A plain program (no criterion): it prints percentiles.
//!
//! Run:
//!
//! ```text
//! cargo bench --bench atlas_latency
//! ```
//!
//! What it does, on a temporary directory on the real file system, with the default fsync
//! policy (`everysec`, maintenance thread every 100 ms) and no automatic snapshots:
//! 1. fills 1M keys (16-byte keys, 100-byte values) in batches and takes a first snapshot,
//!    so the measured one is the steady-state case (previous snapshot + AOF since);
//! 2. warms up with 200k sets, then times 1M sets one by one from one thread with no
//!    snapshot running (`no snapshot` line);
//! 3. starts `Atlas::snapshot` in another thread and times every set the main thread does
//!    until that snapshot returns (`during snapshot` line).
//!
//! Sets overwrite existing keys in a fixed pseudo-random order, back to back (closed loop),
//! each timed with `Instant`. Prints count, p50, p99, p99.9 and max per phase, and the
//! snapshot's duration. Under `cargo test --benches` it runs on 20k keys as a smoke test.

use bytes::Bytes;
use helios::atlas::{Atlas, Expiry, FsyncPolicy, Options, WriteBatch};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const VALUE_SIZE: usize = 100;
const PREFILL_BATCH: usize = 10_000;

fn key(i: usize) -> String {
    format!("key:{i:012}")
}

/// Keys `0..n` in a fixed pseudo-random order (xorshift64* + Fisher-Yates).
fn shuffled_keys(n: usize) -> Vec<String> {
    let mut keys: Vec<String> = (0..n).map(key).collect();
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    for i in (1..n).rev() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        keys.swap(i, (r % (i as u64 + 1)) as usize);
    }
    keys
}

/// Cycles through the keys, setting each to a fresh copy of `value`, and records each
/// set's latency in nanoseconds.
struct Writer<'a> {
    db: &'a Atlas,
    keys: &'a [String],
    value: &'a [u8],
    i: usize,
}

impl Writer<'_> {
    fn set_timed(&mut self) -> u64 {
        let k = &self.keys[self.i];
        self.i = (self.i + 1) % self.keys.len();
        let start = Instant::now();
        self.db
            .set(k, Bytes::copy_from_slice(self.value))
            .expect("set");
        start.elapsed().as_nanos() as u64
    }
}

fn report(label: &str, mut ns: Vec<u64>, elapsed: Duration) {
    ns.sort_unstable();
    let pct = |p: f64| {
        let i = ((ns.len() as f64 * p).ceil() as usize).clamp(1, ns.len()) - 1;
        Duration::from_nanos(ns[i])
    };
    println!(
        "{label:>16}: {} sets in {elapsed:.2?} ({:.0} sets/s): p50 {:.1?}, p99 {:.1?}, \
         p99.9 {:.1?}, max {:.1?}",
        ns.len(),
        ns.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(0.999),
        Duration::from_nanos(*ns.last().expect("at least one sample")),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    let (key_count, warmup_sets, baseline_sets) = if bench {
        (1_000_000, 200_000, 1_000_000)
    } else {
        (20_000, 2_000, 20_000)
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let db = Atlas::open(
        dir.path(),
        Options {
            fsync: FsyncPolicy::Everysec,
            auto_snapshot_aof_size: None,
            ..Options::default()
        },
    )
    .expect("open");
    let value: Vec<u8> = (0..VALUE_SIZE).map(|i| b'a' + (i % 26) as u8).collect();
    let keys = shuffled_keys(key_count);

    let started = Instant::now();
    for chunk in keys.chunks(PREFILL_BATCH) {
        let mut batch = WriteBatch::new();
        for k in chunk {
            batch.set(k.as_str(), Bytes::copy_from_slice(&value), Expiry::Never);
        }
        db.write_batch(batch).expect("prefill batch");
    }
    let filled = started.elapsed();
    let started = Instant::now();
    db.snapshot().expect("first snapshot");
    println!(
        "filled {key_count} keys in {filled:.2?}; first snapshot took {:.2?}",
        started.elapsed()
    );

    let mut writer = Writer {
        db: &db,
        keys: &keys,
        value: &value,
        i: 0,
    };
    for _ in 0..warmup_sets {
        writer.set_timed();
    }

    let mut ns = Vec::with_capacity(baseline_sets);
    let started = Instant::now();
    for _ in 0..baseline_sets {
        ns.push(writer.set_timed());
    }
    report("no snapshot", ns, started.elapsed());

    let mut ns = Vec::with_capacity(4_000_000);
    // The main thread stops as soon as `snapshot()` returns, not when its thread exits:
    // at thread exit glibc's malloc flushes that thread's cache and consolidates its arena,
    // which after a snapshot's millions of small frees takes hundreds of ms by itself.
    let done = AtomicBool::new(false);
    let (snapshot_seq, snapshot_start, snapshot_end, elapsed, exit_wait) =
        std::thread::scope(|s| {
            let started = Instant::now();
            let (db, done) = (&db, &done);
            let snap = s.spawn(move || {
                let start = started.elapsed();
                let seq = db.snapshot().expect("snapshot");
                let end = started.elapsed();
                done.store(true, Ordering::Release);
                (seq, start, end)
            });
            while !done.load(Ordering::Acquire) {
                ns.push(writer.set_timed());
            }
            let elapsed = started.elapsed();
            let (seq, start, end) = snap.join().expect("snapshot thread");
            (seq, start, end, elapsed, started.elapsed() - elapsed)
        });
    report("during snapshot", ns, elapsed);
    let stats = db.stats();
    println!(
        "snapshot of {} keys (seq {snapshot_seq:?}) took {:.2?} (ran from {snapshot_start:.2?} \
         to {snapshot_end:.2?} of the window; its thread exited {exit_wait:.2?} after); \
         {} snapshots written since open",
        stats.key_count,
        snapshot_end - snapshot_start,
        stats.snapshots_written_count
    );
    db.close().expect("close");
}
