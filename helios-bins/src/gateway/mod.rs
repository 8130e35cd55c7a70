//! The HTTP gateway: hyper 1.x over tokio, serving the JSON API.
//!
//! [`run`] takes a bound listener, the shared [`State`] and a shutdown future (tests pass
//! their own; `main` passes SIGINT/SIGTERM), and serves on the runner's accept loop
//! ([`crate::app::serve`]) and HTTP connections ([`crate::app::http`]): HTTP/1.1 or
//! HTTP/2 (auto), a header read timeout, an idle timeout, a connection cap (connections
//! past it wait in the accept queue). At shutdown: stop accepting, let in-flight requests
//! finish within `http.shutdown_grace_ms`, then persist the rate-limit buckets and close
//! ATLAS (fsync).
//!
//! Every request goes through the same steps, in this order (`handler::handle`): request
//! id (accept or make `X-Request-Id`) -> tracing span -> metrics -> authentication ->
//! rate limit -> RBAC (these three on the head alone: a refused request's body is never
//! read) -> body (size limit, read timeout, the in-flight budget) -> route handler.
//!
//! Connections: at most `http.connections_max`, of which at most
//! `http.connections_per_address_max` from one client address (an IPv6 /64); HTTP/2
//! streams per connection are bounded by `http.http2_streams_max`.

mod account;
mod admin;
pub mod bin;
mod handler;
mod jobs;
pub mod kv;
mod metrics;
mod proxy_admin;
mod proxy_feed;
mod schedules;
mod workers;

use crate::app::{http, serve, tls};
use crate::config::GatewayConfig;
use helios_atlas::Atlas;
use helios_auth::{Auth, RateLimiter};
use helios_core::Clock;
use http_body_util::Either;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use handler::routes;
pub use metrics::Metrics;

use crate::app::Context;
use helios_auth::{AuthConfig, JwtConfig, KeyConfig, KeyState, RateLimitConfig, ThrottleConfig};
use helios_core::TokenBucketConfig;

/// Name of the file in the data directory that keeps a generated JWT secret.
pub const SECRET_FILE_NAME: &str = "gateway.secret";

/// Name of the file in the data directory that keeps a generated `admin` password (mode
/// 0600; written only when a fresh store is bootstrapped without `HELIOS_ADMIN_PASSWORD`).
pub const ADMIN_PASSWORD_FILE_NAME: &str = "admin-password";

