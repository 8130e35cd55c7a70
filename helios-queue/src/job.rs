//! A job and its parts: [`JobId`], [`JobState`], [`Backoff`], [`Lease`], and the
//! [`EnqueueRequest`] that creates one. Plain data, serialized as JSON into ATLAS in two
//! records:
//!
//! - `job:{id}`, the whole job ([`Job::encode_json`]), written when the job is created;
//! - `job:state:{id}`, its [`StateRecord`]: the fields a transition changes (state,
//!   attempts, lease, tokens, times, error, result), written by every transition after the
//!   first one, so a claim or an ack logs ~150 bytes instead of the whole job.
//!
//! A job reads back as its whole record with the state record, when there is one, laid
//! over it ([`Job::apply_state`]). Invariant: the fields outside the state record (id,
//! queue, owner, payload, priority, attempts_max, backoff, dedup id, creation time, trace)
//! never change after the job is created (`QueueState::apply` checks it in debug builds),
//! so the whole record never goes stale in them. Records of the earlier layout (whole
//! records rewritten by every transition, no state record) read back as they are.

use crate::error::{QueueError, Result};
use crate::limits::{ATTEMPTS_MAX, DURATION_MS_MAX, ID_SIZE_MAX, QUEUE_NAME_SIZE_MAX};
use helios_core::TraceContext;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A job id: 128 bits, written as 32 lowercase hex digits (in URLs, records and keys; the
/// same digits as a UUID's `simple` form, and nothing else is accepted). Ids made now are
/// UUIDv7 (RFC 9562), laid out as:
///
/// ```text
/// bits 127..80  ms since the Unix epoch (48)      bits 65..64  random (2)
/// bits  79..76  version, 7                         bits 63..62  variant, 0b10
/// bits  75..66  counter within the ms (10)         bits 61..0   random (62)
/// ```
///
/// 64 random bits (from the queue's injected randomness) make an id useless for guessing
/// another; the ms and the counter (method 1 of RFC 9562 section 6.2) make ids sort by
/// creation, which the FIFO order within a priority relies on. The counter starts at 0
/// in each ms; past 1023 ids in one ms the ms field moves on by one (ids may run ahead of
/// the clock under that load, never back).
///
/// Ids of the earlier layout (the ms in the high 64 bits, a sequence in the low 64) still
/// parse, load and print the same: their top 16 bits are 0, so they sort below every new
/// id and an upgraded queue keeps its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId {
    // Invariant: (hi, lo) order is the order of the 128-bit value (fields in this order).
    hi: u64,
    lo: u64,
}

/// Highest counter value in one ms.
const ID_COUNTER_MAX: u64 = (1 << 10) - 1;
/// Highest ms the 48-bit field holds (year 10889).
const ID_MS_MAX: u64 = (1 << 48) - 1;

impl JobId {
    /// The id with this 128-bit value.
    pub const fn from_u128(v: u128) -> Self {
        Self {
            hi: (v >> 64) as u64,
            lo: v as u64,
        }
    }

    /// The 128-bit value.
    pub const fn as_u128(&self) -> u128 {
        ((self.hi as u128) << 64) | self.lo as u128
    }

    /// The creation ms of a UUIDv7 id; `None` for an id of the earlier layout.
    pub fn uuid_v7_ms(&self) -> Option<u64> {
        let v7 = (self.hi >> 12) & 0xf == 7 && self.lo >> 62 == 0b10;
        v7.then_some(self.hi >> 16)
    }

    fn v7(ms: u64, counter: u64, random: u64) -> Self {
        debug_assert!(ms <= ID_MS_MAX && counter <= ID_COUNTER_MAX);
        Self {
            hi: (ms << 16) | (7 << 12) | (counter << 2) | (random >> 62),
            lo: (0b10 << 62) | (random & ((1 << 62) - 1)),
        }
    }

