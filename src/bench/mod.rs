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

pub mod compare;
pub mod deadline;
pub mod driver;
pub mod failures;
pub mod flood;
pub mod interrupt;
pub mod limits;
pub mod merge;
pub mod message;
pub mod plot;
pub mod processes;
pub mod progress;
pub mod schedule;
pub mod serverpid;
pub mod sources;
pub mod summary;
pub mod sweep;
pub mod sysinfo;
pub mod timeline;

use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::fdlimit::raise_nofile_limit;
use crate::stats::{stat_value, syscalls_in_line};
use crate::units::{parse_addr, parse_bytes, parse_secs, parse_secs_or_zero, usage_error};
use compare::CompareArgs;
use driver::{new_histogram, Errors, Load, Measured, Pacing};
use failures::describe;
use flood::{Flood, FloodLoad};
use interrupt::Interrupted;
use merge::{encode, MergeArgs};
use message::HEADER_BYTES;
use processes::Gate;
use progress::{Counters, LineClock, Printer};
use sources::{PortRange, Sources};
use summary::{errors_text, print_human};
use sweep::SweepRates;
use timeline::Timeline;

use crate::proxy_header::HeaderVersion;

/// Descriptors the bench keeps for itself besides its connections.
const FD_RESERVE: u64 = 64;
/// After the measured window, how long replies still in flight may take.
const DRAIN: Duration = Duration::from_secs(5);
/// An open loop achieving less than this fraction of its `--rate` is
/// "saturated": the server (or the generator: see its send lateness) could
/// not keep up. Under 1 by a margin, so the rounding at the window's edges
/// (replies in flight at its end) never trips it.
const SATURATED_BELOW: f64 = 0.95;

/// What the bench does (`--scenario`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Messages back and forth; throughput and latency.
    Echo,
    /// Open and close connections as fast as possible.
    Connect,
    /// Hold idle connections, then check each still answers; server memory per connection.
    Hold,
    /// Echo, beside `--flooders` connections that send and never read.
    Flood,
}

/// What reply the server gives (`--protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchProtocol {
    /// The message itself.
    Echo,
    /// The message upper-cased (messages are chosen to be unchanged by it).
    Upper,
}

/// What `echo-reactor bench` does besides running a bench.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchAction {
    /// Merge the JSON reports of runs made at the same time (several
    /// processes or machines): counts and rates summed, percentiles from
    /// the merged histograms.
    Merge(MergeArgs),
    /// Two JSON reports side by side, with the ratio of each figure.
    Compare(CompareArgs),
}

