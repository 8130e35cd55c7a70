//! The worker runtime: what runs the jobs. A [`Worker`] claims jobs from a [`Source`]
//! (the gateway over HTTP, or the queue in the same process), runs each through its
//! queue's [`Connector`], and acks or nacks it with the lease's fencing token; it keeps
//! its leases and its registry record (`worker:{id}`) alive with heartbeats, and drains on
//! SIGTERM. `helios-worker` ([`bin`]) runs one over HTTP; the gateway's `workers` section
//! runs one inside the gateway ([`EmbeddedSource`]).
//!
//! - [`connector`]: the `Connector` trait, error classes, the shipped connectors.
//! - [`source`]: where jobs come from and outcomes go.
//! - [`runtime`]: the claim loops, attempts, settling, heartbeats, drain.
//! - [`config`]: the service map and settings, checked naming the key.
//! - [`metrics`]: the `/metrics` series.

pub mod bin;
pub mod config;
pub mod connector;
pub mod metrics;
pub mod runtime;
pub mod source;

pub use connector::{
    BoxFuture, CommandConnector, Connector, ConnectorError, ConnectorSpec, Connectors, ErrorClass,
    HttpConnector, JobInput, NoopConnector, Outcome,
};
pub use runtime::{Service, Settings, Worker};
pub use source::{EmbeddedSource, HttpSource, Source};

use crate::app::http;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Serves `GET /metrics` for `metrics` on `listener` until `shutdown` resolves.
pub async fn run_metrics(
    listener: TcpListener,
    metrics: Arc<metrics::Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let settings = http::ConnSettings {
        builder: Arc::new(builder),
        tls: None,
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        write_stall: None,
    };
    let render = Arc::new(move || metrics.text());
    http::serve_metrics(listener, settings, render, shutdown).await;
}
