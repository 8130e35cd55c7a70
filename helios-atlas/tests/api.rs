//! The embeddable API, call by call: each test states the contract it shows, on the
//! fault-injecting in-memory disk with a manual clock.

mod common;

use bytes::Bytes;
use common::*;
use helios_atlas::storage::{CrashTear, MemStorage, Storage};
use helios_atlas::{
    AtlasError, Expiry, FsyncPolicy, KeyTtl, Op, Precondition, SetCondition, SetOptions, WriteBatch,
};
use helios_core::ManualClock;
use std::sync::Arc;
use std::time::Duration;

fn setup() -> (MemStorage, Arc<ManualClock>) {
    (MemStorage::new(), Arc::new(ManualClock::new(1_000_000)))
}

#[test]
fn set_get_delete_exists_and_reopen() {
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Always);
    db.set("a", "1").unwrap();
    db.set("b", Bytes::from_static(&[0, 255, 10])).unwrap();
    assert_eq!(db.get("a").unwrap(), "1");
    assert!(db.exists("b"));
    assert!(db.delete("a").unwrap());
    assert!(!db.delete("a").unwrap());
    assert!(!db.exists("a"));
    drop(db);
    let db = open(&m, &c, FsyncPolicy::Always);
    assert_eq!(db.get("a"), None);
    assert_eq!(db.get("b").unwrap(), Bytes::from_static(&[0, 255, 10]));
    assert_eq!(db.last_seq(), 3);
}

