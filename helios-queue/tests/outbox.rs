//! Transactional enqueue (`Queue::enqueue_with`): a job and key-value writes in one ATLAS
//! batch. Shown on the in-memory disk: both land, or neither (a failed write, a power loss
//! torn anywhere in the record, a refused request, a duplicate).

use helios_atlas::storage::{CrashTear, MemStorage};
use helios_atlas::{Atlas, Expiry, FsyncPolicy, Options};
use helios_core::ManualClock;
use helios_queue::{EnqueueRequest, KvWrite, Queue, QueueConfig, QueueError, limits};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

fn open(disk: &MemStorage, clock: &Arc<ManualClock>) -> (Atlas, Queue) {
    let atlas = Atlas::open(
        PathBuf::from("/q"),
        Options {
            fsync: FsyncPolicy::Always,
            storage: Arc::new(disk.clone()),
            clock: clock.clone(),
            maintenance_interval_ms: None,
            ..Options::default()
        },
    )
    .unwrap();
    let q = Queue::open_with_clock(atlas.clone(), QueueConfig::default(), clock.clone()).unwrap();
    (atlas, q)
}

fn set(key: &str, value: &str) -> KvWrite {
    KvWrite::Set {
        key: key.to_owned(),
        value: value.as_bytes().to_vec(),
        expiry: Expiry::Never,
    }
}

#[test]
fn the_job_and_its_writes_land_together() {
    let disk = MemStorage::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let (atlas, q) = open(&disk, &clock);
    atlas.set("kv:u:u1:old", "x").unwrap();
    let e = q
        .enqueue_with(
            EnqueueRequest::new("mail", json!({"order": 1})),
            vec![
                set("kv:u:u1:order:1", "{\"state\":\"paid\"}"),
                KvWrite::Delete {
                    key: "kv:u:u1:old".into(),
                },
            ],
        )
        .unwrap();
    assert!(!e.deduplicated);
    assert!(q.get(e.id).is_some());
    assert_eq!(
        atlas.get("kv:u:u1:order:1").unwrap(),
        &b"{\"state\":\"paid\"}"[..]
    );
    assert!(atlas.get("kv:u:u1:old").is_none());
    // Durable as one: after a power loss, both are there.
    drop(q);
    drop(atlas);
    disk.crash(CrashTear::DropUnsynced);
    disk.restart();
    let (atlas, q) = open(&disk, &clock);
    assert!(q.get(e.id).is_some());
    assert!(atlas.get("kv:u:u1:order:1").is_some());
}

#[test]
fn a_failed_write_or_a_torn_record_leaves_neither() {
    for seed in 0..20u64 {
        let disk = MemStorage::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let (atlas, q) = open(&disk, &clock);
        // Power loss during the append, torn anywhere: the batch is one record.
        disk.arm_crash(0, CrashTear::RandomPrefix { seed });
        let r = q.enqueue_with(
            EnqueueRequest::new("mail", json!({"big": "x".repeat(2000)})),
            vec![set("kv:u:u1:a", &"v".repeat(3000)), set("kv:u:u1:b", "2")],
        );
        assert!(r.is_err(), "the write failed, so the enqueue did");
        assert!(
            q.with_state(|s| s.job_count()) == 0,
            "nothing applied in memory"
        );
        assert!(atlas.get("kv:u:u1:a").is_none());
        drop(q);
        drop(atlas);
        disk.restart();
        let (atlas, q) = open(&disk, &clock);
        let jobs = q.with_state(|s| s.job_count());
        let (a, b) = (atlas.get("kv:u:u1:a"), atlas.get("kv:u:u1:b"));
        assert!(
            (jobs, a.is_some(), b.is_some()) == (0, false, false),
            "seed {seed}: jobs {jobs}, a {}, b {}",
            a.is_some(),
            b.is_some()
        );
    }
}

#[test]
fn refused_requests_and_duplicates_write_nothing() {
    let disk = MemStorage::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let (atlas, q) = open(&disk, &clock);
    // Only kv: keys.
    for key in ["job:0190f5c2a0e07c3e8a1b2c3d4e5f6a7b", "auth:user:u1", "x"] {
        match q.enqueue_with(EnqueueRequest::new("mail", json!(1)), vec![set(key, "1")]) {
            Err(QueueError::Invalid { field: "kv", .. }) => {}
            other => panic!("{key}: {other:?}"),
        }
    }
    // Too many writes.
    let many: Vec<KvWrite> = (0..=limits::KV_WRITES_MAX)
        .map(|i| set(&format!("kv:u:u1:{i}"), "1"))
        .collect();
    assert!(matches!(
        q.enqueue_with(EnqueueRequest::new("mail", json!(1)), many),
        Err(QueueError::Invalid { field: "kv", .. })
    ));
    // A bad job: its writes are not made either.
    assert!(
        q.enqueue_with(
            EnqueueRequest::new("bad queue!", json!(1)),
            vec![set("kv:u:u1:c", "1")]
        )
        .is_err()
    );
    assert!(atlas.get("kv:u:u1:c").is_none());
    assert_eq!(q.with_state(|s| s.job_count()), 0);
    // A duplicate: the first job, and no write (a retried request is a no-op).
    let mut r = EnqueueRequest::new("mail", json!(1));
    r.dedup_id = Some("order-7".into());
    let first = q
        .enqueue_with(r.clone(), vec![set("kv:u:u1:d", "first")])
        .unwrap();
    let again = q.enqueue_with(r, vec![set("kv:u:u1:d", "second")]).unwrap();
    assert!(again.deduplicated);
    assert_eq!(again.id, first.id);
    assert_eq!(atlas.get("kv:u:u1:d").unwrap(), &b"first"[..]);
}