    /// The id to issue after `last` at `now_ms`, its 64 random bits taken from `random`:
    /// above `last` whatever the clock did. `None` once the ms field is exhausted.
    pub(crate) fn next_after(last: JobId, now_ms: u64, random: u64) -> Option<JobId> {
        // For an id of the earlier layout these read garbage, far below any real clock,
        // so the first branch is taken; the check at the end covers the rest.
        let last_ms = last.hi >> 16;
        let last_counter = (last.hi >> 2) & ID_COUNTER_MAX;
        let (ms, counter) = if now_ms > last_ms {
            (now_ms, 0)
        } else if last_counter < ID_COUNTER_MAX {
            (last_ms, last_counter + 1)
        } else {
            (last_ms + 1, 0)
        };
        if ms > ID_MS_MAX {
            return None;
        }
        let id = Self::v7(ms, counter, random);
        if id > last {
            return Some(id);
        }
        // Only an earlier-layout `last` read as (ms, counter) gets here.
        (last_ms < ID_MS_MAX).then(|| Self::v7(last_ms + 1, 0, random))
    }

    /// The 32 lowercase hex digits (formatted by hand: ids are written on every
    /// transition, and `fmt` machinery showed in profiles).
    pub fn to_hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[..16].copy_from_slice(&helios_core::digits::hex(self.hi).0);
        out[16..].copy_from_slice(&helios_core::digits::hex(self.lo).0);
        out
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.to_hex();
        // Hex digits are ASCII.
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl FromStr for JobId {
    type Err = QueueError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || QueueError::BadJobId { text: s.to_owned() };
        if s.len() != 32
            || !s
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(bad());
        }
        let hi = u64::from_str_radix(&s[..16], 16).map_err(|_| bad())?;
        let lo = u64::from_str_radix(&s[16..], 16).map_err(|_| bad())?;
        Ok(JobId { hi, lo })
    }
}

impl Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let hex = self.to_hex();
        match std::str::from_utf8(&hex) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// Waiting to be claimed: ready, or delayed until `run_at_ms`.
    Pending,
    /// Claimed by a worker under a lease.
    InProgress,
    /// Acknowledged as done.
    Done,
    /// Out of attempts: in the queue's dead-letter list.
    Failed,
    /// Cancelled before it ran.
    Cancelled,
}

impl JobState {
    /// All states, in order.
    pub const ALL: [JobState; 5] = [
        JobState::Pending,
        JobState::InProgress,
        JobState::Done,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// Whether the job is finished (no further transition but redrive or purge).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }
}

/// How long to wait before a failed attempt is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Backoff {
    /// The same delay every time.
    Fixed {
        /// The delay.
        delay_ms: u64,
    },
    /// `base_ms * 2^(attempt - 1)`, at most `max_ms`.
    Exponential {
        /// The first delay.
        base_ms: u64,
        /// The cap.
        max_ms: u64,
    },
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::Exponential {
            base_ms: 1_000,
            max_ms: 300_000,
        }
    }
}

impl Backoff {
    /// The delay after attempt number `attempt` (1-based) failed.
    pub fn delay_ms(&self, attempt: u32) -> u64 {
        match *self {
            Backoff::Fixed { delay_ms } => delay_ms,
            Backoff::Exponential { base_ms, max_ms } => {
                let shift = attempt.saturating_sub(1).min(63);
                base_ms
                    .checked_mul(1u64 << shift)
                    .map_or(max_ms, |d| d.min(max_ms))
            }
        }
    }

    fn validate(&self) -> Result<()> {
        let ok = match *self {
            Backoff::Fixed { delay_ms } => delay_ms <= DURATION_MS_MAX,
            Backoff::Exponential { base_ms, max_ms } => {
                base_ms <= max_ms && max_ms <= DURATION_MS_MAX
            }
        };
        if ok {
            Ok(())
        } else {
            Err(QueueError::Invalid {
                field: "backoff",
                reason: format!("{self:?}: delays must be <= {DURATION_MS_MAX} ms and base <= max"),
            })
        }
    }
}

/// A worker's claim on a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The worker holding it.
    pub worker: String,
    /// Fencing token: ack, nack and heartbeat must present it.
    pub token: u64,
    /// When the lease runs out (queue clock, see the crate docs).
    pub expires_at_ms: u64,
}

