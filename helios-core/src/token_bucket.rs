//! An integer-only token bucket for per-client rate limiting.
//!
//! Owns [`TokenBucket`], its [`TokenBucketConfig`], the [`Verdict`] a take returns and
//! [`TokenBucketError`]. The bucket is a sans-IO state machine: time comes in as an argument
//! (`now_ms`, milliseconds on any clock that only the caller reads), and the bucket is plain
//! data that serializes (serde) so it can be stored in ATLAS under `rate:{clientId}`.
//!
//! # Arithmetic
//!
//! The rate is `refill_tokens` per `refill_period_ms`. The bucket counts in *units* of
//! `1 / refill_period_ms` of a token, so one millisecond adds exactly `refill_tokens` units and
//! no fraction is ever rounded away: a rate of 1 token per 3 s polled every 1 ms refills
//! exactly one token every 3000 ms. The level is stored as whole `tokens` plus
//! `partial_units` (the fraction, `< refill_period_ms`), both `u64`; arithmetic happens in
//! `u128`, where `u64 * u64` cannot overflow, and sums saturate. There are no floats.
//!
//! # Invariants (checked by [`TokenBucket::check_invariants`])
//!
//! - The config is valid: every field is non-zero.
//! - `partial_units < refill_period_ms`.
//! - The level never exceeds `capacity` tokens (`tokens <= capacity`, and `partial_units == 0`
//!   when `tokens == capacity`), and never goes below zero (unsigned).
//! - `last_at_ms` never decreases. A clock that jumps backwards counts as no time passing, and
//!   since the bucket keeps `max(last, now)`, the span it already credited is never credited
//!   again when the clock comes forward.
//!
//! Not here: the map of buckets per client, their persistence and eviction (the gateway's
//! rate-limit layer owns those), and any reading of the real clock.

use serde::{Deserialize, Serialize};

/// How a [`TokenBucket`] fills: at most `capacity` tokens, refilled at `refill_tokens` per
/// `refill_period_ms`.
///
/// Every field must be non-zero; [`TokenBucketConfig::validate`] checks this and
/// [`TokenBucket::new`] calls it. Any `u64` values are otherwise fine: the bucket's arithmetic
/// does not overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenBucketConfig {
    /// Most tokens the bucket holds: the largest burst, and the largest single take that can
    /// ever succeed.
    pub capacity: u64,
    /// Tokens added every `refill_period_ms`.
    pub refill_tokens: u64,
    /// The period over which `refill_tokens` are added, in milliseconds. Refill is continuous
    /// within the period, at millisecond granularity, not a step at its end.
    pub refill_period_ms: u64,
}

impl TokenBucketConfig {
    /// Checks that the config can drive a bucket; the error names the offending field.
    pub fn validate(&self) -> Result<(), TokenBucketError> {
        if self.capacity == 0 {
            return Err(TokenBucketError::InvalidConfig {
                field: "capacity",
                reason: "must be at least 1 (a bucket of 0 tokens denies everything)",
            });
        }
        if self.refill_tokens == 0 {
            return Err(TokenBucketError::InvalidConfig {
                field: "refill_tokens",
                reason: "must be at least 1 (a bucket that never refills)",
            });
        }
        if self.refill_period_ms == 0 {
            return Err(TokenBucketError::InvalidConfig {
                field: "refill_period_ms",
                reason: "must be at least 1 ms",
            });
        }
        Ok(())
    }

    /// The capacity in units of `1 / refill_period_ms` token. Cannot overflow: `u64 * u64`
    /// fits in `u128`.
    fn capacity_units(&self) -> u128 {
        u128::from(self.capacity) * u128::from(self.refill_period_ms)
    }
}

/// Why a config or a stored bucket was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenBucketError {
    /// A config field has a value the bucket cannot work with.
    #[error("token bucket config: `{field}` {reason}")]
    InvalidConfig {
        /// The offending field, as spelled in [`TokenBucketConfig`].
        field: &'static str,
        /// What the field must satisfy.
        reason: &'static str,
    },
    /// A stored bucket holds more than its capacity.
    #[error(
        "stored token bucket holds {tokens} tokens and {partial_units} partial units; \
         the capacity is {capacity} tokens"
    )]
    TokensOverCapacity {
        /// Whole tokens in the stored state.
        tokens: u64,
        /// The fractional token in the stored state.
        partial_units: u64,
        /// The capacity of the stored config.
        capacity: u64,
    },
    /// A stored bucket's fractional token is a whole token or more.
    #[error(
        "stored token bucket has {partial_units} partial units; \
         it must be below refill_period_ms ({refill_period_ms})"
    )]
    PartialOutOfRange {
        /// The fractional token in the stored state.
        partial_units: u64,
        /// The period of the stored config, the exclusive upper bound of `partial_units`.
        refill_period_ms: u64,
    },
}

