//! helios-proxy: the reverse proxy's pure core (routing table, load balancers, health and
//! circuit-breaker state machines). It owns no sockets and reads no clock: `helios-bins`
//! pumps requests, responses and time through it (DESIGN.md, quinn-proto's shape).
//!
//! Built so far:
//! - [`balance`]: [`Pool`], round-robin, least connections, smooth weighted round-robin
//!   and power of two choices over peak EWMA, property-tested.
//!
//! Still to come (issue 20): the route table, active health checks, outlier ejection,
//! circuit breakers, the retry budget, and the `helios-proxy` binary.

pub mod balance;
mod error;

pub use balance::{Policy, Pool};
pub use error::ProxyError;
