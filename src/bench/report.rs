//! Building the report of a run: the part every scenario shares
//! (settings, environment, empty figures), and the figures filled in
//! from what was measured (latency, errors, CPU time, the open loop,
//! the flood, the hold's memory per connection). The types are in
//! [`schema`](super::schema).

use std::net::IpAddr;
use std::thread;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::args::{BenchArgs, Scenario};
use super::driver::Errors;
use super::flood::Flood;
use super::latency::encode;
use super::latency::new_histogram;
use super::schema::SCHEMA;
use super::schema::{
    Client, Connections, Environment, ErrorCounts, Flood as FloodFigures, Percentiles, Report,
    SendLateness, Server, Settings,
};
use super::sweep::SweepRates;
use super::{sysinfo, CpuWindow, Target};

/// An open loop achieving less than this fraction of its `--rate` is
/// "saturated": the server (or the generator: see its send lateness) could
/// not keep up. Under 1 by a margin, so the rounding at the window's edges
/// (replies in flight at its end) never trips it.
const SATURATED_BELOW: f64 = 0.95;

/// The percentiles of a latency histogram (all unknown when it is empty).
pub(super) fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        p50: Some(h.value_at_quantile(0.50)),
        p90: Some(h.value_at_quantile(0.90)),
        p99: Some(h.value_at_quantile(0.99)),
        p999: Some(h.value_at_quantile(0.999)),
        max: Some(h.max()),
    }
}

