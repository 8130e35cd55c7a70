//! [`Queue`]: the durable job queue over an [`Atlas`] store. Each operation plans a
//! transition on the pure [`QueueState`], writes it as one atomic ATLAS batch, and only then
//! applies it in memory and answers; a failed write changes nothing and answers the error.
//!
//! Time: the queue reads an injected [`Clock`], by default [`MonotonicClock`] (wall time
//! anchored once, then advanced by the monotonic clock). Leases and delays are therefore
//! immune to wall-clock steps while the process runs: an NTP step of +1 h neither expires
//! every lease at once nor lets a job be claimed twice (the fencing token would refuse the
//! stale holder anyway). Across a restart the clock re-anchors to the wall clock, so a jump
//! while the process was down can expire leases early; the jobs are then redelivered
//! (at-least-once), never lost.
//!
//! Concurrency: one mutex guards the state from plan to apply, so a claim is one atomic
//! transition and two workers can never claim the same job. Only this module writes `job:*`
//! keys; a foreign write to them is not seen until the next open.

use crate::error::{QueueError, Result};
use crate::job::{EnqueueRequest, Job, JobId, JobState};
use crate::state::{Claim, Enqueued, QueueConfig, QueueState, QueueStats, Transition};
use helios_atlas::{Atlas, KeyTtl};
use helios_core::keys::{self, Key};
use helios_core::{Clock, MonotonicClock};
use parking_lot::Mutex;
use std::sync::Arc;

/// What a `tick` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Expired leases whose jobs went back to pending.
    pub retried_count: u64,
    /// Expired leases whose jobs went to the dead-letter list.
    pub dead_lettered_count: u64,
}

/// The durable job queue. `Send + Sync`; share it with an `Arc`.
#[derive(Debug)]
pub struct Queue {
    atlas: Atlas,
    state: Mutex<QueueState>,
    clock: Arc<dyn Clock>,
}

impl Queue {
    /// Opens the queue stored in `atlas` with the monotonic clock.
    pub fn open(atlas: Atlas, config: QueueConfig) -> Result<Queue> {
        Self::open_with_clock(atlas, config, Arc::new(MonotonicClock::new()))
    }

