//! helios-proxy end to end on loopback: real backends (hyper servers on 127.0.0.1:0), the
//! proxy's `start`/`run` as the binary runs them, and clients speaking raw HTTP/1.1, so
//! what crosses the wire is what is asserted.

mod common;

use bytes::Bytes;
use helios_bins::app::Context;
use helios_bins::config::TlsSection;
use helios_proxy::{HealthCheck, HealthConfig, ProxyConfig};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A body fed through a channel, one frame per message, so a backend can stream slowly.
struct ChanBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChanBody {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        self.0
            .poll_recv(cx)
            .map(|m| m.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// A streamed body: `chunks` chunks of 64 KiB, with `pause` after the first one.
fn streamed(chunks: usize, pause: Duration) -> BoxBody {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for i in 0..chunks {
            if tx.send(Bytes::from(vec![b'x'; 64 * 1024])).await.is_err() {
                return;
            }
            if i == 0 {
                tokio::time::sleep(pause).await;
            }
        }
    });
    ChanBody(rx).boxed()
}

/// A backend named `name`; `healthy` decides what `/health` answers, `failing` makes
/// `/` answer 500; `kill` stops it at once (listener and connections closed).
struct Backend {
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    failing: Arc<AtomicBool>,
    tasks: Arc<parking_lot::Mutex<tokio::task::JoinSet<()>>>,
    /// Connections accepted so far.
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Backend {
    fn kill(&self) {
        self.tasks.lock().abort_all();
    }
}

async fn backend(name: &'static str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let healthy = Arc::new(AtomicBool::new(true));
    let failing = Arc::new(AtomicBool::new(false));
    let tasks = Arc::new(parking_lot::Mutex::new(tokio::task::JoinSet::new()));
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (h, f, t, n) = (
        healthy.clone(),
        failing.clone(),
        tasks.clone(),
        accepted.clone(),
    );
    tasks.lock().spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            n.fetch_add(1, Ordering::SeqCst);
            let (h, f) = (h.clone(), f.clone());
            t.lock().spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (h, f) = (h.clone(), f.clone());
                    async move {
                        if f.load(Ordering::SeqCst) && req.uri().path() == "/" {
                            return Ok(text(StatusCode::INTERNAL_SERVER_ERROR, name.to_owned()));
                        }
                        Ok::<_, std::convert::Infallible>(serve(name, &h, req).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Backend {
        addr,
        healthy,
        failing,
        tasks,
        accepted,
    }
}

fn text(status: StatusCode, body: String) -> Response<BoxBody> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r
}

async fn serve(name: &str, healthy: &AtomicBool, mut req: Request<Incoming>) -> Response<BoxBody> {
    match req.uri().path() {
        "/health" if healthy.load(Ordering::SeqCst) => text(StatusCode::OK, "ok".into()),
        "/health" => text(StatusCode::SERVICE_UNAVAILABLE, "down".into()),
        "/headers" => {
            let mut lines = String::new();
            for (n, v) in req.headers() {
                lines.push_str(&format!("{}: {}\n", n, v.to_str().unwrap_or("?")));
            }
            text(StatusCode::OK, lines)
        }
        "/echo" => Response::new(req.into_body().map_err(BoxError::from).boxed()),
        // 64 MiB, streamed.
        "/big" => Response::new(streamed(1024, Duration::ZERO)),
        // One chunk, then nothing for 10 s.
        "/stall" => Response::new(streamed(2, Duration::from_secs(10))),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            text(StatusCode::OK, "late".into())
        }
        "/fail" => text(StatusCode::INTERNAL_SERVER_ERROR, name.to_owned()),
        "/ws" => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut r = text(StatusCode::SWITCHING_PROTOCOLS, String::new());
            r.headers_mut().insert("upgrade", "echo".parse().unwrap());
            r.headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            r
        }
        _ => {
            let mut r = text(StatusCode::OK, name.to_owned());
            // Hop-by-hop headers the proxy must not pass on to the client.
            r.headers_mut()
                .insert("connection", "x-internal".parse().unwrap());
            r.headers_mut().insert("x-internal", "y".parse().unwrap());
            r.headers_mut()
                .insert("keep-alive", "timeout=5".parse().unwrap());
            r
        }
    }
}

