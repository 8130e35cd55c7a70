//! [`QueueState`]: the pure job-queue state machine.
//!
//! Protocol (raft-rs style: the core says what to persist, the caller persists, then tells
//! the core): every operation is *planned* against the state at a given `now_ms`
//! (`plan_*`, `&self`), giving a reply and a [`Transition`]; the caller writes the
//! transition to ATLAS as one atomic batch (`queue.rs` encodes it: this module names no
//! storage type) and only then
//! [`QueueState::apply`]s it. A plan that is never applied changes nothing. The only
//! `&mut self` work outside `apply` is [`QueueState::promote_due`], which moves due delayed
//! jobs into the ready index: an index change, not a state change, and idempotent.
//!
//! Indexes, all rebuilt from the jobs on load (invariants checked by
//! [`QueueState::check_invariants`]):
//! - per queue: `ready` ordered by (priority desc, run_at, id) so a claim takes the first
//!   entries without scanning (a job due when it turns pending goes there at once);
//!   `delayed` ordered by run_at; `ready_since` by run_at for the
//!   oldest-ready age; one set of ids per state for listings;
//!   and per owner one set of ids per state, so an owner's listing skips other owners'
//!   jobs;
//! - `leases` ordered by expiry for `tick`; `finished` ordered by finish time for purge;
//! - `dedup`: scoped dedup key (`keys::job_dedup_scoped`: owner, queue, dedup id) ->
//!   (job, window end).
//!
//! Job ids are UUIDv7 ([`JobId`]): `plan_enqueue` takes the random bits from the rng it is
//! given, so the same state, inputs and rng seed give the same ids, byte for byte.
//!
//! Fencing: each claim issues a token greater than every token issued before
//! (`token_last`, rebuilt as the maximum over jobs on load, and at least `now_ms * 2^20` so
//! tokens keep growing across restarts), so a token identifies one lease of one job; ack,
//! nack and heartbeat must present the current one before the lease expires.
//!
//! Settling: a worker's acks, nacks and heartbeats of many jobs plan as one
//! [`QueueState::plan_settle`] (one transition, one ATLAS batch), each item answered as its
//! own `plan_*` would answer it. A `permanent` nack dead-letters the job at once.

use crate::error::{QueueError, Result};
use crate::job::{
    Backoff, DedupRecord, EnqueueRequest, Job, JobId, JobState, Lease, StateRecord, validate_id,
};
use crate::limits::{
    BATCH_COUNT_MAX, DURATION_MS_MAX, ERROR_SIZE_MAX, LIST_LIMIT_MAX, PAYLOAD_SIZE_MAX,
    SWEEP_COUNT_MAX, TICK_COUNT_MAX,
};
use crate::schedule::{Schedule, ScheduleId, Schedules};
use helios_core::keys;
use rand::Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// Hashes job ids for the job table: ids are made by the queue itself, never chosen by a
/// client, so a keyed SipHash buys nothing there. Multiply-rotate per word (as FxHash),
/// folded so the low bits the table indexes with see the high ones.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Settings of a queue store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// Most pending + in-progress jobs per queue; enqueue beyond it fails with
    /// [`QueueError::QueueFull`] (default 1,000,000).
    pub depth_max: u64,
    /// Attempts when the request gives none (default 3).
    pub attempts_max_default: u32,
    /// Backoff when the request gives none.
    pub backoff_default: Backoff,
    /// How long a dedup id suppresses duplicates (default 5 minutes, like SQS).
    pub dedup_window_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            depth_max: 1_000_000,
            attempts_max_default: 3,
            backoff_default: Backoff::default(),
            dedup_window_ms: 5 * 60 * 1000,
        }
    }
}

impl QueueConfig {
    /// Checks every setting, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.depth_max == 0 {
            return Err(QueueError::Invalid {
                field: "depth_max",
                reason: "must be at least 1".to_owned(),
            });
        }
        if !(1..=crate::limits::ATTEMPTS_MAX).contains(&self.attempts_max_default) {
            return Err(QueueError::Invalid {
                field: "attempts_max_default",
                reason: format!("must be in 1..={}", crate::limits::ATTEMPTS_MAX),
            });
        }
        if self.dedup_window_ms > DURATION_MS_MAX {
            return Err(QueueError::Invalid {
                field: "dedup_window_ms",
                reason: format!("must be <= {DURATION_MS_MAX}"),
            });
        }
        Ok(())
    }
}

/// What a transition writes: whole job records, deletions, and dedup records. Applied all
/// or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transition {
    /// Jobs written (created or changed).
    pub puts: Vec<Job>,
    /// Jobs removed (purge).
    pub deletes: Vec<JobId>,
    /// Dedup records written.
    pub dedup_puts: Vec<DedupPut>,
    /// Schedules written (created or advanced by a fire).
    pub schedule_puts: Vec<Schedule>,
    /// Schedules removed.
    pub schedule_deletes: Vec<ScheduleId>,
}

/// A dedup record a transition writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupPut {
    /// Its key (`keys::job_dedup_scoped`), in ATLAS and in memory.
    pub key: String,
    /// What is stored under it.
    pub record: DedupRecord,
    /// When the window ends, on the queue clock.
    pub until_ms: u64,
    /// The window's length. ATLAS gets the length (a relative TTL on its own clock), so a
    /// difference between the two clocks cannot make it drop or stretch the record.
    pub window_ms: u64,
}

