//! Every limit ATLAS enforces, in one place, each with the reason for its value.
//!
//! Limits bound memory and parsing work: nothing read from disk or passed in by a caller can
//! make ATLAS allocate without bound or loop without end.

/// Largest key, in bytes. Keys are indexed twice (hash map and ordered index share one
/// allocation) and appear in every AOF record that touches them; 64 KiB is far above any
/// sane key and keeps a record's framing overhead predictable.
pub const KEY_SIZE_MAX: u64 = 64 * 1024;

/// Largest value, in bytes (Redis's `proto-max-bulk-len` is 512 MiB). While a value is
/// logged it is in memory up to three times: the map, the JSON encoding (base64 grows
/// binary values by a third) and the write buffer. 256 MiB keeps that under 1 GiB.
pub const VALUE_SIZE_MAX: u64 = 256 * 1024 * 1024;

/// Largest number of operations in one atomic batch. A batch is one AOF record and is
/// evaluated while the commit pipeline is held, so it must stay bounded.
pub const BATCH_OPS_COUNT_MAX: usize = 100_000;

/// Largest AOF record (one JSON line, newline included) accepted when reading. A record
/// holds a batch; the encoded size of a batch is checked against this before it is logged,
/// so every record ATLAS writes can be read back.
pub const RECORD_SIZE_MAX: u64 = 1024 * 1024 * 1024;
/// Most bytes of values the range writes (SETRANGE, SETBIT) of one commit group may build:
/// each builds its key's whole new value, so without a bound a pipeline of 50-byte
/// commands could make gigabytes before the group commits.
pub const GROUP_PATCHED_SIZE_MAX: u64 = 1024 * 1024 * 1024;

/// Largest snapshot payload accepted when reading (bincode `with_limit`).
pub const SNAPSHOT_SIZE_MAX: u64 = 64 * 1024 * 1024 * 1024;

/// Largest page a prefix scan returns at once.
pub const SCAN_LIMIT_MAX: usize = 100_000;

/// Largest number of keys one `get_many` call reads.
pub const GET_MANY_COUNT_MAX: usize = 100_000;

/// Largest number of keys one active-expiry `tick` deletes; a tick is one AOF record, and
/// Redis likewise bounds each active-expire cycle so it never stalls writers.
pub const EXPIRE_PER_TICK_COUNT_MAX: usize = 10_000;

/// Most key bytes one active-expiry `tick` deletes, so its record stays far below
/// [`RECORD_SIZE_MAX`] even when every key escapes to six times its size.
pub const EXPIRE_PER_TICK_SIZE_MAX: u64 = 16 * 1024 * 1024;

/// Estimated bookkeeping bytes per key beyond the key and value themselves (hash-map slot,
/// ordered-index node share, `Bytes` header, expiry). Used for the memory limit; an
/// estimate, like Redis's `used_memory` is an estimate of allocator usage.
pub const ENTRY_OVERHEAD_SIZE: u64 = 112;

const _: () = assert!(KEY_SIZE_MAX < VALUE_SIZE_MAX);
const _: () = assert!(VALUE_SIZE_MAX * 2 < RECORD_SIZE_MAX);
