//! Configuration of a worker: [`WorkerSettings`] (the gateway to claim from, claim and
//! drain settings, and the service map: queue -> connector, target and limits), used by
//! `helios-worker` (its `worker` section) and by the gateway (its `workers` section, the
//! runtime in its own process). [`WorkerBinConfig`] is the binary's whole file, layered as
//! every binary's ([`crate::app::config`]): defaults <- YAML <- `HELIOS_WORKER__*`,
//! `HELIOS_LOG__*` and `HELIOS_TELEMETRY__*` <- flags. The quick start's flags (`--queue --connector --target
//! --concurrency`) replace the file's services with one.
//!
//! The service map is checked before anything starts ([`build_services`]): an unknown
//! connector, a bad target or an out-of-range limit fails naming its key
//! (`worker.services.emails.target`).

use super::connector::{ConnectorSpec, Connectors};
use super::runtime::{Service, Settings};
use crate::app::config::{EnvLayer, Layered, err};
use crate::config::{ConfigError, LogSection};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// One queue's service: which connector does its jobs, where, and within what limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The connector's name: `http`, `command`, `noop`, or one registered by the program.
    pub connector: String,
    /// `http`: the URL jobs are POSTed to; `command`: the program to run.
    #[serde(default)]
    pub target: String,
    /// `command`: the program's arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Jobs of this queue claimed and unsettled at once, at most (1..=10000).
    #[serde(default = "d_concurrency")]
    pub concurrency: usize,
    /// How long one attempt may take, ms.
    #[serde(default = "d_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts allowed by this worker (0: the job's own `max_attempts`); a failure on
    /// the last one dead-letters the job.
    #[serde(default)]
    pub max_attempts: u32,
    /// The first retry waits up to this, ms (full jitter, doubling per attempt).
    #[serde(default = "d_backoff_base_ms")]
    pub backoff_base_ms: u64,
    /// The longest retry wait, ms.
    #[serde(default = "d_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// The most bytes of a service's answer or a program's output kept.
    #[serde(default = "d_output_max_bytes")]
    pub output_max_bytes: usize,
    /// `command`: exit statuses that fail a job for good (default 64 and 65: sysexits'
    /// EX_USAGE and EX_DATAERR); others are retried.
    #[serde(default = "d_permanent_exit_codes")]
    pub permanent_exit_codes: Vec<i32>,
}

fn d_concurrency() -> usize {
    16
}
fn d_timeout_ms() -> u64 {
    30_000
}
fn d_backoff_base_ms() -> u64 {
    1_000
}
fn d_backoff_max_ms() -> u64 {
    300_000
}
fn d_output_max_bytes() -> usize {
    1 << 20
}
fn d_permanent_exit_codes() -> Vec<i32> {
    vec![64, 65]
}

impl ServiceSpec {
    /// A service with the defaults.
    pub fn new(connector: &str, target: &str) -> Self {
        ServiceSpec {
            connector: connector.to_owned(),
            target: target.to_owned(),
            args: Vec::new(),
            concurrency: d_concurrency(),
            timeout_ms: d_timeout_ms(),
            max_attempts: 0,
            backoff_base_ms: d_backoff_base_ms(),
            backoff_max_ms: d_backoff_max_ms(),
            output_max_bytes: d_output_max_bytes(),
            permanent_exit_codes: d_permanent_exit_codes(),
        }
    }
}

/// How a worker claims and drains, and what it serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// The gateway to claim from (`helios-worker`; the gateway's own `workers` section
    /// claims from its process's queue and leaves this unused).
    pub gateway: String,
    /// The worker's id in the registry (empty: `{host}-{pid}-{random}`).
    pub id: String,
    /// The most jobs claimed in one request (1..=1000).
    pub batch_max: usize,
    /// The lease asked for per claim, ms (heartbeats extend it while a job runs).
    pub lease_ms: u64,
    /// How long a claim waits for work, ms (long poll; whole seconds over HTTP).
    pub poll_wait_ms: u64,
    /// At SIGTERM, how long jobs in flight may finish, ms; the rest are released.
    pub drain_timeout_ms: u64,
    /// The registry record's lifetime, ms (refreshed every third of it).
    pub registry_ttl_ms: u64,
    /// Queue name -> its service.
    pub services: BTreeMap<String, ServiceSpec>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            gateway: "http://127.0.0.1:8080".to_owned(),
            id: String::new(),
            batch_max: 64,
            lease_ms: 30_000,
            poll_wait_ms: 2_000,
            drain_timeout_ms: 30_000,
            registry_ttl_ms: 15_000,
            services: BTreeMap::new(),
        }
    }
}

