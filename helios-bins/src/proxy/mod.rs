//! The reverse proxy's server: hyper over tokio around the pure core in `helios-proxy`
//! (route table, balancers, health, breakers, retry budget).
//!
//! [`start`] builds the [`State`] from a validated [`ProxyConfig`]; [`run`] serves on the
//! runner's accept loop ([`crate::app::serve`]) and HTTP connections
//! ([`crate::app::http`]): HTTP/1.1 and HTTP/2 from clients, HTTP/1.1 keep-alive to
//! backends (each backend's own stack of idle connections, [`conns`]), bodies streamed
//! both ways (never buffered),
//! `Upgrade`s (WebSocket) tunnelled, and the active health checks in the background
//! ([`checks`]). At shutdown: stop accepting, let exchanges in progress finish within the
//! drain grace, stop the checks.
//!
//! What a request goes through: [`forward`].
//!
//! The routes in service ([`Routing`]: the table and each route's state) are replaced
//! whole when the configuration changes ([`State::replace_routes`]: SIGHUP, the
//! gateway's change feed): a request keeps the routing it started with, so exchanges in
//! progress finish on the old table, and a route whose backends did not change keeps its
//! health and breaker state.
//!
//! Invariants: the core's state for a route ([`helios_proxy::Upstream`]) is only touched
//! under its mutex, never across an `.await`; every pick is finished exactly once (by the
//! response body, [`body::Tracked`], or by the failure that ended the attempt); time comes
//! from the [`Context`]'s clock, randomness (balancer choices) from a generator seeded by
//! the context.

mod access;
pub mod bin;
mod body;
mod checks;
pub mod config;
mod conns;
pub mod control;
pub mod embedded;
mod forward;
mod metrics;

use crate::app::{Context, http, serve, tls};
use bytes::Bytes;
use helios_core::Clock;
use helios_proxy::{
    HealthCheck, Outcome, Pick, Policy, ProxyConfig, RouteTable, Timeouts, TrustedProxies, Upstream,
};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use parking_lot::{Mutex, RwLock};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

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
    /// What it answered (the metrics read it).
    pub(crate) stats: BackendStats,
    /// Its keep-alive connections.
    pub(crate) conns: conns::Conns,
}

/// A backend's answers: responses by status (its own, or the proxy's 502/504 for its
/// failures) and the time to its response headers. Kept with the route's state, so a
/// route that changes starts its counters over (Prometheus reads that as a reset).
#[derive(Debug, Default)]
pub(crate) struct BackendStats {
    /// (status, count), in the order statuses were first seen: a few entries.
    responses: Mutex<Vec<(u16, u64)>>,
    /// From the request sent to the response headers.
    pub(crate) latency: crate::app::histogram::LatencyHistogram,
}

impl BackendStats {
    /// One more response with `status`.
    pub(crate) fn count(&self, status: u16) {
        let mut r = self.responses.lock();
        match r.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => r.push((status, 1)),
        }
    }

    /// Responses by status, lowest status first.
    pub(crate) fn responses(&self) -> Vec<(u16, u64)> {
        let mut r = self.responses.lock().clone();
        r.sort_unstable();
        r
    }
}

/// What a route's state was built from: a new table keeps a route's state (health,
/// breakers, balancer position) when this is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RouteShape {
    policy: Policy,
    backends: Vec<(String, String, u32)>,
}

/// One route's backends and core state.
pub(crate) struct RouteState {
    pub(crate) id: String,
    pub(crate) backends: Vec<Backend>,
    /// The core's state and the balancer's random source, together under one lock.
    pub(crate) upstream: Mutex<(Upstream, StdRng)>,
    shape: RouteShape,
    /// Retries sent on this route.
    pub(crate) retries: AtomicU64,
    /// Requests answered 503: no backend could take them.
    pub(crate) unavailable: AtomicU64,
}

impl RouteState {
    /// Picks a backend and reserves it (see [`Upstream::pick`]).
    pub(crate) fn pick(&self, now_ms: u64) -> Option<Pick> {
        let mut g = self.upstream.lock();
        let (up, rng) = &mut *g;
        up.pick(now_ms, rng)
    }

    /// The request reserved by `pick` ended with `outcome`.
    pub(crate) fn finish(&self, pick: Pick, outcome: Outcome, now_ms: u64) {
        self.upstream.lock().0.finish(pick, outcome, now_ms);
    }

    /// Whether backend `backend` takes traffic now (`proxy_backend_healthy`).
    pub(crate) fn is_serving(&self, backend: usize, now_ms: u64) -> bool {
        self.upstream.lock().0.is_serving(backend, now_ms)
    }
}

/// The routes the proxy serves: the table and each route's state, by the table's
/// [`helios_proxy::Route::index`]. Replaced whole when the configuration changes; a
/// request keeps the one it started with.
pub(crate) struct Routing {
    pub(crate) table: RouteTable,
    pub(crate) routes: Vec<Arc<RouteState>>,
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
    /// Route tables put in service after the first.
    pub table_changes_total: AtomicU64,
    /// New route tables refused (they did not build).
    pub table_refused_total: AtomicU64,
}

