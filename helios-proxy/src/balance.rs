//! Load balancing over one route's pool of backends: round-robin, least connections,
//! smooth weighted round-robin (nginx) and power of two choices over peak EWMA latency
//! (Finagle, Linkerd). Pure: time and randomness come in as arguments, so a seed replays
//! every pick.
//!
//! The pool does not decide health: the caller (active checks, outlier ejection, circuit
//! breakers) marks each backend available or not with [`Pool::set_available`], and the
//! pool only ever picks an available backend. It tracks what balancing needs: requests in
//! flight per backend ([`Pool::start`] / [`Pool::finish`]) and, for peak EWMA, a decaying
//! latency average that jumps up at once on a slow response.
//!
//! Invariants (property-tested at the bottom of this file):
//! - [`Pool::pick`] returns an available backend whenever one exists, `None` otherwise.
//! - Least connections never picks a backend with more requests in flight than another
//!   available one.
//! - Smooth weighted round-robin gives each available backend `weight / total` of the
//!   picks: exactly, over every run of `total` picks while availability does not change
//!   (nginx's algorithm), so within 1% over any long run.
//! - `in_flight` never underflows: a `finish` without a `start` is ignored (and counted
//!   in [`Pool::unmatched_finish_count`]).

use crate::error::ProxyError;
use rand::Rng;

/// Most backends in one pool: picks scan the pool, and weights are summed in `i64`.
pub const POOL_BACKENDS_MAX: usize = 4096;
/// Largest weight: keeps the smooth weighted round-robin's running sums far from overflow
/// (`POOL_BACKENDS_MAX * WEIGHT_MAX` fits an `i64` many times over).
pub const WEIGHT_MAX: u32 = 1_000_000;
/// Peak EWMA's decay time: a latency sample's weight halves in about 7 s (tau * ln 2), as
/// Finagle's default of 10 s for its `decayTime`.
pub const EWMA_DECAY_MS: f64 = 10_000.0;

/// How a pool picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Each available backend in turn.
    RoundRobin,
    /// The available backend with the fewest requests in flight (ties in turn).
    LeastConnections,
    /// Smooth weighted round-robin (nginx): picks in proportion to the weights, spread out.
    WeightedRoundRobin,
    /// Two random available backends, the one with the lower expected cost: peak EWMA
    /// latency times (requests in flight + 1).
    PeakEwma,
}

impl std::str::FromStr for Policy {
    type Err = ProxyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "round-robin" => Ok(Policy::RoundRobin),
            "least-conn" => Ok(Policy::LeastConnections),
            "weighted" => Ok(Policy::WeightedRoundRobin),
            "p2c-ewma" => Ok(Policy::PeakEwma),
            other => Err(ProxyError::Invalid {
                field: "balance",
                reason: format!("{other:?}: one of round-robin, least-conn, weighted, p2c-ewma"),
            }),
        }
    }
}

#[derive(Debug, Clone)]
struct Member {
    weight: u32,
    available: bool,
    in_flight: u32,
    // Smooth weighted round-robin's running weight.
    current: i64,
    // Peak EWMA latency, microseconds, and when it was last updated.
    ewma_us: f64,
    ewma_at_ms: u64,
}

/// One route's backends and the state balancing needs. See the module docs.
#[derive(Debug, Clone)]
pub struct Pool {
    policy: Policy,
    members: Vec<Member>,
    // Round-robin's (and ties') next index to try.
    cursor: usize,
    unmatched_finish_count: u64,
}

impl Pool {
    /// A pool of `weights.len()` backends (index = backend), all available. Weights count
    /// only for [`Policy::WeightedRoundRobin`]; each must be in `1..=WEIGHT_MAX`.
    pub fn new(policy: Policy, weights: &[u32]) -> Result<Self, ProxyError> {
        if weights.is_empty() || weights.len() > POOL_BACKENDS_MAX {
            return Err(ProxyError::Invalid {
                field: "backends",
                reason: format!(
                    "{} backends; a pool holds 1 to {POOL_BACKENDS_MAX}",
                    weights.len()
                ),
            });
        }
        if let Some((i, w)) = weights
            .iter()
            .enumerate()
            .find(|(_, w)| !(1..=WEIGHT_MAX).contains(*w))
        {
            return Err(ProxyError::Invalid {
                field: "weight",
                reason: format!("backend {i}: weight {w} is outside 1..={WEIGHT_MAX}"),
            });
        }
        Ok(Pool {
            policy,
            members: weights
                .iter()
                .map(|&weight| Member {
                    weight,
                    available: true,
                    in_flight: 0,
                    current: 0,
                    ewma_us: 0.0,
                    ewma_at_ms: 0,
                })
                .collect(),
            cursor: 0,
            unmatched_finish_count: 0,
        })
    }

