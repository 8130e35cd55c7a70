//! Prometheus metrics of the gateway (prometheus-client; counters are named without
//! `_total`, which the encoder appends), in OpenMetrics form for
//! [`crate::app::metrics::respond`]. The set of label values is bounded (route
//! patterns, not paths; queue names). Label handles are cached per worker thread
//! ([`Metrics::count_request`]), so a request takes no lock of the metric family.

pub use crate::app::histogram::LatencyHistogram;
use crate::app::metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::fmt::Write;
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
    // `helios_request_duration_seconds{route}`: one histogram per route pattern (in the
    // router's order), then `unmatched`; lock-free buckets (the library's histogram
    // takes a write lock per observation, which two busy workers fight over).
    durations: Vec<(&'static str, LatencyHistogram)>,
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

    /// Records how long a request took, under its route's index in the router's table
    /// (`None`: no route matched).
    pub fn observe_duration(&self, route: Option<usize>, d: std::time::Duration) {
        let i = route
            .filter(|i| *i + 1 < self.durations.len())
            .unwrap_or(self.durations.len() - 1);
        self.durations[i]
            .1
            .observe_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("helios_requests", "HTTP requests served", requests.clone());
        let durations = super::handler::routes()
            .into_iter()
            .map(|(pattern, _)| pattern)
            .chain(["unmatched"])
            .map(|p| (p, LatencyHistogram::new()))
            .collect();
        let denied = Counter::default();
        registry.register(
            "rate_limiter_denied",
            "Requests refused by the rate limiter",
            denied.clone(),
        );
        Self {
            registry,
            requests,
            durations,
            denied,
            seen: std::sync::atomic::AtomicU64::new(0),
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// A number that grows with every call (request ids).
    pub fn requests_seen(&self) -> u64 {
        self.seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Every family in OpenMetrics form, for [`crate::app::metrics::respond`], with the
    /// store and queue figures read at scrape time. A route's duration series appear once
    /// it has served a request.
    pub fn encode(&self, atlas: &helios_atlas::Atlas, queue: &helios_queue::Queue) -> String {
        let mut out = metrics::encode_registry(&self.registry);
        metrics::family(
            &mut out,
            "helios_request_duration_seconds",
            "histogram",
            "Time to answer a request, by route pattern.",
        );
        for (route, h) in &self.durations {
            if h.count() > 0 {
                h.encode(
                    &mut out,
                    "helios_request_duration_seconds",
                    &format!("route=\"{}\"", metrics::label(route)),
                );
            }
        }
        metrics::atlas_families(&mut out, atlas);
        metrics::family(
            &mut out,
            "worker_job_queue_depth",
            "gauge",
            "Jobs per queue and state.",
        );
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
                let _ = writeln!(
                    out,
                    "worker_job_queue_depth{{queue=\"{}\",state=\"{state}\"}} {v}",
                    metrics::label(&n)
                );
            }
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
