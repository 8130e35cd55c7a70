//! The commit pipeline of [`Atlas`](super::Atlas) (see the module docs of `db`, "Write
//! path"): writability and fail-stop, queueing and leadership of commit groups, planning a
//! group against the keyspace, appending and fsyncing it, applying and publishing it, and
//! the everysec fsync with its lag bound.
//!
//! Invariant: a write is acknowledged only after its record is appended (and fsynced
//! under `always`), and becomes visible to readers at that same moment.

use super::*;

impl Inner {
    pub(super) fn check_writable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(AtlasError::Closed);
        }
        if self.poisoned.load(Ordering::Acquire) {
            return Err(AtlasError::PreviousIo {
                cause: self.poison_cause.lock().clone().unwrap_or_default(),
            });
        }
        Ok(())
    }

    pub(super) fn poison(&self, e: &AtlasError) {
        let mut cause = self.poison_cause.lock();
        if cause.is_none() {
            tracing::error!(error = %e, "ATLAS write failed; refusing further writes (fail-stop)");
            *cause = Some(e.to_string());
        }
        self.poisoned.store(true, Ordering::Release);
    }

    pub(super) fn submit(&self, cmd: Command) -> Result<Reply> {
        command::validate(&cmd)?;
        self.check_writable()?;
        if self.options.fsync != FsyncPolicy::Always {
            // Without an fsync to share, a group buys nothing and its hand-offs cost
            // context switches: each writer commits alone, serialized by the writer lock.
            let r = self
                .bound_lag(self.commit(std::slice::from_ref(&cmd)))
                .pop();
            // commit returns one result per command.
            return r.unwrap_or(Err(AtlasError::Closed));
        }
        if let Some(_leader) = self.try_lead() {
            // Uncontended: lead a group of one without queueing.
            let r = self.commit(std::slice::from_ref(&cmd)).pop();
            // commit returns one result per command.
            return r.unwrap_or(Err(AtlasError::Closed));
        }
        let slot = Slot::new();
        let mut lead = self.enqueue([(cmd, slot.clone())]);
        self.wait_slot(&slot, &mut lead)
    }

    /// Takes leadership if no writer leads or waits (then the caller commits its own
    /// commands as a group, without queueing); leadership is released when the guard drops.
    pub(super) fn try_lead(&self) -> Option<LeaderGuard<'_>> {
        let mut p = self.pipeline.lock();
        if p.leader || !p.queue.is_empty() {
            return None;
        }
        p.leader = true;
        Some(LeaderGuard { inner: self })
    }

    /// Queues `writes` together (so the leader that takes the first takes them all) and
    /// returns whether the caller must lead (no writer was leading).
    pub(super) fn enqueue(&self, writes: impl IntoIterator<Item = (Command, Arc<Slot>)>) -> bool {
        let mut p = self.pipeline.lock();
        p.queue
            .extend(writes.into_iter().map(|(cmd, slot)| Pending { cmd, slot }));
        !std::mem::replace(&mut p.leader, true)
    }

    /// Waits for `slot`'s result, leading a group whenever leadership comes to this
    /// writer (`lead` set, or handed on to `slot`).
    pub(super) fn wait_slot(&self, slot: &Slot, lead: &mut bool) -> Result<Reply> {
        loop {
            if std::mem::take(lead) {
                self.lead();
            }
            let mut st = slot.state.lock();
            loop {
                match std::mem::replace(&mut *st, SlotState::Waiting) {
                    SlotState::Done(r) => return r,
                    SlotState::Lead => {
                        *lead = true;
                        break;
                    }
                    SlotState::Waiting => slot.cv.wait(&mut st),
                }
            }
        }
    }

    /// Commits `cmds` in one group (one write; one fsync under `always`), one result per
    /// command, in order. A command that fails validation gets its error and the others go
    /// on.
    pub(super) fn submit_many(&self, cmds: Vec<Command>) -> Vec<Result<Reply>> {
        let mut results: Vec<Option<Result<Reply>>> = Vec::with_capacity(cmds.len());
        let mut valid = Vec::with_capacity(cmds.len());
        for cmd in cmds {
            match command::validate(&cmd).and_then(|()| self.check_writable()) {
                Ok(()) => {
                    results.push(None);
                    valid.push(cmd);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let committed = if valid.is_empty() {
            Vec::new()
        } else if self.options.fsync != FsyncPolicy::Always {
            self.bound_lag(self.commit(&valid))
        } else if let Some(_leader) = self.try_lead() {
            self.commit(&valid)
        } else {
            // Queued together, so the leader that takes the first takes them all: still
            // one group.
            let slots: Vec<Arc<Slot>> = valid.iter().map(|_| Slot::new()).collect();
            let mut lead = self.enqueue(valid.into_iter().zip(slots.iter().cloned()));
            slots
                .iter()
                .map(|slot| self.wait_slot(slot, &mut lead))
                .collect()
        };
        let mut committed = committed.into_iter();
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| committed.next().unwrap_or(Err(AtlasError::Closed))))
            .collect()
    }

    /// Runs one commit group as leader, then hands leadership on or gives it up.
    pub(super) fn lead(&self) {
        let _leader = LeaderGuard { inner: self };
        let group = std::mem::take(&mut self.pipeline.lock().queue);
        self.commit_group(group);
    }

    /// Hands leadership to the oldest queued writer, or gives it up if none waits.
    pub(super) fn release_leadership(&self) {
        let mut p = self.pipeline.lock();
        match p.queue.first() {
            None => p.leader = false,
            Some(next) => next.slot.set(SlotState::Lead),
        }
    }

    pub(super) fn commit_group(&self, group: Vec<Pending>) {
        if group.is_empty() {
            return;
        }
        let (cmds, slots): (Vec<Command>, Vec<Arc<Slot>>) =
            group.into_iter().map(|p| (p.cmd, p.slot)).unzip();
        let mut guard = GroupGuard { slots };
        let results = self.commit(&cmds);
        assert_eq!(results.len(), guard.slots.len(), "one result per command");
        for (slot, r) in std::mem::take(&mut guard.slots).into_iter().zip(results) {
            slot.set(SlotState::Done(r));
        }
    }

    /// Plans, logs and applies `cmds` as one group. Called only by the leader.
    pub(super) fn commit(&self, cmds: &[Command]) -> Vec<Result<Reply>> {
        let now = self.clock.now_ms();
        let mut writer = self.writer.lock();
        if let Err(e) = self.check_writable() {
            let msg = e.to_string();
            return cmds
                .iter()
                .map(|_| {
                    Err(match &e {
                        AtlasError::Closed => AtlasError::Closed,
                        _ => AtlasError::PreviousIo { cause: msg.clone() },
                    })
                })
                .collect();
        }
        let writer = &mut *writer;
        writer.buf.clear();
        let mut records: Vec<Record> = Vec::new();
        let mut results: Vec<Result<Reply>> = Vec::with_capacity(cmds.len());
        let mut expired = 0u64;
        {
            let ks = self.keyspace.read();
            let mut overlay = Overlay::new(
                &ks,
                now,
                self.options.memory_limit_size,
                &mut writer.scratch,
            );
            if Overlay::untracked(cmds) {
                overlay.set_untracked();
            }
            for cmd in cmds {
                let mut ops = Vec::new();
                let r = overlay.plan(cmd, &mut ops);
                if r.is_ok() && !ops.is_empty() {
                    let seq = writer.next_seq + records.len() as u64;
                    expired += ops
                        .iter()
                        .filter(|op| matches!(op, crate::op::Op::Del { expired: true, .. }))
                        .count() as u64;
                    aof::encode_record(seq, &ops, &mut writer.buf);
                    records.push(Record { seq, ops });
                }
                results.push(r);
            }
        }
        if records.is_empty() {
            return results;
        }
        if let Err(e) = self.log_and_apply(writer, records, expired) {
            let msg = e.to_string();
            let mut first = Some(e);
            return cmds
                .iter()
                .map(|_| {
                    Err(first
                        .take()
                        .unwrap_or_else(|| AtlasError::PreviousIo { cause: msg.clone() }))
                })
                .collect();
        }
        results
    }

    /// Appends `writer.buf` (the encoded `records`), fsyncs per policy, then applies the
    /// records and publishes them. Called under the writer lock. An I/O error poisons the
    /// store and nothing is applied.
    pub(super) fn log_and_apply(
        &self,
        writer: &mut Writer,
        records: Vec<Record>,
        expired: u64,
    ) -> Result<()> {
        let path = || self.dir.join(aof::segment_name(writer.segment_start));
        let mut outcome = writer
            .file
            .append(&writer.buf)
            .map_err(|e| AtlasError::io(path(), e));
        if outcome.is_ok() && self.options.fsync == FsyncPolicy::Always {
            let started_ms = self.clock.now_ms();
            outcome = writer.file.sync().map_err(|e| AtlasError::io(path(), e));
            if outcome.is_ok() {
                self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
                self.synced_through_ms
                    .fetch_max(started_ms, Ordering::AcqRel);
            }
        }
        if let Err(e) = outcome {
            self.poison(&e);
            return Err(e);
        }
        if self.options.fsync != FsyncPolicy::Always
            && !self.dirty.swap(true, Ordering::AcqRel)
            && self.syncs_in_flight.load(Ordering::Acquire) == 0
        {
            // The first write since everything was made durable (the writer lock orders
            // it after the fsync that cleared `dirty`): the lag starts now, not at that
            // fsync, which may be long ago.
            self.synced_through_ms
                .fetch_max(self.clock.now_ms(), Ordering::AcqRel);
        }
        writer.next_seq += records.len() as u64;
        writer.segment_size += writer.buf.len() as u64;
        self.counters
            .aof_bytes
            .fetch_add(writer.buf.len() as u64, Ordering::Relaxed);
        self.counters
            .records_written
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        self.counters.groups.fetch_add(1, Ordering::Relaxed);
        self.counters.expired.fetch_add(expired, Ordering::Relaxed);
        let keys_size = {
            let mut ks = self.keyspace.write();
            for r in &records {
                ks.apply(r);
            }
            ks.memory_size()
        };
        // Subscriptions hold the feed too: with none, the ring need not keep records.
        let subscribed = Arc::strong_count(&self.feed) > 1;
        let headroom = self
            .options
            .memory_limit_size
            .map(|limit| limit.saturating_sub(keys_size));
        self.feed.publish(records, subscribed, headroom);
        if writer.buf.capacity() > 4 * 1024 * 1024 {
            // Don't keep a huge buffer around after one big batch.
            writer.buf = Vec::with_capacity(64 * 1024);
        }
        Ok(())
    }

    /// Under `everysec`, once the durability horizon is more than `everysec_lag_max_ms`
    /// ago, the writer of `results` fsyncs before it is acknowledged (waiting behind an
    /// fsync in flight, if any); if that fails, its writes are not acknowledged.
    pub(super) fn bound_lag(&self, mut results: Vec<Result<Reply>>) -> Vec<Result<Reply>> {
        if self.options.fsync != FsyncPolicy::Everysec {
            return results;
        }
        let Some(lag) = self.unsynced_lag_ms() else {
            return results;
        };
        if lag <= self.options.everysec_lag_max_ms {
            return results;
        }
        self.counters.lag_stalls.fetch_add(1, Ordering::Relaxed);
        if !self.lagging.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                lag_ms = lag,
                bound_ms = self.options.everysec_lag_max_ms,
                "the everysec fsync is behind; writes wait for an fsync before they are acknowledged"
            );
        }
        if let Err(e) = self.sync_now() {
            let msg = e.to_string();
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(AtlasError::PreviousIo { cause: msg.clone() });
            }
        }
        results
    }

    /// How far back the durability horizon is while some write may be unsynced; `None`
    /// when nothing is (the next write moves the horizon up to itself). `dirty` alone is
    /// not enough: an fsync may have cleared it and be running still, the writes it covers
    /// not yet durable.
    pub(super) fn unsynced_lag_ms(&self) -> Option<u64> {
        let pending =
            self.dirty.load(Ordering::Acquire) || self.syncs_in_flight.load(Ordering::Acquire) > 0;
        pending.then(|| {
            let synced = self.synced_through_ms.load(Ordering::Acquire);
            self.clock.now_ms().saturating_sub(synced)
        })
    }

    pub(super) fn sync_now(&self) -> Result<()> {
        let started_ms = self.clock.now_ms();
        let (file, path) = {
            let w = self.writer.lock();
            // Cleared under the writer lock: a write after this point sets it again, and a
            // rotation after it fsyncs this file itself.
            self.dirty.store(false, Ordering::Release);
            self.syncs_in_flight.fetch_add(1, Ordering::AcqRel);
            (
                w.file.clone(),
                self.dir.join(aof::segment_name(w.segment_start)),
            )
        };
        let r = match file.sync() {
            Ok(()) => {
                self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
                self.synced_through(started_ms);
                Ok(())
            }
            Err(e) => {
                let e = AtlasError::io(&path, e);
                self.poison(&e);
                // Left counted: the writes it covered are not durable and never will be,
                // so no later write may move the horizon past them.
                return Err(e);
            }
        };
        self.syncs_in_flight.fetch_sub(1, Ordering::AcqRel);
        r
    }

    /// Records a successful fsync that started at `started_ms`.
    pub(super) fn synced_through(&self, started_ms: u64) {
        self.synced_through_ms
            .fetch_max(started_ms, Ordering::AcqRel);
        let lag_max = self.options.everysec_lag_max_ms;
        if self.clock.now_ms().saturating_sub(started_ms) <= lag_max
            && self.lagging.swap(false, Ordering::AcqRel)
        {
            tracing::info!("the everysec fsync caught up");
        }
    }
}
