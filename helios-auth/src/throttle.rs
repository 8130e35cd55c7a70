//! Login throttling: who is slowed down, and by how much, after failed logins.
//!
//! Owns the failure counts of three kinds of key (see [`LoginKeys`]):
//! - `pair:{username}@{client}`: one username tried from one client. After
//!   `failures_before_lock` consecutive failures the pair is **locked** for `lock_ms_base`,
//!   doubling with each further failure up to `lock_ms_max`. This is what stops one
//!   address guessing one account.
//! - `client:{client}`: one client, whatever the names it tries. Locked the same way after
//!   `failures_before_lock` times 4 failures (many users can share an address): this stops
//!   a password spray from one address.
//! - `user:{username}`: one username, from anywhere. Never locked: after
//!   `failures_before_lock` failures every attempt on the name waits a **delay** of
//!   `user_delay_ms_base`, doubling per further failure up to `user_delay_ms_max` (seconds,
//!   bounded). Its failures are recorded by [`Throttle::count`], which never locks. The
//!   caller serves the delay before the check ([`Throttle::delay_for`]; the
//!   gateway sleeps it), so an attacker spreading guesses over many addresses pays it on
//!   every guess, while the right password from a clean address always gets through after
//!   at most `user_delay_ms_max`. Nobody can lock somebody else out.
//!
//! Invariants: a pair or client attempt counts as a failure *before* the password is
//! checked (so parallel guesses cannot all slip through one window) and is refunded on
//! success. A pair's count is cleared by a success; a client's and a username's are only
//! refunded one attempt (an attacker's own account must not reset the budget of a spray),
//! and decay (a key with no failure for `lock_ms_max` starts over). Every key is bounded in
//! size (usernames are checked before they get here; clients are cut to 128 bytes).
//!
//! Kept in memory, bounded by `keys_max` (expired entries are dropped first, then the
//! entry seen longest ago). A restart lifts every lockout: an attacker does not control
//! restarts, and a lockout is a brake, not a ban. Time is always passed in (the injected
//! clock's `now_ms`).

use crate::error::{AuthError, Result};
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::HashMap;

const CLIENT_PREFIX: &str = "client:";
const USER_PREFIX: &str = "user:";
const PAIR_PREFIX: &str = "pair:";

fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The throttle key of a client (an address or id), bounded in size.
pub fn client_key(client: &str) -> String {
    format!("{CLIENT_PREFIX}{}", cut(client, 128))
}

/// The throttle key of a username, from anywhere (lowercased, bounded in size).
pub fn user_key(username: &str) -> String {
    format!("{USER_PREFIX}{}", cut(username, 64).to_ascii_lowercase())
}

/// The throttle key of one username tried from one client.
pub fn pair_key(username: &str, client: &str) -> String {
    format!(
        "{PAIR_PREFIX}{}@{}",
        cut(username, 64).to_ascii_lowercase(),
        cut(client, 128)
    )
}

/// The three keys of one login attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginKeys {
    /// `pair:{username}@{client}`: locked after `failures_before_lock` failures.
    pub pair: String,
    /// `client:{client}`: locked after 4 times as many.
    pub client: String,
    /// `user:{username}`: only delayed, never locked.
    pub user: String,
}

impl LoginKeys {
    /// The keys of `username` tried from `client`.
    pub fn new(username: &str, client: &str) -> Self {
        Self {
            pair: pair_key(username, client),
            client: client_key(client),
            user: user_key(username),
        }
    }
}

/// Settings of the login throttle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures of a (username, client) pair before its first lockout, and of a username
    /// before its attempts are delayed (default 5; a client gets 4 times as many).
    pub failures_before_lock: u32,
    /// First lockout, ms (default 30 s).
    pub lock_ms_base: u64,
    /// Longest lockout, ms (default 1 h); also how long a quiet key keeps its count.
    pub lock_ms_max: u64,
    /// First per-attempt delay of a username under attack, ms (default 1 s).
    pub user_delay_ms_base: u64,
    /// Longest per-attempt delay of a username, ms (default 5 s; at most 60 s).
    pub user_delay_ms_max: u64,
    /// Most keys tracked (default 100,000).
    pub keys_max: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            failures_before_lock: 5,
            lock_ms_base: 30_000,
            lock_ms_max: 3_600_000,
            user_delay_ms_base: 1_000,
            user_delay_ms_max: 5_000,
            keys_max: 100_000,
        }
    }
}

