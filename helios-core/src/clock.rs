//! Time for the core crates: the [`Clock`] trait and its two implementations.
//!
//! This file is the one exception to the rule "core crates never read the clock":
//! [`SystemClock`] reads `SystemTime::now()`. Everything else receives time as an argument
//! or through an injected `Arc<dyn Clock>`, so a test or a simulation decides what "now" is.
//!
//! Times are milliseconds since the Unix epoch (`_at_ms` in our naming), as `u64`. Wall-clock
//! time can jump backwards (NTP); consumers must tolerate that (see `TokenBucket`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The real clock. The only reader of the system time in the core crates.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        // A clock before 1970 is a misconfigured machine; report the epoch rather than panic.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// Wall-clock time that never jumps: anchored to the system clock once, at creation, then
/// advanced by the monotonic clock (`Instant`). A wall-clock step of an hour (NTP, an
/// operator) while the process runs moves it by nothing; it drifts from the wall clock by
/// whatever the wall clock was stepped. Used for leases and deadlines, where a jump must not
/// expire everything at once (or keep everything alive); times persisted with it are
/// re-anchored to the wall clock at the next start.
#[derive(Debug)]
pub struct MonotonicClock {
    anchor_ms: u64,
    anchor: Instant,
}

impl MonotonicClock {
    /// A clock anchored to the system clock now.
    pub fn new() -> Self {
        Self {
            anchor_ms: SystemClock.now_ms(),
            anchor: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_ms(&self) -> u64 {
        let elapsed_ms = u64::try_from(self.anchor.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.anchor_ms.saturating_add(elapsed_ms)
    }
}

/// A clock moved by hand: tests and simulations set or advance it explicitly.
///
/// Shared by reference (`Arc<ManualClock>`); all methods take `&self`.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    /// A clock that reads `now_ms` until moved.
    pub fn new(now_ms: u64) -> Self {
        Self {
            now_ms: AtomicU64::new(now_ms),
        }
    }

    /// Sets the time, forwards or backwards (to model wall-clock jumps).
    pub fn set_ms(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }

    /// Moves the time forward by `delta_ms`, saturating at `u64::MAX`.
    pub fn advance_ms(&self, delta_ms: u64) {
        let _ = self
            .now_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(delta_ms))
            });
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_by_hand() {
        let c = ManualClock::new(1_000);
        assert_eq!(c.now_ms(), 1_000);
        c.advance_ms(500);
        assert_eq!(c.now_ms(), 1_500);
        c.set_ms(10);
        assert_eq!(c.now_ms(), 10);
        c.set_ms(u64::MAX - 1);
        c.advance_ms(10);
        assert_eq!(c.now_ms(), u64::MAX);
    }

    #[test]
    fn monotonic_clock_starts_at_wall_time_and_never_goes_back() {
        let c = MonotonicClock::new();
        let a = c.now_ms();
        assert!(a.abs_diff(SystemClock.now_ms()) < 1_000);
        let b = c.now_ms();
        assert!(b >= a);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
