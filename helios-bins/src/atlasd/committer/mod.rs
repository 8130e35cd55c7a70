//! The committer: where connections' keyspace writes are committed.
//!
//! Under `appendfsync always` the writes of many connections commit in ONE ATLAS commit
//! group (one AOF write and one fsync, [`Atlas::transact_many`]), the way Redis writes and
//! fsyncs its AOF once per event-loop turn for every client served in it. A connection
//! queues a job (a closure that runs one transaction and renders its replies) and gets
//! its answer without blocking its task's thread (awaited, or left in flight: [`Ticket`]).
//! The runtime thread itself commits the queue at the end of its turn, in the
//! `on_thread_park` hook ([`TurnHub`]), when it has run every ready connection: exactly
//! Redis's `beforeSleep`. The thread waits for that group's fsync; requests arriving
//! meanwhile wait in their sockets and make the next turn's group larger (the figures are
//! in docs/performance.md, "Turn-end commits").
//! The committer thread is a watchdog that only takes jobs still queued after one to two
//! [`TURN_WAIT_MAX`] with no turn-end commit between (a runtime thread busy without a
//! pause); it ticks while jobs come and sleeps after [`IDLE_TICKS_MAX`] empty ticks, so
//! connections wake it about once per 65 ms under load instead of once per group.
//!
//! A job may come with its connection's socket (a [`Sink`]): once the group is logged
//! (and fsynced under `always`) and applied, the committer writes the job's replies to it
//! right away, as Redis writes its replies at the end of `beforeSleep`: one burst of
//! writes per group, and the runtime's next poll finds the clients' next requests. What
//! the socket does not take at once goes back to the connection, which writes it. A
//! connection passes its socket only when nothing of its own waits to be written before
//! these replies. Such a job is answered through the connection's slot ([`Ticket`]): an
//! answer with every reply written does not wake the connection's task (it went back to
//! reading after queuing the job, and finds the answer when its client's next request
//! wakes it), so a request costs the task one wake-up, by its socket, as in Redis.
//!
//! Under `everysec` and `no` there is no fsync to share, only the AOF `write`: a pipelined
//! run (several commands) commits inline on the connection's runtime thread
//! (`Atlas::transact`, serialized by ATLAS's writer lock); a lone command joins its turn's
//! group, so the turn's lone writes share one `write` (Redis writes its AOF buffer once per
//! turn too).
//!
//! Invariants: each job is its own transaction (its own AOF record, all-or-nothing), jobs
//! of one connection run in its order (it acts on each answer before its next request),
//! and a job's result (and its replies, written to the sink) is sent only after its
//! record is logged (and fsynced under `always`) and applied. The queue holds at most one
//! job per connection (a connection that ends with its job queued frees its client slot
//! before the job is committed, so for a turn it may hold a few more than `clients_max`:
//! each is one transaction, committed at the latest at the next turn end). If the thread
//! panics, every waiting and later job gets `Closed` (no connection waits forever).

use bytes::BytesMut;
use helios_atlas::{Atlas, AtlasError, Tx};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

mod ticket;
mod turns;

use ticket::{Answer, SinkAnswer};
pub use ticket::{Sink, Submitted, Ticket};
pub use turns::{TURN_WAIT_MAX, TurnHub};

/// Most jobs committed in one group (bounds the writer lock's hold time).
const GROUP_JOBS_MAX: usize = 256;

/// One transaction: runs over a [`Tx`] and returns the RESP replies it rendered.
pub type JobFn =
    Box<dyn for<'t, 'a> FnOnce(&mut Tx<'t, 'a>) -> Result<BytesMut, AtlasError> + Send>;

#[derive(Default)]
struct Queue {
    jobs: Vec<(JobFn, Answer)>,
    stopped: bool,
}

struct State {
    queue: Mutex<Queue>,
    fsync_always: bool,
    turns: Arc<TurnHub>,
    // Set by the committer just before it parks; whoever clears it unparks it.
    sleeping: AtomicBool,
}