fn jwt_secret(cfg: &GatewayConfig, ctx: &Context) -> Result<String, String> {
    if !cfg.auth.jwt_secret.is_empty() {
        return Ok(cfg.auth.jwt_secret.clone());
    }
    let path = cfg.data_dir.join(SECRET_FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => return Ok(s.trim().to_owned()),
        Ok(_) => return Err(format!("{}: secret shorter than 32 bytes", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let secret = helios_auth::random::hex_token(&*ctx.random, 32);
    crate::app::write_private_file(&path, secret.as_bytes())?;
    tracing::info!(file = %path.display(), "generated the JWT signing secret");
    Ok(secret)
}

/// Opens everything the gateway serves from `cfg`: ATLAS, auth (creating the `admin` user
/// on a fresh store with `admin_password`, or a random one written to
/// [`ADMIN_PASSWORD_FILE_NAME`] in the data directory), and the rate limiters.
pub fn start(cfg: GatewayConfig, admin_password: Option<String>) -> Result<Arc<State>, String> {
    start_in(cfg, admin_password, &Context::system())
}

/// [`start`] on `ctx`'s clock and randomness (ATLAS opened on that clock too).
pub fn start_in(
    cfg: GatewayConfig,
    admin_password: Option<String>,
    ctx: &Context,
) -> Result<Arc<State>, String> {
    let atlas = crate::app::open_atlas(
        &cfg.data_dir,
        &cfg.appendfsync,
        cfg.everysec_lag_max_ms,
        ctx,
    )
    .map_err(|e| e.to_string())?;
    start_with_in(cfg, atlas, admin_password, ctx)
}

/// Creates the `admin` user on a store without users. With no password given, a random
/// one is written to a 0600 file in the data directory first (so it is never lost between
/// the file and the user), and its path logged; it is never printed.
fn bootstrap_admin(
    auth: &Auth,
    cfg: &GatewayConfig,
    admin_password: Option<String>,
    ctx: &Context,
) -> Result<(), String> {
    if !auth.users().is_empty() {
        return Ok(());
    }
    let (password, file) = match admin_password {
        Some(p) => {
            // A weak password from the environment fails the start, naming the variable
            // and why (zxcvbn's warning), before any user exists.
            helios_auth::password::check_rules(
                "HELIOS_ADMIN_PASSWORD",
                &p,
                "admin",
                auth.config().password_len_min,
            )
            .map_err(|e| e.to_string())?;
            (p, None)
        }
        None => {
            let p = helios_auth::random::hex_token(&*ctx.random, 16);
            let path = cfg.data_dir.join(ADMIN_PASSWORD_FILE_NAME);
            crate::app::write_private_file(&path, format!("{p}\n").as_bytes())?;
            (p, Some(path))
        }
    };
    auth.bootstrap_admin(Some(&password))
        .map_err(|e| format!("bootstrap admin: {e}"))?;
    match file {
        Some(path) => tracing::warn!(
            file = %path.display(),
            "created user 'admin' with a generated password, written to this file (owner-only); log in with it, then change it and delete the file"
        ),
        None => tracing::info!("created user 'admin' with the password from HELIOS_ADMIN_PASSWORD"),
    }
    Ok(())
}

/// [`start`] over an ATLAS store opened by the caller (tests open one on fault-injecting
/// storage).
pub fn start_with(
    cfg: GatewayConfig,
    atlas: Atlas,
    admin_password: Option<String>,
) -> Result<Arc<State>, String> {
    start_with_in(cfg, atlas, admin_password, &Context::system())
}

/// [`start_with`] on `ctx`'s clock and randomness (tests drive rate limits, tokens and
/// leases with a `ManualClock`; ATLAS should run on the same clock).
pub fn start_with_in(
    cfg: GatewayConfig,
    atlas: Atlas,
    admin_password: Option<String>,
    ctx: &Context,
) -> Result<Arc<State>, String> {
    // Before anything serves: the keys of the layout before namespaces move to `legacy`.
    kv::migrate_layout(&atlas).map_err(|e| format!("moving KV keys to namespaces: {e}"))?;
    let secret = jwt_secret(&cfg, ctx)?;
    let clock: Arc<dyn Clock> = ctx.clock.clone();
    let auth = helios_auth::Auth::open(
        atlas.clone(),
        AuthConfig {
            bcrypt_cost: cfg.auth.bcrypt_cost,
            password_len_min: 10,
            registration_open: cfg.auth.registration_open,
            refresh_ttl_ms: cfg.auth.refresh_ttl_s.saturating_mul(1000),
            jwt: JwtConfig {
                algorithm: jsonwebtoken::Algorithm::HS256,
                issuer: cfg.auth.issuer.clone(),
                audience: cfg.auth.audience.clone(),
                access_ttl_s: cfg.auth.access_ttl_s,
                leeway_s: 30,
                keys: vec![KeyConfig {
                    kid: "k1".into(),
                    state: KeyState::Active,
                    secret: Some(secret),
                    private_pem: None,
                    public_pem: None,
                }],
            },
            throttle: ThrottleConfig::default(),
        },
        clock.clone(),
        ctx.random.clone(),
    )
    .map_err(|e| e.to_string())?;
    bootstrap_admin(&auth, &cfg, admin_password, ctx)?;
    let limiter = RateLimiter::new(
        atlas.clone(),
        RateLimitConfig {
            default: TokenBucketConfig {
                capacity: cfg.rate_limit.capacity,
                refill_tokens: cfg.rate_limit.refill_per_s,
                refill_period_ms: 1_000,
            },
            ..RateLimitConfig::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let login_limiter = RateLimiter::new(
        atlas.clone(),
        RateLimitConfig {
            default: TokenBucketConfig {
                capacity: 20,
                refill_tokens: 1,
                refill_period_ms: 1_000,
            },
            ..RateLimitConfig::default()
        },
    )
    .map_err(|e| e.to_string())?;
    // Job ids take their 64 random bits from a CSPRNG (ChaCha12, seeded once from the OS):
    // unguessable ids are what keeps one user from probing another's jobs. A getrandom
    // call per id (~1.3% of the gateway's CPU in a profile) bought nothing against an
    // attacker without the process's memory (a restored VM snapshot of a running gateway
    // would repeat the random bits of the ids issued after it).
    let queue = helios_queue::Queue::open(
        atlas.clone(),
        helios_queue::QueueConfig {
            depth_max: cfg.queue.depth_max,
            ..helios_queue::QueueConfig::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let tls = tls::Tls::load(&cfg.tls)?;
    let audit = if cfg.audit.enabled {
        let a = &cfg.audit;
        let path = a.file(&cfg.data_dir);
        let log = crate::app::audit::AuditLog::open(&path, a.max_bytes, a.keep)
            .map_err(|e| format!("audit.path: {}: {e}", path.display()))?;
        Some(Arc::new(log))
    } else {
        None
    };
    let mut state = State::new(
        atlas,
        Arc::new(auth),
        limiter,
        login_limiter,
        cfg,
        clock,
        Arc::new(queue),
    );
    state.tls = tls;
    state.audit = audit;
    Ok(Arc::new(state))
}

/// Everything a request may need. Shared by all connections.
#[derive(Debug)]
pub struct State {
    /// The store.
    pub atlas: Atlas,
    /// Users, tokens, roles.
    pub auth: Arc<Auth>,
    /// Per-client limits.
    pub limiter: RateLimiter,
    /// Stricter limits for login and register, per username and per address.
    pub login_limiter: RateLimiter,
    /// The configuration.
    pub config: GatewayConfig,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The clock for rate limits.
    pub clock: Arc<dyn Clock>,
    /// The job queue.
    pub queue: Arc<helios_queue::Queue>,
    /// The worker registry (`worker:*`), on the queue's store and clock.
    pub registry: Arc<helios_queue::registry::Registry>,
    /// Woken on every enqueue and redrive, so long-polling claims wait without spinning.
    pub job_ready: Arc<tokio::sync::Notify>,
    /// The `workers` section's runtime while it runs (its metrics join the gateway's).
    pub workers: parking_lot::Mutex<Option<Arc<crate::worker::Worker>>>,
    /// TLS for the API listener, when configured.
    pub tls: Option<tls::Tls>,
    /// The audit log of security events (`audit` section), when enabled.
    pub audit: Option<Arc<crate::app::audit::AuditLog>>,
    /// Bytes of request bodies being read, at most `http.body_bytes_in_flight_max`.
    pub body_budget: Arc<Semaphore>,
    /// The proxy's routes and backends in the store (`/admin/proxy/*`).
    pub proxy_store: Arc<helios_proxy::ProxyStore>,
    /// Change feed streams (`/admin/proxy/feed`) that may still start.
    pub feeds: Arc<Semaphore>,
    /// Set at shutdown: feed streams end.
    pub feeds_stop: std::sync::atomic::AtomicBool,
    router: handler::Router,
}

impl State {
    /// Assembles the state.
    pub fn new(
        atlas: Atlas,
        auth: Arc<Auth>,
        limiter: RateLimiter,
        login_limiter: RateLimiter,
        config: GatewayConfig,
        clock: Arc<dyn Clock>,
        queue: Arc<helios_queue::Queue>,
    ) -> Self {
        let body_budget = Arc::new(Semaphore::new(
            usize::try_from(config.http.body_bytes_in_flight_max).unwrap_or(usize::MAX),
        ));
        let registry = Arc::new(helios_queue::registry::Registry::new(
            atlas.clone(),
            queue.clock().clone(),
        ));
        Self {
            proxy_store: Arc::new(helios_proxy::ProxyStore::new(atlas.clone())),
            feeds: Arc::new(Semaphore::new(proxy_feed::FEEDS_MAX)),
            feeds_stop: std::sync::atomic::AtomicBool::new(false),
            atlas,
            auth,
            limiter,
            login_limiter,
            config,
            metrics: Metrics::new(),
            clock,
            registry,
            queue,
            job_ready: Arc::new(tokio::sync::Notify::new()),
            workers: parking_lot::Mutex::new(None),
            tls: None,
            audit: None,
            body_budget,
            router: handler::Router::new(),
        }
    }
}

/// The gateway's own proxy, started: its listener, state and store follower.
pub struct EmbeddedProxy {
    listener: TcpListener,
    state: Arc<crate::proxy::State>,
    follower: std::thread::JoinHandle<()>,
    stop_following: Arc<std::sync::atomic::AtomicBool>,
}

/// Starts the proxy of the `embedded_proxy` section on `listener`: its routes and
/// backends come from the store as `/admin/proxy/*` changes them (no HTTP hop).
pub fn start_embedded_proxy(
    state: &Arc<State>,
    listener: TcpListener,
) -> Result<EmbeddedProxy, String> {
    let cfg = state.config.embedded_proxy.to_config();
    let proxy = crate::proxy::start(
        cfg,
        &crate::config::TlsSection::default(),
        &Context::system(),
    )?;
    let stop_following = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let follower = crate::proxy::embedded::follow_store(
        proxy.clone(),
        state.proxy_store.clone(),
        stop_following.clone(),
    )
    .map_err(|e| format!("no thread for the proxy's follower: {e}"))?;
    tracing::info!(listen = %state.config.embedded_proxy.listen, "embedded proxy serving");
    Ok(EmbeddedProxy {
        listener,
        state: proxy,
        follower,
        stop_following,
    })
}

/// [`run`], with the embedded proxy (if any) served beside it until the same `shutdown`:
/// both drain, then the follower stops (the gateway closes the store at its end, which
/// also ends it).
pub async fn run_with_proxy(
    listener: TcpListener,
    state: Arc<State>,
    proxy: Option<EmbeddedProxy>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let Some(p) = proxy else {
        return run(listener, state, shutdown).await;
    };
    let stop = crate::app::Stop::default();
    let proxy_stopped = stop.waiter();
    let gateway_stopped = stop.waiter();
    let proxy_task = tokio::spawn(crate::proxy::run(p.listener, p.state, proxy_stopped));
    let trigger = async move {
        shutdown.await;
        stop.trigger();
    };
    let (served, ()) = tokio::join!(run(listener, state, gateway_stopped), async {
        trigger.await;
        if let Ok(Err(e)) = proxy_task.await {
            tracing::error!(error = %e, "embedded proxy");
        }
        p.stop_following
            .store(true, std::sync::atomic::Ordering::Release);
        let _ = tokio::task::spawn_blocking(move || p.follower.join()).await;
    });
    served
}

/// Starts the `workers` section's runtime (if it names any service) on this process's
/// queue, with no HTTP hop: it runs until `stop`, then drains (see `worker::runtime`).
fn spawn_workers(
    state: &Arc<State>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Option<tokio::task::JoinHandle<()>>> {
    let w = &state.config.workers;
    if w.services.is_empty() {
        return Ok(None);
    }
    let services =
        crate::worker::config::build_services(w, "workers", &crate::worker::Connectors::default())
            .map_err(std::io::Error::other)?;
    let ctx = Context::system();
    let settings = w.runtime_settings(
        env!("CARGO_PKG_VERSION"),
        &crate::worker::config::host_name(),
        ctx.random_u64(),
    );
    let source = crate::worker::EmbeddedSource::new(
        state.queue.clone(),
        state.registry.clone(),
        state.job_ready.clone(),
    );
    let worker = crate::worker::Worker::new(Arc::new(source), services, settings, ctx);
    *state.workers.lock() = Some(worker.clone());
    tracing::info!(queues = w.services.len(), "embedded workers running");
    Ok(Some(tokio::spawn(worker.run(stop, std::future::pending()))))
}

/// Serves `GET /metrics` (and nothing else: 404) on its own listener, without auth, until
/// `shutdown` resolves. For `metrics_listen`; a few connections at most.
pub async fn run_metrics(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(
            state.config.http.header_read_timeout_ms,
        ));
    let settings = http::ConnSettings {
        builder: Arc::new(builder),
        tls: None,
        handshake_timeout: Duration::from_millis(state.config.http.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(state.config.http.idle_timeout_ms),
        write_stall: None,
    };
    let render = Arc::new(move || handler::metrics_text(&state));
    http::serve_metrics(listener, settings, render, shutdown).await;
    Ok(())
}

/// Serves the API on `listener` until `shutdown` resolves, then drains and closes.
pub async fn run(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let http = state.config.http.clone();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(http.header_read_timeout_ms))
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(64 * 1024)
        .max_concurrent_streams(http.http2_streams_max);
    // Rate-limit buckets are persisted on a bounded interval, never on the request path.
    let flusher = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let now = state.clock.now_ms();
                let s = state.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(e) = s.limiter.flush_due(now) {
                        tracing::warn!(error = %e, "rate-limit flush failed");
                    }
                    let _ = s.login_limiter.flush_due(now);
                    // Expired leases go back to pending (or to the dead-letter list), and
                    // due cron schedules enqueue their runs if their owner still may.
                    let auth = &s.auth;
                    let allowed = |sch: &helios_queue::Schedule| {
                        sch.owner.as_deref().is_none_or(|o| {
                            auth.authorize(o, helios_auth::rbac::perms::JOBS_ENQUEUE)
                        })
                    };
                    match s.queue.tick_checked(&allowed) {
                        Ok(r) if r.retried_count > 0 || r.scheduled_count > 0 => {
                            s.job_ready.notify_waiters()
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "queue tick failed"),
                    }
                })
                .await;
            }
        })
    };
    let limits = serve::Limits {
        connections_max: http.connections_max,
        // One address (an IPv6 /64) holds at most its share of the connections.
        per_address_max: http.connections_per_address_max,
        when_full: serve::WhenFull::Wait,
        drain_grace: Duration::from_millis(http.shutdown_grace_ms),
        counters: Arc::default(),
    };
    let settings = Arc::new(http::ConnSettings {
        builder: Arc::new(builder),
        tls: state.tls.as_ref().map(|t| t.acceptor().clone()),
        handshake_timeout: Duration::from_millis(http.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(http.idle_timeout_ms),
        write_stall: None,
    });
    tracing::debug!(?limits, "serving the API");
    let workers_stop = crate::app::Stop::default();
    let workers = spawn_workers(&state, workers_stop.waiter())?;
    let handler_state = state.clone();
    let stop_state = state.clone();
    let shutdown = async move {
        shutdown.await;
        // The embedded workers stop claiming and drain beside the API's requests.
        workers_stop.trigger();
        // Long-lived streams end, so the drain does not wait out its grace for them.
        stop_state
            .feeds_stop
            .store(true, std::sync::atomic::Ordering::Release);
    };
    http::serve_http(
        listener,
        &limits,
        settings,
        shutdown,
        move |req, peer, request| {
            let state = handler_state.clone();
            async move {
                let mut resp = handler::handle(state, req, peer).await;
                let streamed = resp
                    .extensions_mut()
                    .remove::<proxy_feed::Streamed>()
                    .and_then(|s| s.0.lock().take());
                match streamed {
                    Some(rx) => resp.map(|_| Either::Right(http::ChannelBody::new(rx, request))),
                    None => {
                        drop(request);
                        resp.map(Either::Left)
                    }
                }
            }
        },
    )
    .await;
    tracing::info!("stopped accepting; in-flight requests drained");
    if let Some(w) = workers {
        // Their outcomes are written before the store closes.
        let _ = w.await;
    }
    flusher.abort();
    let s = state.clone();
    let closed = tokio::task::spawn_blocking(move || {
        let now = s.clock.now_ms();
        for (limiter, what) in [
            (&s.limiter, "rate-limit"),
            (&s.login_limiter, "login-limit"),
        ] {
            if let Err(e) = limiter.flush(now) {
                tracing::warn!(error = %e, what, "final bucket flush failed");
            }
        }
        s.atlas.close()
    })
    .await;
    match closed {
        Ok(Ok(())) => {
            tracing::info!("ATLAS flushed and closed");
            Ok(())
        }
        Ok(Err(e)) => Err(std::io::Error::other(e)),
        Err(e) => Err(std::io::Error::other(e)),
    }
}