/// A job, as stored under `job:{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The id.
    pub id: JobId,
    /// The queue it belongs to.
    pub queue: String,
    /// Who enqueued it (the gateway's user id). Only the owner and `jobs:admin` reach it
    /// over HTTP; a job without one (enqueued by the embedded API, or before owners were
    /// recorded) is reached by `jobs:admin` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Arc<str>>,
    /// The caller's payload: shared, not copied, by every version of the job (a claim or an
    /// ack writes a new record but never copies the payload tree).
    pub payload: Arc<serde_json::Value>,
    /// Its state.
    pub state: JobState,
    /// Higher runs first.
    pub priority: i32,
    /// Not claimed before this time.
    pub run_at_ms: u64,
    /// Claims so far.
    pub attempts: u32,
    /// Claims allowed before the job fails into the dead-letter list.
    pub attempts_max: u32,
    /// Delay before a retry.
    pub backoff: Backoff,
    /// The current lease, while in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// The last fencing token issued for this job (tokens only grow).
    pub token_last: u64,
    /// The dedup id it was enqueued with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_id: Option<String>,
    /// Enqueue time.
    pub created_at_ms: u64,
    /// Last transition time.
    pub updated_at_ms: u64,
    /// When it reached Done, Failed or Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// The last error reported by a nack or a lease expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The result given with the ack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The W3C trace context it was enqueued under: a worker's run of it continues that
    /// trace. Records written before it existed read as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
}

impl JobState {
    /// The name in records and the API (`PENDING`, `IN_PROGRESS`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "PENDING",
            JobState::InProgress => "IN_PROGRESS",
            JobState::Done => "DONE",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
        }
    }
}

/// Appends `s` as a JSON string (serde_json's escaping).
fn push_str(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    serde_json::to_writer(&mut *out, s)
}

/// The fields of a job that its transitions change, stored under `job:state:{id}` once
/// the job has moved past its enqueue (module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRecord {
    /// [`Job::state`].
    pub state: JobState,
    /// [`Job::run_at_ms`].
    pub run_at_ms: u64,
    /// [`Job::attempts`].
    pub attempts: u32,
    /// [`Job::lease`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// [`Job::token_last`].
    pub token_last: u64,
    /// [`Job::updated_at_ms`].
    pub updated_at_ms: u64,
    /// [`Job::finished_at_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// [`Job::last_error`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// [`Job::result`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

impl Job {
    /// Whether `other` has the same fields outside the [`StateRecord`] (the part written
    /// once, at creation). The payload is compared by pointer first: every version of a
    /// job shares it.
    pub fn same_creation(&self, other: &Job) -> bool {
        self.id == other.id
            && self.queue == other.queue
            && self.owner == other.owner
            && (Arc::ptr_eq(&self.payload, &other.payload) || self.payload == other.payload)
            && self.priority == other.priority
            && self.attempts_max == other.attempts_max
            && self.backoff == other.backoff
            && self.dedup_id == other.dedup_id
            && self.created_at_ms == other.created_at_ms
            && self.trace == other.trace
    }

    /// The job's state record (a copy of its changing fields).
    pub fn state_record(&self) -> StateRecord {
        StateRecord {
            state: self.state,
            run_at_ms: self.run_at_ms,
            attempts: self.attempts,
            lease: self.lease.clone(),
            token_last: self.token_last,
            updated_at_ms: self.updated_at_ms,
            finished_at_ms: self.finished_at_ms,
            last_error: self.last_error.clone(),
            result: self.result.clone(),
        }
    }

    /// Lays a state record read back over the job (its whole record): the job as of the
    /// transition that wrote the state record.
    pub fn apply_state(&mut self, r: StateRecord) {
        self.state = r.state;
        self.run_at_ms = r.run_at_ms;
        self.attempts = r.attempts;
        self.lease = r.lease;
        self.token_last = r.token_last;
        self.updated_at_ms = r.updated_at_ms;
        self.finished_at_ms = r.finished_at_ms;
        self.last_error = r.last_error;
        self.result = r.result;
    }

