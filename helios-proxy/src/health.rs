//! Backend health: active checks (a probe request on an interval, thresholds of consecutive
//! results, as Envoy and HAProxy) and passive outlier ejection (consecutive 5xx or connect
//! errors in real traffic, an ejection time that grows with repeats, at most a share of the
//! pool ejected at once, as Envoy's outlier detection). Pure: the caller runs the probes
//! and reports results, with the time.
//!
//! A backend is available to the balancer ([`Health::is_available`]) when its active check
//! says healthy and it is not ejected. The caller copies that into the
//! [`Pool`](crate::Pool) after each report (`Health::available` lists them all).
//!
//! Invariants (property-tested against a plain model at the bottom of this file):
//! - Health flips only after `unhealthy_threshold` consecutive failed checks (to
//!   unhealthy) or `healthy_threshold` consecutive good ones (back to healthy).
//! - An ejected backend returns at its ejection's end; the n-th ejection in a row lasts
//!   `n * ejection_base_ms`, capped at `ejection_max_ms`.
//! - Ejection never takes the ejected share of the pool above `ejection_percent_max`
//!   (at least one backend may always be ejected only if the pool has more than one).
//! - A clock that moves backwards counts as no time passed.

use crate::error::ProxyError;

/// Health settings, per pool. `Default` is a production start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Time between two active checks of a backend.
    pub interval_ms: u64,
    /// Consecutive failed checks that make a healthy backend unhealthy.
    pub unhealthy_threshold: u32,
    /// Consecutive good checks that make an unhealthy backend healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures in real traffic (5xx, connect errors) that eject a backend.
    pub consecutive_errors_max: u32,
    /// The first ejection's length; the n-th in a row lasts n times this.
    pub ejection_base_ms: u64,
    /// The longest ejection.
    pub ejection_max_ms: u64,
    /// The most of a pool ejected at once, in percent.
    pub ejection_percent_max: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval_ms: 5_000,
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            consecutive_errors_max: 5,
            ejection_base_ms: 30_000,
            ejection_max_ms: 300_000,
            ejection_percent_max: 50,
        }
    }
}

