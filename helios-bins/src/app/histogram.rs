//! A Prometheus latency histogram with atomic buckets (no lock on the request path),
//! shared by the servers' metrics (the gateway's request durations, the proxy's upstream
//! latencies).
//!
//! Invariant: the encoded buckets are cumulative and the `+Inf` bucket equals `_count`
//! (up to observations made while encoding).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the buckets, in microseconds: 100 us doubling to ~3.3 s.
const BUCKET_BOUNDS_US: [u64; 16] = [
    100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 51_200, 102_400, 204_800, 409_600,
    819_200, 1_638_400, 3_276_800,
];

/// A histogram of latencies. See the module docs.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    // Non-cumulative counts per bucket; the last slot is +Inf.
    buckets: [AtomicU64; 17],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl LatencyHistogram {
    /// An empty histogram (const: a process-wide one can be a `static`).
    pub const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; 17],
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one latency.
    pub fn observe_us(&self, us: u64) {
        let i = BUCKET_BOUNDS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BUCKET_BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Appends the series of `name` (in seconds) with `labels` (`k="v",...`, already
    /// escaped; empty for none): buckets, sum and count. The caller writes HELP and TYPE.
    pub fn encode(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, b) in BUCKET_BOUNDS_US.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let le = super::metrics::le(*b as f64 / 1e6);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[16].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = |l: &str| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{{{l}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_labelled() {
        let h = LatencyHistogram::default();
        for us in [50, 150, 150, 5_000_000] {
            h.observe_us(us);
        }
        let mut out = String::new();
        h.encode(&mut out, "x_seconds", "route=\"a\"");
        assert!(
            out.contains("x_seconds_bucket{route=\"a\",le=\"0.0001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{route=\"a\",le=\"0.0002\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{route=\"a\",le=\"+Inf\"} 4\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_count{route=\"a\"} 4\n"), "{out}");
        let mut bare = String::new();
        h.encode(&mut bare, "y", "");
        assert!(bare.contains("y_bucket{le=\"+Inf\"} 4\n"), "{bare}");
        assert!(bare.contains("y_sum 5.00035\n"), "{bare}");
    }
}
