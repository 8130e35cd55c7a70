//! Connectors: how a worker does a job. A [`Connector`] takes one job (its payload, id and
//! attempt) and answers with a result or a classified error; the runtime acks, retries or
//! dead-letters from that answer. A connector is named `<Protocol>Connector` and its name
//! in the service map is the protocol in lowercase (`http` is [`HttpConnector`]).
//!
//! Shipped: [`HttpConnector`] (POST the payload to a URL), [`CommandConnector`] (run a
//! program with the payload on stdin) and [`NoopConnector`] (done at once; benchmarks and
//! smoke tests). Users add their own through [`Connectors::register`]
//! (`examples/custom_connector.rs`).
//!
//! Error classes decide what happens next ([`ErrorClass::retryable`]): a permanent error
//! (an HTTP 4xx other than 408 and 429, an invalid payload, an exit status the service
//! names permanent) sends the job to the dead-letter list at once; a server error, a
//! timeout or a failed connection is retried with backoff up to the attempts allowed.
//!
//! Invariants: every connector bounds what it holds (the HTTP answer's body, a program's
//! output) and how long it runs (its timeout); a program that overstays is killed and
//! reaped.

use crate::app::client::chain;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector as HyperConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed, sendable future: what a [`Connector`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One job as a connector sees it.
#[derive(Debug, Clone)]
pub struct JobInput {
    /// The job id (32 lowercase hex digits): the idempotency key of its effects.
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// Which attempt this is (1 for the first).
    pub attempt: u32,
    /// The attempts the job may have in all.
    pub max_attempts: u32,
    /// The payload given at enqueue.
    pub payload: Arc<Value>,
    /// The W3C trace context of this attempt (`00-{trace}-{span}-{flags}`), for the
    /// service: the job's stored trace continued (the connector call's own span when
    /// spans are exported), or one made from the job id for a job stored without one.
    pub traceparent: String,
    /// The `tracestate` that came with the job's trace, passed on as it came.
    pub tracestate: Option<String>,
}

/// What kind of failure a connector met; decides retry or dead-letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// Retrying cannot help (HTTP 4xx, a bad payload): the job is dead-lettered.
    Permanent,
    /// The service failed (HTTP 5xx, 408, 429, a failing exit status): retried.
    Server,
    /// The service did not answer in time: retried.
    Timeout,
    /// The service could not be reached: retried.
    Connect,
}

impl ErrorClass {
    /// Whether another attempt may succeed.
    pub fn retryable(self) -> bool {
        self != ErrorClass::Permanent
    }

    /// The class as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Permanent => "permanent",
            ErrorClass::Server => "server",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Connect => "connect",
        }
    }
}

/// A failed attempt: its class and what happened (recorded as the job's `last_error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class:?}: {message}")]
pub struct ConnectorError {
    /// The class.
    pub class: ErrorClass,
    /// What happened.
    pub message: String,
}

impl ConnectorError {
    /// An error of `class`.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        ConnectorError {
            class,
            message: message.into(),
        }
    }
}

/// What a successful attempt returns: the job's result (stored with it), if any.
pub type Outcome = Result<Option<Value>, ConnectorError>;

/// Does jobs. Implementations are shared by every job of a service (`Send + Sync`) and
/// must bound their own time and memory; the runtime also stops an attempt that overstays
/// the service's `timeout_ms` (the future is dropped: clean up on drop).
pub trait Connector: Send + Sync + 'static {
    /// Does one attempt of `job`.
    fn call<'a>(&'a self, job: &'a JobInput) -> BoxFuture<'a, Outcome>;
}

/// The part of a service's settings a connector is built from.
#[derive(Debug, Clone)]
pub struct ConnectorSpec {
    /// The queue (for messages).
    pub queue: String,
    /// `http`: the URL; `command`: the program.
    pub target: String,
    /// `command`: its arguments.
    pub args: Vec<String>,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// The most bytes of an answer or program output kept.
    pub output_max_bytes: usize,
    /// `command`: exit statuses that are permanent failures.
    pub permanent_exit_codes: Vec<i32>,
}

type Factory = Arc<dyn Fn(&ConnectorSpec) -> Result<Arc<dyn Connector>, String> + Send + Sync>;

/// The connectors a runtime knows, by their name in the service map.
#[derive(Clone)]
pub struct Connectors {
    factories: BTreeMap<String, Factory>,
}

