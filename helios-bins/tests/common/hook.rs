//! What the worker tests share: a test service for the HTTP connector, on 127.0.0.1:0,
//! that records every request (idempotency key, attempt, payload) and answers as the
//! payload asks (`{"sleep_ms": N}` waits first, `{"status": N}` answers that status,
//! default 200 with `{"ok": true}`); a gateway with a `worker` and a `producer` user
//! ([`worker_gateway`]); and [`until`], a bounded wait for a condition.

use bytes::Bytes;
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
