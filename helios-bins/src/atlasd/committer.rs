//! The committer: where connections' keyspace writes are committed.
//!
//! Under `appendfsync always` it is one thread that executes the writes of many
//! connections at a time in ONE ATLAS commit group (one AOF write and one fsync), the way
//! Redis writes and fsyncs its AOF once per event-loop turn for every client served in it.
//! A connection queues a job (a closure that runs one transaction and renders its replies),
//! yields once so the other connections ready at that moment queue theirs, wakes the thread
//! if it sleeps, and awaits the result without blocking its runtime thread. The thread takes
//! every queued job and passes them to [`Atlas::transact_many`]; while it writes and
//! fsyncs, new jobs queue up and form the next group, so the group grows with the load.
//!
//! Under `everysec` and `no` there is no fsync to share: a job commits inline on the
//! connection's runtime thread (`Atlas::transact`, serialized by ATLAS's writer lock). A
//! hand-off to a thread measured slower there (two wake-ups per request without
//! pipelining, for an append that costs less).
//!
//! Invariants: each job is its own transaction (its own AOF record, all-or-nothing), jobs
//! of one connection run in its order (it awaits each), and a job's result is sent only
//! after its record is logged (and fsynced under `always`) and applied. The queue holds at
//! most one job per connection, so it is bounded by `clients_max`. If the thread panics,
//! every waiting and later job gets `Closed` (no connection waits forever).

use bytes::BytesMut;
use helios_atlas::{Atlas, AtlasError, Tx};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// Most jobs committed in one group (bounds the writer lock's hold time).
const GROUP_JOBS_MAX: usize = 256;

/// One transaction: runs over a [`Tx`] and returns the RESP replies it rendered.
pub type JobFn =
    Box<dyn for<'t, 'a> FnOnce(&mut Tx<'t, 'a>) -> Result<BytesMut, AtlasError> + Send>;

type Reply = oneshot::Sender<Result<BytesMut, AtlasError>>;

#[derive(Default)]
struct Queue {
    jobs: Vec<(JobFn, Reply)>,
    stopped: bool,
}

struct State {
    queue: Mutex<Queue>,
    // Set by the committer just before it parks; whoever clears it unparks it.
    sleeping: AtomicBool,
}

/// The handle connections use to run write transactions on the committer thread.
#[derive(Clone)]
pub struct Committer {
    atlas: Atlas,
    state: Arc<State>,
    // None: commit inline (everysec, no).
    thread: Option<std::thread::Thread>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Committer")
    }
}

/// The committer thread; [`CommitterThread::stop`] ends it after the jobs queued so far.
#[derive(Debug)]
pub struct CommitterThread {
    committer: Committer,
    handle: Option<JoinHandle<()>>,
}

/// Starts the committer over `atlas`: a thread under `always` (`fsync_always`); under
/// `everysec` and `no` there is no fsync to share and transactions commit inline on the
/// connection's runtime thread (a hand-off would cost more than the append it batches).
pub fn start(atlas: Atlas, fsync_always: bool) -> std::io::Result<(Committer, CommitterThread)> {
    let state = Arc::new(State {
        queue: Mutex::new(Queue::default()),
        sleeping: AtomicBool::new(false),
    });
    let handle = if fsync_always {
        let st = state.clone();
        let atlas = atlas.clone();
        Some(
            std::thread::Builder::new()
                .name("atlasd-committer".into())
                .spawn(move || run(&atlas, &st))?,
        )
    } else {
        None
    };
    let committer = Committer {
        atlas,
        state,
        thread: handle.as_ref().map(|h| h.thread().clone()),
    };
    Ok((committer.clone(), CommitterThread { committer, handle }))
}

