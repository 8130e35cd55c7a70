//! Shared helpers of the ATLAS integration tests: stores on the fault-injecting disk with a
//! manual clock, so a test decides what the disk keeps and what time it is.
#![allow(dead_code)]

use helios_atlas::storage::MemStorage;
use helios_atlas::{Atlas, FsyncPolicy, Options};
use helios_core::ManualClock;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The data directory used on the in-memory disk.
pub fn dir() -> PathBuf {
    PathBuf::from("/data")
}

/// Options for a store on `storage` with `clock`, no background thread.
pub fn options(storage: &MemStorage, clock: &Arc<ManualClock>, fsync: FsyncPolicy) -> Options {
    Options {
        fsync,
        storage: Arc::new(storage.clone()),
        clock: clock.clone(),
        maintenance_interval_ms: None,
        auto_snapshot_aof_size: None,
        ..Options::default()
    }
}

/// Opens the store in [`dir`].
pub fn open(storage: &MemStorage, clock: &Arc<ManualClock>, fsync: FsyncPolicy) -> Atlas {
    Atlas::open(dir(), options(storage, clock, fsync)).expect("open")
}

/// Path of a file in [`dir`].
pub fn file(name: &str) -> PathBuf {
    dir().join(name)
}

/// Names of the files in `dir` on `storage`.
pub fn names(storage: &MemStorage, dir: &Path) -> Vec<String> {
    use helios_atlas::storage::Storage;
    let mut v = storage.list(dir).expect("list");
    v.sort();
    v
}
