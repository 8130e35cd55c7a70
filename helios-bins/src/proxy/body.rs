//! The bodies the proxy streams. [`Timed`]: any body whose next frame must come within
//! the idle timeout, and whose end within the exchange's total deadline, or it fails (a
//! stalled uploader or backend holds nothing for longer). [`Tracked`]: a backend's
//! response body on its way to the client, which tells the route's
//! [`helios_proxy::Upstream`] how the request ended exactly once: when the body ends, when
//! it breaks or times out, or when it is dropped (the client went away).
//!
//! Invariant: every [`helios_proxy::Pick`] that reached a backend and got response headers
//! is finished once, by [`Tracked`]; until then the balancer counts it in flight, so
//! least-connections sees a slow download as load.

use super::access::{Access, Ended};
use super::{RouteState, State};
use crate::app::idle::RequestGuard;
use bytes::Bytes;
use helios_proxy::{Outcome, Pick};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The error of the proxy's bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body that fails when no frame comes for `idle`, or when `deadline` passes.
pub struct Timed<B> {
    inner: B,
    idle: Duration,
    /// Armed when the body first has to wait (a body that is ready when asked, as most
    /// small ones are, never registers a timer); reset by every frame.
    idle_timer: Option<Pin<Box<Sleep>>>,
    /// When the previous frame came.
    last_frame: Instant,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<B> Timed<B> {
    /// Wraps `inner`: frames at most `idle` apart, the end by `deadline` (if any).
    pub fn new(inner: B, idle: Duration, deadline: Option<Instant>) -> Self {
        Timed {
            inner,
            idle,
            idle_timer: None,
            last_frame: Instant::now(),
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
        }
    }
}

fn timeout_error(what: &str) -> BoxError {
    Box::new(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        what.to_owned(),
    ))
}

impl<B> Body for Timed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(d) = this.deadline.as_mut()
            && d.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Some(Err(timeout_error(
                "the exchange ran past its total timeout",
            ))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                this.last_frame = Instant::now();
                if let Some(t) = this.idle_timer.as_mut() {
                    t.as_mut().reset(this.last_frame + this.idle);
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let (idle, since) = (this.idle, this.last_frame);
                let timer = this
                    .idle_timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(since + idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    Poll::Ready(Some(Err(timeout_error(
                        "no body bytes for the idle timeout",
                    ))))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What to tell the upstream when the body is done.
pub(super) struct Finish {
    pub(super) state: Arc<State>,
    /// The backend connection: back to its stack after a clean end, else closed.
    pub(super) lease: Option<super::conns::Lease>,
    pub(super) route: Arc<RouteState>,
    pub(super) pick: Pick,
    /// The outcome as the response head told it (a 5xx or not).
    pub(super) outcome: Outcome,
    /// The response's status.
    pub(super) status: u16,
    /// The access log's record and the time to the response headers, if logging.
    pub(super) access: Option<(Access, u64)>,
}

impl Finish {
    /// The exchange ended: `clean` when the body was read to its end.
    fn report(mut self, broken: bool, clean: bool, bytes: u64) {
        let outcome = if broken {
            Outcome::Timeout
        } else {
            self.outcome
        };
        if let Some(lease) = self.lease.take()
            && clean
        {
            lease.give_back(&self.route.backends[self.pick.backend].conns);
        }
        self.route
            .finish(self.pick, outcome, self.state.clock.now_ms());
        if let Some((a, upstream_us)) = &self.access {
            a.log(Ended {
                status: self.status,
                route: Some(&self.route.id),
                backend: Some(&self.route.backends[self.pick.backend].id),
                upstream_us: Some(*upstream_us),
                bytes,
            });
        }
    }
}

/// A backend's response body; see the module docs.
pub struct Tracked {
    inner: Timed<Incoming>,
    finish: Option<Finish>,
    /// Body bytes passed on so far.
    bytes: u64,
    // The client connection's request in progress: it is not idle while this streams.
    _request: RequestGuard,
}

impl Tracked {
    pub(super) fn new(inner: Timed<Incoming>, finish: Finish, request: RequestGuard) -> Self {
        Tracked {
            inner,
            finish: Some(finish),
            bytes: 0,
            _request: request,
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.bytes += d.len() as u64;
                }
            }
            Poll::Ready(None) => {
                if let Some(f) = self.finish.take() {
                    f.report(false, true, self.bytes);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                // The backend's connection broke, or stalled, mid-body.
                if let Some(f) = self.finish.take() {
                    f.report(true, false, self.bytes);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // Dropped before its end: the client went away, which says nothing about the
        // backend.
        if let Some(f) = self.finish.take() {
            // A body with nothing to read (HEAD, 204, 304) may be dropped unpolled: its
            // connection is clean then; otherwise the rest was never read.
            let clean = self.inner.is_end_stream();
            f.report(false, clean, self.bytes);
        }
    }
}

/// Moves bytes both ways between `a` and `b` (an upgraded connection: WebSocket or
/// another protocol) until both sides have ended, or until no byte moved either way for
/// `idle` (then both are dropped: a silent tunnel holds nothing forever). A side's end is
/// passed on as a write shutdown of the other. Returns the bytes moved a->b and b->a.
pub(super) async fn tunnel<A, B>(a: A, b: B, idle: Duration) -> std::io::Result<(u64, u64)>
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let mut from_a = vec![0u8; 16 * 1024];
    let mut from_b = vec![0u8; 16 * 1024];
    let (mut a_open, mut b_open) = (true, true);
    let (mut a_to_b, mut b_to_a) = (0u64, 0u64);
    let stalled = || std::io::Error::new(std::io::ErrorKind::TimedOut, "tunnel idle");
    while a_open || b_open {
        tokio::select! {
            r = ar.read(&mut from_a), if a_open => match r? {
                0 => {
                    a_open = false;
                    let _ = bw.shutdown().await;
                }
                n => {
                    tokio::time::timeout(idle, bw.write_all(&from_a[..n]))
                        .await
                        .map_err(|_| stalled())??;
                    a_to_b += n as u64;
                }
            },
            r = br.read(&mut from_b), if b_open => match r? {
                0 => {
                    b_open = false;
                    let _ = aw.shutdown().await;
                }
                n => {
                    tokio::time::timeout(idle, aw.write_all(&from_b[..n]))
                        .await
                        .map_err(|_| stalled())??;
                    b_to_a += n as u64;
                }
            },
            () = tokio::time::sleep(idle) => return Err(stalled()),
        }
    }
    Ok((a_to_b, b_to_a))
}
