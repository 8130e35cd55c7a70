//! [`IdleTimeout`]: closes a connection that has no request in progress for a while.
//!
//! hyper's header read timeout covers only HTTP/1 request heads, and only once one has
//! begun: a socket that is opened and then sends nothing, a keep-alive connection idle
//! between requests, or an HTTP/2 client that trickles a HEADERS frame a byte at a time
//! (hyper has no header timeout for HTTP/2) would each hold a connection slot forever.
//! This wrapper counts *requests*, not bytes: with no request in progress, the connection
//! is failed once `idle` has passed since its last request ended (or since it opened),
//! however many bytes trickle in meanwhile. While a request is in progress (a long poll, a
//! body upload under its own read timeout) the connection is never idle.
//!
//! [`Activity`] is shared by the wrapper and the connection's service, which marks each
//! request's start and end ([`Activity::begin`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Requests in progress on one connection, and when the last one ended.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    active: AtomicUsize,
    // Ms after `opened` at which the last request ended (0: none yet).
    last_end_ms: AtomicU64,
}

impl Activity {
    /// A connection opened now, with no request yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            active: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
        })
    }

    /// Marks a request in progress until the guard drops (also when its future is
    /// cancelled).
    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        RequestGuard {
            activity: self.clone(),
        }
    }

    fn idle_since(&self) -> Option<Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.opened + Duration::from_millis(self.last_end_ms.load(Ordering::Acquire)))
    }
}

/// A request in progress; see [`Activity::begin`].
#[derive(Debug)]
pub struct RequestGuard {
    activity: Arc<Activity>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let a = &self.activity;
        let ms = u64::try_from(a.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.last_end_ms.fetch_max(ms, Ordering::AcqRel);
        a.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An I/O object that errors with `TimedOut` once its connection has had no request in
/// progress for `idle`.
///
/// The timer is checked only when the I/O would block, and re-armed lazily when it fires
/// early, so a busy connection costs no timer operation per read or write.
#[derive(Debug)]
pub struct IdleTimeout<T> {
    inner: T,
    idle: Duration,
    activity: Arc<Activity>,
    deadline: Pin<Box<Sleep>>,
    // With `with_write_stall`: how long a write may stay blocked, and since when it is.
    stall: Option<Duration>,
    write_blocked_since: Option<Instant>,
}

impl<T> IdleTimeout<T> {
    /// Wraps `inner`, whose requests are counted in `activity`.
    pub fn new(inner: T, idle: Duration, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            idle,
            activity,
            deadline: Box::pin(tokio::time::sleep(idle)),
            stall: None,
            write_blocked_since: None,
        }
    }

    /// Also fails the connection when a write has been blocked for `stall`, a request in
    /// progress or not: a client that stops reading a response holds it no longer (the
    /// proxy, whose responses are streamed from a backend).
    pub fn with_write_stall(mut self, stall: Duration) -> Self {
        self.stall = Some(stall);
        self
    }

    /// A write would block now: starts the stall clock, and makes the timer fire by its end.
    fn write_blocked(&mut self) {
        let (Some(stall), None) = (self.stall, self.write_blocked_since) else {
            return;
        };
        let now = Instant::now();
        self.write_blocked_since = Some(now);
        if now + stall < self.deadline.deadline() {
            self.deadline.as_mut().reset(now + stall);
        }
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.deadline.as_mut().poll(cx).is_pending() {
                return false;
            }
            let idle_due = match self.activity.idle_since() {
                Some(since) => since + self.idle,
                // A request is in progress: look again one period from now.
                None => Instant::now() + self.idle,
            };
            let due = match (self.write_blocked_since, self.stall) {
                (Some(since), Some(stall)) => idle_due.min(since + stall),
                _ => idle_due,
            };
            if due <= Instant::now() {
                return true;
            }
            // Activity since the timer was armed: push it back and poll again (which
            // registers the waker for the new deadline).
            self.deadline.as_mut().reset(due);
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle for too long")
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => {
                if self.expired(cx) {
                    Poll::Ready(Err(timed_out()))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.write_blocked_since = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                self.write_blocked();
                if self.expired(cx) {
                    Poll::Ready(Err(timed_out()))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
