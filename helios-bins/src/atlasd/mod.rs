//! `helios-atlasd`: ATLAS over the Redis protocol (RESP2, and RESP3 after `HELLO 3`), so
//! redis-cli, redis-benchmark and Redis client libraries work unchanged.
//!
//! Layout (after mini-redis, with limits): [`resp`] frames bytes (parser with limits,
//! reply encoder), [`cmd`] is the command table and dispatch, [`kv`] the keyspace
//! commands over an ATLAS transaction, [`glob`] the KEYS/SCAN pattern matcher, [`auth`]
//! the credentials of AUTH (and their throttles), [`acl`] what a helios-auth user may do,
//! [`config`] the settings; this module owns the listener, the connections and shutdown.
//!
//! # Keys
//! One process owns a data directory, and atlasd owns its whole keyspace as a plain Redis
//! keyspace: for an unrestricted connection (the `default` user of `requirepass`, or a
//! helios-auth admin) RESP keys are stored verbatim (no prefix). A helios-auth user without
//! `admin:*` (with `auth_users: true`) sees only its own KV namespace, the gateway's
//! `kv:u:{userId}:`, addressed without the prefix, with its RBAC rights ([`acl`]). Keys
//! are binary-safe, as Redis's (ATLAS keys are bytes); an empty key gets `-ERR invalid key:
//! ...` and nothing happens. Values are arbitrary bytes. (A data directory
//! written by the gateway can be served by atlasd, and its `kv:`/`job:`/`auth:` keys are
//! then visible, to unrestricted connections, as they are.)
//!
//! With `auth_users: true` the directory is the gateway's (its users live there), so
//! before serving atlasd brings its KV keys to the gateway's current layout, as the
//! gateway's own start does ([`crate::gateway::kv::migrate_layout`]: layout-1 `kv:{key}`
//! keys move to the `legacy` namespace and `meta:kv_layout` is written); a failure (a
//! layout written by a newer build, say) fails the start. Otherwise users would write
//! under `kv:u:{id}:` in a layout-1 directory, and the gateway's first start would move
//! their keys to `legacy`. Without `auth_users` the keyspace is atlasd's plain Redis
//! keyspace and nothing is moved.
//!
//! # Connections
//! Each connection is one task: it reads what is available, parses every complete request,
//! executes them in order (a run of keyspace commands as one ATLAS transaction: on the
//! runtime thread over a read-only view when the run only reads, else through the
//! [`committer`], awaited), and writes the replies with one `write_all`; the replies of a
//! write run committed in a group, when nothing of the connection's waits before them,
//! are written by the committer itself right after the commit (what does not fit comes
//! back into the connection's buffer, before anything later). Such a run that ends what
//! was read is left in flight ([`cmd::InFlight`]): the task goes back to reading, and
//! acts on the run's answer before anything else of its own; an answer with every reply
//! written does not even wake it (the client's next request does). Reads
//! take one `recv` per request ([`read_request_bytes`]). A protocol error gets its `-ERR
//! Protocol error: ...` reply after the replies of the requests before it, and closes only
//! that connection. The accept loop is the runner's ([`crate::app::serve`]): past
//! `clients_max` a new client gets `-ERR max number of clients reached` and is closed. With
//! `idle_timeout_s` > 0 a client idle that long is closed.
//!
//! # Shutdown
//! On the shutdown future (SIGINT/SIGTERM in the binary) or `SHUTDOWN`, the listener
//! stops and the runner drains: connections finish the batch in hand (and the write run in
//! flight, whose replies they see written) and close (up to `shutdown_grace_ms`), then
//! ATLAS is closed (fsynced).
//!
//! What this module must never do: hold a lock across an `.await`, block a connection's
//! task on an fsync (writes are queued, their answers awaited or left in flight; the one
//! fsync a runtime thread waits for is its turn's group commit, at the end of the turn, as
//! Redis does; server commands that may wait run in `block_in_place`), or grow a buffer
//! past the configured limits because of what a client sends.