    /// Appends the job's [`StateRecord`] as JSON: the same bytes as
    /// `serde_json::to_writer(out, &self.state_record())`, without the copy (a test checks
    /// the two agree). Every transition but the enqueue writes one.
    pub fn encode_state_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(br#"{"state":""#);
        out.extend_from_slice(self.state.as_str().as_bytes());
        out.extend_from_slice(br#"","run_at_ms":"#);
        helios_core::digits::push_dec(out, self.run_at_ms);
        out.extend_from_slice(br#","attempts":"#);
        helios_core::digits::push_dec(out, u64::from(self.attempts));
        self.encode_lease(out)?;
        out.extend_from_slice(br#","token_last":"#);
        helios_core::digits::push_dec(out, self.token_last);
        out.extend_from_slice(br#","updated_at_ms":"#);
        helios_core::digits::push_dec(out, self.updated_at_ms);
        self.encode_outcome(out)?;
        out.push(b'}');
        Ok(())
    }

    /// `,"lease":{...}` when there is one.
    fn encode_lease(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        if let Some(l) = &self.lease {
            out.extend_from_slice(br#","lease":{"worker":"#);
            push_str(out, &l.worker)?;
            out.extend_from_slice(br#","token":"#);
            helios_core::digits::push_dec(out, l.token);
            out.extend_from_slice(br#","expires_at_ms":"#);
            helios_core::digits::push_dec(out, l.expires_at_ms);
            out.push(b'}');
        }
        Ok(())
    }

    /// `,"finished_at_ms":..,"last_error":..,"result":..`, each when set.
    fn encode_outcome(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        if let Some(f) = self.finished_at_ms {
            out.extend_from_slice(br#","finished_at_ms":"#);
            helios_core::digits::push_dec(out, f);
        }
        if let Some(e) = &self.last_error {
            out.extend_from_slice(br#","last_error":"#);
            push_str(out, e)?;
        }
        if let Some(r) = &self.result {
            out.extend_from_slice(br#","result":"#);
            serde_json::to_writer(&mut *out, r)?;
        }
        Ok(())
    }

    /// Appends the job's JSON record: the same bytes as `serde_json::to_writer(out, self)`,
    /// written by hand because every transition writes one (a test checks the two agree).
    pub fn encode_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(br#"{"id":""#);
        out.extend_from_slice(&self.id.to_hex());
        out.extend_from_slice(br#"","queue":"#);
        push_str(out, &self.queue)?;
        if let Some(o) = &self.owner {
            out.extend_from_slice(br#","owner":"#);
            push_str(out, o)?;
        }
        out.extend_from_slice(br#","payload":"#);
        serde_json::to_writer(&mut *out, &self.payload)?;
        out.extend_from_slice(br#","state":""#);
        out.extend_from_slice(self.state.as_str().as_bytes());
        out.extend_from_slice(br#"","priority":"#);
        if self.priority < 0 {
            out.push(b'-');
        }
        helios_core::digits::push_dec(out, u64::from(self.priority.unsigned_abs()));
        out.extend_from_slice(br#","run_at_ms":"#);
        helios_core::digits::push_dec(out, self.run_at_ms);
        out.extend_from_slice(br#","attempts":"#);
        helios_core::digits::push_dec(out, u64::from(self.attempts));
        out.extend_from_slice(br#","attempts_max":"#);
        helios_core::digits::push_dec(out, u64::from(self.attempts_max));
        match self.backoff {
            Backoff::Fixed { delay_ms } => {
                out.extend_from_slice(br#","backoff":{"kind":"fixed","delay_ms":"#);
                helios_core::digits::push_dec(out, delay_ms);
            }
            Backoff::Exponential { base_ms, max_ms } => {
                out.extend_from_slice(br#","backoff":{"kind":"exponential","base_ms":"#);
                helios_core::digits::push_dec(out, base_ms);
                out.extend_from_slice(br#","max_ms":"#);
                helios_core::digits::push_dec(out, max_ms);
            }
        }
        out.push(b'}');
        self.encode_lease(out)?;
        out.extend_from_slice(br#","token_last":"#);
        helios_core::digits::push_dec(out, self.token_last);
        if let Some(d) = &self.dedup_id {
            out.extend_from_slice(br#","dedup_id":"#);
            push_str(out, d)?;
        }
        out.extend_from_slice(br#","created_at_ms":"#);
        helios_core::digits::push_dec(out, self.created_at_ms);
        out.extend_from_slice(br#","updated_at_ms":"#);
        helios_core::digits::push_dec(out, self.updated_at_ms);
        self.encode_outcome(out)?;
        if let Some(t) = &self.trace {
            out.extend_from_slice(br#","trace":"#);
            serde_json::to_writer(&mut *out, t)?;
        }
        out.push(b'}');
        Ok(())
    }
}

/// A dedup record, stored as JSON under `job:dedup:{queue}/{owner}/{dedup_id}`
/// ([`helios_core::keys::job_dedup_scoped`]) with the dedup window as its TTL: while it
/// lives, an enqueue by the same owner into the same queue with the same dedup id returns
/// `job` instead of creating one.
///
/// Records of the earlier layout (`job:dedup:{dedup_id}`, one scope for every queue and
/// owner) hold only the job id, as 32 hex digits; they are read into the scope of the job
/// they name (no owner, its queue) and written no more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupRecord {
    /// The first job enqueued with the dedup id.
    pub job: JobId,
    /// Its queue.
    pub queue: String,
    /// Its owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Arc<str>>,
    /// The dedup id.
    pub dedup_id: String,
}

impl DedupRecord {
    /// The ATLAS key of the record (also its key in memory).
    pub fn key(&self) -> Result<String> {
        helios_core::keys::job_dedup_scoped(self.owner.as_deref(), &self.queue, &self.dedup_id)
            .map_err(|e| QueueError::Invalid {
                field: "dedup_id",
                reason: e.to_string(),
            })
    }
}

/// What to enqueue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnqueueRequest {
    /// Queue name, `[A-Za-z0-9_.-]{1,64}`.
    pub queue: String,
    /// The owner recorded on the job (see [`Job::owner`]); it also scopes the dedup id.
    /// 1..=256 bytes without ':', '/' or control characters.
    #[serde(default)]
    pub owner: Option<Arc<str>>,
    /// Any JSON (shared with the job it creates, not copied).
    #[serde(default)]
    pub payload: Arc<serde_json::Value>,
    /// Higher runs first (default 0).
    #[serde(default)]
    pub priority: i32,
    /// Run no earlier than this many ms from now.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Or no earlier than this absolute time (ms since the epoch).
    #[serde(default)]
    pub run_at_ms: Option<u64>,
    /// Claims allowed (default from the queue config).
    #[serde(default)]
    pub attempts_max: Option<u32>,
    /// Retry delay policy (default from the queue config).
    #[serde(default)]
    pub backoff: Option<Backoff>,
    /// A second enqueue with the same dedup id, by the same owner into the same queue,
    /// within the dedup window returns the first job instead of creating one.
    #[serde(default)]
    pub dedup_id: Option<String>,
    /// The W3C trace context to store with the job (see [`Job::trace`]); checked and
    /// bounded ([`TraceContext::validate`]).
    #[serde(default)]
    pub trace: Option<TraceContext>,
}

impl EnqueueRequest {
    /// A request with defaults for everything but the queue and payload.
    pub fn new(queue: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            queue: queue.into(),
            owner: None,
            payload: Arc::new(payload),
            priority: 0,
            delay_ms: None,
            run_at_ms: None,
            attempts_max: None,
            backoff: None,
            dedup_id: None,
            trace: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        validate_queue_name(&self.queue)?;
        if self.delay_ms.is_some() && self.run_at_ms.is_some() {
            return Err(QueueError::Invalid {
                field: "delay_ms",
                reason: "give delay_ms or run_at_ms, not both".to_owned(),
            });
        }
        if self.delay_ms.is_some_and(|d| d > DURATION_MS_MAX) {
            return Err(QueueError::Invalid {
                field: "delay_ms",
                reason: format!("must be <= {DURATION_MS_MAX}"),
            });
        }
        if let Some(a) = self.attempts_max
            && !(1..=ATTEMPTS_MAX).contains(&a)
        {
            return Err(QueueError::Invalid {
                field: "attempts_max",
                reason: format!("{a} is outside 1..={ATTEMPTS_MAX}"),
            });
        }
        if let Some(b) = &self.backoff {
            b.validate()?;
        }
        if let Some(d) = &self.dedup_id {
            validate_id("dedup_id", d)?;
        }
        if let Some(o) = &self.owner {
            validate_owner(o)?;
        }
        if let Some(t) = &self.trace {
            t.validate().map_err(|e| QueueError::Invalid {
                field: "trace",
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }
}

/// Checks an owner: a valid id ([`validate_id`]) without '/' either (it is a part of the
/// scoped dedup key, `helios_core::keys::job_dedup_scoped`).
pub fn validate_owner(owner: &str) -> Result<()> {
    validate_id("owner", owner)?;
    if owner.contains('/') {
        return Err(QueueError::Invalid {
            field: "owner",
            reason: "must not contain '/'".to_owned(),
        });
    }
    Ok(())
}

/// Checks a queue name: `[A-Za-z0-9_.-]{1,64}`.
pub fn validate_queue_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > QUEUE_NAME_SIZE_MAX
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(QueueError::Invalid {
            field: "queue",
            reason: format!("{name:?} is not 1..={QUEUE_NAME_SIZE_MAX} of [A-Za-z0-9_.-]"),
        });
    }
    Ok(())
}

/// Checks a dedup or worker id: 1..=256 bytes, no ':' and no control characters.
pub fn validate_id(field: &'static str, id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > ID_SIZE_MAX
        || id.contains(':')
        || id.chars().any(char::is_control)
    {
        return Err(QueueError::Invalid {
            field,
            reason: format!("must be 1..={ID_SIZE_MAX} bytes without ':' or control characters"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_id_text_round_trips_and_sorts() {
        // An id of the earlier layout: ms 5, sequence 2.
        let a = JobId::from_u128((5 << 64) | 2);
        let b = JobId::from_u128((5 << 64) | 10);
        assert_eq!(a.to_string(), "00000000000000050000000000000002");
        assert_eq!(a.to_string().parse::<JobId>().unwrap(), a);
        let big = JobId::from_u128(u128::MAX - 7);
        assert_eq!(big.to_string(), format!("{:032x}", u128::MAX - 7));
        assert_eq!(big.to_string().parse::<JobId>().unwrap(), big);
        assert!(a < b && a.to_string() < b.to_string());
        assert!("xyz".parse::<JobId>().is_err());
        assert!("0000000000000005000000000000000A".parse::<JobId>().is_err());
        // The hyphenated UUID form is not an id here: one text form only.
        assert!(
            "01890a5d-ac96-774b-bcce-b302099a8057"
                .parse::<JobId>()
                .is_err()
        );
        assert!("+0000000000000050000000000000002".parse::<JobId>().is_err());
    }

    /// Shows new ids are UUIDv7 with 64 bits from the random source, time-ordered, strictly
    /// growing within a ms and across the counter's end and a clock that went back, and
    /// above every id of the earlier layout.
    #[test]
    fn new_ids_are_uuid_v7_and_grow() {
        let now: u64 = 1_700_000_000_000;
        let old = JobId::from_u128((u128::from(now) << 64) | 99);
        assert_eq!(old.uuid_v7_ms(), None);
        let a = JobId::next_after(old, now, u64::MAX).unwrap();
        assert!(a > old);
        assert_eq!(a.uuid_v7_ms(), Some(now));
        let text = a.to_string();
        assert_eq!(&text[12..13], "7", "version nibble");
        assert!(matches!(&text[16..17], "8" | "9" | "a" | "b"), "variant");
        // The 64 random bits land in the id: two ids differing only in them differ in
        // exactly those bits.
        let r0 = JobId::next_after(old, now, 0).unwrap();
        assert_eq!((a.as_u128() ^ r0.as_u128()).count_ones(), 64);
        // Same ms: the counter orders them whatever the random bits say.
        let mut last = a;
        for i in 0..3000u64 {
            let random = if i % 2 == 0 { 0 } else { u64::MAX };
            let next = JobId::next_after(last, now, random).unwrap();
            assert!(next > last, "{next} > {last}");
            assert!(next.uuid_v7_ms().is_some());
            last = next;
        }
        // 3001 ids in one ms: the ms field moved on twice.
        assert_eq!(last.uuid_v7_ms(), Some(now + 2));
        // A clock that went back does not take ids back.
        let back = JobId::next_after(last, now - 60_000, 7).unwrap();
        assert!(back > last);
        // A later ms starts the counter again.
        let later = JobId::next_after(back, now + 10, 7).unwrap();
        assert_eq!(later.uuid_v7_ms(), Some(now + 10));
        assert!(later > back);
        // The ms field is finite.
        assert_eq!(JobId::next_after(old, 1 << 48, 0), None);
        // An earlier-layout id whose bits read as a later ms than the clock still gets a
        // larger successor.
        let odd = JobId::from_u128(u128::from(u64::MAX) << 64);
        assert!(JobId::next_after(odd, now, 0).is_none_or(|n| n > odd));
    }

    fn any_job() -> impl proptest::strategy::Strategy<Value = Job> {
        use proptest::prelude::*;
        let text = "[a-z\"\\\\\n\u{1}é]{0,12}";
        let state = proptest::sample::select(JobState::ALL.to_vec());
        let backoff = prop_oneof![
            any::<u64>().prop_map(|delay_ms| Backoff::Fixed { delay_ms }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(base_ms, max_ms)| Backoff::Exponential { base_ms, max_ms }),
        ];
        let lease = proptest::option::of((text, any::<u64>(), any::<u64>()).prop_map(
            |(worker, token, expires_at_ms)| Lease {
                worker,
                token,
                expires_at_ms,
            },
        ));
        let value = prop_oneof![
            Just(serde_json::json!({"to": "a@b.c", "n": [1, 2.5, null, true]})),
            text.prop_map(serde_json::Value::String),
            any::<i64>().prop_map(serde_json::Value::from),
        ];
        (
            (
                any::<u128>(),
                text,
                proptest::option::of(text),
                value.clone(),
                state,
            ),
            (
                any::<i32>(),
                any::<u64>(),
                any::<u32>(),
                any::<u32>(),
                backoff,
            ),
            (lease, any::<u64>(), proptest::option::of(text)),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::option::of(any::<u64>()),
            ),
            (
                proptest::option::of(text),
                proptest::option::of(value),
                proptest::option::of((
                    any::<u128>(),
                    any::<u64>(),
                    proptest::option::of("[a-z=,]{1,20}"),
                )),
            ),
        )
            .prop_map(
                |(
                    (id, queue, owner, payload, state),
                    (priority, run_at_ms, attempts, attempts_max, backoff),
                    (lease, token_last, dedup_id),
                    (created_at_ms, updated_at_ms, finished_at_ms),
                    (last_error, result, trace),
                )| Job {
                    id: JobId::from_u128(id),
                    queue,
                    owner: owner.map(Arc::from),
                    payload: Arc::new(payload),
                    state,
                    priority,
                    run_at_ms,
                    attempts,
                    attempts_max,
                    backoff,
                    lease,
                    token_last,
                    dedup_id,
                    created_at_ms,
                    updated_at_ms,
                    finished_at_ms,
                    last_error,
                    result,
                    trace: trace
                        .and_then(|(t, p, s)| TraceContext::from_parts(t, p, 1, s.as_deref())),
                },
            )
    }

    proptest::proptest! {
        #[test]
        fn hand_encoding_equals_serde(job in any_job()) {
            let mut hand = Vec::new();
            job.encode_json(&mut hand).unwrap();
            proptest::prop_assert_eq!(
                String::from_utf8(hand.clone()).unwrap(),
                serde_json::to_string(&job).unwrap()
            );
            proptest::prop_assert_eq!(serde_json::from_slice::<Job>(&hand).unwrap(), job);
        }

        /// A job's state record, laid over any earlier version of the job (the same
        /// creation, other changing fields), gives the job back; the hand encoding is
        /// serde's.
        #[test]
        fn state_record_over_an_older_version_gives_the_job(
            job in any_job(),
            older in any_job(),
        ) {
            let mut hand = Vec::new();
            job.encode_state_json(&mut hand).unwrap();
            proptest::prop_assert_eq!(
                String::from_utf8(hand.clone()).unwrap(),
                serde_json::to_string(&job.state_record()).unwrap()
            );
            let record: StateRecord = serde_json::from_slice(&hand).unwrap();
            // `older`'s changing fields under `job`'s creation.
            let mut base = job.clone();
            base.apply_state(older.state_record());
            proptest::prop_assert!(base.same_creation(&job));
            base.apply_state(record);
            proptest::prop_assert_eq!(base, job);
        }
    }

    /// Shows a record written by the previous layout (no owner, an id of ms and sequence)
    /// reads back, and is written again byte for byte.
    #[test]
    fn previous_layout_record_reads_back() {
        let old = r#"{"id":"0000018f2c6a1b2c0000000000000003","queue":"mail","payload":{"to":"x"},"state":"PENDING","priority":0,"run_at_ms":1715000000300,"attempts":0,"attempts_max":3,"backoff":{"kind":"exponential","base_ms":1000,"max_ms":300000},"token_last":0,"dedup_id":"d1","created_at_ms":1715000000300,"updated_at_ms":1715000000300}"#;
        let job: Job = serde_json::from_str(old).unwrap();
        assert_eq!(job.owner, None);
        assert_eq!(job.id, JobId::from_u128((0x18f_2c6a_1b2c << 64) | 3));
        assert_eq!(job.id.uuid_v7_ms(), None);
        let mut again = Vec::new();
        job.encode_json(&mut again).unwrap();
        assert_eq!(String::from_utf8(again).unwrap(), old);
    }

    /// Shows a job's trace context is stored with it, and an enqueue's is checked.
    #[test]
    fn trace_context_is_stored_and_checked() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let with = r#"{"id":"0000018f2c6a1b2c0000000000000003","queue":"mail","payload":null,"state":"PENDING","priority":0,"run_at_ms":1,"attempts":0,"attempts_max":3,"backoff":{"kind":"fixed","delay_ms":5},"token_last":0,"created_at_ms":1,"updated_at_ms":1,"trace":{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","tracestate":"k=v"}}"#;
        let job: Job = serde_json::from_str(with).unwrap();
        let t = job.trace.clone().unwrap();
        assert_eq!(t.traceparent, tp);
        assert_eq!(t.tracestate.as_deref(), Some("k=v"));
        let mut again = Vec::new();
        job.encode_json(&mut again).unwrap();
        assert_eq!(String::from_utf8(again).unwrap(), with);

        let mut req = EnqueueRequest::new("mail", serde_json::Value::Null);
        req.trace = Some(TraceContext::parse(tp, None).unwrap());
        req.validate().unwrap();
        req.trace = Some(TraceContext {
            traceparent: "00-nothex".to_owned(),
            tracestate: None,
        });
        assert!(matches!(
            req.validate(),
            Err(QueueError::Invalid { field: "trace", .. })
        ));
        req.trace = Some(TraceContext {
            traceparent: tp.to_owned(),
            tracestate: Some("x".repeat(2000)),
        });
        assert!(req.validate().is_err(), "tracestate is bounded");
        // The API's JSON form reads it too.
        let r: EnqueueRequest =
            serde_json::from_value(serde_json::json!({"queue": "q", "trace": {"traceparent": tp}}))
                .unwrap();
        assert_eq!(r.trace.unwrap().traceparent, tp);
    }

    #[test]
    fn backoff_delays() {
        let b = Backoff::Exponential {
            base_ms: 100,
            max_ms: 1_000,
        };
        assert_eq!(b.delay_ms(1), 100);
        assert_eq!(b.delay_ms(2), 200);
        assert_eq!(b.delay_ms(4), 800);
        assert_eq!(b.delay_ms(5), 1_000);
        assert_eq!(b.delay_ms(200), 1_000);
        assert_eq!(Backoff::Fixed { delay_ms: 7 }.delay_ms(9), 7);
    }

    #[test]
    fn names_and_ids_are_checked() {
        assert!(validate_queue_name("emails.v2-high_1").is_ok());
        assert!(validate_queue_name("").is_err());
        assert!(validate_queue_name("a b").is_err());
        assert!(validate_queue_name(&"q".repeat(65)).is_err());
        assert!(validate_id("dedup_id", "order-17").is_ok());
        assert!(validate_id("dedup_id", "a:b").is_err());
        assert!(validate_id("dedup_id", "a/b").is_ok());
        assert!(validate_owner("0190f3a2c4d5e6f7").is_ok());
        assert!(validate_owner("u/1").is_err());
        assert!(validate_owner("u:1").is_err());
        assert!(validate_owner("").is_err());
    }
}