/// The report before anything is measured: settings, environment, and
/// figures at zero or unknown.
pub(super) fn base_report(args: &BenchArgs, target: &Target) -> Report {
    let (soft, hard) = crate::fdlimit::nofile_limits().unwrap_or((0, 0));
    let server_pid = target.server_pid;
    let addrs = |list: &[IpAddr]| list.iter().map(IpAddr::to_string).collect::<Vec<_>>();
    let scenario = format!("{:?}", args.scenario).to_lowercase();
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    Report {
        schema: SCHEMA,
        scenario: scenario.clone(),
        settings: Settings {
            addr: target.addr.to_string(),
            connections: args.connections as u64,
            size: args.size as u64,
            duration_s: args.duration.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            pipeline: args.pipeline as u64,
            rate: args.rate,
            threads: args.threads as u64,
            protocol: format!("{:?}", args.protocol).to_lowercase(),
            scenario,
            json: args.json,
            server_pid: args.server_pid,
            server_fresh: args.server_fresh,
            child_server: args.addr.is_none(),
            flooders: args.flooders.map(|n| n as u64),
            flood_bytes: args.flood_bytes as u64,
            processes: args.processes as u64,
            connect_timeout_s: args.connect_timeout.map(|t| t.as_secs_f64()),
            source_addrs: addrs(&args.source_addrs),
            sweep: args.sweep.as_ref().map(SweepRates::to_string),
            slo_p99_us: args.slo_p99_us,
            plot: path(&args.plot),
            histogram_log: path(&args.histogram_log),
        },
        processes: args.processes as u64,
        source_addrs: addrs(&target.sources.addrs),
        source_addrs_automatic: target.sources.automatic,
        environment: Environment {
            kernel: sysinfo::kernel(),
            cpus: thread::available_parallelism().map_or(1, |n| n.get()) as u64,
            nofile_soft: soft,
            nofile_hard: hard,
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        connections: Connections {
            requested: args.connections as u64,
            achieved: 0,
            connect_timeout_s: (args.scenario != Scenario::Connect)
                .then(|| args.connect_deadline().as_secs_f64()),
            ..Connections::default()
        },
        duration_s: args.duration.as_secs_f64(),
        target_rate: args.rate,
        latency_us: percentiles(&new_histogram()),
        histogram: encode(&new_histogram()),
        client: Client {
            cpu_s: 0.0,
            cpu_us_per_msg: None,
        },
        server: Server {
            pid: server_pid,
            rss_bytes: server_pid.and_then(sysinfo::process_rss),
            ..Server::default()
        },
        ..Report::default()
    }
}

/// How long the achieved connections took to come up, and their rate
/// (from the report's achieved count, so a merged report gets them the same way).
pub(super) fn fill_connect_time(report: &mut Report, took: Duration) {
    let secs = took.as_secs_f64();
    let connections = &mut report.connections;
    connections.connect_s = Some(secs);
    connections.connects_per_sec = (secs > 0.0).then(|| connections.achieved as f64 / secs);
}

/// The CPU time of the load generator and the server over the window,
/// and per message when messages were measured.
pub(super) fn fill_cpu(report: &mut Report, start: &CpuWindow, end: &CpuWindow, messages: u64) {
    let client = (end.client.saturating_sub(start.client)).as_secs_f64();
    report.client.cpu_s = client;
    if messages > 0 {
        report.client.cpu_us_per_msg = Some(client * 1e6 / messages as f64);
    }
    if let (Some(a), Some(b)) = (start.server, end.server) {
        let server = b.saturating_sub(a).as_secs_f64();
        report.server.cpu_s = Some(server);
        if messages > 0 {
            report.server.cpu_us_per_msg = Some(server * 1e6 / messages as f64);
        }
    }
}

/// Set `errors` (counts only) and `connect_failures` (the connects that
/// failed, by OS reason).
pub(super) fn fill_errors(report: &mut Report, errors: &Errors) {
    report.errors = ErrorCounts {
        connect: errors.connect,
        mismatch: errors.mismatch,
        reset: errors.reset,
        server_closed: errors.server_closed,
        timeout: errors.timeout,
    };
    report.connect_failures = errors.connect_reasons.to_counts();
}

/// Open loop: achieved against requested, `saturated`, and the
/// generator's own send lateness (from its histogram, in ns), from the
/// report's other figures — so a merged report gets them the same way.
pub(crate) fn fill_open_loop(report: &mut Report, send_lateness: &Histogram<u64>) {
    let Some(requested) = report.target_rate else {
        return;
    };
    let ratio = report.msgs_per_sec / requested;
    report.achieved_ratio = Some(ratio);
    report.saturated = Some(ratio < SATURATED_BELOW);
    let us = |q: f64| send_lateness.value_at_quantile(q) as f64 / 1e3;
    report.send_lateness_us = Some(if send_lateness.is_empty() {
        SendLateness::default()
    } else {
        SendLateness {
            p50: Some(us(0.5)),
            p99: Some(us(0.99)),
            max: Some(send_lateness.max() as f64 / 1e3),
            sends: send_lateness.len(),
        }
    });
}

/// The flood scenario's figures.
pub(super) fn flood_figures(flood: &Flood, args: &BenchArgs) -> FloodFigures {
    FloodFigures {
        requested: args.flooders.map(|n| n as u64),
        connections: flood.connections as u64,
        connect_failed: flood.connect_failed,
        bytes_each: args.flood_bytes as u64,
        bytes_sent: flood.bytes_sent,
        finished: flood.finished as u64,
        closed_by_server: flood.closed_by_server as u64,
        failed: flood.failed as u64,
        sched_idle: Some(flood.sched_idle),
    }
}

/// Recompute the hold scenario's server memory per connection from its
/// (merged) before / idle / after figures and the achieved connections.
///
/// What it measures: the growth of the server's private anonymous memory
/// (`RssAnon`, summed over the server and the processes under it: heap,
/// stacks, the connection table; socket buffers are kernel memory and not
/// in it) from before the first connection to after, divided by the
/// connections held. Without those figures (a report from before they
/// existed), the growth of its resident memory (`VmRSS`), which also
/// counts the program's shared pages once per process: each worker maps
/// more of them as it first runs the code that accepts and serves (about
/// 64 KiB a worker here, 2 MiB at a time where the program text is mapped
/// in huge pages), and with many workers that reads as memory per
/// connection.
///
/// It is only a figure per connection for a server that starts from
/// nothing: one that ran before reuses memory it freed (the allocator
/// keeps it), so its memory need not grow at all. So the figure is given
/// only for a server started for this run (`rss_fresh_server`: the
/// bench's child, or `--server-fresh`), whose peak RSS before the run was
/// its RSS (else it ran already), whose processes were the same before
/// and with the connections up (a worker that starts in between brings
/// its own memory), and whose memory grew; otherwise it is `null`, and
/// `rss_per_conn_unknown` says why.
pub(super) fn hold_per_connection(report: &mut Report) {
    // A fresh server's peak RSS is its RSS, give or take start-up
    // allocations freed; past this, it held more before (a run's worth).
    const RAN_BEFORE_SLACK_BYTES: u64 = 256 * 1024;
    let connected = report.connections.achieved;
    let no_pid = report.server.pid.is_none();
    let Some(hold) = report.hold.as_mut() else {
        return;
    };
    let h = &*hold;
    let (before, idle, after) = match (h.anon_before_bytes, h.anon_idle_bytes) {
        (Some(_), Some(_)) => (
            h.anon_before_bytes,
            h.anon_idle_bytes,
            h.anon_after_echo_bytes,
        ),
        _ => (h.rss_before_bytes, h.rss_idle_bytes, h.rss_after_echo_bytes),
    };
    let (rss_before, peak_before) = (h.rss_before_bytes, h.rss_peak_before_bytes);
    let processes = (h.server_processes_before, h.server_processes_idle);
    let unknown = match (before, idle) {
        _ if no_pid => {
            Some("no server pid (give --server-pid, or let the bench start the server)".to_string())
        }
        (None, _) | (_, None) => Some("the server's memory could not be read".to_string()),
        _ if connected == 0 => Some("no connection was held".to_string()),
        _ if !h.rss_fresh_server => Some(
            "the server was not started by this bench: memory it freed earlier (say, in an \
             earlier run) is reused, so its growth understates; run without --addr, or start \
             a server for the run and say so with --server-fresh"
                .to_string(),
        ),
        _ if rss_before
            .zip(peak_before)
            .is_some_and(|(rss, peak)| peak > rss + RAN_BEFORE_SLACK_BYTES) =>
        {
            Some(format!(
                "the server held more memory before this run (peak {} bytes, now {}): \
                 it ran already, and reuses memory it freed",
                peak_before.unwrap_or(0),
                rss_before.unwrap_or(0)
            ))
        }
        _ if matches!(processes, (Some(b), Some(i)) if b != i) => Some(format!(
            "the server had {} processes before connecting and {} with the connections up: \
             a worker started, restarted or ended in between, and its own memory is not the \
             connections'; start the bench once every worker is up",
            processes.0.unwrap_or(0),
            processes.1.unwrap_or(0)
        )),
        (Some(before), Some(idle)) if idle <= before => Some(format!(
            "the server's memory did not grow ({before} -> {idle} bytes): it reused memory it held before"
        )),
        _ => None,
    };
    let per_conn = |now: Option<u64>| match (before, now, &unknown) {
        (Some(before), Some(now), None) => {
            Some(now.saturating_sub(before) as f64 / connected as f64)
        }
        _ => None,
    };
    hold.rss_per_conn_idle_bytes = per_conn(idle);
    hold.rss_per_conn_after_echo_bytes = per_conn(after);
    hold.rss_per_conn_unknown = unknown;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::schema::Hold;

    #[test]
    fn hold_memory_per_connection_is_given_only_when_it_can_be_trusted() {
        let hold = |fresh: bool, peak_before: u64, idle: u64| {
            let mut r = Report {
                hold: Some(Hold {
                    rss_before_bytes: Some(4_000_000),
                    rss_peak_before_bytes: Some(peak_before),
                    rss_idle_bytes: Some(idle),
                    rss_after_echo_bytes: Some(idle),
                    rss_fresh_server: fresh,
                    ..Hold::default()
                }),
                ..Report::default()
            };
            r.connections.achieved = 100;
            r.server.pid = Some(42);
            hold_per_connection(&mut r);
            r.hold.unwrap()
        };
        let trusted = hold(true, 4_000_000, 4_010_000);
        assert_eq!(trusted.rss_per_conn_idle_bytes, Some(100.0));
        assert_eq!(trusted.rss_per_conn_unknown, None);
        for (h, why) in [
            (
                hold(false, 4_000_000, 4_010_000),
                "not started by this bench",
            ),
            (hold(true, 9_000_000, 4_010_000), "held more memory before"),
            (hold(true, 4_000_000, 4_000_000), "did not grow"),
        ] {
            assert_eq!(h.rss_per_conn_idle_bytes, None, "{h:?}");
            let text = h.rss_per_conn_unknown.unwrap();
            assert!(text.contains(why), "{text}");
        }
    }

    #[test]
    fn memory_per_connection_is_the_private_memory_s_growth_over_unchanged_processes() {
        // Resident memory grew by 3 MB (one more worker's worth of shared
        // program pages), private memory by 1 MB: the connections' cost
        // is the private growth.
        let hold = |processes_idle: u64| {
            let mut r = Report {
                hold: Some(Hold {
                    rss_before_bytes: Some(40_000_000),
                    rss_peak_before_bytes: Some(40_000_000),
                    rss_idle_bytes: Some(43_000_000),
                    rss_after_echo_bytes: Some(43_000_000),
                    anon_before_bytes: Some(5_000_000),
                    anon_idle_bytes: Some(6_000_000),
                    anon_after_echo_bytes: Some(6_500_000),
                    server_processes_before: Some(8),
                    server_processes_idle: Some(processes_idle),
                    rss_fresh_server: true,
                    ..Hold::default()
                }),
                ..Report::default()
            };
            r.connections.achieved = 10_000;
            r.server.pid = Some(42);
            hold_per_connection(&mut r);
            r.hold.unwrap()
        };
        let same = hold(8);
        assert_eq!(same.rss_per_conn_idle_bytes, Some(100.0));
        assert_eq!(same.rss_per_conn_after_echo_bytes, Some(150.0));
        let changed = hold(9);
        assert_eq!(changed.rss_per_conn_idle_bytes, None);
        let why = changed.rss_per_conn_unknown.unwrap();
        assert!(why.contains("8 processes before connecting and 9"), "{why}");
    }
}
