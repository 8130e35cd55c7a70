//! When a failed upstream request may be tried again: only when the retry cannot repeat a
//! side effect (the connection never reached the backend, or the method is idempotent
//! and no byte of the response was sent on to the client), and only within a budget, so
//! that retries cannot multiply the load on a struggling pool (Envoy's retry budget:
//! retries at most `budget_percent` of the requests, with a floor so that a quiet route
//! can still retry).
//!
//! Pure: [`RetryBudget`] counts requests and retries over a sliding window of whole
//! seconds, given the time.
//!
//! Invariant (property-tested): when a retry is admitted, the window it lands in holds at
//! most `max(retries_min_per_window, budget_percent% of the requests in it)` retries.

use crate::error::ProxyError;

/// How a request to a backend failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection was refused or timed out before a byte was sent: nothing reached
    /// the backend.
    Connect,
    /// The backend answered 502, 503 or 504 before any byte went to the client.
    GatewayStatus,
    /// The request was sent and then the connection broke or timed out.
    Broken,
}

/// Whether a request that failed this way may be retried, before the budget: a connect
/// failure always (nothing reached the backend); otherwise only for an idempotent method
/// (RFC 9110 9.2.2) and only if no byte of the response went to the client.
pub fn retryable(method: &str, kind: FailureKind, response_started: bool) -> bool {
    if response_started {
        return false;
    }
    match kind {
        FailureKind::Connect => true,
        FailureKind::GatewayStatus | FailureKind::Broken => matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
    }
}

/// Retry budget settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retries allowed as a share of the requests in the window, in percent (Envoy: 20).
    pub budget_percent: u32,
    /// Retries allowed in any window whatever the traffic (Envoy's min concurrency: 3).
    pub retries_min_per_window: u32,
    /// The window, in whole seconds.
    pub window_s: u32,
    /// Most tries of one request, the first included.
    pub attempts_max: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            budget_percent: 20,
            retries_min_per_window: 3,
            window_s: 10,
            attempts_max: 3,
        }
    }
}

