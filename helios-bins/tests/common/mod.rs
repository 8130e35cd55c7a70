//! The test harness shared by the gateway's integration tests: a gateway on 127.0.0.1:0
//! with a temp data dir, a hyper client that speaks JSON to it, and a clean stop.

#![allow(dead_code)] // Each test binary uses its own part of the harness.

use bytes::Bytes;
use helios_bins::config::GatewayConfig;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use tokio::sync::oneshot;

pub struct Server {
    pub addr: SocketAddr,
    pub state: std::sync::Arc<helios_bins::gateway::State>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
    pub client: Client<HttpConnector, Full<Bytes>>,
}

pub fn config(dir: &Path, capacity: u64) -> GatewayConfig {
    let mut c = GatewayConfig {
        data_dir: dir.to_path_buf(),
        backup_dir: dir.join("backups"),
        ..GatewayConfig::default()
    };
    c.auth.bcrypt_cost = 4;
    c.rate_limit.capacity = capacity;
    c.rate_limit.refill_per_s = 1;
    c.http.body_size_max = 4096;
    c.http.shutdown_grace_ms = 5_000;
    c
}

/// A gateway serving on 127.0.0.1:0 (admin password `admin password 1`): its address, its
/// state, the sender that stops it, and the task that returns when it has stopped.
pub async fn spawn(
    cfg: GatewayConfig,
) -> (
    SocketAddr,
    std::sync::Arc<helios_bins::gateway::State>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let state = tokio::task::spawn_blocking(move || {
        helios_bins::gateway::start(cfg, Some("admin password 1".into()))
    })
    .await
    .unwrap()
    .unwrap();
    serve(state).await
}

/// Serves an already started gateway on 127.0.0.1:0.
pub async fn serve(
    state: std::sync::Arc<helios_bins::gateway::State>,
) -> (
    SocketAddr,
    std::sync::Arc<helios_bins::gateway::State>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(helios_bins::gateway::run(listener, state.clone(), async {
        let _ = rx.await;
    }));
    (addr, state, tx, done)
}

pub async fn start(cfg: GatewayConfig) -> Server {
    server(spawn(cfg).await)
}

/// The harness around a served gateway.
pub fn server(
    (addr, state, tx, done): (
        SocketAddr,
        std::sync::Arc<helios_bins::gateway::State>,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ),
) -> Server {
    Server {
        addr,
        state,
        stop: Some(tx),
        done,
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

impl Server {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, http::HeaderMap, Value) {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let body = body.map(|v| Bytes::from(v.to_string())).unwrap_or_default();
        let resp = self
            .client
            .request(b.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, headers, v)
    }

    pub async fn stop(self) {
        self.stop_result().await.unwrap();
    }

    /// Stops the server; what `run` returned (an error if ATLAS could not be closed).
    pub async fn stop_result(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.done.await.unwrap()
    }
}

pub async fn login(s: &Server, user: &str) -> String {
    let (st, _, _) = s
        .call(
            Method::POST,
            "/api/v1/auth/register",
            None,
            Some(json!({"username": user, "password": "correct horse battery"})),
            &[],
        )
        .await;
    assert!(
        st == StatusCode::CREATED || st == StatusCode::CONFLICT,
        "{st}"
    );
    let (st, _, v) = s
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": user, "password": "correct horse battery"})),
            &[],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    v["access_token"].as_str().unwrap().to_owned()
}

/// A gateway on 127.0.0.1:0 whose `admin` has `admin_password`.
pub async fn start_with_admin(cfg: GatewayConfig, admin_password: &'static str) -> Server {
    let state = tokio::task::spawn_blocking(move || {
        helios_bins::gateway::start(cfg, Some(admin_password.into()))
    })
    .await
    .unwrap()
    .unwrap();
    server(serve(state).await)
}

/// Logs `user` in with `password`: its access token.
pub async fn login_with(s: &Server, user: &str, password: &str) -> String {
    let (st, _, v) = s
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": user, "password": password})),
            &[],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "login {user}: {v}");
    v["access_token"].as_str().unwrap().to_owned()
}
