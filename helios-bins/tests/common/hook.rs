//! A test service for workers' HTTP connector, on 127.0.0.1:0: it records every request
//! (idempotency key, attempt, payload) and answers as the payload asks: `{"sleep_ms": N}`
//! waits first, `{"status": N}` answers that status (default 200 with `{"ok": true}`).

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
                            let (key, attempt, traceparent) = (
                                h("idempotency-key"),
                                h("helios-job-attempt").parse().unwrap_or(0),
                                h("traceparent"),
                            );
                            let body = req.into_body().collect().await?.to_bytes();
                            let payload: Value =
                                serde_json::from_slice(&body).unwrap_or(Value::Null);
                            log.lock().push(Seen {
                                key,
                                attempt,
                                traceparent,
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