impl WorkerSettings {
    /// Checks ranges; `section` is the settings' key (`worker`, `workers`).
    pub fn check(&self, section: &str) -> Result<(), ConfigError> {
        let range = |key: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(err(
                    format!("{section}.{key}"),
                    format!("{v} is outside {lo}..={hi}"),
                ))
            }
        };
        range("batch_max", self.batch_max as u64, 1, 1000)?;
        range("lease_ms", self.lease_ms, 1_000, 3_600_000)?;
        range("poll_wait_ms", self.poll_wait_ms, 100, 60_000)?;
        range("drain_timeout_ms", self.drain_timeout_ms, 0, 3_600_000)?;
        range("registry_ttl_ms", self.registry_ttl_ms, 1_000, 3_600_000)?;
        if !self.id.is_empty() {
            helios_queue::validate_id("id", &self.id)
                .map_err(|e| err(format!("{section}.id"), e.to_string()))?;
        }
        for (queue, s) in &self.services {
            let key = |k: &str| format!("{section}.services.{queue}.{k}");
            helios_queue::validate_queue_name(queue)
                .map_err(|e| err(format!("{section}.services.{queue}"), e.to_string()))?;
            let r = |k: &str, v: u64, lo: u64, hi: u64| {
                if (lo..=hi).contains(&v) {
                    Ok(())
                } else {
                    Err(err(key(k), format!("{v} is outside {lo}..={hi}")))
                }
            };
            r("concurrency", s.concurrency as u64, 1, 10_000)?;
            r("timeout_ms", s.timeout_ms, 1, 86_400_000)?;
            r("backoff_max_ms", s.backoff_max_ms, 0, 86_400_000)?;
            r("backoff_base_ms", s.backoff_base_ms, 0, s.backoff_max_ms)?;
            r("output_max_bytes", s.output_max_bytes as u64, 1, 64 << 20)?;
            r("max_attempts", u64::from(s.max_attempts), 0, 1000)?;
        }
        Ok(())
    }

    /// The runtime's settings (`version`, `host`, and an id when none is set, from the
    /// caller).
    pub fn runtime_settings(&self, version: &str, host: &str, random: u64) -> Settings {
        let id = if self.id.is_empty() {
            format!(
                "{}-{}-{:06x}",
                host_id(host),
                std::process::id(),
                random & 0xff_ffff
            )
        } else {
            self.id.clone()
        };
        Settings {
            worker_id: id,
            lease: Duration::from_millis(self.lease_ms),
            poll_wait: Duration::from_millis(self.poll_wait_ms),
            batch_max: self.batch_max,
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
            registry_ttl: Duration::from_millis(self.registry_ttl_ms),
            version: version.to_owned(),
            host: host.to_owned(),
        }
    }
}

/// A host name cut to what a worker id may hold.
fn host_id(host: &str) -> String {
    let s: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    if s.is_empty() { "worker".to_owned() } else { s }
}

/// This machine's host name (for the registry), or `unknown`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The services of `settings` with their connectors built from `connectors`; the first
/// that does not build fails naming its key (`{section}.services.{queue}.connector` or
/// `.target`). No service at all is an error too.
pub fn build_services(
    settings: &WorkerSettings,
    section: &str,
    connectors: &Connectors,
) -> Result<Vec<Service>, ConfigError> {
    if settings.services.is_empty() {
        return Err(err(
            format!("{section}.services"),
            "no queue to serve: give --queue, --connector and --target, or a services map",
        ));
    }
    let mut out = Vec::with_capacity(settings.services.len());
    for (queue, s) in &settings.services {
        let key = |k: &str| format!("{section}.services.{queue}.{k}");
        if !connectors.names().contains(&s.connector.as_str()) {
            return Err(err(
                key("connector"),
                format!(
                    "unknown connector {:?} (known: {})",
                    s.connector,
                    connectors.names().join(", ")
                ),
            ));
        }
        let spec = ConnectorSpec {
            queue: queue.clone(),
            target: s.target.clone(),
            args: s.args.clone(),
            timeout: Duration::from_millis(s.timeout_ms),
            output_max_bytes: s.output_max_bytes,
            permanent_exit_codes: s.permanent_exit_codes.clone(),
        };
        let connector = connectors
            .build(&s.connector, &spec)
            .map_err(|e| err(key("target"), e))?;
        out.push(Service {
            queue: queue.clone(),
            connector,
            concurrency: s.concurrency,
            timeout: spec.timeout,
            max_attempts: s.max_attempts,
            backoff_base: Duration::from_millis(s.backoff_base_ms),
            backoff_max: Duration::from_millis(s.backoff_max_ms),
        });
    }
    Ok(out)
}

