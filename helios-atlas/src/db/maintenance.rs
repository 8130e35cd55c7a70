//! Periodic work and the end of an [`Atlas`](super::Atlas): `tick` (the everysec fsync,
//! active expiry), the maintenance thread that calls it and starts automatic snapshots,
//! and `close` (also run when the last handle drops).
//!
//! Invariant: the thread holds the store only while it works, so dropping the last
//! handle closes the store.

use super::*;

impl Inner {
    pub(super) fn tick(&self, now_ms: u64) -> Result<u64> {
        if self.options.fsync == FsyncPolicy::Everysec && self.dirty.load(Ordering::Acquire) {
            let last = self.last_fsync_ms.load(Ordering::Relaxed);
            if now_ms.saturating_sub(last) >= EVERYSEC_INTERVAL_MS || now_ms < last {
                self.check_writable()?;
                self.last_fsync_ms.store(now_ms, Ordering::Relaxed);
                self.sync_now()?;
            }
        }
        let keys = self.keyspace.read().expired_keys(
            now_ms,
            EXPIRE_PER_TICK_COUNT_MAX,
            EXPIRE_PER_TICK_SIZE_MAX,
        );
        if keys.is_empty() {
            return Ok(0);
        }
        match self.submit(Command::ExpireDue { keys, now_ms })? {
            Reply::Count(n) => Ok(n),
            other => unreachable_reply(other),
        }
    }

    pub(super) fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        {
            *self.maintenance.stop.lock() = true;
            self.maintenance.cv.notify_all();
        }
        let handle = self.maintenance.handle.lock().take();
        if let Some(h) = handle
            && h.thread().id() != std::thread::current().id()
        {
            let _ = h.join();
        }
        // Let a running snapshot finish (it refuses to start once closed).
        drop(self.snapshot_lock.lock());
        // Wait for an in-flight group, then make everything written durable.
        let w = self.writer.lock();
        let r = if self.poisoned.load(Ordering::Acquire) {
            // Writes acknowledged before the failure may not be durable: say so.
            Err(AtlasError::PreviousIo {
                cause: self.poison_cause.lock().clone().unwrap_or_default(),
            })
        } else {
            let path = self.dir.join(aof::segment_name(w.segment_start));
            w.file.sync().map_err(io_err(&path))
        };
        drop(w);
        self.feed.close();
        if let Err(e @ AtlasError::Io { .. }) = &r {
            self.poison(e);
        }
        tracing::info!(dir = %self.dir.display(), "ATLAS closed");
        r
    }

    pub(super) fn maintenance_step(self: &Arc<Self>) {
        if self.check_writable().is_err() {
            return;
        }
        let now = self.clock.now_ms();
        match self.tick(now) {
            Ok(_) | Err(AtlasError::Closed) => {}
            Err(e) => tracing::warn!(error = %e, "maintenance tick failed"),
        }
        if let Some(limit) = self.options.auto_snapshot_aof_size {
            let (segment_size, log_size, base) = {
                let w = self.writer.lock();
                let base = w.snapshots.last().copied();
                let closed: u64 = w
                    .closed_sizes
                    .range(base.map_or(0, |b| b + 1)..)
                    .map(|(_, size)| size)
                    .sum();
                (w.segment_size, closed + w.segment_size, base)
            };
            if segment_size <= limit {
                return;
            }
            // Read only when the segment is full: once per `limit` bytes of log.
            let snapshot_size = base.map_or(0, |seq| {
                let path = self.dir.join(snapshot::snapshot_name(seq));
                self.storage.file_size(&path).unwrap_or(0)
            });
            let step = auto_step(
                log_size,
                snapshot_size,
                limit,
                self.options.auto_snapshot_growth_percent,
            );
            // While a snapshot runs (or waits behind a backup), full segments rotate too.
            if step == AutoStep::Rotate || self.snapshot_running.load(Ordering::Acquire) {
                // The segment stays bounded (the feed reads segments whole) while the log
                // grows toward the snapshot's size.
                let mut w = self.writer.lock();
                if w.segment_size > limit
                    && let Err(e) = self.rotate(&mut w)
                {
                    tracing::error!(error = %e, "automatic AOF rotation failed");
                }
                return;
            }
            // On its own thread: a snapshot of a large keyspace takes seconds, and the
            // everysec fsyncs and active expiry of this thread must go on meanwhile.
            if !self.snapshot_running.swap(true, Ordering::AcqRel) {
                let inner = self.clone();
                let spawned = std::thread::Builder::new()
                    .name("atlas-snapshot".into())
                    .spawn(move || {
                        if let Err(e) = inner.snapshot(false) {
                            tracing::error!(error = %e, "automatic snapshot failed");
                        }
                        inner.snapshot_running.store(false, Ordering::Release);
                    });
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start the snapshot thread");
                    self.snapshot_running.store(false, Ordering::Release);
                }
            }
        }
    }
}

