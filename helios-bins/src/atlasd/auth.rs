//! Credentials: `AUTH [user] pass` and `HELLO ... AUTH user pass`.
//!
//! Two kinds of user, as Redis 7's ACL has:
//! - `default` (`AUTH pass`, `AUTH default pass`): the single `requirepass` password. It
//!   unlocks everything (no scope). With no `requirepass` the default user needs no
//!   password (connections start as it), unless `auth_users` is on: then the default user
//!   is off, and every connection must AUTH.
//! - helios-auth users (with `auth_users: true`): `AUTH username password` is checked by
//!   [`helios_auth::Auth::authenticate`], the same check (and throttle) as the gateway's
//!   login. A user holding `admin:*` is unrestricted; any other is scoped to its own KV
//!   namespace with the rights of its roles ([`super::acl`]). Users and roles are the ones
//!   in the data directory when atlasd started.
//!
//! Every failure answers `-WRONGPASS invalid username-password pair or user is disabled.`
//! (unknown user, wrong password, disabled user, throttled attempt alike), and a failed
//! AUTH leaves the connection as it was.
//!
//! # Throttling (never on the runtime thread)
//! Both throttles key on the client as the gateway does ([`crate::net::client_key`]): an
//! IPv4 address, or an IPv6 address's /64 (a host owns the whole /64, so rotating its
//! addresses inside it dodges nothing). "Address" below means that client.
//! - `requirepass`: per client address ([`PassThrottle`]): an attempt counts as a failure
//!   before the check and a success clears the address; after [`FREE_FAILURES`] failures
//!   each attempt waits [`DELAY_MS_BASE`], doubling per failure up to [`DELAY_MS_MAX`],
//!   after the previous attempt's start, so parallel connections from one address queue
//!   behind each other. An attempt that would wait more than [`WAIT_MS_MAX`] is refused at
//!   once, unchecked. A quiet address starts over after [`QUIET_MS`].
//! - helios-auth users: the gateway login's throttle, inside `Auth` (given the same client
//!   key as the gateway gives it): locks per (username, address) pair and per address,
//!   and a bounded per-username delay ([`helios_auth::Auth::login_delay_ms`]) served here
//!   before the check.
//!
//! Waits are `tokio::time::sleep` (the connection's task yields; a shutdown cuts them
//! short); bcrypt runs in `block_in_place`.
//!
//! # Timing
//! The wait comes before the check, so a right password waits as long as a wrong one. The
//! `requirepass` check hashes the given password with SHA-256 and compares the digest with
//! the configured one's in constant time: the same work whatever the password, its length
//! included. helios-auth runs one bcrypt verification for known and unknown users alike.

use super::Shared;
use super::acl::Scope;
use super::cmd::Session;
use super::config::AtlasdConfig;
use helios_auth::rbac::perms;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;

/// The reply to every failed AUTH (Redis's text).
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// Failures of an address before its AUTHs wait.
pub const FREE_FAILURES: u32 = 5;
/// The first wait, ms.
pub const DELAY_MS_BASE: u64 = 100;
/// The longest wait between two attempts of one address, ms.
pub const DELAY_MS_MAX: u64 = 10_000;
/// The longest an attempt queues behind others of its address before it is refused, ms.
pub const WAIT_MS_MAX: u64 = 60_000;
/// An address quiet this long starts over, ms.
pub const QUIET_MS: u64 = 3_600_000;
/// Most addresses tracked.
pub const ADDRESSES_MAX: usize = 100_000;

/// Whether a new connection starts authenticated (as `default`): only when no password
/// at all is configured.
pub fn starts_authed(cfg: &AtlasdConfig) -> bool {
    cfg.requirepass.is_empty() && !cfg.auth_users
}

