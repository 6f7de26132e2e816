//! The human summary of a run: the report in words, one line per part
//! (what ran, throughput, latency, the open loop, connects, flood, hold,
//! errors, the load generator's and the server's CPU and memory).

use std::fmt::Write;

use serde_json::Value;

use super::failures::describe;

/// The human summary of a single run (a sweep prints its table instead).
pub(super) fn print_human(r: &Value) {
    print!("{}", summary_text(r));
}

/// [`print_human`]'s text.
pub(super) fn summary_text(r: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", header_line(r));
    if r["interrupted"] == true {
        let _ =
            writeln!(out,
            "  interrupted  by {} after {:.1} s measured: the figures below cover that part only",
            r["interrupted_by"].as_str().unwrap_or("a signal"),
            r["duration_s"].as_f64().unwrap_or(0.0)
        );
    }
    let processes = r["processes"].as_u64().unwrap_or(1);
    if processes > 1 && r["merged_from"].is_null() {
        let _ = writeln!(out, "  processes    {processes} load generators, each with its share of the connections, merged");
    }
    if let Some(files) = r["merged_from"].as_array() {
        let names: Vec<&str> = files.iter().filter_map(Value::as_str).collect();
        let _ = writeln!(out, "  merged from  {}", names.join(", "));
    }
    if let Some(addrs) = r["source_addrs"].as_array().filter(|a| !a.is_empty()) {
        let names: Vec<&str> = addrs.iter().filter_map(Value::as_str).collect();
        let _ = writeln!(
            out,
            "  sources      {}{}",
            names.join(", "),
            if r["source_addrs_automatic"] == true {
                " (chosen: one address has too few ephemeral ports)"
            } else {
                ""
            }
        );
    }
    if r["scenario"] == "echo" || r["scenario"] == "flood" {
        let _ = writeln!(
            out,
            "  throughput   {} messages, {:.1} msgs/s achieved, {:.2} MB/s",
            r["messages"],
            r["msgs_per_sec"].as_f64().unwrap_or(0.0),
            r["bytes_per_sec"].as_f64().unwrap_or(0.0) / 1e6
        );
        let corrected = if r["target_rate"].is_null() {
            ""
        } else {
            "  (from intended send time)"
        };
        let _ = writeln!(
            out,
            "  latency us   {}{corrected}",
            percentiles_text(&r["latency_us"])
        );
        let u = &r["latency_uncorrected_us"];
        if !u.is_null() {
            // Replies came, but none to a message intended in the window:
            // the generator was still sending ones overdue from before it.
            let text = if u["p50"].is_null() && r["messages"].as_u64().unwrap_or(0) > 0 {
                "n/a (no message intended in the measured window was answered: \
                 the replies measured were to overdue ones)"
                    .to_string()
            } else {
                percentiles_text(u)
            };
            let _ = writeln!(out, "  uncorrected  {text}  (from actual send time)");
        }
        if let Some(line) = open_loop_lines(r) {
            let _ = writeln!(out, "{line}");
        }
    }
    if let Some(c) = r.get("connect") {
        let l = &c["latency_us"];
        let latency = if l["p50"].is_null() {
            "latency n/a (none completed)".to_string()
        } else {
            format!(
                "latency us p50 {} p99 {} max {}",
                l["p50"], l["p99"], l["max"]
            )
        };
        let _ = writeln!(
            out,
            "  connects     {} completed, {:.0} connections/s, {latency}",
            c["completed"],
            c["connections_per_sec"].as_f64().unwrap_or(0.0),
        );
        let counter = |v: &Value| v.as_u64().map_or("n/a".to_string(), |n| n.to_string());
        let _ = writeln!(out,
            "  listen queue overflows {} drops {} over the run, counted for the whole network namespace (every listener in it, not only the target; a remote target's are not seen){}",
            counter(&c["listen_overflows"]),
            counter(&c["listen_drops"]),
            if c["listen_overflows"].is_null() { " (n/a: /proc/net/netstat unreadable)" } else { "" },
        );
    }
    if let Some(f) = r.get("flood") {
        let _ = writeln!(out,
            "  flood        {}/{} flooders sent {} (at most {} each, never reading); {} sent it all, {} closed by the server, {} failed to connect, {} other failures (none of it is an error)",
            f["connections"],
            f["requested"],
            bytes_text(&f["bytes_sent"]),
            bytes_text(&f["bytes_each"]),
            f["finished"],
            f["closed_by_server"],
            f["connect_failed"],
            f["failed"],
        );
        let k = &r["kernel"];
        let _ = writeln!(out,
            "  kernel       TCP socket memory peaked at {}, machine-wide (buffers trimmed past {}, refused at {})",
            bytes_text(&k["tcp_mem_peak_bytes"]),
            bytes_text(&k["tcp_mem_pressure_bytes"]),
            bytes_text(&k["tcp_mem_high_bytes"]),
        );
    }
    if let Some(h) = r.get("hold") {
        let _ = writeln!(
            out,
            "  latency us   {}  (the one echo per connection after the hold)",
            percentiles_text(&r["latency_us"])
        );
        let _ = writeln!(out, "{}", hold_line(h));
    }
    let _ = writeln!(out, "  errors       {}", errors_text(r));
    let _ = writeln!(
        out,
        "  client       cpu {:.3} s{}",
        r["client"]["cpu_s"].as_f64().unwrap_or(0.0),
        r["client"]["cpu_us_per_msg"]
            .as_f64()
            .map(|v| format!(" ({v:.2} us/msg)"))
            .unwrap_or_default()
    );
    let sv = &r["server"];
    if !sv["pid"].is_null() {
        let _ = writeln!(
            out,
            "  server       pid {}  cpu {}{}  rss {}{}{}",
            sv["pid"],
            sv["cpu_s"]
                .as_f64()
                .map(|v| format!("{v:.3} s"))
                .unwrap_or_else(|| "n/a (not readable)".into()),
            sv["cpu_us_per_msg"]
                .as_f64()
                .map(|v| format!(" ({v:.2} us/msg)"))
                .unwrap_or_default(),
            bytes_text(&sv["rss_bytes"]),
            if sv["rss_peak_bytes"].is_null() {
                String::new()
            } else {
                format!(
                    "  peak rss {} ({})",
                    bytes_text(&sv["rss_peak_bytes"]),
                    sv["rss_peak_source"].as_str().unwrap_or("?")
                )
            },
            sv["syscalls_per_msg"]
                .as_f64()
                .map(|v| format!("  syscalls/msg {v:.3}"))
                .unwrap_or_default(),
        );
    }
    out
}