/// A current lockout or delay, for admins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lockout {
    /// `pair:{username}@{client}`, `client:{client}` or `user:{username}`.
    pub key: String,
    /// Consecutive failures counted.
    pub failures: u32,
    /// Time left of the lock, ms (0 for a username, which is only delayed).
    pub remaining_ms: u64,
    /// Delay every attempt waits, ms (usernames only; 0 otherwise).
    pub delay_ms: u64,
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
            || config.user_delay_ms_max < config.user_delay_ms_base
            || config.user_delay_ms_max > 60_000
        {
            return Err(AuthError::Config {
                key: "auth.throttle",
                reason: "failures_before_lock, lock_ms_base and keys_max must be positive, \
                         lock_ms_max >= lock_ms_base, \
                         user_delay_ms_base <= user_delay_ms_max <= 60000"
                    .to_owned(),
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
        if key.starts_with(CLIENT_PREFIX) {
            self.config.failures_before_lock.saturating_mul(4)
        } else {
            self.config.failures_before_lock
        }
    }

    fn decayed(&self, e: &Entry, now_ms: u64) -> bool {
        now_ms.saturating_sub(e.last_ms) > self.config.lock_ms_max && e.locked_until_ms <= now_ms
    }

    /// Records a failure; the key is locked once it reaches its threshold.
    pub fn failure(&self, key: &str, now_ms: u64) {
        self.record(key, now_ms, true);
    }

    /// Records a failure that only counts (a `user:` key: delayed, never locked).
    pub fn count(&self, key: &str, now_ms: u64) {
        self.record(key, now_ms, false);
    }

    fn record(&self, key: &str, now_ms: u64, lock: bool) {
        let mut m = self.entries.lock();
        if !m.contains_key(key) && m.len() >= self.config.keys_max {
            let cutoff = now_ms.saturating_sub(self.config.lock_ms_max);
            m.retain(|_, e| e.locked_until_ms > now_ms || e.last_ms > cutoff);
            if m.len() >= self.config.keys_max
                && let Some(oldest) = m
                    .iter()
                    // Oldest first, ties by key: the same history evicts the same key,
                    // whatever the map's iteration order.
                    .min_by(|a, b| a.1.last_ms.cmp(&b.1.last_ms).then_with(|| a.0.cmp(b.0)))
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
        if self.decayed(e, now_ms) {
            // Long quiet: the count decays to nothing.
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_ms = now_ms;
        let threshold = self.threshold(key);
        if lock && e.failures >= threshold {
            let over = (e.failures - threshold).min(32);
            let lock = self
                .config
                .lock_ms_base
                .saturating_mul(1u64 << over)
                .min(self.config.lock_ms_max);
            e.locked_until_ms = now_ms.saturating_add(lock);
        }
    }

    /// The delay every attempt on a `user:` key waits at `now_ms` (0 below the
    /// threshold, then doubling per failure, at most `user_delay_ms_max`).
    pub fn delay_for(&self, key: &str, now_ms: u64) -> u64 {
        let Some(e) = self.entries.lock().get(key).copied() else {
            return 0;
        };
        self.delay_of(&e, now_ms)
    }

    fn delay_of(&self, e: &Entry, now_ms: u64) -> u64 {
        let threshold = self.config.failures_before_lock;
        if e.failures < threshold || self.decayed(e, now_ms) {
            return 0;
        }
        let over = (e.failures - threshold).min(32);
        self.config
            .user_delay_ms_base
            .saturating_mul(1u64 << over)
            .min(self.config.user_delay_ms_max)
    }

    /// Records a success: the key starts over.
    pub fn success(&self, key: &str) {
        self.entries.lock().remove(key);
    }

    /// Keys locked or delayed at `now_ms`, by key.
    pub fn lockouts(&self, now_ms: u64) -> Vec<Lockout> {
        let mut v: Vec<Lockout> = self
            .entries
            .lock()
            .iter()
            .filter_map(|(k, e)| {
                let remaining_ms = e.locked_until_ms.saturating_sub(now_ms);
                let delay_ms = if k.starts_with(USER_PREFIX) {
                    self.delay_of(e, now_ms)
                } else {
                    0
                };
                (remaining_ms > 0 || delay_ms > 0).then(|| Lockout {
                    key: k.clone(),
                    failures: e.failures,
                    remaining_ms,
                    delay_ms,
                })
            })
            .collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// Lifts a lockout; returns whether there was one.
    pub fn lift(&self, key: &str) -> bool {
        self.entries.lock().remove(key).is_some()
    }

    /// Lifts everything that slows `username` down: its `user:` key and every
    /// `pair:{username}@...` key. Returns how many keys were lifted.
    pub fn lift_username(&self, username: &str) -> usize {
        let user = user_key(username);
        let pairs = pair_key(username, "");
        let mut m = self.entries.lock();
        let before = m.len();
        m.retain(|k, _| *k != user && !k.starts_with(&pairs));
        before - m.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> ThrottleConfig {
        ThrottleConfig {
            failures_before_lock: 3,
            lock_ms_base: 100,
            lock_ms_max: 350,
            user_delay_ms_base: 10,
            user_delay_ms_max: 25,
            keys_max: 10,
        }
    }

    #[test]
    fn a_full_table_evicts_the_oldest_key_and_ties_by_key() {
        // Every key seen at the same time: the smallest key goes, whatever the map's order.
        for _ in 0..8 {
            let t = Throttle::new(small()).unwrap();
            let mut keys: Vec<String> = (0..10).map(|i| format!("client:{i}")).collect();
            keys.reverse();
            for k in &keys {
                t.count(k, 1_000);
            }
            t.count("client:new", 1_000);
            assert_eq!(t.entries.lock().len(), 10);
            assert!(
                !t.entries.lock().contains_key("client:0"),
                "the smallest key went"
            );
        }
    }

    #[test]
    fn lockout_grows_and_success_clears() {
        let t = Throttle::new(small()).unwrap();
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
    fn a_username_is_delayed_boundedly_never_locked() {
        let t = Throttle::new(small()).unwrap();
        let k = user_key("Admin");
        assert_eq!(k, "user:admin");
        for _ in 0..2 {
            t.count(&k, 0);
        }
        assert_eq!(t.delay_for(&k, 0), 0);
        t.count(&k, 0);
        assert_eq!(t.delay_for(&k, 0), 10);
        t.count(&k, 0);
        assert_eq!(t.delay_for(&k, 0), 20);
        for _ in 0..200 {
            t.count(&k, 0);
            assert_eq!(t.locked_for(&k, 0), None, "a username is never locked");
        }
        assert_eq!(t.delay_for(&k, 0), 25, "bounded");
        assert_eq!(
            t.lockouts(0),
            vec![Lockout {
                key: k.clone(),
                failures: 204,
                remaining_ms: 0,
                delay_ms: 25
            }]
        );
        // Quiet for longer than lock_ms_max: the delay is gone.
        assert_eq!(t.delay_for(&k, 351), 0);
    }

    #[test]
    fn lifting_a_username_lifts_its_pairs_only() {
        let t = Throttle::new(small()).unwrap();
        let a = LoginKeys::new("bob", "10.0.0.1");
        let b = LoginKeys::new("bobby", "10.0.0.1");
        for k in [&a.pair, &a.user, &a.client, &b.pair] {
            t.failure(k, 0);
        }
        assert_eq!(a.pair, "pair:bob@10.0.0.1");
        assert_eq!(t.lift_username("BOB"), 2);
        assert_eq!(
            t.entries.lock().len(),
            2,
            "bobby's pair and the client stay"
        );
    }

    #[test]
    fn attempts_count_before_the_check_so_parallel_guesses_are_bounded() {
        let t = Throttle::new(ThrottleConfig {
            failures_before_lock: 5,
            ..ThrottleConfig::default()
        })
        .unwrap();
        // Ten guesses start at once: only five get past the throttle.
        let admitted = (0..10)
            .filter(|_| t.attempt("pair:x@a", 0).is_none())
            .count();
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
    fn bounded_and_config_checked() {
        let t = Throttle::new(ThrottleConfig {
            keys_max: 3,
            ..ThrottleConfig::default()
        })
        .unwrap();
        for i in 0..100 {
            t.failure(&format!("k{i}"), i);
        }
        assert!(t.entries.lock().len() <= 3);
        assert!(
            Throttle::new(ThrottleConfig {
                user_delay_ms_max: 600_000,
                ..ThrottleConfig::default()
            })
            .is_err()
        );
    }
}
