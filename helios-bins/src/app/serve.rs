//! [`serve`]: the accept loop every server runs (the gateway's API and metrics listeners,
//! helios-atlasd), with one behaviour for all of them.
//!
//! Owns: accepting, the connection cap ([`Limits::connections_max`]: past it, either wait
//! with the new connections left in the kernel's accept queue, or accept and refuse with a
//! protocol reply, as Redis does), the cap per client address (an IPv4 address or an IPv6
//! /64, [`ClientId`]), backing off when `accept` fails (out of descriptors), and the drain:
//! when `shutdown` resolves the listener is closed, every connection's [`Drain`] fires, and
//! the loop waits up to [`Limits::drain_grace`] for the connections to end before it
//! aborts the rest.
//!
//! Invariants: at most `connections_max` connections are served at once (refusals are
//! short tasks that write one reply and close); a slot is given back when its connection's
//! task ends, also when it panics or is aborted; `serve` returns only when no task it
//! spawned still runs.
//!
//! What a connection does with its bytes (HTTP, RESP, idle timeouts, TLS) is the caller's
//! `per_connection`; [`super::http`] has the HTTP one.

use crate::net::ClientId;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// What happens to a connection past [`Limits::connections_max`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for a slot; new connections stay in the kernel's accept queue (HTTP clients
    /// see latency, not errors).
    Wait,
    /// Accept, write this reply and close (Redis's `-ERR max number of clients reached`).
    Refuse(&'static [u8]),
}

/// The limits of one listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once.
    pub connections_max: usize,
    /// Connections served at once from one [`ClientId`] (`usize::MAX`: no cap). One over
    /// it is closed at once (after the [`WhenFull::Refuse`] reply, if any).
    pub per_address_max: usize,
    /// Past `connections_max`.
    pub when_full: WhenFull,
    /// How long the drain waits for connections to end before it aborts them.
    pub drain_grace: Duration,
    /// Where the loop counts; share it to report the figures (INFO, metrics).
    pub counters: Arc<Counters>,
}

impl Limits {
    /// `connections_max` connections, waiting when full, no cap per address, a 10 s drain.
    pub fn new(connections_max: usize) -> Self {
        Limits {
            connections_max,
            per_address_max: usize::MAX,
            when_full: WhenFull::Wait,
            drain_grace: Duration::from_secs(10),
            counters: Arc::default(),
        }
    }
}

/// What the accept loop counted.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted, served or refused.
    pub accepted_total: AtomicU64,
    /// Connections being served now.
    pub open: AtomicU64,
    /// Connections refused: the server or their address was full.
    pub refused_total: AtomicU64,
}

/// Fires when the server starts draining: a connection finishes the request in progress,
/// then ends (HTTP: `graceful_shutdown`; RESP: reply, then close).
#[derive(Debug, Clone)]
pub struct Drain(watch::Receiver<bool>);

impl Drain {
    /// Resolves once the server drains (at once if it already does).
    pub async fn wait(&mut self) {
        // An error means the loop is gone: that is a drain too.
        let _ = self.0.wait_for(|d| *d).await;
    }

    /// Whether the server drains.
    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }
}

/// One accepted connection, handed to `per_connection`.
#[derive(Debug)]
pub struct Conn {
    /// The socket (`TCP_NODELAY` set).
    pub stream: TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// The server's drain signal.
    pub drain: Drain,
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// Connections still open when the grace ran out, aborted.
    pub aborted: usize,
}

/// Open connections per client, for [`Limits::per_address_max`].
#[derive(Debug, Default)]
struct AddressSlots {
    open: parking_lot::Mutex<HashMap<ClientId, usize>>,
}

/// One open connection of a client; gives its slot back when dropped.
#[derive(Debug)]
struct AddressSlot {
    slots: Arc<AddressSlots>,
    id: ClientId,
}

impl AddressSlots {
    fn take(self: &Arc<Self>, id: ClientId, max: usize) -> Option<AddressSlot> {
        let mut open = self.open.lock();
        let n = open.entry(id).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            slots: self.clone(),
            id,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock();
        if let Some(n) = open.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.id);
            }
        }
    }
}

