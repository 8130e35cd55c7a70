//! Configuration of the binaries: one YAML file (`configs/default.yaml`), every key
//! overridable by a `HELIOS_*` environment variable and by flags, in that order.
//!
//! Layering works on a JSON tree: the built-in defaults, then the file, then the
//! environment (`HELIOS_AUTH__REGISTRATION_OPEN=false` sets `auth.registration_open`: `__`
//! separates levels, names are lowercased), then flags. A key that the defaults do not have
//! fails with its dotted path; a value of the wrong type fails naming the key; then
//! [`GatewayConfig::validate`] checks ranges. Booleans are strict (`yes` is not `true`). The
//! layering is the runner's ([`crate::app::config`]), shared by every binary.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

pub use crate::app::config::ConfigError;
use crate::app::config::{EnvLayer, Layered, err};

/// HTTP limits and timeouts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest request body, bytes (413 past it).
    pub body_size_max: u64,
    /// Time to receive a request head, ms (slowloris guard).
    pub header_read_timeout_ms: u64,
    /// Time to receive a request body, ms.
    pub body_read_timeout_ms: u64,
    /// Time for a handler to answer, ms (503 past it).
    pub request_timeout_ms: u64,
    /// Most open connections; more wait in the accept queue.
    pub connections_max: usize,
    /// Most open connections from one client address (an IPv6 /64 counts as one); a
    /// connection past it is closed at once, so one address cannot take the others'
    /// share of `connections_max`.
    pub connections_per_address_max: usize,
    /// Most concurrent HTTP/2 streams per connection.
    pub http2_streams_max: u32,
    /// Bytes of request bodies being read at once, over all connections (each body
    /// reserves its declared length, else `body_size_max`); past it a request waits up to
    /// a second, then gets 503.
    pub body_bytes_in_flight_max: u64,
    /// A connection with no request in progress for this long is closed, ms, counted
    /// from its last request's end (or its start), not from its last byte: idle
    /// keep-alive, a socket that never sends anything, or one that trickles a request
    /// head (HTTP/2 included) slowly enough to dodge a byte-based timeout.
    pub idle_timeout_ms: u64,
    /// Grace for in-flight requests at shutdown, ms.
    pub shutdown_grace_ms: u64,
}

/// Authentication settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Whether anyone may register.
    pub registration_open: bool,
    /// bcrypt cost.
    pub bcrypt_cost: u32,
    /// HS256 secret; empty: a random one is made on first start and kept in the data
    /// directory (`gateway.secret`).
    pub jwt_secret: String,
    /// Token issuer.
    pub issuer: String,
    /// Token audience.
    pub audience: String,
    /// Access-token lifetime, s.
    pub access_ttl_s: u64,
    /// Refresh-token lifetime, s.
    pub refresh_ttl_s: u64,
}

/// Per-client rate limits (the default bucket).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    /// Burst size.
    pub capacity: u64,
    /// Tokens added per second.
    pub refill_per_s: u64,
}

/// The job queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSection {
    /// Most pending + in-progress jobs per queue; an enqueue past it gets 429 with
    /// `Retry-After`.
    pub depth_max: u64,
}

/// TLS for the API listener: off unless both files are set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM file with the certificate chain, leaf first (empty: TLS off).
    pub cert_file: String,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
}

impl TlsSection {
    /// Whether TLS is on.
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `json`, `pretty` or `auto` (pretty on a terminal).
    pub format: String,
    /// Default filter (`RUST_LOG` wins when set).
    pub level: String,
    /// Lines queued for the log thread before further ones are dropped and counted
    /// (`helios_log_lines_dropped_total`): 1 to 1,048,576 (default 16,384).
    #[serde(default = "default_queue_lines", deserialize_with = "queue_lines")]
    pub queue_lines: usize,
}

impl LogSection {
    /// `format` and `level` with the default queue.
    pub fn new(format: &str, level: &str) -> Self {
        LogSection {
            format: format.to_owned(),
            level: level.to_owned(),
            queue_lines: default_queue_lines(),
        }
    }
}

