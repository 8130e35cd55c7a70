//! The proxy's configuration as data: what `helios-proxy --config FILE` reads (the binary
//! does the YAML and environment layering, as the other binaries do) and what the quick
//! start builds from flags alone (`--listen --backend URL... --balance`). Pure: no file or
//! socket is touched; [`ProxyConfig::validate`] checks everything, naming the key, and
//! builds the route table and the trusted-proxy list the server runs on.

use crate::breaker::BreakerConfig;
use crate::error::ProxyError;
use crate::headers::TrustedProxies;
use crate::health::HealthConfig;
use crate::retry::RetryConfig;
use crate::route::{BackendSpec, RouteBackend, RouteSpec, RouteTable};
use serde::{Deserialize, Serialize};

/// Timeouts, ms. `Default`: generous but bounded, so no slow peer holds a connection
/// forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Connecting to a backend.
    pub connect_ms: u64,
    /// From the request sent to the backend's response headers.
    pub response_headers_ms: u64,
    /// A connection (client or backend side) with no byte moving.
    pub idle_ms: u64,
    /// A whole exchange, first byte in to last byte out (0: none, for long downloads and
    /// tunnels, which the idle timeout still bounds).
    pub total_ms: u64,
    /// Reading a client's request head.
    pub header_read_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_ms: 2_000,
            response_headers_ms: 30_000,
            idle_ms: 60_000,
            total_ms: 0,
            header_read_ms: 10_000,
        }
    }
}

/// The active health check's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    /// Path requested with GET.
    pub path: String,
    /// A check answering slower than this fails.
    pub timeout_ms: u64,
    /// Statuses that pass, inclusive.
    pub status_min: u16,
    /// Statuses that pass, inclusive.
    pub status_max: u16,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: "/".to_owned(),
            timeout_ms: 2_000,
            status_min: 200,
            status_max: 399,
        }
    }
}

/// What one proxy process serves at most. `Default`: 16384 connections, 1024 from one
/// address, 256 HTTP/2 streams per connection, 10 s to drain at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerLimits {
    /// Client connections served at once (past it, new ones wait in the accept queue).
    pub connections_max: usize,
    /// Client connections from one address (an IPv4 address or an IPv6 /64); one more is
    /// closed at once.
    pub connections_per_address_max: usize,
    /// Concurrent HTTP/2 streams per client connection.
    pub http2_streams_max: u32,
    /// At shutdown, how long exchanges in progress may take to finish.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            connections_max: 16_384,
            connections_per_address_max: 1_024,
            http2_streams_max: 256,
            shutdown_grace_ms: 10_000,
        }
    }
}

/// The whole configuration. `Default` listens on 127.0.0.1:8081 with no route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Address to serve on.
    pub listen: String,
    /// Runtime threads (0: one per core).
    pub threads: usize,
    /// Peers whose forwarding headers are believed (CIDR blocks).
    pub trusted_proxies: Vec<String>,
    /// The backends.
    pub backends: Vec<BackendSpec>,
    /// The routes.
    pub routes: Vec<RouteSpec>,
    /// The active check's request.
    pub health_check: HealthCheck,
    /// Health thresholds and outlier ejection.
    pub health: HealthConfig,
    /// Per-backend circuit breakers.
    pub breaker: BreakerConfig,
    /// Retries.
    pub retry: RetryConfig,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Connections, streams, drain.
    pub limits: ServerLimits,
    /// A gateway to follow (`http://host:port`; empty: none): routes and backends then
    /// come from its change feed (`/admin/proxy/feed`), replacing the ones above.
    pub control: String,
    /// One log line per exchange (target `access`: client, method, host, path, status,
    /// route, backend, bytes, times), JSON with `log.format: json`.
    pub access_log: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: "127.0.0.1:8081".to_owned(),
            threads: 0,
            trusted_proxies: Vec::new(),
            backends: Vec::new(),
            routes: Vec::new(),
            health_check: HealthCheck::default(),
            health: HealthConfig::default(),
            breaker: BreakerConfig::default(),
            retry: RetryConfig::default(),
            timeouts: Timeouts::default(),
            limits: ServerLimits::default(),
            control: String::new(),
            access_log: true,
        }
    }
}

