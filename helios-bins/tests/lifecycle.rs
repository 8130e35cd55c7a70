//! Connection lifecycle over raw sockets on 127.0.0.1:0: a slow request head is cut off
//! by the header read timeout, an idle socket that never sends a byte is closed by the
//! idle timeout, and a graceful shutdown lets an in-flight request finish (its response
//! arrives) before `run` returns with ATLAS closed.

use helios_bins::config::GatewayConfig;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

async fn start(
    cfg: GatewayConfig,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let (addr, _, tx, done) = common::spawn(cfg).await;
    (addr, tx, done)
}

fn config(dir: &std::path::Path) -> GatewayConfig {
    let mut c = GatewayConfig {
        data_dir: dir.to_path_buf(),
        ..GatewayConfig::default()
    };
    c.auth.bcrypt_cost = 4;
    c.http.header_read_timeout_ms = 300;
    c.http.idle_timeout_ms = 400;
    c
}

/// Reads until EOF or error; returns what arrived and how long it took.
async fn read_until_closed(s: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    (out, started.elapsed())
}

#[tokio::test]
async fn slow_headers_and_idle_sockets_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, tx, done) = start(config(dir.path())).await;
    // A request head that never completes.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (_, waited) = read_until_closed(&mut slow).await;
    assert!(
        waited < Duration::from_secs(5),
        "slow head closed by the timeout, took {waited:?}"
    );
    // A socket that sends nothing at all.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let (got, waited) = read_until_closed(&mut idle).await;
    assert!(got.is_empty());
    assert!(
        waited < Duration::from_secs(5),
        "idle socket closed, took {waited:?}"
    );
    // A well-behaved request still works.
    let mut ok = TcpStream::connect(addr).await.unwrap();
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (got, _) = read_until_closed(&mut ok).await;
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let _ = tx.send(());
    done.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.http.body_read_timeout_ms = 300;
    cfg.http.idle_timeout_ms = 5_000;
    let (addr, tx, done) = start(cfg).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Half of a declared 100-byte body, then nothing.
    s.write_all(
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"username\":",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answered before 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let _ = tx.send(());
    done.await.unwrap().unwrap();
}

#[tokio::test]
async fn connections_past_the_cap_wait_for_a_slot() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.http.connections_max = 1;
    cfg.http.idle_timeout_ms = 10_000;
    cfg.http.header_read_timeout_ms = 10_000;
    let (addr, tx, done) = start(cfg).await;
    // The one slot, held by a connection that is open but idle.
    let holder = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut waiting = TcpStream::connect(addr).await.unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let early = tokio::time::timeout(Duration::from_millis(500), waiting.read(&mut buf)).await;
    assert!(early.is_err(), "not served while the cap is reached");
    // The slot frees up: the waiting request is served.
    drop(holder);
    let (got, _) = read_until_closed(&mut waiting).await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    let _ = tx.send(());
    done.await.unwrap().unwrap();
}

#[tokio::test]
async fn too_large_or_too_many_headers_get_431() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, tx, done) = start(config(dir.path())).await;
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nx-big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("Connection: close\r\n\r\n");
    for request in [big, many] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        // The server may answer and close before reading everything.
        let _ = s.write_all(request.as_bytes()).await;
        let (got, _) = read_until_closed(&mut s).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    }
    let _ = tx.send(());
    done.await.unwrap().unwrap();
}

/// Sends `bytes` one at a time, `gap` apart, until the server closes the connection (or
/// they run out). Returns how long the connection lived.
async fn trickle(s: &mut TcpStream, bytes: &[u8], gap: Duration) -> Duration {
    let started = Instant::now();
    for b in bytes {
        if s.write_all(std::slice::from_ref(b)).await.is_err() {
            break;
        }
        let mut one = [0u8; 1];
        match tokio::time::timeout(gap, s.read(&mut one)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            // A byte from the server (an HTTP/2 SETTINGS frame): keep going.
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    started.elapsed()
}

#[tokio::test]
async fn trickled_request_heads_are_cut_off_over_http1_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // The HTTP/1 head timeout is long here: the idle timeout (400 ms) must do the work.
    cfg.http.header_read_timeout_ms = 60_000;
    let (addr, tx, done) = start(cfg).await;
    let gap = Duration::from_millis(50);

    // HTTP/1.1: a header line a byte every 50 ms, never finished.
    let mut h1 = TcpStream::connect(addr).await.unwrap();
    let head = format!("GET /healthz HTTP/1.1\r\nx-pad: {}", "a".repeat(400));
    let lived = trickle(&mut h1, head.as_bytes(), gap).await;
    assert!(
        lived < Duration::from_secs(3),
        "HTTP/1 trickle lived {lived:?}"
    );

    // HTTP/2 (prior knowledge): the preface and SETTINGS, then a HEADERS frame whose
    // payload arrives a byte every 50 ms. hyper has no header timeout for HTTP/2.
    let mut h2 = TcpStream::connect(addr).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    h2.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap(); // empty SETTINGS
    // HEADERS, stream 1, END_HEADERS, 1000-byte payload (never completed).
    h2.write_all(&[0, 0x03, 0xE8, 1, 0x4, 0, 0, 0, 1])
        .await
        .unwrap();
    let lived = trickle(&mut h2, &[0x82; 1000], gap).await;
    assert!(
        lived < Duration::from_secs(3),
        "HTTP/2 trickle lived {lived:?}"
    );

    // A well-behaved request still works.
    let mut ok = TcpStream::connect(addr).await.unwrap();
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (got, _) = read_until_closed(&mut ok).await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    let _ = tx.send(());
    done.await.unwrap().unwrap();
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.http.idle_timeout_ms = 10_000;
    let (addr, tx, done) = start(cfg).await;
    // Log in as admin over a raw socket, then start a 1.5 s long-poll claim.
    let login = r#"{"username":"admin","password":"admin password 1"}"#;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{login}",
            login.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (got, _) = read_until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&got).into_owned();
    let token = text
        .split("\"access_token\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    let claim = r#"{"queue":"q","worker_id":"w","lease_seconds":5,"wait_seconds":1}"#;
    let mut inflight = TcpStream::connect(addr).await.unwrap();
    inflight
        .write_all(
            format!(
                "POST /api/v1/jobs/claim HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{claim}",
                claim.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Shut down while the claim is waiting: it still gets its answer.
    let _ = tx.send(());
    let (got, _) = read_until_closed(&mut inflight).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"jobs\":[]"), "{text}");
    done.await.unwrap().unwrap();
    // ATLAS was closed cleanly: the directory reopens at once.
    helios_atlas::Atlas::open(dir.path(), helios_atlas::Options::default()).unwrap();
}