/// The outcome of [`TokenBucket::try_take`].
///
/// `tokens_left` is always the whole tokens in the bucket after the call (fractions are
/// rounded down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use]
pub enum Verdict {
    /// The tokens were taken.
    Allowed {
        /// Whole tokens left after the take.
        tokens_left: u64,
    },
    /// Too few tokens now; nothing was taken. If no other take happens, the same take
    /// succeeds when the caller's clock reads `now_ms + retry_after_ms`, and fails one
    /// millisecond earlier. `retry_after_ms >= 1`; it saturates at `u64::MAX` for waits
    /// longer than that (possible only with extreme configs).
    Denied {
        /// Whole tokens in the bucket (unchanged by the take).
        tokens_left: u64,
        /// Milliseconds until the bucket holds the tokens asked for.
        retry_after_ms: u64,
    },
    /// More tokens were asked for than the bucket can ever hold, so the take can never
    /// succeed; nothing was taken. Callers should reject the request outright (for HTTP,
    /// `413` or `429` without a `Retry-After`), not retry it.
    OverCapacity {
        /// Whole tokens in the bucket (unchanged by the take).
        tokens_left: u64,
        /// The bucket's capacity, which the request exceeded.
        capacity: u64,
    },
}

impl Verdict {
    /// Whether the tokens were taken.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allowed { .. })
    }

    /// Whole tokens in the bucket after the call.
    pub fn tokens_left(&self) -> u64 {
        match *self {
            Verdict::Allowed { tokens_left }
            | Verdict::Denied { tokens_left, .. }
            | Verdict::OverCapacity { tokens_left, .. } => tokens_left,
        }
    }

    /// Milliseconds until the take would succeed: `0` when [`Verdict::Allowed`], the exact
    /// wait when [`Verdict::Denied`], and `u64::MAX` ("never") when
    /// [`Verdict::OverCapacity`].
    pub fn retry_after_ms(&self) -> u64 {
        match *self {
            Verdict::Allowed { .. } => 0,
            Verdict::Denied { retry_after_ms, .. } => retry_after_ms,
            Verdict::OverCapacity { .. } => u64::MAX,
        }
    }
}

/// A token bucket: `try_take` spends tokens, time refills them, up to the capacity.
///
/// Protocol: build it with [`TokenBucket::new`] (it starts full), then call
/// [`TokenBucket::try_take`] with the current time for each request. Calls may come with any
/// `now_ms`; a time earlier than one already seen counts as no time passing. Reading with
/// [`TokenBucket::tokens`] changes nothing. To persist it, serialize it (field layout:
/// `config`, `tokens`, `partial_units`, `last_at_ms`); deserializing checks the invariants
/// and refuses a corrupt record with a [`TokenBucketError`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "TokenBucketRepr")]
pub struct TokenBucket {
    // Invariant: valid (every field non-zero).
    config: TokenBucketConfig,
    // Whole tokens. Invariant: `tokens <= capacity`, and `partial_units == 0` when equal.
    tokens: u64,
    // The fractional token, in units of `1 / refill_period_ms` token.
    // Invariant: `partial_units < refill_period_ms`.
    partial_units: u64,
    // The latest time seen, the instant up to which refill has been credited.
    // Invariant: never decreases.
    last_at_ms: u64,
}

/// The serialized form of [`TokenBucket`], checked before it becomes one.
#[derive(Deserialize)]
struct TokenBucketRepr {
    config: TokenBucketConfig,
    tokens: u64,
    partial_units: u64,
    last_at_ms: u64,
}

impl TryFrom<TokenBucketRepr> for TokenBucket {
    type Error = TokenBucketError;

    fn try_from(repr: TokenBucketRepr) -> Result<Self, Self::Error> {
        repr.config.validate()?;
        if repr.partial_units >= repr.config.refill_period_ms {
            return Err(TokenBucketError::PartialOutOfRange {
                partial_units: repr.partial_units,
                refill_period_ms: repr.config.refill_period_ms,
            });
        }
        let over = repr.tokens > repr.config.capacity
            || (repr.tokens == repr.config.capacity && repr.partial_units > 0);
        if over {
            return Err(TokenBucketError::TokensOverCapacity {
                tokens: repr.tokens,
                partial_units: repr.partial_units,
                capacity: repr.config.capacity,
            });
        }
        let bucket = TokenBucket {
            config: repr.config,
            tokens: repr.tokens,
            partial_units: repr.partial_units,
            last_at_ms: repr.last_at_ms,
        };
        bucket.check_invariants();
        Ok(bucket)
    }
}

