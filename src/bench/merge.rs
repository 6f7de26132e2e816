//! Combining runs: `bench merge`, and the merge behind `--processes`.
//!
//! A report carries its latency HdrHistogram itself (key `histogram`:
//! HdrHistogram's V2 compressed serialization, base64: see
//! [`latency`](super::latency)). Adding histograms
//! of the same precision is exact — the sum holds every sample of every
//! run, each in the bucket it was recorded in — so merged percentiles are
//! those of one histogram that recorded every sample. Percentiles alone
//! could not be merged (the p99 of two runs is not the mean of their p99s).
//!
//! What the merge means, for runs made *at the same time* against one
//! server (the processes of `--processes`, or load generators on several
//! machines started together):
//! - counts (messages, connections, errors, flood and hold tallies) are
//!   summed, and so are rates (`msgs_per_sec`, `bytes_per_sec`,
//!   `target_rate`): the rate of concurrent runs is the sum of their rates;
//!   `duration_s` is the longest run's;
//! - latency percentiles come from the merged histograms (the open loop's
//!   send lateness too: key `histogram_send_lateness`), and `saturated`
//!   from the summed rates;
//! - what every run saw of one shared thing (the server's CPU time and
//!   memory, when the runs name the same server pid; machine-wide kernel
//!   figures) is the largest any run saw, not a sum: each watched the same
//!   thing over nearly the same window;
//! - the load generators' own CPU time is summed.
//!
//! Invariant: runs that cannot be one result are refused, naming the files
//! and the difference: another schema, scenario, message size, protocol
//! or loop kind (open vs closed), a sweep (its steps are runs of their
//! own), a run without a histogram, or histograms of different precision
//! (their sum would not be exact). Runs against different targets merge
//! with a warning naming them: the sum is then of several servers (or of
//! one reached by several addresses, which only the user knows).

use std::io;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::Value;

use super::args::MergeArgs;
use super::latency::{decode, encode};
use super::report::{fill_connect_time, fill_open_loop, hold_per_connection, percentiles};
use super::schema::{
    Client, Connect, ConnectFailureCounts, ErrorCounts, Flood, Hold, Report, Server, SCHEMA,
};

/// One run's report and the name that identifies it in messages.
#[derive(Debug, Clone)]
pub struct Run {
    /// A file name, or "load generator 2 of 4".
    pub name: String,
    /// Its report.
    pub report: Report,
}

