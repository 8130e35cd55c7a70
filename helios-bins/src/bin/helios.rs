//! `helios`: the command-line tool (see `helios_bins::cli` for commands and exit codes).

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = helios_bins::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("helios: {e}");
            return ExitCode::from(helios_bins::cli::EXIT_UNREACHABLE);
        }
    };
    match runtime.block_on(helios_bins::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("helios: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
