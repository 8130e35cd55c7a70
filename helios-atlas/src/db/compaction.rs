//! Snapshots and log compaction of [`Atlas`](super::Atlas): rotating the AOF, building a
//! snapshot off to the side from the previous one and the closed segments, removing what
//! the retention no longer needs, and online backups of the closed files.
//!
//! Invariant: nothing is removed before the snapshot that replaces it is durable, and
//! `rotate` re-checks writability under the writer lock.

use super::*;

impl Inner {
    /// Fsyncs the current segment and starts a new one at the next sequence number.
    /// Returns the last sequence number of the closed segments.
    pub(super) fn rotate(&self, writer: &mut Writer) -> Result<u64> {
        // Checked under the writer lock: a sync that failed on another thread since the
        // caller last checked stops the rotation (and the snapshot, and its compaction).
        self.check_writable()?;
        // Async writers hand their commits to a pool meanwhile (`writes_may_wait`).
        self.rotating.store(true, Ordering::Release);
        let r = self.rotate_locked(writer);
        self.rotating.store(false, Ordering::Release);
        r
    }

    fn rotate_locked(&self, writer: &mut Writer) -> Result<u64> {
        let path = self.dir.join(aof::segment_name(writer.segment_start));
        let started_ms = self.clock.now_ms();
        let r = (|| {
            writer.file.sync().map_err(io_err(&path))?;
            self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
            self.synced_through(started_ms);
            create_segment(&*self.storage, &self.dir, writer.next_seq)
        })();
        let (file, size) = match r {
            Ok(x) => x,
            Err(e) => {
                // A half-made rotation leaves the directory in a state only a reopen
                // sorts out: fail-stop.
                self.poison(&e);
                return Err(e);
            }
        };
        writer.file = file;
        let closed = (writer.segment_start, writer.segment_size);
        writer.closed_sizes.insert(closed.0, closed.1);
        writer.segment_start = writer.next_seq;
        writer.segment_size = size;
        self.dirty.store(false, Ordering::Release);
        self.feed.segments.lock().push(writer.next_seq);
        Ok(writer.next_seq - 1)
    }

    pub(super) fn snapshot(&self, rewrite: bool) -> Result<Option<u64>> {
        let _g = self.snapshot_lock.lock();
        self.check_writable()?;
        let started_ms = self.clock.now_ms();
        let (upto_seq, base) = {
            let mut w = self.writer.lock();
            let last = w.next_seq - 1;
            let base = w.snapshots.last().copied();
            if last == 0 {
                return Ok(None);
            }
            if base == Some(last) {
                // Nothing new since the last snapshot; a rewrite still compacts.
                drop(w);
                if rewrite {
                    self.compact(last, 1)?;
                }
                return Ok(Some(last));
            }
            if w.segment_start <= last {
                self.rotate(&mut w)?;
            }
            (last, base)
        };
        // Built off to the side from the files: the live keyspace is not touched.
        let ks = self.build_state(base, upto_seq)?;
        let key_count = ks.key_count();
        let r = snapshot::write(
            &*self.storage,
            &self.dir,
            upto_seq,
            &ks.into_snapshot_entries(),
        );
        if let Err(e) = r {
            // The AOF still holds everything; a failed snapshot loses nothing, but a
            // failed fsync means the disk can't be trusted: fail-stop.
            if matches!(e, AtlasError::Io { .. }) {
                self.poison(&e);
            }
            return Err(e);
        }
        self.writer.lock().snapshots.push(upto_seq);
        self.counters.snapshots.fetch_add(1, Ordering::Relaxed);
        let took_ms = self.clock.now_ms().saturating_sub(started_ms);
        self.counters.snapshot_ms.store(took_ms, Ordering::Relaxed);
        self.counters.snapshot_durations.observe(took_ms);
        tracing::info!(seq = upto_seq, keys = key_count, "snapshot written");
        let keep = if rewrite {
            1
        } else {
            self.options.snapshots_retained_count
        };
        self.compact(upto_seq, keep)?;
        Ok(Some(upto_seq))
    }

