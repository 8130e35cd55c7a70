//! `helios-gateway`: the HTTP/JSON API with an embedded ATLAS. A thin main: parse flags,
//! load the config, start logging, open the stores, serve until SIGINT/SIGTERM.
//! The command line and start-up live in `helios_bins::gateway::bin`.

use std::process::ExitCode;

// With the opt-in `mimalloc` feature (docs/performance.md has the measurements).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    helios_bins::gateway::bin::main()
}