impl TokenBucket {
    /// A full bucket (`capacity` tokens) at `now_ms`. Fails if the config is invalid.
    pub fn new(config: TokenBucketConfig, now_ms: u64) -> Result<Self, TokenBucketError> {
        config.validate()?;
        let bucket = TokenBucket {
            config,
            tokens: config.capacity,
            partial_units: 0,
            last_at_ms: now_ms,
        };
        bucket.check_invariants();
        Ok(bucket)
    }

    /// The bucket's config.
    pub fn config(&self) -> &TokenBucketConfig {
        &self.config
    }

    /// The latest time the bucket has seen: refill is credited up to here, and earlier
    /// times count as this one.
    pub fn last_at_ms(&self) -> u64 {
        self.last_at_ms
    }

    /// Whole tokens the bucket holds at `now_ms` (rounded down). Read-only: the same result
    /// as a take of 0 tokens, without recording the time.
    pub fn tokens(&self, now_ms: u64) -> u64 {
        let level_units = self.level_units_at(now_ms);
        self.whole_tokens(level_units)
    }

    /// Takes `n` tokens at `now_ms` if the bucket holds them; see [`Verdict`].
    ///
    /// Refill up to `now_ms` is credited whatever the outcome; only an
    /// [`Verdict::Allowed`] take removes tokens. `n == 0` is always allowed. Calling again
    /// with the same `now_ms` adds nothing, so a spurious extra call costs only its `n`.
    pub fn try_take(&mut self, now_ms: u64, n: u64) -> Verdict {
        self.advance(now_ms);
        let level_units = self.level_units();
        let tokens_left = self.tokens;
        if n > self.config.capacity {
            return Verdict::OverCapacity {
                tokens_left,
                capacity: self.config.capacity,
            };
        }
        let period = u128::from(self.config.refill_period_ms);
        // n <= capacity, so this is at most capacity_units.
        let need_units = u128::from(n) * period;
        if level_units >= need_units {
            self.set_level_units(level_units - need_units);
            self.check_invariants();
            assert!(self.tokens <= tokens_left, "a take never adds tokens");
            return Verdict::Allowed {
                tokens_left: self.tokens,
            };
        }
        let deficit_units = need_units - level_units;
        // Each millisecond after `last_at_ms` adds `refill_tokens` units and nothing caps
        // them before `need_units` (<= capacity_units) is reached, so the take succeeds
        // exactly `ceil(deficit / refill)` ms after `last_at_ms`. A caller whose clock is
        // behind `last_at_ms` must first wait for it to catch up.
        let refill_wait_ms = deficit_units.div_ceil(u128::from(self.config.refill_tokens));
        let behind_ms = u128::from(self.last_at_ms.saturating_sub(now_ms));
        let retry_after_ms = u64::try_from(refill_wait_ms + behind_ms).unwrap_or(u64::MAX);
        assert!(retry_after_ms >= 1, "a denied take has a deficit");
        Verdict::Denied {
            tokens_left,
            retry_after_ms,
        }
    }

    /// Switches to `config` at `now_ms`, keeping the tokens held (capped at the new capacity;
    /// the fractional token is rescaled to the new period, rounding down, so a change never
    /// adds tokens). Fails, changing nothing, if `config` is invalid.
    pub fn reconfigure(
        &mut self,
        config: TokenBucketConfig,
        now_ms: u64,
    ) -> Result<(), TokenBucketError> {
        config.validate()?;
        self.advance(now_ms);
        let tokens_before = self.tokens;
        // partial_units < old period, so the rescaled value is < the new period.
        let partial_units = u128::from(self.partial_units) * u128::from(config.refill_period_ms)
            / u128::from(self.config.refill_period_ms);
        let level_units = (u128::from(self.tokens) * u128::from(config.refill_period_ms))
            .saturating_add(partial_units)
            .min(config.capacity_units());
        self.config = config;
        self.set_level_units(level_units);
        self.check_invariants();
        assert!(
            self.tokens <= tokens_before,
            "reconfiguring never adds tokens"
        );
        Ok(())
    }

    /// Asserts the invariants listed in the module docs. Tests and simulations call it after
    /// every step; it is cheap (a few comparisons).
    pub fn check_invariants(&self) {
        assert!(self.config.capacity > 0, "capacity is non-zero");
        assert!(self.config.refill_tokens > 0, "refill_tokens is non-zero");
        assert!(
            self.config.refill_period_ms > 0,
            "refill_period_ms is non-zero"
        );
        assert!(
            self.partial_units < self.config.refill_period_ms,
            "partial_units {} < refill_period_ms {}",
            self.partial_units,
            self.config.refill_period_ms
        );
        assert!(
            self.tokens <= self.config.capacity,
            "tokens {} <= capacity {}",
            self.tokens,
            self.config.capacity
        );
        assert!(
            self.tokens < self.config.capacity || self.partial_units == 0,
            "a full bucket has no fractional token"
        );
    }

