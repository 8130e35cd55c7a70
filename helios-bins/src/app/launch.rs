//! What every binary's start-up does the same way, so that its `bin` module only names
//! its own steps: load the config (exit 2 naming the key), build the runtime, bind the
//! listeners before anything is created (a busy port fails at once), run the server with
//! its optional metrics listener until SIGINT/SIGTERM, and turn the result into the exit
//! code. Errors are printed as `NAME: error` on stderr.

use super::{Stop, exit_code, shutdown_signal};
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use tokio::net::TcpListener;

/// A future that resolves when the process should stop.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A loaded config, or exit code 2 after printing the error (a bad setting, named).
pub fn config<T, E: Display>(name: &str, loaded: Result<T, E>) -> Result<T, ExitCode> {
    loaded.map_err(|e| {
        eprintln!("{name}: {e}");
        ExitCode::from(2)
    })
}

/// The runtime builder every server starts from: multi-threaded, `threads` workers (0:
/// one per core), every driver on. The count is always set here: left unset, tokio would
/// read `TOKIO_WORKER_THREADS` and panic on a value that is not a positive number.
pub fn builder(threads: usize) -> tokio::runtime::Builder {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    b.worker_threads(threads);
    b.enable_all();
    b
}

/// [`builder`]'s runtime, or a failed start.
pub fn runtime(name: &str, threads: usize) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder(threads).build().map_err(|e| runtime_error(name, e))
}

/// A runtime for a server that only moves bytes between sockets (the proxy): with
/// `threads` 1, one thread runs the accept loop, the connections and the timers (a
/// current-thread runtime, as nginx's single worker: no hand-off of a woken task to
/// another thread, no cross-thread wake-ups); else [`runtime`]'s. Only for servers that
/// never block a task (no `block_in_place`, which a current-thread runtime refuses).
pub fn event_loop_runtime(name: &str, threads: usize) -> Result<tokio::runtime::Runtime, ExitCode> {
    if threads != 1 {
        return runtime(name, threads);
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| runtime_error(name, e))
}

/// Prints `NAME: what` as a failed start or a stop for good (and logs it as FATAL); the
/// exit code to return.
pub fn failed(name: &str, what: impl Display) -> ExitCode {
    crate::fatal!(error = %what, "cannot go on");
    eprintln!("{name}: {what}");
    ExitCode::FAILURE
}

/// Prints why the runtime did not start; the exit code to return.
pub fn runtime_error(name: &str, e: std::io::Error) -> ExitCode {
    eprintln!("{name}: cannot start the runtime: {e}");
    ExitCode::FAILURE
}

/// Binds `addr` (`what` names the setting in the error), or fails the start.
pub async fn bind(name: &str, addr: &str, what: &str) -> Result<TcpListener, ExitCode> {
    TcpListener::bind(addr).await.map_err(|e| {
        eprintln!("{name}: cannot listen on {addr} ({what}): {e}");
        ExitCode::FAILURE
    })
}

/// [`bind`] when `addr` is set (an empty one is no listener).
pub async fn bind_optional(
    name: &str,
    addr: &str,
    what: &str,
) -> Result<Option<TcpListener>, ExitCode> {
    if addr.is_empty() {
        return Ok(None);
    }
    bind(name, addr, what).await.map(Some)
}

/// Runs `server` until SIGINT/SIGTERM, and the metrics listener beside it (if any) until
/// the same signal; waits for both, and returns the exit code.
pub async fn serve_until_signal<S, SF, E, M, MF>(
    name: &str,
    metrics: Option<(TcpListener, M)>,
    server: S,
) -> ExitCode
where
    S: FnOnce(Shutdown) -> SF,
    SF: Future<Output = Result<(), E>>,
    E: Display,
    M: FnOnce(TcpListener, Shutdown) -> MF,
    MF: Future + Send + 'static,
    MF::Output: Send + 'static,
{
    let stop = Stop::default();
    let metrics_task = metrics.map(|(l, run)| tokio::spawn(run(l, Box::pin(stop.waiter()))));
    let served = server(Box::pin(async move {
        shutdown_signal().await;
        stop.trigger();
    }))
    .await;
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    exit_code(name, served)
}

/// The metrics argument of [`serve_until_signal`] for a server without a metrics listener.
pub type NoMetrics = Option<(
    TcpListener,
    fn(TcpListener, Shutdown) -> std::future::Ready<()>,
)>;

/// No metrics listener.
pub const NO_METRICS: NoMetrics = None;
