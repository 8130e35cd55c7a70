//! The proxy's `/metrics` (its families in OpenMetrics form, negotiated by
//! [`crate::app::metrics::respond`]), served on `metrics_listen` by the runner's metrics
//! listener ([`crate::app::http::serve_metrics`]): process-wide
//! counters; per route and backend `proxy_backend_healthy` (the seed's name), breaker
//! state, ejections, breaker openings, responses by status and the upstream latency
//! histogram; per route retries and 503s. Label values are bounded by the configuration
//! (route and backend ids, statuses). Per-route series start over when a new table
//! replaces the route's state (a changed route), which Prometheus reads as a reset.

use super::State;
use crate::app::metrics::label;
use helios_proxy::BreakerState;
use std::fmt::Write;
use std::sync::atomic::Ordering;

impl State {
    /// The families in OpenMetrics form (counters' `# HELP`/`# TYPE` without `_total`, no
    /// `# EOF`: see [`crate::app::metrics`]).
    pub fn metrics_text(&self) -> String {
        let c = &self.counters;
        let mut t = String::with_capacity(1024);
        for (name, help, v) in [
            ("proxy_requests", "Requests received.", &c.requests_total),
            (
                "proxy_retries",
                "Retries sent to another backend.",
                &c.retries_total,
            ),
            (
                "proxy_unavailable",
                "Requests answered 503: no backend of their route could take them.",
                &c.unavailable_total,
            ),
            (
                "proxy_backend_failed",
                "Requests answered 502 or 504: their backend failed or timed out.",
                &c.backend_failed_total,
            ),
            (
                "proxy_upgrades",
                "Upgraded connections tunnelled.",
                &c.upgrades_total,
            ),
            (
                "proxy_config_changes",
                "Route tables put in service after the first (SIGHUP, the change feed).",
                &c.table_changes_total,
            ),
            (
                "proxy_config_refused",
                "New configurations refused: they did not validate; the routes stayed.",
                &c.table_refused_total,
            ),
        ] {
            let _ = write!(
                t,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}_total {}\n",
                v.load(Ordering::Relaxed)
            );
        }
        let now = self.clock.now_ms();
        let routing = self.routing();
        // Per route and backend: one pass over the routes collects every family's lines.
        let mut healthy = String::new();
        let mut breaker = String::new();
        let mut ejections = String::new();
        let mut opened = String::new();
        let mut responses = String::new();
        let mut latency = String::new();
        let mut retries = String::new();
        let mut unavailable = String::new();
        for route in &routing.routes {
            let r = label(&route.id);
            let _ = writeln!(
                retries,
                "proxy_route_retries_total{{route=\"{r}\"}} {}",
                route.retries.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                unavailable,
                "proxy_route_unavailable_total{{route=\"{r}\"}} {}",
                route.unavailable.load(Ordering::Relaxed)
            );
            for (i, b) in route.backends.iter().enumerate() {
                let Some(rep) = route.upstream.lock().0.report(i, now) else {
                    continue;
                };
                let labels = format!("route=\"{r}\",backend=\"{}\"", label(&b.id));
                let state = match rep.breaker {
                    BreakerState::Closed => 0,
                    BreakerState::HalfOpen { .. } => 1,
                    BreakerState::Open { .. } => 2,
                };
                let _ = writeln!(
                    healthy,
                    "proxy_backend_healthy{{{labels}}} {}",
                    u8::from(rep.serving)
                );
                let _ = writeln!(breaker, "proxy_backend_breaker_state{{{labels}}} {state}");
                let _ = writeln!(
                    ejections,
                    "proxy_backend_ejections_total{{{labels}}} {}",
                    rep.ejections
                );
                let _ = writeln!(
                    opened,
                    "proxy_backend_breaker_opened_total{{{labels}}} {}",
                    rep.breaker_opened
                );
                for (code, n) in b.stats.responses() {
                    let _ = writeln!(
                        responses,
                        "proxy_responses_total{{{labels},code=\"{code}\"}} {n}"
                    );
                }
                b.stats
                    .latency
                    .encode(&mut latency, "proxy_upstream_latency_seconds", &labels);
            }
        }
        for (name, kind, help, lines) in [
            (
                "proxy_backend_healthy",
                "gauge",
                "Whether a backend takes traffic: healthy, not ejected, breaker not open.",
                healthy,
            ),
            (
                "proxy_backend_breaker_state",
                "gauge",
                "A backend's circuit breaker: 0 closed, 1 half-open, 2 open.",
                breaker,
            ),
            (
                "proxy_backend_ejections",
                "counter",
                "Times passive outlier detection ejected a backend.",
                ejections,
            ),
            (
                "proxy_backend_breaker_opened",
                "counter",
                "Times a backend's circuit breaker opened.",
                opened,
            ),
            (
                "proxy_responses",
                "counter",
                "Responses by route, backend and status (the backend's, or 502/504 for its failures).",
                responses,
            ),
            (
                "proxy_upstream_latency_seconds",
                "histogram",
                "Time from a request sent to a backend to its response headers.",
                latency,
            ),
            (
                "proxy_route_retries",
                "counter",
                "Retries sent, by route.",
                retries,
            ),
            (
                "proxy_route_unavailable",
                "counter",
                "Requests answered 503 because no backend of the route could take them.",
                unavailable,
            ),
        ] {
            let _ = write!(t, "# HELP {name} {help}\n# TYPE {name} {kind}\n{lines}");
        }
        t
    }
}