    /// How many backends the pool holds.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the pool holds no backend (never: [`Pool::new`] refuses an empty one).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Marks backend `index` available or not (health checks, ejection, breakers decide).
    /// An index past the pool is ignored.
    pub fn set_available(&mut self, index: usize, available: bool) {
        if let Some(m) = self.members.get_mut(index) {
            if m.available != available {
                // A backend coming back starts its weighted turn afresh.
                m.current = 0;
            }
            m.available = available;
        }
    }

    /// Whether backend `index` is available.
    pub fn is_available(&self, index: usize) -> bool {
        self.members.get(index).is_some_and(|m| m.available)
    }

    /// Requests in flight on backend `index`.
    pub fn in_flight(&self, index: usize) -> u32 {
        self.members.get(index).map_or(0, |m| m.in_flight)
    }

    /// Backend `index`'s peak EWMA latency, microseconds (0 before its first response).
    pub fn ewma_us(&self, index: usize) -> f64 {
        self.members.get(index).map_or(0.0, |m| m.ewma_us)
    }

    /// `finish` calls that matched no `start` (a caller bug, ignored).
    pub fn unmatched_finish_count(&self) -> u64 {
        self.unmatched_finish_count
    }

    /// Picks the backend for the next request at `now_ms`, or `None` if none is
    /// available. Does not count the request: call [`Pool::start`] when it is sent.
    pub fn pick<R: Rng + ?Sized>(&mut self, now_ms: u64, rng: &mut R) -> Option<usize> {
        let n = self.members.len();
        match self.policy {
            Policy::RoundRobin => {
                let i = (0..n)
                    .map(|k| (self.cursor + k) % n)
                    .find(|&i| self.members[i].available)?;
                self.cursor = (i + 1) % n;
                Some(i)
            }
            Policy::LeastConnections => {
                // The fewest in flight; among equals, the first from the cursor on, so ties
                // take turns.
                let i = (0..n)
                    .map(|k| (self.cursor + k) % n)
                    .filter(|&i| self.members[i].available)
                    .min_by_key(|&i| self.members[i].in_flight)?;
                self.cursor = (i + 1) % n;
                Some(i)
            }
            Policy::WeightedRoundRobin => {
                // nginx's smooth weighted round-robin: every available backend gains its
                // weight; the one with the most is picked and pays back the total.
                let mut total = 0i64;
                let mut best: Option<(usize, i64)> = None;
                for (i, m) in self.members.iter_mut().enumerate() {
                    if !m.available {
                        continue;
                    }
                    m.current += i64::from(m.weight);
                    total += i64::from(m.weight);
                    if best.is_none_or(|(_, c)| m.current > c) {
                        best = Some((i, m.current));
                    }
                }
                let (b, _) = best?;
                self.members[b].current -= total;
                Some(b)
            }
            Policy::PeakEwma => {
                let available: usize = self.members.iter().filter(|m| m.available).count();
                if available == 0 {
                    return None;
                }
                let nth = |k: usize| {
                    self.members
                        .iter()
                        .enumerate()
                        .filter(|(_, m)| m.available)
                        .nth(k)
                        .map(|(i, _)| i)
                };
                let a = below(rng, available as u64) as usize;
                if available == 1 {
                    return nth(0);
                }
                // A second, distinct one.
                let mut b = below(rng, available as u64 - 1) as usize;
                if b >= a {
                    b += 1;
                }
                let (a, b) = (nth(a)?, nth(b)?);
                Some(if self.cost(b, now_ms) < self.cost(a, now_ms) {
                    b
                } else {
                    a
                })
            }
        }
    }

