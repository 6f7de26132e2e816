//! `echo-reactor bench`: a load generator people can trust.
//!
//! - Built on the same non-blocking machinery as the server: a few threads,
//!   each one `mio::Poll` driving many connections ([`driver`]), never a
//!   thread per connection.
//! - Every reply is verified against the message it answers ([`message`]).
//! - Latency goes into HdrHistograms; open loop (`--rate`) measures from
//!   the intended send time, so queueing in a slow server is not hidden.
//! - Without `--addr` it starts `echo-reactor serve` as a child process on
//!   an ephemeral port (its own fd limit and CPU accounting) and stops it at
//!   the end, whatever happens.
//! - `--scenario flood` runs the echo clients beside flooders
//!   ([`flood`]): connections that send and never read, on a thread of
//!   their own. Nothing that happens to a flooder fails the run; the
//!   server's peak memory over the run is reported (for echo too).
//! - Every report carries its latency histogram (key `histogram`), so
//!   runs merge exactly ([`merge`]: `bench merge`); [`compare`] puts two
//!   reports side by side.
//! - `--processes P` spreads the load over P child processes, each under
//!   its own open-file limit, merged into one report ([`processes`]);
//!   connections come from several source addresses when one would run
//!   out of ephemeral ports ([`sources`]).
//! - `--sweep` runs the echo scenario at a series of open-loop rates and
//!   finds the knee ([`sweep`]); `--plot` draws the run or the sweep as an
//!   SVG chart ([`plot`]); `--histogram-log` writes HdrHistogram's interval
//!   log, one interval per second ([`timeline`]).
//! - Settings that cannot work are refused before anything runs.
//! - Ctrl-C (or `SIGTERM`) stops the run in order: the partial summary is
//!   printed, then the bench exits 130 ([`interrupt`]); whatever ends the
//!   bench, its child server ends with it.
//! - Progress lines come from one clock, phase by phase, and add up to the
//!   summary ([`progress`]); connections that never came up are counted
//!   by their OS reason ([`failures`]).
//!
//! Where things live: the flags and their check (`args`), the child
//! server (`child`), running one scenario on the main thread
//! (`scenarios`) over the load threads ([`driver`]), the report's JSON
//! (`report`) and its human summary ([`summary`]); this file runs the
//! bench from end to end and decides its exit code.

mod args;
mod child;
pub mod compare;
pub mod deadline;
pub mod driver;
pub mod failures;
pub mod flood;
pub mod interrupt;
pub mod latency;
pub mod limits;
pub mod merge;
pub mod message;
pub mod plot;
pub mod processes;
pub mod progress;
mod report;
mod scenarios;
pub mod schedule;
pub mod schema;
pub mod serverpid;
pub mod sources;
pub mod summary;
pub mod sweep;
pub mod sysinfo;
pub mod timeline;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Duration;

use crate::stats::{stat_value, syscalls_in_line};
use child::ChildServer;
use failures::describe;
use interrupt::Interrupted;
use processes::Gate;
use scenarios::{run_connect, run_echo, run_hold};
use schema::Report;
use sources::Sources;
use summary::{errors_text, print_human};

pub use args::{validate, BenchAction, BenchArgs, BenchProtocol, Scenario};
use report::{base_report, percentiles};

/// Split `total` connections over `threads`: (first id, count) per thread.
fn split(total: usize, threads: usize) -> Vec<(u32, usize)> {
    let (base, extra) = (total / threads, total % threads);
    let mut first = 0;
    (0..threads)
        .map(|t| {
            let count = base + usize::from(t < extra);
            let share = (first as u32, count);
            first += count;
            share
        })
        .collect()
}

/// Samples of CPU time at the start and end of the measured window.
struct CpuWindow {
    client: Duration,
    server: Option<Duration>,
}

impl CpuWindow {
    fn sample(server_pid: Option<u32>) -> CpuWindow {
        CpuWindow {
            client: sysinfo::own_cpu(),
            server: server_pid.and_then(sysinfo::process_cpu),
        }
    }
}

/// Where the load goes, and how this process takes part in the run.
struct Target {
    addr: SocketAddr,
    server_pid: Option<u32>,
    sources: Sources,
    gate: Gate,
    /// The server was started for this run: the bench's own child, or
    /// one given with --server-pid --server-fresh.
    fresh_server: bool,
}

