//! The app wrapper shared by every binary: structured logs, the shutdown signal, and the
//! opening of ATLAS (and the cores over it) from the configuration.

use crate::config::GatewayConfig;
use helios_atlas::{Atlas, FsyncPolicy, Options};
use std::io::IsTerminal;

/// Starts `tracing`: JSON lines, or pretty lines on a terminal (`log.format: auto`). The
/// filter comes from `RUST_LOG` when set, else from `log.level`.
pub fn init_tracing(format: &str, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let json = match format {
        "json" => true,
        "pretty" => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) is not an error worth failing for.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}

/// Opens ATLAS in the configured data directory with the configured fsync policy.
pub fn open_atlas(cfg: &GatewayConfig) -> Result<Atlas, helios_atlas::AtlasError> {
    let fsync: FsyncPolicy = cfg.appendfsync.parse()?;
    Atlas::open(
        &cfg.data_dir,
        Options {
            fsync,
            ..Options::default()
        },
    )
}
