//! Configuration of `helios-atlasd`: `configs/atlasd.yaml`, `HELIOS_ATLASD_*` variables,
//! then flags (the app wrapper's `--config --data-dir --listen --appendfsync`, and
//! redis-server's `--port --bind --dir --requirepass`), in that order.
//!
//! The environment prefix is `HELIOS_ATLASD_` (not bare `HELIOS_`) so that a shell set up
//! for the gateway (`HELIOS_HTTP__...`) does not make atlasd fail on keys it does not
//! have; `__` separates levels as in the gateway's config. Unknown keys fail at start,
//! naming the key.

use crate::app::config::{EnvLayer, Layered, err};
use crate::config::{ConfigError, LogSection};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The configuration of `helios-atlasd`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AtlasdConfig {
    /// Address to serve RESP on.
    pub listen: String,
    /// ATLAS data directory (owned whole by this process).
    pub data_dir: PathBuf,
    /// `always`, `everysec` or `no`.
    pub appendfsync: String,
    /// Under `everysec`: no write is acknowledged while the last successful fsync started
    /// more than this long ago, ms (at least 1000); such a write waits for an fsync first.
    /// ATLAS's `Options::everysec_lag_max_ms` (docs/durability.md).
    pub everysec_lag_max_ms: u64,
    /// Password of `AUTH` (the `default` user, which may do everything); empty: none.
    /// Never shown by `CONFIG GET`.
    pub requirepass: String,
    /// When true, `AUTH username password` checks helios-auth users stored in this data
    /// directory, and every connection must AUTH; a user without `admin:*` sees only its
    /// own KV namespace, with its roles' rights (`super::acl`).
    pub auth_users: bool,
    /// Most connected clients; past it a new client gets `-ERR max number of clients
    /// reached` and is closed (Redis's `maxclients`).
    pub clients_max: usize,
    /// Close a client idle this long, s; 0: never (Redis's `timeout`).
    pub idle_timeout_s: u64,
    /// Largest bulk string in a request, bytes (Redis's `proto-max-bulk-len`).
    pub bulk_size_max: u64,
    /// Most elements in a request array.
    pub array_count_max: u64,
    /// Most commands queued in one MULTI.
    pub multi_count_max: usize,
    /// Runtime threads serving connections (default 1, like Redis's one event loop: no
    /// lock contention or cross-thread wake-ups between them; raise it where spare cores
    /// should serve reads in parallel). Snapshots, fsyncs and bcrypt run on other threads
    /// either way.
    pub worker_threads: usize,
    /// At shutdown, how long connections get to finish what they are doing before they
    /// are closed, ms (the gateway's `http.shutdown_grace_ms`).
    pub shutdown_grace_ms: u64,
    /// TCP port of the HTTP `/metrics` listener (Prometheus), on `metrics_bind`; 0: none
    /// (as `idle_timeout_s: 0` is no timeout).
    pub metrics_port: u16,
    /// The address the metrics listener binds (default 127.0.0.1): its answers need no
    /// AUTH, so it stays on loopback even when `listen` is public, unless set otherwise
    /// (a container's scraper: `0.0.0.0`).
    pub metrics_bind: String,
    /// Logs.
    pub log: LogSection,
}

impl Default for AtlasdConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:6380".into(),
            data_dir: PathBuf::from("atlasd-data"),
            appendfsync: "everysec".into(),
            everysec_lag_max_ms: 2000,
            requirepass: String::new(),
            auth_users: false,
            clients_max: 10_000,
            idle_timeout_s: 0,
            bulk_size_max: 512 * 1024 * 1024,
            array_count_max: 1024 * 1024,
            multi_count_max: 100_000,
            worker_threads: 1,
            shutdown_grace_ms: 5_000,
            metrics_port: 0,
            metrics_bind: "127.0.0.1".into(),
            log: LogSection::new("auto", "info"),
        }
    }
}

/// Flag overrides (already parsed by clap); the redis-server spellings win over the app
/// wrapper's where both are given (`--port` over `--listen`'s port, `--dir` over
/// `--data-dir`).
#[derive(Debug, Clone, Default)]
pub struct AtlasdFlags {
    /// `--listen HOST:PORT`.
    pub listen: Option<String>,
    /// `--bind ADDR`.
    pub bind: Option<String>,
    /// `--port N`.
    pub port: Option<u16>,
    /// `--data-dir DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--dir DIR`.
    pub dir: Option<PathBuf>,
    /// `--appendfsync POLICY`.
    pub appendfsync: Option<String>,
    /// `--requirepass PASS`.
    pub requirepass: Option<String>,
    /// `--threads N`.
    pub worker_threads: Option<usize>,
    /// `--metrics-port N`.
    pub metrics_port: Option<u16>,
}

