//! The active health checks of one route: when the core says a backend's check is due
//! ([`helios_proxy::Upstream::due_checks`]), `GET health_check.path` is sent to it with
//! the check's timeout, and the result (a status within `status_min..=status_max` passes)
//! goes back to the core, which applies the healthy/unhealthy thresholds.
//!
//! A route's checker runs while its state is in service or used by a request in
//! progress (it holds the route weakly), and stops with the proxy.
//!
//! Invariant: a check never holds the route's lock while it waits on the network.

use super::{RouteState, State};
use http::{Request, Uri};
use http_body_util::{Either, Empty};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// Runs `route`'s checks until `stop` turns true or the route is gone.
pub(super) async fn run(
    state: Arc<State>,
    route: Weak<RouteState>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let Some(r) = route.upgrade() else {
            return;
        };
        let now = state.clock.now_ms();
        let (due, next) = {
            let mut g = r.upstream.lock();
            (g.0.due_checks(now), g.0.next_check_at_ms())
        };
        for backend in due {
            tokio::spawn(check(state.clone(), r.clone(), backend));
        }
        drop(r);
        let wait_ms = next
            .map_or(1_000, |t| t.saturating_sub(now))
            .clamp(10, 60_000);
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
        }
    }
}

/// One check of backend `backend` of route `r`.
async fn check(state: Arc<State>, r: Arc<RouteState>, backend: usize) {
    let hc = &state.health_check;
    let b = &r.backends[backend];
    let uri = Uri::try_from(hc.path.as_str());
    let host = http::HeaderValue::from_str(b.authority.as_str());
    let ok = match (uri, host) {
        (Ok(uri), Ok(host)) => {
            let mut req = Request::new(Either::Right(Empty::new()));
            *req.uri_mut() = uri;
            req.headers_mut().insert(http::header::HOST, host);
            req.headers_mut().insert(
                http::header::USER_AGENT,
                http::HeaderValue::from_static("helios-proxy-health-check"),
            );
            let timeout = Duration::from_millis(hc.timeout_ms);
            // The whole check, body included, within its timeout; the body is read (up to
            // 64 KiB) so the connection can serve traffic after it.
            let exchange = async {
                let (resp, lease) = b.conns.send(req).await?;
                let status = resp.status().as_u16();
                let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024);
                if http_body_util::BodyExt::collect(body).await.is_ok() {
                    lease.give_back(&b.conns);
                }
                Ok::<u16, super::conns::SendError>(status)
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(Ok(s)) => (hc.status_min..=hc.status_max).contains(&s),
                Ok(Err(e)) => {
                    tracing::debug!(backend = %b.id, error = %e, "health check failed");
                    false
                }
                Err(_) => {
                    tracing::debug!(backend = %b.id, "health check timed out");
                    false
                }
            }
        }
        _ => false,
    };
    let now = state.clock.now_ms();
    let (serving_before, serving) = {
        let mut g = r.upstream.lock();
        let before = g.0.is_serving(backend, now);
        g.0.check_result(backend, ok, now);
        (before, g.0.is_serving(backend, now))
    };
    if serving != serving_before {
        tracing::info!(
            route = %r.id,
            backend = %b.id,
            serving,
            "backend health changed"
        );
    }
}
