//! helios-core: the pure primitives every other HELIOS crate builds on.
//!
//! - [`clock`]: the [`Clock`] trait, the only place in the core crates that reads the
//!   system time ([`SystemClock`]), and a [`ManualClock`] that tests move by hand.
//! - [`token_bucket`]: an integer-only token bucket for rate limiting.
//! - [`keys`]: the one keyspace schema of `DESIGN.md`, as builders and parsers.
//! - [`trace`]: W3C trace context (`traceparent`, `tracestate`), checked and bounded.
//!
//! Nothing here does I/O, spawns threads or reads randomness.

pub mod clock;
pub mod digits;
pub mod keys;
pub mod token_bucket;
pub mod trace;

pub use clock::{Clock, ManualClock, MonotonicClock, SystemClock};
pub use token_bucket::{TokenBucket, TokenBucketConfig, TokenBucketError, Verdict};
pub use trace::{TraceContext, TraceError};