/// Run the bench (or `merge` / `compare` reports); prints the report. An
/// `Err` for settings that cannot work, a run that had errors, or one
/// stopped by a signal (after its partial summary: [`Interrupted`]).
pub fn run(args: &BenchArgs) -> io::Result<()> {
    match &args.action {
        Some(BenchAction::Merge(merge_args)) => return merge::run_merge(merge_args),
        Some(BenchAction::Compare(compare_args)) => return compare::run_compare(compare_args),
        None => {}
    }
    let sources = validate(args)?;
    interrupt::install()?;
    let child = match args.addr {
        Some(_) => None,
        None => Some(ChildServer::start(
            args.protocol,
            args.proxy_header.is_some(),
        )?),
    };
    let addr = args
        .addr
        .or(child.as_ref().map(|c| c.addr))
        .expect("an address");
    // A child of --processes leaves it to its parent, which looked before
    // any connection: the check reads every TCP socket of the machine
    // (/proc/net/tcp), and 56 children each reading a million of them
    // while connecting held some back for minutes.
    if let (Some(pid), Some(_), false) = (args.server_pid, args.addr, args.gated) {
        if let Some(warning) = serverpid::check(pid, addr) {
            eprintln!("echo-reactor: warning: {warning}");
        }
    }
    let target = Target {
        addr,
        server_pid: args.server_pid.or(child.as_ref().map(ChildServer::pid)),
        sources,
        gate: Gate::new(args.gated),
        fresh_server: child.is_some() || args.server_fresh,
    };
    let progress = args.progress || (!args.json && io::IsTerminal::is_terminal(&io::stderr()));
    // Created before the run, so a path that cannot be written is refused first.
    let mut log = match &args.histogram_log {
        Some(path) => Some(timeline::LogFile::create(path, plot::describe_args(args))?),
        None => None,
    };

    let mut report = if args.sweep.is_some() {
        sweep::run(args, &target, progress, log.as_mut())?
    } else if args.processes > 1 {
        processes::run(
            args,
            addr,
            target.server_pid,
            &target.sources.addrs,
            base_report(args, &target),
        )?
    } else {
        match args.scenario {
            Scenario::Echo | Scenario::Flood => {
                let (report, mut seconds) = run_echo(args, &target, progress)?;
                if let Some(log) = log.as_mut() {
                    seconds.write_intervals(log, None)?;
                }
                report
            }
            Scenario::Connect => run_connect(args, &target)?,
            Scenario::Hold => run_hold(args, &target, progress)?,
        }
    };
    let interrupted = Interrupted::now();
    if let Some(stop) = interrupted {
        report.interrupted = Some(true);
        report.interrupted_by = Some(stop.signal_name().to_string());
    }
    if report.connections.achieved == 0 && interrupted.is_none() {
        // Nothing could be measured: one line saying why, and with --json
        // the report too, carrying the same line as `error`.
        let reasons = describe(&report.connect_failures);
        let error = format!(
            "bench: no connection to {addr} could be established (0 of {}){}",
            args.connections,
            if reasons.is_empty() {
                String::new()
            } else {
                format!(": {reasons}")
            }
        );
        if args.json {
            report.error = Some(error.clone());
            write_json(&report)?;
        }
        return Err(io::Error::new(io::ErrorKind::ConnectionRefused, error));
    }
    if let Some(line) = child.and_then(ChildServer::stop) {
        let calls = syscalls_in_line(&line).unwrap_or(0);
        let echoed = stat_value(&line, "bytes_out").unwrap_or(0) / args.size as u64;
        report.server.syscalls = Some(calls);
        // (Under a flood, bytes_out counts the flooders' echoes too.)
        let per_msg = echoed > 0 && args.scenario == Scenario::Echo;
        report.server.syscalls_per_msg = Some(per_msg.then(|| calls as f64 / echoed as f64));
        report.server.peak_held_bytes = Some(stat_value(&line, "peak_held_bytes"));
    }
    if args.json {
        write_json(&report)?;
    } else if report.steps.is_some() {
        sweep::print_table(&report);
    } else {
        print_human(&report);
    }
    if let Some(log) = log {
        log.finish()?;
    }
    if let Some(path) = &args.plot {
        plot::chart_of_report(&report, path)?;
    }
    if let Some(stop) = interrupted {
        return Err(stop.into_error());
    }
    fail_on_errors(&report)?;
    fail_on_nothing_measured(args, &report)
}

/// `--json`: the report as one line on stdout.
fn write_json(report: &Report) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, report).map_err(io::Error::other)?;
    writeln!(out)?;
    out.flush()
}

/// A run of messages that measured none (a window too short for one
/// round trip) measured nothing: a failed run, not a figure of 0.
fn fail_on_nothing_measured(args: &BenchArgs, report: &Report) -> io::Result<()> {
    let sends = matches!(args.scenario, Scenario::Echo | Scenario::Flood);
    if sends && report.messages == 0 {
        return Err(io::Error::other(format!(
            "bench: no message was measured in the {:?} window; give a longer --duration",
            args.duration
        )));
    }
    Ok(())
}

/// A report with errors is a failed run (a non-zero exit code), after it
/// has been printed.
fn fail_on_errors(report: &Report) -> io::Result<()> {
    let total = report.errors.total();
    // Every connection closed cleanly before one reply: no drain, but a
    // server that wants a first message the bench did not send.
    let hint = if report.errors.server_closed == total && report.messages == 0 {
        "; closed before any reply: does the server want the auth handshake \
         (bench does not speak it) or a PROXY header (--proxy-header v1 or v2)?"
    } else {
        ""
    };
    if total > 0 {
        return Err(io::Error::other(format!(
            "bench: {total} connections failed: {}{hint}",
            errors_text(report)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_split_evenly_over_threads() {
        assert_eq!(split(10, 3), [(0, 4), (4, 3), (7, 3)]);
        assert_eq!(split(2, 2), [(0, 1), (1, 1)]);
    }
}