impl HealthConfig {
    /// Checks every setting, naming the first bad one.
    pub fn validate(&self) -> Result<(), ProxyError> {
        let bad = |field: &'static str, reason: &str| {
            Err(ProxyError::Invalid {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.interval_ms == 0 {
            return bad("health.interval_ms", "must be at least 1");
        }
        if self.unhealthy_threshold == 0 || self.healthy_threshold == 0 {
            return bad("health.*_threshold", "thresholds must be at least 1");
        }
        if self.consecutive_errors_max == 0 {
            return bad("health.consecutive_errors_max", "must be at least 1");
        }
        if self.ejection_base_ms == 0 || self.ejection_max_ms < self.ejection_base_ms {
            return bad(
                "health.ejection_max_ms",
                "ejection_base_ms must be at least 1 and at most ejection_max_ms",
            );
        }
        if self.ejection_percent_max > 100 {
            return bad("health.ejection_percent_max", "is a percentage: 0..=100");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Backend {
    healthy: bool,
    // Consecutive check results against the current state (failures while healthy,
    // successes while unhealthy).
    streak: u32,
    next_check_at_ms: u64,
    consecutive_errors: u32,
    ejected_until_ms: Option<u64>,
    // Ejections in a row: reset once a backend has stayed in for one base ejection time.
    ejections_in_row: u32,
    returned_at_ms: u64,
    ejected_count: u64,
}

/// The health of one pool's backends. See the module docs.
#[derive(Debug, Clone)]
pub struct Health {
    config: HealthConfig,
    backends: Vec<Backend>,
    now_ms: u64,
    ejected_count_total: u64,
}

impl Health {
    /// `count` backends, healthy, with their first check due at `now_ms`.
    pub fn new(config: HealthConfig, count: usize, now_ms: u64) -> Result<Self, ProxyError> {
        config.validate()?;
        Ok(Health {
            config,
            backends: vec![
                Backend {
                    healthy: true,
                    streak: 0,
                    next_check_at_ms: now_ms,
                    consecutive_errors: 0,
                    ejected_until_ms: None,
                    ejections_in_row: 0,
                    returned_at_ms: 0,
                    ejected_count: 0,
                };
                count
            ],
            now_ms,
            ejected_count_total: 0,
        })
    }

    /// Moves the time on to `now_ms` (ejections that ended end); earlier times are ignored.
    pub(crate) fn advance(&mut self, now_ms: u64) -> u64 {
        self.now_ms = self.now_ms.max(now_ms);
        let now = self.now_ms;
        for b in &mut self.backends {
            if let Some(until) = b.ejected_until_ms
                && now >= until
            {
                b.ejected_until_ms = None;
                b.consecutive_errors = 0;
                b.returned_at_ms = until;
            }
        }
        now
    }

    /// Backends whose active check is due at `now_ms`; each is scheduled for its next
    /// interval (report the result with [`Health::check_result`]).
    pub fn due_checks(&mut self, now_ms: u64) -> Vec<usize> {
        let now = self.advance(now_ms);
        let interval = self.config.interval_ms;
        self.backends
            .iter_mut()
            .enumerate()
            .filter(|(_, b)| b.next_check_at_ms <= now)
            .map(|(i, b)| {
                b.next_check_at_ms = now.saturating_add(interval);
                i
            })
            .collect()
    }

    /// When the next active check is due.
    pub fn next_check_at_ms(&self) -> Option<u64> {
        self.backends.iter().map(|b| b.next_check_at_ms).min()
    }

    /// An active check of backend `index` ended: `ok` when it answered in time with the
    /// expected status.
    pub fn check_result(&mut self, index: usize, ok: bool, now_ms: u64) {
        self.advance(now_ms);
        let c = self.config;
        let Some(b) = self.backends.get_mut(index) else {
            return;
        };
        if ok == b.healthy {
            b.streak = 0;
            return;
        }
        b.streak += 1;
        let threshold = if b.healthy {
            c.unhealthy_threshold
        } else {
            c.healthy_threshold
        };
        if b.streak >= threshold {
            b.healthy = ok;
            b.streak = 0;
        }
    }

    /// A real request to backend `index` ended: `ok` false for a 5xx or a connect error.
    /// Returns true when this ejected the backend.
    pub fn traffic_result(&mut self, index: usize, ok: bool, now_ms: u64) -> bool {
        let now = self.advance(now_ms);
        let c = self.config;
        let ejected_now = self.ejected_count();
        let pool = self.backends.len();
        let Some(b) = self.backends.get_mut(index) else {
            return false;
        };
        if b.ejected_until_ms.is_some() {
            return false;
        }
        if ok {
            b.consecutive_errors = 0;
            return false;
        }
        b.consecutive_errors += 1;
        if b.consecutive_errors < c.consecutive_errors_max {
            return false;
        }
        // Within the cap: the share ejected after this one.
        if (ejected_now + 1) * 100 > pool * c.ejection_percent_max as usize {
            return false;
        }
        if now.saturating_sub(b.returned_at_ms) >= c.ejection_base_ms && b.returned_at_ms > 0 {
            // It stayed in for a whole base time since it last came back: a new series.
            b.ejections_in_row = 0;
        }
        b.ejections_in_row += 1;
        let length = c
            .ejection_base_ms
            .saturating_mul(u64::from(b.ejections_in_row))
            .min(c.ejection_max_ms);
        b.ejected_until_ms = Some(now.saturating_add(length));
        b.consecutive_errors = 0;
        b.ejected_count += 1;
        self.ejected_count_total += 1;
        true
    }

    fn ejected_count(&self) -> usize {
        self.backends
            .iter()
            .filter(|b| b.ejected_until_ms.is_some())
            .count()
    }

    /// Whether backend `index` may take traffic at `now_ms`: healthy and not ejected.
    pub fn is_available(&mut self, index: usize, now_ms: u64) -> bool {
        self.advance(now_ms);
        self.serving(index)
    }

    /// [`Health::is_available`] for every backend, in order.
    pub fn available(&mut self, now_ms: u64) -> Vec<bool> {
        self.advance(now_ms);
        (0..self.backends.len()).map(|i| self.serving(i)).collect()
    }

    /// Whether backend `index` is healthy and not ejected as of the last [`Health::advance`].
    pub(crate) fn serving(&self, index: usize) -> bool {
        self.backends
            .get(index)
            .is_some_and(|b| b.healthy && b.ejected_until_ms.is_none())
    }

    /// Whether the active checks say backend `index` is healthy.
    pub fn is_healthy(&self, index: usize) -> bool {
        self.backends.get(index).is_some_and(|b| b.healthy)
    }

    /// When backend `index`'s ejection ends, if it is ejected.
    pub fn ejected_until_ms(&mut self, index: usize, now_ms: u64) -> Option<u64> {
        self.advance(now_ms);
        self.backends.get(index).and_then(|b| b.ejected_until_ms)
    }

    /// Ejections of backend `index` since creation.
    pub fn ejections_of(&self, index: usize) -> u64 {
        self.backends.get(index).map_or(0, |b| b.ejected_count)
    }

    /// Ejections since creation.
    pub fn ejected_count_total(&self) -> u64 {
        self.ejected_count_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config() -> HealthConfig {
        HealthConfig {
            interval_ms: 100,
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            consecutive_errors_max: 3,
            ejection_base_ms: 1_000,
            ejection_max_ms: 2_500,
            ejection_percent_max: 50,
        }
    }

    #[test]
    fn thresholds_flip_health_and_checks_come_every_interval() {
        let mut h = Health::new(config(), 2, 0).unwrap();
        assert_eq!(h.due_checks(0), [0, 1]);
        assert!(h.due_checks(50).is_empty());
        assert_eq!(h.next_check_at_ms(), Some(100));
        h.check_result(0, false, 10);
        h.check_result(0, false, 20);
        assert!(h.is_available(0, 20), "2 < unhealthy_threshold");
        h.check_result(0, true, 25);
        h.check_result(0, false, 30);
        h.check_result(0, false, 40);
        assert!(h.is_available(0, 40), "the good check broke the streak");
        h.check_result(0, false, 50);
        assert!(!h.is_available(0, 50));
        h.check_result(0, true, 60);
        assert!(!h.is_available(0, 60));
        h.check_result(0, true, 70);
        assert!(h.is_available(0, 70));
    }

    #[test]
    fn ejections_grow_are_capped_and_respect_the_pool_share() {
        let mut h = Health::new(config(), 4, 0).unwrap();
        let fail = |h: &mut Health, i: usize, t: u64| (0..3).any(|_| h.traffic_result(i, false, t));
        assert!(fail(&mut h, 0, 10));
        assert_eq!(h.ejected_until_ms(0, 10), Some(1_010));
        assert!(fail(&mut h, 1, 10));
        // Half the pool is out: a third is not ejected.
        assert!(!fail(&mut h, 2, 10));
        assert!(h.is_available(2, 10));
        // Back at 1010; ejected again at once: twice as long; a third time: capped.
        assert!(h.is_available(0, 1_010));
        assert!(fail(&mut h, 0, 1_020));
        assert_eq!(h.ejected_until_ms(0, 1_020), Some(3_020));
        assert!(fail(&mut h, 0, 3_030));
        assert_eq!(h.ejected_until_ms(0, 3_030), Some(5_530));
        // After a whole base time in, a new series starts at the base length.
        assert!(h.is_available(0, 5_530));
        assert!(fail(&mut h, 0, 7_000));
        assert_eq!(h.ejected_until_ms(0, 7_000), Some(8_000));
        assert_eq!(h.ejected_count_total(), 5);
    }

    #[test]
    fn a_single_backend_pool_is_never_ejected_under_a_cap_below_100() {
        let mut h = Health::new(config(), 1, 0).unwrap();
        for t in 0..10 {
            h.traffic_result(0, false, t);
        }
        assert!(h.is_available(0, 10));
    }

    #[derive(Debug, Clone)]
    enum Step {
        Check(usize, bool),
        Traffic(usize, bool),
        Wait(u64),
        Back(u64),
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Against a plain model of the thresholds and of ejection: the same availability
        /// after every step, the ejected share never over the cap, and an ejection never
        /// longer than ejection_max_ms.
        #[test]
        fn health_matches_the_model(
            count in 1usize..6,
            steps in proptest::collection::vec(prop_oneof![
                3 => (0usize..6, any::<bool>()).prop_map(|(i, ok)| Step::Check(i, ok)),
                4 => (0usize..6, proptest::bool::weighted(0.3)).prop_map(|(i, ok)| Step::Traffic(i, ok)),
                2 => (0u64..1_500).prop_map(Step::Wait),
                1 => (0u64..300).prop_map(Step::Back),
            ], 1..300),
        ) {
            let c = config();
            let mut h = Health::new(c, count, 0).unwrap();
            // Model: healthy flag and streak; error count; ejection end and series.
            let mut healthy = vec![true; count];
            let mut streak = vec![0u32; count];
            let mut errors = vec![0u32; count];
            let mut until: Vec<Option<u64>> = vec![None; count];
            let mut series = vec![0u64; count];
            let mut back_at = vec![0u64; count];
            let mut clock = 0u64;
            let mut now = 0u64;
            for step in steps {
                match step {
                    Step::Wait(ms) => clock += ms,
                    Step::Back(ms) => clock = clock.saturating_sub(ms),
                    _ => {}
                }
                now = now.max(clock);
                for i in 0..count {
                    if let Some(u) = until[i] && now >= u {
                        until[i] = None;
                        errors[i] = 0;
                        back_at[i] = u;
                    }
                }
                match step {
                    Step::Check(i, ok) if i < count => {
                        h.check_result(i, ok, clock);
                        if ok == healthy[i] {
                            streak[i] = 0;
                        } else {
                            streak[i] += 1;
                            let t = if healthy[i] { c.unhealthy_threshold } else { c.healthy_threshold };
                            if streak[i] >= t {
                                healthy[i] = ok;
                                streak[i] = 0;
                            }
                        }
                    }
                    Step::Traffic(i, ok) if i < count => {
                        let ejected = h.traffic_result(i, ok, clock);
                        let mut want = false;
                        if until[i].is_none() {
                            if ok {
                                errors[i] = 0;
                            } else {
                                errors[i] += 1;
                                let out = until.iter().filter(|u| u.is_some()).count();
                                if errors[i] >= c.consecutive_errors_max
                                    && (out + 1) * 100 <= count * c.ejection_percent_max as usize
                                {
                                    if back_at[i] > 0 && now - back_at[i] >= c.ejection_base_ms {
                                        series[i] = 0;
                                    }
                                    series[i] += 1;
                                    until[i] = Some(now + (c.ejection_base_ms * series[i]).min(c.ejection_max_ms));
                                    errors[i] = 0;
                                    want = true;
                                }
                            }
                        }
                        prop_assert_eq!(ejected, want);
                    }
                    _ => {}
                }
                let got = h.available(clock);
                let want: Vec<bool> = (0..count).map(|i| healthy[i] && until[i].is_none()).collect();
                prop_assert_eq!(got, want);
                let out = until.iter().filter(|u| u.is_some()).count();
                prop_assert!(out * 100 <= count * c.ejection_percent_max as usize);
                for u in until.iter().flatten() {
                    prop_assert!(*u - now <= c.ejection_max_ms);
                }
            }
        }
    }
}