/// The open loop's lines of the human summary: achieved against requested
/// (and "SATURATED"), what was never sent, and the generator's lateness.
fn open_loop_lines(r: &Value) -> Option<String> {
    let ratio = r["achieved_ratio"].as_f64()?;
    let o = &r["open_loop"];
    let mut text = format!(
        "  rate         {:.1} of {} msgs/s requested achieved ({:.1} %){}",
        r["msgs_per_sec"].as_f64().unwrap_or(0.0),
        r["target_rate"],
        ratio * 100.0,
        if r["saturated"] == true {
            ": SATURATED"
        } else {
            ""
        }
    );
    if o["unsent"].as_u64().unwrap_or(0) > 0 {
        text += &format!(
            "\n  unsent       {} of {} intended messages never sent (in the latency above at end - intended time, a lower bound)",
            o["unsent"], o["intended"]
        );
    }
    let l = &r["send_lateness_us"];
    if l["p50"].is_null() {
        // Every send in the window was of an overdue message: there is no
        // on-time send to measure the generator's lateness by.
        text += "\n  generator    no send was on schedule in the measured window (every one was overdue): its lateness is not measured";
        return Some(text);
    }
    let us = |v: &Value| v.as_f64().map_or("?".to_string(), |v| format!("{v:.1}"));
    text += &format!(
        "\n  generator    sends late by p50 {} us  p99 {} us  max {} us  ({} sends on schedule; actual - intended send time: the generator's own error)",
        us(&l["p50"]),
        us(&l["p99"]),
        us(&l["max"]),
        l["sends"]
    );
    Some(text)
}

/// The summary's first line: what ran. Message settings only where
/// messages are sent (not for `connect`).
fn header_line(r: &Value) -> String {
    let s = &r["settings"];
    let scenario = r["scenario"].as_str().unwrap_or("?");
    let connections = format!(
        "{}/{}",
        r["connections"]["achieved"], r["connections"]["requested"]
    );
    let common = format!(
        "{} s measured, {} thread(s), target {}",
        s["duration_s"],
        s["threads"],
        s["addr"].as_str().unwrap_or("?"),
    );
    match scenario {
        "connect" => format!(
            "scenario connect: {connections} concurrent connect slots achieved (each completed at least one connection), {common}"
        ),
        "hold" => format!(
            "scenario hold: {connections} connections held, {} B message once each after the hold, {common}",
            s["size"]
        ),
        _ => format!(
            "scenario {scenario}: {connections} connections, {} B messages, pipeline {}, {}, {} (+{} s warmup)",
            s["size"],
            s["pipeline"],
            if r["target_rate"].is_null() {
                "closed loop".to_string()
            } else {
                format!("open loop at {} msgs/s requested", r["target_rate"])
            },
            common,
            s["warmup_s"],
        ),
    }
}

/// `p50 .. max` of a latency object, or why there are none.
fn percentiles_text(l: &Value) -> String {
    if l["p50"].is_null() {
        return "n/a (no reply was measured)".into();
    }
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        l["p50"], l["p90"], l["p99"], l["p999"], l["max"]
    )
}

