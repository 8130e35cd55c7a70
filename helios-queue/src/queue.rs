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
//! Randomness: job ids take 64 random bits each from an injected cryptographic rng
//! ([`Queue::open_with`]); tests pass a seeded `StdRng`, so a run replays id for id.
//! [`Queue::open`] and [`Queue::open_with_clock`] default to a `StdRng` (ChaCha12) seeded
//! once from the OS (`os_seeded_rng`, the crate's one read of OS randomness).
//!
//! Concurrency: one mutex guards the state (and the rng) from plan to apply, so a claim is
//! one atomic transition and two workers can never claim the same job. It is std's
//! (futex) mutex: it is held across the transition's AOF write, and `parking_lot`'s,
//! which spins with `sched_yield` before it sleeps, cost a two-thread gateway 10-20% of
//! its jobs/s on two shared cores (docs/performance.md). A panic while it is held marks it
//! poisoned and the next lock takes it anyway (as `parking_lot`'s, which has no poisoning):
//! planning changes only what is idempotent (`promote_due`'s indexes, expired dedup
//! entries) or the rng, and a transition is applied after its write, so a panic in
//! planning leaves a sound state; one after the write and before or inside `apply` leaves
//! the memory behind the log until the next open, as it did before. Only this module
//! writes `job:*` keys; a foreign write to them is not seen until the next open (and one
//! to a job's whole record `job:{id}` then yields to its state record `job:state:{id}` in
//! the fields that record holds).

use crate::error::{QueueError, Result};
use crate::job::{DedupRecord, EnqueueRequest, Job, JobId, JobState, StateRecord};
use crate::schedule::{Schedule, ScheduleId, ScheduleRequest};
use crate::state::{
    Claim, Enqueued, QueueConfig, QueueState, QueueStats, Settle, Settled, Transition, job_key,
    job_state_key,
};
use helios_atlas::{Atlas, Expiry, KeyTtl, WriteBatch};
use helios_core::keys::{self, Key};
use helios_core::{Clock, MonotonicClock};
use rand::rngs::{StdRng, SysRng};
use rand::{CryptoRng, SeedableRng};
use std::fmt;
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard};

/// What a `tick` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Expired leases whose jobs went back to pending.
    pub retried_count: u64,
    /// Expired leases whose jobs went to the dead-letter list.
    pub dead_lettered_count: u64,
    /// Jobs enqueued by due cron schedules (at most one per schedule).
    pub scheduled_count: u64,
    /// Scheduled runs skipped because their queue was full.
    pub schedule_skipped_count: u64,
    /// Scheduled runs skipped because their owner could not enqueue.
    pub schedule_denied_count: u64,
}

/// The source of the random bits of job ids: any cryptographic rng (`rand`'s
/// `CryptoRng`), boxed.
pub type IdRng = Box<dyn CryptoRng + Send>;

/// A `StdRng` seeded once from the OS: the default [`IdRng`]. The only place the crate
/// reads OS randomness; the state machine only ever sees the rng it is handed.
fn os_seeded_rng() -> StdRng {
    // The OS RNG failing means no id can be made unguessable; going on would hand out
    // predictable ids.
    StdRng::try_from_rng(&mut SysRng).expect("the OS random number generator failed")
}

struct Locked {
    state: QueueState,
    rng: IdRng,
}

/// The durable job queue. `Send + Sync`; share it with an `Arc`.
pub struct Queue {
    atlas: Atlas,
    inner: Mutex<Locked>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The rng's state is a secret (it predicts ids); it is not shown.
        f.debug_struct("Queue")
            .field("atlas", &self.atlas)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// The state, locked. A panic while it was held does not poison it (module docs).
    fn lock(&self) -> MutexGuard<'_, Locked> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call that writes may wait for an fsync of the store
    /// ([`Atlas::writes_may_wait`]): an async caller runs it on a blocking pool then, and on
    /// its own thread otherwise.
    pub fn writes_may_wait(&self) -> bool {
        self.atlas.writes_may_wait()
    }

