//! The `helios-proxy` binary's command line and start-up: parse flags, load the config
//! (or build the quick start's one route from `--backend` flags), start logging, bind,
//! serve until a signal. The binary's `main` only calls [`main`].

use super::config::{ProxyBinConfig, ProxyFlags};
use crate::app::launch;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// The HELIOS reverse proxy.
#[derive(Debug, Parser)]
#[command(
    name = "helios-proxy",
    version,
    about = "HELIOS reverse proxy: routes, load balancing, health checks, circuit breakers",
    after_help = "\
Quick start, no config file:
  helios-proxy --listen 127.0.0.1:8081 --backend http://127.0.0.1:9001 --backend http://127.0.0.1:9002
Settings are layered: built-in defaults <- the --config file <- HELIOS_PROXY__* and
HELIOS_LOG__* environment variables <- these flags. Environment:
  HELIOS_PROXY__<KEY>     any key of the config's `proxy` section, `__` between levels:
                          HELIOS_PROXY__TIMEOUTS__CONNECT_MS=500
  RUST_LOG                log filter (overrides log.level), e.g. RUST_LOG=debug
Every key is documented in configs/proxy.yaml. SIGINT/SIGTERM stop accepting, let
exchanges in progress finish (up to proxy.limits.shutdown_grace_ms, 10 s), exit 0.
--control http://GATEWAY follows the gateway's routes and backends (its change feed):
  HELIOS_PROXY_TOKEN, or HELIOS_PROXY_USERNAME / HELIOS_PROXY_PASSWORD (proxy:admin)
SIGHUP reads the configuration again and puts its routes and backends in service
(requests in progress finish on the old ones); other settings take effect at restart."
)]
struct Args {
    /// YAML config file (routes, backends, health checks, breakers, retries, timeouts).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, HOST:PORT (overrides `proxy.listen`; default 127.0.0.1:8081).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// A backend URL (http://host:port), repeated: one route for every request over them
    /// (replaces the config's routes).
    #[arg(long = "backend", value_name = "URL")]
    backends: Vec<String>,
    /// The quick start route's balancer.
    #[arg(long, value_parser = ["round-robin", "least-conn", "weighted", "p2c-ewma"])]
    balance: Option<String>,
    /// Follow this gateway's routes and backends (http://host:port) through its change
    /// feed (overrides `proxy.control`); credentials from HELIOS_PROXY_TOKEN, or
    /// HELIOS_PROXY_USERNAME and HELIOS_PROXY_PASSWORD.
    #[arg(long, value_name = "URL")]
    control: Option<String>,
    /// Runtime threads (0: one per core; 1: a single event loop thread).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Serve `GET /metrics` on this address (overrides `metrics_listen`; default: none).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_listen: Option<String>,
    /// Terminate TLS with this PEM certificate chain (overrides `tls.cert_file`).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<String>,
    /// The certificate's PEM private key (overrides `tls.key_file`).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<String>,
}

/// The binary: parses the command line, then configures and serves.
pub fn main() -> ExitCode {
    run().unwrap_or_else(|code| code)
}

/// [`main`], with every failed step's exit code as the error.
fn run() -> Result<ExitCode, ExitCode> {
    let args = Args::parse();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let flags = ProxyFlags {
        listen: args.listen,
        control: args.control,
        backends: args.backends,
        balance: args.balance,
        threads: args.threads,
        metrics_listen: args.metrics_listen,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
    };
    const NAME: &str = "helios-proxy";
    let flags_for_reload = flags.clone();
    let cfg = launch::config(
        NAME,
        ProxyBinConfig::load(args.config.as_deref(), env, &flags),
    )?;
    // Kept to the end of main: dropping it flushes the spans still queued.
    let _telemetry = crate::app::init_tracing("proxy", &cfg.log, &cfg.telemetry);
    let creds = if cfg.proxy.control.is_empty() {
        None
    } else {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Some(launch::config(
            NAME,
            super::control::credentials_from_env(&env),
        )?)
    };
    let runtime = launch::event_loop_runtime(NAME, cfg.proxy.threads)?;
    runtime.block_on(async move {
        let listen = cfg.proxy.listen.clone();
        let listener = launch::bind(NAME, &listen, "proxy.listen").await?;
        let metrics_listener =
            launch::bind_optional(NAME, &cfg.metrics_listen, "metrics_listen").await?;
        let state = super::start(cfg.proxy, &cfg.tls, &crate::app::Context::system())
            .map_err(|msg| launch::failed(NAME, msg))?;
        let metrics = metrics_listener.map(|l| {
            let state = state.clone();
            (l, move |l, stop| super::run_metrics(l, state, stop))
        });
        reload_on_hangup(state.clone(), args.config.clone(), flags_for_reload);
        let following = creds.map(|creds| {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(super::follow_control(state.clone(), creds, async {
                let _ = stopped.await;
            }));
            (stop, task)
        });
        let scheme = if state.tls.is_some() { "https" } else { "http" };
        tracing::info!(%listen, scheme, routes = state.route_count(), "helios-proxy serving");
        let code =
            launch::serve_until_signal(NAME, metrics, |stop| super::run(listener, state, stop))
                .await;
        if let Some((stop, task)) = following {
            let _ = stop.send(());
            let _ = task.await;
        }
        Ok(code)
    })
}

/// On SIGHUP, reads the configuration again (file, environment, the same flags) and puts
/// its routes in service ([`super::State::reload`]); a configuration that does not load
/// or validate is logged and the routes in service stay.
fn reload_on_hangup(state: Arc<super::State>, file: Option<PathBuf>, flags: ProxyFlags) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler: configuration reload is off");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            // Read and parsed off the event loop: with `--threads 1`, a slow disk would
            // stall every connection.
            let (file, flags) = (file.clone(), flags.clone());
            let read = tokio::task::spawn_blocking(move || {
                let env: Vec<(String, String)> = std::env::vars().collect();
                ProxyBinConfig::load(file.as_deref(), env, &flags).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(format!("configuration reader failed: {e}")));
            let loaded = read.and_then(|cfg| state.reload(&cfg.proxy));
            match loaded {
                Ok(restart_needed) => {
                    tracing::info!(
                        routes = state.route_count(),
                        "configuration reloaded: routes and backends in service"
                    );
                    if !restart_needed.is_empty() {
                        tracing::warn!(
                            settings = ?restart_needed,
                            "changed settings take effect at the next start"
                        );
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "configuration reload refused; routes unchanged")
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (state, file, flags);
}