fn default_queue_lines() -> usize {
    crate::app::logs::LINES_QUEUED_MAX
}

/// The log queue's size: 1 to 1,048,576 lines.
fn queue_lines<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if (1..=1 << 20).contains(&n) {
        Ok(n)
    } else {
        Err(serde::de::Error::custom(format!(
            "{n} lines: must be 1 to 1048576"
        )))
    }
}

/// The audit log of security events (`app::audit`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// Whether security events are written.
    pub enabled: bool,
    /// The file (created with mode 0600; its directory created if missing). Empty:
    /// `audit/audit.log` inside `data_dir`, so the events live on the data's volume.
    pub path: PathBuf,
    /// Rotate past this size, bytes (at least 4096).
    pub max_bytes: u64,
    /// Rotated files kept (`path.1` .. `path.N`; at most 1000).
    pub keep: u32,
}

impl AuditSection {
    /// The file written: `path`, or `audit/audit.log` inside `data_dir` when empty.
    pub fn file(&self, data_dir: &Path) -> PathBuf {
        if self.path.as_os_str().is_empty() {
            data_dir.join("audit").join("audit.log")
        } else {
            self.path.clone()
        }
    }
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            enabled: true,
            path: PathBuf::new(),
            max_bytes: 16 * 1024 * 1024,
            keep: 5,
        }
    }
}

/// The gateway's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address to serve the API on.
    pub listen: String,
    /// A separate address for `GET /metrics` (empty: served on `listen`). When set, the
    /// API listener answers 404 for `/metrics`, so scrapes can stay on an internal
    /// interface.
    pub metrics_listen: String,
    /// ATLAS data directory.
    pub data_dir: PathBuf,
    /// Where `POST /admin/backup` writes backups, one directory each. Neither inside
    /// `data_dir` nor holding it, as paths after `.` and `..` are resolved (`validate`
    /// refuses both; symbolic links are not followed).
    pub backup_dir: PathBuf,
    /// `always`, `everysec` or `no`.
    pub appendfsync: String,
    /// Under `everysec`: no write is acknowledged while the last successful fsync started
    /// more than this long ago, ms (at least 1000); such a write waits for an fsync first.
    /// ATLAS's `Options::everysec_lag_max_ms` (docs/durability.md).
    pub everysec_lag_max_ms: u64,
    /// Runtime threads (0: one per core, at most 1024). See docs/runbook.md ("Gateway
    /// threads") before setting 1.
    pub threads: usize,
    /// HTTP limits.
    pub http: HttpConfig,
    /// TLS (rustls) for the API listener.
    pub tls: TlsSection,
    /// Authentication.
    pub auth: AuthSection,
    /// Rate limits.
    pub rate_limit: RateLimitSection,
    /// The job queue.
    pub queue: QueueSection,
    /// Logs.
    pub log: LogSection,
    /// The audit log of security events.
    pub audit: AuditSection,
    /// OTLP trace export (`app::telemetry`; off by default, needs the `otel` feature).
    pub telemetry: crate::app::telemetry::TelemetrySection,
    /// A reverse proxy in the gateway's process, its routes and backends those of
    /// `/admin/proxy/*` read from the store (off by default).
    pub embedded_proxy: crate::proxy::embedded::EmbeddedProxySection,
    /// A worker runtime in the gateway's process, claiming from its queue with no HTTP
    /// hop (off while `services` is empty; `gateway` and the credentials are not used).
    pub workers: crate::worker::config::WorkerSettings,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            metrics_listen: String::new(),
            data_dir: PathBuf::from("data"),
            backup_dir: PathBuf::from("backups"),
            appendfsync: "everysec".into(),
            everysec_lag_max_ms: 2000,
            threads: 0,
            http: HttpConfig {
                body_size_max: 1024 * 1024,
                header_read_timeout_ms: 10_000,
                body_read_timeout_ms: 30_000,
                request_timeout_ms: 30_000,
                connections_max: 10_000,
                connections_per_address_max: 256,
                http2_streams_max: 100,
                body_bytes_in_flight_max: 64 * 1024 * 1024,
                idle_timeout_ms: 60_000,
                shutdown_grace_ms: 10_000,
            },
            tls: TlsSection::default(),
            auth: AuthSection {
                registration_open: true,
                bcrypt_cost: 12,
                jwt_secret: String::new(),
                issuer: "helios".into(),
                audience: "helios-api".into(),
                access_ttl_s: 900,
                refresh_ttl_s: 30 * 24 * 3600,
            },
            rate_limit: RateLimitSection {
                capacity: 100,
                refill_per_s: 50,
            },
            queue: QueueSection {
                depth_max: 1_000_000,
            },
            log: LogSection::new("auto", "info"),
            audit: AuditSection::default(),
            telemetry: crate::app::telemetry::TelemetrySection::for_service("helios-gateway"),
            embedded_proxy: crate::proxy::embedded::EmbeddedProxySection::default(),
            workers: crate::worker::config::WorkerSettings::default(),
        }
    }
}

