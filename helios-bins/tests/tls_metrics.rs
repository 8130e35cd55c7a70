//! TLS on the API listener and the separate metrics listener, over real sockets on
//! 127.0.0.1:0: HTTP/1.1 and HTTP/2 (ALPN) over rustls with a self-signed certificate
//! made by rcgen; a plain-text client on the TLS port is dropped without hurting the
//! server; bad PEM files fail the start naming the config key; with `metrics_listen` set,
//! `/metrics` is served there and 404 on the API listener.

mod common;

use bytes::Bytes;
use common::tls::{get, http1_over, http2_over, pki, tls_stream};
use common::{ADMIN_PW, config, start};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn tls_serves_http1_and_http2_chosen_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 100);
    let pki = pki(dir.path(), &mut cfg);
    let s = start(cfg).await;

    // HTTP/1.1.
    let tls = tls_stream(s.addr, &pki, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut send = http1_over(tls).await;
    let resp = send.send_request(get(s.addr, "/healthz")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"{\"status\":\"ok\"}\n");
    // Protected routes are protected over TLS too.
    let resp = send
        .send_request(get(s.addr, "/api/v1/kv/x"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // HTTP/2.
    let tls = tls_stream(s.addr, &pki, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut send = http2_over(tls).await;
    let resp = send.send_request(get(s.addr, "/healthz")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    s.stop().await;
}

#[tokio::test]
async fn plain_text_and_stalled_handshakes_are_dropped_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 100);
    cfg.http.header_read_timeout_ms = 300;
    let pki = pki(dir.path(), &mut cfg);
    let s = start(cfg).await;

    // Plain HTTP on the TLS port: not a TLS record, the connection is closed.
    let mut raw = TcpStream::connect(s.addr).await.unwrap();
    raw.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server closes the connection");
    assert!(
        !buf.starts_with(b"HTTP/1.1 200"),
        "no plain-text answer on a TLS port"
    );

    // A client that connects and never starts a handshake is cut off by the
    // header read timeout.
    let mut idle = TcpStream::connect(s.addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut one = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut one)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "closed: {r:?}");
    assert!(started.elapsed() < Duration::from_secs(4));

    // Still serving.
    let mut send = http1_over(tls_stream(s.addr, &pki, &[b"http/1.1"]).await).await;
    let resp = send.send_request(get(s.addr, "/healthz")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    s.stop().await;
}

#[test]
fn bad_tls_files_fail_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 100);
    pki(dir.path(), &mut cfg);

    let mut missing = cfg.clone();
    missing.tls.cert_file = dir.path().join("nope.pem").display().to_string();
    let e = helios_bins::gateway::start(missing, Some(ADMIN_PW.into())).unwrap_err();
    assert!(e.contains("tls.cert_file"), "{e}");

    // A key that belongs to another certificate.
    let other = rcgen::generate_simple_self_signed(vec!["other".to_owned()]).unwrap();
    let other_key = dir.path().join("other-key.pem");
    std::fs::write(&other_key, other.signing_key.serialize_pem()).unwrap();
    let mut mismatch = cfg.clone();
    mismatch.tls.key_file = other_key.display().to_string();
    let e = helios_bins::gateway::start(mismatch, Some(ADMIN_PW.into())).unwrap_err();
    assert!(e.contains("tls.key_file"), "{e}");

    // Not PEM at all.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let mut not_pem = cfg.clone();
    not_pem.tls.cert_file = junk.display().to_string();
    let e = helios_bins::gateway::start(not_pem, Some(ADMIN_PW.into())).unwrap_err();
    assert!(e.contains("tls.cert_file"), "{e}");

    // Only one of the two files (with backups apart from the data, as validate asks;
    // the path is only compared, never created).
    let mut half = cfg;
    half.backup_dir = dir.path().join("..").join("helios-test-backups-elsewhere");
    half.tls.key_file = String::new();
    let e = half.validate().unwrap_err();
    assert_eq!(e.key, "tls.key_file");
}

#[tokio::test]
async fn metrics_on_their_own_listener_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 100);
    // The address itself is bound by the test; setting it moves /metrics off the API.
    cfg.metrics_listen = "127.0.0.1:9".into();
    let s = start(cfg).await;
    let (st, _) = s.send(Method::GET, "/metrics", None, None).await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "never open on the API listener"
    );
    let (st, _) = s.send(Method::GET, "/healthz", None, None).await;
    assert_eq!(st, StatusCode::OK);

    let state = s.state.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let maddr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(helios_bins::gateway::run_metrics(listener, state, async {
        let _ = rx.await;
    }));
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let resp = client
        .get(format!("http://{maddr}/metrics").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("helios_requests_total"), "{text}");
    // Liveness answers there too (a container's health check); nothing of the API does.
    let resp = client
        .get(format!("http://{maddr}/healthz").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "liveness");
    let resp = client
        .get(format!("http://{maddr}/api/v1").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::NOT_FOUND,
        "metrics and liveness only"
    );
    let _ = tx.send(());
    task.await.unwrap().unwrap();
    s.stop().await;
}