    /// Peak EWMA's expected cost of sending one more request to `index` at `now_ms`: the
    /// decayed latency (a backend with no sample yet costs like a fast one, so new backends
    /// are tried) times the requests it would then have in flight.
    fn cost(&self, index: usize, now_ms: u64) -> f64 {
        let m = &self.members[index];
        let elapsed_ms = now_ms.saturating_sub(m.ewma_at_ms) as f64;
        let latency = m.ewma_us * (-elapsed_ms / EWMA_DECAY_MS).exp();
        (latency + 1.0) * f64::from(m.in_flight + 1)
    }

    /// A request was sent to backend `index`.
    pub fn start(&mut self, index: usize) {
        if let Some(m) = self.members.get_mut(index) {
            m.in_flight = m.in_flight.saturating_add(1);
        }
    }

    /// A request to backend `index` ended at `now_ms` after `latency_us` (its response, an
    /// error or a timeout: the time the caller waited).
    pub fn finish(&mut self, index: usize, latency_us: u64, now_ms: u64) {
        let Some(m) = self.members.get_mut(index) else {
            return;
        };
        if m.in_flight == 0 {
            self.unmatched_finish_count += 1;
            return;
        }
        m.in_flight -= 1;
        let sample = latency_us as f64;
        if sample > m.ewma_us {
            // Peak: a slow response counts at once.
            m.ewma_us = sample;
        } else {
            let elapsed_ms = now_ms.saturating_sub(m.ewma_at_ms) as f64;
            let w = (-elapsed_ms / EWMA_DECAY_MS).exp();
            m.ewma_us = m.ewma_us * w + sample * (1.0 - w);
        }
        m.ewma_at_ms = now_ms;
    }
}