impl std::fmt::Debug for Connectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.factories.keys()).finish()
    }
}

impl Default for Connectors {
    /// The shipped ones: `http`, `command`, `noop`.
    fn default() -> Self {
        let mut c = Connectors {
            factories: BTreeMap::new(),
        };
        c.register("http", |s| Ok(Arc::new(HttpConnector::new(s)?) as _));
        c.register("command", |s| Ok(Arc::new(CommandConnector::new(s)?) as _));
        c.register("noop", |_| Ok(Arc::new(NoopConnector) as _));
        c
    }
}

impl Connectors {
    /// Adds (or replaces) the connector called `name`: `build` makes one per service from
    /// its settings, or says which setting is wrong.
    pub fn register(
        &mut self,
        name: &str,
        build: impl Fn(&ConnectorSpec) -> Result<Arc<dyn Connector>, String> + Send + Sync + 'static,
    ) {
        self.factories.insert(name.to_owned(), Arc::new(build));
    }

    /// The names known, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.factories.keys().map(String::as_str).collect()
    }

    /// Builds the connector `name` for a service, or says why not (an unknown name lists
    /// the known ones).
    pub fn build(&self, name: &str, spec: &ConnectorSpec) -> Result<Arc<dyn Connector>, String> {
        let f = self.factories.get(name).ok_or_else(|| {
            format!(
                "unknown connector {name:?} (known: {})",
                self.names().join(", ")
            )
        })?;
        f(spec)
    }
}

/// Acks every job at once with no result: for benchmarks and smoke tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopConnector;

impl Connector for NoopConnector {
    fn call<'a>(&'a self, _job: &'a JobInput) -> BoxFuture<'a, Outcome> {
        Box::pin(std::future::ready(Ok(None)))
    }
}

/// POSTs the payload (JSON) to a service URL. Headers: `Idempotency-Key` (the job id: the
/// same for every attempt, so the service can drop a repeat), `Helios-Job-Id`,
/// `Helios-Job-Attempt`, `Helios-Queue`, `traceparent`. A 2xx acks the job (a JSON
/// answer becomes its result); 408, 429 and 5xx are retried; any other status is
/// permanent; a refused connection or a timeout is retried. Plain `http://` targets only.
pub struct HttpConnector {
    client: Client<HyperConnector, Full<Bytes>>,
    target: http::Uri,
    timeout: Duration,
    output_max_bytes: usize,
}

impl std::fmt::Debug for HttpConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConnector")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl HttpConnector {
    /// A connector for `spec.target`, which must be an absolute `http://` URL.
    pub fn new(spec: &ConnectorSpec) -> Result<Self, String> {
        if spec.target.is_empty() {
            return Err("missing: the http connector POSTs to this URL".to_owned());
        }
        let target: http::Uri = spec
            .target
            .parse()
            .map_err(|e| format!("{:?} is not a URL: {e}", spec.target))?;
        match (target.scheme_str(), target.host()) {
            (Some("http"), Some(h)) if !h.is_empty() => {}
            (Some("https"), _) => {
                return Err(format!(
                    "{:?}: https targets are not supported yet (put a TLS-terminating \
                     proxy in front, or use http:// on a private network)",
                    spec.target
                ));
            }
            _ => {
                return Err(format!(
                    "{:?} is not an http://host[:port]/ URL",
                    spec.target
                ));
            }
        }
        let mut connector = HyperConnector::new();
        connector.set_connect_timeout(Some(spec.timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(HttpConnector {
            client,
            target,
            timeout: spec.timeout,
            output_max_bytes: spec.output_max_bytes,
        })
    }

    async fn post(&self, job: &JobInput) -> Outcome {
        let body = serde_json::to_vec(&*job.payload)
            .map_err(|e| ConnectorError::new(ErrorClass::Permanent, e.to_string()))?;
        let req = Request::post(self.target.clone())
            .header("content-type", "application/json")
            .header("idempotency-key", &job.id)
            .header("helios-job-id", &job.id)
            .header("helios-job-attempt", job.attempt.to_string())
            .header("helios-queue", &job.queue)
            .header("traceparent", &job.traceparent);
        let req = match &job.tracestate {
            Some(s) => req.header("tracestate", s),
            None => req,
        }
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| ConnectorError::new(ErrorClass::Permanent, e.to_string()))?;
        let resp = self.client.request(req).await.map_err(|e| {
            let class = if e.is_connect() {
                ErrorClass::Connect
            } else {
                ErrorClass::Server
            };
            ConnectorError::new(class, format!("POST {}: {}", self.target, chain(&e)))
        })?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), self.output_max_bytes)
            .collect()
            .await
            .map(|b| b.to_bytes());
        if status.is_success() {
            // The service did the work; an answer too large (or cut off) to keep only
            // means no result is stored.
            return Ok(match body {
                Ok(bytes) => serde_json::from_slice::<Value>(&bytes).ok(),
                Err(e) => {
                    tracing::warn!(
                        job = %job.id, error = %e, limit = self.output_max_bytes,
                        "the service's answer is not kept as the job's result"
                    );
                    None
                }
            });
        }
        let detail = body
            .map(|b| String::from_utf8_lossy(&b[..b.len().min(512)]).into_owned())
            .unwrap_or_default();
        let class = if status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            ErrorClass::Server
        } else {
            ErrorClass::Permanent
        };
        Err(ConnectorError::new(
            class,
            format!("POST {}: {status} {}", self.target, detail.trim()),
        ))
    }
}

