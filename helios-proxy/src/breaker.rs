//! The per-backend circuit breaker: closed, open, half-open (Hystrix, resilience4j), on the
//! failure rate over a sliding window. Pure: every call takes `now_ms`.
//!
//! - **Closed**: requests flow; each result is counted in the window's bucket for its
//!   time. Once the window holds at least `requests_min` results and at least
//!   `failure_rate_min` of them failed, the breaker opens.
//! - **Open** until `open_ms` has passed: [`Breaker::allow`] says no (the proxy answers
//!   503 at once, or picks another backend). Results still arriving from before are
//!   ignored.
//! - **Half-open** after that: at most `probes_max` requests at a time are let through.
//!   One failure opens it again; `probes_max` successes close it with an empty window.
//!
//! The window is `buckets_count` buckets of `window_ms / buckets_count` each (resilience4j's
//! time-based window): a result counts while its bucket is one of the last
//! `buckets_count`, so memory is fixed and old results fall out a bucket at a time.
//!
//! Invariants (a proptest checks them against a plain model at the bottom of this file):
//! the state is always one of the three; allow() is false while open; in half-open no more
//! than `probes_max` allowed requests are outstanding; a clock that moves backwards counts
//! as no time passed.

use crate::error::ProxyError;

/// The breaker's settings. `Default` is a sensible production start.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// The sliding window's length.
    pub window_ms: u64,
    /// Buckets in the window (its time resolution).
    pub buckets_count: u32,
    /// Results the window must hold before the rate can open the breaker.
    pub requests_min: u32,
    /// Failure share (0..=1) that opens the breaker.
    pub failure_rate_min: f64,
    /// How long the breaker stays open before it probes.
    pub open_ms: u64,
    /// Requests let through at a time when half-open, and successes that close it.
    pub probes_max: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window_ms: 10_000,
            buckets_count: 10,
            requests_min: 20,
            failure_rate_min: 0.5,
            open_ms: 5_000,
            probes_max: 3,
        }
    }
}

impl BreakerConfig {
    /// Checks every setting, naming the first bad one.
    pub fn validate(&self) -> Result<(), ProxyError> {
        let bad = |field, reason: String| Err(ProxyError::Invalid { field, reason });
        if self.buckets_count == 0 || self.buckets_count > 1000 {
            return bad(
                "breaker.buckets_count",
                format!("{} is outside 1..=1000", self.buckets_count),
            );
        }
        if self.window_ms < u64::from(self.buckets_count) {
            return bad(
                "breaker.window_ms",
                format!("{} is shorter than one ms per bucket", self.window_ms),
            );
        }
        if !(self.failure_rate_min > 0.0 && self.failure_rate_min <= 1.0) {
            return bad(
                "breaker.failure_rate_min",
                format!("{} is outside (0, 1]", self.failure_rate_min),
            );
        }
        if self.requests_min == 0 {
            return bad("breaker.requests_min", "must be at least 1".to_owned());
        }
        if self.probes_max == 0 {
            return bad("breaker.probes_max", "must be at least 1".to_owned());
        }
        Ok(())
    }

