//! Login throttling: after `failures_before_lock` consecutive failures for a key (a
//! username or a client), the key is locked for `lock_ms_base`, doubling with each further
//! failure up to `lock_ms_max`. An attempt counts as a failure *before* the password is
//! checked (so parallel guesses cannot all slip through one window) and is refunded on
//! success. A username's count is cleared by a success; a client's only decays (a key
//! with no failure for `lock_ms_max` starts over), so an attacker's own account cannot reset
//! the budget of a password spray. Client keys allow `failures_before_lock` times 4
//! attempts (many users can share an address).
//!
//! Kept in memory, bounded by `keys_max` (expired entries are dropped first, then the
//! entry seen longest ago). A restart lifts every lockout: an attacker does not control
//! restarts, and a lockout is a brake, not a ban.

use crate::error::{AuthError, Result};
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::HashMap;

/// The throttle key of a client (an address or id), bounded in size.
pub fn client_key(client: &str) -> String {
    let mut end = client.len().min(128);
    while !client.is_char_boundary(end) {
        end -= 1;
    }
    format!("client:{}", &client[..end])
}

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

    /// Counts an attempt (as a failure until refunded) unless the key is locked; returns
    /// the remaining lock time if it is.
    pub fn attempt(&self, key: &str, now_ms: u64) -> Option<u64> {
        if let Some(ms) = self.locked_for(key, now_ms) {
            return Some(ms);
        }
        self.failure(key, now_ms);
        None
    }

    /// Takes back one counted attempt (a success), keeping the rest.
    pub fn refund(&self, key: &str) {
        let mut m = self.entries.lock();
        let threshold = self.threshold(key);
        if let Some(e) = m.get_mut(key) {
            e.failures = e.failures.saturating_sub(1);
            if e.failures < threshold {
                e.locked_until_ms = 0;
            }
            if e.failures == 0 {
                m.remove(key);
            }
        }
    }

    fn threshold(&self, key: &str) -> u32 {
        if key.starts_with("client:") {
            self.config.failures_before_lock.saturating_mul(4)
        } else {
            self.config.failures_before_lock
        }
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
        if now_ms.saturating_sub(e.last_ms) > self.config.lock_ms_max && e.locked_until_ms <= now_ms
        {
            // Long quiet: the count decays to nothing.
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_ms = now_ms;
        let threshold = self.threshold(key);
        if e.failures >= threshold {
            let over = (e.failures - threshold).min(32);
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
    fn attempts_count_before_the_check_so_parallel_guesses_are_bounded() {
        let t = Throttle::new(ThrottleConfig {
            failures_before_lock: 5,
            ..ThrottleConfig::default()
        })
        .unwrap();
        // Ten guesses start at once: only five get past the throttle.
        let admitted = (0..10).filter(|_| t.attempt("user:x", 0).is_none()).count();
        assert_eq!(admitted, 5);
        // Client keys allow four times as many, and a success refunds one attempt only.
        let admitted = (0..40)
            .filter(|_| t.attempt("client:a", 0).is_none())
            .count();
        assert_eq!(admitted, 20);
        // A success gives back one attempt of the budget, no more.
        t.refund("client:a");
        let admitted = (0..10)
            .filter(|_| t.attempt("client:a", 0).is_none())
            .count();
        assert_eq!(admitted, 1);
        assert_eq!(client_key(&"é".repeat(200)).len(), "client:".len() + 128);
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
