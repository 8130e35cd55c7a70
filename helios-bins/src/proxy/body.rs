//! [`Tracked`]: a backend's response body on its way to the client, which tells the
//! route's [`helios_proxy::Upstream`] how the request ended exactly once: when the body
//! ends, when it breaks, or when it is dropped (the client went away).
//!
//! Invariant: every [`helios_proxy::Pick`] that reached a backend and got response headers
//! is finished once, by this body; until then the balancer counts it in flight, so
//! least-connections sees a slow download as load.

use super::State;
use crate::app::idle::RequestGuard;
use bytes::Bytes;
use helios_proxy::{Outcome, Pick};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// What to tell the upstream when the body is done.
pub(super) struct Finish {
    pub(super) state: Arc<State>,
    pub(super) route: usize,
    pub(super) pick: Pick,
    /// The outcome as the response head told it (a 5xx or not).
    pub(super) outcome: Outcome,
}

impl Finish {
    fn report(self, broken: bool) {
        let outcome = if broken {
            Outcome::Timeout
        } else {
            self.outcome
        };
        self.state.finish(self.route, self.pick, outcome);
    }
}

/// A backend's response body; see the module docs.
pub struct Tracked {
    inner: Incoming,
    finish: Option<Finish>,
    // The client connection's request in progress: it is not idle while this streams.
    _request: RequestGuard,
}

impl Tracked {
    pub(super) fn new(inner: Incoming, finish: Finish, request: RequestGuard) -> Self {
        Tracked {
            inner,
            finish: Some(finish),
            _request: request,
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(f) = self.finish.take() {
                    f.report(false);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                // The backend's connection broke mid-body.
                if let Some(f) = self.finish.take() {
                    f.report(true);
                }
            }
            _ => {}
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
            f.report(false);
        }
    }
}