    fn bucket_ms(&self) -> u64 {
        self.window_ms / u64::from(self.buckets_count)
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Requests are refused until this time.
    Open {
        /// When the breaker goes half-open.
        until_ms: u64,
    },
    /// A few probes at a time.
    HalfOpen {
        /// Probes let through and not yet finished.
        probes_in_flight: u32,
        /// Probes that succeeded.
        successes: u32,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    // Which bucket of time (now / bucket_ms) this slot holds.
    index: u64,
    ok: u32,
    failed: u32,
}

/// One backend's circuit breaker. See the module docs.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    // A ring of `buckets_count` slots, slot = bucket index % buckets_count.
    buckets: Vec<Bucket>,
    // The latest time seen: an earlier `now_ms` is read as this one.
    now_ms: u64,
    opened_count: u64,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Result<Self, ProxyError> {
        config.validate()?;
        Ok(Breaker {
            config,
            state: BreakerState::Closed,
            buckets: vec![Bucket::default(); config.buckets_count as usize],
            now_ms: 0,
            opened_count: 0,
        })
    }

    fn advance(&mut self, now_ms: u64) -> u64 {
        self.now_ms = self.now_ms.max(now_ms);
        if let BreakerState::Open { until_ms } = self.state
            && self.now_ms >= until_ms
        {
            self.state = BreakerState::HalfOpen {
                probes_in_flight: 0,
                successes: 0,
            };
        }
        self.now_ms
    }

    /// The state at `now_ms` (an open breaker whose time is up reads as half-open).
    pub fn state(&mut self, now_ms: u64) -> BreakerState {
        self.advance(now_ms);
        self.state
    }

    /// Times the breaker opened.
    pub fn opened_count(&self) -> u64 {
        self.opened_count
    }

    /// Whether a request may go to the backend now. When half-open, a `true` reserves a
    /// probe: its result must come back through [`Breaker::record`].
    pub fn allow(&mut self, now_ms: u64) -> bool {
        self.advance(now_ms);
        match &mut self.state {
            BreakerState::Closed => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen {
                probes_in_flight,
                successes,
            } => {
                if *probes_in_flight + *successes < self.config.probes_max {
                    *probes_in_flight += 1;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// The result of a request the breaker allowed: `ok` false for a failure (a 5xx, a
    /// connect error, a timeout; the caller decides what counts).
    pub fn record(&mut self, now_ms: u64, ok: bool) {
        let now = self.advance(now_ms);
        match &mut self.state {
            BreakerState::Open { .. } => {}
            BreakerState::HalfOpen {
                probes_in_flight,
                successes,
            } => {
                if *probes_in_flight == 0 {
                    // A result from before the breaker opened: not a probe.
                    return;
                }
                *probes_in_flight -= 1;
                if !ok {
                    self.open(now);
                } else {
                    *successes += 1;
                    if *successes >= self.config.probes_max {
                        self.state = BreakerState::Closed;
                        self.buckets.fill(Bucket::default());
                    }
                }
            }
            BreakerState::Closed => {
                let index = now / self.config.bucket_ms();
                let slot = (index % u64::from(self.config.buckets_count)) as usize;
                let b = &mut self.buckets[slot];
                if b.index != index {
                    *b = Bucket {
                        index,
                        ok: 0,
                        failed: 0,
                    };
                }
                if ok {
                    b.ok = b.ok.saturating_add(1);
                } else {
                    b.failed = b.failed.saturating_add(1);
                }
                let (ok_count, failed_count) = self.window(index);
                let total = ok_count + failed_count;
                if total >= u64::from(self.config.requests_min)
                    && failed_count as f64 >= self.config.failure_rate_min * total as f64
                {
                    self.open(now);
                }
            }
        }
    }

    /// Results in the buckets of the window ending with bucket `index`.
    fn window(&self, index: u64) -> (u64, u64) {
        let oldest = index.saturating_sub(u64::from(self.config.buckets_count) - 1);
        self.buckets
            .iter()
            .filter(|b| (oldest..=index).contains(&b.index))
            .fold((0, 0), |(o, f), b| {
                (o + u64::from(b.ok), f + u64::from(b.failed))
            })
    }

    fn open(&mut self, now_ms: u64) {
        self.state = BreakerState::Open {
            until_ms: now_ms.saturating_add(self.config.open_ms),
        };
        self.opened_count += 1;
        self.buckets.fill(Bucket::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            window_ms: 1_000,
            buckets_count: 10,
            requests_min: 4,
            failure_rate_min: 0.5,
            open_ms: 500,
            probes_max: 2,
        }
    }

    #[test]
    fn opens_on_the_failure_rate_probes_and_closes() {
        let mut b = Breaker::new(config()).unwrap();
        for ok in [true, false, true] {
            assert!(b.allow(0));
            b.record(0, ok);
        }
        assert_eq!(b.state(0), BreakerState::Closed, "3 < requests_min");
        b.record(10, false);
        assert_eq!(b.state(10), BreakerState::Open { until_ms: 510 });
        assert!(!b.allow(509));
        // Half-open: two probes at a time, a third waits.
        assert!(b.allow(510) && b.allow(510));
        assert!(!b.allow(510));
        b.record(520, true);
        assert!(!b.allow(520), "probes_max successes-or-in-flight");
        b.record(530, true);
        assert_eq!(b.state(530), BreakerState::Closed);
        assert_eq!(b.opened_count(), 1);
    }

    #[test]
    fn a_failed_probe_opens_again_and_old_results_fall_out() {
        let mut b = Breaker::new(config()).unwrap();
        for t in 0..4 {
            b.record(t, false);
        }
        assert!(matches!(b.state(4), BreakerState::Open { .. }));
        assert!(b.allow(600));
        b.record(601, false);
        assert_eq!(b.state(601), BreakerState::Open { until_ms: 1101 });
        // Closed again later: failures a window apart never add up.
        let mut b = Breaker::new(config()).unwrap();
        for k in 0..10 {
            b.record(k * 1_000, false);
            b.record(k * 1_000, true);
            b.record(k * 1_000, true);
        }
        assert_eq!(b.state(10_000), BreakerState::Closed);
    }

    #[test]
    fn bad_settings_are_named() {
        let c = BreakerConfig {
            failure_rate_min: 1.5,
            ..config()
        };
        match Breaker::new(c) {
            Err(ProxyError::Invalid { field, .. }) => assert_eq!(field, "breaker.failure_rate_min"),
            other => panic!("{other:?}"),
        }
    }

    /// The plain model: every result kept with its bucket index, the window recomputed
    /// from scratch.
    #[derive(Debug)]
    struct Model {
        c: BreakerConfig,
        state: BreakerState,
        events: Vec<(u64, bool)>,
        now_ms: u64,
    }

    impl Model {
        fn advance(&mut self, now_ms: u64) {
            self.now_ms = self.now_ms.max(now_ms);
            if let BreakerState::Open { until_ms } = self.state
                && self.now_ms >= until_ms
            {
                self.state = BreakerState::HalfOpen {
                    probes_in_flight: 0,
                    successes: 0,
                };
            }
        }
        fn open(&mut self) {
            self.state = BreakerState::Open {
                until_ms: self.now_ms + self.c.open_ms,
            };
            self.events.clear();
        }
        fn allow(&mut self, now_ms: u64) -> bool {
            self.advance(now_ms);
            match self.state {
                BreakerState::Closed => true,
                BreakerState::Open { .. } => false,
                BreakerState::HalfOpen {
                    probes_in_flight,
                    successes,
                } => {
                    let ok = probes_in_flight + successes < self.c.probes_max;
                    if ok {
                        self.state = BreakerState::HalfOpen {
                            probes_in_flight: probes_in_flight + 1,
                            successes,
                        };
                    }
                    ok
                }
            }
        }
        fn record(&mut self, now_ms: u64, ok: bool) {
            self.advance(now_ms);
            match self.state {
                BreakerState::Open { .. } => {}
                BreakerState::HalfOpen {
                    probes_in_flight,
                    successes,
                } => {
                    if probes_in_flight == 0 {
                        return;
                    }
                    if !ok {
                        self.open();
                    } else if successes + 1 >= self.c.probes_max {
                        self.state = BreakerState::Closed;
                        self.events.clear();
                    } else {
                        self.state = BreakerState::HalfOpen {
                            probes_in_flight: probes_in_flight - 1,
                            successes: successes + 1,
                        };
                    }
                }
                BreakerState::Closed => {
                    let bucket_ms = self.c.window_ms / u64::from(self.c.buckets_count);
                    let index = self.now_ms / bucket_ms;
                    self.events.push((index, ok));
                    let oldest = index.saturating_sub(u64::from(self.c.buckets_count) - 1);
                    let window: Vec<bool> = self
                        .events
                        .iter()
                        .filter(|(i, _)| *i >= oldest)
                        .map(|(_, ok)| *ok)
                        .collect();
                    let failed = window.iter().filter(|ok| !**ok).count() as f64;
                    if window.len() as u64 >= u64::from(self.c.requests_min)
                        && failed >= self.c.failure_rate_min * window.len() as f64
                    {
                        self.open();
                    }
                }
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Allow,
        Record(bool),
        Wait(u64),
        Back(u64),
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// The breaker and the plain model agree on every answer and every state, over
        /// random results and clock moves (backwards ones included); half-open never has
        /// more than `probes_max` outstanding.
        #[test]
        fn the_breaker_matches_the_model(
            steps in proptest::collection::vec(prop_oneof![
                3 => Just(Step::Allow),
                4 => any::<bool>().prop_map(Step::Record),
                2 => (0u64..400).prop_map(Step::Wait),
                1 => (0u64..200).prop_map(Step::Back),
            ], 1..400),
            requests_min in 1u32..8,
            probes_max in 1u32..4,
            rate in 1u32..=10,
        ) {
            let c = BreakerConfig {
                requests_min,
                probes_max,
                failure_rate_min: f64::from(rate) / 10.0,
                ..config()
            };
            let mut b = Breaker::new(c).unwrap();
            let mut m = Model { c, state: BreakerState::Closed, events: Vec::new(), now_ms: 0 };
            let mut now_ms = 1_000u64;
            for step in steps {
                match step {
                    Step::Allow => prop_assert_eq!(b.allow(now_ms), m.allow(now_ms)),
                    Step::Record(ok) => {
                        b.record(now_ms, ok);
                        m.record(now_ms, ok);
                    }
                    Step::Wait(ms) => now_ms += ms,
                    Step::Back(ms) => now_ms = now_ms.saturating_sub(ms),
                }
                let s = b.state(now_ms);
                m.advance(now_ms);
                prop_assert_eq!(s, m.state);
                if let BreakerState::HalfOpen { probes_in_flight, successes } = s {
                    prop_assert!(probes_in_flight + successes <= probes_max);
                }
            }
        }
    }
}