    /// Opens the queue stored in `atlas` with the monotonic clock and an OS-seeded rng.
    pub fn open(atlas: Atlas, config: QueueConfig) -> Result<Queue> {
        Self::open_with_clock(atlas, config, Arc::new(MonotonicClock::new()))
    }

    /// Opens the queue stored in `atlas`, reading time from `clock`, with an OS-seeded rng.
    pub fn open_with_clock(
        atlas: Atlas,
        config: QueueConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Queue> {
        Self::open_with(atlas, config, clock, Box::new(os_seeded_rng()))
    }

    /// Opens the queue stored in `atlas`, reading time from `clock` and the random bits of
    /// job ids from `rng` (a seeded `StdRng` in tests; [`Queue::open`]'s is OS-seeded). Rebuilds
    /// every index from the `job:*` records, records of the earlier layouts included: each
    /// job is its whole record with its state record, if any, laid over it.
    pub fn open_with(
        atlas: Atlas,
        config: QueueConfig,
        clock: Arc<dyn Clock>,
        rng: IdRng,
    ) -> Result<Queue> {
        config.validate()?;
        let mut state = QueueState::new(config);
        // Dedup records of the earlier layout: (dedup id, job, window end), placed once
        // every job is loaded (they take their scope from their job).
        let mut legacy_dedup: Vec<(String, JobId, u64)> = Vec::new();
        let mut cursor: Option<helios_atlas::Key> = None;
        loop {
            let page = atlas.scan(keys::JOB_PREFIX, cursor.as_deref(), 10_000)?;
            for (key, value) in &page.entries {
                let corrupt = |reason: String| QueueError::CorruptRecord {
                    key: key.to_string(),
                    reason,
                };
                // Every key this crate writes is text; any other under its prefix is not
                // one of its records.
                let Some(key) = key.as_str() else {
                    return Err(corrupt("the key is not UTF-8".to_owned()));
                };
                match keys::parse(key).map_err(|e| corrupt(e.to_string()))? {
                    Key::JobDedup(d) => {
                        // A JSON record (scoped), or the bare job id of the earlier layout.
                        let record = if value.first() == Some(&b'{') {
                            let r: DedupRecord = serde_json::from_slice(value)
                                .map_err(|e| corrupt(e.to_string()))?;
                            if r.key().map_err(|e| corrupt(e.to_string()))? != *key {
                                return Err(corrupt(format!("holds the record of {r:?}")));
                            }
                            Some(r)
                        } else {
                            None
                        };
                        let id: JobId = match &record {
                            Some(r) => r.job,
                            None => std::str::from_utf8(value)
                                .map_err(|e| corrupt(e.to_string()))?
                                .parse()
                                .map_err(|e: QueueError| corrupt(e.to_string()))?,
                        };
                        match atlas.ttl(key) {
                            KeyTtl::Expires { at_ms, .. } => match record {
                                Some(_) => state.load_dedup(key.to_owned(), id, at_ms, true),
                                None => legacy_dedup.push((d.to_owned(), id, at_ms)),
                            },
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
                    // The scan is in key order, and every whole record `job:{hex}` sorts
                    // before `job:state:` (hex digits before 's'): the job is loaded.
                    Key::JobState(text) => {
                        let id: JobId = text
                            .parse()
                            .map_err(|e: QueueError| corrupt(e.to_string()))?;
                        let r: StateRecord =
                            serde_json::from_slice(value).map_err(|e| corrupt(e.to_string()))?;
                        // Written only for a job whose whole record exists, and a purge
                        // deletes both in one batch: one left over means a hand edit.
                        if !state.load_state(id, r) {
                            return Err(corrupt(format!(
                                "state record of job {id}, which has no record"
                            )));
                        }
                    }
                    Key::JobSchedule(text) => {
                        let s: Schedule =
                            serde_json::from_slice(value).map_err(|e| corrupt(e.to_string()))?;
                        if s.id.to_string() != text {
                            return Err(corrupt(format!("holds schedule {}", s.id)));
                        }
                        state.load_schedule(s).map_err(|e| corrupt(e.to_string()))?;
                    }
                    _ => return Err(corrupt("not a job key".to_owned())),
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        for (dedup_id, id, until_ms) in legacy_dedup {
            // Before dedup ids were scoped, one id suppressed duplicates in every queue and
            // for every caller; it now suppresses them in its job's scope. A record whose
            // job was purged has no scope left: its window goes unused.
            let Some(job) = state.job(id) else {
                tracing::info!(dedup_id, job = %id, "dedup record of a purged job ignored");
                continue;
            };
            let key = keys::job_dedup_scoped(job.owner.as_deref(), &job.queue, &dedup_id).map_err(
                |e| QueueError::CorruptRecord {
                    key: keys::job_dedup(&dedup_id).unwrap_or_default(),
                    reason: e.to_string(),
                },
            )?;
            state.load_dedup(key, id, until_ms, false);
        }
        tracing::info!(
            jobs = state.job_count(),
            schedules = state.schedule_count(),
            "queue loaded"
        );
        Ok(Queue {
            atlas,
            inner: Mutex::new(Locked { state, rng }),
            clock,
        })
    }

    /// The current time on the queue's clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The queue's clock (the worker registry of the same store reads it too).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Writes `t` to ATLAS, then applies it. Caller holds the state lock.
    fn commit(&self, state: &mut QueueState, t: Transition) -> Result<()> {
        if t.is_empty() {
            return Ok(());
        }
        self.atlas.write_batch(batch_of(&t, state)?)?;
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

    /// Enqueues one job and writes `kv` in the same atomic ATLAS batch: after a crash
    /// either the job and every write are there, or none of them (an outbox: the job is
    /// enqueued exactly when the data it refers to is written). Only `kv:*` keys may be
    /// written (the caller decides whose namespace; the gateway allows the caller's own).
    /// A duplicate (its dedup id seen in the window) enqueues nothing and writes nothing:
    /// a retried request is a no-op. At most [`limits::KV_WRITES_MAX`] writes of
    /// [`limits::KV_WRITES_BYTES_MAX`] bytes in all.
    ///
    /// [`limits::KV_WRITES_MAX`]: crate::limits::KV_WRITES_MAX
    /// [`limits::KV_WRITES_BYTES_MAX`]: crate::limits::KV_WRITES_BYTES_MAX
    pub fn enqueue_with(&self, req: EnqueueRequest, kv: Vec<KvWrite>) -> Result<Enqueued> {
        check_kv_writes(&kv)?;
        let now = self.now_ms();
        let mut guard = self.lock();
        let Locked { state, rng } = &mut *guard;
        let (mut out, t) = state.plan_enqueue(std::slice::from_ref(&req), now, &mut **rng)?;
        let e = out.pop().ok_or(QueueError::Invalid {
            field: "jobs",
            reason: "empty".to_owned(),
        })?;
        if e.deduplicated || t.is_empty() {
            self.commit(state, t)?;
            return Ok(e);
        }
        let mut batch = batch_of(&t, state)?;
        for w in kv {
            match w {
                KvWrite::Set { key, value, expiry } => {
                    batch.set(key, value, expiry);
                }
                KvWrite::Delete { key } => {
                    batch.delete(key);
                }
            }
        }
        self.atlas.write_batch(batch)?;
        state.apply(t);
        Ok(e)
    }

    /// Enqueues several jobs atomically (all or none).
    pub fn enqueue_batch(&self, reqs: &[EnqueueRequest]) -> Result<Vec<Enqueued>> {
        let now = self.now_ms();
        let mut guard = self.lock();
        let Locked { state, rng } = &mut *guard;
        let (out, t) = state.plan_enqueue(reqs, now, &mut **rng)?;
        self.commit(state, t)?;
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
        let mut guard = self.lock();
        let st = &mut guard.state;
        st.promote_due(queue, now);
        let (claims, t) = st.plan_claim(queue, worker, count, lease_ms, now)?;
        self.commit(st, t)?;
        Ok(claims)
    }

    /// Extends a lease to `lease_ms` from now; returns the new expiry.
    pub fn heartbeat(&self, id: JobId, token: u64, lease_ms: u64) -> Result<u64> {
        let now = self.now_ms();
        let mut guard = self.lock();
        let st = &mut guard.state;
        let (until, t) = st.plan_heartbeat(id, token, lease_ms, now)?;
        self.commit(st, t)?;
        Ok(until)
    }

    /// Marks a leased job done.
    pub fn ack(&self, id: JobId, token: u64, result: Option<serde_json::Value>) -> Result<()> {
        let now = self.now_ms();
        let mut guard = self.lock();
        let st = &mut guard.state;
        let t = st.plan_ack(id, token, result, now)?;
        self.commit(st, t)
    }

    /// Reports a failed attempt; returns the job's new state (PENDING or FAILED). A
    /// `permanent` failure dead-letters the job whatever attempts remain.
    pub fn nack(
        &self,
        id: JobId,
        token: u64,
        error: &str,
        retry_delay_ms: Option<u64>,
        permanent: bool,
    ) -> Result<JobState> {
        let now = self.now_ms();
        let mut guard = self.lock();
        let st = &mut guard.state;
        let (state, t) = st.plan_nack(id, token, error, retry_delay_ms, permanent, now)?;
        self.commit(st, t)?;
        Ok(state)
    }

    /// Settles a batch of acks, nacks and heartbeats (at most
    /// [`crate::limits::BATCH_COUNT_MAX`]) under one lock, as one plan and ONE ATLAS batch:
    /// each item's answer in order, as its own call would have given it (a job named
    /// twice: `Invalid` for the second). The outer error is only the store's: then nothing
    /// of the batch happened.
    pub fn settle(&self, items: &[Settle]) -> Result<Vec<Result<Settled>>> {
        let now = self.now_ms();
        let mut guard = self.lock();
        let st = &mut guard.state;
        let (out, t) = st.plan_settle(items, now);
        self.commit(st, t)?;
        Ok(out)
    }

    /// Expires the leases that ran out, forgets ended dedup windows, and fires the due
    /// cron schedules (one job each at most, in the batch that advances the schedule).
    /// Harmless to call twice; a runtime calls it every few hundred ms.
    pub fn tick(&self) -> Result<TickReport> {
        self.tick_checked(&|_| true)
    }

    /// [`Queue::tick`], with each due schedule's owner checked by `allowed` at fire time
    /// (the gateway asks whether the owner still holds `jobs:enqueue`): a refused
    /// schedule skips its fire time and counts it in `denied_count`.
    pub fn tick_checked(&self, allowed: &dyn Fn(&Schedule) -> bool) -> Result<TickReport> {
        let now = self.now_ms();
        let mut guard = self.lock();
        let Locked { state: st, rng } = &mut *guard;
        st.expire_dedup(now);
        let t = st.plan_tick(now);
        let mut report = TickReport::default();
        for j in &t.puts {
            match j.state {
                JobState::Failed => report.dead_lettered_count += 1,
                _ => report.retried_count += 1,
            }
        }
        self.commit(st, t)?;
        let (fired, t) = st.plan_fire_checked(now, &mut **rng, allowed)?;
        self.commit(st, t)?;
        report.scheduled_count = fired.scheduled_count;
        report.schedule_skipped_count = fired.skipped_count;
        report.schedule_denied_count = fired.denied_count;
        Ok(report)
    }

    /// Creates a cron schedule (see [`crate::Schedule`]); its first run is the first fire
    /// time after now.
    pub fn create_schedule(&self, req: &ScheduleRequest) -> Result<Schedule> {
        let now = self.now_ms();
        let mut guard = self.lock();
        let Locked { state, rng } = &mut *guard;
        let (s, t) = state.plan_create_schedule(req, now, &mut **rng)?;
        self.commit(state, t)?;
        Ok(s)
    }

    /// A schedule by id (whoever owns it: callers check the owner).
    pub fn schedule(&self, id: ScheduleId) -> Option<Schedule> {
        self.lock().state.schedule(id).cloned()
    }

    /// A page of the schedules (of `owner` only, if given), in id order, after `cursor`;
    /// and the cursor of the next page.
    pub fn list_schedules(
        &self,
        owner: Option<&str>,
        cursor: Option<ScheduleId>,
        limit: usize,
    ) -> Result<(Vec<Schedule>, Option<ScheduleId>)> {
        let guard = self.lock();
        let (page, next) = guard.state.list_schedules(owner, cursor, limit)?;
        Ok((page.into_iter().cloned().collect(), next))
    }

    /// Deletes a schedule; with `owner`, only that owner's (anyone else's is
    /// [`QueueError::ScheduleNotFound`], as a missing one). Jobs it made stay.
    pub fn delete_schedule(&self, id: ScheduleId, owner: Option<&str>) -> Result<()> {
        let mut guard = self.lock();
        let st = &mut guard.state;
        let t = st.plan_delete_schedule(id, owner)?;
        self.commit(st, t)
    }

    /// Cancels a pending job.
    pub fn cancel(&self, id: JobId) -> Result<()> {
        let now = self.now_ms();
        let mut guard = self.lock();
        let st = &mut guard.state;
        let t = st.plan_cancel(id, now)?;
        self.commit(st, t)
    }

    /// Moves dead-lettered jobs of `queue` back to pending (the given ids, or the oldest
    /// batch). Returns how many.
    pub fn redrive(&self, queue: &str, ids: Option<&[JobId]>) -> Result<u64> {
        let now = self.now_ms();
        let mut guard = self.lock();
        let st = &mut guard.state;
        let t = st.plan_redrive(queue, ids, now)?;
        let n = t.puts.len() as u64;
        self.commit(st, t)?;
        Ok(n)
    }

    /// Deletes finished jobs older than `retention_ms` (one bounded batch per call; call
    /// until it returns 0). Returns how many.
    pub fn purge(&self, retention_ms: u64, include_failed: bool) -> Result<u64> {
        let now = self.now_ms();
        let mut guard = self.lock();
        let st = &mut guard.state;
        let t = st.plan_purge(retention_ms, include_failed, now);
        let n = t.deletes.len() as u64;
        self.commit(st, t)?;
        Ok(n)
    }

    /// A job by id.
    pub fn get(&self, id: JobId) -> Option<Job> {
        self.lock().state.job(id).cloned()
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
        let guard = self.lock();
        let st = &guard.state;
        let (page, next) = st.list(queue, state, cursor, limit)?;
        Ok((page.into_iter().cloned().collect(), next))
    }

    /// As [`Queue::list`], only the jobs owned by `owner` (walking that owner's index: the
    /// other owners' jobs cost nothing).
    pub fn list_owned(
        &self,
        queue: &str,
        state: JobState,
        owner: &str,
        cursor: Option<JobId>,
        limit: usize,
    ) -> Result<(Vec<Job>, Option<JobId>)> {
        let guard = self.lock();
        let st = &guard.state;
        let (page, next) = st.list_owned(queue, state, owner, cursor, limit)?;
        Ok((page.into_iter().cloned().collect(), next))
    }

    /// Counts of `queue`. Promotes the delayed jobs that came due first, so a queue no
    /// one claims from does not make every call count them again.
    pub fn stats(&self, queue: &str) -> QueueStats {
        let now = self.now_ms();
        let mut guard = self.lock();
        let st = &mut guard.state;
        st.promote_due(queue, now);
        st.stats(queue, now)
    }

    /// Runs `f` on the state (tests check invariants with it).
    pub fn with_state<R>(&self, f: impl FnOnce(&QueueState) -> R) -> R {
        f(&self.lock().state)
    }
}

/// A key-value write carried by a transactional enqueue ([`Queue::enqueue_with`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvWrite {
    /// Sets `key` (a `kv:*` key) to `value`.
    Set {
        /// The full ATLAS key (`kv:...`, built by `helios_core::keys::KvSpace`).
        key: String,
        /// The value's bytes.
        value: Vec<u8>,
        /// Its expiry.
        expiry: Expiry,
    },
    /// Deletes `key` (a `kv:*` key; absent is fine).
    Delete {
        /// The full ATLAS key.
        key: String,
    },
}

impl KvWrite {
    fn key(&self) -> &str {
        match self {
            KvWrite::Set { key, .. } | KvWrite::Delete { key } => key,
        }
    }
}

/// Every write is to a `kv:*` key, within the count and byte bounds.
fn check_kv_writes(kv: &[KvWrite]) -> Result<()> {
    use crate::limits::{KV_WRITES_BYTES_MAX, KV_WRITES_MAX};
    if kv.len() > KV_WRITES_MAX {
        return Err(QueueError::Invalid {
            field: "kv",
            reason: format!("{} writes; at most {KV_WRITES_MAX}", kv.len()),
        });
    }
    let mut bytes = 0usize;
    for (i, w) in kv.iter().enumerate() {
        match keys::parse(w.key()) {
            Ok(Key::Kv(_)) => {}
            _ => {
                return Err(QueueError::Invalid {
                    field: "kv",
                    reason: format!("write {i}: {:?} is not a kv: key", w.key()),
                });
            }
        }
        bytes = bytes.saturating_add(w.key().len());
        if let KvWrite::Set { value, .. } = w {
            bytes = bytes.saturating_add(value.len());
        }
    }
    if bytes > KV_WRITES_BYTES_MAX {
        return Err(QueueError::Invalid {
            field: "kv",
            reason: format!("{bytes} bytes; at most {KV_WRITES_BYTES_MAX}"),
        });
    }
    Ok(())
}

/// The ATLAS batch that makes transition `t`, planned on `state`, durable: a new job's
/// whole record, a known job's state record (`job` module docs: what else a job holds
/// never changes), each purge (both records), each dedup record with its window as a
/// relative TTL. The pure state plans transitions; this layer, which talks to ATLAS,
/// encodes them.
fn batch_of(t: &Transition, state: &QueueState) -> Result<WriteBatch> {
    let mut b = WriteBatch::new();
    b.reserve(
        t.puts.len()
            + t.deletes.len()
            + t.dedup_puts.len()
            + t.schedule_puts.len()
            + t.schedule_deletes.len(),
    );
    for job in &t.puts {
        // A known job whose creation fields are unchanged (always, by the `job` module's
        // invariant, which `QueueState::apply` asserts in debug builds) needs only its
        // state record. Should a bug ever change one, the whole record is written again
        // and a state record deleted, so what is stored stays the job either way.
        let known = match state.job(job.id) {
            Some(old) if old.same_creation(job) => true,
            Some(_) => {
                b.delete(job_state_key(job.id));
                false
            }
            None => false,
        };
        let (key, mut value) = if known {
            (job_state_key(job.id), Vec::with_capacity(192))
        } else {
            (job_key(job.id), Vec::with_capacity(512))
        };
        let encoded = if known {
            job.encode_state_json(&mut value)
        } else {
            job.encode_json(&mut value)
        };
        encoded.map_err(|e| QueueError::CorruptRecord {
            key: key.clone(),
            reason: format!("cannot encode: {e}"),
        })?;
        b.set(key, value, Expiry::Never);
    }
    for id in &t.deletes {
        b.delete(job_key(*id));
        // Absent while the job never moved past its enqueue: ATLAS then logs nothing.
        b.delete(job_state_key(*id));
    }
    for d in &t.dedup_puts {
        let value = serde_json::to_vec(&d.record).map_err(|e| QueueError::CorruptRecord {
            key: d.key.clone(),
            reason: format!("cannot encode: {e}"),
        })?;
        b.set(d.key.clone(), value, Expiry::InMs(d.window_ms.max(1)));
    }
    for s in &t.schedule_puts {
        let key = schedule_key(s.id);
        let value = serde_json::to_vec(s).map_err(|e| QueueError::CorruptRecord {
            key: key.clone(),
            reason: format!("cannot encode: {e}"),
        })?;
        b.set(key, value, Expiry::Never);
    }
    for id in &t.schedule_deletes {
        b.delete(schedule_key(*id));
    }
    Ok(b)
}

/// The ATLAS key of a schedule: `job:schedule:{32 hex digits}`.
fn schedule_key(id: ScheduleId) -> String {
    // 32 hex digits are never empty and hold no ':': the builder cannot refuse them.
    keys::job_schedule(&id.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use helios_atlas::Options;
    use helios_atlas::storage::MemStorage;
    use rand::SeedableRng;

    /// A store in memory, with no maintenance thread.
    fn mem_atlas() -> Atlas {
        Atlas::open(
            std::path::PathBuf::from("/q"),
            Options {
                storage: Arc::new(MemStorage::new()),
                maintenance_interval_ms: None,
                ..Options::default()
            },
        )
        .unwrap()
    }

    /// A panic while the state is locked (here in a caller's `with_state`) does not poison
    /// the lock: the queue goes on serving, as with the `parking_lot` mutex it had.
    #[test]
    fn a_panic_under_the_lock_does_not_stop_the_queue() {
        let atlas = mem_atlas();
        let q = Queue::open(atlas, QueueConfig::default()).unwrap();
        q.enqueue(EnqueueRequest::new("q", serde_json::json!({"n": 1})))
            .unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            q.with_state(|_| panic!("a caller's bug"))
        }));
        assert!(r.is_err());
        q.enqueue(EnqueueRequest::new("q", serde_json::json!({"n": 2})))
            .unwrap();
        assert_eq!(q.stats("q").pending_count, 2);
    }

    /// A known job is written as its state record alone; should a transition ever change
    /// one of its creation fields (a bug the debug build asserts against), the whole record
    /// is written again and the state record deleted, so reopening gives the job as put.
    #[test]
    fn a_changed_creation_field_rewrites_the_whole_record() {
        let atlas = mem_atlas();
        let mut state = QueueState::new(QueueConfig::default());
        let mut rng = StdRng::seed_from_u64(1);
        let req = EnqueueRequest::new("q", serde_json::json!({"n": 1}));
        let (_, t) = state.plan_enqueue(&[req], 1_000, &mut rng).unwrap();
        let job = t.puts[0].clone();
        let write = |t: &Transition, state: &QueueState| {
            let b = batch_of(t, state).unwrap();
            let n = b.len();
            atlas.write_batch(b).unwrap();
            n
        };
        assert_eq!(write(&t, &state), 1, "a new job: its whole record");
        state.apply(t);
        let mut moved = job.clone();
        moved.attempts = 1;
        let t = Transition {
            puts: vec![moved.clone()],
            ..Transition::default()
        };
        assert_eq!(write(&t, &state), 1, "its state record alone");
        state.apply(t);
        assert!(atlas.exists(job_state_key(job.id)));
        let mut changed = moved.clone();
        changed.priority = 7;
        let t = Transition {
            puts: vec![changed.clone()],
            ..Transition::default()
        };
        assert_eq!(
            write(&t, &state),
            2,
            "the whole record, the state record deleted"
        );
        assert!(!atlas.exists(job_state_key(job.id)));
        let whole: Job = serde_json::from_slice(&atlas.get(job_key(job.id)).unwrap()).unwrap();
        assert_eq!(whole, changed);
    }
}
