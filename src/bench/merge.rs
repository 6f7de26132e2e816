//! Combining runs: the histogram in the JSON report, `bench merge`, and the
//! merge behind `--processes`.
//!
//! A report carries its latency HdrHistogram itself (key `histogram`:
//! HdrHistogram's V2 compressed serialization, base64). Adding histograms
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
use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::Args;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::percentiles;
use super::schema::Report;

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

/// A histogram as the JSON report carries it: V2 compressed, base64.
pub fn encode(histogram: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(histogram, &mut bytes)
        .expect("serializing into memory cannot fail");
    STANDARD.encode(bytes)
}

/// The histogram of a report's `histogram` (or `histogram_uncorrected`) text.
pub fn decode(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| format!("not base64 ({e})"))?;
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| format!("not an HdrHistogram V2 serialization ({e:?})"))
}

/// One run's report and the name that identifies it in messages.
#[derive(Debug, Clone)]
pub struct Run {
    /// A file name, or "load generator 2 of 4".
    pub name: String,
    /// Its JSON report.
    pub report: Value,
}

/// The report's version (written by every run, checked by [`read_report`]):
/// 2 since `errors` holds counts only (their sum is the number of failed
/// connections) and the connect failures by OS reason have their own key,
/// `connect_failures`.
pub const SCHEMA: u64 = 2;

