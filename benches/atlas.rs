//! ATLAS throughput benchmarks (criterion), on temporary directories on the real file system.
//!
//! Run the whole file (about 2 minutes on a 2-core machine; results also land in
//! `target/criterion/`):
//!
//! ```text
//! cargo bench --bench atlas
//! ```
//!
//! or one group, e.g. `cargo bench --bench atlas -- recovery` (the argument is a regex over
//! the benchmark names below). Keys are 16 bytes (`key:000000000042`), values 100 bytes
//! (ASCII, so the AOF stores them as JSON strings, not base64). Each write hands ATLAS a
//! freshly allocated value, as a server would; the baseline gets the same treatment.
//!
//! What is measured:
//! - `get/{atlas,rwlock_hashmap}` and `set/{atlas_fsync_no,rwlock_hashmap}`: point reads and
//!   overwrites over a keyspace prefilled with 100k keys (in key order), visited in a fixed
//!   pseudo-random order, ATLAS against a `parking_lot::RwLock<HashMap<String, Bytes>>`
//!   baseline holding the same keys; one thread; throughput in elements (operations) per
//!   second. ATLAS `set` is logged to the AOF with fsync `no` (one `write` per set, no
//!   fsync).
//! - `set_fsync/{no,everysec,always}/{1,8}`: overwrites with 1 writer thread, and with 8
//!   threads each doing an eighth of the iterations (`iter_custom`: wall time from a barrier
//!   to the last join). Each case opens a fresh store prefilled with 100k keys, with the
//!   maintenance thread on (it does the `everysec` fsyncs). After each case the
//!   group-commit figures (AOF records written per commit group and per fsync, from
//!   `Atlas::stats`, warm-up included) are printed to stderr as `group-commit: ...` lines.
//! - `recovery/open_close_1M`: `Atlas::open` + `Atlas::close` of a directory holding 1M
//!   keys, 900k of them in a snapshot and the last 100k as single-set records in the AOF
//!   after it (no maintenance thread). Freeing the keyspace after close is not timed.
//!   Throughput is in keys recovered per second.
//!
//! Set latency during a snapshot is measured by the other bench target,
//! `cargo bench --bench atlas_latency` (see `benches/atlas_latency.rs`).
//!
//! Under `cargo test --benches` (criterion's test mode) every benchmark runs once on small
//! data sets, as a smoke test.

use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use helios::atlas::{Atlas, Expiry, FsyncPolicy, Options, WriteBatch};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Value bytes written with every key.
const VALUE_SIZE: usize = 100;
/// Writer threads of the multi-threaded cases.
const WRITER_THREADS: usize = 8;
/// Keys per prefill batch (one AOF record each).
const PREFILL_BATCH: usize = 10_000;

/// Data-set sizes: full ones under `cargo bench`, small ones under `cargo test --benches`.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    keyspace: usize,
    recovery_snapshot_keys: usize,
    recovery_aof_keys: usize,
}

fn sizes() -> Sizes {
    // Criterion benchmarks only with `--bench` and without `--test`; otherwise it runs each
    // routine once (test mode), and so do the fixtures here, on small data.
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    if bench {
        Sizes {
            keyspace: 100_000,
            recovery_snapshot_keys: 900_000,
            recovery_aof_keys: 100_000,
        }
    } else {
        Sizes {
            keyspace: 1_000,
            recovery_snapshot_keys: 9_000,
            recovery_aof_keys: 1_000,
        }
    }
}

/// The 16-byte key number `i`.
fn key(i: usize) -> String {
    let k = format!("key:{i:012}");
    debug_assert_eq!(k.len(), 16);
    k
}

/// A fixed 100-byte ASCII value.
fn value() -> Vec<u8> {
    (0..VALUE_SIZE).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Keys `0..n` in a fixed pseudo-random order (xorshift64* + Fisher-Yates). The stores are
/// filled in key order and read and written in this order, so accesses don't walk the heap
/// in allocation order.
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

fn options(fsync: FsyncPolicy) -> Options {
    Options {
        fsync,
        auto_snapshot_aof_size: None,
        ..Options::default()
    }
}

/// Writes `keys` with `value` in batches of [`PREFILL_BATCH`] (one AOF record each).
fn prefill(db: &Atlas, keys: &[String], value: &[u8]) {
    for chunk in keys.chunks(PREFILL_BATCH) {
        let mut batch = WriteBatch::new();
        for k in chunk {
            batch.set(k.as_str(), Bytes::copy_from_slice(value), Expiry::Never);
        }
        db.write_batch(batch).expect("prefill batch");
    }
}

/// An open store in its own temporary directory, prefilled with `keys`.
struct Store {
    db: Atlas,
    _dir: TempDir,
}

impl Store {
    /// Prefilled with keys `0..key_count`, in order.
    fn new(fsync: FsyncPolicy, key_count: usize, value: &[u8]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Atlas::open(dir.path(), options(fsync)).expect("open");
        let keys: Vec<String> = (0..key_count).map(key).collect();
        prefill(&db, &keys, value);
        Self { db, _dir: dir }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.db.close().expect("close");
    }
}

/// Cycles through `keys`.
struct Cursor<'a> {
    keys: &'a [String],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn new(keys: &'a [String], start: usize) -> Self {
        Self {
            keys,
            i: start % keys.len(),
        }
    }

    fn next_key(&mut self) -> &'a str {
        let k = &self.keys[self.i];
        self.i += 1;
        if self.i == self.keys.len() {
            self.i = 0;
        }
        k
    }
}