impl Connector for HttpConnector {
    fn call<'a>(&'a self, job: &'a JobInput) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.post(job)).await {
                Ok(out) => out,
                Err(_) => Err(ConnectorError::new(
                    ErrorClass::Timeout,
                    format!("POST {}: no answer within {:?}", self.target, self.timeout),
                )),
            }
        })
    }
}

/// Kills `child` and every process of its group (SIGKILL): the group was made for it at
/// spawn (`process_group(0)`), and its id stays the child's until the child is reaped,
/// so the signal cannot reach an unrelated group.
fn kill_group(child: &mut tokio::process::Child) {
    if let Some(pid) = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.start_kill();
}

/// Kills a program's process group when an attempt is dropped before the program was
/// reaped: the runtime stops an attempt by dropping it (a drain's deadline, a lost lease,
/// a job claimed again), and `kill_on_drop` reaches the program alone, not what it
/// started. Disarmed once the program is reaped (its pid, the group's id, may then be
/// reused), or once a wait for it ended at all (a failed wait means someone else reaped
/// it); while it is not, the pid is still the group's and cannot name another one.
struct GroupGuard(Option<rustix::process::Pid>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Runs a program per job: the payload (JSON) on its stdin, `HELIOS_JOB_ID`,
/// `HELIOS_JOB_ATTEMPT`, `HELIOS_QUEUE` and `TRACEPARENT` in its environment. Exit status
/// 0 acks the job (stdout, if JSON, is its result); a status listed in
/// `permanent_exit_codes` (default 64 and 65, sysexits' usage and data errors) is
/// permanent; any other status or a signal is retried. Output beyond `output_max_bytes`
/// (stdout or stderr) fails the attempt permanently; a program still running at the
/// timeout is killed (SIGKILL) and reaped. The program runs in a process group of its
/// own, and a kill reaches the whole group: what it started (a shell's children, a
/// background helper) does not outlive the attempt.
#[derive(Debug)]
pub struct CommandConnector {
    program: String,
    args: Vec<String>,
    timeout: Duration,
    output_max_bytes: usize,
    permanent_exit_codes: Vec<i32>,
}

impl CommandConnector {
    /// A connector running `spec.target` with `spec.args`.
    pub fn new(spec: &ConnectorSpec) -> Result<Self, String> {
        if spec.target.trim().is_empty() {
            return Err("missing: the command connector runs this program".to_owned());
        }
        Ok(CommandConnector {
            program: spec.target.clone(),
            args: spec.args.clone(),
            timeout: spec.timeout,
            output_max_bytes: spec.output_max_bytes,
            permanent_exit_codes: spec.permanent_exit_codes.clone(),
        })
    }

    async fn run(&self, job: &JobInput) -> Outcome {
        use std::process::Stdio;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut cmd = tokio::process::Command::new(&self.program);
        if let Some(s) = &job.tracestate {
            cmd.env("TRACESTATE", s);
        }
        let mut child = cmd
            .args(&self.args)
            .env("HELIOS_JOB_ID", &job.id)
            .env("HELIOS_JOB_ATTEMPT", job.attempt.to_string())
            .env("HELIOS_QUEUE", &job.queue)
            .env("TRACEPARENT", &job.traceparent)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                ConnectorError::new(ErrorClass::Connect, format!("{}: {e}", self.program))
            })?;
        let mut group = GroupGuard(
            child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .and_then(rustix::process::Pid::from_raw),
        );
        let input = serde_json::to_vec(&*job.payload)
            .map_err(|e| ConnectorError::new(ErrorClass::Permanent, e.to_string()))?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(ConnectorError::new(
                ErrorClass::Server,
                format!("{}: no pipes", self.program),
            ));
        };
        let cap = self.output_max_bytes as u64;
        // One byte over the cap tells "too much" from "exactly the cap".
        let read = |r: Box<dyn tokio::io::AsyncRead + Unpin + Send>| async move {
            let mut buf = Vec::new();
            r.take(cap + 1).read_to_end(&mut buf).await.map(|_| buf)
        };
        let work = async {
            // A program that does not read its input must not block the writer: the
            // write runs beside the reads, and a broken pipe is the program's choice.
            let write = async {
                let _ = stdin.write_all(&input).await;
                drop(stdin);
            };
            // Either stream over the cap stops the program at once (it may be blocked
            // writing the rest, or hold the other stream open for long).
            let over =
                |r: &std::io::Result<Vec<u8>>| r.as_ref().is_ok_and(|b| b.len() as u64 > cap);
            let reads = async {
                let out_f = read(Box::new(stdout));
                let err_f = read(Box::new(stderr));
                tokio::pin!(out_f, err_f);
                let (mut out, mut err) = (None, None);
                while out.is_none() || err.is_none() {
                    tokio::select! {
                        r = &mut out_f, if out.is_none() => {
                            if over(&r) {
                                kill_group(&mut child);
                            }
                            out = Some(r);
                        }
                        r = &mut err_f, if err.is_none() => {
                            if over(&r) {
                                kill_group(&mut child);
                            }
                            err = Some(r);
                        }
                    }
                }
                (out, err)
            };
            let ((), (out, err)) = tokio::join!(write, reads);
            let none = || Err(std::io::Error::other("no output"));
            let (out, err) = (out.unwrap_or_else(none), err.unwrap_or_else(none));
            let status = child.wait().await;
            (out, err, status)
        };
        let (out, err, status) = match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => {
                // The wait ended: the program was reaped, by it or (a failed wait) by
                // someone else; either way its pid may now be another's.
                group.disarm();
                r
            }
            Err(_) => {
                // `work` was dropped with its borrows; kill and reap the program.
                kill_group(&mut child);
                let _ = child.wait().await;
                group.disarm();
                return Err(ConnectorError::new(
                    ErrorClass::Timeout,
                    format!(
                        "{}: still running after {:?}; killed",
                        self.program, self.timeout
                    ),
                ));
            }
        };
        let io = |e: std::io::Error| ConnectorError::new(ErrorClass::Server, e.to_string());
        let (out, err, status) = (out.map_err(io)?, err.map_err(io)?, status.map_err(io)?);
        if out.len() as u64 > cap || err.len() as u64 > cap {
            return Err(ConnectorError::new(
                ErrorClass::Permanent,
                format!("{}: output over {cap} bytes", self.program),
            ));
        }
        if status.success() {
            return Ok(serde_json::from_slice::<Value>(&out).ok());
        }
        let stderr = String::from_utf8_lossy(&err[..err.len().min(512)])
            .trim()
            .to_owned();
        let class = match status.code() {
            Some(c) if self.permanent_exit_codes.contains(&c) => ErrorClass::Permanent,
            _ => ErrorClass::Server,
        };
        Err(ConnectorError::new(
            class,
            format!("{}: {status}: {stderr}", self.program),
        ))
    }
}

