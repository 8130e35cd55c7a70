//! Configuration of `helios-proxy`: `log`, `metrics_listen`, `tls` and a `proxy` section
//! (the core's [`ProxyConfig`]: listen address, routes, backends, health, breakers,
//! retries, timeouts) and `telemetry` in a YAML file, then `HELIOS_PROXY__*`,
//! `HELIOS_LOG__*` and `HELIOS_TELEMETRY__*` variables
//! (`tls` is not read from variables: `HELIOS_TLS__*` is the gateway's), then flags, on
//! the runner's layering ([`crate::app::config`]). With no file and `--backend` flags, the
//! quick start builds the one route itself ([`ProxyConfig::quick`]).

use crate::app::config::{EnvLayer, Layered, err};
use crate::config::{ConfigError, LogSection, TlsSection};
use helios_proxy::ProxyConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// The binary's whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyBinConfig {
    /// Logging.
    pub log: LogSection,
    /// A separate address for `GET /metrics` (empty: none).
    pub metrics_listen: String,
    /// TLS termination for clients (`cert_file` empty: plain HTTP).
    pub tls: TlsSection,
    /// The proxy itself.
    pub proxy: ProxyConfig,
    /// OTLP trace export (`app::telemetry`; off by default, needs the `otel` feature).
    pub telemetry: crate::app::telemetry::TelemetrySection,
}

impl Default for ProxyBinConfig {
    fn default() -> Self {
        ProxyBinConfig {
            log: LogSection::new("auto", "info"),
            metrics_listen: String::new(),
            tls: TlsSection::default(),
            proxy: ProxyConfig::default(),
            telemetry: crate::app::telemetry::TelemetrySection::for_service("helios-proxy"),
        }
    }
}

impl Layered for ProxyBinConfig {
    fn check(&self) -> Result<(), ConfigError> {
        self.telemetry.check("telemetry")?;
        if !self.metrics_listen.is_empty()
            && self.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(err(
                "metrics_listen",
                format!("{:?} is not HOST:PORT", self.metrics_listen),
            ));
        }
        if let Err(e) = self.proxy.validate() {
            let (field, reason) = field_of(e);
            return Err(err(format!("proxy.{field}"), reason));
        }
        Ok(())
    }
}

/// The setting a core error names, and why.
fn field_of(e: helios_proxy::ProxyError) -> (&'static str, String) {
    match e {
        helios_proxy::ProxyError::Invalid { field, reason } => (field, reason),
        other => ("proxy", other.to_string()),
    }
}

/// The flags that override the file (already parsed by clap).
#[derive(Debug, Clone, Default)]
pub struct ProxyFlags {
    /// `--listen HOST:PORT`.
    pub listen: Option<String>,
    /// `--control URL`: the gateway whose change feed gives the routes.
    pub control: Option<String>,
    /// `--backend URL`, repeated: the quick start's one route over these backends.
    pub backends: Vec<String>,
    /// `--balance POLICY` (the quick start's route).
    pub balance: Option<String>,
    /// `--threads N`.
    pub threads: Option<usize>,
    /// `--metrics-listen HOST:PORT`.
    pub metrics_listen: Option<String>,
    /// `--tls-cert FILE`.
    pub tls_cert: Option<String>,
    /// `--tls-key FILE`.
    pub tls_key: Option<String>,
}

