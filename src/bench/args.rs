//! The flags of `echo-reactor bench`, and their check before anything
//! runs: settings that cannot work are refused with one line (exit 2).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use super::message::HEADER_BYTES;
use super::sources::{self, PortRange, Sources};
use super::sweep::{self, SweepRates};
use super::{limits, schedule};
use crate::fdlimit::raise_nofile_limit;
use crate::proxy_header::HeaderVersion;
use crate::units::{parse_addr, parse_bytes, parse_secs, parse_secs_or_zero, usage_error};

/// Descriptors the bench keeps for itself besides its connections.
const FD_RESERVE: u64 = 64;

/// The connect deadline without `--connect-timeout`: this much, plus
/// [`CONNECT_SECS_PER_10K`] for every 10 000 connections of the run.
const CONNECT_TIMEOUT_BASE: Duration = Duration::from_secs(15);

/// Seconds of connect deadline per 10 000 connections (of the whole run:
/// every load generator connects to the same server, whose accepts set the
/// pace). 1 s per 10 000 is four times slower than the 40 000 a second
/// measured at 100 000 on a 2-core machine (docs/BENCHMARKS.md), so a
/// busy machine is not mistaken for a failing server; a fixed 15 s cut a
/// run of 1 000 000 off at 692 740.
const CONNECT_SECS_PER_10K: f64 = 1.0;

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

/// Flags of `echo-reactor bench merge`.
#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// JSON reports of `bench --json`, one per load generator.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print the merged report as one JSON object (the same schema).
    #[arg(long)]
    pub json: bool,
}

/// Flags of `echo-reactor bench compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// The report compared against (`bench --json` output).
    #[arg(value_name = "BASE.json")]
    pub base: PathBuf,
    /// The report compared.
    #[arg(value_name = "NEW.json")]
    pub new: PathBuf,
    /// Print the comparison as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Both reports' sweeps (`bench --sweep ... --json`) in one SVG chart:
    /// p99 against achieved msgs/s, a curve each, named by file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
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
    /// How long the connections may take to come up; those not up by then
    /// count as connect errors (`gave_up`). Default: 15 s plus 1 s per
    /// 10 000 --connections (115 s for 1 000 000).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub connect_timeout: Option<Duration>,
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
    #[arg(
        long,
        value_name = "MICROS",
        default_value_t = 1000,
        requires = "sweep"
    )]
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

impl BenchArgs {
    /// How long the connections may take to come up: `--connect-timeout`,
    /// or a deadline that grows with `--connections`: 15 s plus 1 s per
    /// 10 000 connections.
    pub fn connect_deadline(&self) -> Duration {
        self.connect_timeout.unwrap_or_else(|| {
            let tens_of_thousands = self.connections as f64 / 10_000.0;
            CONNECT_TIMEOUT_BASE + Duration::from_secs_f64(tens_of_thousands * CONNECT_SECS_PER_10K)
        })
    }
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
    if args.connect_timeout.is_some() && args.scenario == Scenario::Connect {
        return Err(refuse(
            "--connect-timeout applies to the echo, hold and flood scenarios (connect times each connect instead)".into(),
        ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `bench`'s flags alone, as clap parses them.
    #[derive(Parser)]
    struct Bench {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(args: &[&str]) -> BenchArgs {
        Bench::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn the_connect_deadline_grows_with_the_connections_unless_given() {
        let deadline = |args: &[&str]| parse(args).connect_deadline();
        assert_eq!(deadline(&[]), Duration::from_secs_f64(15.005));
        assert_eq!(
            deadline(&["--connections", "1000000"]),
            Duration::from_secs(115)
        );
        assert_eq!(
            deadline(&["--connections", "1000000", "--connect-timeout", "40"]),
            Duration::from_secs(40)
        );
    }
}