/// What the maintenance thread does with a full AOF segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AutoStep {
    /// Start a new segment only.
    Rotate,
    /// Take a snapshot (which starts a new segment).
    Snapshot,
}

/// The step for a full segment: a snapshot once the log since the last one (`log_size`,
/// every segment after it) is past `limit` and past `growth_percent` of that snapshot's
/// size (0 when there is none), a rotation before.
pub(super) fn auto_step(
    log_size: u64,
    snapshot_size: u64,
    limit: u64,
    growth_percent: u64,
) -> AutoStep {
    let wanted = u128::from(snapshot_size) * u128::from(growth_percent) / 100;
    if u128::from(log_size) > wanted.max(u128::from(limit)) {
        AutoStep::Snapshot
    } else {
        AutoStep::Rotate
    }
}

pub(super) fn maintenance_loop(weak: Weak<Inner>, shared: Arc<Maintenance>, interval_ms: u64) {
    loop {
        {
            let mut stop = shared.stop.lock();
            if *stop {
                return;
            }
            shared
                .cv
                .wait_for(&mut stop, Duration::from_millis(interval_ms));
            if *stop {
                return;
            }
        }
        // Hold the store only while working, so dropping the last handle closes it.
        let Some(inner) = weak.upgrade() else { return };
        inner.maintenance_step();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::Acquire)
            && let Err(e) = self.close()
        {
            tracing::warn!(error = %e, "closing ATLAS on drop failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{AutoStep, auto_step};
    use crate::storage::MemStorage;
    use crate::{Atlas, Options};
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    /// A full segment while a snapshot runs (or waits behind a backup) is rotated, so
    /// segments stay bounded; once none runs, the next full one is snapshotted.
    #[test]
    fn a_full_segment_rotates_while_a_snapshot_runs() {
        let db = Atlas::open(
            "/m",
            Options {
                auto_snapshot_aof_size: Some(4096),
                auto_snapshot_growth_percent: 0,
                maintenance_interval_ms: None,
                storage: Arc::new(MemStorage::new()),
                ..Options::default()
            },
        )
        .unwrap();
        let fill = |round: u32| {
            for k in 0..20 {
                db.set(format!("k{k}"), format!("{round}{}", "v".repeat(300)))
                    .unwrap();
            }
        };
        fill(0);
        assert!(db.stats().aof_current_size > 4096);
        db.inner.snapshot_running.store(true, Ordering::Release);
        db.inner.maintenance_step();
        let s = db.stats();
        assert_eq!((s.aof_segment_count, s.snapshots_written_count), (2, 0));
        assert!(s.aof_current_size < 4096, "rotated: {}", s.aof_current_size);

        db.inner.snapshot_running.store(false, Ordering::Release);
        fill(1);
        db.inner.maintenance_step();
        // The snapshot runs on its own thread: up to 10 s of 1 ms naps.
        let snapshotted = (0..10_000).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(1));
            db.stats().snapshots_written_count == 1
        });
        assert!(snapshotted, "no snapshot");
    }

    #[test]
    fn a_full_segment_snapshots_once_the_log_outgrows_the_snapshot() {
        use AutoStep::{Rotate, Snapshot};
        const MIB: u64 = 1 << 20;
        // (log since the last snapshot, its size, the segment limit, growth %, step)
        let cases = [
            // No snapshot yet, or a small one: every full segment snapshots (the old rule).
            (65 * MIB, 0, 64 * MIB, 100, Snapshot),
            (65 * MIB, 10 * MIB, 64 * MIB, 100, Snapshot),
            // A 1 GiB snapshot: segments rotate until the log since it passes 1 GiB.
            (65 * MIB, 1024 * MIB, 64 * MIB, 100, Rotate),
            (1024 * MIB, 1024 * MIB, 64 * MIB, 100, Rotate),
            (1025 * MIB, 1024 * MIB, 64 * MIB, 100, Snapshot),
            // 50%: half the snapshot's size; 0: the old rule whatever the size.
            (513 * MIB, 1024 * MIB, 64 * MIB, 50, Snapshot),
            (65 * MIB, 1024 * MIB, 64 * MIB, 0, Snapshot),
            // No overflow at the extremes.
            (u64::MAX, u64::MAX, 1, u64::MAX, Rotate),
            (u64::MAX, 1, 1, 100, Snapshot),
        ];
        for (log, snapshot, limit, growth, step) in cases {
            let got = auto_step(log, snapshot, limit, growth);
            assert_eq!(got, step, "{log} {snapshot} {limit} {growth}");
        }
    }
}