/// Keys are bytes: any key (not UTF-8, NULs, a prefix of another) is stored, scanned in
/// byte order, logged (as `kb`, AOF format 3), snapshotted and read back after reopening;
/// `&str`, `&[u8]`, `Vec<u8>` and `&Key` are all accepted.
#[test]
fn keys_are_binary_safe() {
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Always);
    let bin: &[u8] = b"bin:\xff\x00\x80";
    db.set(bin, "v1").unwrap();
    db.set(b"bin:\xfe", "v2").unwrap();
    db.set("bin:text", "v3").unwrap();
    db.set(b"bin:", "v4").unwrap();
    assert_eq!(db.get(bin).unwrap(), "v1");
    assert!(db.get(b"bin:\xff").is_none(), "a prefix is another key");
    assert_eq!(db.incr_by(b"n\xc3", 2).unwrap(), 2);
    let mut feed = db.subscribe(b"bin:\xff", 1).unwrap();
    let ev = feed.try_next().unwrap().expect("the set under the prefix");
    assert_eq!(ev.changes[0].key(), &bin);
    let keys = |db: &helios_atlas::Atlas| -> Vec<Vec<u8>> {
        db.scan(b"bin:", None, 100)
            .unwrap()
            .entries
            .into_iter()
            .map(|(k, _)| k.into_bytes())
            .collect()
    };
    let want: Vec<Vec<u8>> = vec![
        b"bin:".to_vec(),
        b"bin:text".to_vec(),
        b"bin:\xfe".to_vec(),
        bin.to_vec(),
    ];
    assert_eq!(keys(&db), want, "byte order");
    let page = db.scan(b"bin:", Some(b"bin:text"), 1).unwrap();
    assert_eq!(page.entries[0].0, &b"bin:\xfe"[..]);
    assert_eq!(page.next_cursor.as_deref(), Some(&b"bin:\xfe"[..]));
    let aof = m.read(&file("aof-00000000000000000001.jsonl")).unwrap();
    let text = String::from_utf8(aof).expect("the AOF stays text");
    assert!(
        text.starts_with(r#"{"format":"helios-aof","version":3,"#),
        "{text}"
    );
    assert!(
        text.contains(r#"{"op":"set","kb":"YmluOv8AgA==","v":"v1"}"#),
        "{text}"
    );
    drop(db);
    let db = open(&m, &c, FsyncPolicy::Always);
    assert_eq!(keys(&db), want, "replayed from the AOF");
    assert_eq!(db.get(b"n\xc3").unwrap(), "2");
    db.snapshot().unwrap();
    assert!(db.delete(b"bin:\xfe").unwrap());
    drop(db);
    let db = open(&m, &c, FsyncPolicy::Always);
    assert_eq!(keys(&db).len(), 3, "snapshot + AOF");
    assert_eq!(db.get(bin).unwrap(), "v1");
    let key = helios_atlas::Key::from(bin);
    assert_eq!(format!("{key}"), "bin:\\xff\\x00\\x80");
    assert!(db.exists(&key));
    let err = db.incr_by(&key, 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"value of key b"bin:\xff\x00\x80" is not an integer"#
    );
}

/// A directory written by a build whose AOF is format 2 (keys text only) opens, and new
/// writes go to a new segment of format 3: appends never continue a segment of an older
/// format, whose readers would not know `kb`.
#[test]
fn a_version_2_segment_is_read_and_not_appended_to() {
    let (m, c) = setup();
    m.create_dir_all(&dir()).unwrap();
    let mut seg = br#"{"format":"helios-aof","version":2,"start_seq":1}"#.to_vec();
    seg.push(b'\n');
    helios_atlas::aof::encode_record(
        1,
        &[Op::Set {
            key: "old".into(),
            value: Bytes::from_static(b"1"),
            expire_at_ms: None,
        }],
        &mut seg,
    );
    let f = m.create(&file("aof-00000000000000000001.jsonl")).unwrap();
    f.append(&seg).unwrap();
    f.sync().unwrap();
    m.sync_dir(&dir()).unwrap();
    let db = open(&m, &c, FsyncPolicy::Always);
    assert_eq!(db.get("old").unwrap(), "1");
    db.set(b"\xff", "2").unwrap();
    drop(db);
    assert_eq!(
        m.read(&file("aof-00000000000000000001.jsonl")).unwrap(),
        seg,
        "the old segment is left as it was"
    );
    let new = String::from_utf8(m.read(&file("aof-00000000000000000002.jsonl")).unwrap()).unwrap();
    assert!(
        new.starts_with(r#"{"format":"helios-aof","version":3,"start_seq":2}"#),
        "{new}"
    );
    let db = open(&m, &c, FsyncPolicy::Always);
    assert_eq!(db.get(b"\xff").unwrap(), "2");
}

#[test]
fn nx_xx_conditions() {
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Always);
    let nx = SetOptions {
        condition: SetCondition::IfAbsent,
        ..Default::default()
    };
    let xx = SetOptions {
        condition: SetCondition::IfPresent,
        ..Default::default()
    };
    assert!(!db.set_with("k", "x", xx).unwrap());
    assert!(db.get("k").is_none());
    assert!(db.set_with("k", "1", nx).unwrap());
    assert!(!db.set_with("k", "2", nx).unwrap());
    assert!(db.set_with("k", "3", xx).unwrap());
    assert_eq!(db.get("k").unwrap(), "3");
}

#[test]
fn ttl_expire_persist_and_lazy_expiry() {
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Always);
    db.set_with(
        "k",
        "v",
        SetOptions {
            expiry: Expiry::InMs(100),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        db.ttl("k"),
        KeyTtl::Expires {
            at_ms: 1_000_100,
            remaining_ms: 100
        }
    );
    assert!(db.persist("k").unwrap());
    assert!(!db.persist("k").unwrap(), "no expiry left to remove");
    assert_eq!(db.ttl("k"), KeyTtl::Persistent);
    assert!(db.expire("k", 50).unwrap());
    assert!(!db.expire("missing", 50).unwrap());
    c.advance_ms(49);
    assert!(db.exists("k"));
    c.advance_ms(1);
    assert!(!db.exists("k"), "expired at its expiry time (lazy)");
    assert_eq!(db.ttl("k"), KeyTtl::Missing);
    assert_eq!(db.key_count(), 1, "still held until a logged delete");
    assert_eq!(db.tick(c.now()).unwrap(), 1);
    assert_eq!(db.tick(c.now()).unwrap(), 0, "a second tick is harmless");
    assert_eq!(db.key_count(), 0);
    // expire_at in the past deletes.
    db.set("p", "v").unwrap();
    assert!(db.expire_at("p", 5).unwrap());
    assert!(!db.exists("p"));
    // set with KEEPTTL keeps the expiry; a plain set clears it.
    db.set_with(
        "t",
        "1",
        SetOptions {
            expiry: Expiry::AtMs(c.now() + 500),
            ..Default::default()
        },
    )
    .unwrap();
    db.set_with(
        "t",
        "2",
        SetOptions {
            expiry: Expiry::Keep,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(db.ttl("t"), KeyTtl::Expires { .. }));
    db.set("t", "3").unwrap();
    assert_eq!(db.ttl("t"), KeyTtl::Persistent);
    assert!(matches!(
        db.set_with(
            "t",
            "x",
            SetOptions {
                expiry: Expiry::InMs(0),
                ..Default::default()
            }
        ),
        Err(AtlasError::InvalidArgument { .. })
    ));
}

trait Now {
    fn now(&self) -> u64;
}
impl Now for ManualClock {
    fn now(&self) -> u64 {
        use helios_core::Clock;
        self.now_ms()
    }
}

#[test]
fn relative_ttl_replayed_later_does_not_extend_life() {
    // A key set with a 10 s TTL, then the store is closed, the clock moves 8 s and it is
    // reopened: the key must die 2 s later, not 10 s later, because the AOF holds the
    // absolute expiry time.
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Always);
    db.set_with(
        "k",
        "v",
        SetOptions {
            expiry: Expiry::InMs(10_000),
            ..Default::default()
        },
    )
    .unwrap();
    db.incr_by("n", 1).unwrap();
    db.expire("n", 10_000).unwrap();
    db.incr_by("n", 1).unwrap();
    drop(db);
    c.advance_ms(8_000);
    m.crash(CrashTear::DropUnsynced);
    m.restart();
    let db = open(&m, &c, FsyncPolicy::Always);
    assert_eq!(
        db.ttl("k"),
        KeyTtl::Expires {
            at_ms: 1_010_000,
            remaining_ms: 2_000
        }
    );
    assert_eq!(db.get("n").unwrap(), "2");
    assert!(matches!(
        db.ttl("n"),
        KeyTtl::Expires {
            remaining_ms: 2_000,
            ..
        }
    ));
    c.advance_ms(2_000);
    assert!(!db.exists("k"));
    assert!(!db.exists("n"));
    let aof = String::from_utf8(m.read(&file("aof-00000000000000000001.jsonl")).unwrap()).unwrap();
    assert!(
        aof.contains(r#""x":1010000"#),
        "absolute expiry in the AOF: {aof}"
    );
    assert!(
        aof.contains(r#"{"op":"set","k":"n","v":"2","x":1010000}"#),
        "{aof}"
    );
}

#[test]
fn incr_by_errors_and_results() {
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Always);
    assert_eq!(db.incr_by("n", 5).unwrap(), 5);
    assert_eq!(db.incr_by("n", -7).unwrap(), -2);
    db.set("s", "abc").unwrap();
    match db.incr_by("s", 1) {
        Err(AtlasError::NotAnInteger { key }) => assert_eq!(key, "s"),
        other => panic!("{other:?}"),
    }
    db.set("big", i64::MAX.to_string()).unwrap();
    assert!(matches!(
        db.incr_by("big", 1),
        Err(AtlasError::IncrOverflow { .. })
    ));
    assert_eq!(db.get("big").unwrap(), i64::MAX.to_string());
}

#[test]
fn compare_and_swap() {
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Always);
    assert!(db.compare_and_swap("k", None, Some(b"1")).unwrap());
    assert!(!db.compare_and_swap("k", None, Some(b"2")).unwrap());
    assert!(!db.compare_and_swap("k", Some(b"0"), Some(b"2")).unwrap());
    assert!(db.compare_and_swap("k", Some(b"1"), Some(b"2")).unwrap());
    assert!(db.compare_and_swap("k", Some(b"2"), None).unwrap());
    assert!(!db.exists("k"));
}

#[test]
fn get_many_and_scan_with_cursor() {
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::No);
    for i in 0..25 {
        db.set(format!("user:{i:03}"), i.to_string()).unwrap();
    }
    db.set("userx", "no").unwrap();
    db.set("a", "no").unwrap();
    let got = db.get_many(&["user:001", "nope", "a"]).unwrap();
    assert_eq!(got[0].as_deref(), Some(&b"1"[..]));
    assert_eq!(got[1], None);
    let mut all = Vec::new();
    let mut cursor: Option<helios_atlas::Key> = None;
    loop {
        let page = db.scan("user:", cursor.as_deref(), 10).unwrap();
        assert!(page.entries.len() <= 10);
        all.extend(page.entries.into_iter().map(|(k, _)| k));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let want: Vec<String> = (0..25).map(|i| format!("user:{i:03}")).collect();
    assert_eq!(all, want);
    assert!(matches!(
        db.scan("", None, 0),
        Err(AtlasError::InvalidArgument { .. })
    ));
}

#[test]
fn batch_is_all_or_nothing_on_disk_too() {
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Always);
    db.set("a", "1").unwrap();
    let mut b = WriteBatch::new();
    b.set("x", "1", Expiry::Never)
        .delete("a")
        .require("a", Precondition::Equals(Bytes::from("1")));
    db.write_batch(b).unwrap();
    assert!(!db.exists("a"));
    let mut b = WriteBatch::new();
    b.set("y", "1", Expiry::Never)
        .require("a", Precondition::Present);
    match db.write_batch(b) {
        Err(AtlasError::PreconditionFailed { key }) => assert_eq!(key, "a"),
        other => panic!("{other:?}"),
    }
    assert!(!db.exists("y"));
    let seq = db.last_seq();
    drop(db);
    let db = open(&m, &c, FsyncPolicy::Always);
    assert_eq!(db.last_seq(), seq);
    assert!(db.exists("x") && !db.exists("y") && !db.exists("a"));
    let aof = String::from_utf8(m.read(&file("aof-00000000000000000001.jsonl")).unwrap()).unwrap();
    let batch_line = aof.lines().nth(2).unwrap();
    assert!(batch_line.contains(r#""k":"x""#) && batch_line.contains(r#""op":"del""#));
}

#[test]
fn bad_input_gets_clear_errors() {
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Always);
    assert!(matches!(
        db.set("", "v"),
        Err(AtlasError::KeyInvalid { size: 0, .. })
    ));
    let long = "k".repeat(70_000);
    assert!(matches!(
        db.set(&long, "v"),
        Err(AtlasError::KeyInvalid { .. })
    ));
    assert!(matches!(db.expire("k", u64::MAX), Ok(false)));
    db.set("k", "v").unwrap();
    assert!(matches!(
        db.expire("k", u64::MAX),
        Err(AtlasError::InvalidArgument { name: "ttl_ms", .. })
    ));
}

#[test]
fn memory_limit_refuses_writes_but_not_reads_or_deletes() {
    let (m, c) = setup();
    let mut o = options(&m, &c, FsyncPolicy::No);
    o.memory_limit_size = Some(10_000);
    let db = helios_atlas::Atlas::open(dir(), o).unwrap();
    let mut i = 0;
    let err = loop {
        match db.set(format!("k{i}"), vec![b'x'; 500]) {
            Ok(()) => i += 1,
            Err(e) => break e,
        }
        assert!(i < 100);
    };
    assert!(
        matches!(
            err,
            AtlasError::MemoryLimit {
                limit_size: 10_000,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("memory limit"));
    assert!(db.get("k0").is_some());
    assert!(db.delete("k0").unwrap());
    db.set("k0", vec![b'x'; 500]).unwrap();
    assert!(db.stats().memory_size <= 10_000);
}

#[test]
fn second_opener_is_refused() {
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Always);
    match helios_atlas::Atlas::open(dir(), options(&m, &c, FsyncPolicy::Always)) {
        Err(AtlasError::Locked { dir: d, .. }) => assert_eq!(d, dir()),
        other => panic!("{other:?}"),
    }
    drop(db);
    open(&m, &c, FsyncPolicy::Always);
}

#[test]
fn reopening_right_after_dropping_the_last_handle_works() {
    // The maintenance thread may hold the store for a tick when the last handle goes:
    // the store then closes on that thread, a moment later. An open in the same process
    // waits for it instead of failing as "locked".
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..100 {
        let o = helios_atlas::Options {
            fsync: FsyncPolicy::Everysec,
            maintenance_interval_ms: Some(1),
            ..helios_atlas::Options::default()
        };
        let db =
            helios_atlas::Atlas::open(tmp.path(), o).unwrap_or_else(|e| panic!("open {i}: {e}"));
        for k in 0..50 {
            db.set(format!("k{k}"), format!("{i}")).unwrap();
        }
        drop(db);
    }
}

#[test]
fn snapshot_rotates_and_compacts_and_reopen_uses_it() {
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Always);
    for i in 0..10 {
        db.set(format!("k{i}"), "v").unwrap();
    }
    assert_eq!(db.snapshot().unwrap(), Some(10));
    db.set("after", "1").unwrap();
    assert_eq!(db.snapshot().unwrap(), Some(11));
    db.set("after2", "1").unwrap();
    assert_eq!(db.snapshot().unwrap(), Some(12));
    let n = names(&m, &dir());
    assert!(
        n.contains(&"snapshot-00000000000000000011.snap".to_string()),
        "{n:?}"
    );
    assert!(
        n.contains(&"snapshot-00000000000000000012.snap".to_string()),
        "{n:?}"
    );
    assert!(
        !n.contains(&"snapshot-00000000000000000010.snap".to_string()),
        "{n:?}"
    );
    assert!(
        !n.contains(&"aof-00000000000000000001.jsonl".to_string()),
        "{n:?}"
    );
    drop(db);
    let db = open(&m, &c, FsyncPolicy::Always);
    assert_eq!(db.key_count(), 12);
    assert_eq!(db.rewrite_aof().unwrap(), Some(12));
    let n = names(&m, &dir());
    assert_eq!(
        n.iter().filter(|n| n.starts_with("snapshot-")).count(),
        1,
        "{n:?}"
    );
    drop(db);
    let db = open(&m, &c, FsyncPolicy::Always);
    assert_eq!(db.key_count(), 12);
}

#[test]
fn change_feed_live_from_disk_and_after_restart() {
    let (m, c) = setup();
    let mut o = options(&m, &c, FsyncPolicy::Always);
    o.feed_buffer_count = 2;
    let db = helios_atlas::Atlas::open(dir(), o.clone()).unwrap();
    let mut sub = db.subscribe("user:", 1).unwrap();
    assert_eq!(sub.try_next().unwrap(), None);
    db.set("user:1", "a").unwrap();
    db.set("other", "x").unwrap();
    db.set("user:2", "b").unwrap();
    db.delete("user:1").unwrap();
    let ev = sub.next_timeout(Duration::from_secs(1)).unwrap().unwrap();
    assert_eq!(ev.seq, 1);
    assert_eq!(
        ev.changes,
        vec![Op::Set {
            key: "user:1".into(),
            value: Bytes::from("a"),
            expire_at_ms: None
        }]
    );
    // seq 1 and 3 are older than the 2-record ring: they came from disk.
    assert_eq!(sub.try_next().unwrap().unwrap().seq, 3);
    assert_eq!(sub.try_next().unwrap().unwrap().seq, 4);
    assert_eq!(sub.try_next().unwrap(), None);
    // A subscriber waiting in another thread is woken by a write.
    let db2 = db.clone();
    let waiter = std::thread::spawn(move || {
        let mut s = db2.subscribe("user:", 5).unwrap();
        s.next_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap()
            .seq
    });
    std::thread::sleep(Duration::from_millis(20));
    db.set("user:3", "c").unwrap();
    assert_eq!(waiter.join().unwrap(), 5);
    drop(db);
    // Resume after a restart from a remembered position.
    let db = helios_atlas::Atlas::open(dir(), o).unwrap();
    let mut sub = db.subscribe("user:", 4).unwrap();
    assert_eq!(sub.try_next().unwrap().unwrap().seq, 4);
    assert_eq!(sub.try_next().unwrap().unwrap().seq, 5);
    // Compaction drops old history: a clear error.
    db.set("user:4", "d").unwrap();
    db.rewrite_aof().unwrap();
    db.set("user:5", "e").unwrap();
    match db.subscribe("user:", 2) {
        Err(AtlasError::FeedCompacted {
            requested: 2,
            oldest_seq,
        }) => {
            assert!((6..=7).contains(&oldest_seq), "{oldest_seq}")
        }
        other => panic!("{other:?}"),
    }
    let mut sub = db.subscribe("user:", 7).unwrap();
    assert_eq!(sub.try_next().unwrap().unwrap().seq, 7);
    db.close().unwrap();
    assert!(matches!(sub.try_next(), Err(AtlasError::Closed)));
}

#[test]
fn fsync_failure_is_not_acknowledged_and_stops_writes() {
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Always);
    db.set("ok", "1").unwrap();
    m.fail_sync_after(0);
    let e = db.set("bad", "1").unwrap_err();
    assert!(matches!(e, AtlasError::Io { .. }), "{e}");
    assert!(
        !db.exists("bad"),
        "a write that was not persisted is not visible"
    );
    assert!(matches!(
        db.set("later", "1"),
        Err(AtlasError::PreviousIo { .. })
    ));
    assert!(db.get("ok").is_some(), "reads go on");
    assert!(db.stats().write_error.is_some());
    m.clear_faults();
    assert!(
        matches!(db.set("later", "1"), Err(AtlasError::PreviousIo { .. })),
        "no retry"
    );
    drop(db);
    m.crash(CrashTear::DropUnsynced);
    m.restart();
    let db = open(&m, &c, FsyncPolicy::Always);
    assert!(db.exists("ok"));
    assert!(!db.exists("later"));
}