impl Connector for CommandConnector {
    fn call<'a>(&'a self, job: &'a JobInput) -> BoxFuture<'a, Outcome> {
        Box::pin(self.run(job))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(target: &str, args: &[&str]) -> ConnectorSpec {
        ConnectorSpec {
            queue: "q".into(),
            target: target.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            timeout: Duration::from_secs(5),
            output_max_bytes: 1024,
            permanent_exit_codes: vec![64, 65],
        }
    }

    fn job() -> JobInput {
        JobInput {
            id: "0".repeat(32),
            queue: "q".into(),
            attempt: 1,
            max_attempts: 3,
            payload: Arc::new(serde_json::json!({"to": "a@example.com"})),
            traceparent: format!("00-{}-{}-01", "1".repeat(32), "2".repeat(16)),
            tracestate: None,
        }
    }

    #[test]
    fn unknown_connectors_and_bad_targets_are_named() {
        let c = Connectors::default();
        let e = c.build("smtp", &spec("x", &[])).err().unwrap();
        assert!(
            e.contains("\"smtp\"") && e.contains("command, http, noop"),
            "{e}"
        );
        let e = c.build("http", &spec("not a url", &[])).err().unwrap();
        assert!(e.contains("not a URL"), "{e}");
        let e = c.build("http", &spec("https://x/", &[])).err().unwrap();
        assert!(e.contains("https"), "{e}");
        let e = c.build("http", &spec("ftp://x/", &[])).err().unwrap();
        assert!(e.contains("http://"), "{e}");
        assert!(c.build("command", &spec(" ", &[])).is_err());
        assert!(
            c.build("http", &spec("http://127.0.0.1:9/hook", &[]))
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_command_gets_the_payload_and_its_status_is_classified() {
        let c = CommandConnector::new(&spec("sh", &["-c", "cat"])).unwrap();
        assert_eq!(
            c.call(&job()).await.unwrap(),
            Some(serde_json::json!({"to": "a@example.com"}))
        );
        let c = CommandConnector::new(&spec("sh", &["-c", "echo $HELIOS_JOB_ATTEMPT"])).unwrap();
        assert_eq!(c.call(&job()).await.unwrap(), Some(serde_json::json!(1)));
        let c = CommandConnector::new(&spec("sh", &["-c", "echo bad >&2; exit 65"])).unwrap();
        let e = c.call(&job()).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(e.message.contains("bad"), "{e}");
        let c = CommandConnector::new(&spec("sh", &["-c", "exit 1"])).unwrap();
        assert_eq!(c.call(&job()).await.unwrap_err().class, ErrorClass::Server);
        let c = CommandConnector::new(&spec("/nonexistent/program", &[])).unwrap();
        assert_eq!(c.call(&job()).await.unwrap_err().class, ErrorClass::Connect);
        // Output over the cap, and far over a pipe's buffer: stopped at once, permanent.
        let c = CommandConnector::new(&spec("sh", &["-c", "head -c 5000 /dev/zero"])).unwrap();
        let e = c.call(&job()).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Permanent);
        let t = std::time::Instant::now();
        let c = CommandConnector::new(&spec("sh", &["-c", "head -c 10000000 /dev/zero; sleep 30"]))
            .unwrap();
        let e = c.call(&job()).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(e.message.contains("output over 1024"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
        // A program that ignores its input still finishes.
        let c = CommandConnector::new(&spec("true", &[])).unwrap();
        assert_eq!(c.call(&job()).await.unwrap(), None);
    }

    /// Shows an attempt the runtime stops (drops) takes what the program started with it:
    /// the shell's background child would touch the marker a second later if it survived.
    #[tokio::test]
    async fn a_dropped_attempt_kills_the_programs_group() {
        let dir = tempfile::tempdir().unwrap();
        let (started, marker) = (dir.path().join("started"), dir.path().join("finished"));
        let script = format!(
            "(sleep 1; touch {}) & touch {}; sleep 30",
            marker.display(),
            started.display()
        );
        let c = CommandConnector::new(&spec("sh", &["-c", &script])).unwrap();
        let input = job();
        let call = c.call(&input);
        let dropped = async {
            while !started.exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::select! {
            out = call => panic!("the program ended: {out:?}"),
            () = dropped => {}
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !marker.exists(),
            "the program's child was killed with the attempt, not left running"
        );
    }

    /// Shows a timeout kills what the program started too: the shell's background child
    /// would touch the marker a second later if it survived.
    #[tokio::test]
    async fn a_command_past_its_timeout_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("finished");
        let script = format!("(sleep 1; touch {}) & sleep 3", marker.display());
        let mut s = spec("sh", &["-c", &script]);
        s.timeout = Duration::from_millis(200);
        let c = CommandConnector::new(&s).unwrap();
        let t = std::time::Instant::now();
        let e = c.call(&job()).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Timeout, "{e}");
        assert!(t.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !marker.exists(),
            "the program's child was killed, not left running"
        );
    }
}