/// Counts an open connection until dropped.
struct OpenGuard(Arc<Counters>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A refused connection gets its reply within this time, or is closed without it.
const REFUSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Accepts on `listener` until `shutdown` resolves, runs `per_connection` for each
/// connection in its own task within `limits`, then drains (see the module docs).
pub async fn serve<F, Fut>(
    listener: TcpListener,
    limits: &Limits,
    shutdown: impl Future<Output = ()>,
    mut per_connection: F,
) -> Served
where
    F: FnMut(Conn) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let counters = limits.counters.clone();
    let slots = Arc::new(Semaphore::new(limits.connections_max));
    let per_address = Arc::new(AddressSlots::default());
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Waiting: take the slot before accepting, so the kernel queues the rest.
        let waited = if limits.when_full == WhenFull::Wait {
            tokio::select! {
                _ = &mut shutdown => break,
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => Some(p),
                    Err(_) => break,
                },
            }
        } else {
            None
        };
        let (mut stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        counters.accepted_total.fetch_add(1, Ordering::Relaxed);
        // Reap finished connections so the set does not grow.
        while tasks.try_join_next().is_some() {}
        let permit = match waited {
            Some(p) => Some(p),
            None => slots.clone().try_acquire_owned().ok(),
        };
        let slot = permit
            .as_ref()
            .and_then(|_| per_address.take(ClientId::of(peer.ip()), limits.per_address_max));
        let (Some(permit), Some(slot)) = (permit, slot) else {
            counters.refused_total.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "connection refused: the server or this address is full");
            if let WhenFull::Refuse(reply) = limits.when_full {
                tasks.spawn(async move {
                    let _ =
                        tokio::time::timeout(REFUSE_WRITE_TIMEOUT, stream.write_all(reply)).await;
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        counters.open.fetch_add(1, Ordering::Relaxed);
        let open = OpenGuard(counters.clone());
        let work = per_connection(Conn {
            stream,
            peer,
            drain: Drain(drain_rx.clone()),
        });
        tasks.spawn(async move {
            // Dropped with the task (also when aborted or panicking): the slots come back.
            let _held = (permit, slot, open);
            work.await;
        });
    }
    drop(listener);
    drain_tx.send_replace(true);
    let drained = tokio::time::timeout(limits.drain_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    let mut aborted = 0;
    if drained.is_err() {
        aborted = tasks.len();
        tracing::warn!(
            connections = aborted,
            "connections still open after the drain grace; closing them"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    Served { aborted }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::sync::oneshot;

    /// A listener on loopback and its address.
    async fn listener() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    /// Reads until EOF (or 5 s).
    async fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
        let mut v = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut v)).await;
        v
    }

    /// A server that echoes one greeting per connection and holds it until drained.
    fn greeter(
        limits: Limits,
        listener: TcpListener,
    ) -> (oneshot::Sender<()>, tokio::task::JoinHandle<Served>) {
        let (stop, stopped) = oneshot::channel::<()>();
        let h = tokio::spawn(async move {
            serve(
                listener,
                &limits,
                async {
                    let _ = stopped.await;
                },
                |mut c: Conn| async move {
                    let _ = c.stream.write_all(b"hello\n").await;
                    c.drain.wait().await;
                    let _ = c.stream.write_all(b"bye\n").await;
                },
            )
            .await
        });
        (stop, h)
    }

    async fn read_line(s: &mut TcpStream) -> Vec<u8> {
        let mut v = Vec::new();
        let mut b = [0u8; 1];
        while tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b))
            .await
            .is_ok_and(|r| r.is_ok())
        {
            v.push(b[0]);
            if b[0] == b'\n' {
                break;
            }
        }
        v
    }

    #[tokio::test]
    async fn refuse_mode_replies_past_the_cap_and_counts() {
        let (l, addr) = listener().await;
        let mut limits = Limits::new(1);
        limits.when_full = WhenFull::Refuse(b"-ERR max number of clients reached\r\n");
        let counters = limits.counters.clone();
        let (stop, h) = greeter(limits, l);
        let mut first = TcpStream::connect(addr).await.unwrap();
        assert_eq!(read_line(&mut first).await, b"hello\n");
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert_eq!(
            read_to_end(&mut second).await,
            b"-ERR max number of clients reached\r\n"
        );
        assert_eq!(counters.refused_total.load(Ordering::Relaxed), 1);
        assert_eq!(counters.open.load(Ordering::Relaxed), 1);
        // The first one's slot comes back when it ends.
        stop.send(()).unwrap();
        assert_eq!(read_to_end(&mut first).await, b"bye\n");
        assert_eq!(h.await.unwrap(), Served { aborted: 0 });
        assert_eq!(counters.open.load(Ordering::Relaxed), 0);
        assert_eq!(counters.accepted_total.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn wait_mode_serves_the_next_connection_when_a_slot_frees() {
        let (l, addr) = listener().await;
        let limits = Limits::new(1);
        let (stop, stopped) = oneshot::channel::<()>();
        let h = tokio::spawn(async move {
            serve(
                l,
                &limits,
                async {
                    let _ = stopped.await;
                },
                |mut c: Conn| async move {
                    let _ = c.stream.write_all(b"hello\n").await;
                    // Served until the client closes.
                    let mut b = [0u8; 1];
                    let _ = c.stream.read(&mut b).await;
                },
            )
            .await
        });
        let mut first = TcpStream::connect(addr).await.unwrap();
        assert_eq!(read_line(&mut first).await, b"hello\n");
        // The second connects (kernel backlog) but is not served while the first is.
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut b = [0u8; 1];
        assert!(
            tokio::time::timeout(Duration::from_millis(200), second.read(&mut b))
                .await
                .is_err(),
            "served past the cap"
        );
        drop(first);
        assert_eq!(read_line(&mut second).await, b"hello\n");
        drop(second);
        stop.send(()).unwrap();
        assert_eq!(h.await.unwrap(), Served { aborted: 0 });
    }

    #[tokio::test]
    async fn one_address_holds_at_most_its_share() {
        let (l, addr) = listener().await;
        let mut limits = Limits::new(10);
        limits.per_address_max = 1;
        let counters = limits.counters.clone();
        let (stop, h) = greeter(limits, l);
        let mut first = TcpStream::connect(addr).await.unwrap();
        assert_eq!(read_line(&mut first).await, b"hello\n");
        // Same address (127.0.0.1): closed without a greeting.
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert_eq!(read_to_end(&mut second).await, b"");
        assert_eq!(counters.refused_total.load(Ordering::Relaxed), 1);
        drop(first);
        stop.send(()).unwrap();
        assert_eq!(h.await.unwrap(), Served { aborted: 0 });
    }

    #[tokio::test]
    async fn the_drain_lets_connections_finish_then_aborts_the_rest() {
        let (l, addr) = listener().await;
        let mut limits = Limits::new(10);
        limits.drain_grace = Duration::from_millis(300);
        let (stop, stopped) = oneshot::channel::<()>();
        let h = tokio::spawn(async move {
            serve(
                l,
                &limits,
                async {
                    let _ = stopped.await;
                },
                |mut c: Conn| async move {
                    let mut first = [0u8; 1];
                    let _ = c.stream.read_exact(&mut first).await;
                    if first[0] == b'p' {
                        // Polite: answers the drain.
                        c.drain.wait().await;
                        let _ = c.stream.write_all(b"bye\n").await;
                    } else {
                        // Stubborn: never ends by itself.
                        std::future::pending::<()>().await;
                    }
                },
            )
            .await
        });
        let mut polite = TcpStream::connect(addr).await.unwrap();
        polite.write_all(b"p").await.unwrap();
        let mut stubborn = TcpStream::connect(addr).await.unwrap();
        stubborn.write_all(b"s").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).unwrap();
        assert_eq!(read_to_end(&mut polite).await, b"bye\n");
        assert_eq!(h.await.unwrap(), Served { aborted: 1 });
        // Aborted: its socket is closed.
        assert_eq!(read_to_end(&mut stubborn).await, b"");
        // The listener is gone.
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