#[test]
fn full_disk_fails_stop() {
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Always);
    db.set("ok", "1").unwrap();
    m.set_capacity(Some(
        m.file_size(&file("aof-00000000000000000001.jsonl"))
            .unwrap()
            + 20,
    ));
    assert!(db.set("big", vec![b'x'; 100]).is_err());
    assert!(matches!(
        db.set("k", "v"),
        Err(AtlasError::PreviousIo { .. })
    ));
    drop(db);
    m.clear_faults();
    let db = open(&m, &c, FsyncPolicy::Always);
    assert!(db.exists("ok"));
    assert!(!db.exists("big"));
    db.set("k", "v").unwrap();
}

#[test]
fn stats_report_group_commit_and_sizes() {
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Always);
    db.set("a", "1").unwrap();
    let s = db.stats();
    assert_eq!(s.key_count, 1);
    assert_eq!(s.last_seq, 1);
    assert_eq!(s.records_written_count, 1);
    assert_eq!(s.groups_committed_count, 1);
    assert_eq!(s.fsync_count, 1);
    assert!(s.memory_size > 2);
}

#[test]
fn handle_is_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<helios_atlas::Atlas>();
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Always);
    let db2 = db.clone();
    db2.set("k", "v").unwrap();
    assert_eq!(db.get("k").unwrap(), "v", "clones share one store");
}

