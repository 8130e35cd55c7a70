//! The proxy's `/metrics` (Prometheus text format 0.0.4): its counters and
//! `proxy_backend_healthy` per route and backend, served on `metrics_listen` by the
//! runner's metrics listener ([`crate::app::http::serve_metrics`]).

use super::State;
use crate::app::http::Body;
use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::Full;
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// A label value, escaped as the text format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl State {
    /// The metrics in Prometheus's text format.
    pub fn metrics_text(&self) -> String {
        let c = &self.counters;
        let mut t = String::with_capacity(1024);
        for (name, help, v) in [
            (
                "proxy_requests_total",
                "Requests received.",
                &c.requests_total,
            ),
            (
                "proxy_retries_total",
                "Retries sent to another backend.",
                &c.retries_total,
            ),
            (
                "proxy_unavailable_total",
                "Requests answered 503: no backend of their route could take them.",
                &c.unavailable_total,
            ),
            (
                "proxy_backend_failed_total",
                "Requests answered 502 or 504: their backend failed or timed out.",
                &c.backend_failed_total,
            ),
            (
                "proxy_upgrades_total",
                "Upgraded connections tunnelled.",
                &c.upgrades_total,
            ),
            (
                "proxy_config_changes_total",
                "Route tables put in service after the first (SIGHUP, the change feed).",
                &c.table_changes_total,
            ),
            (
                "proxy_config_refused_total",
                "New configurations refused: they did not validate; the routes stayed.",
                &c.table_refused_total,
            ),
        ] {
            let _ = write!(
                t,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            );
        }
        t.push_str(
            "# HELP proxy_backend_healthy Whether a backend takes traffic: healthy, not \
             ejected, breaker not open.\n# TYPE proxy_backend_healthy gauge\n",
        );
        let now = self.clock.now_ms();
        for route in &self.routing().routes {
            for (i, b) in route.backends.iter().enumerate() {
                let _ = writeln!(
                    t,
                    "proxy_backend_healthy{{route=\"{}\",backend=\"{}\"}} {}",
                    label(&route.id),
                    label(&b.id),
                    u8::from(route.is_serving(i, now))
                );
            }
        }
        t
    }

    /// `GET /metrics`'s response.
    pub fn metrics_response(&self) -> Response<Body> {
        let mut r = Response::new(Full::new(Bytes::from(self.metrics_text())));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    }
}