    /// Credits refill up to `now_ms` and records `max(last_at_ms, now_ms)`.
    fn advance(&mut self, now_ms: u64) {
        let level_units = self.level_units_at(now_ms);
        self.set_level_units(level_units);
        self.last_at_ms = self.last_at_ms.max(now_ms);
    }

    /// The level now, in units of `1 / refill_period_ms` token.
    fn level_units(&self) -> u128 {
        // tokens * period <= (capacity - 1) * period, plus partial < period: no overflow.
        u128::from(self.tokens) * u128::from(self.config.refill_period_ms)
            + u128::from(self.partial_units)
    }

    /// The level at `now_ms` (earlier than `last_at_ms` counts as `last_at_ms`), in units.
    fn level_units_at(&self, now_ms: u64) -> u128 {
        let elapsed_ms = now_ms.saturating_sub(self.last_at_ms);
        // u64 * u64 < 2^128: the product cannot overflow; the sum saturates.
        let gained_units = u128::from(elapsed_ms) * u128::from(self.config.refill_tokens);
        self.level_units()
            .saturating_add(gained_units)
            .min(self.config.capacity_units())
    }

    /// Whole tokens in `level_units` (rounded down).
    fn whole_tokens(&self, level_units: u128) -> u64 {
        assert!(level_units <= self.config.capacity_units());
        let tokens = level_units / u128::from(self.config.refill_period_ms);
        // level_units <= capacity * period (asserted above), so tokens <= capacity: a u64.
        u64::try_from(tokens).expect("tokens <= capacity fits in u64")
    }