/// Splits `HOST:PORT` (or `[v6]:PORT`).
fn split_host_port(listen: &str) -> (String, String) {
    match listen.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.to_owned()),
        None => (listen.to_owned(), "6380".to_owned()),
    }
}

impl Layered for AtlasdConfig {
    fn check(&self) -> Result<(), ConfigError> {
        self.validate()
    }
}

impl AtlasdConfig {
    /// Loads: defaults <- `file` <- `HELIOS_ATLASD_*` in `env` <- `flags`, then checks.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &AtlasdFlags,
    ) -> Result<Self, ConfigError> {
        crate::app::config::load(
            file,
            env,
            &EnvLayer {
                prefix: "HELIOS_ATLASD_",
                skip: &|_| false,
                // The password is taken as written (a numeric one stays a string).
                verbatim: &|k| k == "REQUIREPASS",
            },
            |tree| {
                if let Some(l) = &flags.listen {
                    tree["listen"] = Value::String(l.clone());
                }
                if flags.bind.is_some() || flags.port.is_some() {
                    let (host, port) = split_host_port(tree["listen"].as_str().unwrap_or(""));
                    let host = flags.bind.clone().unwrap_or(host);
                    let port = flags.port.map_or(port, |p| p.to_string());
                    tree["listen"] =
                        Value::String(if host.contains(':') && !host.starts_with('[') {
                            format!("[{host}]:{port}")
                        } else {
                            format!("{host}:{port}")
                        });
                }
                if let Some(d) = flags.dir.as_ref().or(flags.data_dir.as_ref()) {
                    tree["data_dir"] = Value::String(d.display().to_string());
                }
                if let Some(a) = &flags.appendfsync {
                    tree["appendfsync"] = Value::String(a.clone());
                }
                if let Some(p) = &flags.requirepass {
                    tree["requirepass"] = Value::String(p.clone());
                }
                if let Some(n) = flags.worker_threads {
                    tree["worker_threads"] = Value::from(n);
                }
                if let Some(p) = flags.metrics_port {
                    tree["metrics_port"] = Value::from(p);
                }
            },
        )
    }

    /// The address of the `/metrics` listener: `metrics_port` on `metrics_bind`; `None`
    /// when `metrics_port` is 0.
    pub fn metrics_listen(&self) -> Option<String> {
        if self.metrics_port == 0 {
            return None;
        }
        let ip = self.metrics_bind.parse::<std::net::IpAddr>().ok()?;
        Some(std::net::SocketAddr::new(ip, self.metrics_port).to_string())
    }

    /// Checks ranges and formats, naming the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let Ok(listen) = self.listen.parse::<std::net::SocketAddr>() else {
            return Err(err("listen", format!("{:?} is not HOST:PORT", self.listen)));
        };
        let Ok(metrics_ip) = self.metrics_bind.parse::<std::net::IpAddr>() else {
            return Err(err(
                "metrics_bind",
                format!("{:?} is not an IP address", self.metrics_bind),
            ));
        };
        if self.metrics_port != 0
            && self.metrics_port == listen.port()
            && (metrics_ip == listen.ip()
                || metrics_ip.is_unspecified()
                || listen.ip().is_unspecified())
        {
            return Err(err(
                "metrics_port",
                format!("{} is the RESP port of listen", self.metrics_port),
            ));
        }
        if !matches!(self.appendfsync.as_str(), "always" | "everysec" | "no") {
            return Err(err("appendfsync", "one of always, everysec, no"));
        }
        if !(1000..=3_600_000).contains(&self.everysec_lag_max_ms) {
            return Err(err("everysec_lag_max_ms", "1000..=3600000 ms"));
        }
        if self.clients_max == 0 {
            return Err(err("clients_max", "at least 1"));
        }
        if self.idle_timeout_s > 365 * 24 * 3600 {
            return Err(err("idle_timeout_s", "0..=31536000"));
        }
        if self.bulk_size_max == 0 || self.bulk_size_max > helios_atlas::limits::VALUE_SIZE_MAX * 2
        {
            return Err(err("bulk_size_max", "1..=536870912"));
        }
        if self.array_count_max == 0 || self.array_count_max > 64 * 1024 * 1024 {
            return Err(err("array_count_max", "1..=67108864"));
        }
        if self.multi_count_max == 0 || self.multi_count_max > 1_000_000 {
            return Err(err("multi_count_max", "1..=1000000"));
        }
        if self.shutdown_grace_ms > 600_000 {
            return Err(err("shutdown_grace_ms", "0..=600000"));
        }
        if self.worker_threads == 0 || self.worker_threads > 1024 {
            return Err(err("worker_threads", "1..=1024"));
        }
        if !matches!(self.log.format.as_str(), "json" | "pretty" | "auto") {
            return Err(err("log.format", "one of json, pretty, auto"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atlasd_yaml_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/atlasd.yaml");
        let c =
            AtlasdConfig::load(Some(&path), std::iter::empty(), &AtlasdFlags::default()).unwrap();
        assert_eq!(c, AtlasdConfig::default());
    }

    /// Shows the metrics listener stays on loopback when `listen` is public, and binds
    /// elsewhere only when `metrics_bind` says so.
    #[test]
    fn metrics_port_from_env_and_flag_on_loopback_by_default() {
        let c = AtlasdConfig::load(
            None,
            [("HELIOS_ATLASD_METRICS_PORT".to_string(), "9121".to_string())],
            &AtlasdFlags {
                bind: Some("0.0.0.0".into()),
                ..AtlasdFlags::default()
            },
        )
        .unwrap();
        assert_eq!(c.metrics_port, 9121);
        assert_eq!(c.metrics_listen().as_deref(), Some("127.0.0.1:9121"));
        let c = AtlasdConfig::load(
            None,
            [
                ("HELIOS_ATLASD_METRICS_PORT".to_string(), "9121".to_string()),
                ("HELIOS_ATLASD_METRICS_BIND".to_string(), "::1".to_string()),
            ],
            &AtlasdFlags::default(),
        )
        .unwrap();
        assert_eq!(c.metrics_listen().as_deref(), Some("[::1]:9121"));
        let c = AtlasdConfig::load(
            None,
            [("HELIOS_ATLASD_METRICS_PORT".to_string(), "9121".to_string())],
            &AtlasdFlags {
                metrics_port: Some(9200),
                ..AtlasdFlags::default()
            },
        )
        .unwrap();
        assert_eq!(c.metrics_listen().as_deref(), Some("127.0.0.1:9200"));
        let e = AtlasdConfig::load(
            None,
            std::iter::empty(),
            &AtlasdFlags {
                metrics_port: Some(6380),
                ..AtlasdFlags::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.key, "metrics_port", "{e}");
    }

    #[test]
    fn layering_and_redis_flags() {
        let c = AtlasdConfig::load(
            None,
            [
                ("HELIOS_ATLASD_REQUIREPASS".to_string(), "123".to_string()),
                ("HELIOS_ATLASD_CLIENTS_MAX".to_string(), "7".to_string()),
                ("HELIOS_HTTP__X".to_string(), "ignored".to_string()),
            ],
            &AtlasdFlags {
                port: Some(7000),
                bind: Some("0.0.0.0".into()),
                dir: Some("/tmp/x".into()),
                ..AtlasdFlags::default()
            },
        )
        .unwrap();
        assert_eq!(c.requirepass, "123");
        assert_eq!(c.clients_max, 7);
        assert_eq!(c.listen, "0.0.0.0:7000");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.metrics_listen(), None, "no metrics port by default");
        let e = AtlasdConfig::load(
            None,
            [("HELIOS_ATLASD_NOPE".to_string(), "1".to_string())],
            &AtlasdFlags::default(),
        )
        .unwrap_err();
        assert!(e.key.starts_with("nope"), "{e}");
        let e = AtlasdConfig::load(
            None,
            std::iter::empty(),
            &AtlasdFlags {
                appendfsync: Some("sometimes".into()),
                ..AtlasdFlags::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.key, "appendfsync");
        let e = AtlasdConfig::load(
            None,
            [(
                "HELIOS_ATLASD_EVERYSEC_LAG_MAX_MS".to_string(),
                "999".to_string(),
            )],
            &AtlasdFlags::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "everysec_lag_max_ms", "{e}");
        let c = AtlasdConfig::load(
            None,
            [("HELIOS_ATLASD_WORKER_THREADS".to_string(), "3".to_string())],
            &AtlasdFlags::default(),
        )
        .unwrap();
        assert_eq!(c.worker_threads, 3);
        let c = AtlasdConfig::load(
            None,
            [("HELIOS_ATLASD_WORKER_THREADS".to_string(), "3".to_string())],
            &AtlasdFlags {
                worker_threads: Some(2),
                ..AtlasdFlags::default()
            },
        )
        .unwrap();
        assert_eq!(c.worker_threads, 2, "the flag wins");
        let e = AtlasdConfig::load(
            None,
            std::iter::empty(),
            &AtlasdFlags {
                worker_threads: Some(0),
                ..AtlasdFlags::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.key, "worker_threads");
        let c = AtlasdConfig::load(
            None,
            [(
                "HELIOS_ATLASD_SHUTDOWN_GRACE_MS".to_string(),
                "250".to_string(),
            )],
            &AtlasdFlags::default(),
        )
        .unwrap();
        assert_eq!(c.shutdown_grace_ms, 250);
        let e = AtlasdConfig::load(
            None,
            [(
                "HELIOS_ATLASD_SHUTDOWN_GRACE_MS".to_string(),
                "900000".to_string(),
            )],
            &AtlasdFlags::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "shutdown_grace_ms");
    }
}
