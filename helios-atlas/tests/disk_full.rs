//! Disk full on a real file system (issue 18, point 9): a small tmpfs (`mount -t tmpfs -o
//! size=...`, which needs root) filled by the store until a write fails. The model's
//! ENOSPC (`MemStorage::set_capacity`) is covered in `api.rs`; this one checks that the
//! real file system's error takes the same path.
//!
//! Ignored by default (it mounts a file system): `scripts/disk_full.sh` runs it, and says
//! so plainly when the machine does not allow the mount.

use helios_atlas::{Atlas, AtlasError, FsyncPolicy, Options};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for the test's lifetime; unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let parent = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir = parent.path().join("fs");
        std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            dir,
            _parent: parent,
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

fn options() -> Options {
    Options {
        fsync: FsyncPolicy::Always,
        auto_snapshot_aof_size: None,
        maintenance_interval_ms: None,
        ..Options::default()
    }
}

fn value(i: usize) -> Vec<u8> {
    format!("{i:08}").repeat(512).into_bytes()
}

fn fill(path: &Path, size: usize) {
    std::fs::write(path, vec![0u8; size]).expect("filler");
}

#[test]
#[ignore = "mounts a tmpfs (root): scripts/disk_full.sh"]
fn a_full_file_system_fails_writes_keeps_reads_and_loses_nothing_acknowledged() {
    let fs = match Tmpfs::mount("3m") {
        Ok(fs) => fs,
        Err(e) => panic!("cannot run here: {e} (scripts/disk_full.sh checks this first)"),
    };
    // Space to free later, taken before the store starts.
    let filler = fs.dir.join("filler");
    fill(&filler, 512 << 10);
    let data = fs.dir.join("data");
    let db = Atlas::open(&data, options()).expect("open");
    let mut acked = 0usize;
    let err = loop {
        match db.set(format!("k{acked:06}"), value(acked)) {
            Ok(()) => acked += 1,
            Err(e) => break e,
        }
        assert!(acked < 10_000, "3 MiB never filled up");
    };
    assert!(acked > 50, "only {acked} writes fit");
    match &err {
        AtlasError::Io { source, path } => {
            assert_eq!(
                source.kind(),
                std::io::ErrorKind::StorageFull,
                "{path:?}: {source}"
            );
            assert!(err.to_string().contains("No space left"), "{err}");
        }
        other => panic!("not an I/O error: {other}"),
    }
    // Fail-stop: later writes are refused naming the cause; reads go on.
    match db.set("later", "1") {
        Err(AtlasError::PreviousIo { cause }) => assert!(cause.contains("No space"), "{cause}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(db.get("k000000").as_deref(), Some(&value(0)[..]));
    assert_eq!(db.key_count(), acked as u64);
    drop(db);

    // Space freed, store reopened: every acknowledged write is there, and writes work.
    std::fs::remove_file(&filler).expect("free space");
    let db = Atlas::open(&data, options()).expect("reopen after freeing space");
    for i in 0..acked {
        assert_eq!(
            db.get(format!("k{i:06}")).as_deref(),
            Some(&value(i)[..]),
            "k{i:06} was acknowledged"
        );
    }
    db.set("after", "1").expect("writes work again");
    db.close().expect("close");
}
