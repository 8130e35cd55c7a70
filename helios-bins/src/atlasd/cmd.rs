//! The command table and dispatch: arity and auth checks, MULTI queueing, grouping of
//! pipelined keyspace commands into ATLAS transactions, and the server commands (HELLO,
//! AUTH, INFO, SCAN, CONFIG GET, SAVE, ...).
//!
//! # Pipelines and atomicity
//! The requests of one read are executed in order. A maximal run of consecutive keyspace
//! commands ([`super::kv`]) is executed as ONE ATLAS transaction (one AOF record, one
//! fsync under `always`, shared with other connections through group commit); a run with
//! no write runs over a read-only view. Each command keeps its own reply and semantics:
//! a later command sees the earlier ones' writes. If ATLAS refuses a write in the run
//! (memory limit, value too large, store failure), the run's transaction is discarded and
//! its commands are re-run one per transaction, so the refusal is reported on the command
//! that caused it and the others apply.
//!
//! # MULTI/EXEC
//! Queued commands are checked at queue time (unknown command, arity, and only keyspace
//! commands may be queued: others fail the transaction with `EXECABORT`, as Redis does for
//! queue-time errors). EXEC runs them as one ATLAS transaction; a runtime error (wrong
//! value, syntax) is that command's reply and the others still apply (Redis semantics).
//!
//! # Users
//! AUTH and HELLO's AUTH are [`super::auth`]'s (throttled, so awaited here). A connection
//! scoped to a helios-auth user ([`Session::scope`]) has each command checked, and its key
//! arguments mapped into the user's namespace, as it is classified ([`super::acl`]), so
//! the runs, MULTI queues and EXEC below only ever see ATLAS keys they may touch; KEYS,
//! SCAN, RANDOMKEY and DBSIZE walk the namespace's prefix only.
//!
//! Invariant: write transactions (runs with a write, EXEC) go through the committer
//! ([`super::committer`]): committed in groups at the end of the runtime's turns (one AOF
//! write, and under `always` one fsync, for every connection waiting), or inline under
//! `everysec`/`no` for pipelined runs; reads run on the connection's runtime thread over
//! a read-only view; server commands that may wait (bcrypt, snapshots, whole-keyspace
//! walks, stats) run in `block_in_place`.

use super::Shared;
use super::acl::Scope;
use super::auth::{self, WRONGPASS};
use super::committer::{JobFn, Sink, Submitted, Ticket};
use super::glob;
use super::kv::{self, ERR_NOT_INT, ERR_SYNTAX, KvFn};
use super::resp::Out;
use bytes::{Bytes, BytesMut};
use helios_atlas::{AtlasError, Tx};
use helios_core::digits::parse_i64_canonical;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};

/// What a command is.
#[derive(Clone, Copy)]
pub enum Exec {
    /// A keyspace command, and whether it may write.
    Kv(KvFn, bool),
    /// A server command.
    Server(Srv),
}

/// Server commands (connection state, admin, whole-keyspace reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Srv {
    Hello,
    Auth,
    Select,
    Quit,
    Client,
    Command,
    Info,
    Dbsize,
    Keys,
    Scan,
    Randomkey,
    Flushdb,
    Flushall,
    Save,
    Bgsave,
    Bgrewriteaof,
    Lastsave,
    Config,
    Multi,
    Exec,
    Discard,
    Shutdown,
    Reset,
}

/// One row of the command table.
pub struct Spec {
    /// Lowercase name (as in Redis's error messages).
    pub name: &'static str,
    /// Redis arity: `n` exactly n arguments (name included), `-n` at least n.
    pub arity: i32,
    /// What runs.
    pub exec: Exec,
    /// First key, last key (-1: last argument), step: for `COMMAND`.
    pub keys: (i32, i32, i32),
}

const NO_KEYS: (i32, i32, i32) = (0, 0, 0);
const KEY1: (i32, i32, i32) = (1, 1, 1);
const ALL_KEYS: (i32, i32, i32) = (1, -1, 1);

macro_rules! kv {
    ($name:literal, $arity:expr, $f:path, $w:expr, $keys:expr) => {
        Spec {
            name: $name,
            arity: $arity,
            exec: Exec::Kv($f, $w),
            keys: $keys,
        }
    };
}
macro_rules! srv {
    ($name:literal, $arity:expr, $c:ident) => {
        Spec {
            name: $name,
            arity: $arity,
            exec: Exec::Server(Srv::$c),
            keys: NO_KEYS,
        }
    };
}

