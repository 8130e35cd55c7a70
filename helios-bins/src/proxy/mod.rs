//! The reverse proxy's server: hyper over tokio around the pure core in `helios-proxy`
//! (route table, balancers, health, breakers, retry budget).
//!
//! [`start`] builds the [`State`] from a validated [`ProxyConfig`]; [`run`] serves on the
//! runner's accept loop ([`crate::app::serve`]) and HTTP connections
//! ([`crate::app::http`]): HTTP/1.1 and HTTP/2 from clients, HTTP/1.1 keep-alive to
//! backends (a pooled hyper-util client), bodies streamed both ways (never buffered),
//! `Upgrade`s (WebSocket) tunnelled, and the active health checks in the background
//! ([`checks`]). At shutdown: stop accepting, let exchanges in progress finish within the
//! drain grace, stop the checks.
//!
//! What a request goes through: [`forward`].
//!
//! Invariants: the core's state for a route ([`helios_proxy::Upstream`]) is only touched
//! under its mutex, never across an `.await`; every pick is finished exactly once (by the
//! response body, [`body::Tracked`], or by the failure that ended the attempt); time comes
//! from the [`Context`]'s clock, randomness (balancer choices) from a generator seeded by
//! the context.

pub mod bin;
mod body;
mod checks;
pub mod config;
mod forward;
mod metrics;

use crate::app::{Context, http, serve, tls};
use bytes::Bytes;
use helios_core::Clock;
use helios_proxy::{
    HealthCheck, Outcome, Pick, ProxyConfig, RouteTable, Timeouts, TrustedProxies, Upstream,
};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use parking_lot::Mutex;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;

/// A request body on its way to a backend: the client's, streamed (within the idle and
/// total timeouts), or none (health checks and body-less requests, which can then be
/// retried).
pub type UpstreamBody = Either<body::Timed<Incoming>, Empty<Bytes>>;

/// One backend of a route.
#[derive(Debug)]
pub(crate) struct Backend {
    /// Its id (from the config).
    pub(crate) id: String,
    /// `host:port`.
    pub(crate) authority: ::http::uri::Authority,
}

/// One route's backends and core state.
pub(crate) struct RouteState {
    pub(crate) id: String,
    pub(crate) backends: Vec<Backend>,
    /// The core's state and the balancer's random source, together under one lock.
    pub(crate) upstream: Mutex<(Upstream, StdRng)>,
}

/// What the proxy counts (the metrics endpoint reads them).
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Requests received.
    pub requests_total: AtomicU64,
    /// Retries sent.
    pub retries_total: AtomicU64,
    /// Requests answered 503 because no backend of their route could take them.
    pub unavailable_total: AtomicU64,
    /// Requests answered 502 or 504: their backend failed or timed out.
    pub backend_failed_total: AtomicU64,
    /// Upgraded connections (WebSocket) tunnelled.
    pub upgrades_total: AtomicU64,
}

/// The proxy's shared state.
pub struct State {
    pub(crate) table: RouteTable,
    pub(crate) routes: Vec<RouteState>,
    pub(crate) route_index: HashMap<String, usize>,
    pub(crate) trusted: TrustedProxies,
    pub(crate) client: Client<HttpConnector, UpstreamBody>,
    pub(crate) timeouts: Timeouts,
    pub(crate) health_check: HealthCheck,
    pub(crate) clock: Arc<dyn Clock>,
    /// What the proxy counted.
    pub counters: ProxyCounters,
    /// The configuration it runs.
    pub config: ProxyConfig,
    /// TLS termination, if on.
    pub tls: Option<tls::Tls>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("routes", &self.route_index.len())
            .finish_non_exhaustive()
    }
}

impl State {
    /// Picks a backend of route `route` and reserves it (see [`Upstream::pick`]).
    pub(crate) fn pick(&self, route: usize) -> Option<Pick> {
        let now = self.clock.now_ms();
        let mut g = self.routes[route].upstream.lock();
        let (up, rng) = &mut *g;
        up.pick(now, rng)
    }

    /// The request reserved by `pick` on `route` ended with `outcome`.
    pub(crate) fn finish(&self, route: usize, pick: Pick, outcome: Outcome) {
        let now = self.clock.now_ms();
        self.routes[route]
            .upstream
            .lock()
            .0
            .finish(pick, outcome, now);
    }

    /// Whether backend `backend` of route `route` takes traffic now
    /// (`proxy_backend_healthy`).
    pub fn is_serving(&self, route: &str, backend: usize) -> Option<bool> {
        let r = *self.route_index.get(route)?;
        (backend < self.routes[r].backends.len()).then(|| self.is_serving_index(r, backend))
    }