impl ProxyBinConfig {
    /// Loads: defaults <- `file` <- `HELIOS_PROXY__*`/`HELIOS_LOG__*`/`HELIOS_TELEMETRY__*`
    /// in `env` <- `flags`,
    /// then checks. `--backend` flags replace the file's routes and backends with the
    /// quick start's one route.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &ProxyFlags,
    ) -> Result<Self, ConfigError> {
        let quick = if flags.backends.is_empty() {
            None
        } else {
            let q = ProxyConfig::quick("127.0.0.1:0", &flags.backends, flags.balance.as_deref())
                .map_err(|e| {
                    let (field, reason) = field_of(e);
                    err(format!("--{}", field.trim_end_matches('s')), reason)
                })?;
            Some(q)
        };
        if flags.balance.is_some() && quick.is_none() {
            return Err(err(
                "--balance",
                "applies to the quick start's route: give --backend URL too (routes in a \
                 config file name their own balance)",
            ));
        }
        crate::app::config::load(
            file,
            env,
            &EnvLayer {
                prefix: "HELIOS_",
                // The proxy's own section and logging; every other binary's variables
                // may be set in the same shell.
                // (`tls` is set in the file or by flags: HELIOS_TLS__* is the gateway's.)
                skip: &|k| {
                    !(k.starts_with("PROXY__")
                        || k.starts_with("LOG__")
                        || k.starts_with("TELEMETRY__"))
                },
                verbatim: &|_| false,
            },
            |tree| {
                if let Some(q) = &quick {
                    tree["proxy"]["backends"] =
                        serde_json::to_value(&q.backends).unwrap_or(Value::Null);
                    tree["proxy"]["routes"] =
                        serde_json::to_value(&q.routes).unwrap_or(Value::Null);
                }
                if let Some(c) = &flags.control {
                    tree["proxy"]["control"] = Value::String(c.clone());
                }
                if let Some(l) = &flags.listen {
                    tree["proxy"]["listen"] = Value::String(l.clone());
                }
                if let Some(n) = flags.threads {
                    tree["proxy"]["threads"] = Value::from(n);
                }
                if let Some(m) = &flags.metrics_listen {
                    tree["metrics_listen"] = Value::String(m.clone());
                }
                if let Some(c) = &flags.tls_cert {
                    tree["tls"]["cert_file"] = Value::String(c.clone());
                }
                if let Some(k) = &flags.tls_key {
                    tree["tls"]["key_file"] = Value::String(k.clone());
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
        let flags = ProxyFlags {
            listen: Some("127.0.0.1:9999".into()),
            backends: vec![
                "http://127.0.0.1:9001".into(),
                "http://127.0.0.1:9002".into(),
            ],
            balance: Some("least-conn".into()),
            threads: Some(2),
            ..ProxyFlags::default()
        };
        let c = ProxyBinConfig::load(None, env(&[("HELIOS_LISTEN", "x")]), &flags).unwrap();
        assert_eq!(c.proxy.listen, "127.0.0.1:9999");
        assert_eq!(c.proxy.threads, 2);
        assert_eq!(c.proxy.backends.len(), 2);
        assert_eq!(c.proxy.routes.len(), 1);
        assert_eq!(c.proxy.routes[0].balance, "least-conn");
    }

    #[test]
    fn bad_settings_name_the_key() {
        let flags = ProxyFlags {
            backends: vec!["ftp://x".into()],
            ..ProxyFlags::default()
        };
        let e = ProxyBinConfig::load(None, env(&[]), &flags).unwrap_err();
        assert!(e.key.starts_with("--backend"), "{e}");
        let e = ProxyBinConfig::load(
            None,
            env(&[("HELIOS_PROXY__TIMEOUTS__CONNECT_MS", "x")]),
            &ProxyFlags::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "proxy.timeouts.connect_ms", "{e}");
        let e = ProxyBinConfig::load(
            None,
            env(&[("HELIOS_PROXY__NOPE", "1")]),
            &ProxyFlags::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "proxy.nope (from HELIOS_PROXY__NOPE)");
        let balance_alone = ProxyFlags {
            balance: Some("weighted".into()),
            ..ProxyFlags::default()
        };
        let e = ProxyBinConfig::load(None, env(&[]), &balance_alone).unwrap_err();
        assert_eq!(e.key, "--balance");
    }

    #[test]
    fn the_shipped_example_loads_and_states_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/proxy.yaml");
        let c = ProxyBinConfig::load(Some(&path), env(&[]), &ProxyFlags::default()).unwrap();
        assert_eq!(c.proxy.routes.len(), 2);
        let d = ProxyConfig::default();
        assert_eq!(c.proxy.listen, d.listen);
        assert_eq!(c.proxy.health, d.health);
        assert_eq!(c.proxy.health_check, d.health_check);
        assert_eq!(c.proxy.breaker, d.breaker);
        assert_eq!(c.proxy.retry, d.retry);
        assert_eq!(c.proxy.timeouts, d.timeouts);
        assert_eq!(c.proxy.limits, d.limits);
        assert_eq!(c.log, ProxyBinConfig::default().log);
        assert_eq!(c.tls, TlsSection::default());
    }

    #[test]
    fn a_file_sets_routes_and_the_environment_overrides_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.yaml");
        std::fs::write(
            &path,
            "proxy:\n  listen: 127.0.0.1:8181\n  backends:\n    - {id: a, url: 'http://127.0.0.1:9001'}\n    - {id: b, url: 'http://127.0.0.1:9002'}\n  routes:\n    - id: api\n      path_prefix: /api\n      balance: weighted\n      backends: [{backend: a, weight: 3}, {backend: b}]\n",
        )
        .unwrap();
        let c = ProxyBinConfig::load(
            Some(&path),
            env(&[("HELIOS_PROXY__LISTEN", "127.0.0.1:8282")]),
            &ProxyFlags::default(),
        )
        .unwrap();
        assert_eq!(c.proxy.listen, "127.0.0.1:8282");
        assert_eq!(c.proxy.routes[0].backends[0].weight, 3);
        assert_eq!(c.proxy.routes[0].backends[1].weight, 1);
    }
}
