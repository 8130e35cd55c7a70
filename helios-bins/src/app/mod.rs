//! The runner shared by every binary: structured logs, the shutdown signal, the
//! [`Context`] (clock and randomness) servers take instead of reading them, the opening of
//! ATLAS from the configuration, the accept loop ([`serve`]), HTTP connections and the
//! metrics listener ([`http`]), TLS termination ([`tls`]), the idle timeout ([`idle`]), the
//! audit log of security events ([`audit`]), trace export ([`telemetry`]) and W3C trace
//! context ([`trace`]).
//!
//! A server is `run(listener, state or context, shutdown)` over [`serve::serve`]; its
//! `main` parses flags, loads its config, and calls it.

pub mod audit;
pub mod client;
pub mod config;
pub mod histogram;
pub mod http;
pub mod idle;
pub mod launch;
pub mod logs;
pub mod metrics;
pub mod serve;
pub mod telemetry;
pub mod tls;
pub mod trace;

use helios_atlas::{Atlas, FsyncPolicy, Options};
use helios_auth::{OsRandom, Randomness};
use helios_core::{Clock, SystemClock};
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
pub use telemetry::Telemetry;

/// Starts `tracing` for `component` (the binary): JSON lines ([`logs::JsonLines`]), or
/// pretty lines on a terminal (`log.format: auto`), written to stderr by the log thread
/// ([`logs::writer`]: logging never blocks; lines a stalled reader leaves no room for are
/// dropped and counted). The filter comes from `RUST_LOG` when
/// set, else from `log.level`. With `telemetry.enabled`
/// in an `otel` build, HELIOS's spans are also exported over OTLP (their own filter: INFO
/// of HELIOS's targets, whatever the log level); in a build without `otel` that setting
/// only warns. Keep the returned [`Telemetry`] alive until the process ends: dropping it
/// flushes the spans and the log lines still queued.
pub fn init_tracing(
    component: &'static str,
    log: &crate::config::LogSection,
    telemetry_cfg: &telemetry::TelemetrySection,
) -> Telemetry {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let json = match log.format.as_str() {
        "json" => true,
        "pretty" => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let (writer, log_guard) = logs::writer(std::io::stderr(), log.queue_lines);
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let fmt = if json {
        fmt.fmt_fields(logs::json_fields())
            .event_format(logs::JsonLines::new(component))
            .boxed()
    } else {
        fmt.boxed()
    };
    let registry = tracing_subscriber::registry().with(fmt.with_filter(filter));
    #[allow(unused_mut)]
    let mut out = Telemetry::default();
    out.log_guard = Some(log_guard);
    #[cfg(feature = "otel")]
    let (registry, failed) = match telemetry::otel_layer(telemetry_cfg) {
        Ok(Some((layer, provider))) => {
            out.set_provider(provider);
            (registry.with(Some(layer)), None)
        }
        Ok(None) => (registry.with(None), None),
        Err(e) => (registry.with(None), Some(e)),
    };
    // A second init (tests) is not an error worth failing for; its export is dropped.
    let installed = registry.try_init().is_ok();
    #[cfg(feature = "otel")]
    {
        if let Some(e) = failed {
            tracing::error!(error = %e, "telemetry: spans are not exported");
        }
        if out.exporting() {
            if installed {
                trace::set_exporting(true);
                tracing::info!(
                    endpoint = %telemetry_cfg.endpoint,
                    service = %telemetry_cfg.service_name,
                    sampling_ratio = telemetry_cfg.sampling_ratio,
                    "telemetry: exporting spans over OTLP/HTTP"
                );
            } else {
                out.stop_exporting();
            }
        }
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = installed;
        if telemetry_cfg.enabled {
            tracing::warn!(
                "telemetry.enabled is set, but this binary was built without the `otel` \
                 feature: no spans are exported (W3C trace context is still passed on)"
            );
        }
    }
    out
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

/// A stop switch shared by a server and its side listeners (metrics): [`Stop::trigger`]
/// once, and every [`Stop::waiter`] resolves.
#[derive(Debug)]
pub struct Stop(tokio::sync::watch::Sender<bool>);

impl Default for Stop {
    fn default() -> Self {
        Stop(tokio::sync::watch::channel(false).0)
    }
}

impl Stop {
    /// A future that resolves once the switch is triggered (at once if it was).
    pub fn waiter(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Triggers the switch.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

/// The process's exit code for a server's result, printing the error as `name: error`.
pub fn exit_code<E: std::fmt::Display>(name: &str, served: Result<(), E>) -> ExitCode {
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What a server takes from its surroundings instead of reading it itself: the clock
/// (ATLAS's TTLs, rate limits, tokens, LASTSAVE) and the randomness (secrets, generated
/// passwords, token ids, atlasd's RANDOMKEY). The binaries pass [`Context::system`];
/// tests pass a `ManualClock` and a seeded source, so time and ids replay.
#[derive(Debug, Clone)]
pub struct Context {
    /// Wall-clock time.
    pub clock: Arc<dyn Clock>,
    /// Cryptographic randomness.
    pub random: Arc<dyn Randomness>,
}

impl Context {
    /// The system clock and the operating system's CSPRNG.
    pub fn system() -> Self {
        Context {
            clock: Arc::new(SystemClock),
            random: Arc::new(OsRandom),
        }
    }

    /// A random `u64` from [`Context::random`].
    pub fn random_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        self.random.fill(&mut b);
        u64::from_le_bytes(b)
    }
}

/// Opens ATLAS in `data_dir` with the fsync policy named `appendfsync` (`always`,
/// `everysec`, `no`) and its `everysec_lag_max_ms` bound, on the context's clock. Every
/// server opens its store here.
pub fn open_atlas(
    data_dir: &Path,
    appendfsync: &str,
    everysec_lag_max_ms: u64,
    ctx: &Context,
) -> Result<Atlas, helios_atlas::AtlasError> {
    let fsync: FsyncPolicy = appendfsync.parse()?;
    Atlas::open(
        data_dir,
        Options {
            fsync,
            everysec_lag_max_ms,
            clock: ctx.clock.clone(),
            // The AOF's fsyncs timed for `atlas_fsync_duration_seconds`.
            storage: Arc::new(metrics::TimedStorage::new(Arc::new(
                helios_atlas::storage::FsStorage,
            ))),
            ..Options::default()
        },
    )
}

/// Runs `f`, a store call that writes to ATLAS (a KV write, a queue transition): on the
/// blocking pool when `may_wait` (it may wait for an fsync, [`Atlas::writes_may_wait`], or
/// is large), on this thread otherwise, where it is an append to the page cache and costs
/// less than the pool's two hand-offs (a thread woken to run it, the task woken with its
/// result). A panic comes back as `Err` with its text either way, so the caller answers
/// it as an error and goes on serving.
pub async fn store_call<T: Send + 'static>(
    may_wait: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    if may_wait {
        return tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| e.to_string());
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| "the store call panicked".to_owned())
}

/// Writes `contents` to `path` readable by its owner only: a temporary file beside it is
/// created exclusively with mode 0600 (no window with looser permissions), written,
/// fsynced and renamed over `path`, then the directory is fsynced. Errors name the file.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let err = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    // A temporary file left by a crash is ours to replace.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(&tmp, e)),
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| err(&tmp, e))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(|e| err(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| err(path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err(dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_atlas_passes_the_everysec_bound_on() {
        let dir = tempfile::tempdir().unwrap();
        // ATLAS refuses a bound under 1000 ms: the setting reached its options.
        match open_atlas(dir.path(), "everysec", 999, &Context::system()) {
            Err(helios_atlas::AtlasError::InvalidOption { name, .. }) => {
                assert_eq!(name, "everysec_lag_max_ms")
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        let db = open_atlas(dir.path(), "everysec", 5000, &Context::system()).unwrap();
        db.set("a", "1").unwrap();
    }
}
