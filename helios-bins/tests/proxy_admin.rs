//! The proxy's dynamic configuration on the gateway: `/admin/proxy/routes` and
//! `/admin/proxy/backends` (permission `proxy:admin`), exact statuses and problems, what
//! lands in the store, and who may touch it. Everything on 127.0.0.1.

mod common;

use common::*;
use http::Method;
use serde_json::{Value, json};

/// A user `name` holding only `permissions` (through a role of the same name): its token.
async fn user_with(s: &Server, admin: &str, name: &str, permissions: &[&str]) -> String {
    let token = login(s, name).await;
    s.expect(
        Method::PUT,
        &format!("/admin/roles/{name}"),
        Some(admin),
        Some(json!({ "permissions": permissions })),
        204,
    )
    .await;
    let id = user_id(s, admin, name).await;
    s.expect(
        Method::POST,
        &format!("/admin/users/{id}/roles"),
        Some(admin),
        Some(json!({ "role": name })),
        204,
    )
    .await;
    s.expect(
        Method::DELETE,
        &format!("/admin/users/{id}/roles/user"),
        Some(admin),
        None,
        204,
    )
    .await;
    token
}

fn detail(v: &Value) -> &str {
    v["detail"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn routes_and_backends_are_created_checked_and_deleted() {
    let (_dir, s) = start_temp(1_000).await;
    let admin = admin_token(&s).await;
    let ops = user_with(&s, &admin, "proxyops", &["proxy:admin"]).await;
    let t = Some(ops.as_str());
    // Created, then replaced; what is stored comes back.
    let v = s
        .expect(
            Method::PUT,
            "/admin/proxy/backends/api1",
            t,
            Some(json!({"url": "http://127.0.0.1:9001"})),
            201,
        )
        .await;
    assert_eq!(v, json!({"id": "api1", "url": "http://127.0.0.1:9001"}));
    s.expect(
        Method::PUT,
        "/admin/proxy/backends/api1",
        t,
        Some(json!({"id": "api1", "url": "http://127.0.0.1:9002"})),
        200,
    )
    .await;
    // Refusals name the field.
    for (path, body, field) in [
        (
            "/admin/proxy/backends/api2",
            json!({"url": "https://x"}),
            "backend.url",
        ),
        (
            "/admin/proxy/backends/api2",
            json!({"id": "other", "url": "http://x:1"}),
            "id",
        ),
        (
            "/admin/proxy/backends/bad%20id",
            json!({"url": "http://x:1"}),
            "backend.id",
        ),
        (
            "/admin/proxy/routes/api",
            json!({"path_prefix": "/api/", "backends": [{"backend": "nope"}]}),
            "route.backends",
        ),
        (
            "/admin/proxy/routes/api",
            json!({"path_prefix": "api", "backends": [{"backend": "api1"}]}),
            "route.path_prefix",
        ),
        (
            "/admin/proxy/routes/api",
            json!({"path_prefix": "/", "backends": [{"backend": "api1"}], "balance": "fastest"}),
            "route.balance",
        ),
        (
            "/admin/proxy/routes/api",
            json!({"path_prefix": "/", "backends": [{"backend": "api1", "weight": 0}]}),
            "route.backends.weight",
        ),
    ] {
        let v = s.expect(Method::PUT, path, t, Some(body), 400).await;
        assert_eq!(problem_type(&v), "invalid-field", "{path}: {v}");
        assert!(detail(&v).contains(field), "{path}: {field} not in {v}");
    }
    let v = s
        .expect(
            Method::PUT,
            "/admin/proxy/routes/api",
            t,
            Some(json!({"path_prefix": "/api/", "extra": 1, "backends": []})),
            400,
        )
        .await;
    assert_eq!(problem_type(&v), "malformed-json");
    let route = json!({"path_prefix": "/api/", "host": "app.test", "backends": [{"backend": "api1", "weight": 3}], "balance": "weighted"});
    let v = s
        .expect(
            Method::PUT,
            "/admin/proxy/routes/api",
            t,
            Some(route.clone()),
            201,
        )
        .await;
    assert_eq!(v["balance"], "weighted");
    assert_eq!(v["backends"][0]["weight"], 3);
    // Another route on the same host and prefix is refused.
    let v = s
        .expect(
            Method::PUT,
            "/admin/proxy/routes/api-two",
            t,
            Some(route.clone()),
            400,
        )
        .await;
    assert!(detail(&v).contains("route.path_prefix"), "{v}");
    // Lists and items.
    let (_, v) = s.get("/admin/proxy/routes", &ops).await;
    assert_eq!(v["routes"].as_array().unwrap().len(), 1);
    assert_eq!(v["routes"][0]["id"], "api");
    let (_, v) = s.get("/admin/proxy/backends", &ops).await;
    assert_eq!(v["backends"][0]["url"], "http://127.0.0.1:9002");
    s.expect(Method::GET, "/admin/proxy/routes/api", t, None, 200)
        .await;
    s.expect(Method::GET, "/admin/proxy/routes/none", t, None, 404)
        .await;
    // A backend in use is not deleted; the problem names the routes.
    let v = s
        .expect(Method::DELETE, "/admin/proxy/backends/api1", t, None, 409)
        .await;
    assert_eq!(problem_type(&v), "backend-in-use");
    assert!(detail(&v).contains("\"api\""), "{v}");
    s.expect_each([
        (Method::DELETE, "/admin/proxy/routes/api", t, None, 204),
        (Method::DELETE, "/admin/proxy/routes/api", t, None, 404),
        (Method::DELETE, "/admin/proxy/backends/api1", t, None, 204),
        (Method::DELETE, "/admin/proxy/backends/api1", t, None, 404),
    ])
    .await;
    // What the API acknowledged is what the store holds, under the documented keys.
    s.expect(
        Method::PUT,
        "/admin/proxy/backends/b",
        t,
        Some(json!({"url": "http://10.0.0.1"})),
        201,
    )
    .await;
    let stored = s.state.atlas.get("proxy:backend:b").expect("stored");
    let spec: Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(spec, json!({"id": "b", "url": "http://10.0.0.1"}));
    s.stop().await;
}

#[tokio::test]
async fn only_proxy_admin_holders_touch_the_proxy() {
    let (_dir, s) = start_temp(1_000).await;
    let admin = admin_token(&s).await;
    let user = login(&s, "plain").await;
    let users_admin = user_with(&s, &admin, "useradmin", &["users:admin"]).await;
    let ops = user_with(&s, &admin, "proxyops", &["proxy:admin"]).await;
    let body = json!({"url": "http://127.0.0.1:9001"});
    for (token, want) in [
        (None, 401),
        (Some(user.as_str()), 403),
        (Some(users_admin.as_str()), 403),
        (Some(ops.as_str()), 201),
        (Some(admin.as_str()), 200),
    ] {
        s.expect(
            Method::PUT,
            "/admin/proxy/backends/x",
            token,
            Some(body.clone()),
            want,
        )
        .await;
        let list_want = if want >= 400 { want } else { 200 };
        s.expect(Method::GET, "/admin/proxy/backends", token, None, list_want)
            .await;
    }
    // A users:admin cannot hand itself the permission either.
    s.expect(
        Method::PUT,
        "/admin/roles/useradmin",
        Some(users_admin.as_str()),
        Some(json!({"permissions": ["users:admin", "proxy:admin"]})),
        403,
    )
    .await;
    s.stop().await;
}

/// A backend on 127.0.0.1:0 answering every request `200 {name}`.
async fn named_backend(name: &'static str) -> std::net::SocketAddr {
    use hyper_util::rt::TokioIo;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(name.as_bytes())),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A proxy following the gateway at `gateway` as `username`.
struct Follower {
    addr: std::net::SocketAddr,
    state: std::sync::Arc<helios_bins::proxy::State>,
    stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

async fn follower(gateway: std::net::SocketAddr, username: &str) -> Follower {
    use helios_bins::proxy::control::Credentials;
    let cfg = helios_proxy::ProxyConfig {
        listen: "127.0.0.1:0".into(),
        control: format!("http://{gateway}"),
        ..helios_proxy::ProxyConfig::default()
    };
    let state = helios_bins::proxy::start(
        cfg,
        &helios_bins::config::TlsSection::default(),
        &helios_bins::app::Context::system(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_run, run_stopped) = tokio::sync::oneshot::channel::<()>();
    let (stop_follow, follow_stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(helios_bins::proxy::run(listener, state.clone(), async {
        let _ = run_stopped.await;
    }));
    let creds = Credentials::Login {
        username: username.into(),
        password: USER_PW.into(),
    };
    tokio::spawn(helios_bins::proxy::follow_control(
        state.clone(),
        creds,
        async {
            let _ = follow_stopped.await;
        },
    ));
    Follower {
        addr,
        state,
        stop: vec![stop_run, stop_follow],
    }
}

/// `GET path` through the proxy at `addr` with Host `app.test`: status and body.
async fn through(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// Waits until `GET path` through `addr` answers `want` (200): how long it took.
async fn until_answer(addr: std::net::SocketAddr, path: &str, want: &str) -> std::time::Duration {
    let started = std::time::Instant::now();
    loop {
        let (st, body) = through(addr, path).await;
        if st == 200 && body == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{path} never answered {want} (last {st} {body})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_proxy_following_the_gateway_applies_changes_within_a_second_under_load() {
    let (_dir, s) = start_temp(1_000_000).await;
    let admin = admin_token(&s).await;
    let ops = user_with(&s, &admin, "proxyops", &["proxy:admin"]).await;
    let t = Some(ops.as_str());
    let (one, two) = (named_backend("one").await, named_backend("two").await);
    for (id, addr) in [("one", one), ("two", two)] {
        s.expect(
            Method::PUT,
            &format!("/admin/proxy/backends/{id}"),
            t,
            Some(json!({"url": format!("http://{addr}")})),
            201,
        )
        .await;
    }
    // The proxy starts with no route; the snapshot brings none yet.
    let p = follower(s.addr, "proxyops").await;
    assert_eq!(through(p.addr, "/").await.0, 404);
    // A route created on the gateway is served within a second.
    s.expect(
        Method::PUT,
        "/admin/proxy/routes/site",
        t,
        Some(json!({"path_prefix": "/", "backends": [{"backend": "one"}]})),
        201,
    )
    .await;
    let took = until_answer(p.addr, "/", "one").await;
    assert!(took < std::time::Duration::from_secs(1), "{took:?}");
    // Under load, a change of backend fails no request and lands within a second.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            let addr = p.addr;
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let (st, body) = through(addr, "/").await;
                    assert_eq!(st, 200, "{body}");
                    assert!(body == "one" || body == "two", "{body}");
                    n += 1;
                }
                n
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    s.expect(
        Method::PUT,
        "/admin/proxy/routes/site",
        t,
        Some(json!({"path_prefix": "/", "backends": [{"backend": "two"}]})),
        200,
    )
    .await;
    let took = until_answer(p.addr, "/", "two").await;
    assert!(took < std::time::Duration::from_secs(1), "{took:?}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut total = 0;
    for c in clients {
        total += c.await.expect("no failed request under the change");
    }
    assert!(total > 8, "{total}");
    // A delete takes the route out.
    s.expect(Method::DELETE, "/admin/proxy/routes/site", t, None, 204)
        .await;
    let started = std::time::Instant::now();
    while through(p.addr, "/").await.0 != 404 {
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(p.state.route_count(), 0);
    for s in p.stop {
        let _ = s.send(());
    }
    s.stop().await;
}

/// An open feed: the raw stream after its head.
struct Feed {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

/// Opens `GET /admin/proxy/feed` with `token` and `extra` header lines: the status and,
/// for a 200, the stream.
async fn open_feed(addr: std::net::SocketAddr, token: &str, extra: &str) -> (u16, Option<Feed>) {
    open_feed_at(addr, "/admin/proxy/feed", token, extra).await
}

async fn open_feed_at(
    addr: std::net::SocketAddr,
    path: &str,
    token: &str,
    extra: &str,
) -> (u16, Option<Feed>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n{extra}\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before the head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    if status != 200 {
        return (status, None);
    }
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    let rest = buf[head_end + 4..].to_vec();
    (status, Some(Feed { stream, buf: rest }))
}

impl Feed {
    /// The next event (type, id, data JSON), skipping comments; `None` if the stream
    /// ends. The body is chunked: chunk-size lines are skipped as they carry no `:`.
    async fn next(&mut self) -> Option<(String, u64, Value)> {
        use tokio::io::AsyncReadExt;
        loop {
            let text = String::from_utf8_lossy(&self.buf).into_owned();
            if let Some(i) = text.find("\n\n") {
                let block = text[..i].to_owned();
                self.buf.drain(..i + 2);
                let mut kind = None;
                let mut id = 0;
                let mut data = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        kind = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse().unwrap();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).unwrap());
                    }
                }
                if let (Some(k), Some(d)) = (kind, data) {
                    return Some((k, id, d));
                }
                continue;
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                self.stream.read(&mut chunk),
            )
            .await
            .expect("an event or the end within 10 s");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

#[tokio::test]
async fn the_feed_starts_with_a_snapshot_resumes_by_id_and_ends_with_the_token() {
    let (_dir, s) = start_temp_with(1_000_000, ADMIN_PW, |c| c.auth.access_ttl_s = 3).await;
    let admin = admin_token(&s).await;
    let a = Some(admin.as_str());
    s.expect(
        Method::PUT,
        "/admin/proxy/backends/b1",
        a,
        Some(json!({"url": "http://127.0.0.1:9001"})),
        201,
    )
    .await;
    let (st, feed) = open_feed(s.addr, &admin, "").await;
    assert_eq!(st, 200);
    let mut feed = feed.unwrap();
    let (kind, snap_id, data) = feed.next().await.unwrap();
    assert_eq!(kind, "snapshot");
    assert_eq!(data["seq"], snap_id);
    assert_eq!(data["backends"][0]["id"], "b1");
    assert_eq!(data["routes"], json!([]));
    // Changes follow, in order, each with its sequence number.
    s.expect(
        Method::PUT,
        "/admin/proxy/routes/r",
        a,
        Some(json!({"path_prefix": "/", "backends": [{"backend": "b1"}]})),
        201,
    )
    .await;
    s.expect(Method::DELETE, "/admin/proxy/routes/r", a, None, 204)
        .await;
    // Writes elsewhere in the store are not proxy changes.
    s.put_value("/api/v1/kv/x", &admin, json!(1)).await;
    let (k1, id1, d1) = feed.next().await.unwrap();
    assert_eq!(k1, "change");
    assert!(id1 > snap_id);
    assert_eq!(d1["changes"][0]["key"], "proxy:route:r");
    let spec: Value = serde_json::from_str(d1["changes"][0]["value"].as_str().unwrap()).unwrap();
    assert_eq!(spec["path_prefix"], "/");
    let (k2, id2, d2) = feed.next().await.unwrap();
    assert_eq!(
        (k2.as_str(), d2["changes"][0]["deleted"].as_bool()),
        ("change", Some(true))
    );
    assert!(id2 > id1);
    // Resuming after the first change gives the second, and no snapshot.
    let (_, resumed) = open_feed(s.addr, &admin, &format!("Last-Event-ID: {id1}\r\n")).await;
    let (k, id, _) = resumed.unwrap().next().await.unwrap();
    assert_eq!((k.as_str(), id), ("change", id2));
    // So does ?from; bad positions are refused by name.
    let (_, from) =
        open_feed_at(s.addr, &format!("/admin/proxy/feed?from={id2}"), &admin, "").await;
    let (k, id, _) = from.unwrap().next().await.unwrap();
    assert_eq!((k.as_str(), id), ("change", id2));
    let (st, v) = s
        .send(Method::GET, "/admin/proxy/feed?from=0", a, None)
        .await;
    assert_eq!(st, 400);
    assert!(detail(&v).contains("from"), "{v}");
    let (st, _) = open_feed(s.addr, &admin, "Last-Event-ID: soon\r\n").await;
    assert_eq!(st, 400);
    // A position compacted away starts over from a snapshot.
    let atlas = s.state.atlas.clone();
    tokio::task::spawn_blocking(move || atlas.rewrite_aof())
        .await
        .unwrap()
        .unwrap();
    let (_, old) = open_feed(s.addr, &admin, "Last-Event-ID: 1\r\n").await;
    let (k, _, d) = old.unwrap().next().await.unwrap();
    assert_eq!(k, "snapshot");
    assert_eq!(d["backends"][0]["id"], "b1");
    // The stream ends when the token expires (3 s here).
    let started = std::time::Instant::now();
    while feed.next().await.is_some() {}
    assert!(
        started.elapsed() < std::time::Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    s.stop().await;
}

#[tokio::test]
async fn an_open_feed_does_not_hold_the_shutdown() {
    let (_dir, s) = start_temp(1_000).await;
    let admin = admin_token(&s).await;
    let (_, feed) = open_feed(s.addr, &admin, "").await;
    let mut feed = feed.unwrap();
    assert_eq!(feed.next().await.unwrap().0, "snapshot");
    let started = std::time::Instant::now();
    s.stop().await;
    // The drain grace is 5 s in these tests; the feed ends well before.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(feed.next().await.is_none());
}

#[tokio::test]
async fn the_gateway_s_own_proxy_reads_the_routes_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1_000_000);
    cfg.embedded_proxy.enabled = true;
    let state = boot(cfg, ADMIN_PW).await;
    let proxy_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy_listener.local_addr().unwrap();
    let proxy = helios_bins::gateway::start_embedded_proxy(&state, proxy_listener).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(helios_bins::gateway::run_with_proxy(
        listener,
        state.clone(),
        Some(proxy),
        async {
            let _ = stopped.await;
        },
    ));
    let api = Api {
        addr,
        client: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http(),
    };
    let admin = admin_token(&api).await;
    let a = Some(admin.as_str());
    let backend = named_backend("inside").await;
    assert_eq!(through(proxy_addr, "/").await.0, 404);
    api.expect(
        Method::PUT,
        "/admin/proxy/backends/in",
        a,
        Some(json!({"url": format!("http://{backend}")})),
        201,
    )
    .await;
    api.expect(
        Method::PUT,
        "/admin/proxy/routes/all",
        a,
        Some(json!({"path_prefix": "/", "backends": [{"backend": "in"}]})),
        201,
    )
    .await;
    let took = until_answer(proxy_addr, "/", "inside").await;
    assert!(took < std::time::Duration::from_secs(1), "{took:?}");
    // Both stop on the one shutdown, the store closed after them.
    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(10), served)
        .await
        .expect("stopped in time")
        .unwrap()
        .unwrap();
    assert!(state.atlas.set("x", "y").is_err(), "the store is closed");
}

#[test]
fn the_embedded_proxy_settings_are_checked_by_name() {
    let (dir, backups) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut cfg = config(dir.path(), 1);
    cfg.backup_dir = backups.path().to_path_buf();
    cfg.validate().unwrap();
    cfg.embedded_proxy.enabled = true;
    cfg.embedded_proxy.listen = cfg.listen.clone();
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("embedded_proxy.listen"), "{e}");
    cfg.embedded_proxy.listen = "127.0.0.1:0".into();
    cfg.embedded_proxy.timeouts.connect_ms = 0;
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("embedded_proxy.timeouts.connect_ms"), "{e}");
    // Off, its settings are not looked at.
    cfg.embedded_proxy.enabled = false;
    cfg.validate().unwrap();
}
