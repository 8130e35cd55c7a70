//! Concurrency: 20 threads each increment one key 1,000 times while another thread takes
//! snapshots and rewrites the AOF. The counter must read exactly 20,000 live and after a
//! reopen (no lost update, no record replayed twice, no increment lost in a rotation).
//! Runs on the real file system under `always` (group commit under contention) and on
//! the in-memory disk under `no`.

mod common;

use helios_atlas::storage::MemStorage;
use helios_atlas::{Atlas, FsyncPolicy, Options};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const THREADS: u64 = 20;
const INCREMENTS: u64 = 1_000;

fn hammer(db: &Atlas) {
    let done = Arc::new(AtomicBool::new(false));
    let compactor = {
        let db = db.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !done.load(Ordering::Acquire) {
                if rounds.is_multiple_of(2) {
                    db.snapshot().expect("snapshot");
                } else {
                    db.rewrite_aof().expect("rewrite");
                }
                rounds += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            rounds
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || {
                for _ in 0..INCREMENTS {
                    db.incr_by("counter", 1).expect("incr");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    done.store(true, Ordering::Release);
    let rounds = compactor.join().expect("compactor");
    assert!(rounds > 0, "snapshots ran during the increments");
    assert_eq!(
        db.get("counter").unwrap(),
        (THREADS * INCREMENTS).to_string()
    );
}

#[test]
fn twenty_threads_increment_while_compacting_real_fs_always() {
    let tmp = tempfile::tempdir().unwrap();
    let options = Options {
        fsync: FsyncPolicy::Always,
        auto_snapshot_aof_size: None,
        ..Options::default()
    };
    let db = Atlas::open(tmp.path(), options.clone()).unwrap();
    hammer(&db);
    let stats = db.stats();
    assert!(
        stats.records_written_count > stats.fsync_count,
        "group commit: {stats:?}"
    );
    db.close().unwrap();
    drop(db);
    let db = Atlas::open(tmp.path(), options).unwrap();
    assert_eq!(db.get("counter").unwrap(), "20000");
}

#[test]
fn twenty_threads_increment_while_compacting_mem_no() {
    let disk = MemStorage::new();
    let clock = Arc::new(helios_core::ManualClock::new(0));
    let db = common::open(&disk, &clock, FsyncPolicy::No);
    hammer(&db);
    drop(db);
    let db = common::open(&disk, &clock, FsyncPolicy::No);
    assert_eq!(db.get("counter").unwrap(), "20000");
}