/// Merge the reports of runs of one scenario (see the module header).
pub fn merge(runs: &[Run]) -> Result<Report, String> {
    let Some((first, rest)) = runs.split_first() else {
        return Err("bench merge: nothing to merge".into());
    };
    if let Some(sweep) = runs.iter().find(|r| r.report.steps.is_some()) {
        return Err(format!(
            "bench merge: {} is a sweep: only single runs merge (bench compare puts two sweeps side by side)",
            sweep.name
        ));
    }
    for run in rest {
        for (what, pick) in SAME {
            let (a, b) = (pick(&first.report), pick(&run.report));
            if a != b {
                return Err(format!(
                    "bench merge: {} has {what} {a}, {} has {b}: only runs of one scenario, message size, protocol and loop kind merge",
                    first.name, run.name
                ));
            }
        }
    }
    let latency = merged_histogram(runs, "histogram", |r| Some(&r.histogram))?
        .ok_or("bench merge: no histogram")?;
    let uncorrected = merged_histogram(runs, "histogram_uncorrected", |r| {
        r.histogram_uncorrected.as_ref()
    })?;
    let sum = |pick: fn(&Report) -> u64| runs.iter().map(|r| pick(&r.report)).sum::<u64>();
    let sum_f64 = |pick: fn(&Report) -> f64| runs.iter().map(|r| pick(&r.report)).sum::<f64>();
    let mut m = first.report.clone();
    // The first run's own list of its processes is not the merged one's.
    m.load_generators = None;
    let messages = sum(|r| r.messages);

    // Every process of every run, and the settings that are shares of a
    // total (each run's share of the connections, threads, rate, flooders).
    m.processes = sum(|r| r.processes.max(1));
    m.settings.processes = m.processes;
    m.settings.connections = sum(|r| r.settings.connections);
    m.settings.threads = sum(|r| r.settings.threads);
    if m.settings.flooders.is_some() {
        m.settings.flooders = Some(sum(|r| r.settings.flooders.unwrap_or(0)));
    }
    if m.settings.rate.is_some() {
        m.settings.rate = Some(sum_f64(|r| r.settings.rate.unwrap_or(0.0)));
    }
    m.connections.requested = sum(|r| r.connections.requested);
    m.connections.achieved = sum(|r| r.connections.achieved);
    if m.connections.connect_s.is_some() {
        // The runs connect at the same time: the slowest one's time is
        // the merged one's, and the rate is over it.
        let slowest = runs
            .iter()
            .filter_map(|r| r.report.connections.connect_s)
            .fold(0.0, f64::max);
        fill_connect_time(&mut m, Duration::from_secs_f64(slowest));
        m.connections.connect_timeout_s = runs
            .iter()
            .filter_map(|r| r.report.connections.connect_timeout_s)
            .reduce(f64::max);
    }
    m.duration_s = runs.iter().map(|r| r.report.duration_s).fold(0.0, f64::max);
    m.messages = messages;
    m.msgs_per_sec = sum_f64(|r| r.msgs_per_sec);
    m.bytes_per_sec = sum_f64(|r| r.bytes_per_sec);
    if m.target_rate.is_some() {
        m.target_rate = Some(sum_f64(|r| r.target_rate.unwrap_or(0.0)));
    }
    m.histogram = encode(&latency);
    m.latency_us = percentiles(&latency);
    m.histogram_uncorrected = uncorrected.as_ref().map(encode);
    m.latency_uncorrected_us = uncorrected.as_ref().map(percentiles);
    if let Some(open_loop) = m.open_loop.as_mut() {
        open_loop.intended = sum(|r| r.open_loop.map_or(0, |o| o.intended));
        open_loop.unsent = sum(|r| r.open_loop.map_or(0, |o| o.unsent));
        // Achieved against requested from the summed rates; the
        // generators' send lateness from their merged histograms (ns).
        let lateness = merged_histogram(runs, "histogram_send_lateness", |r| {
            r.histogram_send_lateness.as_ref()
        })?;
        let lateness = lateness.unwrap_or_else(crate::bench::latency::new_histogram_ns);
        m.histogram_send_lateness = Some(encode(&lateness));
        fill_open_loop(&mut m, &lateness);
    }
    m.errors = ErrorCounts::default();
    m.connect_failures = ConnectFailureCounts::default();
    for run in runs {
        m.errors.add(&run.report.errors);
        m.connect_failures.add(&run.report.connect_failures);
    }
    let client_cpu = sum_f64(|r| r.client.cpu_s);
    // Per message only where a run reports it (not for hold and connect).
    let per_message = messages > 0 && first.report.client.cpu_us_per_msg.is_some();
    m.client = Client {
        cpu_s: client_cpu,
        cpu_us_per_msg: per_message.then(|| client_cpu * 1e6 / messages as f64),
    };
    m.server = merged_server(runs, if per_message { messages } else { 0 });
    if let Some(kernel) = m.kernel.as_mut() {
        kernel.tcp_mem_peak_bytes = runs
            .iter()
            .filter_map(|r| r.report.kernel?.tcp_mem_peak_bytes)
            .max();
    }
    if let Some(flood) = m.flood.as_mut() {
        let floods = || runs.iter().filter_map(|r| r.report.flood.as_ref());
        let flood_sum = |pick: fn(&Flood) -> u64| floods().map(pick).sum::<u64>();
        flood.requested = Some(flood_sum(|f| f.requested.unwrap_or(0)));
        flood.connections = flood_sum(|f| f.connections);
        flood.connect_failed = flood_sum(|f| f.connect_failed);
        flood.bytes_sent = flood_sum(|f| f.bytes_sent);
        flood.finished = flood_sum(|f| f.finished);
        flood.closed_by_server = flood_sum(|f| f.closed_by_server);
        flood.failed = flood_sum(|f| f.failed);
        // Behind the measured clients only if every run's flood was.
        flood.sched_idle = floods()
            .map(|f| f.sched_idle)
            .try_fold(true, |all, idle| idle.map(|idle| all && idle));
    }
    if m.hold.is_some() {
        let holds: Vec<&Hold> = runs.iter().filter_map(|r| r.report.hold.as_ref()).collect();
        let hold = m.hold.as_mut().expect("checked");
        hold.answered = holds.iter().map(|h| h.answered).sum();
        // The server's memory before any run connected, and with every
        // run's connections (the runs overlap): the smallest "before",
        // the largest of the others.
        let least = |f: fn(&Hold) -> Option<u64>| holds.iter().filter_map(|h| f(h)).min();
        let most = |f: fn(&Hold) -> Option<u64>| holds.iter().filter_map(|h| f(h)).max();
        hold.rss_before_bytes = least(|h| h.rss_before_bytes);
        hold.rss_idle_bytes = most(|h| h.rss_idle_bytes);
        hold.rss_after_echo_bytes = most(|h| h.rss_after_echo_bytes);
        hold.rss_peak_before_bytes = most(|h| h.rss_peak_before_bytes);
        hold.rss_fresh_server = holds.iter().all(|h| h.rss_fresh_server);
        hold.anon_before_bytes = least(|h| h.anon_before_bytes);
        hold.anon_idle_bytes = most(|h| h.anon_idle_bytes);
        hold.anon_after_echo_bytes = most(|h| h.anon_after_echo_bytes);
        hold.server_processes_before = least(|h| h.server_processes_before);
        hold.server_processes_idle = most(|h| h.server_processes_idle);
        hold_per_connection(&mut m);
    }
    if let Some(connect) = m.connect.as_mut() {
        let connects = merged_histogram(runs, "connect.histogram", |r| {
            r.connect.as_ref().map(|c| &c.histogram)
        })?;
        let parts: Vec<&Connect> = runs
            .iter()
            .filter_map(|r| r.report.connect.as_ref())
            .collect();
        connect.completed = parts.iter().map(|c| c.completed).sum();
        connect.connections_per_sec = parts.iter().map(|c| c.connections_per_sec).sum();
        if let Some(h) = connects {
            connect.latency_us = percentiles(&h);
            connect.histogram = encode(&h);
        }
        // Machine-wide counters: runs on one machine each saw them all.
        connect.listen_overflows = parts.iter().filter_map(|c| c.listen_overflows).max();
        connect.listen_drops = parts.iter().filter_map(|c| c.listen_drops).max();
    }
    Ok(m)
}

