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
//!
//! # Files
//! - `mod.rs`: [`Session`], [`Flow`] and the dispatch: [`execute_batch`] classifies each
//!   request (unknown command, arity, auth, a scope's rights and key mapping, MULTI
//!   queueing) and groups consecutive keyspace commands into runs;
//! - `table.rs`: the command table ([`SPECS`], [`Spec`], [`lookup`]);
//! - `pipeline.rs`: runs and EXEC as ATLAS transactions, [`InFlight`], [`Answered`];
//! - `server.rs`: the server commands (HELLO, AUTH, CLIENT, COMMAND, CONFIG, SAVE, ...);
//! - `keyspace.rs`: SCAN and its cursors ([`ScanCursors`]), KEYS, a scope's DBSIZE and
//!   RANDOMKEY, FLUSHDB/FLUSHALL;
//! - `info.rs`: INFO.

mod info;
mod keyspace;
mod pipeline;
mod server;
mod table;

pub use keyspace::{SCAN_CURSOR_COUNT_MAX, ScanCursors};
pub use pipeline::{Answered, InFlight, atlas_error_line};
pub use table::{Exec, SPECS, Spec, Srv, lookup};

use super::Shared;
use super::acl::Scope;
use super::committer::Sink;
use super::kv::KvFn;
use super::resp::Out;
use bytes::Bytes;
use pipeline::{exec, run_kv, watch};
use server::{auth_command, hello, server};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use table::unknown_command;

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
    /// WATCHed keys, until EXEC, DISCARD, UNWATCH or RESET.
    watch: Option<Arc<super::watched::WatchGuard>>,
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
            watch: None,
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
        Exec::Server(Srv::Watch) if s.multi.is_some() => {
            Step::Error("ERR Command not allowed inside a transaction".into())
        }
        Exec::Server(_) if s.multi.is_some() => Step::Error(format!(
            "ERR '{}' inside MULTI is not supported by helios-atlasd (only keyspace commands are)",
            spec.name
        )),
        Exec::Server(c) => Step::Server(c),
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
            Step::Server(Srv::Watch) => {
                let args = std::mem::take(&mut reqs[i]);
                i += 1;
                watch(shared, s, &args, out).await;
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

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}