#[test]
fn reads_never_touch_the_disk() {
    // With the disk powered off, every storage call fails: reads still answer.
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Always);
    for i in 0..10 {
        db.set(format!("k{i}"), "v").unwrap();
    }
    m.crash(CrashTear::KeepUnsynced);
    assert_eq!(db.get("k3").unwrap(), "v");
    assert!(db.exists("k9"));
    assert_eq!(db.get_many(&["k1", "k2"]).unwrap().len(), 2);
    assert_eq!(db.scan("k", None, 100).unwrap().entries.len(), 10);
    assert_eq!(db.ttl("k1"), KeyTtl::Persistent);
    assert!(db.set("k0", "x").is_err(), "writes need the disk");
    assert_eq!(db.get("k0").unwrap(), "v");
}

#[test]
fn invalid_options_name_the_option() {
    let (m, c) = setup();
    let mut o = options(&m, &c, FsyncPolicy::Always);
    o.snapshots_retained_count = 0;
    match helios_atlas::Atlas::open(dir(), o) {
        Err(AtlasError::InvalidOption { name, .. }) => assert_eq!(name, "snapshots_retained_count"),
        other => panic!("{other:?}"),
    }
    let mut o = options(&m, &c, FsyncPolicy::Always);
    o.maintenance_interval_ms = Some(5_000);
    assert!(matches!(
        helios_atlas::Atlas::open(dir(), o),
        Err(AtlasError::InvalidOption {
            name: "maintenance_interval_ms",
            ..
        })
    ));
    assert!("sometimes".parse::<FsyncPolicy>().is_err());
    assert_eq!(
        "everysec".parse::<FsyncPolicy>().unwrap(),
        FsyncPolicy::Everysec
    );
}