/// Flags of `echo-reactor bench`.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// `merge` or `compare` reports instead of running a bench.
    #[command(subcommand)]
    pub action: Option<BenchAction>,
    /// Target server; without it, `echo-reactor serve` is started as a child process.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub addr: Option<SocketAddr>,
    /// Concurrent connections (for `connect`: connects in progress at once).
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// Message size in bytes, e.g. 64 or 4KiB (at least the 24-byte header: connection id + sequence).
    #[arg(long, value_name = "BYTES", default_value = "64", value_parser = parse_bytes)]
    pub size: usize,
    /// Measured time (of each step, with --sweep: 5 s unless given).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs,
          default_value_if("sweep", clap::builder::ArgPredicate::IsPresent, "5"))]
    pub duration: Duration,
    /// Time before measuring starts (0 for none).
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs_or_zero)]
    pub warmup: Duration,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Open loop: total messages per second, spread evenly over the connections.
    #[arg(long, value_name = "MSGS_PER_S")]
    pub rate: Option<f64>,
    /// Load-generator threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Begin each measured connection with a PROXY protocol header (v1 or
    /// v2) naming its own address as the source, as a load balancer would:
    /// for a server run with --proxy-protocol (the child server gets it too).
    #[arg(long, value_name = "VERSION", value_enum)]
    pub proxy_header: Option<HeaderVersion>,
    /// What the server answers.
    #[arg(long, value_enum, default_value_t = BenchProtocol::Echo)]
    pub protocol: BenchProtocol,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::Echo)]
    pub scenario: Scenario,
    /// Print the summary as one JSON object on stdout (and no progress lines).
    #[arg(long)]
    pub json: bool,
    /// Print the progress lines on stderr even when it is not a terminal
    /// (or with --json); by default only on a terminal, without --json.
    #[arg(long)]
    pub progress: bool,
    /// The server's pid, for its CPU time and memory (known anyway for the child server).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// The server of --server-pid was started for this run and has served
    /// nothing yet, so `hold` may give its memory growth per connection
    /// (a harness that starts a server per run says so; see README).
    #[arg(long, requires = "server_pid")]
    pub server_fresh: bool,
    /// Flood scenario: connections that send continuously and never read,
    /// beside the `--connections` measured ones.
    #[arg(long, value_name = "N")]
    pub flooders: Option<usize>,
    /// Flood scenario: the most each flooder sends (then it holds its connection, silent).
    #[arg(long, value_name = "BYTES", default_value = "4MiB", value_parser = parse_bytes)]
    pub flood_bytes: usize,
    /// Load-generator processes, each with its own open-file limit and a
    /// share of --connections (and --rate, --flooders); merged into one report.
    #[arg(long, value_name = "P", default_value_t = 1)]
    pub processes: usize,
    /// Local addresses the connections come from, round-robin (e.g.
    /// 127.0.0.2,127.0.0.3). Without it: the kernel's choice, or 127.0.0.x
    /// when one address would run out of ephemeral ports to a loopback target.
    #[arg(long, value_name = "A,B,...", value_delimiter = ',')]
    pub source_addrs: Vec<IpAddr>,
    /// Open-loop steps at these total rates (msgs/s, e.g. 10000,20000,40000), each
    /// --duration long; `auto`: 8 steps from a tenth of the closed-loop capacity
    /// (a short probe) to past it. Reports each step and the knee.
    #[arg(long, value_name = "RATES|auto", value_parser = sweep::parse_rates)]
    pub sweep: Option<SweepRates>,
    /// The knee of a sweep: the highest step whose corrected p99 is within this, with no errors.
    #[arg(long, value_name = "MICROS", default_value_t = 1000)]
    pub slo_p99_us: u64,
    /// Draw the run as an SVG chart: a sweep's percentiles against achieved
    /// msgs/s, or a run's percentile spectrum and msgs/s and p99 per second.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Write the latency as an HdrHistogram interval log, one interval per second.
    #[arg(long, value_name = "FILE")]
    pub histogram_log: Option<PathBuf>,
    /// (Internal: a child of --processes) stop at the start gate and wait for the parent.
    #[arg(long, hide = true)]
    pub gated: bool,
    /// (Internal: a child of --processes) the id of its first connection.
    #[arg(long, hide = true, default_value_t = 0)]
    pub first_connection_id: u32,
}

/// Settings that cannot work are usage errors: one line, exit 2.
fn refuse(message: String) -> io::Error {
    usage_error(message)
}

