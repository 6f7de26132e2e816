//! The command line: `echo-reactor serve ...`, `client ...` and `bench ...`
//! as clap parses them, and the dispatch to each subcommand; plus the two
//! subcommands that describe the command line itself, `completions SHELL`
//! and `man`, generated from these very definitions (by `clap_complete`
//! and `clap_mangen`) so they cannot drift from the flags.
//!
//! This file is the top of the crate: only `main.rs` uses it, and it uses
//! only the subcommands ([`serve`], [`client`],
//! [`bench`](mod@bench)), each of which owns its own flags and runs
//! on the library below it. Nothing below imports it, so a reader of the
//! server never has to read the command line first (ripgrep keeps its
//! flags apart from its search the same way).

use std::any::TypeId;
use std::ffi::OsString;
use std::io;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use clap_complete::Shell;

use crate::bench::{self, BenchArgs};
use crate::client::{self, ClientArgs};
use crate::serve::{self, ServeArgs};
use crate::stdout::print_report;

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
    /// Print a completion script for SHELL on stdout (e.g. `echo-reactor
    /// completions bash > ~/.local/share/bash-completion/completions/echo-reactor`).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page (roff) on stdout (e.g. `echo-reactor man | man -l -`).
    Man,
}

/// The command line as clap builds it from [`Cli`], with one adjustment:
/// every flag that takes a value also takes a negative number as its value
/// (`--rate -1`), so the value reaches the flag and is refused naming it,
/// instead of clap reading `-1` as an unknown flag.
pub fn command() -> clap::Command {
    values_may_be_negative(Cli::command())
}

fn values_may_be_negative(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| {
            if arg.get_action().takes_values() && !arg.is_positional() {
                arg.allow_negative_numbers(true)
            } else {
                arg
            }
        })
        .mut_subcommands(values_may_be_negative)
}

/// Parse the process's command line, or exit 2 with clap's message.
pub fn parse() -> Cli {
    try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// Parse `args` (the program's name first) as [`command`] defines them.
pub fn try_parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut command = command();
    let mut matches: ArgMatches = command
        .try_get_matches_from_mut(args)
        .map_err(|e| negative_refused(e, &mut command))?;
    Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut command))
}

/// No flag takes a negative number: a value parser that refused one (`-1`
/// is "an invalid digit" to a count) is made to say so in words.
fn negative_refused(error: clap::Error, command: &mut clap::Command) -> clap::Error {
    let invalid = matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    );
    let (Some(ContextValue::String(flag)), Some(ContextValue::String(value))) = (
        error.get(ContextKind::InvalidArg),
        error.get(ContextKind::InvalidValue),
    ) else {
        return error;
    };
    let negative = value
        .strip_prefix('-')
        .is_some_and(|number| number.starts_with(|c: char| c.is_ascii_digit() || c == '.'));
    // `--warmup <SECS>`: the flag's name is the first word.
    let long = flag.split_whitespace().next().unwrap_or_default();
    if !(invalid && negative && is_quantity(command, long.trim_start_matches("--"))) {
        return error; // an address's own parser says better what is wrong with `-1`
    }
    clap::Error::raw(
        ErrorKind::ValueValidation,
        format!("invalid value '{value}' for '{flag}': must be positive (no flag takes a negative number)\n"),
    )
    .format(command)
}

/// Whether `--long` (in any subcommand) takes a count, a size, a rate or a
/// duration: a quantity, which "must be positive" describes.
fn is_quantity(command: &clap::Command, long: &str) -> bool {
    let quantities = [
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<usize>(),
        TypeId::of::<f64>(),
        TypeId::of::<Duration>(),
    ];
    let here = command.get_arguments().any(|arg| {
        arg.get_long() == Some(long)
            && quantities
                .iter()
                .any(|q| arg.get_value_parser().type_id() == *q)
    });
    here || command.get_subcommands().any(|sub| is_quantity(sub, long))
}

/// Run a parsed command line. Errors are meant to be printed as one line.
pub fn run(cli: Cli) -> io::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(&args),
        Command::Client(args) => client::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Completions { shell } => print_report(&completion_script(shell)),
        Command::Man => print_report(&man_page()?),
    }
}

/// The completion script for `shell`, as `echo-reactor completions` prints it.
pub fn completion_script(shell: Shell) -> String {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command(), "echo-reactor", &mut script);
    // The generators write only text built from the (UTF-8) flag definitions.
    let script = String::from_utf8_lossy(&script).into_owned();
    if shell == Shell::Bash {
        // clap_complete's bash script names a subcommand's state two ways when
        // the binary's name has a hyphen (`echo__reactor__subcmd__serve` when
        // it walks the words, `echo__subcmd__reactor__subcmd__serve` in the
        // `case` that lists the flags), so no subcommand's flags would ever
        // complete (clap-rs/clap#6421). Spell both the first way; once clap
        // fixes it, this replaces nothing. tests/completions.rs pins it.
        return script.replace("echo__subcmd__reactor", "echo__reactor");
    }
    script
}