/// The handle connections use to run write transactions on the committer thread.
#[derive(Clone)]
pub struct Committer {
    atlas: Atlas,
    state: Arc<State>,
    thread: std::thread::Thread,
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

/// Starts the committer over `atlas` and its watchdog thread; `turns` is the hub the
/// runtime's `on_thread_park` hook reports to ([`TurnHub::turn_ended`]). `fsync_always`:
/// under `appendfsync always` every write joins its turn's group; under `everysec` and
/// `no` a pipelined run commits inline (see [`Committer::run`]).
pub fn start(
    atlas: Atlas,
    fsync_always: bool,
    turns: Arc<TurnHub>,
) -> std::io::Result<(Committer, CommitterThread)> {
    let state = Arc::new(State {
        queue: Mutex::new(Queue::default()),
        fsync_always,
        turns,
        sleeping: AtomicBool::new(false),
    });
    let handle = {
        let st = state.clone();
        let atlas = atlas.clone();
        std::thread::Builder::new()
            .name("atlasd-committer".into())
            .spawn(move || run(&atlas, &st))?
    };
    *state.turns.target.lock() = Some((atlas.clone(), state.clone()));
    let committer = Committer {
        atlas,
        state,
        thread: handle.thread().clone(),
    };
    Ok((
        committer.clone(),
        CommitterThread {
            committer,
            handle: Some(handle),
        },
    ))
}

impl Committer {
    /// Runs `f` as one transaction in the next commit group and returns its replies once
    /// it is logged and applied (or its error, having changed nothing).
    ///
    /// `commands` is how many commands the transaction runs. Under `everysec` and `no`, a
    /// pipelined run (more than one) commits inline: it already shares one append among
    /// its commands; a lone command joins its turn's group, where it shares the append
    /// with the other connections' (one `write` per turn, as Redis).
    ///
    /// All the replies come back (the connection writes them); [`Committer::submit`] has
    /// the committer write them to the socket.
    pub async fn run(&self, f: JobFn, commands: usize) -> Result<BytesMut, AtlasError> {
        if self.commits_inline(commands) {
            return self.atlas.transact(f);
        }
        let (reply, got) = oneshot::channel();
        if !self.queue(f, Answer::Channel(reply)) {
            return Err(AtlasError::Closed);
        }
        got.await.unwrap_or(Err(AtlasError::Closed))
    }

    /// Queues `f` as [`Committer::run`] does, with the connection's `sink` (nothing of
    /// the connection's own waiting to be written to its socket): once the group is
    /// logged and applied, the committer writes the replies to the socket itself, and the
    /// ticket brings the answer (the replies the socket did not take, or the error); a
    /// transaction that commits inline comes back whole as `Done`. The connection may read
    /// meanwhile, but must act on the answer before anything else of its own (it holds
    /// at most one ticket: `sink`'s answer slot is reused).
    pub fn submit(&self, f: JobFn, commands: usize, sink: &Sink) -> Submitted {
        if self.commits_inline(commands) {
            return Submitted::Done(self.atlas.transact(f));
        }
        sink.done.arm();
        let answer = Answer::Sink(SinkAnswer {
            socket: Some(sink.socket.clone()),
            done: Some(sink.done.clone()),
        });
        // Refused (stopped), the answer said `Closed` as it dropped: the ticket brings it.
        let _ = self.queue(f, answer);
        Submitted::Queued(Ticket {
            done: sink.done.clone(),
        })
    }

    /// Whether a transaction of `commands` commands commits inline, on the caller's thread
    /// (a pipelined run with no fsync to share: see [`Committer::run`]).
    fn commits_inline(&self, commands: usize) -> bool {
        !self.state.fsync_always && commands > 1
    }

    /// Queues a job for the next group; false if the committer is stopped (the answer is
    /// dropped, outside the queue's lock: `Closed`).
    fn queue(&self, f: JobFn, answer: Answer) -> bool {
        {
            let mut q = self.state.queue.lock();
            if q.stopped {
                drop(q);
                drop(answer);
                return false;
            }
            q.jobs.push((f, answer));
        }
        // Committed when this runtime turn ends (TurnHub::turn_ended); the watchdog,
        // woken if it sleeps, takes it if the turn lasts past TURN_WAIT_MAX. The load is
        // ordered after the watchdog's `sleeping` store by the queue's lock (it sets
        // `sleeping`, then looks at the queue under the lock we pushed under).
        self.state.turns.pending.store(true, Ordering::SeqCst);
        if self.state.sleeping.load(Ordering::Relaxed)
            && self.state.sleeping.swap(false, Ordering::SeqCst)
        {
            self.thread.unpark();
        }
        true
    }
}

impl CommitterThread {
    /// Lets the committer finish the jobs queued so far, then joins it. Later jobs get
    /// [`AtlasError::Closed`].
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.committer.state.turns.target.lock().take();
        self.committer.state.queue.lock().stopped = true;
        self.committer.state.sleeping.store(false, Ordering::SeqCst);
        self.committer.thread.unpark();
        if let Some(h) = self.handle.take()
            && h.join().is_err()
        {
            tracing::error!("the atlasd committer thread panicked");
        }
    }
}

