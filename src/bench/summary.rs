//! The human summary of a run: the report in words, one line per part
//! (what ran, throughput, latency, the open loop, connects, flood, hold,
//! errors, the load generator's and the server's CPU and memory).

use std::fmt::Write;

use super::failures::describe;
use super::schema::{Hold, Percentiles, Report};

/// The human summary of a single run (a sweep prints its table instead).
pub(super) fn print_human(r: &Report) {
    print!("{}", summary_text(r));
}

/// A number as the JSON report writes it (`1.0`, not `1`), so the summary
/// and the report read alike.
fn figure(v: f64) -> String {
    serde_json::Number::from_f64(v).map_or_else(|| v.to_string(), |n| n.to_string())
}

/// A count, or `null` when unknown (as the report writes it).
fn count_text(v: Option<u64>) -> String {
    v.map_or_else(|| "null".to_string(), |n| n.to_string())
}

/// [`print_human`]'s text.
pub(super) fn summary_text(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", header_line(r));
    if r.interrupted == Some(true) {
        let _ =
            writeln!(out,
            "  interrupted  by {} after {:.1} s measured: the figures below cover that part only",
            r.interrupted_by.as_deref().unwrap_or("a signal"),
            r.duration_s
        );
    }
    if r.processes > 1 && r.merged_from.is_none() {
        let _ = writeln!(
            out,
            "  processes    {} load generators, each with its share of the connections, merged",
            r.processes
        );
    }
    if let Some(files) = &r.merged_from {
        let _ = writeln!(out, "  merged from  {}", files.join(", "));
    }
    if !r.source_addrs.is_empty() {
        let _ = writeln!(
            out,
            "  sources      {}{}",
            r.source_addrs.join(", "),
            if r.source_addrs_automatic {
                " (chosen: one address has too few ephemeral ports)"
            } else {
                ""
            }
        );
    }
    if let Some(line) = connect_time_line(r) {
        let _ = writeln!(out, "{line}");
    }
    if r.scenario == "echo" || r.scenario == "flood" {
        let _ = writeln!(
            out,
            "  throughput   {} messages, {:.1} msgs/s achieved, {:.2} MB/s",
            r.messages,
            r.msgs_per_sec,
            r.bytes_per_sec / 1e6
        );
        let corrected = if r.target_rate.is_none() {
            ""
        } else {
            "  (from intended send time)"
        };
        let _ = writeln!(
            out,
            "  latency us   {}{corrected}",
            percentiles_text(&r.latency_us)
        );
        if let Some(u) = &r.latency_uncorrected_us {
            // Replies came, but none to a message intended in the window:
            // the generator was still sending ones overdue from before it.
            let text = if u.p50.is_none() && r.messages > 0 {
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
    if let Some(c) = &r.connect {
        let l = &c.latency_us;
        let latency = if l.p50.is_none() {
            "latency n/a (none completed)".to_string()
        } else {
            format!(
                "latency us p50 {} p99 {} max {}",
                count_text(l.p50),
                count_text(l.p99),
                count_text(l.max)
            )
        };
        let _ = writeln!(
            out,
            "  connects     {} completed, {:.0} connections/s, {latency}",
            c.completed, c.connections_per_sec,
        );
        let counter = |v: Option<u64>| v.map_or("n/a".to_string(), |n| n.to_string());
        let _ = writeln!(out,
            "  listen queue overflows {} drops {} over the run, counted for the whole network namespace (every listener in it, not only the target; a remote target's are not seen){}",
            counter(c.listen_overflows),
            counter(c.listen_drops),
            if c.listen_overflows.is_none() { " (n/a: /proc/net/netstat unreadable)" } else { "" },
        );
    }
    if let Some(f) = &r.flood {
        let _ = writeln!(out,
            "  flood        {}/{} flooders sent {} (at most {} each, never reading); {} sent it all, {} closed by the server, {} failed to connect, {} other failures (none of it is an error)",
            f.connections,
            count_text(f.requested),
            bytes_text(Some(f.bytes_sent)),
            bytes_text(Some(f.bytes_each)),
            f.finished,
            f.closed_by_server,
            f.connect_failed,
            f.failed,
        );
        if f.sched_idle == Some(false) {
            let _ = writeln!(out,
                "  flood        the flood thread could not run under SCHED_IDLE: it competed with the measured clients for the load core, whose latency includes that"
            );
        }
        let k = r.kernel.unwrap_or(super::schema::Kernel {
            tcp_mem_peak_bytes: None,
            tcp_mem_pressure_bytes: None,
            tcp_mem_high_bytes: None,
        });
        let _ = writeln!(out,
            "  kernel       TCP socket memory peaked at {}, machine-wide (buffers trimmed past {}, refused at {})",
            bytes_text(k.tcp_mem_peak_bytes),
            bytes_text(k.tcp_mem_pressure_bytes),
            bytes_text(k.tcp_mem_high_bytes),
        );
    }
    if let Some(h) = &r.hold {
        let _ = writeln!(
            out,
            "  latency us   {}  (the one echo per connection after the hold)",
            percentiles_text(&r.latency_us)
        );
        let _ = writeln!(out, "{}", hold_line(h));
    }
    let _ = writeln!(out, "  errors       {}", errors_text(r));
    let _ = writeln!(
        out,
        "  client       cpu {:.3} s{}",
        r.client.cpu_s,
        r.client
            .cpu_us_per_msg
            .map(|v| format!(" ({v:.2} us/msg)"))
            .unwrap_or_default()
    );
    let sv = &r.server;
    if let Some(pid) = sv.pid {
        let _ = writeln!(
            out,
            "  server       pid {pid}  cpu {}{}  rss {}{}{}",
            sv.cpu_s
                .map(|v| format!("{v:.3} s"))
                .unwrap_or_else(|| "n/a (not readable)".into()),
            sv.cpu_us_per_msg
                .map(|v| format!(" ({v:.2} us/msg)"))
                .unwrap_or_default(),
            bytes_text(sv.rss_bytes),
            match sv.rss_peak_bytes {
                None => String::new(),
                Some(peak) => format!(
                    "  peak rss {} ({})",
                    bytes_text(Some(peak)),
                    sv.rss_peak_source
                        .clone()
                        .flatten()
                        .as_deref()
                        .unwrap_or("?")
                ),
            },
            sv.syscalls_per_msg
                .flatten()
                .map(|v| format!("  syscalls/msg {v:.3}"))
                .unwrap_or_default(),
        );
    }
    out
}

/// How long the connections took to come up, their rate, and the deadline
/// they had (echo, hold, flood; not `connect`, which has its own line).
fn connect_time_line(r: &Report) -> Option<String> {
    let c = &r.connections;
    let secs = c.connect_s?;
    let rate = c
        .connects_per_sec
        .map_or_else(|| "n/a".to_string(), |v| format!("{v:.0}"));
    let deadline = c
        .connect_timeout_s
        .map_or_else(String::new, |t| format!("; deadline {} s", figure(t)));
    Some(format!(
        "  connected    {} in {secs:.2} s ({rate} connections/s{deadline})",
        c.achieved
    ))
}

/// The open loop's lines of the human summary: achieved against requested
/// (and "SATURATED"), what was never sent, and the generator's lateness.
fn open_loop_lines(r: &Report) -> Option<String> {
    let ratio = r.achieved_ratio?;
    let mut text = format!(
        "  rate         {:.1} of {} msgs/s requested achieved ({:.1} %){}",
        r.msgs_per_sec,
        r.target_rate.map_or_else(|| "null".to_string(), figure),
        ratio * 100.0,
        if r.saturated == Some(true) {
            ": SATURATED"
        } else {
            ""
        }
    );
    if let Some(o) = r.open_loop.filter(|o| o.unsent > 0) {
        text += &format!(
            "\n  unsent       {} of {} intended messages never sent (in the latency above at end - intended time, a lower bound)",
            o.unsent, o.intended
        );
    }
    let Some(l) = r.send_lateness_us.filter(|l| l.p50.is_some()) else {
        // Every send in the window was of an overdue message: there is no
        // on-time send to measure the generator's lateness by.
        text += "\n  generator    no send was on schedule in the measured window (every one was overdue): its lateness is not measured";
        return Some(text);
    };
    let us = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.1}"));
    text += &format!(
        "\n  generator    sends late by p50 {} us  p99 {} us  max {} us  ({} sends on schedule; actual - intended send time: the generator's own error)",
        us(l.p50),
        us(l.p99),
        us(l.max),
        l.sends
    );
    Some(text)
}

/// The summary's first line: what ran. Message settings only where
/// messages are sent (not for `connect`).
fn header_line(r: &Report) -> String {
    let s = &r.settings;
    let connections = format!("{}/{}", r.connections.achieved, r.connections.requested);
    let common = format!(
        "{} s measured, {} thread(s), target {}",
        figure(s.duration_s),
        s.threads,
        s.addr,
    );
    match r.scenario.as_str() {
        "connect" => format!(
            "scenario connect: {connections} concurrent connect slots achieved (each completed at least one connection), {common}"
        ),
        "hold" => format!(
            "scenario hold: {connections} connections held, {} B message once each after the hold, {common}",
            s.size
        ),
        scenario => format!(
            "scenario {scenario}: {connections} connections, {} B messages, pipeline {}, {}, {} (+{} s warmup)",
            s.size,
            s.pipeline,
            match r.target_rate {
                None => "closed loop".to_string(),
                Some(rate) => format!("open loop at {} msgs/s requested", figure(rate)),
            },
            common,
            figure(s.warmup_s),
        ),
    }
}

/// `p50 .. max` of a latency object, or why there are none.
fn percentiles_text(l: &Percentiles) -> String {
    if l.p50.is_none() {
        return "n/a (no reply was measured)".into();
    }
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        count_text(l.p50),
        count_text(l.p90),
        count_text(l.p99),
        count_text(l.p999),
        count_text(l.max)
    )
}

/// The hold scenario's summary line. Bytes per connection are averages
/// (the JSON keeps the fraction); printed whole, since `83.968 B` reads
/// like a thousands separator. When the figure cannot be trusted, the
/// reason instead (see `report::hold_per_connection`).
fn hold_line(h: &Hold) -> String {
    let measured = "growth of the server's RSS since before connecting, per connection";
    let per_conn = match (h.rss_per_conn_idle_bytes, h.rss_per_conn_after_echo_bytes) {
        (Some(idle), Some(after)) => {
            format!("idle {idle:.0} B, after one echo each {after:.0} B ({measured})")
        }
        _ => format!(
            "unknown: {} ({measured})",
            h.rss_per_conn_unknown.as_deref().unwrap_or("not measured")
        ),
    };
    format!(
        "  hold         {} answered after the hold; server memory per connection {per_conn}",
        h.answered
    )
}

/// A byte count for the human summary: KiB below 1 MiB, MiB below 1 GiB,
/// else GiB ("n/a" when unknown).
fn bytes_text(bytes: Option<u64>) -> String {
    let Some(v) = bytes else {
        return "n/a".into();
    };
    match v as f64 {
        v if v < 1048576.0 => format!("{:.0} KiB", v / 1024.0),
        v if v < 1073741824.0 => format!("{:.1} MiB", v / 1048576.0),
        v => format!("{:.2} GiB", v / 1073741824.0),
    }
}

/// A report's errors in words, the connect failures by their reason:
/// `connect 2 (2 refused (...)), reset 1`.
pub(super) fn errors_text(report: &Report) -> String {
    let e = &report.errors;
    let mut parts = Vec::new();
    if e.connect > 0 {
        let reasons = describe(&report.connect_failures);
        parts.push(if reasons.is_empty() {
            format!("connect {}", e.connect)
        } else {
            format!("connect {} ({reasons})", e.connect)
        });
    }
    for (count, words) in [
        (e.mismatch, "mismatch (a wrong reply)"),
        (e.reset, "reset (closed by the server)"),
        (
            e.server_closed,
            "server_closed (closed cleanly by the server mid-run, e.g. draining)",
        ),
        (e.timeout, "timeout (replies missing at the end)"),
    ] {
        if count > 0 {
            parts.push(format!("{words} {count}"));
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
    use crate::bench::schema::{OpenLoop, SendLateness};

    fn percentiles(p: [u64; 5]) -> Percentiles {
        Percentiles {
            p50: Some(p[0]),
            p90: Some(p[1]),
            p99: Some(p[2]),
            p999: Some(p[3]),
            max: Some(p[4]),
        }
    }

    /// An open-loop report far past what the generator can send: replies
    /// came, none to a message intended in the window, no send on time.
    fn overdue_open_loop() -> Report {
        let mut r = Report {
            scenario: "echo".into(),
            messages: 186373,
            msgs_per_sec: 93186.5,
            target_rate: Some(1e9),
            achieved_ratio: Some(0.0001),
            saturated: Some(true),
            latency_us: percentiles([1, 2, 3, 4, 5]),
            latency_uncorrected_us: Some(Percentiles::default()),
            open_loop: Some(OpenLoop {
                intended: 2_000_000_000,
                unsent: 1_999_813_627,
            }),
            send_lateness_us: Some(SendLateness::default()),
            ..Report::default()
        };
        r.settings.addr = "127.0.0.1:7".into();
        r.connections.requested = 50;
        r.connections.achieved = 50;
        r
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
        let r = Report {
            scenario: "hold".into(),
            latency_us: percentiles([11, 12, 13, 14, 15]),
            hold: Some(Hold {
                answered: 2,
                rss_per_conn_unknown: Some("no server pid".into()),
                ..Hold::default()
            }),
            ..Report::default()
        };
        let text = summary_text(&r);
        assert!(
            text.contains("p50 11  p90 12  p99 13  p99.9 14  max 15"),
            "{text}"
        );
    }

    #[test]
    fn bytes_per_connection_print_whole_or_say_why_not() {
        let line = hold_line(&Hold {
            answered: 2000,
            rss_per_conn_idle_bytes: Some(83.968),
            rss_per_conn_after_echo_bytes: Some(1234.4),
            ..Hold::default()
        });
        assert!(
            line.contains("idle 84 B, after one echo each 1234 B"),
            "{line}"
        );
        let line = hold_line(&Hold {
            rss_per_conn_unknown: Some("no server pid".into()),
            ..Hold::default()
        });
        assert!(line.contains("unknown: no server pid"), "{line}");
        assert!(!line.contains("null"), "{line}");
    }

    #[test]
    fn the_summary_says_how_fast_the_connections_came_up() {
        let mut r = overdue_open_loop();
        r.connections.connect_s = Some(2.5);
        r.connections.connects_per_sec = Some(20.0);
        r.connections.connect_timeout_s = Some(115.0);
        let text = summary_text(&r);
        assert!(
            text.contains("connected    50 in 2.50 s (20 connections/s; deadline 115.0 s)"),
            "{text}"
        );
    }

    #[test]
    fn figures_print_as_the_report_writes_them() {
        // 1e9 as the JSON has it, not Rust's `1000000000`; unknowns as n/a.
        let text = summary_text(&overdue_open_loop());
        assert!(text.contains("open loop at 1000000000.0 msgs/s"), "{text}");
        assert!(text.contains("of 1000000000.0 msgs/s requested"), "{text}");
    }
}