/// Check the settings before anything runs; raises our fd limit as needed.
/// Returns where the connections will come from.
pub fn validate(args: &BenchArgs) -> io::Result<Sources> {
    for (flag, value) in [
        ("--connections", args.connections),
        ("--threads", args.threads),
        ("--pipeline", args.pipeline),
        ("--processes", args.processes),
    ] {
        if value == 0 {
            return Err(refuse(format!("{flag} 0: must be at least 1")));
        }
    }
    if args.size < HEADER_BYTES {
        return Err(refuse(format!(
            "--size {}: the smallest message is the {HEADER_BYTES}-byte header (connection id + sequence number)",
            args.size
        )));
    }
    if args.scenario != Scenario::Connect {
        let pipeline = if args.scenario == Scenario::Hold {
            1
        } else {
            args.pipeline
        };
        let settings = (
            args.connections,
            pipeline,
            args.size,
            args.threads * args.processes,
        );
        limits::check_buffers(settings, limits::buffer_cap_bytes()).map_err(refuse)?;
    }
    // Each process runs --threads threads over its share of the connections.
    let per_process = args.connections / args.processes; // the smallest share
    if args.processes > 1 && args.threads > per_process {
        return Err(refuse(format!(
            "--connections {} over --processes {} is {per_process} per process, fewer than --threads {}: every thread needs a connection",
            args.connections, args.processes, args.threads
        )));
    }
    if args.threads > args.connections {
        return Err(refuse(format!(
            "--threads {} > --connections {}: every thread needs a connection",
            args.threads, args.connections
        )));
    }
    if let Some(rate) = args.rate {
        schedule::check_rate(rate, args.connections).map_err(refuse)?;
        if !matches!(args.scenario, Scenario::Echo | Scenario::Flood) {
            return Err(refuse(
                "--rate applies to the echo and flood scenarios only".into(),
            ));
        }
    }
    let flooders = match (args.scenario, args.flooders) {
        (Scenario::Flood, Some(n)) if n > 0 => n,
        (Scenario::Flood, _) => {
            return Err(refuse(
                "--scenario flood needs --flooders N (at least 1)".into(),
            ))
        }
        (_, Some(_)) => {
            return Err(refuse(
                "--flooders applies to the flood scenario only (--scenario flood)".into(),
            ))
        }
        (_, None) => 0,
    };
    if flooders > 0 && flooders < args.processes {
        return Err(refuse(format!(
            "--flooders {flooders} < --processes {}: every process needs a flooder",
            args.processes
        )));
    }
    sweep::validate(args).map_err(refuse)?;
    if args.gated && (args.addr.is_none() || args.processes > 1) {
        return Err(refuse(
            "--gated is internal to --processes (a child with --addr)".into(),
        ));
    }
    // Descriptors: each process holds its share (the largest one).
    let (soft, hard) = raise_nofile_limit().or_else(|_| crate::fdlimit::nofile_limits())?;
    let share = |n: usize| n.div_ceil(args.processes) as u64;
    let needed = share(args.connections)
        .saturating_add(share(flooders))
        .saturating_add(FD_RESERVE);
    if needed > soft {
        let asked = if flooders > 0 {
            format!("--connections {} + --flooders {flooders}", args.connections)
        } else {
            format!("--connections {}", args.connections)
        };
        let remedy = if args.processes > 1 {
            "use more --processes or raise the limit"
        } else {
            "lower them, raise the limit, or spread them over --processes"
        };
        let per = if args.processes > 1 {
            format!(" per process (of {})", args.processes)
        } else {
            String::new()
        };
        return Err(refuse(format!(
            "{asked} needs about {needed} file descriptors{per}, but the open-file limit is {soft} (hard {hard}); {remedy}"
        )));
    }
    // The child server is one process whatever --processes says; it
    // inherits our (raised) limit.
    let server_needs = (args.connections as u64)
        .saturating_add(flooders as u64)
        .saturating_add(FD_RESERVE);
    if args.addr.is_none() && args.processes > 1 && server_needs > soft {
        return Err(refuse(format!(
            "the child server is one process: {} connections need about {server_needs} file descriptors in it, \
             over its open-file limit {soft}; start a server that can hold them and give --addr",
            args.connections + flooders
        )));
    }
    let target = args
        .addr
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |a| a.ip());
    let sources = sources::plan(
        &args.source_addrs,
        target,
        args.connections,
        flooders,
        PortRange::of_this_machine(),
    )
    .map_err(refuse)?;
    sources::check_bindable(&sources.addrs)?;
    Ok(sources)
}

/// An `echo-reactor serve` child on an ephemeral port; stopped on drop.
struct ChildServer {
    child: Child,
    addr: SocketAddr,
    stdout: BufReader<ChildStdout>,
}