impl Drop for CommitterThread {
    /// A server that returns early (an error before `stop`) still ends the thread and
    /// lets go of the store (the hub would otherwise keep it, and its directory lock).
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// If the committer thread panics (a bug in a command), every job still queued, and every
/// later one, is answered [`AtlasError::Closed`] (their answers are dropped) instead of
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

/// Commits up to [`GROUP_JOBS_MAX`] queued jobs as one group and answers them. Returns
/// false if none was queued, and whether the committer is stopped.
fn commit_queued(atlas: &Atlas, state: &State) -> (bool, bool) {
    let (batch, stopped) = {
        let mut q = state.queue.lock();
        let n = q.jobs.len().min(GROUP_JOBS_MAX);
        (q.jobs.drain(..n).collect::<Vec<_>>(), q.stopped)
    };
    if batch.is_empty() {
        return (false, stopped);
    }
    let (fs, answers): (Vec<JobFn>, Vec<Answer>) = batch.into_iter().unzip();
    let results = atlas.transact_many(fs);
    for (r, answer) in results.into_iter().zip(answers) {
        match answer {
            // A connection that went away no longer waits for its result.
            Answer::Channel(reply) => {
                let _ = reply.send(r);
            }
            Answer::Sink(sink) => sink.answer(r),
        }
    }
    (true, stopped)
}

/// Writes what of `buf` the socket takes now, without waiting; returns the rest (the
/// connection writes it, and meets any error there).
fn write_now(socket: &TcpStream, mut buf: BytesMut) -> BytesMut {
    while !buf.is_empty() {
        match socket.try_write(&buf) {
            Ok(0) => break,
            Ok(n) => bytes::Buf::advance(&mut buf, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    buf
}

/// Ticks of [`TURN_WAIT_MAX`] that find the queue empty after which the watchdog sleeps
/// until a connection wakes it (an idle server does not tick).
const IDLE_TICKS_MAX: u32 = 64;

/// The committer thread: a watchdog. The runtime commits at the end of each turn; every
/// [`TURN_WAIT_MAX`] this thread looks at the queue and commits only jobs that were
/// queued at its last look with no turn-end commit since (a runtime thread busy without
/// pause). It ticks while jobs come, so connections need not wake it for each job (a
/// wake-up per group cost a futex call on the runtime thread and a context switch on the
/// other core), and sleeps once [`IDLE_TICKS_MAX`] ticks found the queue empty; then the
/// next job wakes it.
fn run(atlas: &Atlas, state: &State) {
    let _close_on_panic = CloseOnPanic(state);
    let turns = &state.turns;
    let mut idle_ticks = 0;
    // The turn count when the queue was last seen holding jobs.
    let mut seen_waiting: Option<u64> = None;
    loop {
        let (waiting, stopped) = {
            let q = state.queue.lock();
            (!q.jobs.is_empty(), q.stopped)
        };
        if stopped {
            while let (true, _) = commit_queued(atlas, state) {}
            return;
        }
        let ended = turns.ended.load(Ordering::SeqCst);
        if waiting {
            idle_ticks = 0;
            if seen_waiting == Some(ended) {
                // Jobs queued a tick ago and no turn end since: take them (every queued
                // job; there is at most one per connection).
                while let (true, _) = commit_queued(atlas, state) {}
                seen_waiting = None;
                continue;
            }
            seen_waiting = Some(ended);
        } else {
            seen_waiting = None;
            idle_ticks += 1;
            if idle_ticks >= IDLE_TICKS_MAX {
                idle_ticks = 0;
                state.sleeping.store(true, Ordering::SeqCst);
                // A job queued before `sleeping` was set is seen here; one queued after
                // it finds `sleeping` set and unparks this thread.
                let q = state.queue.lock();
                let empty = q.jobs.is_empty() && !q.stopped;
                drop(q);
                if empty {
                    std::thread::park();
                }
                state.sleeping.store(false, Ordering::SeqCst);
                continue;
            }
        }
        let deadline = std::time::Instant::now() + TURN_WAIT_MAX;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now())
            && !left.is_zero()
            && !state.queue.lock().stopped
        {
            std::thread::park_timeout(left);
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
        let atlas = open(&MemStorage::new(), FsyncPolicy::Always);
        // No runtime hook reports turn ends: the committer thread takes the jobs, and the
        // panic happens there.
        let (c, thread) = start(atlas.clone(), true, Arc::new(TurnHub::default())).unwrap();
        a_panic_closes_the_writers(&c).await;
        thread.stop();
        assert_eq!(atlas.get("a").unwrap(), "v");
    }

    /// A write succeeds, a panicking job answers `Closed`, and so does a later write
    /// (answered, not left waiting).
    async fn a_panic_closes_the_writers(c: &Committer) {
        c.run(set("a".into()), 1).await.unwrap();
        let boom: JobFn = Box::new(|_| panic!("a bug in a command"));
        assert!(matches!(c.run(boom, 1).await, Err(AtlasError::Closed)));
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            c.run(set("b".into()), 1),
        )
        .await;
        assert!(
            matches!(r, Ok(Err(AtlasError::Closed))),
            "answered, not hanging"
        );
    }

    fn open(disk: &MemStorage, fsync: FsyncPolicy) -> Atlas {
        Atlas::open(
            "/db",
            Options {
                fsync,
                storage: Arc::new(disk.clone()),
                maintenance_interval_ms: None,
                ..Options::default()
            },
        )
        .unwrap()
    }

    /// A store on `disk`, a runtime like the binary's (one thread, the hook reporting turn
    /// ends to `hub`) and a committer over them.
    struct Rig {
        disk: MemStorage,
        atlas: Atlas,
        hub: Arc<TurnHub>,
        rt: tokio::runtime::Runtime,
        c: Committer,
        thread: CommitterThread,
    }

    fn rig(fsync: FsyncPolicy) -> Rig {
        let disk = MemStorage::new();
        let atlas = open(&disk, fsync);
        let hub = Arc::new(TurnHub::default());
        let rt = runtime(&hub);
        let (c, thread) = start(atlas.clone(), fsync == FsyncPolicy::Always, hub.clone()).unwrap();
        Rig {
            disk,
            atlas,
            hub,
            rt,
            c,
            thread,
        }
    }

    /// A runtime like the binary's: one thread, the hook reporting turn ends to `hub`.
    fn runtime(hub: &Arc<TurnHub>) -> tokio::runtime::Runtime {
        let hook = hub.clone();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .on_thread_park(move || hook.turn_ended())
            .build()
            .unwrap()
    }

    fn set(key: String) -> JobFn {
        Box::new(move |tx| {
            tx.set(&key, "v", Expiry::Never)?;
            Ok(BytesMut::from(&b"+OK\r\n"[..]))
        })
    }

    /// `n` connections each queue one lone SET of their own key at once; all must succeed.
    async fn concurrent_sets(c: &Committer, n: usize) {
        let jobs: Vec<_> = (0..n)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move { c.run(set(format!("k{i}")), 1).await })
            })
            .collect();
        for j in jobs {
            assert_eq!(&j.await.unwrap().unwrap()[..], b"+OK\r\n");
        }
    }

