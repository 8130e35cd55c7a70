//! `Tx::set_range` (Redis's SETRANGE; atlasd's SETBIT and BITFIELD write through it): the
//! AOF logs the patch (`{"op":"setrange",...}`), never the whole value, and replaying it
//! (reopen from the AOF, or a snapshot built by log compaction, then the AOF) gives the
//! same values as the store had in memory. Checked against a plain model with random
//! writes, expiries and clock moves (proptest), and on a large value, whose record stays
//! small.

mod common;

use common::*;
use helios_atlas::storage::MemStorage;
use helios_atlas::{Atlas, AtlasError, Expiry, FsyncPolicy};
use helios_core::ManualClock;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The model: key -> (value, expiry).
type Model = BTreeMap<String, (Vec<u8>, Option<u64>)>;

fn model_live(m: &Model, key: &str, now: u64) -> Option<Vec<u8>> {
    m.get(key)
        .filter(|(_, at)| at.is_none_or(|at| at > now))
        .map(|(v, _)| v.clone())
}

#[derive(Debug, Clone)]
enum Step {
    Set(u8, Vec<u8>, Option<u64>),
    Range(u8, u16, Vec<u8>),
    Del(u8),
    Advance(u64),
    Snapshot,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (0u8..4, proptest::collection::vec(any::<u8>(), 0..20), proptest::option::of(1u64..50))
            .prop_map(|(k, v, x)| Step::Set(k, v, x)),
        3 => (0u8..4, 0u16..300, proptest::collection::vec(any::<u8>(), 0..12))
            .prop_map(|(k, o, b)| Step::Range(k, o, b)),
        1 => (0u8..4).prop_map(Step::Del),
        2 => (0u64..40).prop_map(Step::Advance),
        1 => Just(Step::Snapshot),
    ]
}

fn check_same(db: &Atlas, m: &Model, now: u64) {
    for k in 0u8..4 {
        let key = format!("k{k}");
        assert_eq!(
            db.get(&key).map(|v| v.to_vec()),
            model_live(m, &key, now),
            "{key}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn range_writes_replay_to_the_same_values(steps in proptest::collection::vec(step(), 1..40)) {
        let disk = MemStorage::new();
        let clock = Arc::new(ManualClock::new(1_000));
        let db = open(&disk, &clock, FsyncPolicy::Always);
        let mut m = Model::new();
        for s in steps {
            let now = helios_core::Clock::now_ms(&*clock);
            match s {
                Step::Set(k, v, x) => {
                    let key = format!("k{k}");
                    let at = x.map(|x| now + x);
                    let (k2, v2) = (key.clone(), v.clone());
                    db.transact(move |tx| tx.set(&k2, v2, at.map_or(Expiry::Never, Expiry::AtMs))).unwrap();
                    m.insert(key, (v, at));
                }
                Step::Range(k, o, b) => {
                    let key = format!("k{k}");
                    let (k2, b2) = (key.clone(), b.clone());
                    let len = db.transact(move |tx| tx.set_range(&k2, u64::from(o), &b2)).unwrap();
                    let old = model_live(&m, &key, now);
                    if !b.is_empty() {
                        let at = if old.is_some() { m[&key].1 } else { None };
                        let mut v = old.unwrap_or_default();
                        let end = usize::from(o) + b.len();
                        if v.len() < end {
                            v.resize(end, 0);
                        }
                        v[usize::from(o)..end].copy_from_slice(&b);
                        m.insert(key.clone(), (v, at));
                    }
                    prop_assert_eq!(len, model_live(&m, &key, now).map_or(0, |v| v.len() as u64));
                }
                Step::Del(k) => {
                    let key = format!("k{k}");
                    let k2 = key.clone();
                    db.transact(move |tx| tx.delete(&k2).map(|_| ())).unwrap();
                    m.remove(&key);
                }
                Step::Advance(ms) => clock.advance_ms(ms),
                Step::Snapshot => {
                    db.snapshot().unwrap();
                }
            }
            check_same(&db, &m, helios_core::Clock::now_ms(&*clock));
        }
        db.close().unwrap();
        drop(db);
        // Replayed from the newest snapshot and the AOF after it.
        let db = open(&disk, &clock, FsyncPolicy::Always);
        check_same(&db, &m, helios_core::Clock::now_ms(&*clock));
        db.close().unwrap();
    }
}

#[test]
fn a_range_write_of_a_large_value_logs_the_patch_only() {
    let disk = MemStorage::new();
    let clock = Arc::new(ManualClock::new(1_000));
    let db = open(&disk, &clock, FsyncPolicy::Always);
    let big = vec![b'x'; 4 << 20];
    db.transact(move |tx| tx.set("big", big, Expiry::InMs(1_000_000)))
        .unwrap();
    let before = db.stats().aof_written_size;
    for i in 0..100u64 {
        db.transact(move |tx| tx.set_range("big", i * 4096, b"AB").map(|_| ()))
            .unwrap();
    }
    let grew = db.stats().aof_written_size - before;
    assert!(
        grew < 100 * 200,
        "100 range writes grew the AOF by {grew} bytes"
    );
    // The TTL stayed.
    assert!(matches!(
        db.ttl("big"),
        helios_atlas::KeyTtl::Expires { .. }
    ));
    // Past the largest value: refused, nothing written.
    let r = db.transact(|tx| tx.set_range("big", 1 << 40, b"A").map(|_| ()));
    assert!(matches!(r, Err(AtlasError::ValueTooLarge { .. })), "{r:?}");
    db.close().unwrap();
    drop(db);
    let db = open(&disk, &clock, FsyncPolicy::Always);
    let v = db.get("big").unwrap();
    assert_eq!(v.len(), 4 << 20);
    assert_eq!(&v[4096 * 99..4096 * 99 + 3], b"ABx");
    db.close().unwrap();
}

/// Shows one commit's range writes cannot build more than `GROUP_PATCHED_SIZE_MAX` bytes of
/// values: each 50-byte SETRANGE far into a key builds the whole zero-padded value, so the
/// fifth of 256 MiB is refused (and the transaction with it), not allocated.
#[test]
fn range_writes_of_one_commit_build_a_bounded_size() {
    use helios_atlas::limits::{GROUP_PATCHED_SIZE_MAX, VALUE_SIZE_MAX};
    let disk = MemStorage::new();
    let clock = Arc::new(ManualClock::new(1_000));
    let db = open(&disk, &clock, FsyncPolicy::No);
    let per = VALUE_SIZE_MAX;
    let fits = GROUP_PATCHED_SIZE_MAX / per;
    let r = db.transact(move |tx| {
        for i in 0..=fits {
            tx.set_range(format!("k{i}"), per - 1, b"x")?;
        }
        Ok::<(), AtlasError>(())
    });
    assert!(matches!(r, Err(AtlasError::BatchTooLarge { .. })), "{r:?}");
    assert!(db.get("k0").is_none(), "the transaction wrote nothing");
    // Within the bound, as one transaction: fine.
    db.transact(|tx| tx.set_range("small", 1 << 20, b"x").map(|_| ()))
        .unwrap();
    assert_eq!(db.get("small").unwrap().len(), (1 << 20) + 1);
    db.close().unwrap();
}
