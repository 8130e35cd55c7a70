//! Keyspace commands run as ATLAS transactions: a run of pipelined keyspace commands as
//! one transaction (over a read-only view when none writes, else through the committer,
//! awaited or left [`InFlight`]), and EXEC's queue as one transaction.
//!
//! Invariant: a write the store refuses fails the whole transaction, and nothing of it
//! applies. A pipelined run is then re-run one command per transaction, so the refusal is
//! reported on the command that caused it and the others apply; EXEC answers the refusal
//! alone. Command errors (wrong arguments, not an integer) are that command's reply and
//! abort nothing.

use super::{Queued, Session};
use crate::atlasd::Shared;
use crate::atlasd::committer::{JobFn, Sink, Submitted, Ticket};
use crate::atlasd::encodings::{Notes, RawStrings};
use crate::atlasd::resp::Out;
use crate::atlasd::watched::{WatchGuard, Watches};
use bytes::BytesMut;
use helios_atlas::{AtlasError, Tx};
use std::sync::Arc;

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

/// Runs `q`. OBJECT is the one command that reads atlasd's own state besides ATLAS (the
/// strings that are `raw` by history, [`RawStrings`]).
fn run_one(
    tx: &mut Tx<'_, '_>,
    q: &Queued,
    out: &mut Out,
    raw: (&RawStrings, &Notes),
) -> Result<(), AtlasError> {
    if q.args[0].eq_ignore_ascii_case(b"object") {
        return crate::atlasd::strings::object_with(tx, &q.args, out, Some(raw));
    }
    (q.f)(tx, &q.args, out)
}

/// Runs `q`, writing a refused write as that command's error reply (the others go on).
fn run_reporting(tx: &mut Tx<'_, '_>, q: &Queued, out: &mut Out, raw: &RawStrings) {
    let mark = out.buf.len();
    if let Err(e) = run_one(tx, q, out, (raw, &Notes::new())) {
        out.buf.truncate(mark);
        out.error(&atlas_error_line(&e));
    }
}

/// What a write job updates besides ATLAS, in commit order: the watches and the strings
/// that are `raw` by history.
#[derive(Clone)]
struct KeyState {
    watches: Arc<Watches>,
    raw: Arc<RawStrings>,
}

impl KeyState {
    fn of(shared: &Shared) -> Self {
        Self {
            watches: shared.watches.clone(),
            raw: shared.raw_strings.clone(),
        }
    }
}

/// The committer job that runs `qs` as one transaction and returns their replies
/// (preceded by an array header for EXEC). A write the store refuses fails the job, and
/// then nothing of it applies.
fn write_job(
    keys: KeyState,
    qs: Arc<[Queued]>,
    resp3: bool,
    exec_header: bool,
    watch: Option<Arc<WatchGuard>>,
) -> JobFn {
    Box::new(move |tx| {
        let mut o = Out {
            buf: BytesMut::with_capacity(64 * qs.len() + 16),
            resp3,
        };
        // EXEC after a change to a watched key: nothing runs (the guard, dropped with
        // the job, unwatches).
        if watch.as_ref().is_some_and(|w| w.changed(tx)) {
            o.null_array();
            return Ok(o.buf);
        }
        if exec_header {
            o.array(qs.len());
        }
        let mut notes = Notes::new();
        for q in qs.iter() {
            let effect = keys.raw.effect(tx, &q.args, &notes);
            let before = tx.op_count();
            run_one(tx, q, &mut o, (&keys.raw, &notes))?;
            keys.raw.note(tx, before, &effect, &mut notes);
        }
        // Under the writer lock, in commit order: see `watched` and `encodings`.
        keys.watches.touch_written(tx);
        keys.raw.apply(&notes, tx.written());
        Ok(o.buf)
    })
}

/// Runs a run of keyspace commands, appending its replies to `out`. A write run goes
/// through the committer; with `leave`, one whose replies go to the socket is returned in
/// flight instead of awaited.
pub(super) async fn run_kv(
    shared: &Shared,
    run: Arc<[Queued]>,
    out: &mut Out,
    sink: &Sink,
    leave: bool,
) -> Option<InFlight> {
    if !run.iter().any(|q| q.write) {
        shared.atlas.view(|tx| {
            for q in run.iter() {
                run_reporting(tx, q, out, &shared.raw_strings);
            }
        });
        return None;
    }
    let resp3 = out.resp3;
    // Replies may go straight to the socket only if nothing written before them waits.
    let r = if out.buf.is_empty() {
        match shared.committer.submit(
            write_job(KeyState::of(shared), run.clone(), resp3, false, None),
            run.len(),
            sink,
        ) {
            Submitted::Done(r) => r,
            Submitted::Queued(ticket) if leave => {
                return Some(InFlight { run, resp3, ticket });
            }
            Submitted::Queued(ticket) => ticket.wait().await,
        }
    } else {
        shared
            .committer
            .run(
                write_job(KeyState::of(shared), run.clone(), resp3, false, None),
                run.len(),
            )
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
                let job = write_job(KeyState::of(shared), one, resp3, false, None);
                match shared.committer.run(job, 1).await {
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

/// EXEC: runs the MULTI queue as one transaction.
pub(super) async fn exec(shared: &Shared, s: &mut Session, out: &mut Out) {
    let Some(m) = s.multi.take() else {
        out.error("ERR EXEC without MULTI");
        return;
    };
    // EXEC ends the watch, whatever happens.
    let watch = s.watch.take();
    if m.failed {
        out.error("EXECABORT Transaction discarded because of previous errors.");
        return;
    }
    if !m.queued.iter().any(|q| q.write) {
        shared.atlas.view(|tx| {
            if watch.as_ref().is_some_and(|w| w.changed(tx)) {
                out.null_array();
                return;
            }
            out.array(m.queued.len());
            for q in &m.queued {
                // A command error inside EXEC is that command's reply; the others apply.
                run_reporting(tx, q, out, &shared.raw_strings);
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
        .run(
            write_job(
                KeyState::of(shared),
                m.queued.into(),
                out.resp3,
                true,
                watch,
            ),
            n,
        )
        .await
    {
        Ok(buf) => out.buf.extend_from_slice(&buf),
        Err(e) => out.error(&atlas_error_line(&e)),
    }
}

/// WATCH key [key ...]: registers the keys through the committer, so the registration
/// takes its place in commit order: every write planned before it is applied before the
/// reply (so what the client reads next includes it), and every write planned after it
/// marks the watch dirty.
pub(super) async fn watch(shared: &Shared, s: &mut Session, a: &[bytes::Bytes], out: &mut Out) {
    let keys: Vec<Vec<u8>> = match crate::atlasd::watched::keys(a) {
        Ok(k) => k.into_iter().map(<[u8]>::to_vec).collect(),
        Err(e) => {
            out.error(e);
            return;
        }
    };
    let guard = s
        .watch
        .get_or_insert_with(|| Arc::new(WatchGuard::new(shared.watches.clone())))
        .clone();
    let job: JobFn = Box::new(move |tx| {
        let all = keys.iter().all(|k| guard.add(k, tx.exists(k)));
        let mut o = Out {
            buf: BytesMut::with_capacity(16),
            resp3: false,
        };
        if all {
            o.ok();
        } else {
            o.error("ERR too many watched keys");
        }
        Ok(o.buf)
    });
    match shared.committer.run(job, 1).await {
        Ok(buf) => out.buf.extend_from_slice(&buf),
        Err(e) => out.error(&atlas_error_line(&e)),
    }
}
