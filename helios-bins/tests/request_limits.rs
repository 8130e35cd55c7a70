//! Authenticate and rate-limit before reading a body (issue 17, point 5), over raw
//! sockets on loopback:
//! - a request refused on its head (no token, bad token, a declared body over the limit)
//!   is answered before its body is sent, and its connection closed;
//! - failed authentications count against the address's rate limit: a 401 flood turns
//!   into 429;
//! - one address holds at most `connections_per_address_max` connections, and another
//!   address (127.0.0.2) still gets in;
//! - bodies in flight share `body_bytes_in_flight_max`: past it, 503 `overloaded`.

mod common;

use helios_bins::config::GatewayConfig;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const ADMIN_PASSWORD: &str = "limits-admin-Quartz-91-lantern";

async fn start(cfg: GatewayConfig) -> common::Server {
    common::start_with_admin(cfg, ADMIN_PASSWORD).await
}

async fn admin_token(s: &common::Server) -> String {
    common::login_with(s, "admin", ADMIN_PASSWORD).await
}

/// Reads one response head (and whatever body came with it) within 5 s.
async fn read_response(s: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 16 * 1024];
    let mut got = Vec::new();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("no answer within 5 s")
            .unwrap();
        got.extend_from_slice(&buf[..n]);
        if n == 0 || got.windows(4).any(|w| w == b"\r\n\r\n") {
            return String::from_utf8_lossy(&got).into_owned();
        }
    }
}

/// Whether the server closes `s` within 5 s (reads to EOF, ignoring a response).
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or(false)
}

fn head(method: &str, path: &str, token: Option<&str>, length: usize) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

fn config(dir: &std::path::Path) -> GatewayConfig {
    let mut c = common::config(dir, 1_000);
    c.http.body_size_max = 64 * 1024;
    c.http.body_bytes_in_flight_max = 64 * 1024;
    c
}

#[tokio::test]
async fn refusals_on_the_head_never_read_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(dir.path())).await;
    let token = admin_token(&s).await;
    // Declared 2 MiB, sent nothing of it: no token -> 401, bad token -> 401, a valid token
    // -> 413 (over the limit), each at once and with the connection closed.
    for (tok, want) in [
        (None, "401"),
        (Some("not.a.token"), "401"),
        (Some(token.as_str()), "413"),
    ] {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(head("PUT", "/api/v1/kv/big", tok, 2 * 1024 * 1024).as_bytes())
            .await
            .unwrap();
        let resp = read_response(&mut c).await;
        assert!(resp.starts_with(&format!("HTTP/1.1 {want}")), "{resp}");
        assert!(
            resp.to_ascii_lowercase().contains("connection: close"),
            "{resp}"
        );
        assert!(closed_by_server(&mut c).await, "{want}: left open");
    }
    // The credential routes take small bodies only (16 KiB), so anonymous bodies cannot
    // fill the in-flight budget.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(head("POST", "/api/v1/auth/login", None, 32 * 1024).as_bytes())
        .await
        .unwrap();
    let resp = read_response(&mut c).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(closed_by_server(&mut c).await);
    // Forbidden on the head too: a readonly-less user writing a namespace it cannot.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let user = common::login(&s, "bodyless").await;
    c.write_all(head("PUT", "/api/v1/ns/team/kv/k", Some(&user), 1024).as_bytes())
        .await
        .unwrap();
    let resp = read_response(&mut c).await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    s.stop().await;
}

#[tokio::test]
async fn a_flood_of_bad_tokens_turns_into_429() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.rate_limit.capacity = 20;
    cfg.rate_limit.refill_per_s = 1;
    let s = start(cfg).await;
    let mut statuses = Vec::new();
    for i in 0..60 {
        let token = if i % 2 == 0 { Some("garbage") } else { None };
        let (st, h, _) = s
            .call(http::Method::GET, "/api/v1/kv/x", token, None, &[])
            .await;
        if st == http::StatusCode::TOO_MANY_REQUESTS {
            assert!(h.contains_key("retry-after"));
        }
        statuses.push(st.as_u16());
    }
    assert_eq!(statuses[0], 401);
    assert!(
        statuses[40..].iter().all(|&s| s == 429),
        "the flood was never limited: {statuses:?}"
    );
    s.stop().await;
}

async fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    sock.connect(to).await.unwrap()
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.http.connections_per_address_max = 3;
    let s = start(cfg).await;
    // Three idle sockets from 127.0.0.1 are its whole share.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(connect_from("127.0.0.1", s.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fourth = connect_from("127.0.0.1", s.addr).await;
    assert!(
        closed_by_server(&mut fourth).await,
        "a fourth connection from one address was kept"
    );
    // Another address is served.
    let mut other = connect_from("127.0.0.2", s.addr).await;
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut other).await.starts_with("HTTP/1.1 200"));
    // A slot given back is usable again.
    drop(idle.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = connect_from("127.0.0.1", s.addr).await;
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut again).await.starts_with("HTTP/1.1 200"));
    s.stop().await;
}

#[tokio::test]
async fn bodies_in_flight_share_a_budget() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(dir.path())).await;
    let token = admin_token(&s).await;
    // One authenticated body of the whole budget, stalled after 10 bytes.
    let mut stalled = TcpStream::connect(s.addr).await.unwrap();
    stalled
        .write_all(head("PUT", "/api/v1/kv/a", Some(&token), 64 * 1024).as_bytes())
        .await
        .unwrap();
    stalled.write_all(b"{\"value\":1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The next body finds no budget left: 503 after waiting its second.
    let mut next = TcpStream::connect(s.addr).await.unwrap();
    let body = r#"{"value":2}"#;
    next.write_all(head("PUT", "/api/v1/kv/b", Some(&token), body.len()).as_bytes())
        .await
        .unwrap();
    next.write_all(body.as_bytes()).await.unwrap();
    let resp = read_response(&mut next).await;
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    assert!(resp.contains("overloaded"), "{resp}");
    // Once the stalled body is gone, writes go through again.
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (st, _, v) = s
        .call(
            http::Method::PUT,
            "/api/v1/kv/b",
            Some(&token),
            Some(serde_json::json!({"value": 2})),
            &[],
        )
        .await;
    assert_eq!(st, http::StatusCode::CREATED, "{v}");
    s.stop().await;
}

#[tokio::test]
async fn the_login_limit_does_not_become_the_api_limit() {
    // Both limiters persist buckets under `rate:{client}`: a spent login bucket, once
    // flushed, must not be resumed as the address's API bucket.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.rate_limit.capacity = 1_000;
    let s = start(cfg).await;
    // Distinct names: no per-name delay, only the address's login bucket is spent.
    for i in 0..30 {
        s.call(
            http::Method::POST,
            "/api/v1/auth/login",
            None,
            Some(serde_json::json!({"username": format!("nobody{i}"), "password": "x"})),
            &[],
        )
        .await;
    }
    // Both buckets persisted now (the flusher's interval is not waited for): the spent
    // login bucket is in the store under the address.
    let now = s.state.clock.now_ms();
    s.state.login_limiter.flush(now).unwrap();
    s.state.limiter.flush(now).unwrap();
    for i in 0..30 {
        let (st, _, v) = s
            .call(http::Method::GET, "/api/v1/kv/x", None, None, &[])
            .await;
        assert_eq!(st, http::StatusCode::UNAUTHORIZED, "call {i}: {v}");
    }
    s.stop().await;
}
