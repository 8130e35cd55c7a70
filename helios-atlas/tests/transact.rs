//! `Atlas::transact`: read-modify-write transactions are atomic in memory and on disk (one
//! AOF record: a power loss at any point keeps all of a transaction or none of it), see
//! their own writes, and write nothing when the closure fails.

mod common;

use common::*;
use helios_atlas::storage::CrashTear;
use helios_atlas::storage::MemStorage;
use helios_atlas::{AtlasError, Expiry, FsyncPolicy, KeyTtl};
use helios_core::ManualClock;
use std::sync::Arc;

#[test]
fn reads_see_own_writes_and_commit_once() {
    let disk = MemStorage::new();
    let clock = Arc::new(ManualClock::new(1_000));
    let db = open(&disk, &clock, FsyncPolicy::Always);
    db.set("a", "1").unwrap();
    let before = db.last_seq();
    let got: Result<(Option<Vec<u8>>, bool), AtlasError> = db.transact(|tx| {
        tx.set("b", "2", Expiry::InMs(500))?;
        let b = tx.get("b").map(|v| v.to_vec());
        let old = tx.get("a").unwrap();
        tx.set("a", [&old[..], b"x"].concat(), Expiry::Never)?;
        let deleted = tx.delete("a")?;
        tx.set("a", "3", Expiry::Never)?;
        assert!(matches!(
            tx.ttl("b"),
            KeyTtl::Expires {
                remaining_ms: 500,
                ..
            }
        ));
        Ok((b, deleted))
    });
    assert_eq!(got.unwrap(), (Some(b"2".to_vec()), true));
    assert_eq!(
        db.last_seq(),
        before + 1,
        "one record for the whole transaction"
    );
    assert_eq!(db.get("a").unwrap(), "3");
    assert_eq!(db.get("b").unwrap(), "2");
}

#[test]
fn failed_closure_writes_nothing() {
    let disk = MemStorage::new();
    let clock = Arc::new(ManualClock::new(1_000));
    let db = open(&disk, &clock, FsyncPolicy::Always);
    db.set("a", "1").unwrap();
    let before = db.last_seq();
    let r: Result<(), AtlasError> = db.transact(|tx| {
        tx.set("a", "2", Expiry::Never)?;
        tx.set("c", "2", Expiry::Never)?;
        Err(AtlasError::Closed)
    });
    assert!(r.is_err());
    assert_eq!(db.last_seq(), before);
    assert_eq!(db.get("a").unwrap(), "1");
    assert!(db.get("c").is_none());
    // A refused write inside a successful transaction changes nothing by itself.
    let r: Result<bool, AtlasError> = db.transact(|tx| {
        assert!(tx.set("", "x", Expiry::Never).is_err());
        tx.set("d", "4", Expiry::Never)?;
        Ok(tx.exists("d"))
    });
    assert!(r.unwrap());
    assert_eq!(db.get("d").unwrap(), "4");
}

#[test]
fn concurrent_transactions_are_serializable() {
    let disk = MemStorage::new();
    let clock = Arc::new(ManualClock::new(1_000));
    let db = open(&disk, &clock, FsyncPolicy::Always);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let r: Result<(), AtlasError> = db.transact(|tx| {
                        let n: u64 = tx
                            .get("n")
                            .map(|v| std::str::from_utf8(&v).unwrap().parse().unwrap())
                            .unwrap_or(0);
                        tx.set("n", (n + 1).to_string(), Expiry::Never)
                    });
                    r.unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(db.get("n").unwrap(), "800", "no lost update");
    let stats = db.stats();
    assert!(stats.fsync_count <= stats.records_written_count + 2);
}

#[test]
fn view_is_read_only() {
    let disk = MemStorage::new();
    let clock = Arc::new(ManualClock::new(1_000));
    let db = open(&disk, &clock, FsyncPolicy::Always);
    db.set("a", "1").unwrap();
    db.view(|tx| {
        assert_eq!(tx.get("a").unwrap(), "1");
        assert!(tx.set("a", "2", Expiry::Never).is_err());
    });
    assert_eq!(db.get("a").unwrap(), "1");
}

