//! [`FailStopFile`]: one fsync at a time per file, and the first failure is final.
//!
//! Linux reports a writeback error to an `fsync` once per open file description, then
//! marks the pages clean: with two fsyncs of one file in flight, one may see `EIO` and
//! the other 0, although the data of both never reached the disk; and a retried fsync
//! succeeds without writing anything (PostgreSQL's "fsyncgate"). So a file that failed an
//! append or a sync is failed for good: every later append and sync returns the first
//! error, and syncs are serialized so that none can overtake a failing one and report
//! success. The store is fail-stop until it is reopened (recovery then trusts only what
//! it reads back).
//!
//! Invariant: once `failed` is set it never changes, and it is set before the lock of
//! the sync that failed is released.

use super::StorageFile;
use parking_lot::Mutex;
use std::io;
use std::sync::{Arc, OnceLock};

/// Serializes syncs and remembers the first failure (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct SyncGate {
    lock: Mutex<()>,
    failed: OnceLock<(io::ErrorKind, String)>,
}

impl SyncGate {
    /// The first failure, if any, as an error.
    pub(crate) fn check(&self) -> io::Result<()> {
        match self.failed.get() {
            None => Ok(()),
            Some((kind, msg)) => Err(io::Error::new(
                *kind,
                format!("{msg} (an earlier write or fsync of this file failed; reopen the store)"),
            )),
        }
    }

    /// Records `e` as the failure if none was recorded, and returns it.
    pub(crate) fn fail(&self, e: io::Error) -> io::Error {
        self.failed.get_or_init(|| (e.kind(), e.to_string()));
        e
    }

    /// Runs `sync` alone: no other sync of this gate runs meanwhile, and none runs after
    /// one failed.
    pub(crate) fn sync(&self, sync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let _one = self.lock.lock();
        self.check()?;
        sync().map_err(|e| self.fail(e))
    }
}

/// A [`StorageFile`] that is fail-stop (see the module docs). The store wraps every log
/// file it appends to in one, whatever the [`Storage`](super::Storage).
#[derive(Debug)]
pub struct FailStopFile {
    inner: Arc<dyn StorageFile>,
    gate: SyncGate,
}

impl FailStopFile {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn StorageFile>) -> Self {
        FailStopFile {
            inner,
            gate: SyncGate::default(),
        }
    }
}

impl StorageFile for FailStopFile {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        self.gate.check()?;
        self.inner.append(buf).map_err(|e| self.gate.fail(e))
    }

    fn sync(&self) -> io::Result<()> {
        self.gate.sync(|| self.inner.sync())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// A file whose syncs fail while `failing` is set, and which counts how many run at
    /// once.
    #[derive(Debug, Default)]
    struct Flaky {
        failing: std::sync::atomic::AtomicBool,
        running: AtomicU32,
        running_max: AtomicU32,
        syncs: AtomicU32,
    }

    impl StorageFile for Flaky {
        fn append(&self, _: &[u8]) -> io::Result<()> {
            Ok(())
        }
        fn sync(&self) -> io::Result<()> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.running_max.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
            self.running.fetch_sub(1, Ordering::SeqCst);
            self.syncs.fetch_add(1, Ordering::SeqCst);
            if self.failing.swap(false, Ordering::SeqCst) {
                Err(io::Error::other("EIO"))
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn the_first_failure_is_final_though_the_file_would_sync_again() {
        let inner = Arc::new(Flaky::default());
        let f = FailStopFile::new(inner.clone());
        f.sync().unwrap();
        inner.failing.store(true, Ordering::SeqCst);
        let first = f.sync().unwrap_err();
        assert_eq!(first.to_string(), "EIO");
        // The inner file would now report success (Linux after a failed writeback).
        let again = f.sync().unwrap_err();
        assert!(again.to_string().starts_with("EIO"), "{again}");
        assert!(f.append(b"x").is_err());
        assert_eq!(
            inner.syncs.load(Ordering::SeqCst),
            2,
            "no retry reached the file"
        );
    }

    #[test]
    fn syncs_of_one_file_never_overlap_and_none_succeeds_after_a_failure() {
        let inner = Arc::new(Flaky::default());
        let f = Arc::new(FailStopFile::new(inner.clone()));
        inner.failing.store(true, Ordering::SeqCst);
        let results: Vec<io::Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(|| f.sync())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(inner.running_max.load(Ordering::SeqCst), 1);
        // Exactly one sync reached the failing file, and it failed: every other one,
        // before or after, got its error or ran before it.
        assert_eq!(inner.syncs.load(Ordering::SeqCst), 1);
        assert!(results.iter().all(|r| r.is_err()), "{results:?}");
    }

    #[test]
    fn a_failed_append_fails_the_file() {
        #[derive(Debug)]
        struct Full;
        impl StorageFile for Full {
            fn append(&self, _: &[u8]) -> io::Result<()> {
                Err(io::Error::new(io::ErrorKind::StorageFull, "no space"))
            }
            fn sync(&self) -> io::Result<()> {
                Ok(())
            }
        }
        let f = FailStopFile::new(Arc::new(Full));
        assert!(f.append(b"x").is_err());
        let e = f.sync().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
    }
}
