//! The report of a run, as JSON: the part every scenario shares
//! (settings, environment, empty figures), and the figures filled in
//! from what was measured (latency, errors, CPU time, the open loop,
//! the flood).

use std::net::IpAddr;
use std::thread;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::args::BenchArgs;
use super::driver::Errors;
use super::failures::ConnectFailures;
use super::flood::Flood;
use super::latency::new_histogram;
use super::merge::{encode, SCHEMA};
use super::sweep::SweepRates;
use super::{sysinfo, CpuWindow, Target};

/// An open loop achieving less than this fraction of its `--rate` is
/// "saturated": the server (or the generator: see its send lateness) could
/// not keep up. Under 1 by a margin, so the rounding at the window's edges
/// (replies in flight at its end) never trips it.
const SATURATED_BELOW: f64 = 0.95;

pub(super) fn percentiles(h: &Histogram<u64>) -> Value {
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

pub(super) fn base_report(args: &BenchArgs, target: &Target) -> Value {
    let (soft, hard) = crate::fdlimit::nofile_limits().unwrap_or((0, 0));
    let server_pid = target.server_pid;
    let addrs = |list: &[IpAddr]| list.iter().map(IpAddr::to_string).collect::<Vec<_>>();
    json!({
        "schema": SCHEMA,
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
        "connect_failures": ConnectFailures::default().to_counts(),
        "client": {"cpu_s": 0.0},
        "server": {
            "pid": server_pid,
            "cpu_s": Value::Null,
            "rss_bytes": server_pid.and_then(sysinfo::process_rss),
            "rss_peak_bytes": Value::Null,
        },
    })
}

pub(super) fn fill_cpu(report: &mut Value, start: &CpuWindow, end: &CpuWindow, messages: u64) {
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

/// Set `errors` (counts only) and `connect_failures` (the connects that
/// failed, by OS reason).
pub(super) fn fill_errors(report: &mut Value, errors: &Errors) {
    report["errors"] = errors_json(errors);
    report["connect_failures"] = json!(errors.connect_reasons.to_counts());
}

/// The `errors` object: a count per kind, nothing else.
fn errors_json(errors: &Errors) -> Value {
    json!({
        "connect": errors.connect,
        "mismatch": errors.mismatch,
        "reset": errors.reset,
        "server_closed": errors.server_closed,
        "timeout": errors.timeout,
    })
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

pub(super) fn flood_json(flood: &Flood, args: &BenchArgs) -> Value {
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
