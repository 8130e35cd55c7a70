//! `helios-worker`: runs jobs. A thin main: the command line and start-up live in
//! `helios_bins::worker::bin`.

use std::process::ExitCode;

// With the opt-in `mimalloc` feature (docs/performance.md has the measurements).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    helios_bins::worker::bin::main()
}