/// The man page (roff), as `echo-reactor man` prints it: the top-level page
/// followed by one section per subcommand, each with all its flags, so one
/// `man echo-reactor` answers for every subcommand.
pub fn man_page() -> io::Result<String> {
    let mut command = command();
    command.build(); // resolves `version`, `help` and the subcommands' flags
    let mut page = Vec::new();
    let man = clap_mangen::Man::new(command.clone());
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    // Not `render_subcommands_section`: it points at per-subcommand pages
    // (`echo-reactor-serve(1)`), and here each subcommand is a section below.
    for sub in described_subcommands(&command) {
        page.extend_from_slice(subcommand_sections(sub)?.as_bytes());
    }
    man.render_version_section(&mut page)?;
    Ok(String::from_utf8_lossy(&page).into_owned())
}

/// The subcommands the man page describes: not `help`, which only repeats
/// the page.
fn described_subcommands(command: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help")
}

/// The sections of the man page for a subcommand and for each of its own
/// (`bench merge`): description, synopsis and every flag. `clap_mangen`
/// renders a subcommand as a page of its own (`echo-reactor-serve.1`, as
/// git does); one page is what `man echo-reactor` finds, so that page's
/// sections become subsections here.
fn subcommand_sections(sub: &clap::Command) -> io::Result<String> {
    let man = clap_mangen::Man::new(sub.clone());
    let mut body = Vec::new();
    man.render_description_section(&mut body)?;
    man.render_synopsis_section(&mut body)?;
    man.render_options_section(&mut body)?;
    let body = String::from_utf8_lossy(&body);
    let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
    let mut section = format!(".SH \"{}\"\n", name.to_uppercase());
    for line in body.lines() {
        // `.SH` is the only macro clap_mangen starts a section with.
        match line.strip_prefix(".SH ") {
            Some(heading) => section.push_str(&format!(".SS {heading}\n")),
            None => section.push_str(&format!("{line}\n")),
        }
    }
    for nested in described_subcommands(sub) {
        section.push_str(&subcommand_sections(nested)?);
    }
    Ok(section)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ProtocolName;
    use crate::server::Config;

    #[test]
    fn every_size_and_duration_flag_takes_the_same_units() {
        let cli = try_parse_from([
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

        let cli = try_parse_from([
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

    /// clap's error for `args`, as the user sees it.
    fn refusal(args: &[&str]) -> String {
        let mut argv = vec!["echo-reactor"];
        argv.extend_from_slice(args);
        try_parse_from(argv).expect_err("refused").to_string()
    }

    #[test]
    fn a_negative_number_is_refused_naming_the_flag() {
        for (args, flag, value) in [
            (&["bench", "--connections", "-3"][..], "--connections", "-3"),
            (&["bench", "--warmup", "-1"], "--warmup", "-1"),
            (&["bench", "--slo-p99-us", "-1"], "--slo-p99-us", "-1"),
            (&["serve", "--workers", "-1"], "--workers", "-1"),
            (&["serve", "--max-memory", "-5"], "--max-memory", "-5"),
            (&["serve", "--max-memory=-5"], "--max-memory", "-5"),
            (
                &["serve", "--max-connections", "-1"],
                "--max-connections",
                "-1",
            ),
            (&["client", "--timeout", "-0.5"], "--timeout", "-0.5"),
        ] {
            let err = refusal(args);
            assert!(
                err.contains(&format!("invalid value '{value}' for '{flag} "))
                    && err.contains("must be positive"),
                "{args:?}: {err}"
            );
        }
    }

    #[test]
    fn a_sweep_only_flag_without_sweep_is_refused() {
        let err = refusal(&["bench", "--slo-p99-us", "500"]);
        assert!(
            err.contains("required arguments were not provided") && err.contains("--sweep"),
            "{err}"
        );
        assert!(try_parse_from([
            "echo-reactor",
            "bench",
            "--sweep",
            "auto",
            "--slo-p99-us",
            "500"
        ])
        .is_ok());
    }

    #[test]
    fn a_negative_rate_reaches_the_rate_check() {
        // `--rate` is any number to clap; bench's own check refuses it by name.
        let cli = try_parse_from(["echo-reactor", "bench", "--rate", "-1"]).unwrap();
        let Command::Bench(bench) = cli.command else {
            panic!("bench")
        };
        assert_eq!(bench.rate, Some(-1.0));
    }

    #[test]
    fn a_negative_address_keeps_the_address_parsers_words() {
        let err = refusal(&["client", "--addr", "-1"]);
        assert!(err.contains("expected IP:PORT"), "{err}");
        assert!(!err.contains("must be positive"), "{err}");
    }

    #[test]
    fn a_message_that_looks_like_a_flag_is_still_not_a_value() {
        // Only flags that take values take negative numbers: `-1` after a
        // switch, or alone, is still clap's unknown argument.
        assert!(refusal(&["serve", "--proxy-protocol", "-1"]).contains("unexpected argument '-1'"));
    }

    #[test]
    fn a_udp_or_unix_socket_alone_replaces_the_default_listener() {
        let cli = try_parse_from(["echo-reactor", "serve", "--udp", "127.0.0.1:0"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        let config = args.to_config();
        assert!(config.listen.is_empty());
        assert_eq!(config.udp.len(), 1);

        let cli = try_parse_from(["echo-reactor", "serve", "--unix", "/tmp/x.sock"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        assert!(args.to_config().listen.is_empty());
    }

    #[test]
    fn serve_listens_on_the_default_address_only_without_listen_flags() {
        let cli = try_parse_from(["echo-reactor", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        assert_eq!(args.to_config().listen, Config::default().listen);

        let cli = try_parse_from([
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