/// The binary's whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerBinConfig {
    /// Logging.
    pub log: LogSection,
    /// An address for `GET /metrics` (empty: none).
    pub metrics_listen: String,
    /// Runtime threads (0: one per core).
    pub threads: usize,
    /// The worker.
    pub worker: WorkerSettings,
    /// OTLP trace export (`app::telemetry`; off by default, needs the `otel` feature).
    pub telemetry: crate::app::telemetry::TelemetrySection,
}

impl Default for WorkerBinConfig {
    fn default() -> Self {
        WorkerBinConfig {
            log: LogSection::new("auto", "info"),
            metrics_listen: String::new(),
            threads: 0,
            worker: WorkerSettings::default(),
            telemetry: crate::app::telemetry::TelemetrySection::for_service("helios-worker"),
        }
    }
}

impl Layered for WorkerBinConfig {
    fn check(&self) -> Result<(), ConfigError> {
        self.telemetry.check("telemetry")?;
        if self.threads > 1024 {
            return Err(err(
                "threads",
                format!("{} is outside 0..=1024", self.threads),
            ));
        }
        if !self.metrics_listen.is_empty()
            && self.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(err(
                "metrics_listen",
                format!("{:?} is not HOST:PORT", self.metrics_listen),
            ));
        }
        match self.worker.gateway.parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.host().is_some() => {}
            _ => {
                return Err(err(
                    "worker.gateway",
                    format!("{:?} is not an http://host:port URL", self.worker.gateway),
                ));
            }
        }
        self.worker.check("worker")
    }
}

/// The flags that override the file (already parsed by clap).
#[derive(Debug, Clone, Default)]
pub struct WorkerFlags {
    /// `--gateway URL`.
    pub gateway: Option<String>,
    /// `--queue NAME`: the quick start's one service (with `--connector`, `--target`).
    pub queue: Option<String>,
    /// `--connector NAME`.
    pub connector: Option<String>,
    /// `--target URL|PROGRAM`.
    pub target: Option<String>,
    /// `--concurrency N`.
    pub concurrency: Option<usize>,
    /// `--id ID`.
    pub id: Option<String>,
    /// `--threads N`.
    pub threads: Option<usize>,
    /// `--metrics-listen HOST:PORT`.
    pub metrics_listen: Option<String>,
}

