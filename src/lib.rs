//! HELIOS facade: one dependency that re-exports the core crates.
//!
//! Owns nothing of its own beyond the re-exports, the runnable `examples/` and the
//! criterion `benches/`. See `ARCHITECTURE.md` for the map of the workspace.

pub use helios_atlas as atlas;
pub use helios_auth as auth;
pub use helios_core as core;
pub use helios_proxy as proxy;
pub use helios_queue as queue;