/// The warning for runs against different targets, if they were.
pub fn targets_warning(runs: &[Run]) -> Option<String> {
    let target = |r: &Run| r.report.settings.addr.clone();
    let first = runs.first()?;
    let other = runs.iter().find(|r| target(r) != target(first))?;
    Some(format!(
        "bench merge: warning: {} ran against {}, {} against {}: the merged figures add up different targets",
        first.name,
        target(first),
        other.name,
        target(other)
    ))
}

/// What must be equal for runs to merge, and how it is named in a refusal
/// (as JSON, so any kind of value compares and prints).
type Pick = fn(&Report) -> Value;
const SAME: [(&str, Pick); 5] = [
    ("schema", |r| Value::from(r.schema)),
    ("scenario", |r| Value::from(r.scenario.clone())),
    ("message size", |r| Value::from(r.settings.size)),
    ("protocol", |r| Value::from(r.settings.protocol.clone())),
    ("loop", |r| {
        Value::from(if r.target_rate.is_none() {
            "closed"
        } else {
            "open (--rate)"
        })
    }),
];

/// The sum of one histogram (`name`, picked by `pick`) of every run.
/// `Ok(None)` when the first run has none there (an optional one, like the
/// uncorrected latency of a closed-loop run); refused when the first has
/// one and another not.
fn merged_histogram(
    runs: &[Run],
    name: &str,
    pick: fn(&Report) -> Option<&String>,
) -> Result<Option<Histogram<u64>>, String> {
    let optional = name != "histogram";
    let mut merged: Option<Histogram<u64>> = None;
    for (index, run) in runs.iter().enumerate() {
        // (A report read without one has it empty.)
        let Some(text) = pick(&run.report).filter(|t| !t.is_empty()) else {
            if optional && index == 0 {
                return Ok(None);
            }
            return Err(format!(
                "bench merge: {} has no `{name}` (a report of an older bench, or not a bench report): without it percentiles cannot be merged exactly",
                run.name
            ));
        };
        let histogram =
            decode(text).map_err(|e| format!("bench merge: {}: `{name}` is {e}", run.name))?;
        match merged.as_mut() {
            None => {
                let mut first = histogram;
                // Room for any later run's largest sample.
                first.auto(true);
                merged = Some(first);
            }
            Some(total) => {
                if (total.sigfig(), total.low()) != (histogram.sigfig(), histogram.low()) {
                    return Err(format!(
                        "bench merge: {} records latency to {} significant digits from {}, {} to {} from {}: their sum would not be exact",
                        runs[0].name,
                        total.sigfig(),
                        total.low(),
                        run.name,
                        histogram.sigfig(),
                        histogram.low()
                    ));
                }
                total
                    .add(&histogram)
                    .map_err(|e| format!("bench merge: {}: {e:?}", run.name))?;
            }
        }
    }
    Ok(merged)
}