/// The proxy's shared state.
pub struct State {
    routing: RwLock<Arc<Routing>>,
    pub(crate) trusted: TrustedProxies,
    pub(crate) timeouts: Timeouts,
    pub(crate) health_check: HealthCheck,
    pub(crate) clock: Arc<dyn Clock>,
    /// Seeds each new route's balancer.
    seed: AtomicU64,
    /// Settings new route states are built with.
    core: CoreSettings,
    /// Health checkers: started by [`run`] on its runtime (kept here, so a new table put
    /// in service from any thread starts its routes' checkers there), stopped at its end.
    checks: watch::Sender<bool>,
    checks_runtime: Mutex<Option<tokio::runtime::Handle>>,
    /// What the proxy counted.
    pub counters: ProxyCounters,
    /// The configuration it started with (its routes are the first table's; later
    /// tables come from [`State::replace_routes`]).
    pub config: ProxyConfig,
    /// TLS termination, if on.
    pub tls: Option<tls::Tls>,
}

/// The core settings every route's [`Upstream`] is built with.
#[derive(Debug, Clone, Copy)]
struct CoreSettings {
    health: helios_proxy::HealthConfig,
    breaker: helios_proxy::BreakerConfig,
    retry: helios_proxy::RetryConfig,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("routes", &self.routing().routes.len())
            .finish_non_exhaustive()
    }
}

impl State {
    /// The routes in service now.
    pub(crate) fn routing(&self) -> Arc<Routing> {
        self.routing.read().clone()
    }

    /// Number of routes in service.
    pub fn route_count(&self) -> usize {
        self.routing().routes.len()
    }

    /// Whether backend `backend` of route `route` takes traffic now
    /// (`proxy_backend_healthy`).
    pub fn is_serving(&self, route: &str, backend: usize) -> Option<bool> {
        let routing = self.routing();
        let r = routing.routes.iter().find(|r| r.id == route)?;
        (backend < r.backends.len()).then(|| r.is_serving(backend, self.clock.now_ms()))
    }

    /// Puts `table` in service: requests that start from now on use it; those in
    /// progress finish on the table they started with. A route whose policy and backends
    /// (ids, addresses, weights) are unchanged keeps its state (health, breakers,
    /// balancer); others start fresh, with their own health checks.
    pub fn replace_routes(self: &Arc<Self>, table: RouteTable) -> Result<(), String> {
        let old = self.routing();
        let routing = Arc::new(self.build_routing(table, Some(&old))?);
        let fresh: Vec<Arc<RouteState>> = routing
            .routes
            .iter()
            .filter(|r| !old.routes.iter().any(|o| Arc::ptr_eq(o, r)))
            .cloned()
            .collect();
        // Under the checkers' lock: `run` starting meanwhile sees either the old routing
        // (and these get their checkers here) or the new one (and starts them itself).
        let rt = self.checks_runtime.lock();
        *self.routing.write() = routing;
        self.counters
            .table_changes_total
            .fetch_add(1, Ordering::Relaxed);
        if let Some(rt) = rt.as_ref() {
            for r in fresh {
                self.spawn_checks_on(rt, &r);
            }
        }
        Ok(())
    }

