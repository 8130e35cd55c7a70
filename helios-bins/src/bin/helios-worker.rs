//! `helios-worker`: runs jobs. A thin main: the command line and start-up live in
//! `helios_bins::worker::bin`.

use std::process::ExitCode;

fn main() -> ExitCode {
    helios_bins::worker::bin::main()
}
