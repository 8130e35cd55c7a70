//! helios-bins: the only async crate. It owns the adapters that pump bytes, time and
//! signals between the OS and the synchronous cores, and the thin mains in `src/bin/`.
//!
//! - [`config`]: the one configuration (YAML file, `HELIOS_*` environment, flags);
//! - [`app`]: what every binary shares: logging, the shutdown signal, opening ATLAS;
//! - [`gateway`]: the HTTP/JSON API over ATLAS, auth, rate limits and the job queue;
//! - [`atlasd`]: the RESP (Redis protocol) server over ATLAS;
//! - [`cli`]: the `helios` command-line tool (online commands and offline AOF tools);
//! - [`net`]: what the servers share about client addresses (the client identity).
//!
//! Invariant: no core state is touched while an `.await` is pending on a lock; blocking
//! work (bcrypt, fsync under `always`) runs on the blocking pool.

pub mod app;
pub mod atlasd;
pub mod cli;
pub mod config;
pub mod gateway;
pub mod net;