// ----- 1. get and set against RwLock<HashMap> -----

struct KvFixture {
    store: Store,
    baseline: RwLock<HashMap<String, Bytes>>,
    keys: Vec<String>,
}

impl KvFixture {
    fn new(value: &[u8]) -> Self {
        let n = sizes().keyspace;
        let store = Store::new(FsyncPolicy::No, n, value);
        let baseline = RwLock::new(
            (0..n)
                .map(|i| (key(i), Bytes::copy_from_slice(value)))
                .collect(),
        );
        let keys = shuffled_keys(n);
        Self {
            store,
            baseline,
            keys,
        }
    }
}

fn bench_get_set(c: &mut Criterion) {
    let value = value();
    // Built on first use, so a filter that skips these benchmarks skips the prefill too.
    let mut fixture: Option<KvFixture> = None;

    let mut group = c.benchmark_group("get");
    group.throughput(Throughput::Elements(1));
    group.bench_function("atlas", |b| {
        let f = fixture.get_or_insert_with(|| KvFixture::new(&value));
        let mut keys = Cursor::new(&f.keys, 0);
        b.iter(|| black_box(f.store.db.get(keys.next_key())));
    });
    group.bench_function("rwlock_hashmap", |b| {
        let f = fixture.get_or_insert_with(|| KvFixture::new(&value));
        let mut keys = Cursor::new(&f.keys, 0);
        b.iter(|| black_box(f.baseline.read().get(keys.next_key()).cloned()));
    });
    group.finish();

    let mut group = c.benchmark_group("set");
    group.throughput(Throughput::Elements(1));
    group.bench_function("atlas_fsync_no", |b| {
        let f = fixture.get_or_insert_with(|| KvFixture::new(&value));
        let mut keys = Cursor::new(&f.keys, 0);
        b.iter(|| {
            f.store
                .db
                .set(keys.next_key(), Bytes::copy_from_slice(&value))
                .expect("set")
        });
    });
    group.bench_function("rwlock_hashmap", |b| {
        let f = fixture.get_or_insert_with(|| KvFixture::new(&value));
        let mut keys = Cursor::new(&f.keys, 0);
        b.iter(|| {
            let old = f
                .baseline
                .write()
                .insert(keys.next_key().to_owned(), Bytes::copy_from_slice(&value));
            black_box(old)
        });
    });
    group.finish();
}

// ----- 2. set under each fsync policy, 1 and 8 writers -----

fn policy_name(p: FsyncPolicy) -> &'static str {
    match p {
        FsyncPolicy::No => "no",
        FsyncPolicy::Everysec => "everysec",
        FsyncPolicy::Always => "always",
    }
}

/// `iters` sets spread over `threads` threads (the first `iters % threads` do one more);
/// returns the wall time from the moment all threads are ready to the last join.
fn parallel_sets(
    db: &Atlas,
    keys: &[String],
    value: &[u8],
    iters: u64,
    threads: usize,
    round: usize,
) -> Duration {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let n = iters / threads as u64 + u64::from((t as u64) < iters % threads as u64);
                // Each thread walks its own stretch of the keyspace, moving on every round.
                let mut keys = Cursor::new(keys, t * keys.len() / threads + round * 7919);
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    for _ in 0..n {
                        db.set(keys.next_key(), Bytes::copy_from_slice(value))
                            .expect("set");
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join().expect("writer thread");
        }
        start.elapsed()
    })
}