/// Every command served.
pub static SPECS: &[Spec] = &[
    kv!("ping", -1, kv::ping, false, NO_KEYS),
    kv!("echo", 2, kv::echo, false, NO_KEYS),
    kv!("time", 1, kv::time, false, NO_KEYS),
    kv!("get", 2, kv::get, false, KEY1),
    kv!("set", -3, kv::set, true, KEY1),
    kv!("setnx", 3, kv::setnx, true, KEY1),
    kv!("setex", 4, kv::setex, true, KEY1),
    kv!("psetex", 4, kv::psetex, true, KEY1),
    kv!("getset", 3, kv::getset, true, KEY1),
    kv!("getdel", 2, kv::getdel, true, KEY1),
    kv!("getex", -2, kv::getex, true, KEY1),
    kv!("mget", -2, kv::mget, false, ALL_KEYS),
    kv!("mset", -3, kv::mset, true, (1, -1, 2)),
    kv!("msetnx", -3, kv::msetnx, true, (1, -1, 2)),
    kv!("append", 3, kv::append, true, KEY1),
    kv!("strlen", 2, kv::strlen, false, KEY1),
    kv!("incr", 2, kv::incr, true, KEY1),
    kv!("decr", 2, kv::decr, true, KEY1),
    kv!("incrby", 3, kv::incrby, true, KEY1),
    kv!("decrby", 3, kv::decrby, true, KEY1),
    kv!("incrbyfloat", 3, kv::incrbyfloat, true, KEY1),
    kv!("del", -2, kv::del, true, ALL_KEYS),
    kv!("unlink", -2, kv::del, true, ALL_KEYS),
    kv!("exists", -2, kv::exists, false, ALL_KEYS),
    kv!("type", 2, kv::type_, false, KEY1),
    kv!("rename", 3, kv::rename, true, (1, 2, 1)),
    kv!("renamenx", 3, kv::renamenx, true, (1, 2, 1)),
    kv!("expire", -3, kv::expire, true, KEY1),
    kv!("pexpire", -3, kv::pexpire, true, KEY1),
    kv!("expireat", -3, kv::expireat, true, KEY1),
    kv!("pexpireat", -3, kv::pexpireat, true, KEY1),
    kv!("ttl", 2, kv::ttl, false, KEY1),
    kv!("pttl", 2, kv::pttl, false, KEY1),
    kv!("expiretime", 2, kv::expiretime, false, KEY1),
    kv!("pexpiretime", 2, kv::pexpiretime, false, KEY1),
    kv!("persist", 2, kv::persist, true, KEY1),
    srv!("hello", -1, Hello),
    srv!("auth", -2, Auth),
    srv!("select", 2, Select),
    srv!("quit", -1, Quit),
    srv!("client", -2, Client),
    srv!("command", -1, Command),
    srv!("info", -1, Info),
    srv!("dbsize", 1, Dbsize),
    srv!("keys", 2, Keys),
    srv!("scan", -2, Scan),
    srv!("randomkey", 1, Randomkey),
    srv!("flushdb", -1, Flushdb),
    srv!("flushall", -1, Flushall),
    srv!("save", 1, Save),
    srv!("bgsave", -1, Bgsave),
    srv!("bgrewriteaof", 1, Bgrewriteaof),
    srv!("lastsave", 1, Lastsave),
    srv!("config", -2, Config),
    srv!("multi", 1, Multi),
    srv!("exec", 1, Exec),
    srv!("discard", 1, Discard),
    srv!("shutdown", -1, Shutdown),
    srv!("reset", 1, Reset),
];

static TABLE: LazyLock<HashMap<&'static str, &'static Spec>> =
    LazyLock::new(|| SPECS.iter().map(|s| (s.name, s)).collect());

/// The spec of a command name (any case).
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    let mut buf = [0u8; 16];
    let n = name.len();
    if n > buf.len() {
        return None;
    }
    for (d, s) in buf.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    TABLE.get(std::str::from_utf8(&buf[..n]).ok()?).copied()
}

/// A command queued by MULTI.
#[derive(Clone)]
struct Queued {
    f: KvFn,
    write: bool,
    args: Vec<Bytes>,
}

/// Per-connection state.
#[derive(Debug)]
pub struct Session {
    /// CLIENT ID.
    pub id: u64,
    /// Whether AUTH succeeded (or none is required).
    pub authed: bool,
    /// The helios-auth user (without `admin:*`) the connection is confined to; `None`:
    /// unrestricted (the `default` user, or an admin).
    pub scope: Option<Scope>,
    /// CLIENT SETNAME.
    pub name: Option<Bytes>,
    /// The peer address.
    pub addr: String,
    /// The peer's IP (its [`crate::net::client_key`] is the AUTH throttles' client).
    pub peer: std::net::IpAddr,
    multi: Option<MultiState>,
}

#[derive(Default)]
struct MultiState {
    queued: Vec<Queued>,
    failed: bool,
}

impl std::fmt::Debug for MultiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MultiState({} queued)", self.queued.len())
    }
}

impl Session {
    /// A new connection's state.
    pub fn new(id: u64, authed: bool, addr: std::net::SocketAddr) -> Self {
        Self {
            id,
            authed,
            scope: None,
            name: None,
            addr: addr.to_string(),
            peer: addr.ip(),
            multi: None,
        }
    }
}

/// What the connection does after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// Write the replies, then close (QUIT).
    Close,
}

enum Step {
    Skip,
    Error(String),
    Kv(KvFn, bool),
    Server(Srv),
    Queue(KvFn, bool),
}

fn unknown_command(args: &[Bytes]) -> String {
    let mut s = format!(
        "ERR unknown command '{}', with args beginning with: ",
        String::from_utf8_lossy(&args[0][..args[0].len().min(128)])
    );
    for a in args.iter().skip(1).take(8) {
        s.push('\'');
        s.push_str(&String::from_utf8_lossy(&a[..a.len().min(128)]));
        s.push_str("' ");
    }
    s
}

/// What to do with `args`. For a scoped connection it also checks the user's rights and
/// maps the key arguments into its namespace: only when the answer is `Kv` or `Queue`
/// (which consume `args`), so a request is never mapped twice.
fn classify(s: &Session, args: &mut [Bytes]) -> Step {
    let Some(name) = args.first() else {
        return Step::Skip;
    };
    let Some(spec) = lookup(name) else {
        return Step::Error(unknown_command(args));
    };
    let n = args.len() as i32;
    if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
        return Step::Error(format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name
        ));
    }
    let exempt = matches!(
        spec.exec,
        Exec::Server(Srv::Auth | Srv::Hello | Srv::Quit | Srv::Reset)
    );
    if !s.authed && !exempt {
        return Step::Error("NOAUTH Authentication required.".into());
    }
    if let Some(scope) = &s.scope
        && let Err(e) = scope.admit(spec, args)
    {
        return Step::Error(e);
    }
    match spec.exec {
        Exec::Kv(f, w) if s.multi.is_some() => Step::Queue(f, w),
        Exec::Kv(f, w) => Step::Kv(f, w),
        Exec::Server(c @ (Srv::Exec | Srv::Discard | Srv::Multi | Srv::Quit | Srv::Reset)) => {
            Step::Server(c)
        }
        Exec::Server(_) if s.multi.is_some() => Step::Error(format!(
            "ERR '{}' inside MULTI is not supported by helios-atlasd (only keyspace commands are)",
            spec.name
        )),
        Exec::Server(c) => Step::Server(c),
    }
}