    /// Puts the table of a followed `catalog` in service (the gateway's feed, or the
    /// store in the gateway's process); one that does not build is logged and counted,
    /// and the table in service stays. `source` names where it came from, for the log.
    pub(crate) fn install_catalog(self: &Arc<Self>, catalog: &helios_proxy::Catalog, source: &str) {
        let built = catalog.table().map_err(|e| e.to_string());
        match built.and_then(|t| self.replace_routes(t)) {
            Ok(()) => tracing::info!(
                routes = catalog.routes.len(),
                backends = catalog.backends.len(),
                source,
                "proxy routes in service"
            ),
            Err(e) => {
                self.counters
                    .table_refused_total
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, source, "proxy routes do not build; kept the old ones");
            }
        }
    }

    /// Puts the routes of a reloaded configuration in service (SIGHUP). Everything else
    /// in `cfg` takes effect at the next start: what differs is named in the returned
    /// list, for the log. Refused, with the table in service kept, if `cfg` does not
    /// validate.
    pub fn reload(self: &Arc<Self>, cfg: &ProxyConfig) -> Result<Vec<&'static str>, String> {
        let built = cfg.validate().map_err(|e| {
            self.counters
                .table_refused_total
                .fetch_add(1, Ordering::Relaxed);
            e.to_string()
        })?;
        self.replace_routes(built.table)?;
        let old = &self.config;
        let differs = [
            ("listen", old.listen != cfg.listen),
            ("threads", old.threads != cfg.threads),
            (
                "trusted_proxies",
                old.trusted_proxies != cfg.trusted_proxies,
            ),
            ("health_check", old.health_check != cfg.health_check),
            ("health", old.health != cfg.health),
            ("breaker", old.breaker != cfg.breaker),
            ("retry", old.retry != cfg.retry),
            ("timeouts", old.timeouts != cfg.timeouts),
            ("limits", old.limits != cfg.limits),
        ];
        Ok(differs
            .into_iter()
            .filter_map(|(k, d)| d.then_some(k))
            .collect())
    }

    /// Route states for `table`, reusing those of `old` whose shape is unchanged.
    fn build_routing(&self, table: RouteTable, old: Option<&Routing>) -> Result<Routing, String> {
        let now = self.clock.now_ms();
        let mut routes: Vec<Option<Arc<RouteState>>> = vec![None; table.len()];
        for r in table.routes() {
            let shape = RouteShape {
                policy: r.policy,
                backends: r
                    .backends
                    .iter()
                    .map(|(id, o, w)| (id.clone(), o.authority.clone(), *w))
                    .collect(),
            };
            let kept = old.and_then(|o| {
                o.routes
                    .iter()
                    .find(|s| s.id == r.id && s.shape == shape)
                    .cloned()
            });
            let state = match kept {
                Some(s) => s,
                None => Arc::new(self.route_state(r, shape, now)?),
            };
            let slot = routes
                .get_mut(r.index)
                .ok_or_else(|| format!("route {}: index {} out of range", r.id, r.index))?;
            *slot = Some(state);
        }
        let routes = routes
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or("the route table's indices are not 0..n")?;
        Ok(Routing { table, routes })
    }

    fn route_state(
        &self,
        r: &helios_proxy::Route,
        shape: RouteShape,
        now: u64,
    ) -> Result<RouteState, String> {
        let c = self.core;
        let weights: Vec<u32> = r.backends.iter().map(|(_, _, w)| *w).collect();
        let upstream = Upstream::new(r.policy, &weights, c.health, c.breaker, c.retry, now)
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
                        conns: conns::Conns::new(
                            authority.as_str(),
                            Duration::from_millis(self.timeouts.connect_ms),
                            Duration::from_millis(self.timeouts.idle_ms),
                        ),
                        authority,
                        stats: BackendStats::default(),
                    })
                    .map_err(|e| format!("backend {id}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Seeds differ per route and per table; the first comes from the context.
        let seed = self
            .seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        Ok(RouteState {
            id: r.id.clone(),
            backends,
            upstream: Mutex::new((upstream, StdRng::seed_from_u64(seed))),
            shape,
            retries: AtomicU64::new(0),
            unavailable: AtomicU64::new(0),
        })
    }

    /// Starts `route`'s health checks on `rt`.
    fn spawn_checks_on(self: &Arc<Self>, rt: &tokio::runtime::Handle, route: &Arc<RouteState>) {
        rt.spawn(checks::run(
            self.clone(),
            Arc::downgrade(route),
            self.checks.subscribe(),
        ));
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
    // Routes may come later (a gateway's feed, the store); the binary's configuration
    // check asks for them otherwise.
    let built = cfg.validate_settings().map_err(|e| e.to_string())?;
    let tls = tls::Tls::load(tls)?;
    let mut state = State {
        routing: RwLock::new(Arc::new(Routing {
            table: RouteTable::default(),
            routes: Vec::new(),
        })),
        trusted: built.trusted,
        timeouts: cfg.timeouts,
        health_check: cfg.health_check.clone(),
        clock: ctx.clock.clone(),
        seed: AtomicU64::new(ctx.random_u64()),
        core: CoreSettings {
            health: cfg.health,
            breaker: cfg.breaker,
            retry: cfg.retry,
        },
        checks: watch::channel(false).0,
        checks_runtime: Mutex::new(None),
        counters: ProxyCounters::default(),
        config: cfg,
        tls,
    };
    let routing = state.build_routing(built.table, None)?;
    state.routing = RwLock::new(Arc::new(routing));
    Ok(Arc::new(state))
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
    let render = Arc::new(move || state.metrics_text());
    http::serve_metrics(listener, settings, render, shutdown).await;
}

/// Follows the gateway at `state.config.control` (if set) with `creds` until `stop`
/// resolves: its routes and backends replace the table in service ([`control`]).
pub async fn follow_control(
    state: Arc<State>,
    creds: control::Credentials,
    stop: impl Future<Output = ()>,
) {
    let base = state.config.control.clone();
    if base.is_empty() {
        return;
    }
    control::follow(state, base, creds, stop).await;
}

/// Serves the proxy on `listener` until `shutdown` resolves, then drains.
pub async fn run(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let t = state.timeouts;
    // Checks of the routes in service now; later tables start their new routes' own.
    {
        let mut rt = state.checks_runtime.lock();
        let handle = tokio::runtime::Handle::current();
        for r in &state.routing().routes {
            state.spawn_checks_on(&handle, r);
        }
        *rt = Some(handle);
    }
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
    let _ = state.checks.send(true);
    *state.checks_runtime.lock() = None;
    tracing::info!("helios-proxy stopped");
    Ok(())
}
