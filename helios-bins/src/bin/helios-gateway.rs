//! `helios-gateway`: the HTTP/JSON API with an embedded ATLAS. A thin main: parse flags,
//! load the config, start logging, open the stores, serve until SIGINT/SIGTERM.
//! The command line and start-up live in `helios_bins::gateway::bin`.

use std::process::ExitCode;

// With the opt-in `mimalloc` feature: glibc malloc's cross-thread frees cost a fifth of
// atlasd's CPU under load (README, performance).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    helios_bins::gateway::bin::main()
}
