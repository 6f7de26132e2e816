//! The command line: `echo-reactor serve ...`, `client ...` and `bench ...`
//! as clap parses them, and the dispatch to each subcommand.
//!
//! This file is the top of the crate: only `main.rs` uses it, and it uses
//! only the subcommands ([`serve`], [`client`],
//! [`bench`](mod@bench)), each of which owns its own flags and runs
//! on the library below it. Nothing below imports it, so a reader of the
//! server never has to read the command line first (ripgrep keeps its
//! flags apart from its search the same way).

use std::io;

use clap::{Parser, Subcommand};

use crate::bench::{self, BenchArgs};
use crate::client::{self, ClientArgs};
use crate::serve::{self, ServeArgs};

/// `echo-reactor`: a single-threaded mio echo server.
#[derive(Debug, Parser)]
#[command(name = "echo-reactor", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Talk to a server: send messages and print the replies.
    Client(ClientArgs),
    /// Load a server (this one, started as a child, or any echo server) and measure it.
    Bench(BenchArgs),
}

/// Run a parsed command line. Errors are meant to be printed as one line.
pub fn run(cli: Cli) -> io::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(&args),
        Command::Client(args) => client::run(&args),
        Command::Bench(args) => bench::run(&args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ProtocolName;
    use crate::server::Config;
    use std::time::Duration;

    #[test]
    fn every_size_and_duration_flag_takes_the_same_units() {
        let cli = Cli::try_parse_from([
            "echo-reactor",
            "serve",
            "--max-buffered",
            "1MB",
            "--max-line",
            "1.5KiB",
            "--max-memory",
            "1.5GiB",
            "--stall-timeout",
            "250ms",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        assert_eq!(args.max_buffered, 1_000_000, "MB is decimal, exactly");
        assert_eq!(args.max_line, 1536);
        assert_eq!(args.max_memory, 3 << 29);
        assert_eq!(args.stall_timeout, Duration::from_millis(250));

        let cli = Cli::try_parse_from([
            "echo-reactor",
            "bench",
            "--size",
            "64KiB",
            "--flood-bytes",
            "2MB",
            "--duration",
            "1.5s",
        ])
        .unwrap();
        let Command::Bench(args) = cli.command else {
            panic!("bench")
        };
        assert_eq!(args.size, 64 * 1024);
        assert_eq!(args.flood_bytes, 2_000_000);
        assert_eq!(args.duration, Duration::from_millis(1500));
    }

    #[test]
    fn a_udp_or_unix_socket_alone_replaces_the_default_listener() {
        let cli = Cli::try_parse_from(["echo-reactor", "serve", "--udp", "127.0.0.1:0"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        let config = args.to_config();
        assert!(config.listen.is_empty());
        assert_eq!(config.udp.len(), 1);

        let cli = Cli::try_parse_from(["echo-reactor", "serve", "--unix", "/tmp/x.sock"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        assert!(args.to_config().listen.is_empty());
    }

    #[test]
    fn serve_listens_on_the_default_address_only_without_listen_flags() {
        let cli = Cli::try_parse_from(["echo-reactor", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        assert_eq!(args.to_config().listen, Config::default().listen);

        let cli = Cli::try_parse_from([
            "echo-reactor",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "[::1]:0",
            "--protocol",
            "upper",
            "--max-buffered",
            "4KiB",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        let config = args.to_config();
        assert_eq!(config.listen.len(), 2);
        assert_eq!(config.max_buffered, 4096);
        assert_eq!(args.protocol, ProtocolName::Upper);
    }
}