impl Transition {
    /// Whether the transition writes nothing.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty()
            && self.deletes.is_empty()
            && self.dedup_puts.is_empty()
            && self.schedule_puts.is_empty()
            && self.schedule_deletes.is_empty()
    }
}

/// The size of `v`'s JSON text, counted without building it.
pub(crate) fn json_size(v: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing a Value to a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Tokens available per ms of queue time before the counter runs ahead of the clock
/// (harmless: tokens then just keep counting up). 2^20: fits u64 until the year 2500.
const TOKENS_PER_MS: u64 = 1 << 20;

/// The ATLAS key of a job's whole record (written when it is created).
pub fn job_key(id: JobId) -> String {
    keys::job_hex(&id.to_hex())
}

/// The ATLAS key of a job's state record (written by its later transitions).
pub fn job_state_key(id: JobId) -> String {
    keys::job_state_hex(&id.to_hex())
}

/// A claimed job and the token its worker must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The job as claimed (state InProgress, lease set).
    pub job: Job,
    /// The fencing token.
    pub token: u64,
}

/// The result of an enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The job's id (the first job's, for a deduplicated enqueue).
    pub id: JobId,
    /// Whether the enqueue was suppressed as a duplicate.
    pub deduplicated: bool,
}

/// One item of a settle batch ([`QueueState::plan_settle`], `Queue::settle`): what a
/// worker reports about a job it holds under the lease `token`.
#[derive(Debug, Clone, PartialEq)]
pub enum Settle {
    /// The job is done (as [`QueueState::plan_ack`]).
    Ack {
        /// The job.
        id: JobId,
        /// Its lease token.
        token: u64,
        /// What the job produced, kept on the job.
        result: Option<serde_json::Value>,
    },
    /// The attempt failed (as [`QueueState::plan_nack`]).
    Nack {
        /// The job.
        id: JobId,
        /// Its lease token.
        token: u64,
        /// Why, kept on the job (cut at `limits::ERROR_SIZE_MAX`).
        error: String,
        /// When to retry instead of the job's backoff.
        retry_delay_ms: Option<u64>,
        /// Straight to the dead-letter list, whatever attempts remain.
        permanent: bool,
    },
    /// The job is still being worked on: extend its lease (as
    /// [`QueueState::plan_heartbeat`]).
    Heartbeat {
        /// The job.
        id: JobId,
        /// Its lease token.
        token: u64,
        /// The new lease, from now.
        lease_ms: u64,
    },
}

impl Settle {
    /// The job the item is about.
    pub fn id(&self) -> JobId {
        match self {
            Settle::Ack { id, .. } | Settle::Nack { id, .. } | Settle::Heartbeat { id, .. } => *id,
        }
    }
}

/// The answer to one settled item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The job is done.
    Acked,
    /// The job's new state: PENDING (to be retried) or FAILED (dead-lettered).
    Nacked(JobState),
    /// The lease was extended until this time.
    Extended {
        /// The new lease expiry, on the queue clock.
        lease_expires_at_ms: u64,
    },
}

/// Counts of one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Jobs per state.
    pub pending_count: u64,
    /// Pending jobs that may be claimed now.
    pub ready_count: u64,
    /// Pending jobs waiting for their run-at time.
    pub delayed_count: u64,
    /// Claimed jobs under lease.
    pub in_progress_count: u64,
    /// Done jobs not yet purged.
    pub done_count: u64,
    /// Jobs in the dead-letter list.
    pub failed_count: u64,
    /// Cancelled jobs not yet purged.
    pub cancelled_count: u64,
    /// How long the oldest ready job has been ready, in ms.
    pub oldest_ready_age_ms: Option<u64>,
}

#[derive(Debug, Default, Clone)]
struct QueueIndex {
    ready: BTreeSet<(Reverse<i32>, u64, JobId)>,
    ready_since: BTreeSet<(u64, JobId)>,
    delayed: BTreeSet<(u64, JobId)>,
    by_state: BTreeMap<JobState, BTreeSet<JobId>>,
    // The jobs that have an owner, per owner and state. Invariant: no empty set or map
    // is kept, so an owner with no job left costs nothing.
    by_owner: BTreeMap<Arc<str>, BTreeMap<JobState, BTreeSet<JobId>>>,
}

impl QueueIndex {
    fn count(&self, s: JobState) -> u64 {
        self.by_state.get(&s).map_or(0, |v| v.len() as u64)
    }
    fn depth(&self) -> u64 {
        self.count(JobState::Pending) + self.count(JobState::InProgress)
    }
}

/// The queue state machine. See the module docs.
#[derive(Debug, Clone)]
pub struct QueueState {
    config: QueueConfig,
    jobs: HashMap<JobId, Job, BuildHasherDefault<IdHasher>>,
    queues: BTreeMap<String, QueueIndex>,
    leases: BTreeSet<(u64, JobId)>,
    finished: BTreeSet<(u64, JobId)>,
    // Scoped dedup key -> (first job, window end). Keys hold client text: SipHash.
    dedup: HashMap<String, (JobId, u64)>,
    // Invariant: >= every job id ever applied.
    id_last: JobId,
    // Invariant: >= every token ever issued to an applied job.
    token_last: u64,
    // The cron schedules (schedule.rs).
    pub(crate) schedules: Schedules,
}