#[test]
fn closed_store_refuses_writes_and_reopens() {
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Everysec);
    db.set("k", "v").unwrap();
    db.close().unwrap();
    assert!(matches!(db.set("k", "w"), Err(AtlasError::Closed)));
    assert_eq!(db.get("k").unwrap(), "v");
    drop(db);
    // close fsynced: even a power loss right after keeps the write.
    m.crash(CrashTear::DropUnsynced);
    m.restart();
    let db = open(&m, &c, FsyncPolicy::Everysec);
    assert_eq!(db.get("k").unwrap(), "v");
}

#[test]
fn everysec_tick_fsyncs_once_a_second() {
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Everysec);
    db.set("a", "1").unwrap();
    let syncs = db.stats().fsync_count;
    db.tick(c.now()).unwrap();
    assert_eq!(db.stats().fsync_count, syncs + 1, "first dirty tick syncs");
    db.set("b", "1").unwrap();
    c.advance_ms(500);
    db.tick(c.now()).unwrap();
    assert_eq!(db.stats().fsync_count, syncs + 1, "not yet a second");
    c.advance_ms(500);
    db.tick(c.now()).unwrap();
    assert_eq!(db.stats().fsync_count, syncs + 2);
    db.tick(c.now()).unwrap();
    assert_eq!(db.stats().fsync_count, syncs + 2, "nothing dirty");
}

