//! helios-proxy: the reverse proxy's pure core (routing table, load balancers, health and
//! circuit-breaker state machines). It owns no sockets and reads no clock: `helios-bins`
//! pumps requests, responses and time through it (DESIGN.md, quinn-proto's shape).
//!
//! Built so far:
//! - [`balance`]: [`Pool`], round-robin, least connections, smooth weighted round-robin
//!   and power of two choices over peak EWMA, property-tested.
//! - [`breaker`]: [`Breaker`], closed / open / half-open on the failure rate over a
//!   sliding window, checked against a plain model.
//! - [`health`]: [`Health`], active checks with thresholds and passive outlier ejection
//!   (growing ejection times, a cap on the ejected share), checked against a plain model.
//!
//! - [`retry`]: which failures may be retried, and [`RetryBudget`] (Envoy's: retries at
//!   most a share of the requests, with a floor).
//!
//! - [`config`]: [`ProxyConfig`], the configuration as data (a document or the quick
//!   start's flags), validated as a whole into the route table and trusted proxies.
//! - [`headers`]: the request headers sent upstream (hop-by-hop stripped, `X-Forwarded-*`,
//!   RFC 7239 `Forwarded`, `Via`), trusting forwarding claims only from [`TrustedProxies`].
//! - [`route`]: [`RouteTable`], host and longest path prefix, built and validated from
//!   route and backend specs (the config's, or ATLAS's `proxy:route:` / `proxy:backend:`
//!   records).
//!
//! - [`upstream`]: [`Upstream`], one route's pool, health, breakers and retry budget kept
//!   consistent: what the server asks where to send a request, and tells how it ended.
//!
//! - [`catalog`]: [`Catalog`], the routes and backends stored in ATLAS, moved on by the
//!   change feed; [`store`]: [`ProxyStore`], the checked writes the gateway's admin routes
//!   make (the store only ever holds a catalog whose table builds).
//!
//! The server and the `helios-proxy` binary around this core live in `helios-bins`
//! (`proxy`).

pub mod balance;
pub mod breaker;
pub mod catalog;
pub mod config;
mod error;
pub mod headers;
pub mod health;
pub mod retry;
pub mod route;
pub mod store;
#[cfg(test)]
mod testing;
pub mod upstream;

pub use balance::{Policy, Pool};
pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use catalog::{Catalog, Change};
pub use config::{HealthCheck, ProxyConfig, ServerLimits, Timeouts};
pub use error::ProxyError;
pub use headers::{Hop, TrustedProxies, upstream_headers};
pub use health::{Health, HealthConfig};
pub use retry::{FailureKind, RetryBudget, RetryConfig, retryable};
pub use route::{BackendSpec, Route, RouteBackend, RouteSpec, RouteTable};
pub use store::{FeedEvent, Follow, Loaded, ProxyStore, Put, StoreError};
pub use upstream::{BackendReport, Outcome, Pick, Upstream};