fn truncate_error(e: &str) -> String {
    if e.len() <= ERROR_SIZE_MAX {
        return e.to_owned();
    }
    let mut end = ERROR_SIZE_MAX;
    while !e.is_char_boundary(end) {
        end -= 1;
    }
    e[..end].to_owned()
}

impl QueueState {
    /// An empty state.
    pub fn new(config: QueueConfig) -> Self {
        Self {
            config,
            jobs: HashMap::default(),
            queues: BTreeMap::new(),
            leases: BTreeSet::new(),
            finished: BTreeSet::new(),
            dedup: HashMap::new(),
            id_last: JobId::from_u128(0),
            token_last: 0,
            schedules: Schedules::default(),
        }
    }

    /// Pending and in-progress jobs of `queue` (what `depth_max` bounds).
    pub(crate) fn queue_depth(&self, queue: &str) -> u64 {
        self.queues.get(queue).map_or(0, QueueIndex::depth)
    }

    /// The config.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Number of jobs held (all states).
    pub fn job_count(&self) -> u64 {
        self.jobs.len() as u64
    }

    /// A job by id.
    pub fn job(&self, id: JobId) -> Option<&Job> {
        self.jobs.get(&id)
    }

    /// Every job, in no particular order.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    /// Names of the queues that hold jobs.
    pub fn queue_names(&self) -> impl Iterator<Item = &str> {
        self.queues.keys().map(String::as_str)
    }

    /// Plans an enqueue of `reqs` (one atomic batch). Requests with a dedup id seen within
    /// the window (or earlier in the same batch) for the same owner and queue return the
    /// first job instead. Each new job's id takes 64 bits from `rng` (one `next_u64`).
    pub fn plan_enqueue<R: Rng + ?Sized>(
        &self,
        reqs: &[EnqueueRequest],
        now_ms: u64,
        rng: &mut R,
    ) -> Result<(Vec<Enqueued>, Transition)> {
        if reqs.len() > BATCH_COUNT_MAX {
            return Err(QueueError::Invalid {
                field: "jobs",
                reason: format!(
                    "{} jobs; a batch takes at most {BATCH_COUNT_MAX}",
                    reqs.len()
                ),
            });
        }
        let mut t = Transition::default();
        let mut out = Vec::with_capacity(reqs.len());
        let mut id = self.id_last;
        let mut added: HashMap<&str, u64> = HashMap::new();
        let mut batch_dedup: HashMap<String, JobId> = HashMap::new();
        for req in reqs {
            req.validate()?;
            let dedup_key = match req.dedup_id.as_deref() {
                Some(d) => Some(
                    keys::job_dedup_scoped(req.owner.as_deref(), &req.queue, d).map_err(|e| {
                        QueueError::Invalid {
                            field: "dedup_id",
                            reason: e.to_string(),
                        }
                    })?,
                ),
                None => None,
            };
            if let Some(k) = &dedup_key {
                if let Some(&first) = batch_dedup.get(k) {
                    out.push(Enqueued {
                        id: first,
                        deduplicated: true,
                    });
                    continue;
                }
                if let Some(&(first, until)) = self.dedup.get(k)
                    && until > now_ms
                {
                    out.push(Enqueued {
                        id: first,
                        deduplicated: true,
                    });
                    continue;
                }
            }
            let payload_size = json_size(&req.payload);
            if payload_size > PAYLOAD_SIZE_MAX {
                return Err(QueueError::Invalid {
                    field: "payload",
                    reason: format!("{payload_size} bytes; the limit is {PAYLOAD_SIZE_MAX}"),
                });
            }
            let depth = self.queues.get(&req.queue).map_or(0, QueueIndex::depth)
                + added.get(req.queue.as_str()).copied().unwrap_or(0);
            if depth >= self.config.depth_max {
                return Err(QueueError::QueueFull {
                    queue: req.queue.clone(),
                    depth,
                    depth_max: self.config.depth_max,
                });
            }
            *added.entry(req.queue.as_str()).or_default() += 1;
            id = JobId::next_after(id, now_ms, rng.next_u64()).ok_or_else(|| {
                QueueError::Invalid {
                    field: "now_ms",
                    reason: format!("{now_ms}: job ids end at the year 10889"),
                }
            })?;
            let run_at_ms = match (req.delay_ms, req.run_at_ms) {
                (Some(d), _) => now_ms.saturating_add(d),
                (None, Some(at)) => at,
                (None, None) => now_ms,
            };
            let job = Job {
                id,
                queue: req.queue.clone(),
                owner: req.owner.clone(),
                payload: req.payload.clone(),
                state: JobState::Pending,
                priority: req.priority,
                run_at_ms,
                attempts: 0,
                attempts_max: req.attempts_max.unwrap_or(self.config.attempts_max_default),
                backoff: req.backoff.unwrap_or(self.config.backoff_default),
                lease: None,
                token_last: 0,
                dedup_id: req.dedup_id.clone(),
                created_at_ms: now_ms,
                updated_at_ms: now_ms,
                finished_at_ms: None,
                last_error: None,
                result: None,
                trace: req.trace.clone(),
            };
            if let (Some(key), Some(d)) = (dedup_key, &req.dedup_id) {
                batch_dedup.insert(key.clone(), id);
                t.dedup_puts.push(DedupPut {
                    key,
                    record: DedupRecord {
                        job: id,
                        queue: req.queue.clone(),
                        owner: req.owner.clone(),
                        dedup_id: d.clone(),
                    },
                    until_ms: now_ms.saturating_add(self.config.dedup_window_ms),
                    window_ms: self.config.dedup_window_ms,
                });
            }
            out.push(Enqueued {
                id,
                deduplicated: false,
            });
            t.puts.push(job);
        }
        Ok((out, t))
    }

