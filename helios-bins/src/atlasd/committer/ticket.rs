//! The answers of the committer: [`Sink`], a connection's socket and answer slot; the
//! [`Ticket`] a queued job's connection waits on; [`Submitted`], what `submit` did. An
//! answer with every reply already written does not wake the connection's task.

use super::*;

/// A connection's end of the committer: its socket, where the committer writes a job's
/// replies itself right after the group is logged (and fsynced under `always`) and
/// applied, as Redis writes its replies in `beforeSleep` (one burst of writes per group,
/// and the runtime's next poll finds the clients' next requests); and the slot where the
/// connection's one job in flight is answered ([`Ticket`]). One per connection (not
/// `Clone`: the slot holds one answer at a time).
#[derive(Debug)]
pub struct Sink {
    pub(super) socket: Arc<TcpStream>,
    pub(super) done: Arc<Done>,
}

impl Sink {
    /// The sink of a connection's socket.
    pub fn new(socket: TcpStream) -> Self {
        Sink {
            socket: Arc::new(socket),
            done: Arc::new(Done::default()),
        }
    }

    /// The socket.
    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }

    /// The socket, if no job in the committer's hands holds it (it lets go of a job's
    /// socket before answering the job).
    pub fn socket_mut(&mut self) -> Option<&mut TcpStream> {
        Arc::get_mut(&mut self.socket)
    }
}

/// Where a connection's job in flight is answered: written by the committer, read by the
/// connection's task ([`Ticket`]). An answer the connection need not act on (every reply
/// written to the socket) does not wake the task unless it waits for it
/// ([`Ticket::wait`]); the task finds it when something else wakes it (its client's next
/// request), as a Redis client's next event is its next request.
#[derive(Debug, Default)]
pub(super) struct Done(pub(super) Mutex<DoneState>);

#[derive(Debug, Default)]
pub(super) struct DoneState {
    pub(super) result: Option<Result<BytesMut, AtlasError>>,
    pub(super) waker: Option<Waker>,
    // The task waits for the answer whatever it is (Ticket::wait).
    pub(super) wake_always: bool,
}

impl Done {
    pub(super) fn arm(&self) {
        let mut s = self.0.lock();
        debug_assert!(s.result.is_none(), "an answer left unread");
        *s = DoneState::default();
    }

    pub(super) fn set(&self, r: Result<BytesMut, AtlasError>) {
        let waker = {
            let mut s = self.0.lock();
            let quiet = !s.wake_always && matches!(&r, Ok(rest) if rest.is_empty());
            s.result = Some(r);
            if quiet { None } else { s.waker.take() }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub(super) fn poll(
        &self,
        cx: &mut Context<'_>,
        wake_always: bool,
    ) -> Poll<Result<BytesMut, AtlasError>> {
        let mut s = self.0.lock();
        if let Some(r) = s.result.take() {
            s.waker = None;
            return Poll::Ready(r);
        }
        s.wake_always |= wake_always;
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// A job queued with a [`Sink`]: its answer is the replies the socket did not take (empty
/// when the committer wrote them all), or its error.
#[derive(Debug)]
#[must_use = "the job's replies may not all be written"]
pub struct Ticket {
    pub(super) done: Arc<Done>,
}

impl Ticket {
    /// Waits for the answer; the committer wakes the task when it comes.
    pub async fn wait(self) -> Result<BytesMut, AtlasError> {
        std::future::poll_fn(|cx| self.done.poll(cx, true)).await
    }

    /// Resolves with the answer, but the committer wakes the task for it only if it needs
    /// acting on (replies left unwritten, or an error); an answer with every reply
    /// written is found when the task is polled for another reason.
    pub async fn quiet(&mut self) -> Result<BytesMut, AtlasError> {
        std::future::poll_fn(|cx| self.done.poll(cx, false)).await
    }
}

/// What a queued job was given its answer through.
pub(super) enum Answer {
    // No socket: all the replies go back to the connection.
    Channel(oneshot::Sender<Result<BytesMut, AtlasError>>),
    Sink(SinkAnswer),
}

/// A job's socket and answer slot. Dropped unanswered (a panic), it answers `Closed`, so
/// no connection waits forever; either way it lets go of the socket first.
pub(super) struct SinkAnswer {
    pub(super) socket: Option<Arc<TcpStream>>,
    pub(super) done: Option<Arc<Done>>,
}

impl SinkAnswer {
    pub(super) fn answer(mut self, r: Result<BytesMut, AtlasError>) {
        let r = match (r, self.socket.take()) {
            (Ok(buf), Some(socket)) => Ok(write_now(&socket, buf)),
            (r, _) => r,
        };
        if let Some(done) = self.done.take() {
            done.set(r);
        }
    }
}

impl Drop for SinkAnswer {
    fn drop(&mut self) {
        self.socket.take();
        if let Some(done) = self.done.take() {
            done.set(Err(AtlasError::Closed));
        }
    }
}

/// What [`Committer::submit`] did with a job.
#[derive(Debug)]
pub enum Submitted {
    /// Committed inline (or refused): its replies, none written to the socket.
    Done(Result<BytesMut, AtlasError>),
    /// Queued; the ticket brings its answer.
    Queued(Ticket),
}