/// SHA-256 of `b`.
pub fn digest(b: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Whether `given` is the secret whose digest is `want`: its SHA-256 compared in constant
/// time (so in time independent of both contents and of the secret's length).
pub fn secret_eq(given: &[u8], want: &[u8; 32]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(&digest(given), want).is_ok()
}

/// Who the credentials name.
enum Identity {
    /// `default`, or a helios-auth admin: the raw keyspace.
    Unrestricted,
    /// A helios-auth user without `admin:*`.
    Scoped(Scope),
}

/// Checks `user` (none: `default`) and `pass`; when they hold, the connection becomes that
/// user. Returns whether they held. Waits as the throttles say first (see the module
/// docs).
pub async fn log_in(shared: &Shared, s: &mut Session, user: Option<&[u8]>, pass: &[u8]) -> bool {
    // The throttles' client: the address, or its IPv6 /64 (as the gateway's).
    let client = crate::net::client_key(s.peer);
    let who = match user {
        None | Some(b"default") => default_user(shared, &client, pass).await,
        Some(u) => helios_user(shared, &client, u, pass).await,
    };
    match who {
        Some(Identity::Unrestricted) => {
            s.authed = true;
            s.scope = None;
            true
        }
        Some(Identity::Scoped(scope)) => {
            s.authed = true;
            s.scope = Some(scope);
            true
        }
        None => false,
    }
}

async fn default_user(shared: &Shared, client: &str, pass: &[u8]) -> Option<Identity> {
    if shared.cfg.requirepass.is_empty() {
        // As Redis 7: the default user has no password and any is accepted, unless
        // helios-auth users are on (then it is off).
        return (!shared.cfg.auth_users).then_some(Identity::Unrestricted);
    }
    let wait = shared.pass_throttle.begin(client, shared.mono_ms())?;
    pause(shared, wait).await;
    if secret_eq(pass, &shared.pass_digest) {
        shared.pass_throttle.success(client);
        Some(Identity::Unrestricted)
    } else {
        None
    }
}

async fn helios_user(shared: &Shared, client: &str, user: &[u8], pass: &[u8]) -> Option<Identity> {
    // Without `auth_users`, `default` is the only user.
    let auth = shared.auth.as_ref()?;
    // helios-auth names and passwords are UTF-8: anything else is no user's.
    let (Ok(user), Ok(pass)) = (std::str::from_utf8(user), std::str::from_utf8(pass)) else {
        return None;
    };
    pause(shared, auth.login_delay_ms(user)).await;
    let view = super::blocking(|| auth.authenticate(user, pass, client)).ok()?;
    if auth.authorize(&view.id, perms::ADMIN_ALL) {
        return Some(Identity::Unrestricted);
    }
    let read = auth.authorize(&view.id, perms::KV_READ);
    let write = auth.authorize(&view.id, perms::KV_WRITE);
    let scope = Scope::new(view.username, view.id, read, write);
    if scope.is_none() {
        tracing::warn!("AUTH: a helios-auth user id names no KV namespace; refused");
    }
    scope.map(Identity::Scoped)
}

/// Waits `ms` without holding the runtime thread; a shutdown cuts it short.
async fn pause(shared: &Shared, ms: u64) {
    if ms == 0 {
        return;
    }
    let mut stop = shared.shutdown.subscribe();
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(ms)) => {}
        _ = stop.wait_for(|v| *v) => {}
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Attempts counted and not cleared by a success.
    failures: u32,
    /// When the latest attempt was (or is to be) checked, ms.
    start_ms: u64,
    /// When the latest attempt arrived, ms.
    seen_ms: u64,
}

/// The per-address throttle of `AUTH <requirepass>` (see the module docs), keyed by the
/// client key of [`crate::net::client_key`] (an IPv4 address or an IPv6 /64). Time is
/// passed in (ms on any monotonic clock).
#[derive(Debug, Default)]
pub struct PassThrottle {
    entries: Mutex<HashMap<String, Entry>>,
}

/// The wait after `failures` failures: none before [`FREE_FAILURES`], then doubling.
fn delay_ms(failures: u32) -> u64 {
    if failures < FREE_FAILURES {
        return 0;
    }
    let over = (failures - FREE_FAILURES).min(32);
    DELAY_MS_BASE.saturating_mul(1u64 << over).min(DELAY_MS_MAX)
}

impl PassThrottle {
    /// Counts an attempt from `client` (a [`crate::net::client_key`]) at `now_ms` (as a
    /// failure until [`PassThrottle::success`]) and returns how long it must wait before
    /// its check; `None`: it would wait more than [`WAIT_MS_MAX`], and is refused unchecked
    /// (and not counted).
    pub fn begin(&self, client: &str, now_ms: u64) -> Option<u64> {
        let mut m = self.entries.lock();
        if !m.contains_key(client) && m.len() >= ADDRESSES_MAX {
            m.retain(|_, e| now_ms.saturating_sub(e.seen_ms) <= QUIET_MS);
            if m.len() >= ADDRESSES_MAX
                && let Some(oldest) = m
                    .iter()
                    .min_by_key(|(_, e)| e.seen_ms)
                    .map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
        }
        let e = m.entry(client.to_owned()).or_insert(Entry {
            failures: 0,
            start_ms: 0,
            seen_ms: now_ms,
        });
        if now_ms.saturating_sub(e.seen_ms) > QUIET_MS && e.start_ms <= now_ms {
            e.failures = 0;
        }
        let start = now_ms.max(e.start_ms.saturating_add(delay_ms(e.failures)));
        let wait = start - now_ms;
        if wait > WAIT_MS_MAX {
            return None;
        }
        e.failures = e.failures.saturating_add(1);
        e.start_ms = start;
        e.seen_ms = now_ms;
        Some(wait)
    }