/// A running proxy: its address and its stop switch.
struct Proxy {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
    state: Arc<helios_bins::proxy::State>,
}

impl Proxy {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.done.await.unwrap().unwrap();
    }
}

/// The quick start's config over `backends`, with fast health checks.
fn quick(backends: &[SocketAddr]) -> ProxyConfig {
    let urls: Vec<String> = backends.iter().map(|a| format!("http://{a}")).collect();
    let mut c = ProxyConfig::quick("127.0.0.1:0", &urls, None).unwrap();
    c.health = HealthConfig {
        interval_ms: 100,
        unhealthy_threshold: 1,
        healthy_threshold: 1,
        ..HealthConfig::default()
    };
    c.health_check = HealthCheck {
        path: "/health".into(),
        timeout_ms: 100,
        ..HealthCheck::default()
    };
    c
}

async fn proxy(cfg: ProxyConfig) -> Proxy {
    proxy_with(cfg, &TlsSection::default()).await
}

async fn proxy_with(cfg: ProxyConfig, tls: &TlsSection) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = helios_bins::proxy::start(cfg, tls, &Context::system()).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(helios_bins::proxy::run(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    Proxy {
        addr,
        stop: Some(stop),
        done,
        state,
    }
}

/// A response as read off the wire.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Decodes a chunked body.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = std::str::from_utf8(&b[..eol]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

fn parse(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// Sends `head` (and `body`) on a new connection with `Connection: close`, reads the whole
/// reply.
async fn call(addr: SocketAddr, head: &str, body: &[u8]) -> Reply {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let mut req = format!("{head}\r\nConnection: close\r\n");
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let body = body.to_vec();
    let writer = tokio::spawn(async move {
        w.write_all(req.as_bytes()).await.unwrap();
        w.write_all(&body).await.unwrap();
        w
    });
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut raw))
        .await
        .expect("reply in time")
        .unwrap();
    drop(writer.await);
    parse(&raw)
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    call(addr, &format!("GET {path} HTTP/1.1\r\nHost: app.test"), b"").await
}

#[tokio::test]
async fn round_robin_spreads_requests_and_headers_follow_the_rules() {
    let (a, b) = (backend("a").await, backend("b").await);
    let p = proxy(quick(&[a.addr, b.addr])).await;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let r = get(p.addr, "/").await;
        assert_eq!(r.status, 200);
        seen.push(r.text());
        // The backend's hop-by-hop headers stay behind; Via names the proxy.
        assert_eq!(r.header("x-internal"), None, "{r:?}");
        assert_eq!(r.header("keep-alive"), None, "{r:?}");
        assert!(r.header("via").unwrap().contains("helios-proxy"));
        assert!(r.header("x-request-id").is_some());
    }
    assert_eq!(seen.iter().filter(|s| *s == "a").count(), 5, "{seen:?}");
    assert_eq!(seen.iter().filter(|s| *s == "b").count(), 5, "{seen:?}");
    // What the backend receives: forwarding headers from the proxy, never the client's
    // claims (127.0.0.1 is not a trusted proxy), no hop-by-hop headers, the request id,
    // and the client's W3C trace context as it came (no spans are exported here).
    let r = call(
        p.addr,
        "GET /headers HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Secret: 1\r\nConnection: x-secret\r\nX-Request-Id: req-42\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\ntracestate: k=v",
        b"",
    )
    .await;
    let seen = r.text();
    assert!(seen.contains("x-forwarded-for: 127.0.0.1\n"), "{seen}");
    assert!(!seen.contains("6.6.6.6"), "{seen}");
    assert!(
        seen.contains("forwarded: for=127.0.0.1;proto=http;host=app.test\n"),
        "{seen}"
    );
    assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
    assert!(seen.contains("x-forwarded-host: app.test\n"), "{seen}");
    assert!(seen.contains("host: app.test\n"), "{seen}");
    assert!(seen.contains("via: 1.1 helios-proxy\n"), "{seen}");
    assert!(seen.contains("x-request-id: req-42\n"), "{seen}");
    assert!(
        seen.contains("traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n"),
        "{seen}"
    );
    assert!(seen.contains("tracestate: k=v\n"), "{seen}");
    assert!(!seen.contains("x-secret"), "{seen}");
    assert_eq!(r.header("x-request-id"), Some("req-42"));
    assert!(p.state.counters.requests_total.load(Ordering::Relaxed) >= 11);
    p.stop().await;
}

