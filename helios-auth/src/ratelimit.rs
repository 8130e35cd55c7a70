//! Per-client rate limiting over [`helios_core::TokenBucket`].
//!
//! A decision never writes to ATLAS: buckets live in memory, and [`RateLimiter::flush`]
//! (called through [`RateLimiter::flush_due`] on the runtime's tick, so at least every
//! `persist_interval_ms`, and at shutdown) writes the buckets
//! that changed to `rate:{clientId}` in one batch, each with a TTL of `idle_ms`. A client
//! unseen for `idle_ms` is dropped from memory (and its record expires), so memory stays
//! bounded however many clients appear; `clients_max` caps it outright (the client seen
//! longest ago is evicted first; under that memory pressure an evicted client's changes
//! since the last flush are dropped, which can only make its bucket fuller after a
//! restart, by at most one interval of decisions). On first sight after a restart a client's bucket is read
//! back from ATLAS, so a restart refills a bucket by at most what `persist_interval_ms` of
//! decisions had taken: restarting cannot be used to reset limits beyond that bound.
//!
//! Limits are configured per client, else per role, else a default, and can change at run
//! time ([`RateLimiter::set_config`]); a bucket adopts its new limits on its next decision
//! without refilling.

use crate::error::{AuthError, Result};
use helios_atlas::{Atlas, Expiry, WriteBatch};
use helios_core::{TokenBucket, TokenBucketConfig, Verdict, keys};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Limits: a default, per-role and per-client overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Applies when no override matches.
    pub default: TokenBucketConfig,
    /// Per role (the first of a client's roles that has one wins).
    #[serde(default)]
    pub roles: HashMap<String, TokenBucketConfig>,
    /// Per client id (wins over roles).
    #[serde(default)]
    pub clients: HashMap<String, TokenBucketConfig>,
    /// Forget clients idle this long, ms (default 1 h).
    #[serde(default = "default_idle_ms")]
    pub idle_ms: u64,
    /// Most clients held in memory (default 1,000,000).
    #[serde(default = "default_clients_max")]
    pub clients_max: usize,
    /// How often the runtime persists buckets (see [`RateLimiter::flush_due`]), ms
    /// (default 1,000): the most a restart can refill a bucket by is what this long of
    /// decisions took.
    #[serde(default = "default_persist_interval_ms")]
    pub persist_interval_ms: u64,
}

fn default_idle_ms() -> u64 {
    3_600_000
}

fn default_clients_max() -> usize {
    1_000_000
}

fn default_persist_interval_ms() -> u64 {
    1_000
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            default: TokenBucketConfig {
                capacity: 100,
                refill_tokens: 50,
                refill_period_ms: 1_000,
            },
            roles: HashMap::new(),
            clients: HashMap::new(),
            idle_ms: default_idle_ms(),
            clients_max: default_clients_max(),
            persist_interval_ms: default_persist_interval_ms(),
        }
    }
}