    /// Moves the delayed jobs of `queue` that are due at `now_ms` into the ready index.
    /// Idempotent; a clock that went back only leaves them delayed a little longer.
    pub fn promote_due(&mut self, queue: &str, now_ms: u64) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        while let Some(&(at, id)) = q.delayed.first() {
            if at > now_ms {
                break;
            }
            q.delayed.pop_first();
            if let Some(job) = self.jobs.get(&id) {
                q.ready.insert((Reverse(job.priority), job.run_at_ms, id));
                q.ready_since.insert((job.run_at_ms, id));
            }
        }
    }

    /// Plans a claim of up to `count` ready jobs of `queue` for `worker`: highest priority
    /// first, FIFO (by run-at, then id) within a priority. Call [`Self::promote_due`] first.
    /// Takes O(count * log n), never a scan.
    pub fn plan_claim(
        &self,
        queue: &str,
        worker: &str,
        count: usize,
        lease_ms: u64,
        now_ms: u64,
    ) -> Result<(Vec<Claim>, Transition)> {
        validate_id("worker", worker)?;
        if count == 0 || count > BATCH_COUNT_MAX {
            return Err(QueueError::Invalid {
                field: "count",
                reason: format!("{count} is outside 1..={BATCH_COUNT_MAX}"),
            });
        }
        if lease_ms == 0 || lease_ms > DURATION_MS_MAX {
            return Err(QueueError::Invalid {
                field: "lease_ms",
                reason: format!("{lease_ms} is outside 1..={DURATION_MS_MAX}"),
            });
        }
        let mut t = Transition::default();
        let mut claims = Vec::new();
        let Some(q) = self.queues.get(queue) else {
            return Ok((claims, t));
        };
        // Tokens grow with every claim; mixing in the time keeps them growing across a
        // restart even when the records that held the highest token were purged, or (under
        // `everysec`) lost to a power failure.
        let mut token = self.token_last.max(now_ms.saturating_mul(TOKENS_PER_MS));
        // Jobs promoted under a later clock reading and not due at this one (the clock went
        // back) are skipped; only then can this walk more than `count` entries.
        let due = q
            .ready
            .iter()
            .filter_map(|&(_, _, id)| self.jobs.get(&id))
            .filter(|job| job.run_at_ms <= now_ms)
            .take(count);
        for job in due {
            token = token.max(job.token_last) + 1;
            let mut job = job.clone();
            job.state = JobState::InProgress;
            job.attempts += 1;
            job.lease = Some(Lease {
                worker: worker.to_owned(),
                token,
                expires_at_ms: now_ms.saturating_add(lease_ms),
            });
            job.token_last = token;
            job.updated_at_ms = now_ms;
            claims.push(Claim {
                job: job.clone(),
                token,
            });
            t.puts.push(job);
        }
        Ok((claims, t))
    }

    /// The job leased under `token`, checked live at `now_ms`.
    fn leased(&self, id: JobId, token: u64, now_ms: u64, op: &'static str) -> Result<&Job> {
        let job = self.jobs.get(&id).ok_or(QueueError::NotFound { id })?;
        if job.state != JobState::InProgress {
            // A token this job was once leased under is stale; anything else is misuse.
            return Err(if token > 0 && token <= job.token_last {
                QueueError::StaleToken { id, token }
            } else {
                QueueError::WrongState {
                    id,
                    state: job.state,
                    operation: op,
                    needed: "IN_PROGRESS",
                }
            });
        }
        let lease = job.lease.as_ref().ok_or(QueueError::WrongState {
            id,
            state: job.state,
            operation: op,
            needed: "a lease",
        })?;
        if lease.token != token {
            return Err(QueueError::StaleToken { id, token });
        }
        if lease.expires_at_ms <= now_ms {
            return Err(QueueError::LeaseExpired {
                id,
                expired_at_ms: lease.expires_at_ms,
            });
        }
        Ok(job)
    }

    /// Plans extending a lease to `lease_ms` from now. Returns the new expiry.
    pub fn plan_heartbeat(
        &self,
        id: JobId,
        token: u64,
        lease_ms: u64,
        now_ms: u64,
    ) -> Result<(u64, Transition)> {
        if lease_ms == 0 || lease_ms > DURATION_MS_MAX {
            return Err(QueueError::Invalid {
                field: "lease_ms",
                reason: format!("{lease_ms} is outside 1..={DURATION_MS_MAX}"),
            });
        }
        let mut job = self.leased(id, token, now_ms, "heartbeat")?.clone();
        let until = now_ms.saturating_add(lease_ms);
        if let Some(l) = job.lease.as_mut() {
            l.expires_at_ms = until;
        }
        job.updated_at_ms = now_ms;
        Ok((
            until,
            Transition {
                puts: vec![job],
                ..Transition::default()
            },
        ))
    }

    /// Plans acknowledging a job as done, with an optional result.
    pub fn plan_ack(
        &self,
        id: JobId,
        token: u64,
        result: Option<serde_json::Value>,
        now_ms: u64,
    ) -> Result<Transition> {
        let result_size = result.as_ref().map_or(0, json_size);
        if result_size > PAYLOAD_SIZE_MAX {
            return Err(QueueError::Invalid {
                field: "result",
                reason: format!("{result_size} bytes; the limit is {PAYLOAD_SIZE_MAX}"),
            });
        }
        let mut job = self.leased(id, token, now_ms, "ack")?.clone();
        job.state = JobState::Done;
        job.lease = None;
        job.result = result;
        job.finished_at_ms = Some(now_ms);
        job.updated_at_ms = now_ms;
        Ok(Transition {
            puts: vec![job],
            ..Transition::default()
        })
    }

    /// A failed attempt: back to pending after the backoff (or `retry_delay_ms`), or into
    /// the dead-letter list if no attempt is left or the failure is `permanent` (retrying
    /// cannot help: a validation error, a 4xx from the service).
    fn fail_attempt(
        job: &mut Job,
        error: &str,
        retry_delay_ms: Option<u64>,
        permanent: bool,
        now_ms: u64,
    ) {
        job.lease = None;
        job.last_error = Some(truncate_error(error));
        job.updated_at_ms = now_ms;
        if permanent || job.attempts >= job.attempts_max {
            job.state = JobState::Failed;
            job.finished_at_ms = Some(now_ms);
        } else {
            job.state = JobState::Pending;
            let delay = retry_delay_ms.unwrap_or_else(|| job.backoff.delay_ms(job.attempts));
            job.run_at_ms = now_ms.saturating_add(delay.min(DURATION_MS_MAX));
        }
    }

    /// Plans a nack: the attempt failed with `error`. Returns the job's new state: PENDING
    /// (retried after `retry_delay_ms`, or the job's backoff), or FAILED (the dead-letter
    /// list) when it was the last attempt or the failure is `permanent`, whatever attempts
    /// remain.
    pub fn plan_nack(
        &self,
        id: JobId,
        token: u64,
        error: &str,
        retry_delay_ms: Option<u64>,
        permanent: bool,
        now_ms: u64,
    ) -> Result<(JobState, Transition)> {
        let mut job = self.leased(id, token, now_ms, "nack")?.clone();
        Self::fail_attempt(&mut job, error, retry_delay_ms, permanent, now_ms);
        Ok((
            job.state,
            Transition {
                puts: vec![job],
                ..Transition::default()
            },
        ))
    }

    /// Plans a batch of acks, nacks and heartbeats at `now_ms`: each item as its own
    /// `plan_*` would plan it alone (same answers, same errors), all the successful items'
    /// writes joined in ONE transition. Items never see each other's effects, so the batch
    /// equals the items applied one at a time in order as long as ids are distinct: a
    /// second item for the same job is refused (`Invalid` on `items`), as is every item of
    /// a batch over [`BATCH_COUNT_MAX`].
    pub fn plan_settle(&self, items: &[Settle], now_ms: u64) -> (Vec<Result<Settled>>, Transition) {
        let mut t = Transition::default();
        if items.len() > BATCH_COUNT_MAX {
            let out = items
                .iter()
                .map(|_| {
                    Err(QueueError::Invalid {
                        field: "items",
                        reason: format!(
                            "{} items; at most {BATCH_COUNT_MAX} per batch",
                            items.len()
                        ),
                    })
                })
                .collect();
            return (out, t);
        }
        t.puts.reserve(items.len());
        let mut seen: HashSet<JobId, BuildHasherDefault<IdHasher>> =
            HashSet::with_capacity_and_hasher(items.len(), BuildHasherDefault::default());
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let id = item.id();
            if !seen.insert(id) {
                out.push(Err(QueueError::Invalid {
                    field: "items",
                    reason: format!("job {id} appears twice"),
                }));
                continue;
            }
            let planned = match item {
                Settle::Ack { id, token, result } => self
                    .plan_ack(*id, *token, result.clone(), now_ms)
                    .map(|t| (Settled::Acked, t)),
                Settle::Nack {
                    id,
                    token,
                    error,
                    retry_delay_ms,
                    permanent,
                } => self
                    .plan_nack(*id, *token, error, *retry_delay_ms, *permanent, now_ms)
                    .map(|(st, t)| (Settled::Nacked(st), t)),
                Settle::Heartbeat {
                    id,
                    token,
                    lease_ms,
                } => self
                    .plan_heartbeat(*id, *token, *lease_ms, now_ms)
                    .map(|(until, t)| {
                        (
                            Settled::Extended {
                                lease_expires_at_ms: until,
                            },
                            t,
                        )
                    }),
            };
            match planned {
                Ok((answer, one)) => {
                    t.puts.extend(one.puts);
                    out.push(Ok(answer));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        (out, t)
    }

    /// Plans the expiry of leases that ran out at `now_ms` (at most [`TICK_COUNT_MAX`]):
    /// each job goes back to pending with backoff, or to the dead-letter list.
    pub fn plan_tick(&self, now_ms: u64) -> Transition {
        let mut t = Transition::default();
        for &(at, id) in self.leases.iter().take(TICK_COUNT_MAX) {
            if at > now_ms {
                break;
            }
            if let Some(job) = self.jobs.get(&id) {
                let mut job = job.clone();
                Self::fail_attempt(&mut job, "lease expired", None, false, now_ms);
                t.puts.push(job);
            }
        }
        t
    }

    /// Forgets dedup ids whose window ended (their ATLAS records expire by TTL).
    pub fn expire_dedup(&mut self, now_ms: u64) {
        self.dedup.retain(|_, (_, until)| *until > now_ms);
    }

    /// Plans cancelling a pending job.
    pub fn plan_cancel(&self, id: JobId, now_ms: u64) -> Result<Transition> {
        let job = self.jobs.get(&id).ok_or(QueueError::NotFound { id })?;
        if job.state != JobState::Pending {
            return Err(QueueError::WrongState {
                id,
                state: job.state,
                operation: "cancel",
                needed: "PENDING",
            });
        }
        let mut job = job.clone();
        job.state = JobState::Cancelled;
        job.finished_at_ms = Some(now_ms);
        job.updated_at_ms = now_ms;
        Ok(Transition {
            puts: vec![job],
            ..Transition::default()
        })
    }

    /// Plans moving dead-lettered jobs of `queue` back to pending with fresh attempts: the
    /// given ids, or (with `None`) the oldest [`SWEEP_COUNT_MAX`].
    pub fn plan_redrive(
        &self,
        queue: &str,
        ids: Option<&[JobId]>,
        now_ms: u64,
    ) -> Result<Transition> {
        let mut t = Transition::default();
        let chosen: Vec<JobId> = match ids {
            Some(ids) => {
                if ids.len() > SWEEP_COUNT_MAX {
                    return Err(QueueError::Invalid {
                        field: "ids",
                        reason: format!("at most {SWEEP_COUNT_MAX} per call"),
                    });
                }
                ids.to_vec()
            }
            None => self
                .queues
                .get(queue)
                .and_then(|q| q.by_state.get(&JobState::Failed))
                .map(|s| s.iter().take(SWEEP_COUNT_MAX).copied().collect())
                .unwrap_or_default(),
        };
        let depth = self.queues.get(queue).map_or(0, QueueIndex::depth);
        if depth + chosen.len() as u64 > self.config.depth_max {
            return Err(QueueError::QueueFull {
                queue: queue.to_owned(),
                depth,
                depth_max: self.config.depth_max,
            });
        }
        for id in chosen {
            let job = self.jobs.get(&id).ok_or(QueueError::NotFound { id })?;
            if job.state != JobState::Failed || job.queue != queue {
                return Err(QueueError::WrongState {
                    id,
                    state: job.state,
                    operation: "redrive",
                    needed: "FAILED in this queue",
                });
            }
            let mut job = job.clone();
            job.state = JobState::Pending;
            job.attempts = 0;
            job.run_at_ms = now_ms;
            job.finished_at_ms = None;
            job.updated_at_ms = now_ms;
            t.puts.push(job);
        }
        Ok(t)
    }

    /// Plans deleting finished jobs (done and cancelled, and failed if `include_failed`)
    /// that finished at least `retention_ms` ago; at most [`SWEEP_COUNT_MAX`] per call.
    /// The newest job ever enqueued is kept (one record): ids are rebuilt from the jobs on
    /// load, and it keeps them from repeating after a restart with the clock set back.
    pub fn plan_purge(&self, retention_ms: u64, include_failed: bool, now_ms: u64) -> Transition {
        let mut t = Transition {
            deletes: Vec::with_capacity(self.finished.len().min(SWEEP_COUNT_MAX)),
            ..Transition::default()
        };
        let cutoff = now_ms.saturating_sub(retention_ms);
        for &(at, id) in &self.finished {
            if at > cutoff || t.deletes.len() >= SWEEP_COUNT_MAX {
                break;
            }
            // The newest job stays: it carries the id high-water mark across a reopen, so
            // ids never repeat even if the wall clock is behind it then.
            if id == self.id_last {
                continue;
            }
            if let Some(job) = self.jobs.get(&id)
                && (job.state != JobState::Failed || include_failed)
            {
                t.deletes.push(id);
            }
        }
        t
    }

    /// Jobs of `queue` in `state`, in id order, after `cursor`.
    pub fn list(
        &self,
        queue: &str,
        state: JobState,
        cursor: Option<JobId>,
        limit: usize,
    ) -> Result<(Vec<&Job>, Option<JobId>)> {
        let set = self.queues.get(queue).and_then(|q| q.by_state.get(&state));
        self.page(set, cursor, limit)
    }

    /// Jobs of `queue` in `state` owned by `owner`, in id order, after `cursor`. Walks the
    /// owner's own index: O(log n + limit), however many jobs other owners have there.
    pub fn list_owned(
        &self,
        queue: &str,
        state: JobState,
        owner: &str,
        cursor: Option<JobId>,
        limit: usize,
    ) -> Result<(Vec<&Job>, Option<JobId>)> {
        let set = self
            .queues
            .get(queue)
            .and_then(|q| q.by_owner.get(owner))
            .and_then(|m| m.get(&state));
        self.page(set, cursor, limit)
    }

    fn page(
        &self,
        set: Option<&BTreeSet<JobId>>,
        cursor: Option<JobId>,
        limit: usize,
    ) -> Result<(Vec<&Job>, Option<JobId>)> {
        if limit == 0 || limit > LIST_LIMIT_MAX {
            return Err(QueueError::Invalid {
                field: "limit",
                reason: format!("{limit} is outside 1..={LIST_LIMIT_MAX}"),
            });
        }
        let Some(set) = set else {
            return Ok((Vec::new(), None));
        };
        let start = match cursor {
            Some(c) => std::ops::Bound::Excluded(c),
            None => std::ops::Bound::Unbounded,
        };
        let mut it = set.range((start, std::ops::Bound::Unbounded));
        let page: Vec<&Job> = it
            .by_ref()
            .take(limit)
            .filter_map(|id| self.jobs.get(id))
            .collect();
        let next = if it.next().is_some() {
            page.last().map(|j| j.id)
        } else {
            None
        };
        Ok((page, next))
    }

    /// Counts of one queue at `now_ms`.
    pub fn stats(&self, queue: &str, now_ms: u64) -> QueueStats {
        let Some(q) = self.queues.get(queue) else {
            return QueueStats::default();
        };
        let due_delayed = q.delayed.iter().take_while(|(at, _)| *at <= now_ms).count() as u64;
        let oldest_delayed_due = q
            .delayed
            .first()
            .map(|(at, _)| *at)
            .filter(|at| *at <= now_ms);
        let oldest_ready = q.ready_since.first().map(|(at, _)| *at);
        let oldest = match (oldest_ready, oldest_delayed_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        QueueStats {
            pending_count: q.count(JobState::Pending),
            ready_count: q.ready.len() as u64 + due_delayed,
            delayed_count: q.delayed.len() as u64 - due_delayed,
            in_progress_count: q.count(JobState::InProgress),
            done_count: q.count(JobState::Done),
            failed_count: q.count(JobState::Failed),
            cancelled_count: q.count(JobState::Cancelled),
            oldest_ready_age_ms: oldest.map(|at| now_ms.saturating_sub(at)),
        }
    }

    /// The earliest time at which a lease expires (when `tick` has work).
    pub fn next_lease_expiry_ms(&self) -> Option<u64> {
        self.leases.first().map(|(at, _)| *at)
    }

    fn unindex(
        queues: &mut BTreeMap<String, QueueIndex>,
        leases: &mut BTreeSet<(u64, JobId)>,
        finished: &mut BTreeSet<(u64, JobId)>,
        job: &Job,
    ) {
        let id = job.id;
        if let Some(q) = queues.get_mut(&job.queue) {
            // A pending job is in `delayed`, or (promoted) in `ready` and `ready_since`;
            // no other job is in any of the three (`check_invariants`).
            if job.state == JobState::Pending && !q.delayed.remove(&(job.run_at_ms, id)) {
                q.ready.remove(&(Reverse(job.priority), job.run_at_ms, id));
                q.ready_since.remove(&(job.run_at_ms, id));
            }
            if let Some(s) = q.by_state.get_mut(&job.state) {
                s.remove(&id);
            }
            if let Some(owner) = job.owner.as_deref()
                && let Some(m) = q.by_owner.get_mut(owner)
            {
                if let Some(s) = m.get_mut(&job.state) {
                    s.remove(&id);
                    if s.is_empty() {
                        m.remove(&job.state);
                    }
                }
                if m.is_empty() {
                    q.by_owner.remove(owner);
                }
            }
        }
        if let Some(l) = &job.lease {
            leases.remove(&(l.expires_at_ms, id));
        }
        if let Some(at) = job.finished_at_ms {
            finished.remove(&(at, id));
        }
    }

    fn index(
        queues: &mut BTreeMap<String, QueueIndex>,
        leases: &mut BTreeSet<(u64, JobId)>,
        finished: &mut BTreeSet<(u64, JobId)>,
        job: &Job,
    ) {
        let id = job.id;
        // The name is cloned only for a queue's first job.
        let q = match queues.get_mut(&job.queue) {
            Some(q) => q,
            None => queues.entry(job.queue.clone()).or_default(),
        };
        q.by_state.entry(job.state).or_default().insert(id);
        if let Some(owner) = &job.owner {
            let m = match q.by_owner.get_mut(&**owner) {
                Some(m) => m,
                None => q.by_owner.entry(owner.clone()).or_default(),
            };
            m.entry(job.state).or_default().insert(id);
        }
        match job.state {
            // A job due when it became pending is ready at once; a later one waits in
            // `delayed` until `promote_due` moves it (so a bulk enqueue never leaves the
            // next claim a backlog to promote).
            JobState::Pending if job.run_at_ms <= job.updated_at_ms => {
                q.ready.insert((Reverse(job.priority), job.run_at_ms, id));
                q.ready_since.insert((job.run_at_ms, id));
            }
            JobState::Pending => {
                q.delayed.insert((job.run_at_ms, id));
            }
            JobState::InProgress => {
                if let Some(l) = &job.lease {
                    leases.insert((l.expires_at_ms, id));
                }
            }
            _ => {}
        }
        if let Some(at) = job.finished_at_ms {
            finished.insert((at, id));
        }
    }

    /// Applies a transition that was made durable. Panics if it deletes an unknown job (a
    /// plan/apply mismatch is a bug).
    pub fn apply(&mut self, t: Transition) {
        let (queues, leases, finished) = (&mut self.queues, &mut self.leases, &mut self.finished);
        for job in t.puts {
            self.id_last = self.id_last.max(job.id);
            self.token_last = self.token_last.max(job.token_last);
            // Replaced in place: no remove + insert of the map entry.
            match self.jobs.get_mut(&job.id) {
                Some(slot) => {
                    // The store writes a state record for this version, not the whole
                    // job: what it leaves out must not have changed (module docs of
                    // `job`).
                    debug_assert!(
                        slot.same_creation(&job),
                        "a transition changed job {} outside its state record",
                        job.id
                    );
                    Self::unindex(queues, leases, finished, slot);
                    Self::index(queues, leases, finished, &job);
                    *slot = job;
                }
                None => {
                    Self::index(queues, leases, finished, &job);
                    self.jobs.insert(job.id, job);
                }
            }
        }
        for id in &t.deletes {
            let old = self
                .jobs
                .remove(id)
                .unwrap_or_else(|| panic!("transition deletes unknown job {id}"));
            // A dedup id keeps suppressing duplicates for its whole window, even once its
            // job was purged (as in SQS): the window, not the job, bounds it.
            Self::unindex(queues, leases, finished, &old);
        }
        for d in t.dedup_puts {
            self.dedup.insert(d.key, (d.record.job, d.until_ms));
        }
        for s in t.schedule_puts {
            let id = s.id;
            // Planned from a parsed expression: a failure is a plan/apply mismatch (a bug).
            self.schedules
                .put(s)
                .unwrap_or_else(|e| panic!("transition puts a bad schedule {id}: {e}"));
        }
        for id in t.schedule_deletes {
            self.schedules.remove(id);
        }
    }

    /// Loads a job read back from ATLAS (on open).
    pub fn load_job(&mut self, job: Job) {
        self.apply(Transition {
            puts: vec![job],
            ..Transition::default()
        });
    }

    /// Lays a job's state record read back from ATLAS over the job loaded from its whole
    /// record (on open, after every job). False when no such job is loaded.
    pub fn load_state(&mut self, id: JobId, r: StateRecord) -> bool {
        let Some(mut job) = self.jobs.get(&id).cloned() else {
            return false;
        };
        job.apply_state(r);
        self.load_job(job);
        true
    }

    /// Loads a dedup record read back from ATLAS (on open), under its scoped key
    /// (`keys::job_dedup_scoped`). With `replace` false, a record already loaded under the
    /// key wins (a record of the earlier layout yields to one written since).
    pub fn load_dedup(&mut self, key: String, id: JobId, until_ms: u64, replace: bool) {
        if replace {
            self.dedup.insert(key, (id, until_ms));
        } else {
            self.dedup.entry(key).or_insert((id, until_ms));
        }
    }

    /// Asserts every index agrees with the jobs and schedules. O(jobs): for tests.
    pub fn check_invariants(&self) {
        self.schedules.check_invariants();
        let mut leases = 0;
        let mut finished = 0;
        let mut owned: BTreeMap<&str, usize> = BTreeMap::new();
        for (id, job) in &self.jobs {
            assert_eq!(*id, job.id);
            assert!(job.id <= self.id_last, "id_last");
            assert!(job.token_last <= self.token_last, "token_last");
            assert!(
                job.attempts <= job.attempts_max,
                "job {id}: attempts over max"
            );
            let q = &self.queues[&job.queue];
            for s in JobState::ALL {
                let member = q.by_state.get(&s).is_some_and(|set| set.contains(id));
                assert_eq!(member, s == job.state, "job {id} state index");
            }
            if let Some(owner) = job.owner.as_deref() {
                let m = &q.by_owner[owner];
                for s in JobState::ALL {
                    let member = m.get(&s).is_some_and(|set| set.contains(id));
                    assert_eq!(member, s == job.state, "job {id} owner index");
                }
                *owned.entry(&job.queue).or_default() += 1;
            }
            let ready = q
                .ready
                .contains(&(Reverse(job.priority), job.run_at_ms, *id));
            let delayed = q.delayed.contains(&(job.run_at_ms, *id));
            assert_eq!(ready, q.ready_since.contains(&(job.run_at_ms, *id)));
            match job.state {
                JobState::Pending => {
                    assert!(ready ^ delayed, "pending job {id} is ready xor delayed");
                    assert!(job.lease.is_none());
                }
                _ => assert!(!ready && !delayed, "job {id} in a pending index"),
            }
            match (&job.lease, job.state) {
                (Some(l), JobState::InProgress) => {
                    assert!(self.leases.contains(&(l.expires_at_ms, *id)));
                    assert_eq!(l.token, job.token_last, "the lease holds the last token");
                    leases += 1;
                }
                (None, JobState::InProgress) => panic!("job {id} in progress without lease"),
                (Some(_), _) => panic!("job {id} has a lease but is {:?}", job.state),
                (None, _) => {}
            }
            if job.state == JobState::Failed {
                // The last attempt failed, or an earlier one permanently.
                assert!(job.attempts >= 1, "job {id} failed without an attempt");
            }
            assert_eq!(job.finished_at_ms.is_some(), job.state.is_finished());
            if let Some(at) = job.finished_at_ms {
                assert!(self.finished.contains(&(at, *id)));
                finished += 1;
            }
        }
        assert_eq!(self.leases.len(), leases, "lease index size");
        assert_eq!(self.finished.len(), finished, "finished index size");
        for (name, q) in &self.queues {
            let n: usize = q.by_state.values().map(BTreeSet::len).sum();
            assert!(n <= self.jobs.len());
            let mut n_owned = 0;
            for m in q.by_owner.values() {
                assert!(!m.is_empty(), "queue {name}: an empty owner map is kept");
                for set in m.values() {
                    assert!(!set.is_empty(), "queue {name}: an empty owner set is kept");
                    n_owned += set.len();
                }
            }
            assert_eq!(
                n_owned,
                owned.get(name.as_str()).copied().unwrap_or(0),
                "queue {name}: owner index size"
            );
        }
    }
}