    #[test]
    fn the_writes_of_a_turn_commit_as_one_group_when_it_ends() {
        let Rig {
            disk,
            atlas,
            hub,
            rt,
            c,
            thread,
        } = rig(FsyncPolicy::Always);
        let syncs = disk.sync_count();
        // 32 connections each queue a write in the same turn.
        rt.block_on(concurrent_sets(&c, 32));
        let used = disk.sync_count() - syncs;
        // One group (a slow machine may let the thread's TURN_WAIT_MAX split it).
        assert!(used <= 4, "32 writes of one turn took {used} fsyncs");
        assert_eq!(atlas.key_count(), 32);
        thread.stop();
        // Stopped: the hook no longer holds the store.
        assert!(hub.target.lock().is_none());
    }

    #[test]
    fn without_turn_ends_the_thread_commits_after_the_wait() {
        // A hub no runtime reports to: the committer thread takes the jobs itself.
        let disk = MemStorage::new();
        let atlas = open(&disk, FsyncPolicy::Always);
        let hub = Arc::new(TurnHub::default());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (c, thread) = start(atlas.clone(), true, hub).unwrap();
        rt.block_on(async {
            for i in 0..3 {
                c.run(set(format!("k{i}")), 1).await.unwrap();
            }
        });
        assert_eq!(atlas.key_count(), 3);
        // Idle long enough for the watchdog to stop ticking and sleep: the next job
        // wakes it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !c.state.sleeping.load(Ordering::SeqCst) {
            assert!(
                std::time::Instant::now() < deadline,
                "the watchdog never slept"
            );
            std::thread::sleep(TURN_WAIT_MAX * IDLE_TICKS_MAX);
        }
        let late = rt.block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                c.run(set("late".into()), 1),
            )
            .await
        });
        assert!(matches!(late, Ok(Ok(_))), "woken from its sleep");
        assert_eq!(atlas.key_count(), 4);
        thread.stop();
    }

    /// A connected pair of sockets on loopback: (the server's, the client's). The client's
    /// receive buffer is small, so a large reply does not fit in the sockets.
    async fn socket_pair() -> (Sink, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(16 * 1024).unwrap();
        let client = socket
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Sink::new(server), client)
    }

    fn reply_of(bytes: Vec<u8>) -> JobFn {
        Box::new(move |tx| {
            tx.set("k", "v", Expiry::Never)?;
            Ok(BytesMut::from(&bytes[..]))
        })
    }

    #[test]
    fn committed_replies_go_to_the_sink_and_what_does_not_fit_comes_back() {
        use tokio::io::AsyncReadExt;
        let Rig { rt, c, thread, .. } = rig(FsyncPolicy::Always);
        rt.block_on(async {
            let (sink, mut client) = socket_pair().await;
            // A small reply: all of it written by the committer, nothing comes back.
            let left = run_sink(&c, reply_of(b"+OK\r\n".to_vec()), 1, &sink)
                .await
                .unwrap();
            assert!(left.is_empty());
            let mut got = [0u8; 5];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"+OK\r\n");
            // A reply larger than the socket takes while the client does not read: the
            // committer writes what fits, the rest comes back, in order.
            let big: Vec<u8> = (0..16 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
            let left = run_sink(&c, reply_of(big.clone()), 1, &sink).await.unwrap();
            assert!(!left.is_empty() && left.len() < big.len(), "{}", left.len());
            assert_eq!(&big[big.len() - left.len()..], &left[..]);
            let reader = tokio::spawn(async move {
                let mut all = vec![0u8; 16 * 1024 * 1024];
                client.read_exact(&mut all).await.unwrap();
                all
            });
            // As the connection does.
            crate::atlasd::write_all(sink.socket(), &left)
                .await
                .unwrap();
            assert!(
                reader.await.unwrap() == big,
                "the reply arrives whole, in order"
            );
        });
        thread.stop();
    }

    /// Counts its wake-ups.
    struct CountWakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The ticket of `job` queued with `sink` (a lone write under `always` is queued).
    /// Submits `job` with `sink` and waits for its answer (what the socket did not take).
    async fn run_sink(
        c: &Committer,
        job: JobFn,
        commands: usize,
        sink: &Sink,
    ) -> Result<BytesMut, AtlasError> {
        match c.submit(job, commands, sink) {
            Submitted::Done(r) => r,
            Submitted::Queued(ticket) => ticket.wait().await,
        }
    }

    fn queued(c: &Committer, sink: &Sink, job: JobFn) -> Ticket {
        match c.submit(job, 1, sink) {
            Submitted::Queued(ticket) => ticket,
            Submitted::Done(r) => panic!("committed inline: {r:?}"),
        }
    }

    /// Queues `job` with `sink`, polls its ticket's quiet wait once, lets the committer
    /// answer it; returns the wake-ups the answer caused and the answer.
    async fn quiet_answer(c: &Committer, sink: &Sink, job: JobFn) -> (usize, BytesMut) {
        use std::future::Future;
        let mut ticket = queued(c, sink, job);
        let count = Arc::new(CountWakes(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut wait = Box::pin(ticket.quiet());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        // The watchdog (or a turn end) commits it meanwhile.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while sink.done.0.lock().result.is_none() {
            assert!(std::time::Instant::now() < deadline, "never answered");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let wakes = count.0.load(Ordering::SeqCst);
        let Poll::Ready(r) = wait.as_mut().poll(&mut cx) else {
            panic!("answered, but the wait is pending");
        };
        (wakes, r.unwrap())
    }

    #[test]
    fn an_answer_with_every_reply_written_wakes_no_one_unless_awaited() {
        use tokio::io::AsyncReadExt;
        let Rig { rt, c, thread, .. } = rig(FsyncPolicy::Always);
        rt.block_on(async {
            let (sink, mut client) = socket_pair().await;
            // Every reply written: the answer is there, but the task was not woken.
            let (wakes, left) = quiet_answer(&c, &sink, reply_of(b"+OK\r\n".to_vec())).await;
            assert_eq!((wakes, &left[..]), (0, &b""[..]));
            let mut got = [0u8; 5];
            client.read_exact(&mut got).await.unwrap();
            // Replies left over need the connection: it is woken.
            let big = vec![b'x'; 16 * 1024 * 1024];
            let (wakes, left) = quiet_answer(&c, &sink, reply_of(big.clone())).await;
            assert_eq!(wakes, 1);
            // What the socket took at once: some of it, or none when it was not writable
            // at that moment (seen on a loaded machine); never all 16 MiB.
            assert!(!left.is_empty() && left.len() <= big.len());
            // Awaited (`wait`), even an answer with nothing left wakes the task.
            let reader = tokio::spawn(async move {
                let mut all = vec![0u8; 16 * 1024 * 1024 + 5];
                client.read_exact(&mut all).await.unwrap();
            });
            crate::atlasd::write_all(sink.socket(), &left)
                .await
                .unwrap();
            let ticket = queued(&c, &sink, reply_of(b"+OK\r\n".to_vec()));
            let left = tokio::time::timeout(std::time::Duration::from_secs(10), ticket.wait())
                .await
                .expect("woken")
                .unwrap();
            assert!(left.is_empty());
            reader.await.unwrap();
        });
        thread.stop();
    }

    #[test]
    fn inline_commits_leave_the_reply_to_the_connection() {
        // Under everysec a pipelined run commits inline: the sink is not written to.
        let Rig { rt, c, thread, .. } = rig(FsyncPolicy::Everysec);
        rt.block_on(async {
            use tokio::io::AsyncReadExt;
            let (sink, mut client) = socket_pair().await;
            let left = run_sink(&c, reply_of(b"+OK\r\n+OK\r\n".to_vec()), 2, &sink)
                .await
                .unwrap();
            assert_eq!(&left[..], b"+OK\r\n+OK\r\n");
            // Nothing was written to the socket (the connection writes `left`).
            let mut buf = [0u8; 16];
            let read =
                tokio::time::timeout(std::time::Duration::from_millis(100), client.read(&mut buf))
                    .await;
            assert!(read.is_err(), "the committer wrote to the sink: {read:?}");
        });
        thread.stop();
    }

    #[test]
    fn a_job_panicking_at_a_turn_end_fails_the_writes_not_the_runtime() {
        let Rig {
            atlas,
            rt,
            c,
            thread,
            ..
        } = rig(FsyncPolicy::Always);
        rt.block_on(a_panic_closes_the_writers(&c));
        // The runtime still runs tasks.
        assert_eq!(
            rt.block_on(async { tokio::spawn(async { 7 }).await.unwrap() }),
            7
        );
        thread.stop();
        assert_eq!(atlas.get("a").unwrap(), "v");
    }

    #[test]
    fn under_everysec_lone_commands_share_their_turns_append() {
        let Rig {
            atlas,
            rt,
            c,
            thread,
            ..
        } = rig(FsyncPolicy::Everysec);
        let groups = atlas.stats().groups_committed_count;
        rt.block_on(async {
            concurrent_sets(&c, 32).await;
            // A pipelined run commits inline, on its own.
            c.run(set("p".into()), 2).await.unwrap();
        });
        let used = atlas.stats().groups_committed_count - groups;
        assert!(used <= 5, "32 lone writes and one run took {used} appends");
        assert_eq!(atlas.key_count(), 33);
        thread.stop();
    }

    #[test]
    fn a_turn_end_commits_more_than_one_group_and_drop_lets_go_of_the_store() {
        let Rig {
            disk,
            hub,
            rt,
            c,
            thread,
            ..
        } = rig(FsyncPolicy::Always);
        let syncs = disk.sync_count();
        rt.block_on(async {
            concurrent_sets(&c, GROUP_JOBS_MAX + 44).await;
        });
        let used = disk.sync_count() - syncs;
        assert!(
            used <= 4,
            "one turn of {} writes took {used} fsyncs",
            GROUP_JOBS_MAX + 44
        );
        // Dropped without stop (a server returning early): the thread ends and the hook
        // no longer holds the store.
        drop(thread);
        assert!(hub.target.lock().is_none());
        assert!(matches!(
            rt.block_on(c.run(set("late".into()), 1)),
            Err(AtlasError::Closed)
        ));
    }
}
