//! Fixed-bucket histograms of durations the store measures on its own clock (snapshot
//! durations): atomic counts written by the store, read by [`Atlas::stats`](crate::Atlas::stats)
//! as a [`Histogram`] for exporters (Prometheus in helios-bins).
//!
//! Invariant: `counts` has one slot per bound plus the last (+Inf); `count` is their sum
//! and `sum_ms` the sum of the observations (up to observations made while reading).

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the snapshot duration buckets, ms (1 ms to 5 min).
pub const SNAPSHOT_BOUNDS_MS: &[u64] = &[
    1, 5, 10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000,
];

/// A histogram's counts at one moment. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// Upper bounds of the buckets, ms, ascending; a last bucket (+Inf) follows them.
    pub bounds_ms: &'static [u64],
    /// Observations per bucket (not cumulative): `bounds_ms.len() + 1` counts.
    pub counts: Vec<u64>,
    /// Sum of the observations, ms.
    pub sum_ms: u64,
    /// Number of observations.
    pub count: u64,
}

/// The store's side: lock-free counts.
#[derive(Debug)]
pub(crate) struct AtomicHistogram {
    bounds_ms: &'static [u64],
    counts: Box<[AtomicU64]>,
    sum_ms: AtomicU64,
}

impl AtomicHistogram {
    pub(crate) fn new(bounds_ms: &'static [u64]) -> Self {
        Self {
            bounds_ms,
            counts: (0..=bounds_ms.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, ms: u64) {
        let i = self
            .bounds_ms
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(self.bounds_ms.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> Histogram {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        Histogram {
            bounds_ms: self.bounds_ms,
            count: counts.iter().sum(),
            counts,
            sum_ms: self.sum_ms.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let h = AtomicHistogram::new(SNAPSHOT_BOUNDS_MS);
        for ms in [0, 1, 2, 300_000, 300_001] {
            h.observe(ms);
        }
        let r = h.read();
        assert_eq!(r.counts.len(), SNAPSHOT_BOUNDS_MS.len() + 1);
        assert_eq!(r.counts[0], 2, "0 and 1 are <= 1");
        assert_eq!(r.counts[1], 1, "2 is <= 5");
        assert_eq!(r.counts[SNAPSHOT_BOUNDS_MS.len() - 1], 1);
        assert_eq!(r.counts[SNAPSHOT_BOUNDS_MS.len()], 1, "+Inf");
        assert_eq!(r.count, 5);
        assert_eq!(r.sum_ms, 600_004);
    }
}
