//! The `helios-gateway` binary's command line and start-up: parse flags, load the config,
//! start logging, bind before creating anything, open the stores, serve until a signal.
//! The binary's `main` only calls [`main`] (and picks the allocator).

use crate::app::launch;
use crate::config::{FlagOverrides, GatewayConfig};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// The HELIOS gateway.
#[derive(Debug, Parser)]
#[command(
    name = "helios-gateway",
    version,
    about = "HELIOS gateway: JSON over HTTP on an embedded ATLAS store",
    after_help = "\
Settings are layered: built-in defaults <- the --config file <- HELIOS_* environment
variables <- these flags. Environment:
  HELIOS_ADMIN_PASSWORD   password of the 'admin' user created on a fresh data directory
                          (unset: a random one is written to <data dir>/admin-password, 0600)
  HELIOS_<KEY>            any config key, `__` between levels: HELIOS_LISTEN=0.0.0.0:8080,
                          HELIOS_AUTH__REGISTRATION_OPEN=false, HELIOS_TLS__CERT_FILE=cert.pem
  RUST_LOG                log filter (overrides log.level), e.g. RUST_LOG=debug
Every key is documented in configs/default.yaml. SIGINT/SIGTERM drain and fsync, exit 0."
)]
struct Args {
    /// YAML config file (default: built-in defaults, the same as configs/default.yaml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// ATLAS data directory (overrides `data_dir`; default ./data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on, HOST:PORT (overrides `listen`; default 127.0.0.1:8080).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// fsync policy of the AOF (overrides `appendfsync`; default everysec).
    #[arg(long, value_parser = ["always", "everysec", "no"])]
    appendfsync: Option<String>,
    /// Runtime threads (overrides `threads`; default 0: one per core).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

/// The binary: parses the command line, then configures, starts and serves.
pub fn main() -> ExitCode {
    run().unwrap_or_else(|code| code)
}

/// [`main`], with every failed step's exit code as the error.
fn run() -> Result<ExitCode, ExitCode> {
    let args = Args::parse();
    // The one place that reads the environment: HELIOS_* config overrides and the
    // bootstrap admin password.
    let env: Vec<(String, String)> = std::env::vars().collect();
    let admin_password = std::env::var("HELIOS_ADMIN_PASSWORD").ok();
    let flags = FlagOverrides {
        listen: args.listen,
        data_dir: args.data_dir,
        appendfsync: args.appendfsync,
        threads: args.threads,
    };
    const NAME: &str = "helios-gateway";
    let cfg = launch::config(
        NAME,
        GatewayConfig::load(args.config.as_deref(), env, &flags),
    )?;
    // Kept to the end of main: dropping it flushes the spans still queued.
    let _telemetry = crate::app::init_tracing("gateway", &cfg.log, &cfg.telemetry);
    let runtime = launch::runtime(NAME, cfg.threads)?;
    runtime.block_on(async move {
        // Listeners first: a busy port fails here, before the data directory, the secret
        // or the admin user exist.
        let listen = cfg.listen.clone();
        let listener = launch::bind(NAME, &listen, "listen").await?;
        let metrics_listener =
            launch::bind_optional(NAME, &cfg.metrics_listen, "metrics_listen").await?;
        let proxy_listener = match cfg.embedded_proxy.enabled {
            true => Some(launch::bind(NAME, &cfg.embedded_proxy.listen, "embedded_proxy.listen").await?),
            false => None,
        };
        let started =
            tokio::task::spawn_blocking(move || crate::gateway::start(cfg, admin_password))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
        let state = started.map_err(|msg| launch::failed(NAME, msg))?;
        let metrics = metrics_listener.map(|l| {
            tracing::info!(addr = %state.config.metrics_listen, "serving /metrics");
            let state = state.clone();
            (l, move |l, stop| crate::gateway::run_metrics(l, state, stop))
        });
        let scheme = if state.tls.is_some() { "https" } else { "http" };
        tracing::info!(%listen, scheme, data_dir = %state.config.data_dir.display(), "helios-gateway serving");
        let proxy = match proxy_listener {
            Some(l) => Some(crate::gateway::start_embedded_proxy(&state, l).map_err(|msg| launch::failed(NAME, msg))?),
            None => None,
        };
        Ok(launch::serve_until_signal(NAME, metrics, |stop| {
            crate::gateway::run_with_proxy(listener, state, proxy, stop)
        })
        .await)
    })
}