/// The Redis error line of an ATLAS refusal.
pub fn atlas_error_line(e: &AtlasError) -> String {
    match e {
        AtlasError::MemoryLimit { .. } => {
            "OOM command not allowed when used memory > 'maxmemory'.".into()
        }
        AtlasError::PreviousIo { .. } | AtlasError::Io { .. } => {
            format!("MISCONF Errors writing to the AOF file: {e}")
        }
        AtlasError::Closed => "ERR server is shutting down".into(),
        other => format!("ERR {other}"),
    }
}

/// Largest run of commands in one transaction (bounds the writer lock's hold time).
const RUN_COUNT_MAX: usize = 1024;

/// Executes one batch of requests (one read's worth), appending every reply to `out` in
/// order (but those the committer writes to the socket itself). Write transactions go
/// through the committer and are awaited, or the last left in flight: this task never
/// waits on the disk (the runtime thread waits for its turn's group fsync only when the
/// turn ends).
///
/// `sink` is the connection's: a run of writes committed in a group has its replies
/// written to its socket by the committer when `out` holds nothing yet (see
/// [`Committer::run`](super::committer::Committer::run)). With `leave` set, such a run
/// that ends the batch is not awaited: it is returned in flight, for the connection to
/// go back to reading (and to act on its answer, [`InFlight`], before anything else).
pub async fn execute_batch(
    shared: &Arc<Shared>,
    s: &mut Session,
    reqs: &mut [Vec<Bytes>],
    out: &mut Out,
    sink: &Sink,
    leave: bool,
) -> (Flow, Option<InFlight>) {
    shared
        .commands_total
        .fetch_add(reqs.len() as u64, Ordering::Relaxed);
    let mut i = 0;
    while i < reqs.len() {
        match classify(s, &mut reqs[i]) {
            Step::Skip => i += 1,
            Step::Error(e) => {
                if let Some(m) = s.multi.as_mut() {
                    m.failed = true;
                }
                out.error(&e);
                i += 1;
            }
            Step::Queue(f, write) => {
                let args = std::mem::take(&mut reqs[i]);
                i += 1;
                let max = shared.cfg.multi_count_max;
                if let Some(m) = s.multi.as_mut() {
                    if m.queued.len() >= max {
                        m.failed = true;
                        out.error(&format!("ERR MULTI holds at most {max} commands"));
                    } else {
                        m.queued.push(Queued { f, write, args });
                        out.simple("QUEUED");
                    }
                }
            }
            Step::Kv(f, write) => {
                let first = Queued {
                    f,
                    write,
                    args: std::mem::take(&mut reqs[i]),
                };
                i += 1;
                let mut rest = Vec::new();
                while i < reqs.len() && rest.len() + 1 < RUN_COUNT_MAX {
                    match classify(s, &mut reqs[i]) {
                        Step::Kv(f, write) => {
                            rest.push(Queued {
                                f,
                                write,
                                args: std::mem::take(&mut reqs[i]),
                            });
                            i += 1;
                        }
                        _ => break,
                    }
                }
                // A lone command (the common case) costs one allocation.
                let run: Arc<[Queued]> = if rest.is_empty() {
                    Arc::new([first])
                } else {
                    rest.insert(0, first);
                    rest.into()
                };
                let last = leave && i == reqs.len();
                if let Some(f) = run_kv(shared, run, out, sink, last).await {
                    return (Flow::Continue, Some(f));
                }
            }
            Step::Server(Srv::Exec) => {
                i += 1;
                exec(shared, s, out).await;
            }
            // Throttled: they may wait (without holding the runtime thread).
            Step::Server(Srv::Auth) => {
                let args = std::mem::take(&mut reqs[i]);
                i += 1;
                auth_command(shared, s, &args, out).await;
            }
            Step::Server(Srv::Hello) => {
                let args = std::mem::take(&mut reqs[i]);
                i += 1;
                hello(shared, s, &args, out).await;
            }
            Step::Server(c) => {
                let args = std::mem::take(&mut reqs[i]);
                i += 1;
                if server(shared, s, c, &args, out) == Flow::Close {
                    return (Flow::Close, None);
                }
            }
        }
    }
    (Flow::Continue, None)
}

fn run_one(tx: &mut Tx<'_, '_>, q: &Queued, out: &mut Out) -> Result<(), AtlasError> {
    (q.f)(tx, &q.args, out)
}

/// Runs `q`, writing a refused write as that command's error reply (the others go on).
fn run_reporting(tx: &mut Tx<'_, '_>, q: &Queued, out: &mut Out) {
    let mark = out.buf.len();
    if let Err(e) = run_one(tx, q, out) {
        out.buf.truncate(mark);
        out.error(&atlas_error_line(&e));
    }
}

/// The committer job that runs `qs` as one transaction and returns their replies
/// (preceded by an array header for EXEC). A write the store refuses fails the job, and
/// then nothing of it applies.
fn write_job(qs: Arc<[Queued]>, resp3: bool, exec_header: bool) -> JobFn {
    Box::new(move |tx| {
        let mut o = Out {
            buf: BytesMut::with_capacity(64 * qs.len() + 16),
            resp3,
        };
        if exec_header {
            o.array(qs.len());
        }
        for q in qs.iter() {
            run_one(tx, q, &mut o)?;
        }
        Ok(o.buf)
    })
}