impl ChildServer {
    fn start(protocol: BenchProtocol, proxy_header: bool) -> io::Result<ChildServer> {
        let protocol = match protocol {
            BenchProtocol::Echo => "echo",
            BenchProtocol::Upper => "upper",
        };
        let exe = std::env::current_exe()?;
        let mut command = Command::new(exe);
        // It dies with us, and Ctrl-C at the terminal reaches only us (we
        // then stop it in order, below).
        interrupt::die_with_parent(&mut command);
        let mut child = command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--protocol",
                protocol,
                "--shutdown-grace",
                "2",
            ])
            .args(proxy_header.then_some("--proxy-protocol"))
            .env("RUST_LOG", "warn")
            // The bench does no auth handshake: a key in our environment
            // would make every connection fail it.
            .env_remove(crate::cli::AUTH_KEY_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("start the server: {e}")))?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on tcp ")
            .and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!(
                "the server did not start (it said {line:?})"
            )));
        };
        Ok(ChildServer {
            child,
            addr,
            stdout,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, wait (then kill if needed), and return its final stats line.
    fn stop(mut self) -> Option<String> {
        // SAFETY: signals only the child we started, by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut rest = String::new();
        let _ = io::Read::read_to_string(&mut self.stdout, &mut rest);
        rest.lines()
            .find(|l| l.starts_with("stats "))
            .map(str::to_string)
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"p50": null, "p90": null, "p99": null, "p999": null, "max": null});
    }
    json!({
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

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
    if let (Some(pid), Some(_)) = (args.server_pid, args.addr) {
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
        report["interrupted"] = json!(true);
        report["interrupted_by"] = json!(stop.signal_name());
    }
    let achieved = report["connections"]["achieved"].as_u64().unwrap_or(0);
    if achieved == 0 && interrupted.is_none() {
        // Nothing could be measured: one line saying why, and with --json
        // the report too, carrying the same line as `error`.
        let reasons = describe(&report["errors"]["connect_reasons"]);
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
            report["error"] = json!(error);
            let mut out = io::stdout().lock();
            writeln!(out, "{report}")?;
            out.flush()?;
        }
        return Err(io::Error::new(io::ErrorKind::ConnectionRefused, error));
    }
    if let Some(line) = child.and_then(ChildServer::stop) {
        let calls = syscalls_in_line(&line).unwrap_or(0);
        let echoed = stat_value(&line, "bytes_out").unwrap_or(0) / args.size as u64;
        report["server"]["syscalls"] = json!(calls);
        // (Under a flood, bytes_out counts the flooders' echoes too.)
        report["server"]["syscalls_per_msg"] = if echoed > 0 && args.scenario == Scenario::Echo {
            json!(calls as f64 / echoed as f64)
        } else {
            Value::Null
        };
        report["server"]["peak_held_bytes"] = json!(stat_value(&line, "peak_held_bytes"));
    }
    if args.json {
        let mut out = io::stdout().lock();
        writeln!(out, "{report}")?;
        out.flush()?;
    } else if report.get("steps").is_some() {
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

/// A run of messages that measured none (a window too short for one
/// round trip) measured nothing: a failed run, not a figure of 0.
fn fail_on_nothing_measured(args: &BenchArgs, report: &Value) -> io::Result<()> {
    let sends = matches!(args.scenario, Scenario::Echo | Scenario::Flood);
    if sends && report["messages"].as_u64() == Some(0) {
        return Err(io::Error::other(format!(
            "bench: no message was measured in the {:?} window; give a longer --duration",
            args.duration
        )));
    }
    Ok(())
}

/// A report with errors is a failed run (a non-zero exit code), after it
/// has been printed.
fn fail_on_errors(report: &Value) -> io::Result<()> {
    let errors = &report["errors"];
    let count = |k: &str| errors[k].as_u64().unwrap_or(0);
    let total: u64 = ["connect", "mismatch", "reset", "server_closed", "timeout"]
        .iter()
        .map(|k| count(k))
        .sum();
    if total > 0 {
        return Err(io::Error::other(format!(
            "bench: {total} connections failed: {}",
            errors_text(errors)
        )));
    }
    Ok(())
}

fn base_report(args: &BenchArgs, target: &Target) -> Value {
    let (soft, hard) = crate::fdlimit::nofile_limits().unwrap_or((0, 0));
    let server_pid = target.server_pid;
    let addrs = |list: &[IpAddr]| list.iter().map(IpAddr::to_string).collect::<Vec<_>>();
    json!({
        "schema": 1,
        "scenario": format!("{:?}", args.scenario).to_lowercase(),
        "settings": {
            "addr": target.addr.to_string(),
            "connections": args.connections,
            "size": args.size,
            "duration_s": args.duration.as_secs_f64(),
            "warmup_s": args.warmup.as_secs_f64(),
            "pipeline": args.pipeline,
            "rate": args.rate,
            "threads": args.threads,
            "protocol": format!("{:?}", args.protocol).to_lowercase(),
            "scenario": format!("{:?}", args.scenario).to_lowercase(),
            "json": args.json,
            "server_pid": args.server_pid,
            "server_fresh": args.server_fresh,
            "child_server": args.addr.is_none(),
            "flooders": args.flooders,
            "flood_bytes": args.flood_bytes,
            "processes": args.processes,
            "source_addrs": addrs(&args.source_addrs),
            "sweep": args.sweep.as_ref().map(SweepRates::to_string),
            "slo_p99_us": args.slo_p99_us,
            "plot": args.plot.as_ref().map(|p| p.display().to_string()),
            "histogram_log": args.histogram_log.as_ref().map(|p| p.display().to_string()),
        },
        "processes": args.processes,
        "source_addrs": addrs(&target.sources.addrs),
        "source_addrs_automatic": target.sources.automatic,
        "environment": {
            "kernel": sysinfo::kernel(),
            "cpus": thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "nofile_soft": soft,
            "nofile_hard": hard,
            "version": env!("CARGO_PKG_VERSION"),
        },
        "connections": {"requested": args.connections, "achieved": 0},
        "duration_s": args.duration.as_secs_f64(),
        "messages": 0,
        "msgs_per_sec": 0.0,
        "bytes_per_sec": 0.0,
        "target_rate": args.rate,
        "latency_us": percentiles(&new_histogram()),
        "latency_uncorrected_us": Value::Null,
        "histogram": encode(&new_histogram()),
        "histogram_uncorrected": Value::Null,
        "errors": errors_json(&Errors::default()),
        "client": {"cpu_s": 0.0},
        "server": {
            "pid": server_pid,
            "cpu_s": Value::Null,
            "rss_bytes": server_pid.and_then(sysinfo::process_rss),
            "rss_peak_bytes": Value::Null,
        },
    })
}

fn fill_cpu(report: &mut Value, start: &CpuWindow, end: &CpuWindow, messages: u64) {
    let client = (end.client.saturating_sub(start.client)).as_secs_f64();
    report["client"]["cpu_s"] = json!(client);
    if messages > 0 {
        report["client"]["cpu_us_per_msg"] = json!(client * 1e6 / messages as f64);
    }
    if let (Some(a), Some(b)) = (start.server, end.server) {
        let server = b.saturating_sub(a).as_secs_f64();
        report["server"]["cpu_s"] = json!(server);
        if messages > 0 {
            report["server"]["cpu_us_per_msg"] = json!(server * 1e6 / messages as f64);
        }
    }
}

fn errors_json(errors: &Errors) -> Value {
    json!({
        "connect": errors.connect,
        "connect_reasons": errors.connect_reasons.to_json(),
        "mismatch": errors.mismatch,
        "reset": errors.reset,
        "server_closed": errors.server_closed,
        "timeout": errors.timeout,
    })
}

/// The echo scenario, and the flood scenario (echo beside flooders).
fn run_echo(args: &BenchArgs, target: &Target, progress: bool) -> io::Result<(Value, Timeline)> {
    let (addr, server_pid) = (target.addr, target.server_pid);
    let flooders = match args.scenario {
        Scenario::Flood => args.flooders.unwrap_or(0),
        _ => 0,
    };
    let shares = split(args.connections, args.threads);
    // Load threads and this thread meet once connected; then this thread
    // passes the gate (the other processes are connected too), and the
    // load threads, the flood thread if any and this thread start together.
    let connected = Arc::new(Barrier::new(args.threads + 1));
    let start = Arc::new(Barrier::new(args.threads + 1 + usize::from(flooders > 0)));
    // Watched from before the first connection: the connections are part
    // of what the server holds.
    let watch = sysinfo::Watch::start(server_pid);
    let counters: Vec<Arc<Counters>> = shares.iter().map(|_| Counters::shared()).collect();
    let handles: Vec<_> = shares
        .iter()
        .enumerate()
        .map(|(index, &(first, count))| {
            let load = Load {
                addr,
                size: args.size,
                pipeline: args.pipeline,
                pacing: args.rate.map(|rate| Pacing {
                    period_ps: schedule::check_rate(rate, args.connections)
                        .expect("checked by validate"),
                    connections: args.connections,
                    first_id: args.first_connection_id,
                }),
                warmup: args.warmup,
                duration: args.duration,
                drain: DRAIN,
                sources: target.sources.addrs.clone(),
                proxy_header: args.proxy_header,
            };
            let first = first + args.first_connection_id;
            let (connected, start) = (connected.clone(), start.clone());
            let progress = counters[index].clone();
            thread::spawn(move || {
                driver::run_echo(&load, first, count, (&connected, &start), &progress)
            })
        })
        .collect();
    let flood = (flooders > 0).then(|| {
        let load = FloodLoad {
            addr,
            connections: flooders,
            bytes_each: args.flood_bytes as u64,
            warmup: args.warmup,
            duration: args.duration,
        };
        let start = start.clone();
        thread::spawn(move || flood::run_flood(&load, &start))
    });
    let mut printer = Printer::new(progress, counters);
    printer.connecting(args.connections);
    connected.wait();
    target.gate.pass("connected")?;
    start.wait();
    let began = Instant::now();
    let mut timeline = Timeline::new(began, args.warmup, args.duration);
    printer.load_starts();
    let measure_from = began + args.warmup;
    let measure_until = measure_from + args.duration;
    let mut cpu_start = None;
    let mut cpu_end = None;
    // This thread's clock alone decides when the lines fall.
    let mut lines = LineClock::new(began, args.warmup, args.duration);
    let mut stopped_at = None;
    while !handles.iter().all(thread::JoinHandle::is_finished) {
        thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        if stopped_at.is_none() && interrupt::requested() {
            stopped_at = Some(now);
        }
        if cpu_start.is_none() && now >= measure_from {
            cpu_start = Some(CpuWindow::sample(server_pid));
        }
        if cpu_end.is_none() && (now >= measure_until || stopped_at.is_some()) {
            cpu_end = Some(CpuWindow::sample(server_pid));
        }
        if let (Some(measuring), None) = (lines.due(now), stopped_at) {
            if let Some(second) = printer.tick(measuring) {
                timeline.add(now, &second);
            }
        }
    }
    // The load threads notice a stop on their own and may all have ended
    // before this loop's next look: the stop is then seen here.
    if stopped_at.is_none() && interrupt::requested() {
        stopped_at = Some(Instant::now());
    }
    let (_, last) = printer.finish();
    // The last, partial second ends with the measured window at the latest.
    timeline.add(Instant::now().min(measure_until), &last);
    let cpu_end = cpu_end.unwrap_or_else(|| CpuWindow::sample(server_pid));
    let cpu_start = cpu_start.unwrap_or_else(|| CpuWindow::sample(server_pid));
    let mut total = Measured::new(0, Default::default());
    for handle in handles {
        total.merge(&handle.join().expect("load thread panicked"));
    }
    let flood = flood.map(|handle| handle.join().expect("flood thread panicked"));
    let peaks = watch.finish();
    // Cut short by a signal: the rates are over the part measured.
    let secs = match stopped_at {
        Some(at) => at
            .min(measure_until)
            .saturating_duration_since(measure_from),
        None => args.duration,
    }
    .as_secs_f64();
    let mut report = base_report(args, target);
    report["duration_s"] = json!(secs);
    report["connections"]["achieved"] = json!(total.connected);
    report["messages"] = json!(total.messages);
    let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    report["msgs_per_sec"] = json!(per_sec(total.messages));
    report["bytes_per_sec"] = json!(per_sec(total.messages * args.size as u64));
    report["latency_us"] = percentiles(&total.latency);
    // Serialized once, here at the end: nothing per message.
    report["histogram"] = json!(encode(&total.latency));
    if args.rate.is_some() {
        report["latency_uncorrected_us"] = percentiles(&total.latency_uncorrected);
        report["histogram_uncorrected"] = json!(encode(&total.latency_uncorrected));
        report["open_loop"] = json!({"intended": total.intended, "unsent": total.unsent});
        report["histogram_send_lateness"] = json!(encode(&total.send_lateness));
        fill_open_loop(&mut report, &total.send_lateness);
    }
    report["errors"] = errors_json(&total.errors);
    fill_cpu(&mut report, &cpu_start, &cpu_end, total.messages);
    report["server"]["rss_bytes"] = json!(server_pid.and_then(sysinfo::process_rss));
    report["server"]["rss_peak_bytes"] = json!(peaks.rss.map(|p| p.bytes));
    report["server"]["rss_peak_source"] = json!(peaks.rss.map(|p| p.source));
    let limits = sysinfo::kernel_tcp_memory_limits();
    report["kernel"] = json!({
        "tcp_mem_peak_bytes": peaks.kernel_tcp,
        "tcp_mem_pressure_bytes": limits.map(|l| l[1]),
        "tcp_mem_high_bytes": limits.map(|l| l[2]),
    });
    if let Some(flood) = flood {
        report["flood"] = flood_json(&flood, args);
    }
    report["seconds"] = timeline.to_json();
    Ok((report, timeline))
}

/// Open loop: achieved against requested, `saturated`, and the
/// generator's own send lateness (from its histogram, in ns), from the
/// report's other figures — so a merged report gets them the same way.
pub(crate) fn fill_open_loop(report: &mut Value, send_lateness: &Histogram<u64>) {
    let Some(requested) = report["target_rate"].as_f64() else {
        return;
    };
    let achieved = report["msgs_per_sec"].as_f64().unwrap_or(0.0);
    let ratio = achieved / requested;
    report["achieved_ratio"] = json!(ratio);
    report["saturated"] = json!(ratio < SATURATED_BELOW);
    let us = |q: f64| send_lateness.value_at_quantile(q) as f64 / 1e3;
    report["send_lateness_us"] = if send_lateness.is_empty() {
        json!({"p50": null, "p99": null, "max": null, "sends": 0})
    } else {
        json!({"p50": us(0.5), "p99": us(0.99), "max": send_lateness.max() as f64 / 1e3,
               "sends": send_lateness.len()})
    };
}

fn flood_json(flood: &Flood, args: &BenchArgs) -> Value {
    json!({
        "requested": args.flooders,
        "connections": flood.connections,
        "connect_failed": flood.connect_failed,
        "bytes_each": args.flood_bytes,
        "bytes_sent": flood.bytes_sent,
        "finished": flood.finished,
        "closed_by_server": flood.closed_by_server,
        "failed": flood.failed,
    })
}

fn run_connect(args: &BenchArgs, target: &Target) -> io::Result<Value> {
    let (addr, server_pid) = (target.addr, target.server_pid);
    let start = Arc::new(Barrier::new(args.threads + 1));
    let handles: Vec<_> = split(args.connections, args.threads)
        .into_iter()
        .map(|(first, concurrency)| {
            let (start, duration) = (start.clone(), args.duration);
            let sources = target.sources.addrs.clone();
            let first = first + args.first_connection_id;
            thread::spawn(move || {
                driver::run_connect(addr, (&sources, first), concurrency, duration, &start)
            })
        })
        .collect();
    // Nothing to connect beforehand: the threads wait at `start` while the
    // other processes, if any, get ready.
    target.gate.pass("ready")?;
    let queue_before = sysinfo::listen_queue_counters();
    start.wait();
    let cpu_start = CpuWindow::sample(server_pid);
    let (mut completed, mut latency) = (0, new_histogram());
    let (mut failed, mut slots_up) = (failures::ConnectFailures::default(), 0);
    for handle in handles {
        let part = handle.join().expect("connect thread panicked");
        completed += part.completed;
        failed.add(&part.failed);
        slots_up += part.slots_up;
        let _ = latency.add(&part.latency);
    }
    let cpu_end = CpuWindow::sample(server_pid);
    let queue_after = sysinfo::listen_queue_counters();
    let mut report = base_report(args, target);
    let secs = args.duration.as_secs_f64();
    // Achieved: how many of the --connections concurrent slots ever
    // completed a connection (a target that refuses achieves none).
    report["connections"]["achieved"] = json!(slots_up);
    report["messages"] = json!(0);
    report["errors"]["connect"] = json!(failed.total());
    report["errors"]["connect_reasons"] = failed.to_json();
    report["connect"] = json!({
        "completed": completed,
        "connections_per_sec": completed as f64 / secs,
        "latency_us": percentiles(&latency),
        "histogram": encode(&latency),
        "listen_overflows": queue_before.zip(queue_after).map(|(a, b)| b.0.saturating_sub(a.0)),
        "listen_drops": queue_before.zip(queue_after).map(|(a, b)| b.1.saturating_sub(a.1)),
        // The kernel counts these for the whole network namespace: every
        // listener here, not only the target (and nothing of a remote one).
        "listen_counters_scope": "network namespace",
    });
    fill_cpu(&mut report, &cpu_start, &cpu_end, 0);
    Ok(report)
}

fn run_hold(args: &BenchArgs, target: &Target, progress: bool) -> io::Result<Value> {
    let (addr, server_pid) = (target.addr, target.server_pid);
    let meet = Arc::new(Barrier::new(args.threads + 1));
    let rss_before = server_pid.and_then(sysinfo::process_rss);
    // Above the RSS, it says the server held more before: it ran already.
    let peak_before = server_pid.and_then(sysinfo::process_rss_hwm);
    let shares = split(args.connections, args.threads);
    let counters: Vec<Arc<Counters>> = shares.iter().map(|_| Counters::shared()).collect();
    let handles: Vec<_> = shares
        .into_iter()
        .enumerate()
        .map(|(index, (first, count))| {
            let load = Load {
                addr,
                size: args.size,
                pipeline: 1,
                pacing: None,
                warmup: Duration::ZERO,
                duration: args.duration,
                drain: DRAIN + Duration::from_secs(10),
                sources: target.sources.addrs.clone(),
                proxy_header: args.proxy_header,
            };
            let first = first + args.first_connection_id;
            let meet = meet.clone();
            let progress = counters[index].clone();
            thread::spawn(move || driver::run_hold(&load, (first, count), &meet, &progress))
        })
        .collect();
    Printer::new(progress, counters).connecting(args.connections);
    meet.wait(); // 1: all connected
    target.gate.pass("connected")?; // ... in every process
    let cpu_start = CpuWindow::sample(server_pid);
    let rss_idle = server_pid.and_then(sysinfo::process_rss);
    // The hold itself: nobody sends anything (until a signal, if any).
    let hold_until = Instant::now() + args.duration;
    while Instant::now() < hold_until && !interrupt::requested() {
        thread::sleep(
            hold_until
                .saturating_duration_since(Instant::now())
                .min(interrupt::CHECK_EVERY),
        );
    }
    let cpu_end = CpuWindow::sample(server_pid);
    meet.wait(); // 2: hold over; every connection now answers once
    meet.wait(); // 3: answered
    target.gate.pass("answered")?; // ... in every process
    let rss_after = server_pid.and_then(sysinfo::process_rss);
    meet.wait(); // 4: let go
    let mut total = Measured::new(0, Default::default());
    for handle in handles {
        total.merge(&handle.join().expect("hold thread panicked"));
    }
    let (connected, answered) = (total.connected, total.messages);
    let mut report = base_report(args, target);
    report["connections"]["achieved"] = json!(connected);
    report["messages"] = json!(answered);
    // The one echo per connection after the hold.
    report["latency_us"] = percentiles(&total.latency);
    report["histogram"] = json!(encode(&total.latency));
    report["errors"] = errors_json(&total.errors);
    report["server"]["rss_bytes"] = json!(rss_after);
    report["hold"] = json!({
        "answered": answered,
        "rss_before_bytes": rss_before,
        "rss_idle_bytes": rss_idle,
        "rss_after_echo_bytes": rss_after,
        "rss_fresh_server": target.fresh_server,
        "rss_peak_before_bytes": peak_before,
    });
    merge::hold_per_connection(&mut report);
    fill_cpu(&mut report, &cpu_start, &cpu_end, 0);
    Ok(report)
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
