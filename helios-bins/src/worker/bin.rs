//! The `helios-worker` binary's command line and start-up: parse flags, load the config
//! (or build the quick start's one service from `--queue --connector --target`), check the
//! service map, read the credentials, then run the worker until a signal: the first
//! SIGINT/SIGTERM drains, a second one exits at once. The binary's `main` only calls
//! [`main`].

use super::config::{WorkerBinConfig, WorkerFlags, build_services, host_name};
use super::connector::Connectors;
use super::runtime::Worker;
use super::source::HttpSource;
use crate::app::client::{CallError, Credentials, Gateway};
use crate::app::{Context, Stop, launch, shutdown_signal};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// The HELIOS worker.
#[derive(Debug, Parser)]
#[command(
    name = "helios-worker",
    version,
    about = "HELIOS worker: claims jobs from a gateway and runs them through connectors",
    after_help = "\
Quick start, no config file:
  HELIOS_WORKER_TOKEN=... helios-worker --gateway http://127.0.0.1:8080 --queue emails \\
      --connector http --target http://127.0.0.1:9000/hook --concurrency 50
Connectors: http (POST the payload to --target), command (run --target with the payload
on stdin), noop (ack at once: benchmarks, smoke tests).
Credentials: HELIOS_WORKER_TOKEN, or HELIOS_WORKER_USERNAME and HELIOS_WORKER_PASSWORD
of a user holding jobs:work (or jobs:work:QUEUE for each queue served).
Settings are layered: built-in defaults <- the --config file <- HELIOS_WORKER__* and
HELIOS_LOG__* environment variables <- these flags:
  HELIOS_WORKER__<KEY>    any key of the config's `worker` section, `__` between levels:
                          HELIOS_WORKER__LEASE_MS=60000
  RUST_LOG                log filter (overrides log.level), e.g. RUST_LOG=debug
Every key is documented in configs/worker.yaml. SIGINT/SIGTERM stop claiming, let jobs
in flight finish (up to worker.drain_timeout_ms, 30 s), release the rest to run again at
once, and exit 0; a second signal exits at once (the leases then expire)."
)]
struct Args {
    /// YAML config file (the service map: queue -> connector, target, limits).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The gateway to claim from (overrides `worker.gateway`; default http://127.0.0.1:8080).
    #[arg(long, value_name = "URL")]
    gateway: Option<String>,
    /// Serve this queue (the quick start: replaces the config's services).
    #[arg(long, value_name = "NAME")]
    queue: Option<String>,
    /// The quick start queue's connector.
    #[arg(long, value_name = "NAME")]
    connector: Option<String>,
    /// The quick start queue's target: a URL (http) or a program (command).
    #[arg(long, value_name = "URL|PROGRAM")]
    target: Option<String>,
    /// Jobs of the quick start queue run at once (default 16).
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// The worker's id in the registry (default: HOST-PID-RANDOM).
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// Runtime threads (0: one per core).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Serve `GET /metrics` on this address (overrides `metrics_listen`; default: none).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_listen: Option<String>,
}

/// The binary: parses the command line, then configures and runs.
pub fn main() -> ExitCode {
    run().unwrap_or_else(|code| code)
}

/// [`main`], with every failed step's exit code as the error.
fn run() -> Result<ExitCode, ExitCode> {
    const NAME: &str = "helios-worker";
    let args = Args::parse();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let flags = WorkerFlags {
        gateway: args.gateway,
        queue: args.queue,
        connector: args.connector,
        target: args.target,
        concurrency: args.concurrency,
        id: args.id,
        threads: args.threads,
        metrics_listen: args.metrics_listen,
    };
    let cfg = launch::config(
        NAME,
        WorkerBinConfig::load(args.config.as_deref(), env.clone(), &flags),
    )?;
    let creds = launch::config(
        NAME,
        Credentials::from_env(&env, "HELIOS_WORKER", NAME, "jobs:work"),
    )?;
    // Kept to the end of main: dropping it flushes the spans still queued.
    let _telemetry = crate::app::init_tracing("worker", &cfg.log, &cfg.telemetry);
    let runtime = launch::runtime(NAME, cfg.threads)?;
    runtime.block_on(async move {
        // Connectors build their clients on the runtime.
        let services = launch::config(
            NAME,
            build_services(&cfg.worker, "worker", &Connectors::default()),
        )?;
        let metrics_listener =
            launch::bind_optional(NAME, &cfg.metrics_listen, "metrics_listen").await?;
        let ctx = Context::system();
        let settings =
            cfg.worker
                .runtime_settings(env!("CARGO_PKG_VERSION"), &host_name(), ctx.random_u64());
        let gateway = Gateway::new(&cfg.worker.gateway, creds);
        check_credentials(&gateway).await?;
        let worker = Worker::new(Arc::new(HttpSource::new(gateway)), services, settings, ctx);
        let stop = Stop::default();
        let metrics_task = metrics_listener
            .map(|l| tokio::spawn(super::run_metrics(l, worker.metrics(), stop.waiter())));
        let (first_tx, first) = tokio::sync::oneshot::channel::<()>();
        let (second_tx, second) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = first_tx.send(());
            shutdown_signal().await;
            tracing::warn!("second signal: exiting at once");
            let _ = second_tx.send(());
        });
        worker
            .clone()
            .run(
                async {
                    let _ = first.await;
                },
                async {
                    let _ = second.await;
                },
            )
            .await;
        stop.trigger();
        if let Some(t) = metrics_task {
            let _ = t.await;
        }
        match worker.fatal_error() {
            Some(e) => Err(launch::failed(NAME, e)),
            None => Ok(ExitCode::SUCCESS),
        }
    })
}

/// Refused credentials stop the start (exit 1), naming the gateway's answer; a gateway
/// not reachable yet does not (the worker retries, as it does when it goes away later).
async fn check_credentials(gateway: &Gateway) -> Result<(), ExitCode> {
    let refused = |what: String| {
        launch::failed(
            "helios-worker",
            format!(
                "the gateway {} refused the credentials: {what}",
                gateway.base()
            ),
        )
    };
    match gateway
        .call(
            http::Method::GET,
            "/api/v1/auth/me",
            None,
            std::time::Duration::from_secs(10),
        )
        .await
    {
        Ok((status, _)) if status.is_success() => Ok(()),
        Ok((status, body)) if status == 401 || status == 403 => Err(refused(format!(
            "{status} {}",
            String::from_utf8_lossy(&body).trim()
        ))),
        Ok((status, _)) => {
            tracing::warn!(%status, "the gateway's /api/v1/auth/me answered unexpectedly");
            Ok(())
        }
        Err(CallError::Login(m)) => Err(refused(m)),
        Err(e) => {
            tracing::warn!(error = %e, "the gateway is not reachable yet; retrying");
            Ok(())
        }
    }
}