fn bench_set_fsync(c: &mut Criterion) {
    let value = value();
    let keys = shuffled_keys(sizes().keyspace);
    let mut group = c.benchmark_group("set_fsync");
    group.throughput(Throughput::Elements(1));
    for policy in [FsyncPolicy::No, FsyncPolicy::Everysec, FsyncPolicy::Always] {
        if policy == FsyncPolicy::Always {
            // An fsync per group takes milliseconds: equal-sized samples, fewer of them.
            group.sampling_mode(SamplingMode::Flat).sample_size(20);
        } else {
            group.sampling_mode(SamplingMode::Auto).sample_size(50);
        }
        for threads in [1, WRITER_THREADS] {
            let name = policy_name(policy);
            // A fresh store per case (built on first use), so the counters are its own.
            let mut store: Option<(Store, helios::atlas::Stats)> = None;
            group.bench_function(format!("{name}/{threads}"), |b| {
                let (store, _) = store.get_or_insert_with(|| {
                    let s = Store::new(policy, keys.len(), &value);
                    let before = s.db.stats();
                    (s, before)
                });
                let db = &store.db;
                if threads == 1 {
                    let mut keys = Cursor::new(&keys, 0);
                    b.iter(|| {
                        db.set(keys.next_key(), Bytes::copy_from_slice(&value))
                            .expect("set")
                    });
                } else {
                    let mut round = 0;
                    b.iter_custom(|iters| {
                        round += 1;
                        parallel_sets(db, &keys, &value, iters, threads, round)
                    });
                }
            });
            if let Some((store, before)) = store {
                let after = store.db.stats();
                print_group_commit(
                    &format!("{name} x{threads}"),
                    after.records_written_count - before.records_written_count,
                    after.groups_committed_count - before.groups_committed_count,
                    after.fsync_count - before.fsync_count,
                );
            }
        }
    }
    group.finish();
}

fn print_group_commit(label: &str, records: u64, groups: u64, fsyncs: u64) {
    let per = |d: u64| {
        if d == 0 {
            "n/a".to_owned()
        } else {
            format!("{:.1}", records as f64 / d as f64)
        }
    };
    eprintln!(
        "group-commit: {label}: {records} records, {groups} groups, {fsyncs} fsyncs, \
         {} records/group, {} records/fsync",
        per(groups),
        per(fsyncs)
    );
}

// ----- 3. recovery of 1M keys -----

/// A closed store: `snapshot_keys` keys written in batches and then snapshotted, then
/// `aof_keys` more keys, one set (one AOF record) each, left in the AOF.
fn build_recovery_dir(snapshot_keys: usize, aof_keys: usize) -> TempDir {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let value = value();
    let db = Atlas::open(dir.path(), options(FsyncPolicy::No)).expect("open");
    let snap_keys: Vec<String> = (0..snapshot_keys).map(key).collect();
    prefill(&db, &snap_keys, &value);
    db.snapshot().expect("snapshot");
    for i in snapshot_keys..snapshot_keys + aof_keys {
        db.set(key(i), Bytes::copy_from_slice(&value)).expect("set");
    }
    let keys = db.key_count();
    db.close().expect("close");
    drop(db);
    eprintln!(
        "recovery: built {} in {:.1?}: {keys} keys ({snapshot_keys} in the snapshot, \
         {aof_keys} in the AOF after it)",
        dir.path().display(),
        started.elapsed()
    );
    print_dir(dir.path());
    dir
}

fn print_dir(dir: &Path) {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| {
            let e = e.expect("dir entry");
            let size = e.metadata().expect("metadata").len();
            (e.file_name().to_string_lossy().into_owned(), size)
        })
        .collect();
    files.sort();
    for (name, size) in files {
        eprintln!(
            "recovery:   {name}: {:.1} MiB",
            size as f64 / (1024.0 * 1024.0)
        );
    }
}

fn bench_recovery(c: &mut Criterion) {
    let s = sizes();
    let total = s.recovery_snapshot_keys + s.recovery_aof_keys;
    let mut dir: Option<TempDir> = None;
    let mut group = c.benchmark_group("recovery");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(total as u64));
    group.bench_function("open_close_1M", |b| {
        let dir = dir.get_or_insert_with(|| {
            build_recovery_dir(s.recovery_snapshot_keys, s.recovery_aof_keys)
        });
        let opts = Options {
            maintenance_interval_ms: None,
            ..options(FsyncPolicy::Everysec)
        };
        b.iter_custom(|iters| {
            let mut total_time = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let db = Atlas::open(dir.path(), opts.clone()).expect("open");
                db.close().expect("close");
                total_time += start.elapsed();
                assert_eq!(db.key_count(), total as u64);
                // Freeing the keyspace (and releasing the directory lock) is not timed.
                drop(db);
            }
            total_time
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_get_set, bench_set_fsync, bench_recovery
}
criterion_main!(benches);