/// The server's figures: the largest any run saw, when the runs that know
/// the server's pid all name the same one (several servers cannot be
/// summed into one); otherwise unknown. CPU per message over `messages`
/// (0: none).
fn merged_server(runs: &[Run], messages: u64) -> Server {
    let servers: Vec<&Server> = runs.iter().map(|r| &r.report.server).collect();
    let pids: Vec<u32> = servers.iter().filter_map(|s| s.pid).collect();
    let Some(&pid) = pids.first() else {
        return Server::default();
    };
    if pids.iter().any(|&p| p != pid) {
        return Server::default();
    }
    let cpu = servers.iter().filter_map(|s| s.cpu_s).reduce(f64::max);
    let peak = servers
        .iter()
        .filter(|s| s.rss_peak_bytes.is_some())
        .max_by_key(|s| s.rss_peak_bytes);
    Server {
        pid: Some(pid),
        cpu_s: cpu,
        rss_bytes: servers.iter().filter_map(|s| s.rss_bytes).max(),
        rss_peak_bytes: peak.and_then(|s| s.rss_peak_bytes),
        rss_peak_source: Some(peak.and_then(|s| s.rss_peak_source.clone().flatten())),
        cpu_us_per_msg: cpu
            .filter(|_| messages > 0)
            .map(|cpu| cpu * 1e6 / messages as f64),
        ..Server::default()
    }
}