/// Merge the reports of runs of one scenario (see the module header).
pub fn merge(runs: &[Run]) -> Result<Value, String> {
    let Some((first, rest)) = runs.split_first() else {
        return Err("bench merge: nothing to merge".into());
    };
    if let Some(sweep) = runs.iter().find(|r| r.report.get("steps").is_some()) {
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
    let latency = merged_histogram(runs, "/histogram")?.ok_or("bench merge: no histogram")?;
    let uncorrected = merged_histogram(runs, "/histogram_uncorrected")?;
    let mut m = first.report.clone();
    if let Some(fields) = m.as_object_mut() {
        // The first run's own list of its processes is not the merged one's.
        fields.remove("load_generators");
    }
    let messages = sum_u64(runs, "/messages");

    // Every process of every run, and the settings that are shares of a
    // total (each run's share of the connections, threads, rate, flooders).
    let processes = |r: &Run| r.report["processes"].as_u64().unwrap_or(1);
    m["processes"] = json!(runs.iter().map(processes).sum::<u64>());
    m["settings"]["processes"] = m["processes"].clone();
    for key in ["connections", "threads"] {
        m["settings"][key] = json!(sum_u64(runs, &format!("/settings/{key}")));
    }
    if !first.report["settings"]["flooders"].is_null() {
        m["settings"]["flooders"] = json!(sum_u64(runs, "/settings/flooders"));
    }
    if !first.report["settings"]["rate"].is_null() {
        m["settings"]["rate"] = json!(sum_f64(runs, "/settings/rate"));
    }
    for path in ["/connections/requested", "/connections/achieved"] {
        set(&mut m, path, json!(sum_u64(runs, path)));
    }
    m["duration_s"] = json!(runs
        .iter()
        .filter_map(|r| r.report["duration_s"].as_f64())
        .fold(0.0, f64::max));
    m["messages"] = json!(messages);
    m["msgs_per_sec"] = json!(sum_f64(runs, "/msgs_per_sec"));
    m["bytes_per_sec"] = json!(sum_f64(runs, "/bytes_per_sec"));
    if !first.report["target_rate"].is_null() {
        m["target_rate"] = json!(sum_f64(runs, "/target_rate"));
    }
    m["histogram"] = json!(encode(&latency));
    m["latency_us"] = percentiles(&latency);
    match uncorrected {
        Some(h) => {
            m["histogram_uncorrected"] = json!(encode(&h));
            m["latency_uncorrected_us"] = percentiles(&h);
        }
        None => {
            m["histogram_uncorrected"] = Value::Null;
            m["latency_uncorrected_us"] = Value::Null;
        }
    }
    if first.report.get("open_loop").is_some() {
        for key in ["intended", "unsent"] {
            let path = format!("/open_loop/{key}");
            set(&mut m, &path, json!(sum_u64(runs, &path)));
        }
        // Achieved against requested from the summed rates; the
        // generators' send lateness from their merged histograms (ns).
        let lateness = merged_histogram(runs, "/histogram_send_lateness")?;
        let lateness = lateness.unwrap_or_else(crate::bench::latency::new_histogram_ns);
        m["histogram_send_lateness"] = json!(encode(&lateness));
        super::fill_open_loop(&mut m, &lateness);
    }
    let mut errors = serde_json::Map::new();
    for run in runs {
        if let Some(each) = run.report["errors"].as_object() {
            add_counts(&mut errors, each);
        }
    }
    m["errors"] = Value::Object(errors);
    let mut failures = serde_json::Map::new();
    for run in runs {
        if let Some(each) = run.report["connect_failures"].as_object() {
            add_counts(&mut failures, each);
        }
    }
    m["connect_failures"] = Value::Object(failures);
    let client_cpu = sum_f64(runs, "/client/cpu_s");
    m["client"] = json!({"cpu_s": client_cpu});
    // Per message only where a run reports it (not for hold and connect).
    let per_message = messages > 0 && first.report["client"].get("cpu_us_per_msg").is_some();
    if per_message {
        m["client"]["cpu_us_per_msg"] = json!(client_cpu * 1e6 / messages as f64);
    }
    m["server"] = merged_server(runs, if per_message { messages } else { 0 });
    if first.report.get("kernel").is_some() {
        set(
            &mut m,
            "/kernel/tcp_mem_peak_bytes",
            json!(max_u64(runs, "/kernel/tcp_mem_peak_bytes")),
        );
    }
    if first.report.get("flood").is_some() {
        for key in [
            "requested",
            "connections",
            "connect_failed",
            "bytes_sent",
            "finished",
            "closed_by_server",
            "failed",
        ] {
            let path = format!("/flood/{key}");
            set(&mut m, &path, json!(sum_u64(runs, &path)));
        }
    }
    if first.report.get("hold").is_some() {
        set(
            &mut m,
            "/hold/answered",
            json!(sum_u64(runs, "/hold/answered")),
        );
        // The server's memory before any run connected, and with every
        // run's connections (the runs overlap): the smallest "before",
        // the largest of the others.
        set(
            &mut m,
            "/hold/rss_before_bytes",
            json!(min_u64(runs, "/hold/rss_before_bytes")),
        );
        for key in ["rss_idle_bytes", "rss_after_echo_bytes"] {
            let path = format!("/hold/{key}");
            set(&mut m, &path, json!(max_u64(runs, &path)));
        }
        set(
            &mut m,
            "/hold/rss_peak_before_bytes",
            json!(max_u64(runs, "/hold/rss_peak_before_bytes")),
        );
        let fresh = runs
            .iter()
            .all(|r| r.report["hold"]["rss_fresh_server"] == true);
        m["hold"]["rss_fresh_server"] = json!(fresh);
        hold_per_connection(&mut m);
    }
    if first.report.get("connect").is_some() {
        let connects = merged_histogram(runs, "/connect/histogram")?;
        set(
            &mut m,
            "/connect/completed",
            json!(sum_u64(runs, "/connect/completed")),
        );
        set(
            &mut m,
            "/connect/connections_per_sec",
            json!(sum_f64(runs, "/connect/connections_per_sec")),
        );
        if let Some(h) = connects {
            set(&mut m, "/connect/latency_us", percentiles(&h));
            set(&mut m, "/connect/histogram", json!(encode(&h)));
        }
        // Machine-wide counters: runs on one machine each saw them all.
        for key in ["listen_overflows", "listen_drops"] {
            let path = format!("/connect/{key}");
            set(&mut m, &path, json!(max_u64(runs, &path)));
        }
    }
    Ok(m)
}

/// The warning for runs against different targets, if they were.
pub fn targets_warning(runs: &[Run]) -> Option<String> {
    let target = |r: &Run| {
        r.report["settings"]["addr"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    };
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

/// What must be equal for runs to merge, and how it is named in a refusal.
type Pick = fn(&Value) -> Value;
const SAME: [(&str, Pick); 5] = [
    ("schema", |r| r["schema"].clone()),
    ("scenario", |r| r["scenario"].clone()),
    ("message size", |r| r["settings"]["size"].clone()),
    ("protocol", |r| r["settings"]["protocol"].clone()),
    ("loop", |r| {
        json!(if r["target_rate"].is_null() {
            "closed"
        } else {
            "open (--rate)"
        })
    }),
];

/// The sum of the histograms at `path` in every run. `Ok(None)` when the
/// first run has none there (an optional one, like the uncorrected latency
/// of a closed-loop run); refused when the first has one and another not.
fn merged_histogram(runs: &[Run], path: &str) -> Result<Option<Histogram<u64>>, String> {
    let optional = path != "/histogram";
    let mut merged: Option<Histogram<u64>> = None;
    for (index, run) in runs.iter().enumerate() {
        // (A report read without one has it empty.)
        let text = run.report.pointer(path).and_then(Value::as_str);
        let text = text.filter(|t| !t.is_empty());
        let Some(text) = text else {
            if optional && index == 0 {
                return Ok(None);
            }
            return Err(format!(
                "bench merge: {} has no `{}` (a report of an older bench, or not a bench report): without it percentiles cannot be merged exactly",
                run.name,
                &path[1..]
            ));
        };
        let histogram = decode(text)
            .map_err(|e| format!("bench merge: {}: `{}` is {e}", run.name, &path[1..]))?;
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
fn merged_server(runs: &[Run], messages: u64) -> Value {
    let pids: Vec<u64> = runs
        .iter()
        .filter_map(|r| r.report["server"]["pid"].as_u64())
        .collect();
    let unknown = json!({"pid": null, "cpu_s": null, "rss_bytes": null, "rss_peak_bytes": null});
    let Some(&pid) = pids.first() else {
        return unknown;
    };
    if pids.iter().any(|&p| p != pid) {
        return unknown;
    }
    let cpu = runs
        .iter()
        .filter_map(|r| r.report["server"]["cpu_s"].as_f64())
        .reduce(f64::max);
    let peak = runs
        .iter()
        .map(|r| &r.report["server"])
        .filter(|s| s["rss_peak_bytes"].is_u64())
        .max_by_key(|s| s["rss_peak_bytes"].as_u64());
    let mut server = json!({
        "pid": pid,
        "cpu_s": cpu,
        "rss_bytes": max_u64(runs, "/server/rss_bytes"),
        "rss_peak_bytes": peak.map(|s| s["rss_peak_bytes"].clone()),
        "rss_peak_source": peak.map(|s| s["rss_peak_source"].clone()),
    });
    if let (Some(cpu), true) = (cpu, messages > 0) {
        server["cpu_us_per_msg"] = json!(cpu * 1e6 / messages as f64);
    }
    server
}

/// Sum `more`'s counts into `into`, key by key (nested objects likewise);
/// text (an OS reason) is kept from the first run that has it.
pub(super) fn add_counts(
    into: &mut serde_json::Map<String, Value>,
    more: &serde_json::Map<String, Value>,
) {
    for (key, value) in more {
        match value {
            Value::Object(inner) => {
                let slot = into
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(serde_json::Map::new()));
                if let Value::Object(slot) = slot {
                    add_counts(slot, inner);
                }
            }
            Value::String(_) => {
                into.entry(key.clone()).or_insert_with(|| value.clone());
            }
            _ => {
                let total = into.get(key).and_then(Value::as_u64).unwrap_or(0);
                into.insert(key.clone(), json!(total + value.as_u64().unwrap_or(0)));
            }
        }
    }
}

/// Recompute the hold scenario's server memory per connection from its
/// (merged) before / idle / after figures and the achieved connections.
///
/// What it measures: the growth of the server's resident memory (its
/// user-space memory, `VmRSS`; socket buffers are kernel memory and not in
/// it) from before the first connection to after, divided by the
/// connections held. It is only a figure per connection for a server that
/// starts from nothing: one that ran before reuses memory it freed (the
/// allocator keeps it), so its RSS need not grow at all. So the figure is
/// given only for a server started for this run (`rss_fresh_server`: the
/// bench's child, or `--server-fresh`), whose peak RSS before the run was
/// its RSS (else it ran already) and whose RSS grew; otherwise it is
/// `null`, and `rss_per_conn_unknown` says why.
pub(super) fn hold_per_connection(report: &mut Value) {
    // A fresh server's peak RSS is its RSS, give or take start-up
    // allocations freed; past this, it held more before (a run's worth).
    const RAN_BEFORE_SLACK_BYTES: u64 = 256 * 1024;
    let connected = report["connections"]["achieved"].as_u64().unwrap_or(0);
    let before = report["hold"]["rss_before_bytes"].as_u64();
    let fresh = report["hold"]["rss_fresh_server"]
        .as_bool()
        .unwrap_or(false);
    let idle = report["hold"]["rss_idle_bytes"].as_u64();
    let peak_before = report["hold"]["rss_peak_before_bytes"].as_u64();
    let unknown = match (before, idle) {
        _ if report["server"]["pid"].is_null() => {
            Some("no server pid (give --server-pid, or let the bench start the server)".to_string())
        }
        (None, _) | (_, None) => Some("the server's memory could not be read".to_string()),
        _ if connected == 0 => Some("no connection was held".to_string()),
        _ if !fresh => Some(
            "the server was not started by this bench: memory it freed earlier (say, in an \
             earlier run) is reused, so its growth understates; run without --addr, or start \
             a server for the run and say so with --server-fresh"
                .to_string(),
        ),
        (Some(before), _)
            if peak_before.is_some_and(|peak| peak > before + RAN_BEFORE_SLACK_BYTES) =>
        {
            Some(format!(
                "the server held more memory before this run (peak {} bytes, now {before}): \
                 it ran already, and reuses memory it freed",
                peak_before.unwrap_or(0)
            ))
        }
        (Some(before), Some(idle)) if idle <= before => Some(format!(
            "the server's RSS did not grow ({before} -> {idle} bytes): it reused memory it held before"
        )),
        _ => None,
    };
    for (figure, per_conn) in [
        ("rss_idle_bytes", "rss_per_conn_idle_bytes"),
        ("rss_after_echo_bytes", "rss_per_conn_after_echo_bytes"),
    ] {
        let value = match (before, report["hold"][figure].as_u64(), &unknown) {
            (Some(before), Some(after), None) => {
                json!(after.saturating_sub(before) as f64 / connected as f64)
            }
            _ => Value::Null,
        };
        report["hold"][per_conn] = value;
    }
    report["hold"]["rss_per_conn_unknown"] = json!(unknown);
}

fn set(report: &mut Value, path: &str, value: Value) {
    if let Some(slot) = report.pointer_mut(path) {
        *slot = value;
    }
}

fn sum_u64(runs: &[Run], path: &str) -> u64 {
    runs.iter()
        .filter_map(|r| r.report.pointer(path).and_then(Value::as_u64))
        .sum()
}

fn sum_f64(runs: &[Run], path: &str) -> f64 {
    runs.iter()
        .filter_map(|r| r.report.pointer(path).and_then(Value::as_f64))
        .sum()
}

fn max_u64(runs: &[Run], path: &str) -> Option<u64> {
    runs.iter()
        .filter_map(|r| r.report.pointer(path).and_then(Value::as_u64))
        .max()
}

fn min_u64(runs: &[Run], path: &str) -> Option<u64> {
    runs.iter()
        .filter_map(|r| r.report.pointer(path).and_then(Value::as_u64))
        .min()
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
            // (Merged as JSON, for now: see the module header.)
            report: serde_json::to_value(read_report(path)?).map_err(io::Error::other)?,
        });
    }
    let merged = merge(&runs).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    if let Some(warning) = targets_warning(&runs) {
        eprintln!("echo-reactor: {warning}");
    }
    let mut merged = super::typed(merged)?;
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

    #[test]
    fn hold_memory_per_connection_is_given_only_when_it_can_be_trusted() {
        let hold = |fresh: bool, peak_before: u64, idle: u64| {
            let mut r = json!({
                "connections": {"achieved": 100},
                "server": {"pid": 42},
                "hold": {
                    "rss_before_bytes": 4_000_000, "rss_peak_before_bytes": peak_before,
                    "rss_idle_bytes": idle, "rss_after_echo_bytes": idle,
                    "rss_fresh_server": fresh,
                },
            });
            hold_per_connection(&mut r);
            r["hold"].clone()
        };
        let trusted = hold(true, 4_000_000, 4_010_000);
        assert_eq!(trusted["rss_per_conn_idle_bytes"], 100.0);
        assert!(trusted["rss_per_conn_unknown"].is_null());
        for (h, why) in [
            (
                hold(false, 4_000_000, 4_010_000),
                "not started by this bench",
            ),
            (hold(true, 9_000_000, 4_010_000), "held more memory before"),
            (hold(true, 4_000_000, 4_000_000), "did not grow"),
        ] {
            assert!(h["rss_per_conn_idle_bytes"].is_null(), "{h}");
            let text = h["rss_per_conn_unknown"].as_str().unwrap();
            assert!(text.contains(why), "{text}");
        }
    }
    use crate::bench::latency::new_histogram;

    fn report(samples: &[u64], scenario: &str) -> Value {
        let mut h = new_histogram();
        for &s in samples {
            h.record(s).unwrap();
        }
        json!({
            "schema": 2, "scenario": scenario,
            "settings": {"size": 64, "protocol": "echo", "connections": 2},
            "connections": {"requested": 2, "achieved": 2},
            "duration_s": 1.0, "messages": samples.len(), "msgs_per_sec": samples.len() as f64,
            "bytes_per_sec": 0.0, "target_rate": null,
            "histogram": encode(&h), "histogram_uncorrected": null,
            "errors": {"connect": 0, "mismatch": 1, "reset": 0, "timeout": 0},
            "client": {"cpu_s": 0.5}, "server": {"pid": null},
        })
    }

    fn run(name: &str, report: Value) -> Run {
        Run {
            name: name.into(),
            report,
        }
    }

    #[test]
    fn a_histogram_survives_encoding() {
        let mut h = new_histogram();
        for v in [1, 7, 1000, 123_456, 3_000_000] {
            h.record(v).unwrap();
        }
        assert_eq!(decode(&encode(&h)).unwrap(), h);
        assert!(decode("not base64!").unwrap_err().contains("base64"));
        assert!(decode("aGVsbG8=").unwrap_err().contains("HdrHistogram"));
    }

    #[test]
    fn merged_counts_add_up_and_the_histogram_holds_every_sample() {
        let a = report(&[10, 20, 30], "echo");
        let b = report(&[40, 50_000], "echo");
        let m = merge(&[run("a", a), run("b", b)]).unwrap();
        assert_eq!(m["messages"], 5);
        assert_eq!(m["msgs_per_sec"], 5.0);
        assert_eq!(m["connections"]["achieved"], 4);
        assert_eq!(m["settings"]["connections"], 4);
        assert_eq!(m["errors"]["mismatch"], 2);
        assert_eq!(m["client"]["cpu_s"], 1.0);
        assert_eq!(m["processes"], 2);
        let h = decode(m["histogram"].as_str().unwrap()).unwrap();
        assert_eq!(h.len(), 5);
        assert_eq!(m["latency_us"]["max"], h.max());
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
        bigger["settings"]["size"] = json!(128);
        let refusal = merge(&[run("a", report(&[1], "echo")), run("b", bigger)]).unwrap_err();
        assert!(refusal.contains("message size 64"), "{refusal}");
        let mut bare = report(&[1], "echo");
        bare.as_object_mut().unwrap().remove("histogram");
        let refusal = merge(&[run("a", report(&[1], "echo")), run("b", bare)]).unwrap_err();
        assert!(refusal.contains("no `histogram`"), "{refusal}");
    }

    #[test]
    fn sweeps_are_refused_and_other_targets_named() {
        let mut sweep = report(&[1], "echo");
        sweep["steps"] = json!([]);
        let refusal =
            merge(&[run("a.json", report(&[1], "echo")), run("s.json", sweep)]).unwrap_err();
        assert!(refusal.contains("s.json is a sweep"), "{refusal}");
        let mut here = report(&[1], "echo");
        here["settings"]["addr"] = json!("127.0.0.1:7000");
        let mut elsewhere = here.clone();
        let same = [run("a", here.clone()), run("b", here.clone())];
        assert_eq!(targets_warning(&same), None);
        elsewhere["settings"]["addr"] = json!("127.0.0.2:7000");
        let warning = targets_warning(&[run("a", here), run("b", elsewhere)]).unwrap();
        assert!(warning.contains("127.0.0.2:7000"), "{warning}");
    }

    #[test]
    fn histograms_of_different_precision_are_refused() {
        let coarse = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
        let mut other = report(&[1], "echo");
        other["histogram"] = json!(encode(&coarse));
        let refusal = merge(&[run("a", report(&[1], "echo")), run("b", other)]).unwrap_err();
        assert!(refusal.contains("significant digits"), "{refusal}");
    }

    #[test]
    fn the_server_is_the_largest_seen_when_every_run_names_the_same_pid() {
        let mut a = report(&[1], "echo");
        let mut b = report(&[1], "echo");
        a["server"] = json!({"pid": 7, "cpu_s": 1.0, "rss_bytes": 100});
        b["server"] = json!({"pid": 7, "cpu_s": 1.5, "rss_bytes": 90});
        let m = merge(&[run("a", a.clone()), run("b", b.clone())]).unwrap();
        assert_eq!(
            (&m["server"]["cpu_s"], &m["server"]["rss_bytes"]),
            (&json!(1.5), &json!(100))
        );
        b["server"]["pid"] = json!(8);
        let m = merge(&[run("a", a), run("b", b)]).unwrap();
        assert!(m["server"]["cpu_s"].is_null());
    }
}