/// A uniform integer in `0..n` (`n > 0`) from one draw (Lemire's multiply-shift; the bias
/// is below `n / 2^64`).
fn below<R: Rng + ?Sized>(rng: &mut R, n: u64) -> u64 {
    ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const POLICIES: [Policy; 4] = [
        Policy::RoundRobin,
        Policy::LeastConnections,
        Policy::WeightedRoundRobin,
        Policy::PeakEwma,
    ];

    #[test]
    fn bad_pools_are_refused_by_field() {
        assert!(Pool::new(Policy::RoundRobin, &[]).is_err());
        match Pool::new(Policy::WeightedRoundRobin, &[1, 0]) {
            Err(ProxyError::Invalid { field, reason }) => {
                assert_eq!(field, "weight");
                assert!(reason.contains("backend 1"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!("fastest".parse::<Policy>().is_err());
        assert_eq!(
            "least-conn".parse::<Policy>().unwrap(),
            Policy::LeastConnections
        );
    }

    #[test]
    fn round_robin_takes_the_available_in_turn() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut p = Pool::new(Policy::RoundRobin, &[1, 1, 1]).unwrap();
        let picks: Vec<usize> = (0..6).filter_map(|_| p.pick(0, &mut rng)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        p.set_available(1, false);
        let picks: Vec<usize> = (0..4).filter_map(|_| p.pick(0, &mut rng)).collect();
        assert_eq!(picks, [0, 2, 0, 2]);
        for i in 0..3 {
            p.set_available(i, false);
        }
        assert_eq!(p.pick(0, &mut rng), None);
    }

    #[test]
    fn smooth_weighted_round_robin_spreads_the_heavy_backend() {
        // nginx's example: weights 5, 1, 1 give a a b a c a a, not a a a a a b c.
        let mut rng = StdRng::seed_from_u64(1);
        let mut p = Pool::new(Policy::WeightedRoundRobin, &[5, 1, 1]).unwrap();
        let picks: Vec<usize> = (0..7).filter_map(|_| p.pick(0, &mut rng)).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn peak_ewma_sends_little_to_a_slow_backend() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut p = Pool::new(Policy::PeakEwma, &[1, 1, 1]).unwrap();
        let mut counts = [0u32; 3];
        let mut now_ms = 0;
        for _ in 0..20_000 {
            now_ms += 1;
            let i = p.pick(now_ms, &mut rng).unwrap();
            counts[i] += 1;
            p.start(i);
            // Backend 2 answers in 50 ms, the others in 1 ms.
            let latency_us = if i == 2 { 50_000 } else { 1_000 };
            p.finish(i, latency_us, now_ms);
        }
        let slow_share = f64::from(counts[2]) / 20_000.0;
        assert!(slow_share < 0.05, "{counts:?}");
        assert!(counts[0] > 5_000 && counts[1] > 5_000, "{counts:?}");
    }

    #[test]
    fn an_unmatched_finish_is_ignored_and_counted() {
        let mut p = Pool::new(Policy::LeastConnections, &[1]).unwrap();
        p.finish(0, 10, 0);
        assert_eq!((p.in_flight(0), p.unmatched_finish_count()), (0, 1));
    }

    /// One step of a random run against a pool.
    #[derive(Debug, Clone)]
    enum Step {
        Pick,
        Finish(usize, u64),
        SetAvailable(usize, bool),
        Wait(u64),
    }

    fn steps(backends: usize) -> impl Strategy<Value = Vec<Step>> {
        proptest::collection::vec(
            prop_oneof![
                4 => Just(Step::Pick),
                3 => (0..backends, 0u64..100_000).prop_map(|(i, l)| Step::Finish(i, l)),
                1 => (0..backends, any::<bool>()).prop_map(|(i, a)| Step::SetAvailable(i, a)),
                1 => (0u64..5_000).prop_map(Step::Wait),
            ],
            1..300,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// No policy ever picks an unavailable backend while an available one exists, and
        /// every policy picks one then; least connections never picks a busier one; the
        /// pool's in-flight counts follow a simple model.
        #[test]
        fn picks_are_available_and_least_conn_is_never_busier(
            weights in proptest::collection::vec(1u32..20, 1..8),
            seed in any::<u64>(),
            policy_index in 0usize..4,
            run in steps(8),
        ) {
            let policy = POLICIES[policy_index];
            let mut rng = StdRng::seed_from_u64(seed);
            let mut p = Pool::new(policy, &weights).unwrap();
            let n = weights.len();
            let mut available = vec![true; n];
            let mut in_flight = vec![0u32; n];
            let mut now_ms = 0u64;
            for step in run {
                match step {
                    Step::Pick => {
                        let picked = p.pick(now_ms, &mut rng);
                        match picked {
                            None => prop_assert!(available.iter().all(|a| !a)),
                            Some(i) => {
                                prop_assert!(available[i], "picked unavailable {i}");
                                if policy == Policy::LeastConnections {
                                    let least = (0..n)
                                        .filter(|&j| available[j])
                                        .map(|j| in_flight[j])
                                        .min()
                                        .unwrap();
                                    prop_assert_eq!(in_flight[i], least);
                                }
                                p.start(i);
                                in_flight[i] += 1;
                            }
                        }
                    }
                    Step::Finish(i, latency_us) => {
                        let i = i % n;
                        p.finish(i, latency_us, now_ms);
                        in_flight[i] = in_flight[i].saturating_sub(1);
                    }
                    Step::SetAvailable(i, a) => {
                        let i = i % n;
                        p.set_available(i, a);
                        available[i] = a;
                    }
                    Step::Wait(ms) => now_ms += ms,
                }
                for (i, &f) in in_flight.iter().enumerate() {
                    prop_assert_eq!(p.in_flight(i), f);
                }
            }
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        /// Smooth weighted round-robin honours the weights within 1% over 100 k picks,
        /// and exactly over every full cycle of `total` picks.
        #[test]
        fn weights_are_honoured(
            weights in proptest::collection::vec(1u32..50, 1..8),
            picks in 90_000usize..100_001,
        ) {
            let mut rng = StdRng::seed_from_u64(0);
            let mut p = Pool::new(Policy::WeightedRoundRobin, &weights).unwrap();
            let total: u32 = weights.iter().sum();
            let mut counts = vec![0u64; weights.len()];
            for k in 1..=picks {
                counts[p.pick(0, &mut rng).unwrap()] += 1;
                if k % total as usize == 0 {
                    let cycles = (k / total as usize) as u64;
                    for (i, &w) in weights.iter().enumerate() {
                        prop_assert_eq!(counts[i], u64::from(w) * cycles);
                    }
                }
            }
            for (i, &w) in weights.iter().enumerate() {
                let share = counts[i] as f64 / picks as f64;
                let want = f64::from(w) / f64::from(total);
                prop_assert!((share - want).abs() <= 0.01, "backend {i}: {share} vs {want}");
            }
        }
    }
}
