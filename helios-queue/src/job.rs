//! A job and its parts: [`JobId`], [`JobState`], [`Backoff`], [`Lease`], and the
//! [`EnqueueRequest`] that creates one. Plain data, serialized as JSON into ATLAS under
//! `job:{id}`.

use crate::error::{QueueError, Result};
use crate::limits::{ATTEMPTS_MAX, DURATION_MS_MAX, ID_SIZE_MAX, QUEUE_NAME_SIZE_MAX};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A job id: the enqueue time in ms and a sequence number within that ms. Ordered by
/// creation, unique (the generator never goes back, across restarts too), and shown as 32
/// hex digits, so text order equals creation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId {
    /// Enqueue time, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// Sequence within the ms.
    pub seq: u64,
}

impl JobId {
    /// The 32 lowercase hex digits (formatted by hand: ids are written on every
    /// transition, and `fmt` machinery showed in profiles).
    pub fn to_hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[..16].copy_from_slice(&helios_core::digits::hex(self.created_at_ms).0);
        out[16..].copy_from_slice(&helios_core::digits::hex(self.seq).0);
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
        let created_at_ms = u64::from_str_radix(&s[..16], 16).map_err(|_| bad())?;
        let seq = u64::from_str_radix(&s[16..], 16).map_err(|_| bad())?;
        Ok(JobId { created_at_ms, seq })
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

impl Job {
    /// Appends the job's JSON record: the same bytes as `serde_json::to_writer(out, self)`,
    /// written by hand because every transition writes one (a test checks the two agree).
    pub fn encode_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(br#"{"id":""#);
        out.extend_from_slice(&self.id.to_hex());
        out.extend_from_slice(br#"","queue":"#);
        push_str(out, &self.queue)?;
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
        if let Some(l) = &self.lease {
            out.extend_from_slice(br#","lease":{"worker":"#);
            push_str(out, &l.worker)?;
            out.extend_from_slice(br#","token":"#);
            helios_core::digits::push_dec(out, l.token);
            out.extend_from_slice(br#","expires_at_ms":"#);
            helios_core::digits::push_dec(out, l.expires_at_ms);
            out.push(b'}');
        }
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
        out.push(b'}');
        Ok(())
    }
}

/// What to enqueue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnqueueRequest {
    /// Queue name, `[A-Za-z0-9_.-]{1,64}`.
    pub queue: String,
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
    /// A second enqueue with the same dedup id within the dedup window returns the first
    /// job instead of creating one.
    #[serde(default)]
    pub dedup_id: Option<String>,
}

impl EnqueueRequest {
    /// A request with defaults for everything but the queue and payload.
    pub fn new(queue: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            queue: queue.into(),
            payload: Arc::new(payload),
            priority: 0,
            delay_ms: None,
            run_at_ms: None,
            attempts_max: None,
            backoff: None,
            dedup_id: None,
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
        Ok(())
    }
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
        let a = JobId {
            created_at_ms: 5,
            seq: 2,
        };
        let b = JobId {
            created_at_ms: 5,
            seq: 10,
        };
        assert_eq!(a.to_string().parse::<JobId>().unwrap(), a);
        let big = JobId {
            created_at_ms: u64::MAX,
            seq: 0x0123_4567_89ab_cdef,
        };
        assert_eq!(
            big.to_string(),
            format!("{:016x}{:016x}", u64::MAX, big.seq)
        );
        assert!(a < b && a.to_string() < b.to_string());
        assert!("xyz".parse::<JobId>().is_err());
        assert!("0000000000000005000000000000000A".parse::<JobId>().is_err());
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
            (any::<u64>(), any::<u64>(), text, value.clone(), state),
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
            (proptest::option::of(text), proptest::option::of(value)),
        )
            .prop_map(
                |(
                    (created, seq, queue, payload, state),
                    (priority, run_at_ms, attempts, attempts_max, backoff),
                    (lease, token_last, dedup_id),
                    (created_at_ms, updated_at_ms, finished_at_ms),
                    (last_error, result),
                )| Job {
                    id: JobId {
                        created_at_ms: created,
                        seq,
                    },
                    queue,
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
    }
}
