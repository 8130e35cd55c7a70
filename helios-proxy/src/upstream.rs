//! One route's upstream state, the piece the proxy server pumps: the balancer
//! ([`Pool`]), the backends' health ([`Health`]), a circuit breaker per backend
//! ([`Breaker`]) and the route's retry budget ([`RetryBudget`]), kept consistent in one
//! place. Pure: the server passes requests' outcomes and the time in, and asks where to
//! send the next request.
//!
//! A backend is picked only if its health says available (active checks, not ejected)
//! and its breaker allows a request. [`Upstream::pick`] reserves the request (in flight
//! for the balancer, a probe for a half-open breaker); [`Upstream::finish`] must follow
//! with its outcome, exactly once.
//!
//! Invariant (property-tested): a pick is never a backend that is unhealthy, ejected or
//! whose breaker refused it at that time; and whenever some backend is healthy, not
//! ejected and closed-breakered, a pick succeeds.

use crate::balance::{Policy, Pool};
use crate::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::error::ProxyError;
use crate::health::{Health, HealthConfig};
use crate::retry::{RetryBudget, RetryConfig};
use rand::Rng;

/// How a request to a backend ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response below 500 (a 4xx is the client's doing, not the backend's failure).
    Ok,
    /// A 5xx response.
    ServerError,
    /// Connecting failed or timed out.
    ConnectError,
    /// The backend took too long, or the connection broke mid-exchange.
    Timeout,
}

impl Outcome {
    fn ok(self) -> bool {
        self == Outcome::Ok
    }
}

/// A reserved request: which backend, and when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// The backend's index in the route.
    pub backend: usize,
    /// When it was picked.
    pub at_ms: u64,
}

/// What the metrics report of one backend of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendReport {
    /// Takes traffic now: healthy, not ejected, breaker not open.
    pub serving: bool,
    /// The active checks' verdict.
    pub healthy: bool,
    /// Ejected by passive outlier detection now.
    pub ejected: bool,
    /// Its breaker's state.
    pub breaker: BreakerState,
    /// Ejections since the route's state was created.
    pub ejections: u64,
    /// Times its breaker opened since then.
    pub breaker_opened: u64,
}

/// One route's upstream state. See the module docs.
#[derive(Debug, Clone)]
pub struct Upstream {
    pool: Pool,
    health: Health,
    breakers: Vec<Breaker>,
    retry: RetryBudget,
}