    pub(super) fn backup(&self, to: &Path) -> Result<BackupManifest> {
        // Held for the whole copy: no compaction removes a file being copied, and no
        // snapshot rotates meanwhile.
        let _g = self.snapshot_lock.lock();
        self.check_writable()?;
        if to == self.dir {
            return Err(AtlasError::BackupInvalid {
                dir: to.to_path_buf(),
                reason: "is the store's own data directory".to_owned(),
            });
        }
        let (last_seq, base, segments) = {
            let mut w = self.writer.lock();
            let last = w.next_seq - 1;
            if w.segment_start <= last {
                // Every record up to `last` is now in a closed, fsynced segment.
                self.rotate(&mut w)?;
            }
            (
                last,
                w.snapshots.last().copied(),
                self.feed.segments.lock().clone(),
            )
        };
        let started_ms = self.clock.now_ms();
        let manifest = backup::write(
            &*self.storage,
            &self.dir,
            to,
            base,
            &segments,
            last_seq,
            started_ms,
        )?;
        tracing::info!(
            to = %to.display(),
            last_seq,
            files = manifest.files.len(),
            "backup written"
        );
        Ok(manifest)
    }

    /// Rebuilds the state at `upto_seq` from snapshot `base` and the closed segments.
    pub(super) fn build_state(&self, base: Option<u64>, upto_seq: u64) -> Result<ReplayState> {
        let mut ks = match base {
            Some(seq) => {
                let path = self.dir.join(snapshot::snapshot_name(seq));
                let bytes = self.storage.read(&path).map_err(io_err(&path))?;
                let (_, entries) = snapshot::decode(&bytes, &path)?;
                ReplayState::from_snapshot(seq, entries)
            }
            None => ReplayState::default(),
        };
        let segments: Vec<u64> = self.feed.segments.lock().clone();
        for (i, &start) in segments.iter().enumerate() {
            if start > upto_seq {
                break;
            }
            if segments.get(i + 1).is_some_and(|&n| n <= ks.last_seq() + 1) {
                continue;
            }
            let path = self.dir.join(aof::segment_name(start));
            let bytes = self.storage.read(&path).map_err(io_err(&path))?;
            // Each record is applied as it is decoded: a 64 MiB segment of small writes
            // would otherwise hold over a million decoded ops at once.
            let scan = aof::scan_segment_each(&bytes, &path, start, |r| {
                if r.record.seq > ks.last_seq() && r.record.seq <= upto_seq {
                    ks.apply(r.record);
                }
            })?;
            drop(bytes);
            if let (Some(offset), true) = (scan.end.offset(), ks.last_seq() < upto_seq) {
                return Err(AtlasError::Corrupt {
                    file: path,
                    offset,
                    reason: "closed AOF segment is damaged".to_owned(),
                });
            }
        }
        if ks.last_seq() != upto_seq {
            return Err(AtlasError::Corrupt {
                file: self.dir.clone(),
                offset: 0,
                reason: format!(
                    "AOF records end at {} but {upto_seq} were written",
                    ks.last_seq()
                ),
            });
        }
        Ok(ks)
    }

    /// Removes snapshots beyond the newest `keep`, and segments wholly older than the
    /// oldest kept snapshot.
    pub(super) fn compact(&self, newest: u64, keep: usize) -> Result<()> {
        let removed_snapshots: Vec<u64> = {
            let mut w = self.writer.lock();
            let n = w.snapshots.len().saturating_sub(keep);
            w.snapshots.drain(..n).collect()
        };
        let oldest_kept = {
            let w = self.writer.lock();
            w.snapshots.first().copied().unwrap_or(newest)
        };
        let removed_segments: Vec<u64> = {
            let mut segs = self.feed.segments.lock();
            let mut removed = Vec::new();
            // A segment can go if the next one starts at or before oldest_kept + 1.
            while segs.len() >= 2 && segs[1] <= oldest_kept + 1 {
                removed.push(segs.remove(0));
            }
            removed
        };
        if removed_snapshots.is_empty() && removed_segments.is_empty() {
            return Ok(());
        }
        {
            let mut w = self.writer.lock();
            for start in &removed_segments {
                w.closed_sizes.remove(start);
            }
        }
        let r = (|| {
            for seq in &removed_snapshots {
                let path = self.dir.join(snapshot::snapshot_name(*seq));
                self.storage.remove(&path).map_err(io_err(&path))?;
            }
            for start in &removed_segments {
                let path = self.dir.join(aof::segment_name(*start));
                self.storage.remove(&path).map_err(io_err(&path))?;
            }
            self.storage.sync_dir(&self.dir).map_err(io_err(&self.dir))
        })();
        if let Err(e) = &r {
            self.poison(e);
        }
        r
    }
}
