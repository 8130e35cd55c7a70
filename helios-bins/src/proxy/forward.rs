//! One request through the proxy: route (host, longest path prefix) -> backend (the
//! route's balancer, over healthy, not ejected, breaker-closed backends) -> upstream
//! request (hop-by-hop headers stripped, forwarding headers and `Via` set, the request id
//! passed on or made) -> response streamed back (hop-by-hop headers stripped, `Via`), or a
//! tunnel for an `Upgrade`.
//!
//! Failures: no route 404, no backend able to take it 503 (with `Retry-After`), a backend that cannot be
//! reached or breaks 502, one that does not answer within `timeouts.response_headers_ms`
//! 504, each as problem+json. Retries ([`helios_proxy::retryable`], within the route's
//! retry budget) go to another pick, and only for requests without a body: a streamed
//! body is handed to the first attempt and cannot be sent twice.

use super::access::{Access, Ended};
use super::body::{Finish, Timed, Tracked, tunnel};
use super::conns::{Lease, SendError};
use super::{RouteState, State, UpstreamBody};
use crate::app::http::{Body, problem};
use crate::app::idle::RequestGuard;
use crate::app::trace;
use bytes::Bytes;
use helios_proxy::{FailureKind, Hop, Outcome, retryable, upstream_headers};
use http::header::{HOST, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::Instrument;

/// What the proxy answers: a backend's body, streamed, or its own (errors, upgrades).
pub type ProxyBody = Either<Tracked, Body>;

fn own(r: Response<Body>) -> Response<ProxyBody> {
    r.map(Either::Right)
}

/// Whether the request asks to switch protocols (HTTP/1.1 `Connection: upgrade` with an
/// `Upgrade` header).
fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(http::header::UPGRADE)
        && h.get_all(http::header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// The request's id ([`crate::app::http::request_id`]), as a header value.
fn request_id(h: &HeaderMap, state: &State) -> HeaderValue {
    let n = state.counters.requests_total.load(Ordering::Relaxed);
    let id = crate::app::http::request_id(h, state.clock.now_ms(), n);
    HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("-"))
}

/// The request's headers `h` made into the backend's, in place, through the core's rules
/// ([`upstream_headers`]), with a `Host` and the request id.
fn backend_headers(
    h: &mut HeaderMap,
    state: &State,
    peer: SocketAddr,
    host: Option<&str>,
    upgrade: bool,
    id: &HeaderValue,
) {
    let hop = Hop {
        peer: peer.ip(),
        peer_trusted: state.trusted.contains(peer.ip()),
        proto: if state.tls.is_some() { "https" } else { "http" },
        host,
        upgrade,
    };
    upstream_headers(h, &hop);
    // An HTTP/2 client names the host in `:authority`; HTTP/1.1 needs a `Host`.
    if !h.contains_key(HOST)
        && let Some(v) = host.and_then(|h| HeaderValue::from_str(h).ok())
    {
        h.insert(HOST, v);
    }
    h.insert("x-request-id", id.clone());
}

/// Proxies `req` from `peer`; see the module docs. `request` marks the client
/// connection busy for as long as the exchange lasts. While spans are exported, the
/// exchange (up to the backend's response head) is a `proxy.request` span, a child of
/// the request's `traceparent`, and the backend is sent the span's own context; else
/// the client's trace context goes to the backend as it came.
pub(super) async fn forward(
    state: &Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
    request: RequestGuard,
) -> Response<ProxyBody> {
    let span = trace::span!(
        "proxy.request", method = %req.method(), path = %req.uri().path(),
        otel.kind = "server", http.response.status_code = tracing::field::Empty,
    );
    if !span.is_none() {
        trace::set_parent(&span, trace::from_headers(req.headers()).as_ref());
    }
    let resp = exchange(state, req, peer, request)
        .instrument(span.clone())
        .await;
    span.record("http.response.status_code", resp.status().as_u16());
    resp
}

async fn exchange(
    state: &Arc<State>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    request: RequestGuard,
) -> Response<ProxyBody> {
    let host: Option<String> = req
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .map(str::to_owned);
    let id = request_id(req.headers(), state);
    // Built only when its line would be written: logging on, and not filtered out.
    let logging =
        state.config.access_log && tracing::enabled!(target: "access", tracing::Level::INFO);
    let access = logging.then(|| {
        Access::new(
            &id,
            peer.ip(),
            req.method(),
            host.as_deref(),
            req.uri().path(),
        )
    });
    // The routing this request starts with: it finishes on it even if a new table is put
    // in service meanwhile.
    let routing = state.routing();
    let Some(route) = routing.table.route(host.as_deref(), req.uri().path()) else {
        if let Some(a) = &access {
            a.log(Ended {
                status: 404,
                ..Ended::default()
            });
        }
        return own(problem(
            StatusCode::NOT_FOUND,
            "no-route",
            format!(
                "no route for host {:?} and path {:?}",
                host.as_deref().unwrap_or(""),
                req.uri().path()
            ),
        ));
    };
    let Some(r) = routing.routes.get(route.index).cloned() else {
        return own(problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "route table and route state disagree",
        ));
    };
    drop(routing);
    let upgrade = req.version() == Version::HTTP_11 && wants_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    backend_headers(
        &mut parts.headers,
        state,
        peer,
        host.as_deref(),
        upgrade,
        &id,
    );
    if let Some(cx) = trace::of_span(&tracing::Span::current()) {
        trace::inject(&mut parts.headers, &cx);
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    // A body-less request can be sent again; a streamed body only once.
    let has_body = !body.is_end_stream();
    let mut body = has_body.then_some(body);
    let method = parts.method.as_str();
    let t = state.timeouts;
    let idle = Duration::from_millis(t.idle_ms);
    // The whole exchange, first byte in to last byte out (0: none).
    let deadline =
        (t.total_ms > 0).then(|| tokio::time::Instant::now() + Duration::from_millis(t.total_ms));
    let wait = Duration::from_millis(t.response_headers_ms);
    {
        let now = state.clock.now_ms();
        r.upstream.lock().0.request(now);
    }
    let mut attempt: u32 = 1;
    loop {
        let Some(pick) = r.pick(state.clock.now_ms()) else {
            state
                .counters
                .unavailable_total
                .fetch_add(1, Ordering::Relaxed);
            r.unavailable.fetch_add(1, Ordering::Relaxed);
            if let Some(a) = &access {
                a.log(Ended {
                    status: 503,
                    route: Some(&r.id),
                    ..Ended::default()
                });
            }
            let mut r = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "no-backend",
                format!("no backend of route {:?} can take the request", r.id),
            );
            // Health checks and breakers decide within seconds: worth trying again soon.
            r.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            return own(r);
        };
        let backend = &r.backends[pick.backend];

        let out_body: UpstreamBody = match body.take() {
            Some(b) => Either::Left(Timed::new(b, idle, deadline)),
            None => Either::Right(Empty::new()),
        };
        let mut out = Request::new(out_body);
        *out.method_mut() = parts.method.clone();
        *out.version_mut() = Version::HTTP_11;
        // A streamed body goes once, so its headers can too; a body-less request keeps
        // them for a retry.
        *out.headers_mut() = if has_body {
            std::mem::take(&mut parts.headers)
        } else {
            parts.headers.clone()
        };
        // Origin form on the connection to the backend (`Host` names the site).
        *out.uri_mut() = Uri::from(path_and_query.clone());
        let wait_until = deadline.map_or(tokio::time::Instant::now() + wait, |d| {
            d.min(tokio::time::Instant::now() + wait)
        });
        let sent_at = std::time::Instant::now();
        if !out.headers().contains_key(HOST)
            && let Ok(v) = HeaderValue::from_str(backend.authority.as_str())
        {
            out.headers_mut().insert(HOST, v);
        }
        let sent = tokio::time::timeout_at(wait_until, backend.conns.send(out)).await;
        let upstream_us = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
        let (failure, outcome, timed_out) = match sent {
            Ok(Ok((resp, lease))) => {
                let status = resp.status();
                backend.stats.latency.observe_us(upstream_us);
                backend.stats.count(status.as_u16());
                let outcome = if status.is_server_error() {
                    Outcome::ServerError
                } else {
                    Outcome::Ok
                };
                let gateway_status = matches!(status.as_u16(), 502..=504);
                if gateway_status
                    && !has_body
                    && retryable(method, FailureKind::GatewayStatus, false)
                    && try_retry(state, &r, attempt + 1)
                {
                    r.finish(pick, outcome, state.clock.now_ms());
                    // Its body unread: the connection closes with the lease.
                    drop((resp, lease));
                    attempt += 1;
                    continue;
                }
                let exchange = Exchange {
                    route: r.clone(),
                    pick,
                    outcome,
                    idle,
                    deadline,
                    access: access.map(|a| (a, upstream_us)),
                    lease,
                };
                return respond(state, exchange, resp, client_upgrade, request, &id);
            }
            Ok(Err(e @ SendError::Connect(_))) => {
                tracing::debug!(backend = %backend.id, error = %e, "connect failed");
                (FailureKind::Connect, Outcome::ConnectError, false)
            }
            Ok(Err(e)) => {
                tracing::debug!(backend = %backend.id, error = %e, "exchange failed");
                (FailureKind::Broken, Outcome::Timeout, false)
            }
            Err(_) => {
                tracing::debug!(backend = %backend.id, "no response headers in time");
                (FailureKind::Broken, Outcome::Timeout, true)
            }
        };
        r.finish(pick, outcome, state.clock.now_ms());
        if !has_body && retryable(method, failure, false) && try_retry(state, &r, attempt + 1) {
            attempt += 1;
            continue;
        }
        state
            .counters
            .backend_failed_total
            .fetch_add(1, Ordering::Relaxed);
        let status = if timed_out { 504 } else { 502 };
        backend.stats.count(status);
        if let Some(a) = &access {
            a.log(Ended {
                status,
                route: Some(&r.id),
                backend: Some(&backend.id),
                upstream_us: Some(upstream_us),
                bytes: 0,
            });
        }
        return own(if timed_out {
            problem(
                StatusCode::GATEWAY_TIMEOUT,
                "backend-timeout",
                format!("backend {:?} did not answer in time", backend.id),
            )
        } else {
            problem(
                StatusCode::BAD_GATEWAY,
                "backend-failed",
                format!("backend {:?} could not be reached or failed", backend.id),
            )
        });
    }
}