/// What a valid configuration builds.
#[derive(Debug, Clone)]
pub struct Built {
    /// The routes.
    pub table: RouteTable,
    /// The trusted peers.
    pub trusted: TrustedProxies,
}

impl ProxyConfig {
    /// The quick start: one route for every host and path over `backends` (URLs), named
    /// `b1`, `b2`, ... in order, balanced by `balance` (`round-robin` if `None`).
    pub fn quick(
        listen: &str,
        backends: &[String],
        balance: Option<&str>,
    ) -> Result<ProxyConfig, ProxyError> {
        let specs: Vec<BackendSpec> = backends
            .iter()
            .enumerate()
            .map(|(i, url)| BackendSpec {
                id: format!("b{}", i + 1),
                url: url.clone(),
            })
            .collect();
        let route = RouteSpec {
            id: "default".to_owned(),
            host: None,
            path_prefix: "/".to_owned(),
            backends: specs
                .iter()
                .map(|b| RouteBackend {
                    backend: b.id.clone(),
                    weight: 1,
                })
                .collect(),
            balance: balance.unwrap_or("round-robin").to_owned(),
        };
        let config = ProxyConfig {
            listen: listen.to_owned(),
            backends: specs,
            routes: vec![route],
            ..ProxyConfig::default()
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting, naming the first bad key, and builds the route table. A
    /// configuration needs routes unless it follows a gateway (`control`).
    pub fn validate(&self) -> Result<Built, ProxyError> {
        if self.control.is_empty() && self.routes.is_empty() {
            return Err(ProxyError::Invalid {
                field: "routes",
                reason: "no route: give --backend URL, routes and backends in the config, \
                         or --control URL of a gateway"
                    .to_owned(),
            });
        }
        self.validate_settings()
    }

    /// [`ProxyConfig::validate`] without asking for routes: for a proxy whose routes come
    /// later (from a gateway's feed, or from the store in the gateway's process).
    pub fn validate_settings(&self) -> Result<Built, ProxyError> {
        let bad = |field: &'static str, reason: String| ProxyError::Invalid { field, reason };
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(bad("listen", format!("{:?} is not HOST:PORT", self.listen)));
        }
        if self.threads > 1024 {
            return Err(bad(
                "threads",
                format!("{} is outside 0..=1024", self.threads),
            ));
        }
        if !self.control.is_empty() {
            crate::route::parse_origin(&self.control).map_err(|e| bad("control", e))?;
        }
        let hc = &self.health_check;
        if !hc.path.starts_with('/') {
            return Err(bad(
                "health_check.path",
                format!("{:?} must start with /", hc.path),
            ));
        }
        if hc.status_min < 100 || hc.status_max > 599 || hc.status_min > hc.status_max {
            return Err(bad(
                "health_check.status_min",
                format!(
                    "{}..={} is not a range of statuses",
                    hc.status_min, hc.status_max
                ),
            ));
        }
        if hc.timeout_ms == 0 || hc.timeout_ms > self.health.interval_ms {
            return Err(bad(
                "health_check.timeout_ms",
                "1 up to health.interval_ms (a check ends before the next starts)".to_owned(),
            ));
        }
        let t = &self.timeouts;
        for (field, v) in [
            ("timeouts.connect_ms", t.connect_ms),
            ("timeouts.response_headers_ms", t.response_headers_ms),
            ("timeouts.idle_ms", t.idle_ms),
            ("timeouts.header_read_ms", t.header_read_ms),
        ] {
            if v == 0 || v > 3_600_000 {
                return Err(bad(field, format!("{v} is outside 1..=3600000")));
            }
        }
        let l = &self.limits;
        if !(1..=1_000_000).contains(&l.connections_max) {
            return Err(bad(
                "limits.connections_max",
                format!("{} is outside 1..=1000000", l.connections_max),
            ));
        }
        if !(1..=l.connections_max).contains(&l.connections_per_address_max) {
            return Err(bad(
                "limits.connections_per_address_max",
                format!(
                    "{} is outside 1..=limits.connections_max",
                    l.connections_per_address_max
                ),
            ));
        }
        if !(1..=10_000).contains(&l.http2_streams_max) {
            return Err(bad(
                "limits.http2_streams_max",
                format!("{} is outside 1..=10000", l.http2_streams_max),
            ));
        }
        if l.shutdown_grace_ms > 3_600_000 {
            return Err(bad(
                "limits.shutdown_grace_ms",
                format!("{} is outside 0..=3600000", l.shutdown_grace_ms),
            ));
        }
        self.health.validate()?;
        self.breaker.validate()?;
        self.retry.validate()?;
        let trusted = TrustedProxies::parse(&self.trusted_proxies)?;
        let table = RouteTable::new(&self.routes, &self.backends)?;
        Ok(Built { table, trusted })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_start_is_one_route_over_the_backends() {
        let backends = vec![
            "http://127.0.0.1:9001".to_owned(),
            "http://127.0.0.1:9002".to_owned(),
        ];
        let c = ProxyConfig::quick("127.0.0.1:8081", &backends, Some("least-conn")).unwrap();
        let built = c.validate().unwrap();
        let r = built.table.route(Some("any.host"), "/anything").unwrap();
        assert_eq!(r.policy, crate::Policy::LeastConnections);
        let origins: Vec<&str> = r
            .backends
            .iter()
            .map(|(_, o, _)| o.authority.as_str())
            .collect();
        assert_eq!(origins, ["127.0.0.1:9001", "127.0.0.1:9002"]);
        match ProxyConfig::quick("127.0.0.1:8081", &[], None) {
            Err(ProxyError::Invalid { field, .. }) => assert_eq!(field, "route.backends"),
            other => panic!("{other:?}"),
        }
        match ProxyConfig::quick("127.0.0.1:8081", &backends, Some("fastest")) {
            Err(ProxyError::Invalid { field, .. }) => assert_eq!(field, "route.balance"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_config_document_reads_with_defaults_and_bad_keys_are_named() {
        let doc = r#"{
            "listen": "0.0.0.0:8443",
            "backends": [{"id": "api1", "url": "http://10.0.0.1:8080"}],
            "routes": [{"id": "api", "path_prefix": "/api/", "backends": [{"backend": "api1"}]}],
            "health": {"interval_ms": 3000},
            "trusted_proxies": ["10.0.0.0/8"]
        }"#;
        let c: ProxyConfig = serde_json::from_str(doc).unwrap();
        assert_eq!(
            c.health.unhealthy_threshold,
            HealthConfig::default().unhealthy_threshold
        );
        let built = c.validate().unwrap();
        assert!(built.trusted.contains("10.1.2.3".parse().unwrap()));
        assert!(serde_json::from_str::<ProxyConfig>(r#"{"listn": "x"}"#).is_err());
        let mut bad = c.clone();
        bad.health_check.timeout_ms = 5_000;
        match bad.validate() {
            Err(ProxyError::Invalid { field, .. }) => assert_eq!(field, "health_check.timeout_ms"),
            other => panic!("{other:?}"),
        }
        let mut bad = c.clone();
        bad.trusted_proxies = vec!["10.0.0.0/40".into()];
        assert!(bad.validate().is_err());
        for (field, edit) in [
            (
                "limits.connections_max",
                (|l: &mut ServerLimits| l.connections_max = 0) as fn(&mut ServerLimits),
            ),
            ("limits.connections_per_address_max", |l| {
                l.connections_per_address_max = l.connections_max + 1
            }),
            ("limits.http2_streams_max", |l| l.http2_streams_max = 0),
            ("limits.shutdown_grace_ms", |l| {
                l.shutdown_grace_ms = 3_600_001
            }),
        ] {
            let mut bad = c.clone();
            edit(&mut bad.limits);
            match bad.validate() {
                Err(ProxyError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