impl Upstream {
    /// The state of a route with these backend weights and settings, at `now_ms`.
    pub fn new(
        policy: Policy,
        weights: &[u32],
        health: HealthConfig,
        breaker: BreakerConfig,
        retry: RetryConfig,
        now_ms: u64,
    ) -> Result<Self, ProxyError> {
        let pool = Pool::new(policy, weights)?;
        let breakers = (0..weights.len())
            .map(|_| Breaker::new(breaker))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Upstream {
            health: Health::new(health, weights.len(), now_ms)?,
            pool,
            breakers,
            retry: RetryBudget::new(retry)?,
        })
    }

    /// Tells the pool which backends serve at `now_ms` (no allocation: it runs per pick).
    fn refresh(&mut self, now_ms: u64) {
        self.health.advance(now_ms);
        for i in 0..self.pool.len() {
            let open = matches!(self.breakers[i].state(now_ms), BreakerState::Open { .. });
            self.pool.set_available(i, self.health.serving(i) && !open);
        }
    }

    /// Picks a backend for a request at `now_ms` and reserves it, or `None` when every
    /// backend is unhealthy, ejected or broken open (the server answers 503).
    pub fn pick<R: Rng + ?Sized>(&mut self, now_ms: u64, rng: &mut R) -> Option<Pick> {
        self.refresh(now_ms);
        // A half-open breaker may refuse once its probes are out: try the others.
        for _ in 0..self.pool.len() {
            let i = self.pool.pick(now_ms, rng)?;
            if self.breakers[i].allow(now_ms) {
                self.pool.start(i);
                return Some(Pick {
                    backend: i,
                    at_ms: now_ms,
                });
            }
            self.pool.set_available(i, false);
        }
        None
    }

    /// The request reserved by `pick` ended at `now_ms` with `outcome`.
    pub fn finish(&mut self, pick: Pick, outcome: Outcome, now_ms: u64) {
        let i = pick.backend;
        let latency_us = now_ms.saturating_sub(pick.at_ms).saturating_mul(1000);
        self.pool.finish(i, latency_us, now_ms);
        if let Some(b) = self.breakers.get_mut(i) {
            b.record(now_ms, outcome.ok());
        }
        // Passive ejection counts what the backend did wrong (a 5xx or a failed connect);
        // a timeout counts too.
        self.health.traffic_result(i, outcome.ok(), now_ms);
    }

    /// Active checks due at `now_ms` (the server runs them and reports each with
    /// [`Upstream::check_result`]).
    pub fn due_checks(&mut self, now_ms: u64) -> Vec<usize> {
        self.health.due_checks(now_ms)
    }

    /// When the next active check is due.
    pub fn next_check_at_ms(&self) -> Option<u64> {
        self.health.next_check_at_ms()
    }

    /// An active check of backend `index` ended.
    pub fn check_result(&mut self, index: usize, ok: bool, now_ms: u64) {
        self.health.check_result(index, ok, now_ms);
    }

    /// Counts a new request against the retry budget.
    pub fn request(&mut self, now_ms: u64) {
        self.retry.request(now_ms);
    }

    /// Whether try `attempt` (2 for the first retry) may go, within the budget.
    pub fn try_retry(&mut self, attempt: u32, now_ms: u64) -> bool {
        self.retry.try_retry(attempt, now_ms)
    }

    /// Backend `index`'s state now, for the metrics (`None` past the pool).
    pub fn report(&mut self, index: usize, now_ms: u64) -> Option<BackendReport> {
        if index >= self.pool.len() {
            return None;
        }
        let serving = self.is_serving(index, now_ms);
        let breaker = &mut self.breakers[index];
        Some(BackendReport {
            serving,
            healthy: self.health.is_healthy(index),
            ejected: self.health.ejected_until_ms(index, now_ms).is_some(),
            breaker: breaker.state(now_ms),
            ejections: self.health.ejections_of(index),
            breaker_opened: breaker.opened_count(),
        })
    }

    /// Whether backend `index` takes traffic now (healthy, not ejected, breaker not open):
    /// what `proxy_backend_healthy` reports.
    pub fn is_serving(&mut self, index: usize, now_ms: u64) -> bool {
        self.refresh(now_ms);
        self.pool.is_available(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn small() -> (HealthConfig, BreakerConfig, RetryConfig) {
        (
            HealthConfig {
                interval_ms: 100,
                unhealthy_threshold: 2,
                healthy_threshold: 2,
                consecutive_errors_max: 3,
                ejection_base_ms: 500,
                ejection_max_ms: 2_000,
                ejection_percent_max: 50,
            },
            BreakerConfig {
                window_ms: 1_000,
                buckets_count: 10,
                requests_min: 4,
                failure_rate_min: 0.5,
                open_ms: 300,
                probes_max: 1,
            },
            RetryConfig::default(),
        )
    }

    #[test]
    fn a_failing_backend_stops_getting_traffic_then_comes_back() {
        let (h, b, r) = small();
        let mut u = Upstream::new(Policy::RoundRobin, &[1, 1], h, b, r, 0).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        // Backend 1 fails every request; backend 0 answers.
        let mut now = 0;
        let mut to_bad_late = 0;
        for k in 0..200 {
            now += 5;
            let p = u.pick(now, &mut rng).expect("backend 0 serves");
            let outcome = if p.backend == 1 {
                Outcome::ServerError
            } else {
                Outcome::Ok
            };
            if p.backend == 1 && k > 20 {
                to_bad_late += 1;
            }
            u.finish(p, outcome, now + 1);
        }
        assert!(
            to_bad_late <= 3,
            "{to_bad_late} requests went to the failing backend late"
        );
        // The metrics' view: taken out by ejection or its breaker, and counted.
        let rep = u.report(1, now).unwrap();
        assert!(rep.ejections + rep.breaker_opened >= 1, "{rep:?}");
        assert!(rep.healthy, "no active check failed");
        assert!(!rep.serving || rep.breaker != BreakerState::Closed || !rep.ejected);
        assert_eq!(u.report(0, now).unwrap().ejections, 0);
        assert!(u.report(2, now).is_none());
        // Once it answers again, it gets traffic back after its ejection ends.
        now += 3_000;
        let mut to_1 = 0;
        for _ in 0..50 {
            now += 5;
            let p = u.pick(now, &mut rng).unwrap();
            to_1 += usize::from(p.backend == 1);
            u.finish(p, Outcome::Ok, now + 1);
        }
        assert!(to_1 >= 10, "{to_1}");
    }

    #[test]
    fn every_backend_down_is_none() {
        let (h, b, r) = small();
        let mut u = Upstream::new(Policy::LeastConnections, &[1], h, b, r, 0).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        u.check_result(0, false, 10);
        u.check_result(0, false, 20);
        assert_eq!(u.pick(30, &mut rng), None);
        assert!(!u.is_serving(0, 30));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Picks are never of a backend that is unhealthy, ejected or broken open at that
        /// time, and some pick succeeds whenever a backend is fully in service.
        #[test]
        fn picks_respect_health_ejection_and_breakers(
            seed in any::<u64>(),
            policy in 0usize..4,
            n in 1usize..5,
            steps in proptest::collection::vec((0u8..4, 0usize..5, 0u64..200), 1..300),
        ) {
            let policies = [Policy::RoundRobin, Policy::LeastConnections, Policy::WeightedRoundRobin, Policy::PeakEwma];
            let (h, b, r) = small();
            let mut u = Upstream::new(policies[policy], &vec![1; n], h, b, r, 0).unwrap();
            let mut rng = StdRng::seed_from_u64(seed);
            let mut outstanding: Vec<Pick> = Vec::new();
            let mut now = 0u64;
            for (kind, i, dt) in steps {
                now += dt;
                match kind {
                    0 => {
                        // What the parts say before the pick (a clone, so asking does not
                        // change the state).
                        let mut probe = u.clone();
                        let serving: Vec<bool> = (0..n).map(|j| probe.is_serving(j, now)).collect();
                        let closed: Vec<bool> = (0..n)
                            .map(|j| probe.breakers[j].state(now) == BreakerState::Closed)
                            .collect();
                        match u.pick(now, &mut rng) {
                            Some(p) => {
                                prop_assert!(serving[p.backend], "picked {} out of service", p.backend);
                                outstanding.push(p);
                            }
                            None => prop_assert!(
                                !(0..n).any(|j| serving[j] && closed[j]),
                                "no pick while {serving:?} / {closed:?}"
                            ),
                        }
                    }
                    1 if !outstanding.is_empty() => {
                        let p = outstanding.remove(i % outstanding.len());
                        let outcome = [Outcome::Ok, Outcome::ServerError, Outcome::ConnectError, Outcome::Timeout][i % 4];
                        u.finish(p, outcome, now);
                    }
                    2 => u.check_result(i % n, i % 2 == 0, now),
                    _ => {}
                }
            }
        }
    }
}
