//! What the worker tests share: a test service for the HTTP connector, on 127.0.0.1:0,
//! that records every request (idempotency key, attempt, payload) and answers as the
//! payload asks (`{"sleep_ms": N}` waits first, `{"status": N}` answers that status,
//! default 200 with `{"ok": true}`); a gateway with a `worker` and a `producer` user
//! ([`worker_gateway`]); [`until`], a bounded wait for a condition; a worker started over
//! any source ([`start_worker`], [`Running`]); and [`Interposed`], a source that waits on
//! the test before it passes a call on (a gate, a stuck or silent connection).

use bytes::Bytes;
use helios_bins::app::Context;
use helios_bins::worker::config::{WorkerSettings, build_services};
use helios_bins::worker::source::{Claimed, ItemResult, SourceError};
use helios_bins::worker::{BoxFuture, Connectors, Source, Worker};
use helios_queue::Settle;
use helios_queue::registry::WorkerRecord;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// One request the service saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `Idempotency-Key`.
    pub key: String,
    /// `Helios-Job-Attempt`.
    pub attempt: u32,
    /// `traceparent`.
    pub traceparent: String,
    /// `tracestate` (empty if none).
    pub tracestate: String,
    /// The payload.
    pub payload: Value,
}

/// The service: its URL and what it saw.
pub struct Hook {
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    /// Every request, in arrival order.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hook {
    /// Starts the service.
    pub async fn start() -> Hook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                        let log = log.clone();
                        async move {
                            let h = |n: &str| {
                                req.headers()
                                    .get(n)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_owned()
                            };
                            let (key, attempt, traceparent, tracestate) = (
                                h("idempotency-key"),
                                h("helios-job-attempt").parse().unwrap_or(0),
                                h("traceparent"),
                                h("tracestate"),
                            );
                            let body = req.into_body().collect().await?.to_bytes();
                            let payload: Value =
                                serde_json::from_slice(&body).unwrap_or(Value::Null);
                            log.lock().push(Seen {
                                key,
                                attempt,
                                traceparent,
                                tracestate,
                                payload: payload.clone(),
                            });
                            if let Some(ms) = payload["sleep_ms"].as_u64() {
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                            let status = payload["status"].as_u64().unwrap_or(200) as u16;
                            let mut r =
                                Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
                            *r.status_mut() = StatusCode::from_u16(status).unwrap();
                            Ok::<_, hyper::Error>(r)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Hook {
            url: format!("http://{addr}/hook"),
            seen,
            task,
        }
    }

    /// How many requests carried idempotency key `key`.
    pub fn count(&self, key: &str) -> usize {
        self.seen.lock().iter().filter(|s| s.key == key).count()
    }
}

/// A gateway whose bodies may be as large as a settle batch, with `edit` applied to its
/// configuration, a `worker` user (role worker, password [`super::USER_PW`]) and a
/// `producer` (role user): the temp dir, the server and the producer's token.
pub async fn worker_gateway(
    edit: impl FnOnce(&mut helios_bins::config::GatewayConfig),
) -> (tempfile::TempDir, super::Server, String) {
    let (dir, s) = super::start_temp_with(100_000, super::ADMIN_PW, |c| {
        c.http.body_size_max = 1 << 20;
        edit(c);
    })
    .await;
    let admin = super::admin_token(&s).await;
    super::login(&s, "worker").await;
    let id = super::user_id(&s, &admin, "worker").await;
    s.expect(
        http::Method::POST,
        &format!("/admin/users/{id}/roles"),
        Some(&admin),
        Some(serde_json::json!({"role": "worker"})),
        204,
    )
    .await;
    let producer = super::login(&s, "producer").await;
    (dir, s, producer)
}

/// Waits until `f` holds, checking every 20 ms, failing after `secs` with `what`.
pub async fn until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A worker running in-process over a source, and the switches that stop it.
pub struct Running {
    pub worker: Arc<Worker>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    force: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

/// Starts a worker over `source` with `cfg`'s settings and service map, its connectors
/// from `connectors`.
pub fn start_worker(
    source: Arc<dyn Source>,
    cfg: &WorkerSettings,
    connectors: &Connectors,
) -> Running {
    let services = build_services(cfg, "worker", connectors).unwrap();
    let ctx = Context::system();
    let settings = cfg.runtime_settings("test", "localhost", ctx.random_u64());
    let worker = Worker::new(source, services, settings, ctx);
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (force, force_rx) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(worker.clone().run(
        async {
            let _ = stop_rx.await;
        },
        async {
            if force_rx.await.is_ok() {
                return;
            }
            std::future::pending::<()>().await
        },
    ));
    Running {
        worker,
        stop: Some(stop),
        force: Some(force),
        done: Some(done),
    }
}

impl Running {
    /// Begins the drain (`run`'s stop).
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Waits, at most 20 s, for `run` to return (after [`Running::stop`], or by itself).
    pub async fn finished(&mut self) {
        if let Some(done) = self.done.take() {
            tokio::time::timeout(Duration::from_secs(20), done)
                .await
                .expect("the worker stops")
                .unwrap();
        }
    }