    pub(crate) fn is_serving_index(&self, r: usize, backend: usize) -> bool {
        let now = self.clock.now_ms();
        self.routes[r].upstream.lock().0.is_serving(backend, now)
    }
}

/// Builds the state the proxy runs on from `cfg` (validated again here) and `tls` (its
/// files loaded and checked now, not at the first handshake), on `ctx`'s clock and
/// randomness. Errors name the setting.
pub fn start(
    cfg: ProxyConfig,
    tls: &crate::config::TlsSection,
    ctx: &Context,
) -> Result<Arc<State>, String> {
    let built = cfg.validate().map_err(|e| e.to_string())?;
    let tls = tls::Tls::load(tls)?;
    let now = ctx.clock.now_ms();
    let mut routes = Vec::new();
    let mut route_index = HashMap::new();
    for r in built.table.routes() {
        let weights: Vec<u32> = r.backends.iter().map(|(_, _, w)| *w).collect();
        let upstream = Upstream::new(r.policy, &weights, cfg.health, cfg.breaker, cfg.retry, now)
            .map_err(|e| format!("route {}: {e}", r.id))?;
        let backends = r
            .backends
            .iter()
            .map(|(id, origin, _)| {
                origin
                    .authority
                    .parse::<::http::uri::Authority>()
                    .map(|authority| Backend {
                        id: id.clone(),
                        authority,
                    })
                    .map_err(|e| format!("backend {id}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        route_index.insert(r.id.clone(), routes.len());
        routes.push(RouteState {
            id: r.id.clone(),
            backends,
            upstream: Mutex::new((upstream, StdRng::seed_from_u64(ctx.random_u64()))),
        });
    }
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_millis(cfg.timeouts.connect_ms)));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    let client = Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_millis(cfg.timeouts.idle_ms))
        .pool_max_idle_per_host(1024)
        .build(connector);
    Ok(Arc::new(State {
        table: built.table,
        routes,
        route_index,
        trusted: built.trusted,
        client,
        timeouts: cfg.timeouts,
        health_check: cfg.health_check.clone(),
        clock: ctx.clock.clone(),
        counters: ProxyCounters::default(),
        config: cfg,
        tls,
    }))
}

/// Serves `GET /metrics` on its own listener until `shutdown` resolves.
pub async fn run_metrics(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) {
    let t = state.timeouts;
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(t.header_read_ms));
    let settings = http::ConnSettings {
        builder: Arc::new(builder),
        tls: None,
        handshake_timeout: Duration::from_millis(t.header_read_ms),
        idle_timeout: Duration::from_millis(t.idle_ms),
        write_stall: None,
    };
    let render = Arc::new(move || state.metrics_response());
    http::serve_metrics(listener, settings, render, shutdown).await;
}

/// Serves the proxy on `listener` until `shutdown` resolves, then drains.
pub async fn run(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let t = state.timeouts;
    let (checks_stop, checks_stopped) = tokio::sync::watch::channel(false);
    let checkers: Vec<_> = (0..state.routes.len())
        .map(|r| tokio::spawn(checks::run(state.clone(), r, checks_stopped.clone())))
        .collect();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(t.header_read_ms))
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(64 * 1024)
        .max_concurrent_streams(state.config.limits.http2_streams_max);
    let settings = Arc::new(http::ConnSettings {
        builder: Arc::new(builder),
        tls: state.tls.as_ref().map(|t| t.acceptor().clone()),
        handshake_timeout: Duration::from_millis(t.header_read_ms),
        idle_timeout: Duration::from_millis(t.idle_ms),
        // A client that stops reading a streamed response holds its backend no longer.
        write_stall: Some(Duration::from_millis(t.idle_ms)),
    });
    let l = state.config.limits;
    let limits = serve::Limits {
        connections_max: l.connections_max,
        per_address_max: l.connections_per_address_max,
        when_full: serve::WhenFull::Wait,
        drain_grace: Duration::from_millis(l.shutdown_grace_ms),
        counters: Arc::default(),
    };
    let handler_state = state.clone();
    http::serve_http(
        listener,
        &limits,
        settings,
        shutdown,
        move |req, peer, request| {
            let state = handler_state.clone();
            async move {
                state
                    .counters
                    .requests_total
                    .fetch_add(1, Ordering::Relaxed);
                forward::forward(&state, req, peer, request).await
            }
        },
    )
    .await;
    let _ = checks_stop.send(true);
    for c in checkers {
        let _ = c.await;
    }
    tracing::info!("helios-proxy stopped");
    Ok(())
}