#[test]
fn a_corrupt_newest_snapshot_falls_back_and_is_set_aside() {
    // The newest snapshot is damaged; the older one plus the AOF still cover everything.
    // Open falls back, sets the bad file aside, and later snapshots and rewrites never rely
    // on it (a rewrite right after open must not compact away the good data).
    let (m, c) = setup();
    let mut o = options(&m, &c, FsyncPolicy::Always);
    o.snapshots_retained_count = 2;
    let db = helios_atlas::Atlas::open(dir(), o.clone()).unwrap();
    for i in 0..5 {
        db.set(format!("a{i}"), "1").unwrap();
    }
    assert_eq!(db.snapshot().unwrap(), Some(5));
    for i in 0..5 {
        db.set(format!("b{i}"), "2").unwrap();
    }
    assert_eq!(db.snapshot().unwrap(), Some(10));
    db.set("c", "3").unwrap();
    drop(db);
    let newest = file("snapshot-00000000000000000010.snap");
    m.corrupt_byte(&newest, 40).unwrap();
    let db = helios_atlas::Atlas::open(dir(), o.clone()).unwrap();
    assert_eq!(db.key_count(), 11);
    assert!(names(&m, &dir()).contains(&"snapshot-00000000000000000010.snap.corrupt".to_string()));
    assert_eq!(db.rewrite_aof().unwrap(), Some(11));
    drop(db);
    let db = helios_atlas::Atlas::open(dir(), o).unwrap();
    assert_eq!(db.key_count(), 11);
    assert_eq!(db.get("b4").unwrap(), "2");
}

#[test]
fn a_corrupt_only_snapshot_without_full_aof_is_refused_by_name() {
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Always);
    db.set("a", "1").unwrap();
    db.rewrite_aof().unwrap();
    drop(db);
    let snap = file("snapshot-00000000000000000001.snap");
    m.corrupt_byte(&snap, 34).unwrap();
    match helios_atlas::Atlas::open(dir(), options(&m, &c, FsyncPolicy::Always)) {
        Err(AtlasError::Corrupt { file: f, .. }) => assert_eq!(f, snap),
        other => panic!("{other:?}"),
    }
}