    /// Drains the worker and checks it holds nothing afterwards.
    pub async fn drain(mut self) {
        self.stop();
        self.finished().await;
        drop(self.force.take());
        assert_eq!(self.worker.in_flight(), 0, "jobs left held after the drain");
        let text = self.worker.metrics().text();
        assert!(
            text.lines()
                .filter(|l| l.starts_with("worker_jobs_in_flight{"))
                .all(|l| l.ends_with(" 0")),
            "{text}"
        );
    }
}

type BeforeClaim = Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;
type BeforeSettle = Box<dyn Fn(&[Settle]) -> BoxFuture<'static, ()> + Send + Sync>;

/// A source that passes every call on to `inner`, a claim or a settle only once the
/// future its hook makes (if any) is done: the test decides when a claim comes back, or
/// holds a settle request as a stuck connection would.
pub struct Interposed {
    inner: Arc<dyn Source>,
    before_claim: Option<BeforeClaim>,
    before_settle: Option<BeforeSettle>,
}

impl Interposed {
    pub fn new(inner: Arc<dyn Source>) -> Self {
        Interposed {
            inner,
            before_claim: None,
            before_settle: None,
        }
    }

    pub fn before_claim(
        mut self,
        f: impl Fn() -> BoxFuture<'static, ()> + Send + Sync + 'static,
    ) -> Self {
        self.before_claim = Some(Box::new(f));
        self
    }

    pub fn before_settle(
        mut self,
        f: impl Fn(&[Settle]) -> BoxFuture<'static, ()> + Send + Sync + 'static,
    ) -> Self {
        self.before_settle = Some(Box::new(f));
        self
    }
}

impl Source for Interposed {
    fn claim<'a>(
        &'a self,
        queue: &'a str,
        worker: &'a str,
        count: usize,
        lease_ms: u64,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<Claimed>, SourceError>> {
        let before = self.before_claim.as_ref().map(|f| f());
        Box::pin(async move {
            if let Some(b) = before {
                b.await;
            }
            self.inner.claim(queue, worker, count, lease_ms, wait).await
        })
    }

    fn settle(&self, items: Vec<Settle>) -> BoxFuture<'_, Result<Vec<ItemResult>, SourceError>> {
        let before = self.before_settle.as_ref().map(|f| f(&items));
        Box::pin(async move {
            if let Some(b) = before {
                b.await;
            }
            self.inner.settle(items).await
        })
    }

    fn register(&self, record: WorkerRecord) -> BoxFuture<'_, Result<(), SourceError>> {
        self.inner.register(record)
    }

    fn deregister<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), SourceError>> {
        self.inner.deregister(id)
    }
}