#[tokio::test]
async fn bodies_stream_through_both_ways() {
    let a = backend("a").await;
    let p = proxy(quick(&[a.addr])).await;
    let body: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let r = call(p.addr, "POST /echo HTTP/1.1\r\nHost: app.test", &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body, "the echoed body differs");
    p.stop().await;
}

#[tokio::test]
async fn a_dead_backend_is_retried_around_then_taken_out_by_its_health_checks() {
    let a = backend("a").await;
    // A port with nothing listening: connections are refused.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let p = proxy(quick(&[a.addr, dead])).await;
    // A refused connect is retried on the other backend: every GET succeeds.
    for _ in 0..6 {
        let r = get(p.addr, "/").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "a");
    }
    // The active checks mark it down (interval 100 ms, threshold 1).
    let mut down = false;
    for _ in 0..100 {
        if p.state.is_serving("default", 1) == Some(false) {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(down, "the dead backend still takes traffic");
    assert_eq!(p.state.is_serving("default", 0), Some(true));
    // A failing health endpoint takes a live backend out too, and back in when it heals.
    a.healthy.store(false, Ordering::SeqCst);
    let mut out = false;
    for _ in 0..100 {
        if p.state.is_serving("default", 0) == Some(false) {
            out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(out, "a backend failing its checks still takes traffic");
    let r = get(p.addr, "/").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    a.healthy.store(true, Ordering::SeqCst);
    let mut back = false;
    for _ in 0..100 {
        if get(p.addr, "/").await.status == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(back, "a healed backend does not come back");
    p.stop().await;
}

#[tokio::test]
async fn failures_map_to_502_504_and_404() {
    let a = backend("a").await;
    let mut cfg = quick(&[a.addr]);
    cfg.timeouts.response_headers_ms = 300;
    // Only host `app.test` is routed.
    cfg.routes[0].host = Some("app.test".into());
    let p = proxy(cfg).await;
    let r = get(p.addr, "/slow").await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().contains("backend-timeout"), "{}", r.text());
    let r = call(p.addr, "GET / HTTP/1.1\r\nHost: other.test", b"").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("no-route"), "{}", r.text());
    // A 500 is the backend's answer: passed on as is.
    let r = get(p.addr, "/fail").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "a");
    p.stop().await;

    // Every backend unreachable and no health verdict yet: 502 after the retries.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let mut cfg = quick(&[dead]);
    cfg.health.interval_ms = 60_000;
    cfg.health_check.timeout_ms = 1_000;
    let p = proxy(cfg).await;
    let r = get(p.addr, "/").await;
    assert!(r.status == 502 || r.status == 503, "{r:?}");
    p.stop().await;
}

#[tokio::test]
async fn upgrades_are_tunnelled() {
    let a = backend("a").await;
    let p = proxy(quick(&[a.addr])).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for msg in [&b"ping"[..], b"through the tunnel"] {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, msg);
    }
    assert_eq!(p.state.counters.upgrades_total.load(Ordering::Relaxed), 1);
    drop(s);
    p.stop().await;
}

