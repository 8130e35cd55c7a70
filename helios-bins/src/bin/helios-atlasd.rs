//! `helios-atlasd`: ATLAS over the Redis protocol. A thin main: parse flags (the app
//! wrapper's and redis-server's spellings), load the config, start logging, open ATLAS,
//! serve until SIGINT/SIGTERM or `SHUTDOWN`, then flush ATLAS.
//! The command line and start-up live in `helios_bins::atlasd::bin`.

use std::process::ExitCode;

// With the opt-in `mimalloc` feature (docs/performance.md has the measurements).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    helios_bins::atlasd::bin::main()
}
