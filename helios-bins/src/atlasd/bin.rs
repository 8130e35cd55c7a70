//! The `helios-atlasd` binary's command line and start-up: parse flags, load the config,
//! start logging, bind before creating anything, open the stores, serve until a signal.
//! The binary's `main` only calls [`main`] (and picks the allocator).

use crate::app::launch;
use crate::atlasd::config::{AtlasdConfig, AtlasdFlags};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// The HELIOS RESP server.
#[derive(Debug, Parser)]
#[command(
    name = "helios-atlasd",
    version,
    about = "helios-atlasd: the ATLAS store over the Redis protocol (RESP2/RESP3)",
    after_help = "\
Settings are layered: built-in defaults <- the --config file <- HELIOS_ATLASD_* environment
variables <- these flags. Environment:
  HELIOS_ATLASD_<KEY>     any config key in capitals: HELIOS_ATLASD_REQUIREPASS=s3cret,
                          HELIOS_ATLASD_APPENDFSYNC=always, HELIOS_ATLASD_METRICS_PORT=9121
  RUST_LOG                log filter (overrides log.level), e.g. RUST_LOG=debug
Every key is documented in configs/atlasd.yaml. SIGINT, SIGTERM and SHUTDOWN fsync, exit 0."
)]
struct Args {
    /// YAML config file (default: built-in defaults; see configs/atlasd.yaml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// ATLAS data directory (overrides `data_dir`; default ./atlasd-data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on, HOST:PORT (overrides `listen`; default 127.0.0.1:6380).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// fsync policy of the AOF (overrides `appendfsync`; default everysec).
    #[arg(long, value_parser = ["always", "everysec", "no"])]
    appendfsync: Option<String>,
    /// TCP port, as on redis-server (replaces the port of `listen`).
    #[arg(long, value_name = "N")]
    port: Option<u16>,
    /// Address to bind, as on redis-server (replaces the host of `listen`).
    #[arg(long, value_name = "ADDR")]
    bind: Option<String>,
    /// Data directory, as on redis-server (same as --data-dir).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Password clients must give with AUTH (overrides `requirepass`).
    #[arg(long, value_name = "PASS")]
    requirepass: Option<String>,
    /// Runtime threads serving connections (overrides `worker_threads`; default 1).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Port of the HTTP /metrics listener, on the host of `listen` (overrides
    /// `metrics_port`; default 0: none).
    #[arg(long, value_name = "N")]
    metrics_port: Option<u16>,
}

/// The binary: parses the command line, then configures, starts and serves.
pub fn main() -> ExitCode {
    run().unwrap_or_else(|code| code)
}

/// [`main`], with every failed step's exit code as the error.
fn run() -> Result<ExitCode, ExitCode> {
    let args = Args::parse();
    // The one place that reads the environment.
    let env: Vec<(String, String)> = std::env::vars().collect();
    let flags = AtlasdFlags {
        listen: args.listen,
        bind: args.bind,
        port: args.port,
        data_dir: args.data_dir,
        dir: args.dir,
        appendfsync: args.appendfsync,
        requirepass: args.requirepass,
        worker_threads: args.threads,
        metrics_port: args.metrics_port,
    };
    const NAME: &str = "helios-atlasd";
    let cfg = launch::config(
        NAME,
        AtlasdConfig::load(args.config.as_deref(), env, &flags),
    )?;
    // atlasd makes no spans of its own to export: telemetry stays off.
    let _telemetry = crate::app::init_tracing(
        "atlasd",
        &cfg.log,
        &crate::app::telemetry::TelemetrySection::default(),
    );
    // A runtime thread about to park has served every ready connection: the end of a
    // turn, when the turn's writes commit as one group (atlasd::committer).
    let (runtime, turns) =
        crate::atlasd::runtime(&cfg).map_err(|e| launch::runtime_error(NAME, e))?;
    runtime.block_on(async move {
        // The port first: a busy one fails before the data directory is created.
        let listener = launch::bind(NAME, &cfg.listen, "listen").await?;
        let metrics_listener = match cfg.metrics_listen() {
            Some(addr) => Some(launch::bind(NAME, &addr, "metrics_port").await?),
            None => None,
        };
        let ctx = crate::app::Context::system();
        let atlas = crate::atlasd::open_atlas_in(&cfg, &ctx)
            .map_err(|e| launch::failed(NAME, format!("cannot open ATLAS: {e}")))?;
        tracing::info!(listen = %cfg.listen, data_dir = %cfg.data_dir.display(), appendfsync = %cfg.appendfsync, "helios-atlasd serving");
        let metrics = metrics_listener.map(|l| {
            let atlas = atlas.clone();
            (l, move |l, stop| crate::atlasd::run_metrics(l, atlas, stop))
        });
        Ok(launch::serve_until_signal(NAME, metrics, |stop| {
            crate::atlasd::run_in(listener, atlas, cfg, ctx, stop, turns)
        })
        .await)
    })
}