#[tokio::test]
async fn a_silent_tunnel_is_closed_after_the_idle_timeout() {
    let a = backend("a").await;
    let mut cfg = quick(&[a.addr]);
    cfg.timeouts.idle_ms = 300;
    let p = proxy(cfg).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    // Bytes moving keep it open past the idle timeout...
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.write_all(b"x").await.unwrap();
        let mut got = [0u8; 1];
        s.read_exact(&mut got).await.unwrap();
    }
    // ...silence closes it.
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(end.is_ok(), "the silent tunnel stayed open");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    p.stop().await;
}

#[tokio::test]
async fn http2_clients_are_served() {
    let a = backend("a").await;
    let p = proxy(quick(&[a.addr])).await;
    let s = TcpStream::connect(p.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("http://app.test/headers")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let seen = String::from_utf8_lossy(&body);
    // The backend gets HTTP/1.1 with a Host made from the client's :authority.
    assert!(seen.contains("host: app.test\n"), "{seen}");
    p.stop().await;
}

#[tokio::test]
async fn metrics_report_counters_and_backend_health() {
    let a = backend("a").await;
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let p = proxy(quick(&[a.addr, dead])).await;
    for _ in 0..50 {
        if p.state.is_serving("default", 1) == Some(false) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(p.addr, "/").await.status, 200);
    assert_eq!(get(p.addr, "/fail").await.status, 500);
    assert_eq!(get(p.addr, "/fail").await.status, 500);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let maddr = l.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let m = tokio::spawn(helios_bins::proxy::run_metrics(l, p.state.clone(), async {
        let _ = stopped.await;
    }));
    let r = get(maddr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text();
    assert!(
        text.contains("# TYPE proxy_requests_total counter\nproxy_requests_total "),
        "{text}"
    );
    assert!(
        text.contains("proxy_backend_healthy{route=\"default\",backend=\"b1\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("proxy_backend_healthy{route=\"default\",backend=\"b2\"} 0\n"),
        "{text}"
    );
    // Per route and backend: responses by status, latency, breaker, ejections, retries.
    for want in [
        "proxy_responses_total{route=\"default\",backend=\"b1\",code=\"200\"} 1\n",
        "proxy_responses_total{route=\"default\",backend=\"b1\",code=\"500\"} 2\n",
        "# TYPE proxy_upstream_latency_seconds histogram\n",
        "proxy_upstream_latency_seconds_count{route=\"default\",backend=\"b1\"} 3\n",
        "proxy_upstream_latency_seconds_bucket{route=\"default\",backend=\"b1\",le=\"+Inf\"} 3\n",
        "proxy_backend_breaker_state{route=\"default\",backend=\"b1\"} 0\n",
        "proxy_backend_ejections_total{route=\"default\",backend=\"b2\"} 0\n",
        "proxy_backend_breaker_opened_total{route=\"default\",backend=\"b1\"} 0\n",
        "proxy_route_retries_total{route=\"default\"} 0\n",
        "proxy_route_unavailable_total{route=\"default\"} 0\n",
    ] {
        assert!(text.contains(want), "{want} not in:\n{text}");
    }
    assert_eq!(get(maddr, "/other").await.status, 404);
    stop.send(()).unwrap();
    m.await.unwrap();
    p.stop().await;
}

/// Reads until the connection ends or `limit` passes: (bytes read, whether it ended).
async fn drain_for(s: &mut TcpStream, limit: Duration) -> (usize, bool) {
    let mut n = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let until = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(until, s.read(&mut buf)).await {
            Err(_) => return (n, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (n, true),
            Ok(Ok(k)) => n += k,
        }
    }
}

#[tokio::test]
async fn a_backend_stalled_mid_body_is_cut_off_after_the_idle_timeout() {
    let a = backend("a").await;
    let mut cfg = quick(&[a.addr]);
    cfg.timeouts.idle_ms = 300;
    let p = proxy(cfg).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET /stall HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (n, ended) = drain_for(&mut s, Duration::from_secs(5)).await;
    assert!(ended, "the connection still waits on a stalled backend");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(n < 2 * 64 * 1024, "{n} bytes: the stalled body was not cut");
    p.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_idle_timeout() {
    let a = backend("a").await;
    let mut cfg = quick(&[a.addr]);
    cfg.timeouts.idle_ms = 300;
    let p = proxy(cfg).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    // Read nothing while the proxy's writes back up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (n, ended) = drain_for(&mut s, Duration::from_secs(5)).await;
    assert!(ended, "the connection is still open");
    assert!(
        n < 64 * 1024 * 1024,
        "the whole body arrived: nothing was cut"
    );
    p.stop().await;
}

#[tokio::test]
async fn a_total_timeout_bounds_the_whole_exchange() {
    let a = backend("a").await;
    let mut cfg = quick(&[a.addr]);
    cfg.timeouts.total_ms = 500;
    let p = proxy(cfg).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET /stall HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (_, ended) = drain_for(&mut s, Duration::from_secs(5)).await;
    assert!(ended);
    assert!(started.elapsed() < Duration::from_secs(5));
    // A 503 for a route with no backend left carries Retry-After.
    a.healthy.store(false, Ordering::SeqCst);
    let mut got = None;
    for _ in 0..100 {
        let r = get(p.addr, "/").await;
        if r.status == 503 {
            got = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = got.expect("no 503 once the only backend fails its checks");
    assert_eq!(r.header("retry-after"), Some("1"));
    p.stop().await;
}

#[tokio::test]
async fn tls_is_terminated_and_the_backend_hears_https() {
    let a = backend("a").await;
    let dir = tempfile::tempdir().unwrap();
    let (pki, tls) = common::tls::pki_files(dir.path());
    let p = proxy_with(quick(&[a.addr]), &tls).await;
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let stream = common::tls::tls_stream(p.addr, &pki, &[alpn]).await;
        let req = Request::builder()
            .uri("https://localhost/headers")
            .header("host", "localhost")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let resp = if alpn == b"h2" {
            common::tls::http2_over(stream)
                .await
                .send_request(req)
                .await
        } else {
            common::tls::http1_over(stream)
                .await
                .send_request(req)
                .await
        }
        .unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let seen = String::from_utf8_lossy(&body);
        assert!(seen.contains("x-forwarded-proto: https\n"), "{seen}");
        assert!(
            seen.contains("forwarded: for=127.0.0.1;proto=https;host=localhost\n"),
            "{seen}"
        );
    }
    // Plain HTTP to a TLS listener gets no HTTP answer (a TLS alert at most), and is closed.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(
        !got.starts_with(b"HTTP"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(got.len() < 64, "{} bytes", got.len());
    p.stop().await;
    // A missing certificate fails the start, naming the key.
    let bad = TlsSection {
        cert_file: dir.path().join("nope.pem").display().to_string(),
        key_file: tls.key_file.clone(),
    };
    let e = helios_bins::proxy::start(quick(&[a.addr]), &bad, &Context::system()).unwrap_err();
    assert!(e.contains("tls.cert_file"), "{e}");
}

#[tokio::test]
async fn one_address_holds_at_most_its_share_of_connections() {
    let a = backend("a").await;
    let mut cfg = quick(&[a.addr]);
    cfg.limits.connections_per_address_max = 1;
    let p = proxy(cfg).await;
    // The first connection holds the address's one slot while it is open.
    let mut first = TcpStream::connect(p.addr).await.unwrap();
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    first.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    // A second one from 127.0.0.1 is closed without an answer.
    let mut second = TcpStream::connect(p.addr).await.unwrap();
    let _ = second
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    let (n, ended) = drain_for(&mut second, Duration::from_secs(5)).await;
    assert!(ended);
    assert_eq!(n, 0);
    drop(first);
    p.stop().await;
}

/// Polls `cond` every 20 ms for up to 5 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..250 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never: {what}");
}

#[tokio::test]
async fn a_new_table_under_load_fails_no_request_and_keeps_unchanged_routes_state() {
    let (a, b) = (backend("a").await, backend("b").await);
    let p = proxy(quick(&[a.addr])).await;
    // Clients keep requests going across the change.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            let addr = p.addr;
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let r = get(addr, "/").await;
                    assert_eq!(r.status, 200, "{}", r.text());
                    seen.push(r.text());
                }
                seen
            })
        })
        .collect();
    // An exchange in progress when the table changes finishes on the old one.
    let slow = tokio::spawn(async move { get(p.addr, "/slow").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The new table: `/` now goes to b; `/a/` still to a.
    let mut cfg = quick(&[a.addr, b.addr]);
    cfg.backends[0].id = "a".into();
    cfg.backends[1].id = "b".into();
    let mut to_a = cfg.routes[0].clone();
    to_a.id = "old".into();
    to_a.path_prefix = "/a/".into();
    to_a.backends.truncate(1);
    to_a.backends[0].backend = "a".into();
    cfg.routes[0].backends.remove(0);
    cfg.routes[0].backends[0].backend = "b".into();
    cfg.routes.push(to_a);
    let changed_at = std::time::Instant::now();
    p.state.reload(&cfg).unwrap();
    assert_eq!(p.state.route_count(), 2);
    // Requests that start after the change go to b at once.
    assert_eq!(get(p.addr, "/").await.text(), "b");
    assert_eq!(get(p.addr, "/a/x").await.text(), "a");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for c in clients {
        let seen = c.await.expect("no client saw a failed request");
        total += seen.len();
        assert!(seen.iter().all(|t| t == "a" || t == "b"), "{seen:?}");
        assert_eq!(seen.last().map(String::as_str), Some("b"));
    }
    assert!(total > 8, "{total} requests");
    let slow = slow.await.unwrap();
    assert_eq!((slow.status, slow.text().as_str()), (200, "late"));
    assert!(changed_at.elapsed() < Duration::from_secs(10));

    // A route whose backends did not change keeps its state: b fails its checks, and
    // the same table again does not bring it back as a fresh, healthy route would.
    b.healthy.store(false, Ordering::SeqCst);
    eventually("b taken out", || {
        p.state.is_serving("default", 0) == Some(false)
    })
    .await;
    p.state.reload(&cfg).unwrap();
    assert_eq!(p.state.is_serving("default", 0), Some(false));
    // A table that does not build is refused; the one in service stays.
    let mut bad = cfg.clone();
    bad.routes[0].backends[0].backend = "nope".into();
    assert!(p.state.reload(&bad).is_err());
    assert_eq!(get(p.addr, "/a/x").await.text(), "a");
    // A route that changed starts fresh (backends start healthy) with health checks of
    // its own, which take b out again.
    let mut changed = cfg.clone();
    changed.routes[0].backends[0].weight = 2;
    p.state.reload(&changed).unwrap();
    assert_eq!(p.state.is_serving("default", 0), Some(true));
    eventually("the changed route's checks run", || {
        p.state.is_serving("default", 0) == Some(false)
    })
    .await;
    // Only matching changed (the prefix): the state is kept, its checks go on.
    let mut moved = changed.clone();
    moved.routes[0].path_prefix = "/b/".into();
    p.state.reload(&moved).unwrap();
    assert_eq!(p.state.is_serving("default", 0), Some(false));
    b.healthy.store(true, Ordering::SeqCst);
    eventually("b back", || p.state.is_serving("default", 0) == Some(true)).await;
    p.stop().await;
}

/// Keeps `n` clients sending `GET /` until `stop`: per client, (time since `t0`, status,
/// body) of each answer.
fn load(
    addr: SocketAddr,
    n: usize,
    stop: Arc<AtomicBool>,
    t0: std::time::Instant,
) -> Vec<tokio::task::JoinHandle<Vec<(Duration, u16, String)>>> {
    (0..n)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let r = get(addr, "/").await;
                    seen.push((t0.elapsed(), r.status, r.text()));
                }
                seen
            })
        })
        .collect()
}

