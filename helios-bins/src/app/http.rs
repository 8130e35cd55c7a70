//! HTTP shared by every HTTP server (the gateway's API and metrics listeners, the proxy):
//! responses (JSON bodies and RFC 9457 problem details, `application/problem+json`, with a
//! stable `type` per kind of error), request ids, bounded body reads ([`read_body`]), and
//! [`serve_connection`], which serves one accepted
//! connection with hyper: the TLS handshake bounded in time, the idle timeout
//! ([`super::idle`]), and a graceful end when the server drains.

use super::idle::{Activity, IdleTimeout, RequestGuard};
use super::serve::{Conn, Drain};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use serde::Serialize;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsAcceptor;

/// The body type of every response.
pub type Body = Full<Bytes>;

/// A response body fed through a channel, one data frame per message, ending when the
/// sender is dropped: for long-lived streams (Server-Sent Events). It holds the
/// connection's request guard, so the connection is busy, not idle, while it streams.
#[derive(Debug)]
pub struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    _request: RequestGuard,
}

impl ChannelBody {
    /// The body of `rx`'s messages, keeping `request` until it ends.
    pub fn new(rx: tokio::sync::mpsc::Receiver<Bytes>, request: RequestGuard) -> Self {
        ChannelBody {
            rx,
            _request: request,
        }
    }
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|m| m.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// The base of every problem `type` URI.
pub const PROBLEM_BASE: &str = "https://helios.dev/problems/";

/// A JSON response. The body ends with a newline (so `curl` output ends its line).
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    // Serializing our own response structs cannot fail.
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// An empty response.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// The slug of a [`problem`] response, kept in its extensions so that code after the
/// handler (the audit log) can tell refusals apart without reading the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProblemSlug(pub String);

/// A problem-details response: `slug` makes the stable `type`.
pub fn problem(status: StatusCode, slug: &str, detail: impl Into<String>) -> Response<Body> {
    let body = serde_json::json!({
        "type": format!("{PROBLEM_BASE}{slug}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    let mut r = json(status, &body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r.extensions_mut().insert(ProblemSlug(slug.to_owned()));
    r
}

/// How [`serve_connection`] serves a connection.
#[derive(Clone)]
pub struct ConnSettings {
    /// hyper's connection settings (HTTP/1 and HTTP/2 limits and timers).
    pub builder: Arc<Builder<TokioExecutor>>,
    /// TLS, if on: the handshake runs in the connection's task.
    pub tls: Option<TlsAcceptor>,
    /// The longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// A connection with no request in progress for this long is closed.
    pub idle_timeout: Duration,
    /// A connection whose writes stay blocked this long is closed, request in progress or
    /// not (`None`: only the idle timeout applies). See [`IdleTimeout::with_write_stall`].
    pub write_stall: Option<Duration>,
}

impl std::fmt::Debug for ConnSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnSettings")
            .field("tls", &self.tls.is_some())
            .field("handshake_timeout", &self.handshake_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("write_stall", &self.write_stall)
            .finish_non_exhaustive()
    }
}

/// Serves HTTP on one accepted connection until the client closes it, it idles past
/// `idle_timeout`, or the server drains (then the request in progress finishes, HTTP/1
/// keep-alive ends and HTTP/2 sends GOAWAY). `service` is built with the connection's
/// [`Activity`]: it must hold [`Activity::begin`]'s guard while a request runs, or the
/// connection counts as idle.
pub async fn serve_connection<S, B>(
    conn: Conn,
    settings: &ConnSettings,
    service: impl FnOnce(Arc<Activity>) -> S,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let Conn {
        stream,
        peer,
        mut drain,
    } = conn;
    let activity = Activity::new();
    let service = service(activity.clone());
    let mut io = IdleTimeout::new(stream, settings.idle_timeout, activity);
    if let Some(stall) = settings.write_stall {
        io = io.with_write_stall(stall);
    }
    let Some(acceptor) = &settings.tls else {
        return drive(io, &settings.builder, service, drain, peer).await;
    };
    let stream = tokio::select! {
        s = tokio::time::timeout(settings.handshake_timeout, acceptor.accept(io)) => s,
        _ = drain.wait() => return,
    };
    match stream {
        Ok(Ok(s)) => drive(s, &settings.builder, service, drain, peer).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// Runs hyper on `io` until the connection ends, shutting it down gracefully on a drain.
/// Upgrades (`101 Switching Protocols`) are allowed: a service that answers one takes the
/// connection over (the proxy's tunnels).
async fn drive<I, S, B>(
    io: I,
    builder: &Builder<TokioExecutor>,
    service: S,
    mut drain: Drain,
    peer: std::net::SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let c = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(c);
    let r = tokio::select! {
        r = c.as_mut() => r,
        _ = drain.wait() => {
            c.as_mut().graceful_shutdown();
            c.await
        }
    };
    if let Err(e) = r {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Serves `GET /metrics` (and nothing else: 404) on its own listener, without auth,
/// until `shutdown` resolves: a few connections at most, each closed when idle. `render`
/// writes the server's families (OpenMetrics form, see [`super::metrics`]);
/// [`super::metrics::respond`] negotiates and ends the body.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    settings: ConnSettings,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    shutdown: impl std::future::Future<Output = ()>,
) -> super::serve::Served {
    let mut limits = super::serve::Limits::new(16);
    limits.drain_grace = Duration::from_secs(1);
    let settings = Arc::new(settings);
    super::serve::serve(listener, &limits, shutdown, |conn| {
        let settings = settings.clone();
        let render = render.clone();
        async move {
            serve_connection(conn, &settings, |activity| {
                hyper::service::service_fn(move |req: Request<Incoming>| {
                    let request = activity.begin();
                    let get = req.method() == http::Method::GET;
                    let resp = match req.uri().path() {
                        "/metrics" if get => super::metrics::respond(req.headers(), render()),
                        // Liveness for a container's health check: the process serves.
                        "/healthz" if get => {
                            json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
                        }
                        _ => problem(
                            StatusCode::NOT_FOUND,
                            "not-found",
                            "this listener serves GET /metrics and GET /healthz only",
                        ),
                    };
                    drop(request);
                    std::future::ready(Ok::<_, std::convert::Infallible>(resp))
                })
            })
            .await
        }
    })
    .await
}

/// Serves HTTP on `listener` within `limits` until `shutdown` resolves, then drains: the
/// accept loop ([`super::serve::serve`]) with [`serve_connection`] for each connection.
/// `handler` answers each request, given the client's address and the request's
/// [`RequestGuard`] (drop it when the exchange is over: a handler that streams a body
/// keeps it with the body, so a long download is not idle).
pub async fn serve_http<H, Fut, B>(
    listener: tokio::net::TcpListener,
    limits: &super::serve::Limits,
    settings: Arc<ConnSettings>,
    shutdown: impl std::future::Future<Output = ()>,
    handler: H,
) -> super::serve::Served
where
    H: Fn(Request<Incoming>, std::net::SocketAddr, RequestGuard) -> Fut
        + Clone
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    super::serve::serve(listener, limits, shutdown, |conn| {
        let settings = settings.clone();
        let handler = handler.clone();
        let peer = conn.peer;
        async move {
            serve_connection(conn, &settings, |activity| {
                hyper::service::service_fn(move |req| {
                    let request = activity.begin();
                    let answered = handler(req, peer, request);
                    async move { Ok::<_, std::convert::Infallible>(answered.await) }
                })
            })
            .await
        }
    })
    .await
}

/// The id of a request: the client's `X-Request-Id` when it is a sane one (1 to 128
/// visible ASCII characters), else a new one made of the time in ms and the server's
/// request count (`{now_ms:x}-{n:x}`), unique per server without randomness. Every HTTP
/// server logs it, passes it on (the proxy) and returns it.
pub fn request_id(headers: &http::HeaderMap, now_ms: u64, n: u64) -> String {
    if let Some(v) = headers.get("x-request-id")
        && let Ok(s) = v.to_str()
        && !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| b.is_ascii_graphic())
    {
        return s.to_owned();
    }
    let mut id = String::with_capacity(33);
    helios_core::digits::push_hex_str(&mut id, now_ms);
    id.push('-');
    helios_core::digits::push_hex_str(&mut id, n);
    id
}

/// The limits [`read_body`] reads a whole request body within.
#[derive(Debug)]
pub struct BodyLimits<'a> {
    /// The largest body, bytes (413 past it).
    pub size_max: usize,
    /// The bytes every body being read shares (a body reserves its declared length, else
    /// `size_max`, and waits up to a second for it, else 503).
    pub budget: &'a Arc<tokio::sync::Semaphore>,
    /// The longest the whole body may take to arrive (408 past it).
    pub read_timeout: Duration,
}

/// Reads a whole request body: a declared length over the limit is refused before a
/// byte is read (413, connection closed), bodies in flight share `limits.budget` (503 with
/// `Retry-After` when it stays full for a second), and a body that does not arrive within
/// `limits.read_timeout` gets 408, so stalled bodies cannot grow memory without bound.
pub async fn read_body(
    headers: &http::HeaderMap,
    body: Incoming,
    limits: &BodyLimits<'_>,
) -> Result<Bytes, Response<Body>> {
    use http_body_util::{BodyExt, Limited};
    let limit = limits.size_max;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        let mut r = problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            format!("the body is over {limit} bytes"),
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    if declared == Some(0) {
        return Ok(Bytes::new());
    }
    // Reserve the most this body may take (its declared length, else the limit).
    let share = declared.map_or(limit, |n| n as usize).min(limit);
    let share = u32::try_from(share).unwrap_or(u32::MAX);
    let permit = match tokio::time::timeout(
        Duration::from_secs(1),
        limits.budget.clone().acquire_many_owned(share),
    )
    .await
    {
        Ok(Ok(p)) => p,
        _ => {
            let mut r = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many request bodies in flight; retry shortly",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Err(r);
        }
    };
    let read = tokio::time::timeout(limits.read_timeout, Limited::new(body, limit).collect()).await;
    drop(permit);
    match read {
        Err(_) => Err(problem(
            StatusCode::REQUEST_TIMEOUT,
            "body-timeout",
            "the request body did not arrive in time",
        )),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(too_large())
            } else {
                Err(problem(StatusCode::BAD_REQUEST, "bad-body", e.to_string()))
            }
        }
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_the_clients_when_sane_else_made() {
        let mut h = http::HeaderMap::new();
        assert_eq!(request_id(&h, 0x1f, 0x2a), "1f-2a");
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h, 1, 2), "abc-123");
        for bad in ["", "has space", &"x".repeat(129)] {
            h.insert("x-request-id", HeaderValue::from_str(bad).unwrap());
            assert_eq!(request_id(&h, 1, 2), "1-2", "{bad:?}");
        }
    }
}