    /// The right password: the client starts over.
    pub fn success(&self, client: &str) {
        self.entries.lock().remove(client);
    }

    /// Failures counted for `client` (tests, diagnostics).
    pub fn failures(&self, client: &str) -> u32 {
        self.entries.lock().get(client).map_or(0, |e| e.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::net::client_key;
    use std::net::IpAddr;

    const A: &str = "10.0.0.1";
    const B: &str = "10.0.0.2";

    #[test]
    fn one_connections_guesses_wait_longer_and_longer() {
        let t = PassThrottle::default();
        let mut now = 1_000;
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.begin(A, now), Some(0));
        }
        // Each next attempt, made as soon as the previous answered, waits twice as long.
        let mut waits = Vec::new();
        for _ in 0..10 {
            let w = t.begin(A, now).unwrap();
            waits.push(w);
            now += w + 1;
        }
        assert_eq!(
            waits,
            [100, 199, 399, 799, 1599, 3199, 6399, 9999, 9999, 9999]
        );
        // Another address is not slowed.
        assert_eq!(t.begin(B, now), Some(0));
        // The right password clears the address.
        t.success(A);
        assert_eq!(t.failures(A), 0);
        assert_eq!(t.begin(A, now), Some(0));
    }

    #[test]
    fn parallel_guesses_queue_and_the_queue_is_bounded() {
        let t = PassThrottle::default();
        let now = 0;
        let waits: Vec<Option<u64>> = (0..20).map(|_| t.begin(A, now)).collect();
        // Five at once, then one after another at growing intervals.
        let zero = Some(0);
        assert_eq!(
            waits[..8],
            [
                zero,
                zero,
                zero,
                zero,
                zero,
                Some(100),
                Some(300),
                Some(700)
            ]
        );
        // Past a minute of queue, attempts are refused at once and not counted.
        let last_admitted = waits.iter().rposition(Option::is_some).unwrap();
        assert!(waits[last_admitted].unwrap() <= WAIT_MS_MAX);
        assert!(waits[last_admitted + 1..].iter().all(Option::is_none));
        assert_eq!(t.failures(A), last_admitted as u32 + 1);
    }

    #[test]
    fn a_quiet_address_starts_over_and_the_table_is_bounded() {
        let t = PassThrottle::default();
        for _ in 0..20 {
            t.begin(A, 0);
        }
        assert!(t.failures(A) > FREE_FAILURES);
        let later = 2 * WAIT_MS_MAX + QUIET_MS + 1;
        assert_eq!(t.begin(A, later), Some(0));
        assert_eq!(t.failures(A), 1);
        let t = PassThrottle::default();
        for i in 0..(ADDRESSES_MAX as u32 + 10) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(i));
            t.begin(&client_key(ip), u64::from(i));
        }
        assert!(t.entries.lock().len() <= ADDRESSES_MAX);
    }

    /// One IPv6 host owns its /64: rotating addresses inside it is one client, throttled
    /// as one; another /64 (and an IPv4-mapped address, as its IPv4 one) is another.
    #[test]
    fn the_addresses_of_one_ipv6_64_share_a_throttle() {
        let t = PassThrottle::default();
        let key = |s: &str| client_key(s.parse::<IpAddr>().unwrap());
        for i in 0..FREE_FAILURES {
            let a = format!("2001:db8:1:2:{i:x}:{i:x}:{i:x}:1");
            assert_eq!(t.begin(&key(&a), 0), Some(0));
        }
        // A fresh address of the same /64 waits as the next guess of the first would.
        assert_eq!(
            t.begin(&key("2001:db8:1:2:ffff::9"), 0),
            Some(DELAY_MS_BASE)
        );
        assert_eq!(t.failures(&key("2001:db8:1:2::1")), FREE_FAILURES + 1);
        // The next /64 is not slowed.
        assert_eq!(t.begin(&key("2001:db8:1:3::1"), 0), Some(0));
        // An IPv4-mapped address is its IPv4 address.
        for _ in 0..FREE_FAILURES {
            t.begin(&key("10.0.0.7"), 0);
        }
        assert_eq!(t.begin(&key("::ffff:10.0.0.7"), 0), Some(DELAY_MS_BASE));
        // The right password from any address of the /64 clears it.
        t.success(&key("2001:db8:1:2::abcd"));
        assert_eq!(t.failures(&key("2001:db8:1:2::1")), 0);
    }

    #[test]
    fn secrets_compare_by_digest() {
        let want = digest(b"s3cret");
        assert!(secret_eq(b"s3cret", &want));
        for wrong in [&b""[..], b"s3cre", b"s3cret!", b"S3cret", &[b'x'; 4096]] {
            assert!(!secret_eq(wrong, &want));
        }
    }
}
