//! Online backups (issue 18, point 7): a point-in-time copy taken while writers run,
//! verified against its manifest, restored into a new directory that opens with every
//! write acknowledged before the backup began, and no hole after it.

mod common;

use common::*;
use helios_atlas::storage::{FsStorage, MemStorage, Storage};
use helios_atlas::{Atlas, AtlasError, FsyncPolicy, MANIFEST_NAME, Options};
use helios_core::ManualClock;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

fn fs_options(fsync: FsyncPolicy) -> Options {
    Options {
        fsync,
        // Small segments and snapshots now and then, so a backup spans several files.
        auto_snapshot_aof_size: Some(64 << 10),
        ..Options::default()
    }
}

/// Writer `t`'s keys are `w{t}-{i}` for i = 0, 1, 2, ... in order.
fn key(t: usize, i: u64) -> String {
    format!("w{t}-{i:06}")
}

#[test]
fn a_backup_under_concurrent_writers_restores_every_write_acknowledged_before_it() {
    for fsync in [FsyncPolicy::Always, FsyncPolicy::Everysec] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let db = Atlas::open(&data, fs_options(fsync)).unwrap();
        const WRITERS: usize = 3;
        let acked: Arc<Vec<AtomicU64>> =
            Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..WRITERS)
            .map(|t| {
                let (db, acked, stop) = (db.clone(), acked.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        db.set(key(t, i), vec![b'v'; 200]).unwrap();
                        i += 1;
                        acked[t].store(i, Ordering::Release);
                    }
                })
            })
            .collect();
        // Let the writers get going (and a snapshot or two happen), then back up.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while acked.iter().map(|a| a.load(Ordering::Acquire)).sum::<u64>() < 3000
            || db.stats().snapshots_written_count == 0
        {
            assert!(std::time::Instant::now() < deadline, "no snapshot in 20 s");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let before: Vec<u64> = acked.iter().map(|a| a.load(Ordering::Acquire)).collect();
        let out = tmp.path().join("backup");
        let manifest = db.backup(&out).unwrap();
        let after: Vec<u64> = acked.iter().map(|a| a.load(Ordering::Acquire)).collect();
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.join().unwrap();
        }
        assert!(manifest.files.len() >= 2, "{manifest:?}");
        assert!(
            after.iter().sum::<u64>() > before.iter().sum::<u64>(),
            "writers went on during the backup"
        );
        assert_eq!(
            helios_atlas::verify_backup(&FsStorage, &out).unwrap(),
            manifest
        );

        let restored = tmp.path().join("restored");
        helios_atlas::restore_backup(&FsStorage, &out, &restored).unwrap();
        let r = Atlas::open(&restored, fs_options(fsync)).unwrap();
        assert_eq!(r.last_seq(), manifest.last_seq, "{fsync:?}");
        for t in 0..WRITERS {
            // Every write acknowledged before the backup began; then a prefix (a point in
            // time: no later write without the ones before it), within what was acked
            // by the time it returned.
            let mut n = 0;
            while r.exists(key(t, n)) {
                n += 1;
            }
            assert!(n >= before[t], "{fsync:?} writer {t}: {n} < {}", before[t]);
            assert!(n <= after[t], "{fsync:?} writer {t}: {n} > {}", after[t]);
            assert!(
                !r.exists(key(t, n + 1)),
                "{fsync:?} writer {t}: a hole at {n}"
            );
        }
        assert_eq!(
            r.key_count() as u64,
            manifest.last_seq,
            "one record per write"
        );
    }
}

#[test]
fn a_damaged_or_unfinished_backup_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let db = Atlas::open(&data, fs_options(FsyncPolicy::Always)).unwrap();
    for i in 0..500 {
        db.set(format!("k{i}"), vec![b'x'; 300]).unwrap();
    }
    let out = tmp.path().join("backup");
    let manifest = db.backup(&out).unwrap();
    // Writes after the backup are not in it.
    db.set("later", "1").unwrap();
    // The target must be empty.
    match db.backup(&out) {
        Err(AtlasError::BackupInvalid { dir, reason }) => {
            assert_eq!(dir, out);
            assert!(reason.contains("not empty"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // One flipped byte in one file: refused, naming the file.
    let victim = out.join(&manifest.files.last().unwrap().name);
    let mut bytes = std::fs::read(&victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&victim, &bytes).unwrap();
    match helios_atlas::verify_backup(&FsStorage, &out) {
        Err(AtlasError::Corrupt { file, reason, .. }) => {
            assert_eq!(file, victim);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let restored = tmp.path().join("restored");
    assert!(helios_atlas::restore_backup(&FsStorage, &out, &restored).is_err());
    assert!(
        std::fs::read_dir(&restored).map_or(true, |mut d| d.next().is_none()),
        "nothing restored from a damaged backup"
    );
    // Without its manifest (a backup that did not finish): refused.
    bytes[at] ^= 0x20;
    std::fs::write(&victim, &bytes).unwrap();
    std::fs::remove_file(out.join(MANIFEST_NAME)).unwrap();
    match helios_atlas::verify_backup(&FsStorage, &out) {
        Err(AtlasError::BackupInvalid { reason, .. }) => {
            assert!(reason.contains(MANIFEST_NAME), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_backup_on_the_model_disk_is_fsynced_and_survives_a_power_loss() {
    let m = MemStorage::with_log_padding(4096);
    let clock = Arc::new(ManualClock::new(1_000_000));
    let db = open(&m, &clock, FsyncPolicy::Always);
    for i in 0..50 {
        db.set(format!("k{i}"), "v").unwrap();
    }
    db.snapshot().unwrap();
    for i in 50..80 {
        db.set(format!("k{i}"), "v").unwrap();
    }
    let out = Path::new("/backup");
    let manifest = db.backup(out).unwrap();
    assert_eq!(manifest.last_seq, 80);
    // Only the snapshot and the segments after it.
    assert!(
        manifest.files[0].name.starts_with("snapshot-"),
        "{manifest:?}"
    );
    // Power loss right after: the backup, the directory's own name included (the model
    // loses a new directory until its parent is fsynced), was made durable before
    // `backup` returned.
    m.crash(helios_atlas::storage::CrashTear::DropUnsynced);
    drop(db);
    m.restart();
    helios_atlas::verify_backup(&m, out).unwrap();
    // The same for a restore, into a directory two levels deep.
    helios_atlas::restore_backup(&m, out, Path::new("/restored")).unwrap();
    helios_atlas::restore_backup(&m, out, Path::new("/deep/restored")).unwrap();
    m.crash(helios_atlas::storage::CrashTear::DropUnsynced);
    m.restart();
    for to in ["/restored", "/deep/restored"] {
        assert_eq!(names(&m, Path::new(to)).len(), manifest.files.len(), "{to}");
    }
    let r = Atlas::open(
        "/restored",
        Options {
            storage: Arc::new(m.clone()),
            ..options(&m, &clock, FsyncPolicy::Always)
        },
    )
    .unwrap();
    assert_eq!((r.key_count(), r.last_seq()), (80, 80));
    assert!(m.list(out).unwrap().contains(&MANIFEST_NAME.to_owned()));
}