impl WorkerBinConfig {
    /// Loads: defaults <- `file` <- `HELIOS_WORKER__*`/`HELIOS_LOG__*`/
    /// `HELIOS_TELEMETRY__*` in `env` <- `flags`, then checks. `--queue` replaces the file's services with one.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &WorkerFlags,
    ) -> Result<Self, ConfigError> {
        let quick = match (&flags.queue, &flags.connector) {
            (Some(q), Some(c)) => {
                let mut s = ServiceSpec::new(c, flags.target.as_deref().unwrap_or(""));
                if let Some(n) = flags.concurrency {
                    s.concurrency = n;
                }
                Some((q.clone(), s))
            }
            (Some(_), None) => {
                return Err(err(
                    "--connector",
                    "missing: --queue needs --connector (http, command or noop)",
                ));
            }
            (None, _) if flags.connector.is_some() || flags.target.is_some() => {
                return Err(err(
                    "--queue",
                    "missing: --connector and --target need --queue",
                ));
            }
            (None, _) if flags.concurrency.is_some() => {
                return Err(err(
                    "--concurrency",
                    "applies to the quick start's queue: give --queue too (services in a \
                     config file name their own)",
                ));
            }
            (None, _) => None,
        };
        crate::app::config::load(
            file,
            env,
            &EnvLayer {
                prefix: "HELIOS_",
                // The worker's section and logging (`threads` and `metrics_listen` come
                // from the file or flags); other binaries' variables may be set in the
                // same shell, and HELIOS_WORKER_TOKEN & co. are credentials, read apart.
                skip: &|k| {
                    !(k.starts_with("WORKER__")
                        || k.starts_with("LOG__")
                        || k.starts_with("TELEMETRY__"))
                },
                verbatim: &|_| false,
            },
            |tree| {
                if let Some((q, s)) = &quick {
                    let mut m = serde_json::Map::new();
                    m.insert(q.clone(), serde_json::to_value(s).unwrap_or(Value::Null));
                    tree["worker"]["services"] = Value::Object(m);
                }
                if let Some(g) = &flags.gateway {
                    tree["worker"]["gateway"] = Value::String(g.clone());
                }
                if let Some(i) = &flags.id {
                    tree["worker"]["id"] = Value::String(i.clone());
                }
                if let Some(n) = flags.threads {
                    tree["threads"] = Value::from(n);
                }
                if let Some(m) = &flags.metrics_listen {
                    tree["metrics_listen"] = Value::String(m.clone());
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_quick_start_needs_no_file() {
        let flags = WorkerFlags {
            gateway: Some("http://127.0.0.1:8080".into()),
            queue: Some("emails".into()),
            connector: Some("http".into()),
            target: Some("http://127.0.0.1:9000/hook".into()),
            concurrency: Some(50),
            ..WorkerFlags::default()
        };
        let c = WorkerBinConfig::load(None, env(&[("HELIOS_WORKER_TOKEN", "t")]), &flags).unwrap();
        let s = &c.worker.services["emails"];
        assert_eq!((s.connector.as_str(), s.concurrency), ("http", 50));
        let services = build_services(&c.worker, "worker", &Connectors::default()).unwrap();
        assert_eq!(services.len(), 1);
    }

    #[test]
    fn runtime_threads_over_1024_are_refused_naming_the_key() {
        let flags = |n| WorkerFlags {
            gateway: Some("http://127.0.0.1:8080".into()),
            queue: Some("emails".into()),
            connector: Some("noop".into()),
            threads: Some(n),
            ..WorkerFlags::default()
        };
        let tok = env(&[("HELIOS_WORKER_TOKEN", "t")]);
        let e = WorkerBinConfig::load(None, tok.clone(), &flags(1025)).unwrap_err();
        assert_eq!(e.key, "threads", "{e}");
        assert!(e.to_string().contains("0..=1024"), "{e}");
        let c = WorkerBinConfig::load(None, tok, &flags(1024)).unwrap();
        assert_eq!(c.threads, 1024);
    }

    #[test]
    fn the_shipped_config_loads_and_builds() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/worker.yaml");
        let c = WorkerBinConfig::load(Some(&path), env(&[]), &WorkerFlags::default()).unwrap();
        let d = WorkerSettings::default();
        // The file shows the defaults, and an example service map.
        assert_eq!(
            WorkerSettings {
                services: d.services.clone(),
                ..c.worker.clone()
            },
            d
        );
        assert_eq!(c.worker.services["emails"], {
            let mut s = ServiceSpec::new("http", "http://127.0.0.1:9000/hook");
            s.concurrency = 16;
            s
        });
        assert_eq!(
            build_services(&c.worker, "worker", &Connectors::default())
                .unwrap()
                .len(),
            2
        );
        // A variable reaches into the map.
        let c = WorkerBinConfig::load(
            Some(&path),
            env(&[("HELIOS_WORKER__SERVICES__EMAILS__CONCURRENCY", "7")]),
            &WorkerFlags::default(),
        )
        .unwrap();
        assert_eq!(c.worker.services["emails"].concurrency, 7);
    }

    #[test]
    fn a_bad_service_map_is_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.yaml");
        let load = |yaml: &str| {
            std::fs::write(&path, yaml).unwrap();
            WorkerBinConfig::load(Some(&path), env(&[]), &WorkerFlags::default())
                .and_then(|c| {
                    build_services(&c.worker, "worker", &Connectors::default()).map(|_| c)
                })
                .unwrap_err()
                .key
        };
        assert_eq!(
            load("worker:\n  services:\n    emails:\n      connector: smtp\n      target: x\n"),
            "worker.services.emails.connector"
        );
        assert_eq!(
            load(
                "worker:\n  services:\n    emails:\n      connector: http\n      target: not a url\n"
            ),
            "worker.services.emails.target"
        );
        assert_eq!(
            load("worker:\n  services:\n    emails:\n      connector: http\n"),
            "worker.services.emails.target"
        );
        assert!(
            load("worker:\n  services:\n    emails:\n      target: http://x/\n")
                .starts_with("worker.services.emails"),
        );
        assert_eq!(
            load(
                "worker:\n  services:\n    emails:\n      connector: noop\n      concurrency: 0\n"
            ),
            "worker.services.emails.concurrency"
        );
        assert_eq!(
            load("worker:\n  services:\n    emails:\n      connector: noop\n      colour: red\n"),
            "worker.services.emails.colour"
        );
        assert_eq!(load("worker:\n  services: {}\n"), "worker.services");
        assert_eq!(load("worker:\n  gateway: ftp://x\n"), "worker.gateway");
        let e = WorkerBinConfig::load(
            None,
            env(&[("HELIOS_WORKER__LEASE_MS", "5")]),
            &WorkerFlags::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "worker.lease_ms");
        let e = WorkerBinConfig::load(
            None,
            env(&[]),
            &WorkerFlags {
                queue: Some("q".into()),
                ..WorkerFlags::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.key, "--connector");
    }
}
