//! The `echo-reactor` binary: parse the command line, run it, and turn any
//! error into one line on stderr (exit 1). Bad flags exit 2 through clap,
//! and so do command lines refused after parsing ([`UsageError`](echo_reactor::units::UsageError)).
//! A bench stopped by a signal exits 128 + the signal, after its partial summary.

use std::process::ExitCode;

use echo_reactor::cli;
use echo_reactor::units::is_usage_error;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = cli::parse();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-reactor: {e}");
            if let Some(code) = echo_reactor::bench::interrupt::exit_code_of(&e) {
                ExitCode::from(code)
            } else if is_usage_error(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