#[tokio::test]
async fn a_backend_killed_under_load_costs_errors_only_within_the_detection_window() {
    let (a, b) = (backend("a").await, backend("b").await);
    let p = proxy(quick(&[a.addr, b.addr])).await;
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = std::time::Instant::now();
    let clients = load(p.addr, 4, stop.clone(), t0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = t0.elapsed();
    b.kill();
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    stop.store(true, Ordering::SeqCst);
    let mut failed_late = Vec::new();
    let (mut failed, mut to_b_late, mut total) = (0, 0, 0);
    // Checks every 100 ms, one failure takes a backend out (so do 5 connect errors in a
    // row): the window is ~200 ms; 1 s leaves room for a loaded machine.
    let window = killed_at + Duration::from_millis(1_000);
    for c in clients {
        for (at, status, body) in c.await.unwrap() {
            total += 1;
            if status != 200 {
                failed += 1;
                if at > window {
                    failed_late.push((at, status));
                }
            }
            if body == "b" && at > window {
                to_b_late += 1;
            }
        }
    }
    assert!(total > 20, "{total}");
    // Connections refused and broken before a response are retried on a (within the
    // retry budget): a few requests at most fail, and none after the window.
    assert!(failed <= 8, "{failed} of {total} failed");
    assert!(failed_late.is_empty(), "{failed_late:?}");
    assert_eq!(to_b_late, 0);
    assert_eq!(p.state.is_serving("default", 1), Some(false));
    p.stop().await;
}

#[tokio::test]
async fn the_breaker_opens_on_failures_and_closes_after_a_good_probe() {
    let (a, b) = (backend("a").await, backend("b").await);
    let mut cfg = quick(&[a.addr, b.addr]);
    // Active checks pass (only `/` fails) and ejection is out of the way: the breaker acts.
    cfg.health.consecutive_errors_max = 1_000;
    cfg.breaker = helios_proxy::BreakerConfig {
        window_ms: 2_000,
        buckets_count: 10,
        requests_min: 4,
        failure_rate_min: 0.5,
        open_ms: 400,
        probes_max: 1,
    };
    let p = proxy(cfg).await;
    b.failing.store(true, Ordering::SeqCst);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let r = get(p.addr, "/").await;
        statuses.push((r.status, r.text()));
    }
    // b's 500s open its breaker: traffic then goes to a only.
    assert!(statuses.iter().any(|(s, _)| *s == 500), "{statuses:?}");
    assert_eq!(
        statuses[statuses.len() - 4..],
        vec![(200, "a".to_owned()); 4],
        "{statuses:?}"
    );
    assert_eq!(p.state.is_serving("default", 1), Some(false));
    // Healed, b gets a probe after open_ms, which closes the breaker: traffic comes back.
    b.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut to_b = 0;
    for _ in 0..10 {
        let r = get(p.addr, "/").await;
        assert_eq!(r.status, 200);
        to_b += usize::from(r.text() == "b");
    }
    assert!(to_b >= 3, "{to_b} of 10 to b after it healed");
    assert_eq!(p.state.is_serving("default", 1), Some(true));
    p.stop().await;
}