    /// Stores `level_units` as whole tokens plus the fractional token.
    fn set_level_units(&mut self, level_units: u128) {
        self.tokens = self.whole_tokens(level_units);
        let partial = level_units % u128::from(self.config.refill_period_ms);
        // The remainder is below refill_period_ms, a u64.
        self.partial_units = u64::try_from(partial).expect("remainder < refill_period_ms");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(capacity: u64, refill_tokens: u64, refill_period_ms: u64) -> TokenBucketConfig {
        TokenBucketConfig {
            capacity,
            refill_tokens,
            refill_period_ms,
        }
    }

    fn bucket(
        capacity: u64,
        refill_tokens: u64,
        refill_period_ms: u64,
        now_ms: u64,
    ) -> TokenBucket {
        TokenBucket::new(config(capacity, refill_tokens, refill_period_ms), now_ms).unwrap()
    }

    /// Runs `steps` of `(now_ms, n, expected verdict)` against a fresh bucket, checking the
    /// invariants after each.
    fn check(cfg: TokenBucketConfig, start_ms: u64, steps: &[(u64, u64, Verdict)]) {
        let mut b = TokenBucket::new(cfg, start_ms).unwrap();
        for (i, &(now_ms, n, expected)) in steps.iter().enumerate() {
            let got = b.try_take(now_ms, n);
            b.check_invariants();
            assert_eq!(got, expected, "step {i}: take {n} at {now_ms} with {cfg:?}");
        }
    }

    fn allowed(tokens_left: u64) -> Verdict {
        Verdict::Allowed { tokens_left }
    }

    fn denied(tokens_left: u64, retry_after_ms: u64) -> Verdict {
        Verdict::Denied {
            tokens_left,
            retry_after_ms,
        }
    }

    /// Shows that validate names each zero field, and that `new` refuses what it refuses.
    #[test]
    fn validate_names_the_field() {
        for (cfg, field) in [
            (config(0, 1, 1), "capacity"),
            (config(1, 0, 1), "refill_tokens"),
            (config(1, 1, 0), "refill_period_ms"),
        ] {
            let err = cfg.validate().unwrap_err();
            assert!(
                matches!(err, TokenBucketError::InvalidConfig { field: f, .. } if f == field),
                "{err:?}"
            );
            assert!(err.to_string().contains(field));
            assert_eq!(TokenBucket::new(cfg, 0).unwrap_err(), err);
        }
        assert_eq!(config(1, 1, 1).validate(), Ok(()));
        assert_eq!(config(u64::MAX, u64::MAX, u64::MAX).validate(), Ok(()));
    }

    /// Shows the bucket starts full, spends, refills, and caps at the capacity.
    #[test]
    fn table_of_takes() {
        // 10 tokens, 1 per 100 ms.
        check(
            config(10, 1, 100),
            1_000,
            &[
                (1_000, 4, allowed(6)),
                (1_000, 6, allowed(0)),
                (1_000, 1, denied(0, 100)),
                (1_099, 1, denied(0, 1)),
                (1_100, 1, allowed(0)),
                (1_350, 3, denied(2, 50)),
                (1_400, 3, allowed(0)),
                // Long idle: capped at 10, the excess is lost.
                (1_000_000, 0, allowed(10)),
                (1_000_001, 10, allowed(0)),
                (
                    1_000_001,
                    11,
                    Verdict::OverCapacity {
                        tokens_left: 0,
                        capacity: 10,
                    },
                ),
            ],
        );
        // Fast rate: 5 tokens per ms, capacity 7.
        check(
            config(7, 5, 1),
            0,
            &[
                (0, 7, allowed(0)),
                (1, 6, denied(5, 1)),
                (2, 6, allowed(1)),
                (3, 7, denied(6, 1)),
                (4, 7, allowed(0)),
            ],
        );
        // 3 tokens per 10 ms: fractions carry over between calls.
        check(
            config(100, 3, 10),
            0,
            &[
                (0, 100, allowed(0)),
                // 9/10 of a token: 1 unit short, and 3 units come per ms.
                (3, 1, denied(0, 1)),
                // 12/10: take 1, 2/10 left.
                (4, 1, allowed(0)),
                // 2/10 + 9/10 = 11/10: take 1, 1/10 left.
                (7, 1, allowed(0)),
                // 9 units short: 3 ms.
                (7, 1, denied(0, 3)),
                (9, 1, denied(0, 1)),
                (10, 1, allowed(0)),
            ],
        );
    }

    /// Shows a slow rate (1 token per 3 s) polled every millisecond refills exactly one token
    /// every 3000 ms: no fraction is lost between calls.
    #[test]
    fn slow_rate_polled_every_ms_is_exact() {
        let mut b = bucket(5, 1, 3_000, 0);
        assert!(b.try_take(0, 5).is_allowed());
        let mut granted_at_ms = Vec::new();
        for now_ms in 1..=30_000 {
            if b.try_take(now_ms, 1).is_allowed() {
                granted_at_ms.push(now_ms);
            }
            b.check_invariants();
        }
        let expected: Vec<u64> = (1..=10).map(|k| k * 3_000).collect();
        assert_eq!(granted_at_ms, expected);
    }

    /// Shows retry_after_ms is exact: waiting it succeeds, one ms less fails, across configs.
    #[test]
    fn retry_after_is_exact() {
        let configs = [
            config(1, 1, 1),
            config(10, 1, 100),
            config(10, 3, 7),
            config(5, 1, 3_000),
            config(1_000, 999, 1_000),
            config(3, 1_000, 1),
        ];
        for cfg in configs {
            for n in 1..=cfg.capacity.min(12) {
                for spent in 0..=cfg.capacity.min(12) {
                    let mut b = TokenBucket::new(cfg, 50).unwrap();
                    assert!(b.try_take(50, spent).is_allowed());
                    let Verdict::Denied { retry_after_ms, .. } = b.try_take(51, n) else {
                        continue;
                    };
                    let mut early = b.clone();
                    let v = early.try_take(51 + retry_after_ms - 1, n);
                    assert!(!v.is_allowed(), "{cfg:?} n={n} spent={spent}: early {v:?}");
                    assert_eq!(v.retry_after_ms(), 1);
                    let v = b.try_take(51 + retry_after_ms, n);
                    assert!(v.is_allowed(), "{cfg:?} n={n} spent={spent}: on time {v:?}");
                }
            }
        }
    }

    /// Shows a backwards clock jump counts as no time, that the retry wait then includes
    /// catching up, and that the span already credited is not credited twice.
    #[test]
    fn backwards_jump_is_no_time() {
        let mut b = bucket(10, 1, 100, 10_000);
        assert_eq!(b.try_take(10_000, 10), allowed(0));
        // Back by 5 s: nothing refills, and the wait counts from the caller's clock.
        assert_eq!(b.try_take(5_000, 1), denied(0, 5_100));
        assert_eq!(b.tokens(5_000), 0);
        assert_eq!(b.last_at_ms(), 10_000);
        // Forward to where we were: still nothing (the 5 s were not credited).
        assert_eq!(b.try_take(10_000, 1), denied(0, 100));
        // One period after the latest time seen: exactly one token.
        assert_eq!(b.tokens(10_100), 1);
        assert_eq!(b.try_take(10_100, 1), allowed(0));
        assert_eq!(b.try_take(10_100, 1), denied(0, 100));
        b.check_invariants();
    }

    /// Shows times near u64::MAX neither overflow nor refill past the capacity.
    #[test]
    fn huge_times() {
        let mut b = bucket(10, 1, 100, u64::MAX - 150);
        assert_eq!(b.try_take(u64::MAX - 150, 10), allowed(0));
        assert_eq!(b.try_take(u64::MAX - 50, 1), allowed(0));
        assert_eq!(b.try_take(u64::MAX, 1), denied(0, 50));
        assert_eq!(b.tokens(u64::MAX), 0);
        assert_eq!(b.last_at_ms(), u64::MAX);
        // A fresh bucket at 0 jumping to u64::MAX saturates at the capacity.
        let mut b = bucket(10, 7, 3, 0);
        assert_eq!(b.try_take(0, 10), allowed(0));
        assert_eq!(b.try_take(u64::MAX, 0), allowed(10));
        b.check_invariants();
    }

    /// Shows extreme configs (every field u64::MAX, or a rate too slow for a u64 wait) work
    /// without overflow, and the wait saturates.
    #[test]
    fn extreme_configs() {
        let mut b = bucket(u64::MAX, u64::MAX, u64::MAX, 0);
        assert_eq!(b.try_take(0, u64::MAX), allowed(0));
        assert_eq!(b.try_take(0, u64::MAX), denied(0, u64::MAX));
        assert_eq!(b.try_take(1, 1), allowed(0));
        // u64::MAX - 1 ms more adds u64::MAX - 1 tokens: one short of a full bucket.
        assert_eq!(b.try_take(u64::MAX, u64::MAX), denied(u64::MAX - 1, 1));
        assert_eq!(b.try_take(u64::MAX, u64::MAX - 1), allowed(0));
        b.check_invariants();

        // 1 token per u64::MAX ms, capacity u64::MAX: a full refill takes ~2^128 ms.
        let mut b = bucket(u64::MAX, 1, u64::MAX, 0);
        assert_eq!(b.try_take(0, u64::MAX), allowed(0));
        assert_eq!(b.try_take(0, u64::MAX), denied(0, u64::MAX));
        assert_eq!(b.try_take(0, 1), denied(0, u64::MAX));
        assert_eq!(b.try_take(u64::MAX, 1), allowed(0));
        b.check_invariants();

        // Huge refill on a tiny bucket: caps at 1.
        let mut b = bucket(1, u64::MAX, 1, 0);
        assert_eq!(b.try_take(0, 1), allowed(0));
        assert_eq!(b.try_take(1, 0), allowed(1));
        b.check_invariants();
    }

    /// Shows n = 0 is always allowed, even on an empty bucket, and changes nothing.
    #[test]
    fn take_zero() {
        let mut b = bucket(3, 1, 10, 0);
        assert_eq!(b.try_take(0, 0), allowed(3));
        assert_eq!(b.try_take(0, 3), allowed(0));
        assert_eq!(b.try_take(5, 0), allowed(0));
        assert_eq!(b.try_take(10, 0), allowed(1));
        assert_eq!(b.try_take(10, 1), allowed(0));
    }

    /// Shows n > capacity is its own outcome, never consumes, and reads as "never".
    #[test]
    fn over_capacity_never_succeeds() {
        let mut b = bucket(5, 1, 10, 0);
        let v = b.try_take(0, 6);
        assert_eq!(
            v,
            Verdict::OverCapacity {
                tokens_left: 5,
                capacity: 5
            }
        );
        assert!(!v.is_allowed());
        assert_eq!(v.retry_after_ms(), u64::MAX);
        assert_eq!(v.tokens_left(), 5);
        assert_eq!(
            b.try_take(1_000_000, u64::MAX),
            Verdict::OverCapacity {
                tokens_left: 5,
                capacity: 5
            }
        );
        assert_eq!(b.try_take(1_000_000, 5), allowed(0));
    }

    /// Shows a denied take consumes nothing: the next smaller take sees the same tokens.
    #[test]
    fn denied_take_does_not_consume() {
        let mut b = bucket(10, 1, 100, 0);
        assert_eq!(b.try_take(0, 7), allowed(3));
        assert_eq!(b.try_take(0, 4), denied(3, 100));
        assert_eq!(b.try_take(0, 4), denied(3, 100));
        assert_eq!(b.try_take(0, 3), allowed(0));
    }

    /// Shows the accessors of each verdict.
    #[test]
    fn verdict_accessors() {
        let a = allowed(4);
        assert!(a.is_allowed());
        assert_eq!((a.tokens_left(), a.retry_after_ms()), (4, 0));
        let d = denied(2, 30);
        assert!(!d.is_allowed());
        assert_eq!((d.tokens_left(), d.retry_after_ms()), (2, 30));
    }

    /// Shows reconfiguring keeps the tokens, caps them, rescales the fraction and never adds.
    #[test]
    fn reconfigure_keeps_tokens() {
        let mut b = bucket(10, 1, 100, 0);
        assert_eq!(b.try_take(0, 6), allowed(4));
        // 50 ms later: 4.5 tokens. New config: 1 per 10 ms -> the half token is 5/10.
        b.reconfigure(config(20, 1, 10), 50).unwrap();
        assert_eq!(b.tokens(50), 4);
        assert_eq!(b.tokens(55), 5);
        // Shrink below the level: capped.
        b.reconfigure(config(2, 1, 10), 55).unwrap();
        assert_eq!(b.tokens(55), 2);
        // Invalid: refused, unchanged.
        let before = b.clone();
        assert!(b.reconfigure(config(0, 1, 1), 60).is_err());
        assert_eq!(b, before);
        b.check_invariants();
    }

    /// Shows the JSON layout is stable and a stored bucket round-trips mid-fraction.
    #[test]
    fn serde_round_trip() {
        let mut b = bucket(10, 1, 100, 1_000);
        assert!(b.try_take(1_000, 10).is_allowed());
        assert_eq!(b.try_take(1_250, 0), allowed(2));
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(
            json,
            r#"{"config":{"capacity":10,"refill_tokens":1,"refill_period_ms":100},"tokens":2,"partial_units":50,"last_at_ms":1250}"#
        );
        let back: TokenBucket = serde_json::from_str(&json).unwrap();
        assert_eq!(back, b);
        back.check_invariants();
        // The fraction survived: 50 ms more makes a third token.
        assert_eq!(back.tokens(1_299), 2);
        assert_eq!(back.tokens(1_300), 3);

        let max = bucket(u64::MAX, u64::MAX, u64::MAX, u64::MAX);
        let json = serde_json::to_string(&max).unwrap();
        assert_eq!(serde_json::from_str::<TokenBucket>(&json).unwrap(), max);
    }

    /// Shows a corrupt stored bucket is refused with an error, never a panic.
    #[test]
    fn serde_refuses_corrupt_state() {
        let cases = [
            (
                r#"{"config":{"capacity":10,"refill_tokens":1,"refill_period_ms":100},"tokens":11,"partial_units":0,"last_at_ms":0}"#,
                "capacity is 10",
            ),
            (
                r#"{"config":{"capacity":10,"refill_tokens":1,"refill_period_ms":100},"tokens":10,"partial_units":1,"last_at_ms":0}"#,
                "capacity is 10",
            ),
            (
                r#"{"config":{"capacity":10,"refill_tokens":1,"refill_period_ms":100},"tokens":1,"partial_units":100,"last_at_ms":0}"#,
                "below refill_period_ms",
            ),
            (
                r#"{"config":{"capacity":10,"refill_tokens":1,"refill_period_ms":0},"tokens":1,"partial_units":0,"last_at_ms":0}"#,
                "refill_period_ms",
            ),
            (
                r#"{"config":{"capacity":10,"refill_tokens":1,"refill_period_ms":100},"tokens":-1,"partial_units":0,"last_at_ms":0}"#,
                "invalid value",
            ),
            (r#"{"config":{"capacity":10}}"#, "missing field"),
        ];
        for (json, needle) in cases {
            let err = serde_json::from_str::<TokenBucket>(json).unwrap_err();
            assert!(err.to_string().contains(needle), "{json}: {err}");
        }
    }

    /// A reference model computed differently: GCRA-style. Time is scaled by `refill_tokens`
    /// (`scaled = t * refill`), so one token costs `refill_period_ms` scaled units. The model
    /// keeps only `empty_at`, the scaled time at which the bucket would have been empty;
    /// the level at scaled time `s` is `min(capacity_units, s - empty_at)`.
    #[derive(Debug)]
    struct Model {
        capacity: u64,
        refill: i128,
        period: i128,
        capacity_units: i128,
        monotonic_ms: u64,
        empty_at: i128,
    }

    impl Model {
        fn new(cfg: TokenBucketConfig, start_ms: u64) -> Self {
            let refill = i128::from(cfg.refill_tokens);
            let period = i128::from(cfg.refill_period_ms);
            let capacity_units = i128::from(cfg.capacity) * period;
            Model {
                capacity: cfg.capacity,
                refill,
                period,
                capacity_units,
                monotonic_ms: start_ms,
                empty_at: i128::from(start_ms) * refill - capacity_units,
            }
        }

        fn see(&mut self, now_ms: u64) {
            self.monotonic_ms = self.monotonic_ms.max(now_ms);
        }

        fn scaled_now(&self) -> i128 {
            i128::from(self.monotonic_ms) * self.refill
        }

        fn tokens(&self) -> u64 {
            self.tokens_at(self.monotonic_ms)
        }

        /// Read-only: does not record `now_ms`.
        fn tokens_at(&self, now_ms: u64) -> u64 {
            let scaled = i128::from(self.monotonic_ms.max(now_ms)) * self.refill;
            let level = (scaled - self.empty_at).min(self.capacity_units);
            u64::try_from(level / self.period).unwrap()
        }

        fn take(&mut self, now_ms: u64, n: u64) -> Verdict {
            self.see(now_ms);
            if n > self.capacity {
                return Verdict::OverCapacity {
                    tokens_left: self.tokens(),
                    capacity: self.capacity,
                };
            }
            let need = i128::from(n) * self.period;
            let base = self.empty_at.max(self.scaled_now() - self.capacity_units);
            if self.scaled_now() - base >= need {
                self.empty_at = base + need;
                return Verdict::Allowed {
                    tokens_left: self.tokens(),
                };
            }
            // The first millisecond t with t * refill - empty_at >= need.
            let ready_at_ms = (self.empty_at + need + self.refill - 1) / self.refill;
            let retry = ready_at_ms - i128::from(now_ms);
            Verdict::Denied {
                tokens_left: self.tokens(),
                retry_after_ms: u64::try_from(retry).unwrap(),
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Advance(u64),
        MoveBack(u64),
        Take(u64),
        Peek,
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u64..2_000).prop_map(Op::Advance),
            1 => (0u64..20_000).prop_map(Op::Advance),
            1 => (0u64..5_000).prop_map(Op::MoveBack),
            4 => (0u64..25).prop_map(Op::Take),
            1 => Just(Op::Peek),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random clock moves (forwards and back) and takes, against the model: every
        /// verdict and peek matches, the invariants hold after each step, and every denied
        /// wait is exact (checked on clones).
        #[test]
        fn matches_model(
            capacity in 1u64..20,
            refill_tokens in 1u64..10,
            refill_period_ms in prop_oneof![1u64..10, 1u64..5_000],
            start_ms in prop_oneof![0u64..1_000_000, (u64::MAX - 100_000)..=u64::MAX],
            ops in proptest::collection::vec(op_strategy(), 1..120),
        ) {
            let cfg = config(capacity, refill_tokens, refill_period_ms);
            let mut b = TokenBucket::new(cfg, start_ms).unwrap();
            let mut model = Model::new(cfg, start_ms);
            let mut now_ms = start_ms;
            let mut last_at_ms = start_ms;
            for op in ops {
                match op {
                    Op::Advance(d) => now_ms = now_ms.saturating_add(d),
                    Op::MoveBack(d) => now_ms = now_ms.saturating_sub(d),
                    Op::Peek => prop_assert_eq!(b.tokens(now_ms), model.tokens_at(now_ms)),
                    Op::Take(n) => {
                        let expected = model.take(now_ms, n);
                        let got = b.try_take(now_ms, n);
                        prop_assert_eq!(got, expected, "take {} at {}", n, now_ms);
                        if let Verdict::Denied { retry_after_ms, .. } = got
                            && let Some(ready_ms) = now_ms.checked_add(retry_after_ms)
                        {
                            let mut early = b.clone();
                            prop_assert!(!early.try_take(ready_ms - 1, n).is_allowed());
                            let mut on_time = b.clone();
                            prop_assert!(on_time.try_take(ready_ms, n).is_allowed());
                        }
                    }
                }
                b.check_invariants();
                prop_assert!(b.tokens(now_ms) <= capacity);
                prop_assert!(b.last_at_ms() >= last_at_ms, "last_at_ms never decreases");
                last_at_ms = b.last_at_ms();
                prop_assert_eq!(last_at_ms, model.monotonic_ms);
            }
        }

        /// Serde round trip of any reachable state.
        #[test]
        fn serde_round_trips(
            capacity in 1u64..1_000,
            refill_period_ms in 1u64..1_000,
            spent in 0u64..1_000,
            elapsed_ms in 0u64..2_000,
        ) {
            let mut b = TokenBucket::new(config(capacity, 1, refill_period_ms), 0).unwrap();
            let _ = b.try_take(0, spent);
            let _ = b.try_take(elapsed_ms, 0);
            let json = serde_json::to_string(&b).unwrap();
            let back: TokenBucket = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, b);
        }
    }
}
