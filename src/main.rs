//! The `echo-reactor` binary: parse the command line, run it, and turn any
//! error into one line on stderr (exit 1). Bad flags exit 2 through clap.

use std::process::ExitCode;

use clap::Parser;
use echo_reactor::cli::{self, Cli};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-reactor: {e}");
            ExitCode::FAILURE
        }
    }
}