#[tokio::test]
async fn slowloris_clients_are_cut_off_and_others_are_served() {
    let a = backend("a").await;
    let mut cfg = quick(&[a.addr]);
    cfg.timeouts.header_read_ms = 300;
    let p = proxy(cfg).await;
    // 50 clients trickle a request head, a byte every 100 ms.
    let started = std::time::Instant::now();
    let slow: Vec<_> = (0..50)
        .map(|_| {
            let addr = p.addr;
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                for b in b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Slow: 1234567890".iter() {
                    if s.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // The proxy closed it (a 408 or nothing), long before the head would end.
                let mut buf = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
                started.elapsed()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..5 {
        let r = get(p.addr, "/").await;
        assert_eq!((r.status, r.text().as_str()), (200, "a"));
    }
    for s in slow {
        let closed_after = s.await.unwrap();
        assert!(
            closed_after < Duration::from_secs(3),
            "a slow head held its connection {closed_after:?}"
        );
    }
    p.stop().await;
}

#[tokio::test]
async fn backend_connections_are_kept_alive_and_reused() {
    let a = backend("a").await;
    let mut cfg = quick(&[a.addr]);
    // Checks rarely, so their connection does not blur the count.
    cfg.health.interval_ms = 60_000;
    cfg.health_check.timeout_ms = 2_000;
    let p = proxy(cfg).await;
    for _ in 0..20 {
        assert_eq!(get(p.addr, "/").await.text(), "a");
    }
    let r = call(p.addr, "POST /echo HTTP/1.1\r\nHost: app.test", b"payload").await;
    assert_eq!(r.text(), "payload");
    // One connection for the traffic, one for the first health check at most.
    let n = a.accepted.load(Ordering::SeqCst);
    assert!(n <= 2, "{n} connections for 21 sequential exchanges");
    p.stop().await;
}

/// A backend that answers `200 ok` with keep-alive, then closes each connection after
/// 100 ms without a request (as servers with a short keep-alive timeout do).
async fn impatient_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, std::convert::Infallible>(text(StatusCode::OK, "ok".into()))
                });
                let mut b = hyper::server::conn::http1::Builder::new();
                b.timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_millis(100));
                let _ = b.serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_connection_the_backend_closed_while_idle_costs_no_request() {
    let addr = impatient_backend().await;
    let mut cfg = quick(&[addr]);
    cfg.health.interval_ms = 60_000;
    let p = proxy(cfg).await;
    for _ in 0..3 {
        assert_eq!(get(p.addr, "/").await.status, 200);
        // The backend closes the idle connection meanwhile.
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A request with a body (never retried) still goes through: it was never sent
        // on the closed connection.
        let r = call(p.addr, "POST /x HTTP/1.1\r\nHost: app.test", b"body").await;
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    p.stop().await;
}

#[tokio::test]
async fn weights_and_least_connections_hold_over_real_requests() {
    let (a, b) = (backend("a").await, backend("b").await);
    // Weighted 3:1: smooth weighted round-robin gives exactly 30 and 10 of 40.
    let mut cfg = quick(&[a.addr, b.addr]);
    cfg.routes[0].balance = "weighted".into();
    cfg.routes[0].backends[0].weight = 3;
    let p = proxy(cfg).await;
    let mut to_a = 0;
    let mut seen = String::new();
    for _ in 0..40 {
        let t = get(p.addr, "/").await.text();
        to_a += usize::from(t == "a");
        seen.push_str(&t);
    }
    assert_eq!(to_a, 30, "{seen}");
    // Spread, not in runs: never more than 3 a's in a row.
    assert!(!seen.contains("aaaa"), "{seen}");
    p.stop().await;
    // Least connections: while a slow request holds a, the others go to b.
    let mut cfg = quick(&[a.addr, b.addr]);
    cfg.routes[0].balance = "least-conn".into();
    let p = proxy(cfg).await;
    let addr = p.addr;
    let slow = tokio::spawn(async move { get(addr, "/slow").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!slow.is_finished(), "the slow request holds its backend");
    let mut others = Vec::new();
    for _ in 0..4 {
        others.push(get(p.addr, "/").await.text());
    }
    assert_eq!(slow.await.unwrap().text(), "late");
    // Every request made while it was held went to the other backend.
    let distinct: std::collections::BTreeSet<&String> = others.iter().collect();
    assert_eq!(distinct.len(), 1, "{others:?}");
    p.stop().await;
}