/// Flag overrides (already parsed by clap).
#[derive(Debug, Clone, Default)]
pub struct FlagOverrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--appendfsync`.
    pub appendfsync: Option<String>,
    /// `--threads`.
    pub threads: Option<usize>,
}

impl Layered for GatewayConfig {
    fn check(&self) -> Result<(), ConfigError> {
        self.telemetry.check("telemetry")?;
        self.validate()
    }
}

impl GatewayConfig {
    /// Loads: defaults <- `file` <- `HELIOS_*` variables in `env` <- `flags`, then checks.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &FlagOverrides,
    ) -> Result<Self, ConfigError> {
        crate::app::config::load(
            file,
            env,
            &EnvLayer {
                prefix: "HELIOS_",
                // Variables the binaries read directly, the `helios` CLI's (a shell set up
                // for the CLI must still start a gateway), and helios-atlasd's own.
                skip: &|k| {
                    matches!(
                        k,
                        "ADMIN_PASSWORD"
                            | "SEED"
                            | "URL"
                            | "TOKEN_FILE"
                            | "PASSWORD"
                            | "NEW_PASSWORD"
                    ) || k.starts_with("ATLASD_")
                        // helios-proxy's own (its section, its credentials); the gateway's
                        // proxy is `embedded_proxy`.
                        || k.starts_with("PROXY_")
                        // helios-worker's (its section, its credentials); the gateway's
                        // runtime is `workers`.
                        || k.starts_with("WORKER_")
                },
                verbatim: &|_| false,
            },
            |tree| {
                if let Some(l) = &flags.listen {
                    tree["listen"] = Value::String(l.clone());
                }
                if let Some(d) = &flags.data_dir {
                    tree["data_dir"] = Value::String(d.display().to_string());
                }
                if let Some(a) = &flags.appendfsync {
                    tree["appendfsync"] = Value::String(a.clone());
                }
                if let Some(n) = flags.threads {
                    tree["threads"] = Value::from(n);
                }
            },
        )
    }

    /// Checks ranges and formats, naming the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(err("listen", format!("{:?} is not HOST:PORT", self.listen)));
        }
        if self.threads > 1024 {
            return Err(err(
                "threads",
                format!("{} is outside 0..=1024", self.threads),
            ));
        }
        if !self.workers.services.is_empty() {
            self.workers.check("workers")?;
            crate::worker::config::build_services(
                &self.workers,
                "workers",
                &crate::worker::Connectors::default(),
            )?;
        }
        if let Err((field, reason)) = self.embedded_proxy.check() {
            return Err(err(format!("embedded_proxy.{field}"), reason));
        }
        if self.embedded_proxy.enabled
            && (self.embedded_proxy.listen == self.listen
                || self.embedded_proxy.listen == self.metrics_listen)
        {
            return Err(err(
                "embedded_proxy.listen",
                format!(
                    "{} is the API's or the metrics' address",
                    self.embedded_proxy.listen
                ),
            ));
        }
        if self.backup_dir.as_os_str().is_empty() {
            return Err(err("backup_dir", "a directory of its own (not empty)"));
        }
        if self.audit.max_bytes < 4096 {
            return Err(err(
                "audit.max_bytes",
                format!("{} is under 4096", self.audit.max_bytes),
            ));
        }
        if self.audit.keep > 1000 {
            return Err(err(
                "audit.keep",
                format!("{} is over 1000", self.audit.keep),
            ));
        }
        // Apart, as paths: a backup inside the data directory would be copied into the
        // next backup, and a data directory inside the backups could be overwritten by a
        // restore or taken for a backup.
        let (data, backups) = (lexical_path(&self.data_dir), lexical_path(&self.backup_dir));
        if backups.starts_with(&data) {
            return Err(err(
                "backup_dir",
                format!(
                    "{} is data_dir {} or inside it; pick a directory of its own",
                    self.backup_dir.display(),
                    self.data_dir.display()
                ),
            ));
        }
        if data.starts_with(&backups) {
            return Err(err(
                "backup_dir",
                format!(
                    "{} holds data_dir {}; pick a directory of its own",
                    self.backup_dir.display(),
                    self.data_dir.display()
                ),
            ));
        }
        if !self.metrics_listen.is_empty()
            && self.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(err(
                "metrics_listen",
                format!("{:?} is not HOST:PORT (or empty)", self.metrics_listen),
            ));
        }
        if self.tls.cert_file.is_empty() != self.tls.key_file.is_empty() {
            let missing = if self.tls.cert_file.is_empty() {
                "tls.cert_file"
            } else {
                "tls.key_file"
            };
            return Err(err(
                missing,
                "TLS needs both cert_file and key_file (or neither)",
            ));
        }
        if !matches!(self.appendfsync.as_str(), "always" | "everysec" | "no") {
            return Err(err("appendfsync", "one of always, everysec, no"));
        }
        if !(1000..=3_600_000).contains(&self.everysec_lag_max_ms) {
            return Err(err("everysec_lag_max_ms", "1000..=3600000 ms"));
        }
        if self.http.body_size_max == 0 || self.http.body_size_max > 256 * 1024 * 1024 {
            return Err(err("http.body_size_max", "1..=268435456"));
        }
        for (k, v) in [
            (
                "http.header_read_timeout_ms",
                self.http.header_read_timeout_ms,
            ),
            ("http.body_read_timeout_ms", self.http.body_read_timeout_ms),
            ("http.request_timeout_ms", self.http.request_timeout_ms),
            ("http.shutdown_grace_ms", self.http.shutdown_grace_ms),
            ("http.idle_timeout_ms", self.http.idle_timeout_ms),
        ] {
            if v == 0 || v > 3_600_000 {
                return Err(err(k, "1..=3600000 ms"));
            }
        }
        if self.http.connections_max == 0 {
            return Err(err("http.connections_max", "at least 1"));
        }
        if self.http.connections_per_address_max == 0 {
            return Err(err("http.connections_per_address_max", "at least 1"));
        }
        if self.http.http2_streams_max == 0 {
            return Err(err("http.http2_streams_max", "at least 1"));
        }
        if self.http.body_bytes_in_flight_max < self.http.body_size_max
            || self.http.body_bytes_in_flight_max > u64::from(u32::MAX)
        {
            return Err(err(
                "http.body_bytes_in_flight_max",
                "at least http.body_size_max, at most 4294967295",
            ));
        }
        if !(4..=31).contains(&self.auth.bcrypt_cost) {
            return Err(err("auth.bcrypt_cost", "4..=31"));
        }
        if !self.auth.jwt_secret.is_empty() && self.auth.jwt_secret.len() < 32 {
            return Err(err(
                "auth.jwt_secret",
                "at least 32 bytes (or empty: generated)",
            ));
        }
        if self.rate_limit.capacity == 0 || self.rate_limit.refill_per_s == 0 {
            return Err(err(
                "rate_limit",
                "capacity and refill_per_s must be positive",
            ));
        }
        if self.queue.depth_max == 0 {
            return Err(err("queue.depth_max", "at least 1"));
        }
        if !matches!(self.log.format.as_str(), "json" | "pretty" | "auto") {
            return Err(err("log.format", "one of json, pretty, auto"));
        }
        Ok(())
    }
}

/// `path` made absolute (against the current directory) and with `.` and `..` resolved
/// lexically: no file system access beyond the current directory's name, so the path
/// need not exist (symbolic links are not followed: two names of one directory through
/// a link are not caught).
fn lexical_path(path: &Path) -> PathBuf {
    use std::path::Component;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                // `..` of the root is the root; of a relative start (no current directory
                // known), kept.
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else if !out.has_root() {
                    out.push(c);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str, env: &[(&str, &str)]) -> Result<GatewayConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, yaml).unwrap();
        GatewayConfig::load(
            Some(&f),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            &FlagOverrides::default(),
        )
    }

    #[test]
    fn the_gateway_ignores_atlasd_and_cli_variables() {
        let c = load(
            "listen: 127.0.0.1:9000\n",
            &[
                ("HELIOS_ATLASD_REQUIREPASS", "x"),
                ("HELIOS_ADMIN_PASSWORD", "y"),
                ("HELIOS_URL", "http://127.0.0.1:8080"),
                ("HELIOS_TOKEN_FILE", "/tmp/token"),
                ("HELIOS_PASSWORD", "p"),
                ("HELIOS_NEW_PASSWORD", "p"),
                ("HELIOS_QUEUE__DEPTH_MAX", "7"),
                // helios-proxy's, set in the same shell.
                ("HELIOS_PROXY__TIMEOUTS__CONNECT_MS", "5"),
                ("HELIOS_PROXY_TOKEN", "t"),
                ("HELIOS_EMBEDDED_PROXY__ENABLED", "true"),
            ],
        )
        .unwrap();
        assert_eq!(c.queue.depth_max, 7);
        assert!(c.embedded_proxy.enabled);
        assert_eq!(c.embedded_proxy.timeouts.connect_ms, 2_000);
        let e = load("", &[("HELIOS_NOPE", "1")]).unwrap_err();
        assert_eq!(e.key, "nope (from HELIOS_NOPE)");
    }

    #[test]
    fn layering_file_env_flags() {
        let c = load(
            "listen: 127.0.0.1:9000\nauth:\n  bcrypt_cost: 10\n",
            &[
                ("HELIOS_AUTH__REGISTRATION_OPEN", "false"),
                ("HELIOS_HTTP__CONNECTIONS_MAX", "5"),
                ("OTHER", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000");
        assert_eq!(c.auth.bcrypt_cost, 10);
        assert!(!c.auth.registration_open);
        assert_eq!(c.http.connections_max, 5);
        let c = GatewayConfig::load(
            None,
            [("HELIOS_LISTEN".to_string(), "127.0.0.1:1".to_string())],
            &FlagOverrides {
                listen: Some("127.0.0.1:2".into()),
                ..FlagOverrides::default()
            },
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:2", "flags win");
        let c = GatewayConfig::load(
            None,
            [("HELIOS_THREADS".to_string(), "4".to_string())],
            &FlagOverrides::default(),
        )
        .unwrap();
        assert_eq!(c.threads, 4);
        let c = GatewayConfig::load(
            None,
            [("HELIOS_THREADS".to_string(), "4".to_string())],
            &FlagOverrides {
                threads: Some(1),
                ..FlagOverrides::default()
            },
        )
        .unwrap();
        assert_eq!(c.threads, 1, "flags win");
    }

    #[test]
    fn bad_config_names_the_key() {
        let e = load("auth:\n  bcrypt_cots: 4\n", &[]).unwrap_err();
        assert_eq!(e.key, "auth.bcrypt_cots");
        let e = load("appendfsync: sometimes\n", &[]).unwrap_err();
        assert_eq!(e.key, "appendfsync");
        let e = load("auth:\n  registration_open: yes\n", &[]).unwrap_err();
        assert_eq!(e.key, "auth.registration_open", "{e}");
        let e = load("", &[("HELIOS_HTTP__CONNECTIONS_MAX", "many")]).unwrap_err();
        assert_eq!(e.key, "http.connections_max", "{e}");
        let e = load("", &[("HELIOS_NOPE", "1")]).unwrap_err();
        assert!(e.key.starts_with("nope"), "{e}");
        let e = load("listen: nowhere\n", &[]).unwrap_err();
        assert_eq!(e.key, "listen");
        for bad in ["0", "1048577"] {
            let e = load("", &[("HELIOS_LOG__QUEUE_LINES", bad)]).unwrap_err();
            assert_eq!(e.key, "log.queue_lines", "{e}");
            assert!(e.to_string().contains("1 to 1048576"), "{e}");
        }
        let c = load("", &[("HELIOS_LOG__QUEUE_LINES", "64")]).unwrap();
        assert_eq!(c.log.queue_lines, 64);
        let e = load("everysec_lag_max_ms: 500\n", &[]).unwrap_err();
        assert_eq!(e.key, "everysec_lag_max_ms", "{e}");
        let c = load("", &[("HELIOS_EVERYSEC_LAG_MAX_MS", "5000")]).unwrap();
        assert_eq!(c.everysec_lag_max_ms, 5000);
        let e = load("threads: 1025\n", &[]).unwrap_err();
        assert_eq!(e.key, "threads", "{e}");
        assert!(e.to_string().contains("0..=1024"), "{e}");
        let e = load("threads: -1\n", &[]).unwrap_err();
        assert_eq!(e.key, "threads", "{e}");
    }

    #[test]
    fn backup_dir_and_data_dir_are_apart_as_paths() {
        // Inside data_dir, however spelled; data_dir inside backup_dir; the same
        // directory. None of them need exist.
        for (data, backups) in [
            ("data", "data/backups"),
            ("data", "./data/./backups"),
            ("/srv/h/data", "/srv/h/data/../data/b"),
            ("/srv/h/data", "/srv/h/x/../data"),
            ("data", "data/"),
            ("/srv/h/backups/data", "/srv/h/backups"),
            ("backups/../b/data", "b"),
        ] {
            let e = load(&format!("data_dir: {data}\nbackup_dir: {backups}\n"), &[])
                .expect_err(&format!("{data} {backups}"));
            assert_eq!(e.key, "backup_dir", "{data} {backups}: {e}");
        }
        // Apart, including names that only share a prefix of characters.
        for (data, backups) in [
            ("data", "backups"),
            ("data", "data-backups"),
            ("/srv/h/data", "/srv/h/data2/b"),
            ("/srv/h/data", "/srv/h/data/../backups"),
        ] {
            let c = load(&format!("data_dir: {data}\nbackup_dir: {backups}\n"), &[])
                .unwrap_or_else(|e| panic!("{data} {backups}: {e}"));
            assert_eq!(c.backup_dir, PathBuf::from(backups));
        }
        assert_eq!(
            lexical_path(Path::new("/a/./b/../../c/..")),
            PathBuf::from("/")
        );
        assert_eq!(lexical_path(Path::new("/../x")), PathBuf::from("/x"));
    }
}

#[cfg(test)]
mod default_file {
    /// `configs/default.yaml` loads and equals the built-in defaults, so the file and the
    /// code cannot drift apart.
    #[test]
    fn default_yaml_matches_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/default.yaml");
        let c = super::GatewayConfig::load(Some(&path), std::iter::empty(), &Default::default())
            .unwrap();
        assert_eq!(c, super::GatewayConfig::default());
    }
}
