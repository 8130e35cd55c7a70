//! Prometheus metrics of the gateway (prometheus-client; counters are named without
//! `_total`, which the encoder appends). The set of label values is bounded (route
//! patterns, not paths). Label handles are cached per worker thread
//! ([`Metrics::count_request`]), so a request takes no lock of the metric family.

pub use crate::app::histogram::LatencyHistogram;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::registry::Registry;

/// Labels of a request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route pattern (`/api/v1/kv/{key}`), or `unmatched`.
    pub route: &'static str,
    /// The method.
    pub method: &'static str,
    /// The status code.
    pub status: u16,
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `helios_requests_total{route,method,status}`.
    pub requests: Family<RequestLabels, Counter>,
    /// `helios_request_duration_seconds`: lock-free buckets (the library's histogram
    /// takes a write lock per observation, which two busy workers fight over).
    pub duration: LatencyHistogram,
    /// `rate_limiter_denied_total`.
    pub denied: Counter,
    seen: std::sync::atomic::AtomicU64,
    // Tells this instance's cached handles from another's (tests run several gateways).
    instance: u64,
}

static INSTANCES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static HANDLES: std::cell::RefCell<std::collections::HashMap<(u64, RequestLabels), Counter>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

impl Metrics {
    /// Counts one request under `labels`, through this thread's cache of label handles
    /// (the family's lock is taken once per thread and label set).
    pub fn count_request(&self, labels: RequestLabels) {
        HANDLES.with(|h| {
            let mut h = h.borrow_mut();
            match h.get(&(self.instance, labels.clone())) {
                Some(c) => {
                    c.inc();
                }
                None => {
                    let c = self.requests.get_or_create(&labels).clone();
                    c.inc();
                    h.insert((self.instance, labels), c);
                }
            }
        });
    }

    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("helios_requests", "HTTP requests served", requests.clone());
        let duration = LatencyHistogram::default();
        let denied = Counter::default();
        registry.register(
            "rate_limiter_denied",
            "Requests refused by the rate limiter",
            denied.clone(),
        );
        Self {
            registry,
            requests,
            duration,
            denied,
            seen: std::sync::atomic::AtomicU64::new(0),
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// A number that grows with every call (request ids).
    pub fn requests_seen(&self) -> u64 {
        self.seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The text exposition format, with the store and queue gauges read at scrape time.
    pub fn encode(&self, atlas: &helios_atlas::Atlas, queue: &helios_queue::Queue) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        // `# EOF` closes the registry's part; the scrape-time families go before it.
        if out.ends_with("# EOF\n") {
            out.truncate(out.len() - "# EOF\n".len());
        }
        out.push_str("# HELP helios_request_duration_seconds Time to answer a request.\n");
        out.push_str("# TYPE helios_request_duration_seconds histogram\n");
        self.duration
            .encode(&mut out, "helios_request_duration_seconds", "");
        let stats = atlas.stats();
        out.push_str("# HELP atlas_aof_bytes Bytes appended to the AOF since start.\n");
        out.push_str("# TYPE atlas_aof_bytes counter\n");
        out.push_str(&format!(
            "atlas_aof_bytes_total {}\n",
            stats.aof_written_size
        ));
        out.push_str("# HELP atlas_snapshot_duration_seconds How long the last snapshot took.\n");
        out.push_str("# TYPE atlas_snapshot_duration_seconds gauge\n");
        let secs = stats
            .snapshot_last_duration_ms
            .map_or(0.0, |ms| ms as f64 / 1000.0);
        out.push_str(&format!("atlas_snapshot_duration_seconds {secs}\n"));
        out.push_str("# HELP worker_job_queue_depth Jobs per queue and state.\n");
        out.push_str("# TYPE worker_job_queue_depth gauge\n");
        let names: Vec<String> = queue.with_state(|s| s.queue_names().map(str::to_owned).collect());
        for n in names {
            let s = queue.stats(&n);
            for (state, v) in [
                ("pending", s.pending_count),
                ("in_progress", s.in_progress_count),
                ("done", s.done_count),
                ("failed", s.failed_count),
                ("cancelled", s.cancelled_count),
            ] {
                // Queue names are [A-Za-z0-9_.-]: safe inside a label value.
                out.push_str(&format!(
                    "worker_job_queue_depth{{queue=\"{n}\",state=\"{state}\"}} {v}\n"
                ));
            }
        }
        out.push_str("# EOF\n");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