#[test]
fn close_after_a_write_error_reports_it() {
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Always);
    m.fail_sync_after(0);
    assert!(db.set("k", "v").is_err());
    assert!(matches!(db.close(), Err(AtlasError::PreviousIo { .. })));
}

#[test]
fn a_torn_segment_header_opens_even_when_strict() {
    // A crash while rotating can leave a new last segment whose header is torn: no record
    // is in it, so even with aof_load_truncated off the store opens.
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Always);
    db.set("a", "1").unwrap();
    drop(db);
    m.put_file(
        &file("aof-00000000000000000002.jsonl"),
        b"{\"format\":\"hel",
    );
    let mut o = options(&m, &c, FsyncPolicy::Always);
    o.aof_load_truncated = false;
    let db = helios_atlas::Atlas::open(dir(), o).unwrap();
    assert_eq!(db.get("a").unwrap(), "1");
    db.set("b", "2").unwrap();
    drop(db);
    let db = open(&m, &c, FsyncPolicy::Always);
    assert_eq!(db.get("b").unwrap(), "2");
}

#[test]
fn huge_timeouts_do_not_panic() {
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Always);
    db.set("k", "v").unwrap();
    let mut sub = db.subscribe("", 1).unwrap();
    assert_eq!(sub.next_timeout(Duration::MAX).unwrap().unwrap().seq, 1);
}

/// Issue 18.6: the feed's ring is bounded in bytes as well as in records; a subscriber
/// that does not keep up reads the rest from the AOF, in order, losing nothing.
#[test]
fn the_feed_ring_is_bounded_in_bytes_and_a_slow_subscriber_reads_the_aof() {
    let (m, c) = setup();
    let o = helios_atlas::Options {
        feed_buffer_size: 1 << 20,
        ..options(&m, &c, FsyncPolicy::Everysec)
    };
    let db = helios_atlas::Atlas::open(dir(), o).unwrap();
    let mut sub = db.subscribe("", 1).unwrap();
    let value = |i: usize| Bytes::from(vec![b'a' + (i % 26) as u8; 100 << 10]);
    for i in 0..40 {
        db.set(format!("k{i:02}"), value(i)).unwrap();
        let held = db.stats().feed_buffer_size;
        assert!(held <= 1 << 20, "after {i}: {held}");
    }
    assert!(db.stats().feed_buffer_size > 512 << 10, "the ring is used");
    // A record larger than the bound is not kept at all.
    db.set("huge", Bytes::from(vec![b'h'; 2 << 20])).unwrap();
    assert_eq!(db.stats().feed_buffer_size, 0);
    for i in 0..40 {
        let ev = sub.try_next().unwrap().expect("an event");
        assert_eq!(ev.seq, i as u64 + 1);
        match &ev.changes[..] {
            [Op::Set { key, value: v, .. }] => {
                assert_eq!(
                    (key.as_str(), v),
                    (Some(format!("k{i:02}").as_str()), &value(i))
                );
            }
            other => panic!("{other:?}"),
        }
    }
    let ev = sub.try_next().unwrap().expect("the huge one");
    assert_eq!(ev.seq, 41);
}