fn try_retry(state: &State, r: &RouteState, attempt: u32) -> bool {
    let now = state.clock.now_ms();
    let ok = r.upstream.lock().0.try_retry(attempt, now);
    if ok {
        state.counters.retries_total.fetch_add(1, Ordering::Relaxed);
        r.retries.fetch_add(1, Ordering::Relaxed);
    }
    ok
}

/// A request that got its response head from a backend.
struct Exchange {
    route: Arc<RouteState>,
    pick: helios_proxy::Pick,
    outcome: Outcome,
    idle: Duration,
    deadline: Option<tokio::time::Instant>,
    /// The access log's record and the time to the response headers, if logging.
    access: Option<(Access, u64)>,
    /// The backend connection, given back when the body ends cleanly.
    lease: Lease,
}

/// The backend's response to the client: streamed through [`Tracked`], or a tunnel for a
/// `101 Switching Protocols`.
fn respond(
    state: &Arc<State>,
    x: Exchange,
    mut resp: Response<Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    request: RequestGuard,
    id: &HeaderValue,
) -> Response<ProxyBody> {
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    helios_proxy::headers::downstream_headers(resp.headers_mut(), switching);
    resp.headers_mut().insert("x-request-id", id.clone());
    if switching && let Some(client_upgrade) = client_upgrade {
        let backend_upgrade = hyper::upgrade::on(&mut resp);
        let (parts, _) = resp.into_parts();
        let state = state.clone();
        state
            .counters
            .upgrades_total
            .fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _request = request;
            match tokio::try_join!(client_upgrade, backend_upgrade) {
                Ok((c, b)) => {
                    let (c, b) = (TokioIo::new(c), TokioIo::new(b));
                    // Bounded by the idle timeout, not by the connection's: the tunnel
                    // holds the request guard.
                    if let Err(e) = tunnel(c, b, x.idle).await {
                        tracing::debug!(error = %e, "tunnel ended with an error");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
            x.route.finish(x.pick, x.outcome, state.clock.now_ms());
            if let Some((a, upstream_us)) = &x.access {
                a.log(Ended {
                    status: 101,
                    route: Some(&x.route.id),
                    backend: Some(&x.route.backends[x.pick.backend].id),
                    upstream_us: Some(*upstream_us),
                    bytes: 0,
                });
            }
        });
        return Response::from_parts(parts, Either::Right(Full::new(Bytes::new())));
    }
    let finish = Finish {
        state: state.clone(),
        lease: Some(x.lease),
        route: x.route,
        pick: x.pick,
        outcome: x.outcome,
        status: resp.status().as_u16(),
        access: x.access,
    };
    resp.map(|b| {
        Either::Left(Tracked::new(
            Timed::new(b, x.idle, x.deadline),
            finish,
            request,
        ))
    })
}