/// Runs a run of keyspace commands, appending its replies to `out`. A write run goes
/// through the committer; with `leave`, one whose replies go to the socket is returned in
/// flight instead of awaited.
async fn run_kv(
    shared: &Shared,
    run: Arc<[Queued]>,
    out: &mut Out,
    sink: &Sink,
    leave: bool,
) -> Option<InFlight> {
    if !run.iter().any(|q| q.write) {
        shared.atlas.view(|tx| {
            for q in run.iter() {
                run_reporting(tx, q, out);
            }
        });
        return None;
    }
    let resp3 = out.resp3;
    // Replies may go straight to the socket only if nothing written before them waits.
    let r = if out.buf.is_empty() {
        match shared
            .committer
            .submit(write_job(run.clone(), resp3, false), run.len(), sink)
        {
            Submitted::Done(r) => r,
            Submitted::Queued(ticket) if leave => {
                return Some(InFlight { run, resp3, ticket });
            }
            Submitted::Queued(ticket) => ticket.wait().await,
        }
    } else {
        shared
            .committer
            .run(write_job(run.clone(), resp3, false), run.len())
            .await
    };
    settle(shared, &run, resp3, r, out).await;
    None
}

/// Appends to `out` what the answer of a write run leaves to the connection: the replies
/// the socket did not take; or, when some write was refused (nothing of the run
/// applied), each command again on its own, so the refusal is reported on the command
/// that caused it.
async fn settle(
    shared: &Shared,
    run: &[Queued],
    resp3: bool,
    r: Result<BytesMut, AtlasError>,
    out: &mut Out,
) {
    match r {
        Ok(buf) => out.buf.extend_from_slice(&buf),
        Err(_) => {
            for q in run.iter() {
                let one: Arc<[Queued]> = Arc::from([q.clone()]);
                match shared.committer.run(write_job(one, resp3, false), 1).await {
                    Ok(buf) => out.buf.extend_from_slice(&buf),
                    Err(e) => out.error(&atlas_error_line(&e)),
                }
            }
        }
    }
}

/// A write run the committer has and the connection did not wait for: its replies go to
/// the socket; the connection reads on meanwhile and acts on the answer before anything
/// else of its own (any reply, any other command).
pub struct InFlight {
    run: Arc<[Queued]>,
    resp3: bool,
    ticket: Ticket,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("commands", &self.run.len())
            .finish()
    }
}

/// The answer of a run in flight that needs the connection ([`InFlight::attention`]).
#[derive(Debug)]
pub struct Answered(InFlight, Result<BytesMut, AtlasError>);

impl Answered {
    /// Appends to `out` what the run leaves to the connection.
    pub async fn settle(self, shared: &Shared, out: &mut Out) {
        let Answered(f, r) = self;
        settle(shared, &f.run, f.resp3, r, out).await;
    }
}

impl InFlight {
    /// Waits for the run and appends to `out` what it leaves to the connection.
    pub async fn finish(self, shared: &Shared, out: &mut Out) {
        let r = self.ticket.wait().await;
        settle(shared, &self.run, self.resp3, r, out).await;
    }

    /// Resolves when the answer of the run in `f` needs the connection (replies the
    /// socket did not take, or a refused write), taking it out of `f`. Only such an
    /// answer wakes the task; one with every reply written is found when something else
    /// (the client's next request) wakes it: then this clears `f` and stays pending.
    /// Pending forever with no run in flight. Cancel-safe: it changes `f` only as it
    /// resolves, or for an answer that needs nothing.
    pub async fn attention(f: &mut Option<InFlight>) -> Answered {
        let r = match f.as_mut() {
            Some(f) => f.ticket.quiet().await,
            None => std::future::pending().await,
        };
        match f.take() {
            Some(done) if !matches!(&r, Ok(rest) if rest.is_empty()) => Answered(done, r),
            _ => std::future::pending().await,
        }
    }
}

async fn exec(shared: &Shared, s: &mut Session, out: &mut Out) {
    let Some(m) = s.multi.take() else {
        out.error("ERR EXEC without MULTI");
        return;
    };
    if m.failed {
        out.error("EXECABORT Transaction discarded because of previous errors.");
        return;
    }
    if !m.queued.iter().any(|q| q.write) {
        out.array(m.queued.len());
        shared.atlas.view(|tx| {
            for q in &m.queued {
                // A command error inside EXEC is that command's reply; the others apply.
                run_reporting(tx, q, out);
            }
        });
        return;
    }
    // A write the store refuses (memory limit, oversized key or value) aborts the whole
    // EXEC and nothing of it applies: a multi-write command must never be left half done.
    // Command errors (wrong arguments, not an integer) are replies and do not abort.
    let n = m.queued.len();
    match shared
        .committer
        .run(write_job(m.queued.into(), out.resp3, true), n)
        .await
    {
        Ok(buf) => out.buf.extend_from_slice(&buf),
        Err(e) => out.error(&atlas_error_line(&e)),
    }
}

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// AUTH [user] pass.
async fn auth_command(shared: &Shared, s: &mut Session, a: &[Bytes], out: &mut Out) {
    let (user, pass) = match a.len() {
        2 => (None, &a[1]),
        3 => (Some(&a[1][..]), &a[2]),
        _ => {
            out.error(ERR_SYNTAX);
            return;
        }
    };
    if user.is_none() && shared.cfg.requirepass.is_empty() {
        out.error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
    } else if auth::log_in(shared, s, user, pass).await {
        out.ok();
    } else {
        out.error(WRONGPASS);
    }
}