    /// Opens the queue stored in `atlas`, reading time from `clock`. Rebuilds every index
    /// from the `job:*` records.
    pub fn open_with_clock(
        atlas: Atlas,
        config: QueueConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Queue> {
        config.validate()?;
        let mut state = QueueState::new(config);
        let mut cursor: Option<String> = None;
        loop {
            let page = atlas.scan(keys::JOB_PREFIX, cursor.as_deref(), 10_000)?;
            for (key, value) in &page.entries {
                let corrupt = |reason: String| QueueError::CorruptRecord {
                    key: key.clone(),
                    reason,
                };
                match keys::parse(key).map_err(|e| corrupt(e.to_string()))? {
                    Key::JobDedup(d) => {
                        let id: JobId = std::str::from_utf8(value)
                            .map_err(|e| corrupt(e.to_string()))?
                            .parse()
                            .map_err(|e: QueueError| corrupt(e.to_string()))?;
                        match atlas.ttl(key) {
                            KeyTtl::Expires { at_ms, .. } => {
                                state.load_dedup(d.to_owned(), id, at_ms);
                            }
                            // Expired between the scan and now: the window is over.
                            KeyTtl::Missing => {}
                            KeyTtl::Persistent => {
                                return Err(corrupt("dedup record without a TTL".to_owned()));
                            }
                        }
                    }
                    Key::Job(text) => {
                        let job: Job =
                            serde_json::from_slice(value).map_err(|e| corrupt(e.to_string()))?;
                        if job.id.to_string() != text {
                            return Err(corrupt(format!("holds job {}", job.id)));
                        }
                        state.load_job(job);
                    }
                    _ => return Err(corrupt("not a job key".to_owned())),
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        tracing::info!(jobs = state.job_count(), "queue loaded");
        Ok(Queue {
            atlas,
            state: Mutex::new(state),
            clock,
        })
    }

    /// The current time on the queue's clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Writes `t` to ATLAS, then applies it. Caller holds the state lock.
    fn commit(&self, state: &mut QueueState, t: Transition) -> Result<()> {
        if t.is_empty() {
            return Ok(());
        }
        self.atlas.write_batch(t.to_batch()?)?;
        state.apply(t);
        Ok(())
    }

    /// Enqueues one job.
    pub fn enqueue(&self, req: EnqueueRequest) -> Result<Enqueued> {
        let mut r = self.enqueue_batch(std::slice::from_ref(&req))?;
        // One request gives one answer.
        r.pop().ok_or(QueueError::Invalid {
            field: "jobs",
            reason: "empty".to_owned(),
        })
    }

    /// Enqueues several jobs atomically (all or none).
    pub fn enqueue_batch(&self, reqs: &[EnqueueRequest]) -> Result<Vec<Enqueued>> {
        let now = self.now_ms();
        let mut st = self.state.lock();
        let (out, t) = st.plan_enqueue(reqs, now)?;
        self.commit(&mut st, t)?;
        Ok(out)
    }

    /// Claims up to `count` ready jobs of `queue` for `worker`, each under a lease of
    /// `lease_ms` with a fresh fencing token.
    pub fn claim(
        &self,
        queue: &str,
        worker: &str,
        count: usize,
        lease_ms: u64,
    ) -> Result<Vec<Claim>> {
        let now = self.now_ms();
        let mut st = self.state.lock();
        st.promote_due(queue, now);
        let (claims, t) = st.plan_claim(queue, worker, count, lease_ms, now)?;
        self.commit(&mut st, t)?;
        Ok(claims)
    }

    /// Extends a lease to `lease_ms` from now; returns the new expiry.
    pub fn heartbeat(&self, id: JobId, token: u64, lease_ms: u64) -> Result<u64> {
        let now = self.now_ms();
        let mut st = self.state.lock();
        let (until, t) = st.plan_heartbeat(id, token, lease_ms, now)?;
        self.commit(&mut st, t)?;
        Ok(until)
    }

    /// Marks a leased job done.
    pub fn ack(&self, id: JobId, token: u64, result: Option<serde_json::Value>) -> Result<()> {
        let now = self.now_ms();
        let mut st = self.state.lock();
        let t = st.plan_ack(id, token, result, now)?;
        self.commit(&mut st, t)
    }

    /// Reports a failed attempt; returns the job's new state (PENDING or FAILED).
    pub fn nack(
        &self,
        id: JobId,
        token: u64,
        error: &str,
        retry_delay_ms: Option<u64>,
    ) -> Result<JobState> {
        let now = self.now_ms();
        let mut st = self.state.lock();
        let (state, t) = st.plan_nack(id, token, error, retry_delay_ms, now)?;
        self.commit(&mut st, t)?;
        Ok(state)
    }

    /// Expires the leases that ran out, and forgets ended dedup windows. Harmless to call
    /// twice; a runtime calls it every few hundred ms.
    pub fn tick(&self) -> Result<TickReport> {
        let now = self.now_ms();
        let mut st = self.state.lock();
        st.expire_dedup(now);
        let t = st.plan_tick(now);
        let mut report = TickReport::default();
        for j in &t.puts {
            match j.state {
                JobState::Failed => report.dead_lettered_count += 1,
                _ => report.retried_count += 1,
            }
        }
        self.commit(&mut st, t)?;
        Ok(report)
    }

    /// Cancels a pending job.
    pub fn cancel(&self, id: JobId) -> Result<()> {
        let now = self.now_ms();
        let mut st = self.state.lock();
        let t = st.plan_cancel(id, now)?;
        self.commit(&mut st, t)
    }

    /// Moves dead-lettered jobs of `queue` back to pending (the given ids, or the oldest
    /// batch). Returns how many.
    pub fn redrive(&self, queue: &str, ids: Option<&[JobId]>) -> Result<u64> {
        let now = self.now_ms();
        let mut st = self.state.lock();
        let t = st.plan_redrive(queue, ids, now)?;
        let n = t.puts.len() as u64;
        self.commit(&mut st, t)?;
        Ok(n)
    }

    /// Deletes finished jobs older than `retention_ms` (one bounded batch per call; call
    /// until it returns 0). Returns how many.
    pub fn purge(&self, retention_ms: u64, include_failed: bool) -> Result<u64> {
        let now = self.now_ms();
        let mut st = self.state.lock();
        let t = st.plan_purge(retention_ms, include_failed, now);
        let n = t.deletes.len() as u64;
        self.commit(&mut st, t)?;
        Ok(n)
    }

    /// A job by id.
    pub fn get(&self, id: JobId) -> Option<Job> {
        self.state.lock().job(id).cloned()
    }

    /// A page of the jobs of `queue` in `state` (the dead-letter list is `Failed`), in id
    /// order, after `cursor`; and the cursor of the next page.
    pub fn list(
        &self,
        queue: &str,
        state: JobState,
        cursor: Option<JobId>,
        limit: usize,
    ) -> Result<(Vec<Job>, Option<JobId>)> {
        let st = self.state.lock();
        let (page, next) = st.list(queue, state, cursor, limit)?;
        Ok((page.into_iter().cloned().collect(), next))
    }

    /// Counts of `queue`. Promotes the delayed jobs that came due first, so a queue no
    /// one claims from does not make every call count them again.
    pub fn stats(&self, queue: &str) -> QueueStats {
        let now = self.now_ms();
        let mut st = self.state.lock();
        st.promote_due(queue, now);
        st.stats(queue, now)
    }

    /// Runs `f` on the state (tests check invariants with it).
    pub fn with_state<R>(&self, f: impl FnOnce(&QueueState) -> R) -> R {
        f(&self.state.lock())
    }
}
