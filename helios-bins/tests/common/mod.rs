//! The test harness shared by the integration tests, written once: a gateway on
//! 127.0.0.1:0 with a temp data dir, a hyper client that speaks JSON to it (from any local
//! address), its logins and the checks every test makes of an answer, and a clean stop;
//! helios-atlasd's server and clients in [`atlasd`]; the TLS client side in [`tls`].

#![allow(dead_code)] // Each test binary uses its own part of the harness.

pub mod atlasd;
pub mod hook;
pub mod scrape;
pub mod tls;

use bytes::Bytes;
use helios_bins::config::GatewayConfig;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::oneshot;

/// The bootstrap `admin`'s password of a gateway from [`spawn`] or [`start`].
pub const ADMIN_PW: &str = "admin password 1";
/// The password [`login`] registers its users with.
pub const USER_PW: &str = "correct horse battery";

/// A served gateway and a client for it: it dereferences to the client, [`Api`], so
/// `s.send(…)` calls the gateway.
pub struct Server {
    api: Api,
    /// Its state (ATLAS, auth, the queue).
    pub state: Arc<helios_bins::gateway::State>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A JSON client of a gateway: where it listens, and the HTTP/1.1 client that calls it.
pub struct Api {
    /// The address the gateway listens on.
    pub addr: SocketAddr,
    /// The HTTP client.
    pub client: Client<HttpConnector, Full<Bytes>>,
}

impl std::ops::Deref for Server {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// A gateway configuration over `dir` for tests: bcrypt cost 4, a rate limit of `capacity`
/// refilled at 1 a second, bodies up to 4 KiB, 5 s of grace at shutdown.
pub fn config(dir: &Path, capacity: u64) -> GatewayConfig {
    let mut c = GatewayConfig {
        data_dir: dir.to_path_buf(),
        backup_dir: dir.join("backups"),
        ..GatewayConfig::default()
    };
    c.audit.path = dir.join("audit").join("audit.log");
    c.auth.bcrypt_cost = 4;
    c.rate_limit.capacity = capacity;
    c.rate_limit.refill_per_s = 1;
    c.http.body_size_max = 4096;
    c.http.shutdown_grace_ms = 5_000;
    c
}

/// What [`serve`] returns: the address, the state, the sender that stops the gateway, and
/// the task that returns what `run` returned when it has stopped.
pub type Served = (
    SocketAddr,
    Arc<helios_bins::gateway::State>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
);

/// Starts the gateway (off the runtime: bcrypt) with `admin_password` for the bootstrap
/// `admin`: its state, not served yet.
pub async fn boot(cfg: GatewayConfig, admin_password: &str) -> Arc<helios_bins::gateway::State> {
    let admin_password = admin_password.to_owned();
    tokio::task::spawn_blocking(move || helios_bins::gateway::start(cfg, Some(admin_password)))
        .await
        .unwrap()
        .unwrap()
}

/// A gateway serving on 127.0.0.1:0 (admin password [`ADMIN_PW`]).
pub async fn spawn(cfg: GatewayConfig) -> Served {
    serve(boot(cfg, ADMIN_PW).await).await
}

/// Serves an already started gateway on 127.0.0.1:0.
pub async fn serve(state: Arc<helios_bins::gateway::State>) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(helios_bins::gateway::run(listener, state.clone(), async {
        let _ = rx.await;
    }));
    (addr, state, tx, done)
}

/// A gateway on 127.0.0.1:0 (admin password [`ADMIN_PW`]) and its client.
pub async fn start(cfg: GatewayConfig) -> Server {
    server(spawn(cfg).await)
}

/// A gateway with [`config`]`(dir, capacity)` over a fresh temp dir `dir` (removed when
/// dropped; a restart over it finds the data), and its client.
pub async fn start_temp(capacity: u64) -> (tempfile::TempDir, Server) {
    start_temp_with(capacity, ADMIN_PW, |_| {}).await
}

/// [`start_temp`] with the configuration as `edit` leaves it and `admin_password` for the
/// bootstrap `admin`.
pub async fn start_temp_with(
    capacity: u64,
    admin_password: &str,
    edit: impl FnOnce(&mut GatewayConfig),
) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), capacity);
    edit(&mut cfg);
    let s = start_with_admin(cfg, admin_password).await;
    (dir, s)
}

/// An already started gateway served on 127.0.0.1:0, and its client.
pub async fn start_state(state: Arc<helios_bins::gateway::State>) -> Server {
    server(serve(state).await)
}

/// A gateway on 127.0.0.1:0 whose `admin` has `admin_password`, and its client.
pub async fn start_with_admin(cfg: GatewayConfig, admin_password: &str) -> Server {
    start_state(boot(cfg, admin_password).await).await
}

/// A gateway over an already open `atlas` (admin password [`ADMIN_PW`]), on `ctx`'s clock
/// and randomness, served on 127.0.0.1:0, and its client.
pub async fn start_over(
    cfg: GatewayConfig,
    atlas: helios_atlas::Atlas,
    ctx: helios_bins::app::Context,
) -> Server {
    let state = tokio::task::spawn_blocking(move || {
        helios_bins::gateway::start_with_in(cfg, atlas, Some(ADMIN_PW.into()), &ctx)
    })
    .await
    .unwrap()
    .unwrap();
    start_state(state).await
}

/// The harness around a served gateway.
pub fn server((addr, state, tx, done): Served) -> Server {
    let client = Client::builder(TokioExecutor::new()).build_http();
    Server {
        api: Api { addr, client },
        state,
        stop: Some(tx),
        done,
    }
}