fn server(shared: &Arc<Shared>, s: &mut Session, c: Srv, a: &[Bytes], out: &mut Out) -> Flow {
    match c {
        Srv::Quit => {
            out.ok();
            return Flow::Close;
        }
        Srv::Reset => {
            s.multi = None;
            s.name = None;
            out.resp3 = false;
            s.authed = auth::starts_authed(&shared.cfg);
            s.scope = None;
            out.simple("RESET");
        }
        // Awaited in `execute_batch`.
        Srv::Auth | Srv::Hello => unreachable!("AUTH and HELLO are executed by execute_batch"),
        Srv::Select => match parse_i64_canonical(&a[1]) {
            Some(0) => out.ok(),
            Some(_) => out.error("ERR DB index is out of range"),
            None => out.error(ERR_NOT_INT),
        },
        Srv::Client => client(s, a, out),
        Srv::Command => command(a, out),
        // Both read ATLAS's stats, which may wait for the writer lock (held across an
        // fsync under `always`).
        Srv::Info => super::blocking(|| info(shared, a, out)),
        Srv::Dbsize => match &s.scope {
            None => out.int(shared.atlas.key_count() as i64),
            // O(namespace): a walk of its prefix.
            Some(scope) => out.int(super::blocking(|| count_prefix(shared, scope.prefix())) as i64),
        },
        Srv::Keys => {
            let keys = super::blocking(|| all_keys(shared, s.scope.as_ref(), Some(&a[1])));
            out.array(keys.len());
            for k in keys {
                out.bulk(k.as_bytes());
            }
        }
        Srv::Scan => scan(shared, s.scope.as_ref(), a, out),
        Srv::Randomkey => {
            if let Some(scope) = &s.scope {
                // O(namespace): one walk of its prefix.
                let key = super::blocking(|| random_in_prefix(shared, scope.prefix()));
                let key = key.as_deref().and_then(|k| scope.client_key(k));
                out.opt_bulk(key.map(str::as_bytes));
                return Flow::Continue;
            }
            let n = shared.atlas.key_count();
            let key = if n == 0 {
                None
            } else {
                let skip = shared.random() % n;
                // Read the time first: `now_ms` takes the keyspace lock itself, and a
                // second read lock behind a queued writer would deadlock.
                let now = shared.now_ms();
                shared.atlas.with_keyspace(|ks| {
                    ks.iter()
                        .skip(skip as usize)
                        .chain(ks.iter())
                        .find(|(_, e)| !e.is_expired(now))
                        .map(|(k, _)| k.to_owned())
                })
            };
            out.opt_bulk(key.as_deref().map(str::as_bytes));
        }
        Srv::Flushdb | Srv::Flushall => {
            if a.len() > 2 || a.get(1).is_some_and(|o| !eq(o, "ASYNC") && !eq(o, "SYNC")) {
                out.error(ERR_SYNTAX);
            } else {
                match super::blocking(|| flush(shared)) {
                    Ok(()) => out.ok(),
                    Err(e) => out.error(&atlas_error_line(&e)),
                }
            }
        }
        Srv::Save => match super::blocking(|| shared.atlas.snapshot()) {
            Ok(_) => {
                shared.saved_now();
                out.ok();
            }
            Err(e) => out.error(&atlas_error_line(&e)),
        },
        Srv::Bgsave | Srv::Bgrewriteaof => {
            if shared.bg_running.swap(true, Ordering::AcqRel) {
                out.error("ERR Background save already in progress");
            } else {
                let sh = shared.clone();
                let rewrite = c == Srv::Bgrewriteaof;
                std::thread::spawn(move || {
                    let r = if rewrite {
                        sh.atlas.rewrite_aof()
                    } else {
                        sh.atlas.snapshot()
                    };
                    match r {
                        Ok(_) => sh.saved_now(),
                        Err(e) => tracing::error!(error = %e, "background save failed"),
                    }
                    sh.bg_running.store(false, Ordering::Release);
                });
                out.simple(if rewrite {
                    "Background append only file rewriting started"
                } else {
                    "Background saving started"
                });
            }
        }
        Srv::Lastsave => out.int(shared.last_save_s.load(Ordering::Relaxed) as i64),
        Srv::Config => super::blocking(|| config(shared, a, out)),
        Srv::Multi => {
            if s.multi.is_some() {
                out.error("ERR MULTI calls can not be nested");
            } else {
                s.multi = Some(MultiState::default());
                out.ok();
            }
        }
        // Awaited in `execute_batch`.
        Srv::Exec => unreachable!("EXEC is executed by execute_batch"),
        Srv::Discard => {
            if s.multi.take().is_some() {
                out.ok();
            } else {
                out.error("ERR DISCARD without MULTI");
            }
        }
        // SHUTDOWN ABORT cancels a shutdown in progress; ours never is one a client can
        // see (it starts at once), so it answers as Redis does when there is none.
        Srv::Shutdown if a[1..].iter().any(|o| eq(o, "ABORT")) => {
            if a.len() == 2 {
                out.error("ERR No shutdown in progress.");
            } else {
                out.error(ERR_SYNTAX);
            }
        }
        Srv::Shutdown => {
            if a.len() > 1
                && !a[1..]
                    .iter()
                    .all(|o| ["NOSAVE", "SAVE", "NOW", "FORCE"].iter().any(|w| eq(o, w)))
            {
                out.error(ERR_SYNTAX);
            } else {
                tracing::info!(client = s.id, "SHUTDOWN: shutting down");
                shared.shutdown.send_replace(true);
                // Redis closes the connection without a reply.
                return Flow::Close;
            }
        }
    }
    Flow::Continue
}

