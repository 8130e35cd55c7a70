//! Keep-alive connections to one backend: a stack of idle HTTP/1.1 connections
//! (`hyper::client::conn::http1`), taken for an exchange and given back when its response
//! body ended cleanly. What the proxy uses instead of a general pooled client: no pool key
//! to hash, no shared map, no checkout future; the backend's own stack, under its own
//! lock, held for a push or a pop.
//!
//! - [`Conns::send`] takes the most recently returned idle connection (warm, and the
//!   others can age out), else connects (`timeouts.connect_ms`, `TCP_NODELAY`). A request
//!   a reused connection could not send (the backend had closed it while idle) is sent
//!   again on a new connection: it never reached the backend.
//! - [`Lease::give_back`] returns a connection after its exchange; connections whose
//!   exchange did not end cleanly (a broken or abandoned body, an upgrade) are dropped,
//!   which closes them.
//! - Idle connections older than the idle timeout, or closed by the backend, are dropped
//!   when met; at most [`IDLE_MAX`] are kept.
//!
//! Invariant: a connection on the stack has no exchange in progress.

use super::UpstreamBody;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// Idle connections kept per backend, at most.
pub(crate) const IDLE_MAX: usize = 1024;

/// Why an exchange failed before a response head.
#[derive(Debug)]
pub(crate) enum SendError {
    /// Connecting failed or timed out: the backend never saw the request.
    Connect(String),
    /// The connection failed while the request was sent or the response awaited.
    Broken(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connect: {e}"),
            SendError::Broken(e) => write!(f, "{e}"),
        }
    }
}

struct Idle {
    sender: SendRequest<UpstreamBody>,
    since: Instant,
}

/// One backend's connections. See the module docs.
pub(crate) struct Conns {
    authority: String,
    idle: Mutex<Vec<Idle>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl std::fmt::Debug for Conns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conns")
            .field("authority", &self.authority)
            .field("idle", &self.idle.lock().len())
            .finish()
    }
}

/// A connection in use by one exchange; give it back with [`Lease::give_back`].
pub(crate) struct Lease {
    sender: SendRequest<UpstreamBody>,
}

impl Conns {
    /// Connections to `authority` (`host:port`).
    pub(crate) fn new(authority: &str, connect_timeout: Duration, idle_timeout: Duration) -> Self {
        Conns {
            authority: authority.to_owned(),
            idle: Mutex::new(Vec::new()),
            connect_timeout,
            idle_timeout,
        }
    }

    /// An idle connection that can take a request now, if any. (A connection given back
    /// an instant ago may still be finishing its last exchange: waiting for it is short.)
    async fn take_idle(&self) -> Option<SendRequest<UpstreamBody>> {
        loop {
            let c = self.idle.lock().pop()?;
            if c.since.elapsed() >= self.idle_timeout || c.sender.is_closed() {
                continue;
            }
            let mut sender = c.sender;
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<UpstreamBody>, SendError> {
        let stream = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(self.authority.as_str()),
        )
        .await
        .map_err(|_| SendError::Connect("timed out".to_owned()))?
        .map_err(|e| SendError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "backend connection ended");
            }
        });
        Ok(sender)
    }

    /// Sends `req` (origin-form target, `Host` set) on an idle connection or a new one:
    /// the response head and the connection's lease.
    pub(crate) async fn send(
        &self,
        req: http::Request<UpstreamBody>,
    ) -> Result<(http::Response<Incoming>, Lease), SendError> {
        let mut req = req;
        if let Some(mut sender) = self.take_idle().await {
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Lease { sender })),
                Err(mut e) => match e.take_message() {
                    // Never sent: the connection was closed while idle. A new one below.
                    Some(r) => req = r,
                    None => return Err(SendError::Broken(e.into_error())),
                },
            }
        }
        let mut sender = self.connect().await?;
        sender.ready().await.map_err(SendError::Broken)?;
        match sender.send_request(req).await {
            Ok(resp) => Ok((resp, Lease { sender })),
            Err(e) => Err(SendError::Broken(e)),
        }
    }
}

impl Lease {
    /// Returns the connection to `conns` after a clean exchange (its response body read
    /// to the end); dropping a lease instead closes the connection.
    pub(crate) fn give_back(self, conns: &Conns) {
        if self.sender.is_closed() {
            return;
        }
        let mut idle = conns.idle.lock();
        if idle.len() < IDLE_MAX {
            idle.push(Idle {
                sender: self.sender,
                since: Instant::now(),
            });
        }
    }
}