/// The hold scenario's summary line. Bytes per connection are averages
/// (the JSON keeps the fraction); printed whole, since `83.968 B` reads
/// like a thousands separator. When the figure cannot be trusted, the
/// reason instead (see `merge::hold_per_connection`).
fn hold_line(h: &Value) -> String {
    let measured = "growth of the server's RSS since before connecting, per connection";
    let per_conn = match (
        h["rss_per_conn_idle_bytes"].as_f64(),
        h["rss_per_conn_after_echo_bytes"].as_f64(),
    ) {
        (Some(idle), Some(after)) => {
            format!("idle {idle:.0} B, after one echo each {after:.0} B ({measured})")
        }
        _ => format!(
            "unknown: {} ({measured})",
            h["rss_per_conn_unknown"].as_str().unwrap_or("not measured")
        ),
    };
    format!(
        "  hold         {} answered after the hold; server memory per connection {per_conn}",
        h["answered"]
    )
}

/// A byte count for the human summary: KiB below 1 MiB, MiB below 1 GiB,
/// else GiB ("n/a" when unknown).
fn bytes_text(bytes: &Value) -> String {
    let Some(v) = bytes.as_u64() else {
        return "n/a".into();
    };
    match v as f64 {
        v if v < 1048576.0 => format!("{:.0} KiB", v / 1024.0),
        v if v < 1073741824.0 => format!("{:.1} MiB", v / 1048576.0),
        v => format!("{:.2} GiB", v / 1073741824.0),
    }
}

/// A report's errors in words (no JSON), the connect failures by their
/// reason: `connect 2 (2 refused (...)), reset 1`.
pub(super) fn errors_text(report: &Value) -> String {
    let (errors, connect_failures) = (&report["errors"], &report["connect_failures"]);
    let count = |k: &str| errors[k].as_u64().unwrap_or(0);
    let mut parts = Vec::new();
    if count("connect") > 0 {
        let reasons = describe(connect_failures);
        parts.push(if reasons.is_empty() {
            format!("connect {}", count("connect"))
        } else {
            format!("connect {} ({reasons})", count("connect"))
        });
    }
    for (key, words) in [
        ("mismatch", "mismatch (a wrong reply)"),
        ("reset", "reset (closed by the server)"),
        (
            "server_closed",
            "server_closed (closed cleanly by the server mid-run, e.g. draining)",
        ),
        ("timeout", "timeout (replies missing at the end)"),
    ] {
        if count(key) > 0 {
            parts.push(format!("{words} {}", count(key)));
        }
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An open-loop report far past what the generator can send: replies
    /// came, none to a message intended in the window, no send on time.
    fn overdue_open_loop() -> Value {
        json!({
            "scenario": "echo", "connections": {"requested": 50, "achieved": 50},
            "settings": {"addr": "127.0.0.1:7", "size": 64, "pipeline": 1, "threads": 1,
                         "duration_s": 2.0, "warmup_s": 1.0},
            "messages": 186373, "msgs_per_sec": 93186.5, "bytes_per_sec": 0.0,
            "target_rate": 1e9, "achieved_ratio": 0.0001, "saturated": true,
            "latency_us": {"p50": 1, "p90": 2, "p99": 3, "p999": 4, "max": 5},
            "latency_uncorrected_us": {"p50": null, "p90": null, "p99": null, "p999": null, "max": null},
            "open_loop": {"intended": 2000000000u64, "unsent": 1999813627u64},
            "send_lateness_us": {"p50": null, "p99": null, "max": null, "sends": 0},
            "errors": {}, "client": {}, "server": {},
        })
    }

    #[test]
    fn an_overdue_open_loop_says_why_its_figures_are_missing() {
        let text = summary_text(&overdue_open_loop());
        assert!(!text.contains('?'), "{text}");
        assert!(!text.contains("no reply was measured"), "{text}");
        assert!(text.contains("were to overdue ones"), "{text}");
        assert!(text.contains("no send was on schedule"), "{text}");
    }

    #[test]
    fn the_hold_summary_gives_the_echo_latency_after_the_hold() {
        let r = json!({
            "scenario": "hold", "settings": {}, "connections": {},
            "latency_us": {"p50": 11, "p90": 12, "p99": 13, "p999": 14, "max": 15},
            "hold": {"answered": 2, "rss_per_conn_unknown": "no server pid"},
            "errors": {}, "client": {}, "server": {},
        });
        let text = summary_text(&r);
        assert!(
            text.contains("p50 11  p90 12  p99 13  p99.9 14  max 15"),
            "{text}"
        );
    }

    #[test]
    fn bytes_per_connection_print_whole_or_say_why_not() {
        let line = hold_line(&json!({
            "answered": 2000,
            "rss_per_conn_idle_bytes": 83.968,
            "rss_per_conn_after_echo_bytes": 1234.4,
        }));
        assert!(
            line.contains("idle 84 B, after one echo each 1234 B"),
            "{line}"
        );
        let line = hold_line(&json!({"answered": 0, "rss_per_conn_unknown": "no server pid"}));
        assert!(line.contains("unknown: no server pid"), "{line}");
        assert!(!line.contains("null"), "{line}");
    }
}