async fn hello(shared: &Shared, s: &mut Session, a: &[Bytes], out: &mut Out) {
    let mut i = 1;
    let mut proto = if out.resp3 { 3 } else { 2 };
    if let Some(v) = a.get(1) {
        match parse_i64_canonical(v) {
            Some(p @ (2 | 3)) => proto = p,
            Some(_) => {
                out.error("NOPROTO unsupported protocol version");
                return;
            }
            None => {
                out.error("ERR Protocol version is not an integer or out of range");
                return;
            }
        }
        i = 2;
    }
    let mut name = None;
    let mut creds = None;
    while i < a.len() {
        if eq(&a[i], "AUTH") && i + 2 < a.len() {
            creds = Some((a[i + 1].clone(), a[i + 2].clone()));
            i += 3;
        } else if eq(&a[i], "SETNAME") && i + 1 < a.len() {
            name = Some(a[i + 1].clone());
            i += 2;
        } else {
            out.error(&format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(&a[i])
            ));
            return;
        }
    }
    if let Some((u, p)) = creds
        && !auth::log_in(shared, s, Some(&u), &p).await
    {
        out.error(WRONGPASS);
        return;
    }
    if !s.authed {
        out.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        return;
    }
    if name.is_some() {
        s.name = name;
    }
    out.resp3 = proto == 3;
    out.map(7);
    out.bulk(b"server");
    out.bulk(b"redis");
    out.bulk(b"version");
    out.bulk(super::REDIS_VERSION.as_bytes());
    out.bulk(b"proto");
    out.int(proto);
    out.bulk(b"id");
    out.int(s.id as i64);
    out.bulk(b"mode");
    out.bulk(b"standalone");
    out.bulk(b"role");
    out.bulk(b"master");
    out.bulk(b"modules");
    out.array(0);
}

fn client(s: &mut Session, a: &[Bytes], out: &mut Out) {
    let sub = &a[1];
    if eq(sub, "ID") && a.len() == 2 {
        out.int(s.id as i64);
    } else if eq(sub, "GETNAME") && a.len() == 2 {
        out.opt_bulk(s.name.as_deref());
    } else if eq(sub, "SETNAME") && a.len() == 3 {
        if a[2].iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
            out.error("ERR Client names cannot contain spaces, newlines or special characters.");
        } else {
            s.name = (!a[2].is_empty()).then(|| a[2].clone());
            out.ok();
        }
    } else if eq(sub, "SETINFO") && a.len() == 4 {
        out.ok();
    } else if eq(sub, "INFO") || eq(sub, "LIST") {
        let line = format!(
            "id={} addr={} name={} db=0 multi={}\n",
            s.id,
            s.addr,
            s.name
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default(),
            s.multi.as_ref().map_or(-1, |m| m.queued.len() as i64)
        );
        out.verbatim(&line);
    } else {
        out.error(&format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(sub)
        ));
    }
}

fn command_entry(spec: &Spec, out: &mut Out) {
    out.array(10);
    out.bulk(spec.name.as_bytes());
    out.int(i64::from(spec.arity));
    let flags: &[&str] = match spec.exec {
        Exec::Kv(_, true) => &["write"],
        Exec::Kv(_, false) => &["readonly", "fast"],
        Exec::Server(_) => &["admin"],
    };
    out.set(flags.len());
    for f in flags {
        out.simple(f);
    }
    out.int(i64::from(spec.keys.0));
    out.int(i64::from(spec.keys.1));
    out.int(i64::from(spec.keys.2));
    // As Redis 7: ACL categories and tips are sets, key specs and subcommands arrays.
    out.set(0);
    out.set(0);
    out.array(0);
    out.array(0);
}

fn command(a: &[Bytes], out: &mut Out) {
    match a.get(1) {
        None => {
            out.array(SPECS.len());
            for s in SPECS {
                command_entry(s, out);
            }
        }
        Some(sub) if eq(sub, "COUNT") => out.int(SPECS.len() as i64),
        Some(sub) if eq(sub, "DOCS") => out.map(0),
        Some(sub) if eq(sub, "INFO") => {
            out.array(a.len() - 2);
            for n in &a[2..] {
                match lookup(n) {
                    Some(s) => command_entry(s, out),
                    None => out.null_array(),
                }
            }
        }
        Some(sub) if eq(sub, "LIST") => {
            out.array(SPECS.len());
            for s in SPECS {
                out.bulk(s.name.as_bytes());
            }
        }
        Some(sub) => out.error(&format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(sub)
        )),
    }
}