impl RetryConfig {
    /// Checks every setting, naming the first bad one.
    pub fn validate(&self) -> Result<(), ProxyError> {
        let bad = |field: &'static str, reason: &str| {
            Err(ProxyError::Invalid {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.budget_percent > 100 {
            return bad("retry.budget_percent", "is a percentage: 0..=100");
        }
        if self.window_s == 0 || self.window_s > 3600 {
            return bad("retry.window_s", "1..=3600");
        }
        if self.attempts_max == 0 {
            return bad("retry.attempts_max", "must be at least 1 (the first try)");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Second {
    at_s: u64,
    requests: u64,
    retries: u64,
}

/// Counts requests and retries over the last `window_s` seconds. See the module docs.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    config: RetryConfig,
    seconds: Vec<Second>,
    now_s: u64,
    denied_count: u64,
}

impl RetryBudget {
    /// An empty budget.
    pub fn new(config: RetryConfig) -> Result<Self, ProxyError> {
        config.validate()?;
        Ok(RetryBudget {
            config,
            seconds: vec![Second::default(); config.window_s as usize],
            now_s: 0,
            denied_count: 0,
        })
    }

    fn slot(&mut self, now_ms: u64) -> usize {
        self.now_s = self.now_s.max(now_ms / 1000);
        let i = (self.now_s % u64::from(self.config.window_s)) as usize;
        if self.seconds[i].at_s != self.now_s {
            self.seconds[i] = Second {
                at_s: self.now_s,
                requests: 0,
                retries: 0,
            };
        }
        i
    }

    fn window(&self) -> (u64, u64) {
        let oldest = self
            .now_s
            .saturating_sub(u64::from(self.config.window_s) - 1);
        self.seconds
            .iter()
            .filter(|s| s.at_s >= oldest && s.at_s <= self.now_s && (s.requests + s.retries) > 0)
            .fold((0, 0), |(q, r), s| (q + s.requests, r + s.retries))
    }

    /// A new request (a first try) at `now_ms`.
    pub fn request(&mut self, now_ms: u64) {
        let i = self.slot(now_ms);
        self.seconds[i].requests += 1;
    }

    /// Whether try number `attempt` (2 for the first retry) of a request may go at
    /// `now_ms`; when it may, the retry is counted.
    pub fn try_retry(&mut self, attempt: u32, now_ms: u64) -> bool {
        let i = self.slot(now_ms);
        if attempt > self.config.attempts_max {
            return false;
        }
        let (requests, retries) = self.window();
        let allowed = (requests * u64::from(self.config.budget_percent) / 100)
            .max(u64::from(self.config.retries_min_per_window));
        if retries >= allowed {
            self.denied_count += 1;
            return false;
        }
        self.seconds[i].retries += 1;
        true
    }

    /// Retries refused by the budget.
    pub fn denied_count(&self) -> u64 {
        self.denied_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn what_may_be_retried() {
        assert!(retryable("POST", FailureKind::Connect, false));
        assert!(!retryable("POST", FailureKind::Broken, false));
        assert!(!retryable("POST", FailureKind::GatewayStatus, false));
        assert!(retryable("GET", FailureKind::Broken, false));
        assert!(retryable("PUT", FailureKind::GatewayStatus, false));
        assert!(
            !retryable("GET", FailureKind::Connect, true),
            "bytes went out"
        );
    }

    #[test]
    fn the_budget_is_a_share_with_a_floor_and_attempts_are_capped() {
        let mut b = RetryBudget::new(RetryConfig::default()).unwrap();
        // Quiet: the floor of 3.
        b.request(0);
        assert!((0..5).filter(|_| b.try_retry(2, 0)).count() == 3);
        // 100 requests more in the window: 20% of 101 is 20.
        for _ in 0..100 {
            b.request(1_000);
        }
        let more = (0..50).filter(|_| b.try_retry(2, 1_000)).count();
        assert_eq!(more, 17, "20 in all, 3 already used");
        assert!(!b.try_retry(4, 1_000), "attempts_max");
        // The window slides: 10 s later the old counts are gone.
        b.request(11_500);
        assert!(b.try_retry(2, 11_500));
        assert_eq!(b.denied_count(), 2 + 33);
    }

    proptest! {
        /// When a retry is admitted, the window it lands in holds no more retries than the
        /// budget (the floor, or the share of that window's requests).
        #[test]
        fn retries_never_exceed_the_budget(
            events in proptest::collection::vec((0u64..40_000, any::<bool>()), 1..600),
            percent in 0u32..=100,
            floor in 0u32..5,
        ) {
            let config = RetryConfig {
                budget_percent: percent,
                retries_min_per_window: floor,
                window_s: 5,
                attempts_max: 10,
            };
            let mut b = RetryBudget::new(config).unwrap();
            let mut now_ms = 0u64;
            // (second, is_retry) of everything admitted.
            let mut log: Vec<(u64, bool)> = Vec::new();
            for (step_ms, retry) in events {
                now_ms += step_ms % 700;
                if !retry {
                    b.request(now_ms);
                    log.push((now_ms / 1000, false));
                    continue;
                }
                if !b.try_retry(2, now_ms) {
                    continue;
                }
                log.push((now_ms / 1000, true));
                // At each admission, the window it was admitted in holds no more retries
                // than the budget of that window.
                let s = now_ms / 1000;
                let oldest = s.saturating_sub(4);
                let in_window = log.iter().filter(|(t, _)| *t >= oldest && *t <= s);
                let (mut requests, mut retries) = (0u64, 0u64);
                for (_, r) in in_window {
                    if *r { retries += 1 } else { requests += 1 }
                }
                let allowed = (requests * u64::from(percent) / 100).max(u64::from(floor));
                prop_assert!(retries <= allowed, "{retries} retries, {requests} requests");
            }
        }
    }
}
