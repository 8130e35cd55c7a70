//! The error type of the queue: one enum whose variants say which job, which queue, which
//! limit, so the gateway can map each to an HTTP status.

use crate::job::{JobId, JobState};
use crate::schedule::ScheduleId;

/// Everything that can go wrong in the queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// No such job.
    #[error("job {id} not found")]
    NotFound {
        /// The job id.
        id: JobId,
    },
    /// The job id text is not a job id.
    #[error("{text:?} is not a job id (32 hex digits)")]
    BadJobId {
        /// What was given.
        text: String,
    },
    /// The fencing token is not the job's current lease token (the lease expired and the
    /// job was re-claimed, or it was already acked or nacked). The current token is never
    /// told: it is what authorizes the worker holding the lease.
    #[error("job {id}: stale lease token {token}")]
    StaleToken {
        /// The job.
        id: JobId,
        /// The token presented.
        token: u64,
    },
    /// The lease expired before this call (a heartbeat, ack or nack came too late).
    #[error("job {id}: lease expired at {expired_at_ms}; the job will be redelivered")]
    LeaseExpired {
        /// The job.
        id: JobId,
        /// When the lease expired.
        expired_at_ms: u64,
    },
    /// The job is not in a state that allows the operation.
    #[error("job {id} is {state:?}; {operation} needs {needed}")]
    WrongState {
        /// The job.
        id: JobId,
        /// Its state.
        state: JobState,
        /// The operation attempted.
        operation: &'static str,
        /// The state(s) it needs.
        needed: &'static str,
    },
    /// The queue holds `depth_max` pending and in-progress jobs already (backpressure).
    #[error("queue {queue:?} is full: {depth} jobs pending or in progress, limit {depth_max}")]
    QueueFull {
        /// The queue.
        queue: String,
        /// Its depth.
        depth: u64,
        /// The configured limit.
        depth_max: u64,
    },
    /// An argument is out of range or malformed (queue name, dedup id, payload size...).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The argument.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A job or worker record in ATLAS could not be read (corrupt JSON, wrong key).
    #[error("record {key:?} is unreadable: {reason}")]
    CorruptRecord {
        /// The ATLAS key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// No such worker in the registry, or one registered by someone else (told apart by
    /// nobody: a stranger's worker is as missing as an absent one).
    #[error("worker {id:?} not found")]
    WorkerNotFound {
        /// The worker id.
        id: String,
    },
    /// No such schedule, or one owned by someone else (told apart by nobody).
    #[error("schedule {id} not found")]
    ScheduleNotFound {
        /// The schedule id.
        id: ScheduleId,
    },
    /// The registry (or the owner's part of it) holds the most live workers allowed.
    #[error("too many workers: at most {max} {scope}")]
    WorkerLimit {
        /// Which bound: `in all` or `per owner`.
        scope: &'static str,
        /// The bound.
        max: usize,
    },
    /// The store (or the owner) holds the most schedules allowed already.
    #[error("too many schedules: at most {max} {scope}")]
    ScheduleLimit {
        /// Which bound: `in all` or `per owner`.
        scope: &'static str,
        /// The bound.
        max: usize,
    },
    /// The store failed or refused the write; the transition did not happen.
    #[error(transparent)]
    Store(#[from] helios_atlas::AtlasError),
}

/// Result alias for the queue.
pub type Result<T, E = QueueError> = std::result::Result<T, E>;