impl RateLimitConfig {
    /// Checks every limit, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &'static str, e: String| AuthError::Config { key, reason: e };
        self.default
            .validate()
            .map_err(|e| bad("rate_limit.default", e.to_string()))?;
        for c in self.roles.values() {
            c.validate()
                .map_err(|e| bad("rate_limit.roles", e.to_string()))?;
        }
        for c in self.clients.values() {
            c.validate()
                .map_err(|e| bad("rate_limit.clients", e.to_string()))?;
        }
        if self.persist_interval_ms == 0 || self.persist_interval_ms > self.idle_ms {
            return Err(bad(
                "rate_limit.persist_interval_ms",
                "must be in 1..=idle_ms".into(),
            ));
        }
        if self.idle_ms == 0 || self.clients_max == 0 {
            return Err(bad(
                "rate_limit.idle_ms",
                "idle_ms and clients_max must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// A rate-limit decision, with what the `RateLimit-Policy`, `RateLimit` and `Retry-After`
/// headers need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The bucket capacity (the policy's quota).
    pub limit: u64,
    /// Tokens left after this decision.
    pub remaining: u64,
    /// Time until the bucket is full again, s (rounded up).
    pub reset_s: u64,
    /// When denied: time until the request could succeed, s (rounded up); `None` when it
    /// never can (it costs more than the capacity).
    pub retry_after_s: Option<u64>,
    /// The policy as `RateLimit-Policy` wants it: `"default";q=100;w=2` (made once per
    /// configuration, shared by every decision).
    pub policy: Arc<str>,
}

#[derive(Debug)]
struct Client {
    bucket: TokenBucket,
    last_ms: u64,
    dirty: bool,
    // Bumped by every decision: a flush clears `dirty` only if no decision came since.
    version: u64,
}

#[derive(Debug, Default)]
struct State {
    clients: HashMap<String, Client>,
    by_last: BTreeSet<(u64, String)>,
    flushed_at_ms: u64,
}

/// The configuration with every policy's `RateLimit-Policy` text made up front, so a
/// decision formats nothing.
#[derive(Debug)]
struct Compiled {
    config: RateLimitConfig,
    default_policy: Arc<str>,
    // Per role and per client: the limits with their policy text.
    roles: HashMap<String, (TokenBucketConfig, Arc<str>)>,
    clients: HashMap<String, (TokenBucketConfig, Arc<str>)>,
}

impl Compiled {
    fn new(config: RateLimitConfig) -> Self {
        let policy = |name: &str, l: &TokenBucketConfig| -> (TokenBucketConfig, Arc<str>) {
            let window_s = div_ceil_s(
                l.capacity
                    .saturating_mul(l.refill_period_ms)
                    .div_ceil(l.refill_tokens),
            );
            (
                *l,
                format!("\"{name}\";q={};w={window_s}", l.capacity).into(),
            )
        };
        Self {
            default_policy: policy("default", &config.default).1,
            roles: config
                .roles
                .iter()
                .map(|(r, l)| (r.clone(), policy(&format!("role-{r}"), l)))
                .collect(),
            clients: config
                .clients
                .iter()
                .map(|(c, l)| (c.clone(), policy(&format!("client-{c}"), l)))
                .collect(),
            config,
        }
    }

    /// The limits of `client` (with `roles`) and their policy text.
    fn limits_for(&self, client: &str, roles: &[String]) -> (TokenBucketConfig, Arc<str>) {
        if let Some((l, p)) = self.clients.get(client) {
            return (*l, p.clone());
        }
        for r in roles {
            if let Some((l, p)) = self.roles.get(r) {
                return (*l, p.clone());
            }
        }
        (self.config.default, self.default_policy.clone())
    }
}

/// The limiter. `Send + Sync`.
#[derive(Debug)]
pub struct RateLimiter {
    atlas: Atlas,
    config: RwLock<Compiled>,
    state: Mutex<State>,
}

/// Ops per ATLAS batch when flushing (ATLAS caps a batch at 100k ops).
const FLUSH_BATCH_COUNT: usize = 10_000;

/// `rate:{id}`: ids that are short and plain are kept readable; others (IPv6 addresses
/// with ':', long ids) are stored under `h.` + SHA-256, so every key fits the schema.
fn rate_key(client: &str) -> String {
    keys::rate_client(client, crate::random::sha256_hex)
}

fn div_ceil_s(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

impl RateLimiter {
    /// A limiter over `atlas` with `config` (checked).
    pub fn new(atlas: Atlas, config: RateLimitConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            atlas,
            config: RwLock::new(Compiled::new(config)),
            state: Mutex::new(State::default()),
        })
    }

    /// The current limits.
    pub fn config(&self) -> RateLimitConfig {
        self.config.read().config.clone()
    }

    /// Replaces the limits (run-time change).
    pub fn set_config(&self, config: RateLimitConfig) -> Result<()> {
        config.validate()?;
        *self.config.write() = Compiled::new(config);
        Ok(())
    }

    /// Decides whether `client` (with `roles`) may spend `cost` tokens at `now_ms`. No
    /// write, no fsync.
    pub fn check(&self, client: &str, roles: &[String], cost: u64, now_ms: u64) -> Decision {
        // One read of the configuration per decision.
        let (limits, policy, clients_max) = {
            let c = self.config.read();
            let (limits, policy) = c.limits_for(client, roles);
            (limits, policy, c.config.clients_max)
        };
        let mut st = self.state.lock();
        let st = &mut *st;
        if !st.clients.contains_key(client) {
            // First sight since start (or since idle expiry): resume the stored bucket.
            let bucket = self
                .atlas
                .get(rate_key(client))
                .and_then(|b| serde_json::from_slice::<TokenBucket>(&b).ok())
                .and_then(|mut b| b.reconfigure(limits, now_ms).ok().map(|()| b))
                .or_else(|| TokenBucket::new(limits, now_ms).ok());
            let Some(bucket) = bucket else {
                // Limits were validated; a bucket always builds. Deny rather than panic.
                return Decision {
                    allowed: false,
                    limit: limits.capacity,
                    remaining: 0,
                    reset_s: 1,
                    retry_after_s: Some(1),
                    policy,
                };
            };
            while st.clients.len() >= clients_max {
                let Some((_, oldest)) = st.by_last.pop_first() else {
                    break;
                };
                st.clients.remove(&oldest);
            }
            st.clients.insert(
                client.to_owned(),
                Client {
                    bucket,
                    last_ms: now_ms,
                    dirty: false,
                    version: 0,
                },
            );
            st.by_last.insert((now_ms, client.to_owned()));
        }
        let Some(c) = st.clients.get_mut(client) else {
            unreachable!("inserted above");
        };
        if *c.bucket.config() != limits {
            let _ = c.bucket.reconfigure(limits, now_ms);
        }
        if c.last_ms != now_ms {
            // The LRU entry moves to the new time, reusing its key.
            let key = st
                .by_last
                .take(&(c.last_ms, client.to_owned()))
                .map_or_else(|| client.to_owned(), |(_, k)| k);
            c.last_ms = now_ms;
            st.by_last.insert((now_ms, key));
        }
        let verdict = c.bucket.try_take(now_ms, cost);
        c.dirty = true;
        c.version += 1;
        let capacity = limits.capacity;
        let tokens = c.bucket.tokens(now_ms);
        // Time to refill completely from the current level.
        let missing = capacity.saturating_sub(tokens);
        let reset_ms = missing
            .saturating_mul(limits.refill_period_ms)
            .div_ceil(limits.refill_tokens);
        Decision {
            allowed: verdict.is_allowed(),
            limit: capacity,
            remaining: verdict.tokens_left(),
            reset_s: div_ceil_s(reset_ms),
            retry_after_s: match verdict {
                Verdict::Allowed { .. } => None,
                // Costs more than the capacity: waiting never helps, so no Retry-After.
                v if v.retry_after_ms() == u64::MAX => None,
                v => Some(div_ceil_s(v.retry_after_ms()).max(1)),
            },
            policy,
        }
    }

    /// Writes changed buckets to ATLAS (batches of at most 10,000, TTL `idle_ms`) and
    /// forgets idle clients that are saved. A bucket stays marked changed until a write
    /// that holds its latest state succeeds, so a failed flush loses nothing that a later
    /// one cannot write. Returns how many buckets were written.
    pub fn flush(&self, now_ms: u64) -> Result<usize> {
        let idle_ms = self.config.read().config.idle_ms;
        let pending: Vec<(String, Vec<u8>, u64, u64)> = {
            let st = self.state.lock();
            st.clients
                .iter()
                .filter(|(_, c)| c.dirty)
                .filter_map(|(id, c)| {
                    serde_json::to_vec(&c.bucket)
                        .ok()
                        .map(|v| (id.clone(), v, c.last_ms.saturating_add(idle_ms), c.version))
                })
                .collect()
        };
        // In key order: the same buckets give the same AOF records and batch boundaries,
        // whatever the map's iteration order.
        let mut pending = pending;
        pending.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut written = 0;
        for chunk in pending.chunks(FLUSH_BATCH_COUNT) {
            let mut batch = WriteBatch::new();
            for (id, v, until, _) in chunk {
                batch.set(rate_key(id), v.clone(), Expiry::AtMs(*until));
            }
            self.atlas.write_batch(batch)?;
            let mut st = self.state.lock();
            for (id, _, _, version) in chunk {
                if let Some(c) = st.clients.get_mut(id)
                    && c.version == *version
                {
                    c.dirty = false;
                }
            }
            written += chunk.len();
        }
        let mut st = self.state.lock();
        let st = &mut *st;
        st.flushed_at_ms = now_ms;
        let cutoff = now_ms.saturating_sub(idle_ms);
        let idle: Vec<(u64, String)> = st
            .by_last
            .iter()
            .take_while(|(last, _)| *last <= cutoff)
            .cloned()
            .collect();
        for (last, id) in idle {
            // Unsaved changes keep a client in memory until a flush saves them.
            if st.clients.get(&id).is_some_and(|c| !c.dirty) {
                st.clients.remove(&id);
                st.by_last.remove(&(last, id));
            }
        }
        Ok(written)
    }

    /// Flushes if `persist_interval_ms` has passed since the last flush (the runtime calls
    /// this on every tick; harmless to call often). Returns how many buckets were written.
    pub fn flush_due(&self, now_ms: u64) -> Result<usize> {
        let interval = self.config.read().config.persist_interval_ms;
        let last = self.state.lock().flushed_at_ms;
        if now_ms.saturating_sub(last) < interval && now_ms >= last {
            return Ok(0);
        }
        self.flush(now_ms)
    }

    /// Clients held in memory.
    pub fn client_count(&self) -> usize {
        self.state.lock().clients.len()
    }
}