#[test]
fn power_loss_keeps_all_or_nothing_of_a_transaction() {
    for tear_seed in 0..40u64 {
        let disk = MemStorage::new();
        let clock = Arc::new(ManualClock::new(1_000));
        let db = open(&disk, &clock, FsyncPolicy::No);
        // Many transactions, each moving 10 units between 20 keys: the total is invariant.
        for i in 0..20 {
            db.set(format!("k{i}"), "100").unwrap();
        }
        db.sync().unwrap();
        for step in 0..30u64 {
            let r: Result<(), AtlasError> = db.transact(move |tx| {
                for j in 0..10u64 {
                    let from = format!("k{}", (step + j) % 20);
                    let to = format!("k{}", (step * 7 + j + 1) % 20);
                    let f: i64 = std::str::from_utf8(&tx.get(&from).unwrap())
                        .unwrap()
                        .parse()
                        .unwrap();
                    tx.set(&from, (f - 1).to_string(), Expiry::Never)?;
                    let t: i64 = std::str::from_utf8(&tx.get(&to).unwrap())
                        .unwrap()
                        .parse()
                        .unwrap();
                    tx.set(&to, (t + 1).to_string(), Expiry::Never)?;
                }
                Ok(())
            });
            r.unwrap();
        }
        disk.crash(CrashTear::RandomPrefix { seed: tear_seed });
        drop(db);
        disk.restart();
        let db = open(&disk, &clock, FsyncPolicy::No);
        let total: i64 = (0..20)
            .map(|i| {
                let v = db.get(format!("k{i}")).unwrap();
                std::str::from_utf8(&v).unwrap().parse::<i64>().unwrap()
            })
            .sum();
        assert_eq!(
            total, 2000,
            "seed {tear_seed}: a transaction was half-replayed"
        );
    }
}

type BoxTx =
    Box<dyn for<'t, 'a> FnOnce(&mut helios_atlas::Tx<'t, 'a>) -> Result<u64, AtlasError> + Send>;

#[test]
fn transact_many_is_one_group_with_a_record_each() {
    for policy in [FsyncPolicy::Always, FsyncPolicy::Everysec] {
        let disk = MemStorage::new();
        let clock = Arc::new(ManualClock::new(1_000));
        let db = open(&disk, &clock, policy);
        db.set("n", "1").unwrap();
        let before = db.stats();
        let fs: Vec<BoxTx> = vec![
            // Sees nothing of the later ones, writes n = 2.
            Box::new(|tx| {
                let n: u64 = std::str::from_utf8(&tx.get("n").unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                tx.set("n", (n + 1).to_string(), Expiry::Never)?;
                Ok(n + 1)
            }),
            // Fails after a write: changes nothing, the others still apply.
            Box::new(|tx| {
                tx.set("n", "100", Expiry::Never)?;
                tx.set("lost", "x", Expiry::Never)?;
                Err(AtlasError::Closed)
            }),
            // Refused by the store (invalid key): its error, nothing written.
            Box::new(|tx| {
                tx.set("", "x", Expiry::Never)?;
                Ok(0)
            }),
            // Sees the first one's write.
            Box::new(|tx| {
                let n = tx.get("n").unwrap();
                tx.set("m", n, Expiry::Never)?;
                Ok(7)
            }),
        ];
        let got = db.transact_many(fs);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].as_ref().ok(), Some(&2));
        assert!(matches!(got[1], Err(AtlasError::Closed)), "{:?}", got[1]);
        assert!(got[2].is_err(), "{:?}", got[2]);
        assert_eq!(got[3].as_ref().ok(), Some(&7));
        assert_eq!(db.get("n").unwrap(), "2");
        assert_eq!(db.get("m").unwrap(), "2");
        assert!(db.get("lost").is_none());
        let after = db.stats();
        assert_eq!(
            after.records_written_count - before.records_written_count,
            2,
            "{policy:?}: one record per transaction that wrote"
        );
        assert_eq!(
            after.groups_committed_count - before.groups_committed_count,
            1,
            "{policy:?}: one group, one append"
        );
        if policy == FsyncPolicy::Always {
            assert_eq!(after.fsync_count - before.fsync_count, 1, "one fsync");
        }
        // Survives a reopen.
        drop(db);
        let db = open(&disk, &clock, policy);
        assert_eq!(db.get("n").unwrap(), "2");
        assert_eq!(db.get("m").unwrap(), "2");
        assert!(db.transact_many(Vec::<BoxTx>::new()).is_empty());
    }
}

#[test]
fn transact_many_under_contention_answers_every_transaction() {
    let disk = MemStorage::new();
    let clock = Arc::new(ManualClock::new(1_000));
    let db = open(&disk, &clock, FsyncPolicy::Always);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                for round in 0..50 {
                    let fs: Vec<BoxTx> = (0..8)
                        .map(|i| {
                            let key = format!("k{t}-{round}-{i}");
                            Box::new(move |tx: &mut helios_atlas::Tx<'_, '_>| {
                                tx.set(&key, "v", Expiry::Never)?;
                                let c = tx.get("count").map_or(0, |v| {
                                    std::str::from_utf8(&v).unwrap().parse::<u64>().unwrap()
                                });
                                tx.set("count", (c + 1).to_string(), Expiry::Never)?;
                                Ok(c + 1)
                            }) as BoxTx
                        })
                        .collect();
                    for r in db.transact_many(fs) {
                        r.unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(db.get("count").unwrap(), "1600");
    assert_eq!(db.key_count(), 1601);
}
