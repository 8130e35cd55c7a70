//! helios-queue: a durable job queue for one node, with leases, fencing tokens, retries with
//! backoff, a dead-letter list, dedup and backpressure.
//!
//! - [`QueueState`] (`state`) is the pure state machine: `plan_*` an operation at `now_ms`,
//!   persist the [`Transition`], then `apply` it. Property-tested against a model.
//! - [`Queue`] (`queue`) runs it over an ATLAS store: every transition is one atomic ATLAS
//!   batch of `job:{id}` (and `job:dedup:{queue}/{owner}/{dedupId}`) records, written
//!   before anything is answered; on open the indexes are rebuilt from those records.
//! - [`Job`] and friends (`job`) are the stored data. Job ids are UUIDv7 ([`JobId`]): time
//!   ordered, with 64 random bits from an injected rng; a job records its `owner`, and a
//!   dedup id suppresses duplicates per (owner, queue).
//! - [`Schedule`] (`schedule`) is a cron schedule under `job:schedule:{id}`: each tick
//!   enqueues at most one job per due schedule, for its latest fire time, in the same
//!   batch as the schedule's advanced `next_run_ms` (so never twice across restarts).
//! - [`registry`] is the worker registry: one `worker:{owner}/{id}` record per live worker,
//!   with a TTL its worker renews; ids are scoped by owner, and the count is bounded.
//!
//! States: PENDING (ready, or delayed until `run_at_ms`) -> IN_PROGRESS (leased) -> DONE;
//! IN_PROGRESS -> PENDING on nack or lease expiry while attempts remain (after backoff), or
//! FAILED (the dead-letter list) when they run out; PENDING -> CANCELLED. Delivery is
//! at-least-once: each claim gets a fresh fencing token, and ack, nack and heartbeat with a
//! stale token are refused, so a job whose lease expired and was re-claimed is never
//! completed twice.

mod error;
mod job;
pub mod limits;
mod queue;
pub mod registry;
mod schedule;
mod state;

pub use error::{QueueError, Result};
pub use job::{
    Backoff, DedupRecord, EnqueueRequest, Job, JobId, JobState, Lease, StateRecord, validate_id,
    validate_owner, validate_queue_name,
};
pub use queue::{IdRng, KvWrite, Queue, TickReport};
pub use schedule::{
    Fired, Schedule, ScheduleId, ScheduleRequest, last_fire_at_or_before, next_fire_after,
    parse_cron,
};
pub use state::{
    Claim, DedupPut, Enqueued, QueueConfig, QueueState, QueueStats, Settle, Settled, Transition,
    job_key, job_state_key,
};