/// Read one report from a file (the one JSON object `bench --json`
/// prints); a report of another schema is refused, naming it.
pub fn read_report(path: &std::path::Path) -> io::Result<Report> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("read {}: {e}", path.display())))?;
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    // The version first, so an older report is named as one, not as
    // whatever of its shape the types do not take.
    #[derive(serde::Deserialize)]
    struct Version {
        schema: Option<u64>,
    }
    let version: Version = serde_json::from_str(&text)
        .map_err(|e| invalid(format!("{}: not a bench JSON report ({e})", path.display())))?;
    if version.schema != Some(SCHEMA) {
        // Schema 1 mixed the connect failures by reason into `errors`.
        return Err(invalid(format!(
            "{}: a report of schema {}; this echo-reactor reads schema {SCHEMA} (run that bench again with it)",
            path.display(),
            version.schema.map_or_else(|| "?".to_string(), |n| n.to_string())
        )));
    }
    serde_json::from_str(&text)
        .map_err(|e| invalid(format!("{}: not a bench JSON report ({e})", path.display())))
}

/// `echo-reactor bench merge FILE... [--json]`: print the merged report.
/// Like a run, its exit code is non-zero when the merged runs had errors.
pub fn run_merge(args: &MergeArgs) -> io::Result<()> {
    let mut runs = Vec::with_capacity(args.files.len());
    for path in &args.files {
        runs.push(Run {
            name: path.display().to_string(),
            report: read_report(path)?,
        });
    }
    let merged = merge(&runs).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    if let Some(warning) = targets_warning(&runs) {
        eprintln!("echo-reactor: {warning}");
    }
    let mut merged = merged;
    merged.merged_from = Some(runs.iter().map(|r| r.name.clone()).collect());
    merged.settings.json = args.json;
    if args.json {
        super::write_json(&merged)?;
    } else {
        super::summary::print_human(&merged);
    }
    super::fail_on_errors(&merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::latency::new_histogram;

    fn report(samples: &[u64], scenario: &str) -> Report {
        let mut h = new_histogram();
        for &s in samples {
            h.record(s).unwrap();
        }
        let mut r = Report {
            schema: SCHEMA,
            scenario: scenario.into(),
            duration_s: 1.0,
            messages: samples.len() as u64,
            msgs_per_sec: samples.len() as f64,
            histogram: encode(&h),
            ..Report::default()
        };
        r.settings.size = 64;
        r.settings.protocol = "echo".into();
        r.settings.connections = 2;
        r.connections.requested = 2;
        r.connections.achieved = 2;
        r.errors.mismatch = 1;
        r.client.cpu_s = 0.5;
        r
    }

    fn run(name: &str, report: Report) -> Run {
        Run {
            name: name.into(),
            report,
        }
    }

    #[test]
    fn the_merged_connect_time_is_the_slowest_run_s_and_the_rate_is_over_it() {
        let timed = |secs: f64, achieved: u64| {
            let mut r = report(&[10], "hold");
            r.connections.achieved = achieved;
            r.connections.connect_s = Some(secs);
            r.connections.connect_timeout_s = Some(115.0);
            r
        };
        let m = merge(&[run("a", timed(2.0, 300)), run("b", timed(4.0, 500))]).unwrap();
        assert_eq!(m.connections.connect_s, Some(4.0));
        assert_eq!(m.connections.connects_per_sec, Some(200.0));
        assert_eq!(m.connections.connect_timeout_s, Some(115.0));
    }

    #[test]
    fn merged_counts_add_up_and_the_histogram_holds_every_sample() {
        let a = report(&[10, 20, 30], "echo");
        let b = report(&[40, 50_000], "echo");
        let m = merge(&[run("a", a), run("b", b)]).unwrap();
        assert_eq!(m.messages, 5);
        assert_eq!(m.msgs_per_sec, 5.0);
        assert_eq!(m.connections.achieved, 4);
        assert_eq!(m.settings.connections, 4);
        assert_eq!(m.errors.mismatch, 2);
        assert_eq!(m.client.cpu_s, 1.0);
        assert_eq!(m.processes, 2);
        let h = decode(&m.histogram).unwrap();
        assert_eq!(h.len(), 5);
        assert_eq!(m.latency_us.max, Some(h.max()));
    }

    #[test]
    fn a_merged_flood_was_behind_the_measured_clients_only_if_every_run_s_was() {
        let flooded = |sched_idle: Option<bool>| {
            let mut r = report(&[10], "flood");
            r.flood = Some(Flood {
                connections: 100,
                bytes_sent: 1_000,
                sched_idle,
                ..Flood::default()
            });
            r
        };
        let merged = |a, b| {
            let m = merge(&[run("a", flooded(a)), run("b", flooded(b))]).unwrap();
            let flood = m.flood.unwrap();
            assert_eq!((flood.connections, flood.bytes_sent), (200, 2_000));
            flood.sched_idle
        };
        assert_eq!(merged(Some(true), Some(true)), Some(true));
        assert_eq!(merged(Some(true), Some(false)), Some(false));
        assert_eq!(merged(Some(false), Some(true)), Some(false));
        // A report from before the field: unknown, not "behind".
        assert_eq!(merged(Some(true), None), None);
    }

    #[test]
    fn runs_of_different_scenarios_or_sizes_are_refused_by_name() {
        let refusal = merge(&[
            run("a.json", report(&[1], "echo")),
            run("b.json", report(&[1], "hold")),
        ])
        .unwrap_err();
        assert!(
            refusal.contains("a.json") && refusal.contains("b.json"),
            "{refusal}"
        );
        assert!(refusal.contains("scenario"), "{refusal}");
        let mut bigger = report(&[1], "echo");
        bigger.settings.size = 128;
        let refusal = merge(&[run("a", report(&[1], "echo")), run("b", bigger)]).unwrap_err();
        assert!(refusal.contains("message size 64"), "{refusal}");
        let mut bare = report(&[1], "echo");
        bare.histogram.clear();
        let refusal = merge(&[run("a", report(&[1], "echo")), run("b", bare)]).unwrap_err();
        assert!(refusal.contains("no `histogram`"), "{refusal}");
    }

    #[test]
    fn sweeps_are_refused_and_other_targets_named() {
        let mut sweep = report(&[1], "echo");
        sweep.steps = Some(Vec::new());
        let refusal =
            merge(&[run("a.json", report(&[1], "echo")), run("s.json", sweep)]).unwrap_err();
        assert!(refusal.contains("s.json is a sweep"), "{refusal}");
        let mut here = report(&[1], "echo");
        here.settings.addr = "127.0.0.1:7000".into();
        let mut elsewhere = here.clone();
        let same = [run("a", here.clone()), run("b", here.clone())];
        assert_eq!(targets_warning(&same), None);
        elsewhere.settings.addr = "127.0.0.2:7000".into();
        let warning = targets_warning(&[run("a", here), run("b", elsewhere)]).unwrap();
        assert!(warning.contains("127.0.0.2:7000"), "{warning}");
    }

    #[test]
    fn histograms_of_different_precision_are_refused() {
        let coarse = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
        let mut other = report(&[1], "echo");
        other.histogram = encode(&coarse);
        let refusal = merge(&[run("a", report(&[1], "echo")), run("b", other)]).unwrap_err();
        assert!(refusal.contains("significant digits"), "{refusal}");
    }

    #[test]
    fn the_server_is_the_largest_seen_when_every_run_names_the_same_pid() {
        let mut a = report(&[1], "echo");
        let mut b = report(&[1], "echo");
        (a.server.pid, a.server.cpu_s, a.server.rss_bytes) = (Some(7), Some(1.0), Some(100));
        (b.server.pid, b.server.cpu_s, b.server.rss_bytes) = (Some(7), Some(1.5), Some(90));
        let m = merge(&[run("a", a.clone()), run("b", b.clone())]).unwrap();
        assert_eq!((m.server.cpu_s, m.server.rss_bytes), (Some(1.5), Some(100)));
        b.server.pid = Some(8);
        let m = merge(&[run("a", a), run("b", b)]).unwrap();
        assert_eq!(m.server.cpu_s, None);
    }
}