/// Issue 18.6: under a memory limit the ring counts against it and gives way: keys plus
/// ring stay under the limit, and the ring never makes a write fail.
#[test]
fn under_a_memory_limit_the_feed_ring_gives_way_to_the_keyspace() {
    let (m, c) = setup();
    let limit = 4 << 20;
    let o = helios_atlas::Options {
        memory_limit_size: Some(limit),
        ..options(&m, &c, FsyncPolicy::Everysec)
    };
    let db = helios_atlas::Atlas::open(dir(), o).unwrap();
    let _sub = db.subscribe("", 1).unwrap();
    let mut refused = 0;
    for i in 0..60 {
        // Overwrites pin old values in the ring only; new keys grow the keyspace.
        let key = format!("k{}", i % 30);
        match db.set(&key, Bytes::from(vec![b'x'; 100 << 10])) {
            Ok(()) => {}
            Err(AtlasError::MemoryLimit { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
        let s = db.stats();
        assert!(
            s.memory_size + s.feed_buffer_size <= limit,
            "after {i}: keys {} + ring {} > {limit}",
            s.memory_size,
            s.feed_buffer_size
        );
    }
    assert_eq!(
        refused, 0,
        "30 keys of 100 KiB fit; the ring never refuses a write"
    );
}

/// Sum of the sizes of the AOF segments in the store's directory.
fn aof_files_size(m: &MemStorage) -> u64 {
    names(m, &dir())
        .iter()
        .filter(|n| helios_atlas::aof::parse_segment_name(n).is_some())
        .map(|n| m.read(&file(n)).unwrap().len() as u64)
        .sum()
}

#[test]
fn aof_size_is_the_segments_on_disk_and_snapshots_are_timed() {
    let (m, c) = setup();
    let db = open(&m, &c, FsyncPolicy::Always);
    assert_eq!(
        db.stats().aof_size,
        aof_files_size(&m),
        "a fresh store: the header"
    );
    for i in 0..200 {
        db.set(format!("key{}", i % 10), "x".repeat(100)).unwrap();
    }
    let grown = db.stats().aof_size;
    assert_eq!(grown, aof_files_size(&m));
    assert!(grown > 200 * 100, "{grown}");
    assert_eq!(db.stats().snapshot_durations.count, 0);
    // A plain snapshot rotates and compacts: the closed segments go.
    db.snapshot().unwrap();
    let after = db.stats();
    assert_eq!(after.aof_size, aof_files_size(&m));
    assert!(after.aof_size < grown / 10, "{} vs {grown}", after.aof_size);
    assert_eq!(after.snapshot_durations.count, 1);
    // More writes in the new segment, then a rewrite.
    for i in 0..50 {
        db.set(format!("key{}", i % 10), "y".repeat(100)).unwrap();
    }
    let grown = db.stats().aof_size;
    assert_eq!(grown, aof_files_size(&m));
    db.rewrite_aof().unwrap();
    let s = db.stats();
    assert_eq!(s.aof_size, aof_files_size(&m));
    assert!(s.aof_size < grown, "{} vs {grown}", s.aof_size);
    assert_eq!(s.snapshot_durations.count, 2);
    assert_eq!(s.snapshot_durations.counts.iter().sum::<u64>(), 2);
    // Reopened, the closed segments are measured on disk.
    for i in 0..20 {
        db.set(format!("k{i}"), "z").unwrap();
    }
    let before = db.stats().aof_size;
    drop(db);
    let db = open(&m, &c, FsyncPolicy::Always);
    assert_eq!(db.stats().aof_size, before);
    assert_eq!(db.stats().aof_size, aof_files_size(&m));
}

/// Automatic snapshots wait for the log to outgrow the last snapshot
/// (`auto_snapshot_growth_percent`, 100 by default): a segment past
/// `auto_snapshot_aof_size` is rotated, and a snapshot is taken only once the log since
/// the last one is larger than it. With 0, every full segment is snapshotted. Either way
/// the store reopens with every write.
#[test]
fn automatic_snapshots_wait_for_the_log_to_outgrow_the_last_one() {
    use helios_atlas::{Atlas, Options};
    const LIMIT: u64 = 4096;
    let mut counts = Vec::new();
    for growth_percent in [100, 0] {
        let storage = MemStorage::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let opts = Options {
            auto_snapshot_aof_size: Some(LIMIT),
            auto_snapshot_growth_percent: growth_percent,
            maintenance_interval_ms: Some(1),
            ..options(&storage, &clock, FsyncPolicy::Everysec)
        };
        let db = Atlas::open(dir(), opts.clone()).unwrap();
        // 100 keys of ~230 bytes (a ~24 KiB state), rewritten 12 times: ~300 KiB of log.
        let mut segments_seen = 0u64;
        for round in 0..12u32 {
            for k in 0..100u32 {
                db.set(
                    format!("key:{k:03}"),
                    format!("{round:04}:{}", "v".repeat(220)),
                )
                .unwrap();
                // Let the maintenance thread handle each full segment before writing on.
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while db.stats().aof_current_size > LIMIT {
                    assert!(std::time::Instant::now() < deadline, "no rotation");
                    std::thread::sleep(Duration::from_millis(1));
                }
                segments_seen = segments_seen.max(db.stats().aof_segment_count);
            }
        }
        // Let a running snapshot finish.
        std::thread::sleep(Duration::from_millis(50));
        let s = db.stats();
        counts.push((s.snapshots_written_count, segments_seen));
        db.close().unwrap();
        drop(db);
        let db = Atlas::open(dir(), opts).unwrap();
        for k in 0..100u32 {
            let v = db.get(format!("key:{k:03}")).unwrap();
            assert!(v.starts_with(b"0011:"), "key {k}: {v:?}");
        }
        db.close().unwrap();
    }
    let ((grown, grown_segments), (every, _)) = (counts[0], counts[1]);
    // ~300 KiB of log: ~75 full segments. With growth 100 a snapshot waits for ~24 KiB of
    // log (the state's size): about a dozen.
    assert!(
        every >= 40,
        "growth 0: a snapshot per full segment ({every})"
    );
    assert!((3..=25).contains(&grown), "growth 100: {grown} snapshots");
    assert!(
        grown_segments >= 3,
        "segments rotated between snapshots ({grown_segments})"
    );
}