pub mod acl;
pub mod auth;
pub mod bin;
pub mod cmd;
pub mod committer;
pub mod config;
pub mod encodings;
pub mod glob;
pub mod kv;
pub mod resp;
pub mod strings;
pub mod watched;

use crate::app::{Context, serve};
use crate::atlasd::cmd::{Flow, ScanCursors, Session};
use crate::atlasd::resp::{Limits, Out, ParseState, Parsed, parse_request_resume};
use bytes::BytesMut;
use config::AtlasdConfig;
use helios_atlas::Atlas;
use helios_core::Clock;
use parking_lot::Mutex;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The Redis version atlasd reports (clients gate features on it).
pub const REDIS_VERSION: &str = "7.2.0";

/// Most requests executed per batch: a client pipelining more gets them in several
/// batches (bounds the reply buffer and the writer lock's hold time).
const BATCH_COUNT_MAX: usize = 1024;

/// Errors of starting or running the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AtlasdError {
    /// ATLAS failed to open or close.
    #[error("ATLAS: {0}")]
    Atlas(#[from] helios_atlas::AtlasError),
    /// The listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The helios-auth users and roles (`auth_users: true`) failed to load.
    #[error("helios-auth users: {0}")]
    Auth(#[from] helios_auth::AuthError),
    /// Bringing the gateway's KV keys to its current layout (`auth_users: true`) failed.
    #[error("moving KV keys to namespaces: {0}")]
    KvLayout(helios_atlas::AtlasError),
}

/// State shared by every connection.
#[derive(Debug)]
pub struct Shared {
    /// The store.
    pub atlas: Atlas,
    /// Runs write transactions, many connections' per commit group.
    pub committer: committer::Committer,
    /// The settings.
    pub cfg: AtlasdConfig,
    limits: Limits,
    port: u16,
    started: Instant,
    /// Connections: open, accepted and refused (the accept loop counts).
    conns: Arc<serve::Counters>,
    commands_total: AtomicU64,
    client_id_next: AtomicU64,
    last_save_s: AtomicU64,
    bg_running: AtomicBool,
    // The context's clock: LASTSAVE, INFO's save times.
    clock: Arc<dyn Clock>,
    rng: AtomicU64,
    scan_cursors: Mutex<ScanCursors>,
    shutdown: watch::Sender<bool>,
    /// helios-auth's users and roles of the data directory (`auth_users: true` only).
    auth: Option<helios_auth::Auth>,
    /// Failed `AUTH <requirepass>` attempts per client address.
    pass_throttle: auth::PassThrottle,
    /// SHA-256 of `requirepass` (AUTH compares digests, in constant time).
    pass_digest: [u8; 32],
    /// WATCHed keys of every connection.
    pub watches: Arc<watched::Watches>,
    /// The strings OBJECT ENCODING reports `raw` by history.
    pub raw_strings: Arc<encodings::RawStrings>,
}

impl Shared {
    fn saved_now(&self) {
        self.last_save_s
            .store(self.clock.now_ms() / 1000, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.atlas.view(|tx| tx.now_ms())
    }

    /// Milliseconds since the server started (monotonic: the AUTH throttle's clock).
    fn mono_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A cheap pseudo-random number (RANDOMKEY); not for secrets.
    fn random(&self) -> u64 {
        let mut x = self.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        x ^= x >> 30;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    }

    /// The read-only view of the settings for `CONFIG GET` (Redis names). `requirepass`
    /// is never given: it reads empty when none is set, else `<redacted>`.
    fn settings(&self) -> Vec<(String, String)> {
        let (bind, _) = self
            .cfg
            .listen
            .rsplit_once(':')
            .unwrap_or((self.cfg.listen.as_str(), ""));
        let v = vec![
            ("appendonly", "yes".to_owned()),
            ("appendfsync", self.cfg.appendfsync.clone()),
            ("dir", self.atlas.dir().display().to_string()),
            ("port", self.port.to_string()),
            ("bind", bind.trim_matches(['[', ']']).to_owned()),
            ("maxclients", self.cfg.clients_max.to_string()),
            ("timeout", self.cfg.idle_timeout_s.to_string()),
            ("proto-max-bulk-len", self.cfg.bulk_size_max.to_string()),
            ("save", String::new()),
            ("databases", "1".to_owned()),
            (
                "maxmemory",
                self.atlas
                    .stats()
                    .memory_limit_size
                    .unwrap_or(0)
                    .to_string(),
            ),
            ("maxmemory-policy", "noeviction".to_owned()),
            // The runtime threads serving clients (Redis's nearest setting).
            ("io-threads", self.cfg.worker_threads.to_string()),
            (
                "requirepass",
                if self.cfg.requirepass.is_empty() {
                    String::new()
                } else {
                    "<redacted>".to_owned()
                },
            ),
        ];
        v.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }
}

/// Serves HTTP `GET /metrics` (`metrics_port`) on `listener` until `shutdown` resolves:
/// the store's families ([`crate::app::metrics::atlas_families`]) and the process's,
/// negotiated as every binary's ([`crate::app::metrics::respond`]). The stats are read in
/// [`blocking`] (they may wait for the writer lock across an fsync).
pub async fn run_metrics(listener: TcpListener, atlas: Atlas, shutdown: impl Future<Output = ()>) {
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let settings = crate::app::http::ConnSettings {
        builder: Arc::new(builder),
        tls: None,
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        write_stall: None,
    };
    let render = Arc::new(move || {
        blocking(|| {
            let mut out = String::new();
            crate::app::metrics::atlas_families(&mut out, &atlas);
            out
        })
    });
    crate::app::http::serve_metrics(listener, settings, render, shutdown).await;
}

/// Runs `f`, which may block (fsync, bcrypt, a snapshot), without stalling the runtime:
/// in `block_in_place` on a multi-threaded runtime, directly otherwise.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// bcrypt cost of the hash checked for unknown usernames: the gateway's default
/// `auth.bcrypt_cost`, which its users' hashes carry, so an unknown name costs the same.
const DUMMY_HASH_COST: u32 = 12;

/// helios-auth over `atlas` (`auth_users: true`): the users and roles of the data
/// directory, checked as the gateway checks them. It never issues tokens, so its signing
/// key is a random one of this process.
fn open_auth(atlas: Atlas, ctx: &Context) -> Result<helios_auth::Auth, helios_auth::AuthError> {
    use helios_auth::{AuthConfig, JwtConfig, KeyConfig, KeyState};
    let mut secret = [0u8; 32];
    ctx.random.fill(&mut secret);
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    helios_auth::Auth::open(
        atlas,
        AuthConfig {
            bcrypt_cost: DUMMY_HASH_COST,
            password_len_min: 10,
            registration_open: false,
            refresh_ttl_ms: 1_000,
            jwt: JwtConfig {
                algorithm: jsonwebtoken::Algorithm::HS256,
                issuer: "helios-atlasd".into(),
                audience: "helios-atlasd".into(),
                access_ttl_s: 60,
                leeway_s: 0,
                keys: vec![KeyConfig {
                    kid: "atlasd".into(),
                    state: KeyState::Active,
                    secret: Some(secret),
                    private_pem: None,
                    public_pem: None,
                }],
            },
            throttle: helios_auth::ThrottleConfig::default(),
        },
        ctx.clock.clone(),
        ctx.random.clone(),
    )
}

/// Opens ATLAS in the configured data directory with the configured fsync policy.
pub fn open_atlas(cfg: &AtlasdConfig) -> Result<Atlas, helios_atlas::AtlasError> {
    open_atlas_in(cfg, &Context::system())
}

/// [`open_atlas`] on `ctx`'s clock.
pub fn open_atlas_in(cfg: &AtlasdConfig, ctx: &Context) -> Result<Atlas, helios_atlas::AtlasError> {
    crate::app::open_atlas(
        &cfg.data_dir,
        &cfg.appendfsync,
        cfg.everysec_lag_max_ms,
        ctx,
    )
}

/// The runtime atlasd serves on (the binary's, and the tests'): `cfg.worker_threads`
/// threads, whose `on_thread_park` hook reports the end of each turn to the returned hub;
/// pass it to [`run`].
pub fn runtime(
    cfg: &AtlasdConfig,
) -> std::io::Result<(tokio::runtime::Runtime, Arc<committer::TurnHub>)> {
    let turns = Arc::new(committer::TurnHub::default());
    let hook = turns.clone();
    let rt = crate::app::launch::builder(cfg.worker_threads)
        .on_thread_park(move || hook.turn_ended())
        .build()?;
    Ok((rt, turns))
}

/// Serves RESP on `listener` over `atlas` until `shutdown` resolves or a client sends
/// `SHUTDOWN`; then drains connections and closes ATLAS (fsync). `turns` is the hub the
/// runtime's `on_thread_park` hook reports turn ends to ([`runtime`] builds both): the
/// writes queued in a turn commit as one group when it ends ([`committer`]).
pub async fn run(
    listener: TcpListener,
    atlas: Atlas,
    cfg: AtlasdConfig,
    shutdown: impl Future<Output = ()>,
    turns: Arc<committer::TurnHub>,
) -> Result<(), AtlasdError> {
    run_in(listener, atlas, cfg, Context::system(), shutdown, turns).await
}

/// [`run`] on `ctx`'s clock and randomness (LASTSAVE, RANDOMKEY's seed, the `auth_users`
/// signing key); open `atlas` on the same clock ([`open_atlas_in`]).
pub async fn run_in(
    listener: TcpListener,
    atlas: Atlas,
    cfg: AtlasdConfig,
    ctx: Context,
    shutdown: impl Future<Output = ()>,
    turns: Arc<committer::TurnHub>,
) -> Result<(), AtlasdError> {
    let port = listener.local_addr()?.port();
    // The gateway's directory: its KV layout first (as the gateway's start does), then its
    // users and roles (reading the store and hashing the dummy password: bcrypt).
    let auth = if cfg.auth_users {
        let atlas = atlas.clone();
        let auth_ctx = ctx.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let moved = crate::gateway::kv::migrate_layout(&atlas)
                .map_err(AtlasdError::KvLayout)?
                .moved;
            if moved > 0 {
                tracing::info!(
                    moved,
                    "KV keys of the layout before namespaces moved to `legacy`"
                );
            }
            open_auth(atlas, &auth_ctx).map_err(AtlasdError::Auth)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        Some(opened?)
    } else {
        None
    };
    let (tx, mut rx) = watch::channel(false);
    let (committer, committer_thread) =
        committer::start(atlas.clone(), cfg.appendfsync == "always", turns)?;
    let shared = Arc::new(Shared {
        watches: Arc::default(),
        raw_strings: Arc::default(),
        committer,
        limits: Limits {
            bulk_size_max: cfg.bulk_size_max,
            array_count_max: cfg.array_count_max,
            ..Limits::default()
        },
        atlas,
        port,
        started: Instant::now(),
        conns: Arc::default(),
        commands_total: AtomicU64::new(0),
        client_id_next: AtomicU64::new(1),
        last_save_s: AtomicU64::new(ctx.clock.now_ms() / 1000),
        bg_running: AtomicBool::new(false),
        rng: AtomicU64::new(ctx.random_u64()),
        clock: ctx.clock.clone(),
        scan_cursors: Mutex::new(ScanCursors::default()),
        shutdown: tx,
        auth,
        pass_throttle: auth::PassThrottle::default(),
        pass_digest: auth::digest(cfg.requirepass.as_bytes()),
        cfg,
    });
    let limits = serve::Limits {
        connections_max: shared.cfg.clients_max,
        per_address_max: usize::MAX,
        when_full: serve::WhenFull::Refuse(b"-ERR max number of clients reached\r\n"),
        drain_grace: Duration::from_millis(shared.cfg.shutdown_grace_ms),
        counters: shared.conns.clone(),
    };
    // The signal, or a client's SHUTDOWN.
    let stop = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = rx.wait_for(|v| *v) => {}
        }
    };
    serve::serve(listener, &limits, stop, |conn| {
        let shared = shared.clone();
        async move {
            let id = shared.client_id_next.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = connection(&shared, conn, id).await {
                tracing::debug!(client = id, error = %e, "connection ended");
            }
        }
    })
    .await;
    let atlas = shared.atlas.clone();
    tokio::task::spawn_blocking(move || {
        committer_thread.stop();
        atlas.close()
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    tracing::info!("helios-atlasd stopped; ATLAS flushed and closed");
    Ok(())
}

async fn connection(shared: &Arc<Shared>, conn: serve::Conn, id: u64) -> std::io::Result<()> {
    let serve::Conn {
        stream: socket,
        peer: addr,
        drain,
    } = conn;
    let _ = socket.set_nodelay(true);
    // Shared with the committer, which writes committed replies to its socket; this task
    // writes only when no job of its own is in the committer's hands.
    let mut sink = committer::Sink::new(socket);
    let mut session = Session::new(id, auth::starts_authed(&shared.cfg), addr);
    let mut inbuf = BytesMut::with_capacity(16 * 1024);
    let mut pstate = ParseState::default();
    let mut out = Out::new();
    // A write run whose replies the committer writes; the task reads on meanwhile.
    let mut in_flight: Option<cmd::InFlight> = None;
    // One shutdown wait for the connection's life (not a new one per read: each would
    // register with the channel anew).
    let mut stop = drain.clone();
    let stopped = async move { stop.wait().await };
    tokio::pin!(stopped);
    let idle =
        (shared.cfg.idle_timeout_s > 0).then(|| Duration::from_secs(shared.cfg.idle_timeout_s));
    // A batch's requests (kept: one allocation per connection, not per batch).
    let mut reqs = Vec::new();
    loop {
        // Execute every complete request in the buffer, in batches.
        loop {
            let mut perr = None;
            // Before AUTH, Redis's small unauthenticated limits apply, one request at a
            // time (so a pipelined AUTH lifts them for the requests after it).
            let (limits, batch_max) = if session.authed {
                (&shared.limits, BATCH_COUNT_MAX)
            } else {
                (&Limits::UNAUTHENTICATED, 1)
            };
            while reqs.len() < batch_max {
                match parse_request_resume(&mut inbuf, limits, &mut pstate) {
                    Ok(Parsed::Request(r)) => reqs.push(r),
                    Ok(Parsed::Incomplete) => break,
                    Err(e) => {
                        perr = Some(e);
                        break;
                    }
                }
            }
            if reqs.is_empty() && perr.is_none() {
                break;
            }
            // The run in flight comes first: its replies, and the state it wrote.
            if let Some(f) = in_flight.take() {
                f.finish(shared, &mut out).await;
            }
            let flow = if reqs.is_empty() {
                Flow::Continue
            } else {
                // A protocol error's reply follows every other: nothing stays in flight.
                let (flow, f) = cmd::execute_batch(
                    shared,
                    &mut session,
                    &mut reqs,
                    &mut out,
                    &sink,
                    perr.is_none(),
                )
                .await;
                // Let go of the requests' bytes (slices of `inbuf`) before reading more.
                reqs.clear();
                in_flight = f;
                flow
            };
            if let Some(e) = &perr {
                out.error(&e.to_string());
            }
            flush(&sink, &mut out).await?;
            if perr.is_some() || flow == Flow::Close {
                // Nothing is in flight (a close ends its batch, which then leaves no run
                // in flight), and the committer holds no clone of the socket (it lets go
                // of a job's socket before answering it).
                if let Some(s) = sink.socket_mut() {
                    let _ = s.shutdown().await;
                }
                return Ok(());
            }
        }
        if drain.is_draining() {
            finish_in_flight(shared, &mut in_flight, &sink, &mut out).await;
            return Ok(());
        }
        if inbuf.capacity() - inbuf.len() < 4096 {
            inbuf.reserve(16 * 1024);
        }
        let socket = sink.socket();
        let read = async {
            match idle {
                Some(d) => tokio::time::timeout(d, read_request_bytes(socket, &mut inbuf))
                    .await
                    .unwrap_or(Ok(0)),
                None => read_request_bytes(socket, &mut inbuf).await,
            }
        };
        let event = tokio::select! {
            // The run in flight, then the read, without drawing a random branch order.
            biased;
            answered = cmd::InFlight::attention(&mut in_flight) => Event::Answered(answered),
            r = read => Event::Read(r),
            () = &mut stopped => Event::Stop,
        };
        match event {
            Event::Answered(answered) => {
                // Replies the socket did not take, or a refused write's reports.
                answered.settle(shared, &mut out).await;
                flush(&sink, &mut out).await?;
            }
            Event::Read(Ok(n)) if n > 0 => {}
            Event::Read(r) => {
                // End of stream (or idle timeout), or a read error.
                finish_in_flight(shared, &mut in_flight, &sink, &mut out).await;
                return r.map(|_| ());
            }
            Event::Stop => {
                finish_in_flight(shared, &mut in_flight, &sink, &mut out).await;
                return Ok(());
            }
        }
    }
}

/// What a connection waiting for its client saw first.
enum Event {
    /// The answer of the run in flight, which needs acting on.
    Answered(cmd::Answered),
    /// Bytes read (0: end of stream or idle timeout), or a read error.
    Read(std::io::Result<usize>),
    /// Server shutdown.
    Stop,
}

/// Acts on the run in flight before the connection ends, so a client that half-closes
/// right after its last request still gets that request's whole reply, or its error.
async fn finish_in_flight(
    shared: &Shared,
    in_flight: &mut Option<cmd::InFlight>,
    sink: &committer::Sink,
    out: &mut Out,
) {
    if let Some(f) = in_flight.take() {
        f.finish(shared, out).await;
        let _ = flush(sink, out).await;
    }
}

/// Writes the replies in `out` and empties it (letting go of a huge buffer).
async fn flush(sink: &committer::Sink, out: &mut Out) -> std::io::Result<()> {
    let r = write_all(sink.socket(), &out.buf).await;
    out.buf.clear();
    if out.buf.capacity() > 4 * 1024 * 1024 {
        out.buf = BytesMut::with_capacity(16 * 1024);
    }
    r
}

/// `write_all` over a shared socket.
async fn write_all(socket: &TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match socket.try_write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => socket.writable().await?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads what the socket has into `buf` (at least one byte; 0 at end of stream), as
/// `read_buf` does, but with one `recv` per request where `read_buf` makes two.
///
/// Tokio forgets a socket's readiness only when a read fails with `WouldBlock`, so after a
/// request-reply exchange the next `read_buf` first tries a `recv` that comes back empty.
/// Here a short read (fewer bytes than there was room for: the kernel had no more) also
/// clears the readiness, like a `WouldBlock` would. That is race-free: `try_io` clears
/// only the readiness it saw before the `recv`, so bytes arriving after it raise a new
/// readiness event that is kept and wakes the next wait.
async fn read_request_bytes(socket: &TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    loop {
        socket.readable().await?;
        let mut got = None;
        let r = socket.try_io(tokio::io::Interest::READABLE, || {
            let room = buf.capacity() - buf.len();
            let n = socket.try_read_buf(buf)?;
            got = Some(n);
            if n > 0 && n < room {
                // Drained: forget the readiness seen before this read.
                Err(std::io::ErrorKind::WouldBlock.into())
            } else {
                Ok(n)
            }
        });
        match (r, got) {
            (Ok(n), _) => return Ok(n),
            (Err(e), Some(n)) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(n),
            (Err(e), _) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            (Err(e), _) => return Err(e),
        }
    }
}