/// One request of a script and the status it must get: the method, the path, the bearer
/// token, the JSON body and the status (see [`Api::expect_each`]).
pub type Step<'a> = (Method, &'a str, Option<&'a str>, Option<Value>, u16);

impl Api {
    /// Sends one request: a JSON `body`, a bearer `token` and `headers` if any; the status,
    /// the headers and the body as JSON (or as a JSON string if it is not JSON).
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

    /// [`Api::call`] without extra headers: the status and the body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (st, _, v) = self.call(method, path, token, body, &[]).await;
        (st, v)
    }

    /// [`Api::send`], asserting that the answer's status is `want` (the message names
    /// the request and the body): the body.
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        want: u16,
    ) -> Value {
        let what = format!("{method} {path}");
        let (st, v) = self.send(method, path, token, body).await;
        assert_eq!(st, StatusCode::from_u16(want).unwrap(), "{what}: {v}");
        v
    }

    /// Sends `steps` one after the other, asserting each one's status as
    /// [`Api::expect`] does.
    pub async fn expect_each<'a>(&self, steps: impl IntoIterator<Item = Step<'a>>) {
        for (method, path, token, body, want) in steps {
            self.expect(method, path, token, body, want).await;
        }
    }

    /// A GET of `path` with `token`: the status and the body.
    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, Some(token), None).await
    }

    /// A PUT of `{"value": value}` to `path` with `token` (a KV write): the status and the
    /// body.
    pub async fn put_value(&self, path: &str, token: &str, value: Value) -> (StatusCode, Value) {
        let body = json!({ "value": value });
        self.send(Method::PUT, path, Some(token), Some(body)).await
    }
}

impl Server {
    /// A client of the gateway whose connections come from the local address `from` (any
    /// of 127.0.0.0/8 reaches the gateway on 127.0.0.1).
    pub fn client_at(&self, from: Ipv4Addr) -> Api {
        let mut connector = HttpConnector::new();
        connector.set_local_address(Some(IpAddr::V4(from)));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Api {
            addr: self.addr,
            client,
        }
    }

    /// Stops the server; panics if `run` failed.
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

/// The JSON body of a login as `user` with `password`.
pub fn credentials(user: &str, password: &str) -> Option<Value> {
    Some(json!({"username": user, "password": password}))
}

/// Registers `user` with `password`, asserting `201 Created`: the new user (its `id`).
pub async fn register(s: &Api, user: &str, password: &str) -> Value {
    let path = "/api/v1/auth/register";
    s.expect(Method::POST, path, None, credentials(user, password), 201)
        .await
}

/// A login as `user` with `password`, whatever it answers: the status and the body.
pub async fn try_login(s: &Api, user: &str, password: &str) -> (StatusCode, Value) {
    let body = credentials(user, password);
    s.send(Method::POST, "/api/v1/auth/login", None, body).await
}

/// Logs `user` in with `password`, asserting `200 OK` and an access token: the whole
/// answer (the access and refresh tokens).
pub async fn login_pair(s: &Api, user: &str, password: &str) -> Value {
    let (st, v) = try_login(s, user, password).await;
    assert_eq!(st, StatusCode::OK, "login {user}: {v}");
    assert!(v["access_token"].is_string(), "login {user}: {v}");
    v
}

/// Logs `user` in with `password`: its access token.
pub async fn login_with(s: &Api, user: &str, password: &str) -> String {
    access_token(&login_pair(s, user, password).await)
}

/// The bootstrap `admin`'s access token (password [`ADMIN_PW`]).
pub async fn admin_token(s: &Api) -> String {
    login_with(s, "admin", ADMIN_PW).await
}

/// Registers `user` with [`USER_PW`] (or finds it registered) and logs it in, asserting a
/// bearer token: its access token.
pub async fn login(s: &Api, user: &str) -> String {
    let path = "/api/v1/auth/register";
    let (st, _) = s
        .send(Method::POST, path, None, credentials(user, USER_PW))
        .await;
    assert!(
        st == StatusCode::CREATED || st == StatusCode::CONFLICT,
        "{st}"
    );
    let pair = login_pair(s, user, USER_PW).await;
    assert_eq!(pair["token_type"], "Bearer");
    access_token(&pair)
}

/// Enqueues the job `body` with `token`: the status and the body.
pub async fn enqueue(s: &Api, token: &str, body: Value) -> (StatusCode, Value) {
    s.send(Method::POST, "/api/v1/jobs", Some(token), Some(body))
        .await
}

/// Claims jobs with `token` (`body`: the queue, the worker, the lease): the status and the
/// body.
pub async fn claim(s: &Api, token: &str, body: Value) -> (StatusCode, Value) {
    s.send(Method::POST, "/api/v1/jobs/claim", Some(token), Some(body))
        .await
}

/// The access token of a login's answer.
pub fn access_token(pair: &Value) -> String {
    pair["access_token"].as_str().unwrap().to_owned()
}

/// The id of the user called `name`, as `/admin/users` lists it to `admin`'s token.
pub async fn user_id(s: &Api, admin: &str, name: &str) -> String {
    let (_, users) = s.get("/admin/users", admin).await;
    users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == name)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A problem answer's type, without the `https://helios.dev/problems/` prefix.
pub fn problem_type(v: &Value) -> &str {
    v["type"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("https://helios.dev/problems/")
}