/// Calls `f` with every page of live keys under `prefix`, in key order.
fn walk_prefix(shared: &Shared, prefix: &str, mut f: impl FnMut(Vec<(String, Bytes)>)) {
    let mut cursor: Option<String> = None;
    loop {
        let Ok(page) = shared.atlas.scan(prefix, cursor.as_deref(), 10_000) else {
            break;
        };
        f(page.entries);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
}

/// Every live key the connection sees (matching `pattern` if given), in key order: all
/// of them verbatim, or a scope's, without its prefix.
fn all_keys(shared: &Shared, scope: Option<&Scope>, pattern: Option<&[u8]>) -> Vec<String> {
    let mut keys = Vec::new();
    let prefix = scope.map_or("", |sc| sc.prefix());
    walk_prefix(shared, prefix, |entries| {
        keys.extend(entries.into_iter().filter_map(|(k, _)| {
            let k = match scope {
                None => k,
                Some(sc) => sc.client_key(&k)?.to_owned(),
            };
            pattern
                .is_none_or(|p| glob::matches(p, k.as_bytes()))
                .then_some(k)
        }));
    });
    keys
}

/// How many live keys start with `prefix`.
fn count_prefix(shared: &Shared, prefix: &str) -> u64 {
    let mut n = 0u64;
    walk_prefix(shared, prefix, |entries| n += entries.len() as u64);
    n
}

/// A live key under `prefix` drawn uniformly (one walk, reservoir sampling).
fn random_in_prefix(shared: &Shared, prefix: &str) -> Option<String> {
    let mut seen = 0u64;
    let mut pick = None;
    walk_prefix(shared, prefix, |entries| {
        for (k, _) in entries {
            seen += 1;
            if shared.random().is_multiple_of(seen) {
                pick = Some(k);
            }
        }
    });
    pick
}

fn flush(shared: &Shared) -> Result<(), AtlasError> {
    loop {
        let page = shared.atlas.scan("", None, 10_000)?;
        if page.entries.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = page.entries.iter().map(|(k, _)| k.as_str()).collect();
        shared.atlas.delete_many(&keys)?;
    }
}

fn scan(shared: &Shared, scope: Option<&Scope>, a: &[Bytes], out: &mut Out) {
    let Some(cursor) = std::str::from_utf8(&a[1])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        out.error("ERR invalid cursor");
        return;
    };
    let mut pattern: Option<&[u8]> = None;
    let mut count = 10usize;
    let mut type_ok = true;
    let mut i = 2;
    while i < a.len() {
        let Some(v) = a.get(i + 1) else {
            out.error(ERR_SYNTAX);
            return;
        };
        if eq(&a[i], "MATCH") {
            pattern = Some(v);
        } else if eq(&a[i], "COUNT") {
            match parse_i64_canonical(v) {
                Some(n) if n >= 1 => count = (n as usize).min(100_000),
                Some(_) => {
                    out.error(ERR_SYNTAX);
                    return;
                }
                None => {
                    out.error(ERR_NOT_INT);
                    return;
                }
            }
        } else if eq(&a[i], "TYPE") {
            type_ok = eq(v, "string");
        } else {
            out.error(ERR_SYNTAX);
            return;
        }
        i += 2;
    }
    let after = if cursor == 0 {
        None
    } else {
        match shared.scan_cursors.lock().get(cursor) {
            Some(k) => Some(k),
            None => {
                out.error("ERR invalid cursor");
                return;
            }
        }
    };
    // A scope's cursors are ATLAS keys of its namespace: the scan never leaves the prefix,
    // whatever cursor the client names.
    let prefix = scope.map_or("", |sc| sc.prefix());
    let page = match shared.atlas.scan(prefix, after.as_deref(), count) {
        Ok(p) => p,
        Err(e) => {
            out.error(&atlas_error_line(&e));
            return;
        }
    };
    let next = match page.next_cursor {
        Some(k) => shared.scan_cursors.lock().insert(k),
        None => 0,
    };
    let keys: Vec<&str> = page
        .entries
        .iter()
        .filter_map(|(k, _)| match scope {
            None => Some(k.as_str()),
            Some(sc) => sc.client_key(k),
        })
        .filter(|k| type_ok && pattern.is_none_or(|p| glob::matches(p, k.as_bytes())))
        .collect();
    out.array(2);
    out.bulk(next.to_string().as_bytes());
    out.array(keys.len());
    for k in keys {
        out.bulk(k.as_bytes());
    }
}

fn config(shared: &Shared, a: &[Bytes], out: &mut Out) {
    let sub = &a[1];
    if eq(sub, "GET") && a.len() >= 3 {
        let settings = shared.settings();
        let hits: Vec<&(String, String)> = settings
            .iter()
            .filter(|(k, _)| {
                a[2..]
                    .iter()
                    .any(|p| glob::matches(&p.to_ascii_lowercase(), k.as_bytes()))
            })
            .collect();
        out.map(hits.len());
        for (k, v) in hits {
            out.bulk(k.as_bytes());
            out.bulk(v.as_bytes());
        }
    } else if eq(sub, "SET") {
        out.error("ERR CONFIG SET is not supported: helios-atlasd settings are read-only (set them in atlasd.yaml, HELIOS_ATLASD_* or flags)");
    } else if eq(sub, "RESETSTAT") && a.len() == 2 {
        out.ok();
    } else if eq(sub, "GET") {
        out.error("ERR wrong number of arguments for 'config|get' command");
    } else {
        out.error(&format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CONFIG HELP.",
            String::from_utf8_lossy(sub)
        ));
    }
}

fn info(shared: &Shared, a: &[Bytes], out: &mut Out) {
    let all = a.len() == 1
        || a[1..]
            .iter()
            .any(|s| eq(s, "all") || eq(s, "everything") || eq(s, "default"));
    let want = |name: &str| all || a[1..].iter().any(|s| eq(s, name));
    let stats = shared.atlas.stats();
    let mut t = String::new();
    use std::fmt::Write as _;
    let uptime_s = shared.started.elapsed().as_secs();
    if want("server") {
        let _ = write!(
            t,
            "# Server\r\nredis_version:{}\r\nhelios_version:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\n\r\n",
            super::REDIS_VERSION,
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            shared.port,
            uptime_s,
            uptime_s / 86_400
        );
    }
    if want("clients") {
        let _ = write!(
            t,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\n\r\n",
            shared.connected.load(Ordering::Relaxed),
            shared.cfg.clients_max
        );
    }
    if want("memory") {
        let _ = write!(
            t,
            "# Memory\r\nused_memory:{}\r\nused_memory_human:{:.2}M\r\nmaxmemory:{}\r\nmaxmemory_policy:noeviction\r\n\r\n",
            stats.memory_size,
            stats.memory_size as f64 / (1024.0 * 1024.0),
            stats.memory_limit_size.unwrap_or(0)
        );
    }
    if want("persistence") {
        let _ = write!(
            t,
            "# Persistence\r\nloading:0\r\naof_enabled:1\r\nappendfsync:{}\r\naof_rewrite_in_progress:{}\r\naof_last_write_status:{}\r\naof_current_size:{}\r\naof_segments:{}\r\naof_fsyncs:{}\r\naof_delayed_fsync:{}\r\naof_last_fsync_age_ms:{}\r\nrdb_bgsave_in_progress:{}\r\nrdb_last_save_time:{}\r\nrdb_saves:{}\r\natlas_last_seq:{}\r\natlas_snapshot_last_seq:{}\r\n\r\n",
            shared.cfg.appendfsync,
            u8::from(shared.bg_running.load(Ordering::Relaxed)),
            if stats.write_error.is_some() {
                "err"
            } else {
                "ok"
            },
            stats.aof_current_size,
            stats.aof_segment_count,
            stats.fsync_count,
            stats.fsync_lag_stall_count,
            stats.fsync_last_ok_age_ms,
            u8::from(shared.bg_running.load(Ordering::Relaxed)),
            shared.last_save_s.load(Ordering::Relaxed),
            stats.snapshots_written_count,
            stats.last_seq,
            stats.snapshot_last_seq.unwrap_or(0)
        );
    }
    if want("stats") {
        let _ = write!(
            t,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\n\r\n",
            shared.connections_total.load(Ordering::Relaxed),
            shared.commands_total.load(Ordering::Relaxed),
            shared.rejected_total.load(Ordering::Relaxed),
            stats.expired_count
        );
    }
    if want("keyspace") {
        t.push_str("# Keyspace\r\n");
        if stats.key_count > 0 {
            let _ = write!(
                t,
                "db0:keys={},expires={},avg_ttl=0\r\n",
                stats.key_count, stats.expiring_count
            );
        }
        t.push_str("\r\n");
    }
    out.verbatim(&t);
}