impl Committer {
    /// Runs `f` as one transaction in the next commit group and returns its replies once
    /// it is logged and applied (or its error, having changed nothing).
    pub async fn run(&self, f: JobFn) -> Result<BytesMut, AtlasError> {
        let Some(thread) = &self.thread else {
            // No fsync to wait for: commit on this runtime thread, without a hand-off.
            return self.atlas.transact(f);
        };
        let (reply, got) = oneshot::channel();
        {
            let mut q = self.state.queue.lock();
            if q.stopped {
                return Err(AtlasError::Closed);
            }
            q.jobs.push((f, reply));
        }
        // Let the other connections that are ready now run first and queue their writes
        // (Redis's "one AOF write per event-loop turn"), then wake the committer if it
        // sleeps: the group it takes then holds them all. A committer that is busy takes
        // the job with the next group anyway.
        tokio::task::yield_now().await;
        self.wake(thread);
        got.await.unwrap_or(Err(AtlasError::Closed))
    }

    fn wake(&self, thread: &std::thread::Thread) {
        if self.state.sleeping.swap(false, Ordering::SeqCst) {
            thread.unpark();
        }
    }
}

impl CommitterThread {
    /// Lets the committer finish the jobs queued so far, then joins it. Later jobs get
    /// [`AtlasError::Closed`].
    pub fn stop(mut self) {
        self.committer.state.queue.lock().stopped = true;
        self.committer.state.sleeping.store(false, Ordering::SeqCst);
        if let Some(t) = &self.committer.thread {
            t.unpark();
        }
        if let Some(h) = self.handle.take()
            && h.join().is_err()
        {
            tracing::error!("the atlasd committer thread panicked");
        }
    }
}

/// If the committer thread panics (a bug in a command), every job still queued, and every
/// later one, is answered [`AtlasError::Closed`] (their senders are dropped) instead of
/// waiting forever; the jobs of the group in hand are answered the same way as its
/// replies unwind.
struct CloseOnPanic<'a>(&'a State);

impl Drop for CloseOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("the atlasd committer thread panicked; writes now fail");
            let mut q = self.0.queue.lock();
            q.stopped = true;
            q.jobs.clear();
        }
    }
}

fn run(atlas: &Atlas, state: &State) {
    let _close_on_panic = CloseOnPanic(state);
    loop {
        let (batch, stopped) = {
            let mut q = state.queue.lock();
            let n = q.jobs.len().min(GROUP_JOBS_MAX);
            (q.jobs.drain(..n).collect::<Vec<_>>(), q.stopped)
        };
        if batch.is_empty() {
            if stopped {
                return;
            }
            state.sleeping.store(true, Ordering::SeqCst);
            // A job queued before `sleeping` was set is seen here; one queued after it
            // finds `sleeping` set and unparks this thread.
            if state.queue.lock().jobs.is_empty() {
                std::thread::park();
            }
            state.sleeping.store(false, Ordering::SeqCst);
            continue;
        }
        let (fs, replies): (Vec<JobFn>, Vec<Reply>) = batch.into_iter().unzip();
        let results = atlas.transact_many(fs);
        for (r, reply) in results.into_iter().zip(replies) {
            // A connection that went away no longer waits for its result.
            let _ = reply.send(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use helios_atlas::storage::MemStorage;
    use helios_atlas::{Expiry, FsyncPolicy, Options};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_job_closes_the_committer_instead_of_hanging_writers() {
        let atlas = Atlas::open(
            "/db",
            Options {
                fsync: FsyncPolicy::Always,
                storage: Arc::new(MemStorage::new()),
                maintenance_interval_ms: None,
                ..Options::default()
            },
        )
        .unwrap();
        let (c, thread) = start(atlas.clone(), true).unwrap();
        let ok: JobFn = Box::new(|tx| {
            tx.set("a", "1", Expiry::Never)?;
            Ok(BytesMut::from(&b"+OK\r\n"[..]))
        });
        assert_eq!(&c.run(ok).await.unwrap()[..], b"+OK\r\n");
        let boom: JobFn = Box::new(|_| panic!("a bug in a command"));
        assert!(matches!(c.run(boom).await, Err(AtlasError::Closed)));
        let later: JobFn = Box::new(|_| Ok(BytesMut::new()));
        let r = tokio::time::timeout(std::time::Duration::from_secs(10), c.run(later)).await;
        assert!(
            matches!(r, Ok(Err(AtlasError::Closed))),
            "answered, not hanging"
        );
        thread.stop();
        assert_eq!(atlas.get("a").unwrap(), "1");
    }
}
