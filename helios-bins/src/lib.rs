//! helios-bins: the only async crate. It owns the adapters that pump bytes, time and
//! signals between the OS and the synchronous cores, and the thin mains in `src/bin/`.
//!
//! - [`config`]: the one configuration (YAML file, `HELIOS_*` environment, flags);
//! - [`app`]: the runner every binary shares: logging, the shutdown signal, the context
//!   (clock, randomness), opening ATLAS, the accept loop, HTTP connections, metrics;
//! - [`gateway`]: the HTTP/JSON API over ATLAS, auth, rate limits and the job queue;
//! - [`atlasd`]: the RESP (Redis protocol) server over ATLAS;
//! - [`proxy`]: the reverse proxy over `helios-proxy`'s core;
//! - [`worker`]: the worker runtime (claims, connectors, heartbeats, drain) and
//!   `helios-worker`;
//! - [`cli`]: the `helios` command-line tool (online commands and offline AOF tools);
//! - [`net`]: what the servers share about client addresses (the client identity).
//!
//! Invariant: no core state is touched while an `.await` is pending on a lock. In the
//! gateway, blocking work (bcrypt, writes that may fsync) runs on the blocking pool; atlasd
//! commits its connections' writes in groups at the end of a runtime turn (ARCHITECTURE.md).

pub mod app;
pub mod atlasd;
pub mod cli;
pub mod config;
pub mod gateway;
pub mod net;
pub mod proxy;
pub mod worker;
