//! Every bound the queue enforces, with its reason.

/// Largest payload (its JSON text), in bytes. A job is one ATLAS value rewritten on every
/// transition; 1 MiB keeps a transition's write small and bounded (SQS allows 256 KiB).
pub const PAYLOAD_SIZE_MAX: usize = 1024 * 1024;
/// Longest queue name. Names are `[A-Za-z0-9_.-]`, so they are safe in URLs and keys.
pub const QUEUE_NAME_SIZE_MAX: usize = 64;
/// Longest dedup id, and longest worker id.
pub const ID_SIZE_MAX: usize = 256;
/// Longest error text kept on a job (longer ones are cut, on a char boundary).
pub const ERROR_SIZE_MAX: usize = 4096;
/// Most jobs one claim hands out, and one enqueue batch takes.
pub const BATCH_COUNT_MAX: usize = 1000;
/// Most expired leases handled by one tick (one ATLAS batch).
pub const TICK_COUNT_MAX: usize = 1000;
/// Most jobs one purge or redrive call touches (one ATLAS batch).
pub const SWEEP_COUNT_MAX: usize = 1000;
/// Most attempts a job may be given.
pub const ATTEMPTS_MAX: u32 = 1000;
/// Longest lease, delay or backoff, in ms (30 days).
pub const DURATION_MS_MAX: u64 = 30 * 24 * 3600 * 1000;
/// Largest page of a listing.
pub const LIST_LIMIT_MAX: usize = 1000;
/// Shortest time-to-live of a worker record, in ms: a worker renews it every few
/// seconds, so less would expire live workers between two renewals.
pub const WORKER_TTL_MS_MIN: u64 = 1_000;
/// Longest time-to-live of a worker record, in ms (1 hour): a dead worker must leave the
/// listing in bounded time.
pub const WORKER_TTL_MS_MAX: u64 = 3_600_000;
/// Longest host name of a worker record (a DNS name is at most 253 bytes).
pub const WORKER_HOST_SIZE_MAX: usize = 255;
/// Longest version text of a worker record.
pub const WORKER_VERSION_SIZE_MAX: usize = 64;
/// Most queues one worker record names.
pub const WORKER_QUEUES_MAX: usize = 256;
/// Most live worker records one owner holds (a fleet sharing one account fits; a
/// registration loop does not fill the store).
pub const WORKER_PER_OWNER_MAX: usize = 1_024;
/// Most live worker records in all.
pub const WORKER_COUNT_MAX: usize = 100_000;
/// Most key-value writes one transactional enqueue carries (`Queue::enqueue_with`).
pub const KV_WRITES_MAX: usize = 100;
/// Most bytes of keys and values one transactional enqueue writes.
pub const KV_WRITES_BYTES_MAX: usize = 1024 * 1024;
/// Most cron schedules a queue store holds: each is a record in memory and is looked at
/// every tick it is due. Far above one owner's share, so that locking everyone else out
/// takes a thousand accounts (each made through rate-limited registration).
pub const SCHEDULES_MAX: usize = 100_000;
/// Most cron schedules one owner holds: bounds what one caller takes of
/// [`SCHEDULES_MAX`], and the jobs per second its schedules can make (a seconds field fires
/// at most once a second).
pub const SCHEDULES_PER_OWNER_MAX: usize = 100;
/// Largest payload of a schedule (its JSON text): a template copied into every run, kept
/// in memory with the schedule (64 KiB; larger data belongs in the KV store).
pub const SCHEDULE_PAYLOAD_SIZE_MAX: usize = 64 * 1024;
/// Longest cron expression text.
pub const CRON_SIZE_MAX: usize = 256;