/// Keeps the bounded table of SCAN cursors: the numeric cursor handed to the client maps
/// to the last key returned, and the next page starts strictly after it, in key order.
/// So every key present for the whole scan is returned at least once, and exactly once
/// when no key is added behind the cursor. Cursors are shared by every connection (a
/// pooled client may continue a scan on another connection).
///
/// Bounded at [`SCAN_CURSOR_COUNT_MAX`] cursors. A cursor that has been continued is kept
/// (a client may retry a page) but is dropped first when the table is full; a cursor not
/// yet continued (the live end of a scan in progress) is dropped only when that many scans
/// are in progress at once. So one client's long scan never invalidates another's, which
/// it did when the oldest cursors were simply dropped. Continuing a dropped cursor fails
/// with `ERR invalid cursor`.
#[derive(Debug, Default)]
pub struct ScanCursors {
    next_id: u64,
    // id -> (last key returned, whether the cursor has been continued).
    keys: HashMap<u64, (String, bool)>,
    // Cursors in the order they were made (ids since dropped or continued are skipped).
    fresh: std::collections::VecDeque<u64>,
    // Continued cursors, in the order they were first continued.
    used: std::collections::VecDeque<u64>,
}

/// Most SCAN cursors kept.
pub const SCAN_CURSOR_COUNT_MAX: usize = 100_000;

impl ScanCursors {
    fn insert(&mut self, key: String) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.keys.insert(id, (key, false));
        self.fresh.push_back(id);
        while self.keys.len() > SCAN_CURSOR_COUNT_MAX {
            self.evict_one();
        }
        // `fresh` keeps ids of continued cursors until they reach its front: compact it
        // when they outnumber the live ones, so it stays O(table).
        if self.fresh.len() > 2 * SCAN_CURSOR_COUNT_MAX {
            let keys = &self.keys;
            self.fresh
                .retain(|id| keys.get(id).is_some_and(|(_, used)| !used));
        }
        id
    }

    /// Drops one cursor: the oldest continued one, else the oldest live one.
    fn evict_one(&mut self) {
        while let Some(id) = self.used.pop_front() {
            if self.keys.remove(&id).is_some() {
                return;
            }
        }
        while let Some(id) = self.fresh.pop_front() {
            if let Some((_, false)) = self.keys.get(&id) {
                self.keys.remove(&id);
                return;
            }
        }
    }

    fn get(&mut self, id: u64) -> Option<String> {
        let (key, used) = self.keys.get_mut(&id)?;
        if !*used {
            *used = true;
            self.used.push_back(id);
        }
        Some(key.clone())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::{SCAN_CURSOR_COUNT_MAX, ScanCursors};

    #[test]
    fn a_long_scan_does_not_invalidate_another_scans_cursor() {
        let mut t = ScanCursors::default();
        let theirs = t.insert("their-last-key".into());
        // Another client's scan makes (and continues) many more cursors than the table
        // holds.
        let mut c = t.insert("k0".into());
        for i in 1..(3 * SCAN_CURSOR_COUNT_MAX) {
            assert!(
                t.get(c).is_some(),
                "the live cursor of the long scan, step {i}"
            );
            c = t.insert(format!("k{i}"));
        }
        assert!(t.len() <= SCAN_CURSOR_COUNT_MAX);
        assert!(t.fresh.len() <= 2 * SCAN_CURSOR_COUNT_MAX + 1);
        assert!(t.used.len() <= SCAN_CURSOR_COUNT_MAX + 1);
        assert_eq!(t.get(theirs).as_deref(), Some("their-last-key"));
        // A retried page (the same cursor continued twice) still works while it is kept.
        assert_eq!(t.get(theirs).as_deref(), Some("their-last-key"));
    }

    #[test]
    fn too_many_scans_in_progress_drop_the_oldest() {
        let mut t = ScanCursors::default();
        let first = t.insert("a".into());
        for i in 0..SCAN_CURSOR_COUNT_MAX {
            t.insert(format!("k{i}"));
        }
        assert_eq!(t.len(), SCAN_CURSOR_COUNT_MAX);
        assert!(t.get(first).is_none(), "the oldest live cursor went first");
    }
}
