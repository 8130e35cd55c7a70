//! Login throttling: after `failures_before_lock` consecutive failures for a key (a
//! username or a client), the key is locked for `lock_ms_base`, doubling with each further
//! failure up to `lock_ms_max`. A success clears the key.
//!
//! Kept in memory, bounded by `keys_max` (expired entries are dropped first, then the
//! entry seen longest ago). A restart lifts every lockout: an attacker does not control
//! restarts, and a lockout is a brake, not a ban.

use crate::error::{AuthError, Result};
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::HashMap;

/// Settings of the login throttle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures allowed before the first lockout (default 5).
    pub failures_before_lock: u32,
    /// First lockout, ms (default 30 s).
    pub lock_ms_base: u64,
    /// Longest lockout, ms (default 1 h).
    pub lock_ms_max: u64,
    /// Most keys tracked (default 100,000).
    pub keys_max: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            failures_before_lock: 5,
            lock_ms_base: 30_000,
            lock_ms_max: 3_600_000,
            keys_max: 100_000,
        }
    }
}

/// A current lockout, for admins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lockout {
    /// `user:{name}` or `client:{id}`.
    pub key: String,
    /// Consecutive failures.
    pub failures: u32,
    /// Time left, ms.
    pub remaining_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    locked_until_ms: u64,
    last_ms: u64,
}

/// The throttle state.
#[derive(Debug)]
pub struct Throttle {
    config: ThrottleConfig,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Throttle {
    /// A throttle with `config` (checked).
    pub fn new(config: ThrottleConfig) -> Result<Self> {
        if config.failures_before_lock == 0
            || config.lock_ms_base == 0
            || config.lock_ms_max < config.lock_ms_base
            || config.keys_max == 0
        {
            return Err(AuthError::Config {
                key: "auth.throttle",
                reason: "failures_before_lock, lock_ms_base and keys_max must be positive, lock_ms_max >= lock_ms_base".to_owned(),
            });
        }
        Ok(Self {
            config,
            entries: Mutex::new(HashMap::new()),
        })
    }

    /// How long `key` stays locked at `now_ms`, if it is.
    pub fn locked_for(&self, key: &str, now_ms: u64) -> Option<u64> {
        let e = self.entries.lock().get(key).copied()?;
        (e.locked_until_ms > now_ms).then(|| e.locked_until_ms - now_ms)
    }

    /// Records a failure.
    pub fn failure(&self, key: &str, now_ms: u64) {
        let mut m = self.entries.lock();
        if !m.contains_key(key) && m.len() >= self.config.keys_max {
            let cutoff = now_ms.saturating_sub(self.config.lock_ms_max);
            m.retain(|_, e| e.locked_until_ms > now_ms || e.last_ms > cutoff);
            if m.len() >= self.config.keys_max
                && let Some(oldest) = m
                    .iter()
                    .min_by_key(|(_, e)| e.last_ms)
                    .map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
        }
        let e = m.entry(key.to_owned()).or_insert(Entry {
            failures: 0,
            locked_until_ms: 0,
            last_ms: now_ms,
        });
        e.failures = e.failures.saturating_add(1);
        e.last_ms = now_ms;
        if e.failures >= self.config.failures_before_lock {
            let over = (e.failures - self.config.failures_before_lock).min(32);
            let lock = self
                .config
                .lock_ms_base
                .saturating_mul(1u64 << over)
                .min(self.config.lock_ms_max);
            e.locked_until_ms = now_ms.saturating_add(lock);
        }
    }

    /// Records a success: the key starts over.
    pub fn success(&self, key: &str) {
        self.entries.lock().remove(key);
    }

    /// Keys locked at `now_ms`.
    pub fn lockouts(&self, now_ms: u64) -> Vec<Lockout> {
        let mut v: Vec<Lockout> = self
            .entries
            .lock()
            .iter()
            .filter(|(_, e)| e.locked_until_ms > now_ms)
            .map(|(k, e)| Lockout {
                key: k.clone(),
                failures: e.failures,
                remaining_ms: e.locked_until_ms - now_ms,
            })
            .collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// Lifts a lockout; returns whether there was one.
    pub fn lift(&self, key: &str) -> bool {
        self.entries.lock().remove(key).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_grows_and_success_clears() {
        let t = Throttle::new(ThrottleConfig {
            failures_before_lock: 3,
            lock_ms_base: 100,
            lock_ms_max: 350,
            keys_max: 10,
        })
        .unwrap();
        t.failure("k", 0);
        t.failure("k", 0);
        assert_eq!(t.locked_for("k", 0), None);
        t.failure("k", 0);
        assert_eq!(t.locked_for("k", 0), Some(100));
        t.failure("k", 0);
        assert_eq!(t.locked_for("k", 0), Some(200));
        t.failure("k", 0);
        assert_eq!(t.locked_for("k", 0), Some(350), "capped");
        assert_eq!(t.lockouts(0).len(), 1);
        assert!(t.lift("k"));
        assert_eq!(t.locked_for("k", 0), None);
    }

    #[test]
    fn bounded() {
        let t = Throttle::new(ThrottleConfig {
            keys_max: 3,
            ..ThrottleConfig::default()
        })
        .unwrap();
        for i in 0..100 {
            t.failure(&format!("k{i}"), i);
        }
        assert!(t.entries.lock().len() <= 3);
    }
}
