//! `echo-reactor bench` as a user runs it: against its own child server,
//! against servers written here to misbehave, and in every scenario.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use echo_reactor::protocol::Echo;
use echo_reactor::{CloseReason, Config};
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use support::{bench, slow_server, TestServer};

fn json_report(out: &Output) -> Value {
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "one JSON object on one line: {stdout}"
    );
    serde_json::from_str(&stdout).expect("valid JSON")
}

/// The JSON report of a run that must have succeeded.
fn successful_report(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_report(out)
}

fn process_exists(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn bench_against_its_child_server_reports_json_with_zero_errors_and_cleans_up() {
    let out = bench(&[
        "--json",
        "--connections",
        "20",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--pipeline",
        "2",
    ]);
    let r = successful_report(&out);
    assert_eq!(r["schema"], 2);
    assert_eq!(r["scenario"], "echo");
    for key in ["kernel", "cpus", "nofile_soft", "nofile_hard", "version"] {
        assert!(!r["environment"][key].is_null(), "environment.{key}");
    }
    assert_eq!(r["settings"]["pipeline"], 2);
    assert_eq!(r["connections"]["requested"], 20);
    assert_eq!(r["connections"]["achieved"], 20);
    assert!(r["messages"].as_u64().unwrap() > 0);
    assert!(r["msgs_per_sec"].as_f64().unwrap() > 0.0);
    for key in ["connect", "mismatch", "reset", "timeout"] {
        assert_eq!(r["errors"][key], 0, "errors.{key}");
    }
    let l = &r["latency_us"];
    let p: Vec<u64> = ["p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|k| l[k].as_u64().unwrap())
        .collect();
    assert!(
        p.windows(2).all(|w| w[0] <= w[1]),
        "percentiles out of order: {l}"
    );
    assert!(
        r["latency_uncorrected_us"].is_null(),
        "closed loop has no separate uncorrected figures"
    );
    let server = &r["server"];
    assert!(server["cpu_s"].as_f64().unwrap() > 0.0);
    assert!(server["rss_bytes"].as_u64().unwrap() > 0);
    assert!(server["syscalls_per_msg"].as_f64().unwrap() >= 1.0);
    let pid = server["pid"].as_u64().unwrap();
    assert!(
        !process_exists(pid),
        "the child server {pid} was left behind"
    );
}

/// An echo server that corrupts one byte of every 1000th `size`-byte reply.
fn faulty_server(size: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let count = count.clone();
            thread::spawn(move || {
                let mut msg = vec![0u8; size];
                while stream.read_exact(&mut msg).is_ok() {
                    if count.fetch_add(1, Ordering::Relaxed) % 1000 == 999 {
                        msg[size / 2] ^= 0x20;
                    }
                    if stream.write_all(&msg).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_server_that_corrupts_replies_is_caught_and_the_exit_code_says_so() {
    let addr = faulty_server(64).to_string();
    let out = bench(&[
        "--addr",
        &addr,
        "--json",
        "--connections",
        "4",
        "--duration",
        "1",
        "--warmup",
        "0",
    ]);
    assert!(!out.status.success());
    let r = json_report(&out);
    let mismatches = r["errors"]["mismatch"].as_u64().unwrap();
    let messages = r["messages"].as_u64().unwrap();
    assert!(mismatches > 0, "{r}");
    assert!(
        mismatches * 500 < messages + 1000,
        "about 1 in 1000: {mismatches} of {messages}"
    );
}

#[test]
fn a_refused_port_is_one_clear_line_and_a_failure() {
    let unused = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = bench(&["--addr", &unused, "--duration", "1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&unused) && stderr.contains("no connection"),
        "{stderr}"
    );
}

#[test]
fn settings_that_cannot_work_are_refused_before_the_run() {
    for args in [
        &["--size", "8"][..],
        &["--connections", "100000"][..],
        &["--threads", "5", "--connections", "4"][..],
        &["--rate", "0"][..],
        &["--scenario", "flood"][..],
        &["--flooders", "5"][..],
        &["--scenario", "flood", "--flooders", "100000"][..],
        // Too few connections for every thread of every process.
        &["--processes", "2", "--connections", "3", "--threads", "2"][..],
        // Each process is under the limit, but the child server is one process.
        &["--processes", "2", "--connections", "30000"][..],
        // Not an address of this machine (TEST-NET-1).
        &["--source-addrs", "192.0.2.1"][..],
        &["--source-addrs", "127.0.0.2", "--addr", "[::1]:7"][..],
    ] {
        let out = bench(args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing ran");
    }
}

fn open_loop_p50s(addr: &str, seconds: &str) -> (u64, u64) {
    let out = bench(&[
        "--addr",
        addr,
        "--json",
        "--connections",
        "2",
        "--rate",
        "2000",
        "--duration",
        seconds,
        "--warmup",
        "0",
    ]);
    let r = json_report(&out);
    assert_eq!(r["target_rate"], 2000.0);
    (
        r["latency_us"]["p50"].as_u64().unwrap(),
        r["latency_uncorrected_us"]["p50"].as_u64().unwrap(),
    )
}

#[test]
fn open_loop_latency_from_the_intended_time_grows_with_the_backlog_but_uncorrected_does_not() {
    // 2000 msgs/s asked of a server that can do 200: the queue grows all run.
    let addr = slow_server(64).to_string();
    let (short_corrected, short_uncorrected) = open_loop_p50s(&addr, "1");
    let (long_corrected, long_uncorrected) = open_loop_p50s(&addr, "3");
    assert!(
        long_corrected > 2 * short_corrected,
        "corrected p50 should grow with run time: {short_corrected} -> {long_corrected} us"
    );
    assert!(
        long_uncorrected < 2 * short_uncorrected,
        "uncorrected p50 hides the queue and stays flat: {short_uncorrected} -> {long_uncorrected} us"
    );
    assert!(
        long_corrected > 20 * long_uncorrected,
        "the hidden queueing is large"
    );
}

#[test]
fn hold_keeps_2000_connections_and_reports_server_memory_per_connection() {
    support::raise_limit_for_children();
    let out = bench(&[
        "--scenario",
        "hold",
        "--json",
        "--connections",
        "2000",
        "--duration",
        "1",
        "--threads",
        "2",
    ]);
    let r = successful_report(&out);
    assert_eq!(r["connections"]["achieved"], 2000);
    assert_eq!(
        r["hold"]["answered"], 2000,
        "every held connection answered"
    );
    assert!(
        r["hold"]["rss_per_conn_idle_bytes"].as_f64().is_some(),
        "{r}"
    );
    assert!(r["server"]["rss_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn connect_reports_connections_per_second() {
    let out = bench(&[
        "--scenario",
        "connect",
        "--json",
        "--connections",
        "4",
        "--duration",
        "1",
    ]);
    let r = successful_report(&out);
    assert!(
        r["connect"]["connections_per_sec"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    assert!(r["connect"]["latency_us"]["p50"].as_u64().is_some());
    assert!(r["connect"]["listen_overflows"].as_u64().is_some());
}

#[test]
fn messages_larger_than_the_socket_buffers_go_out_on_writable_edges() {
    // 8 MiB cannot be written at once: the load generator's write would
    // block, and only a writable event brings it back to send the rest
    // (the partial replies that arrive meanwhile complete no message).
    let out = bench(&[
        "--json",
        "--connections",
        "2",
        "--size",
        "8388608",
        "--duration",
        "1",
        "--warmup",
        "0",
    ]);
    let report = successful_report(&out);
    assert!(report["messages"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"]["timeout"], 0, "{report}");
}

// ---- flood ----

#[test]
fn a_flood_beside_measured_clients_is_reported_and_every_flooder_sends_its_bytes() {
    const FLOODERS: u64 = 20;
    const EACH: u64 = 256 * 1024;
    let out = bench(&[
        "--scenario",
        "flood",
        "--flooders",
        &FLOODERS.to_string(),
        "--flood-bytes",
        "256KiB",
        "--json",
        "--connections",
        "5",
        "--duration",
        "2",
        "--warmup",
        "0.2",
    ]);
    let r = successful_report(&out);
    assert_eq!(r["scenario"], "flood");
    assert_eq!(r["settings"]["flooders"], FLOODERS);
    let flood = &r["flood"];
    assert_eq!(flood["connections"], FLOODERS, "{flood}");
    // The child server buffers up to 1 MiB per connection and the kernel
    // more, so 256 KiB each all goes out; no more, since a flooder stops
    // at its budget.
    assert_eq!(flood["bytes_sent"], FLOODERS * EACH, "{flood}");
    assert_eq!(flood["finished"], FLOODERS, "{flood}");
    assert_eq!(flood["closed_by_server"], 0, "{flood}");
    // The flood thread ran behind the measured clients, and says so.
    assert_eq!(flood["sched_idle"], true, "{flood}");
    // The measured clients beside the flood: verified replies, no errors.
    assert_eq!(r["connections"]["achieved"], 5);
    assert!(r["messages"].as_u64().unwrap() > 0, "{r}");
    for key in ["connect", "mismatch", "reset", "timeout"] {
        assert_eq!(r["errors"][key], 0, "errors.{key}");
    }
    let server = &r["server"];
    assert!(server["rss_peak_bytes"].as_u64().unwrap() > 0, "{server}");
    assert!(server["rss_peak_source"].is_string(), "{server}");
    assert!(r["kernel"]["tcp_mem_peak_bytes"].as_u64().is_some(), "{r}");
    let pid = server["pid"].as_u64().unwrap();
    assert!(
        !process_exists(pid),
        "the child server {pid} was left behind"
    );
}

#[test]
fn flooders_the_server_closes_are_counted_and_do_not_fail_the_run() {
    // A server that closes connections whose output has not moved for
    // 0.2 s: every flooder, once the kernel's buffers and the server's
    // 64 KiB are full (about 8 MiB on loopback, far below the budget).
    // The flood thread runs under SCHED_IDLE, in the idle time of the
    // load's cores: the measured clients are an open loop at 100 msgs/s,
    // mostly asleep, so it gets that time even with a core kept busy
    // (closed-loop clients kept the cores busy, and the flood sent 70-88
    // MB in 2-6 s, too late for the 0.2 s stall to close all ten).
    let config = Config {
        max_buffered: 64 * 1024,
        stall_timeout: Some(Duration::from_millis(200)),
        ..Config::default()
    };
    let server = TestServer::start(config, Echo);
    let addr = server.addr.to_string();
    let out = bench(&[
        "--addr",
        &addr,
        "--scenario",
        "flood",
        "--flooders",
        "10",
        "--flood-bytes",
        "64MiB",
        "--json",
        "--connections",
        "5",
        "--rate",
        "100",
        "--duration",
        "4",
        "--warmup",
        "0",
    ]);
    let r = successful_report(&out);
    let flood = &r["flood"];
    assert_eq!(flood["connections"], 10, "{flood}");
    assert_eq!(flood["closed_by_server"], 10, "{flood}");
    assert_eq!(flood["finished"], 0, "{flood}");
    assert!(
        flood["bytes_sent"].as_u64().unwrap() > 10 * 64 * 1024,
        "{flood}"
    );
    for key in ["connect", "mismatch", "reset", "timeout"] {
        assert_eq!(r["errors"][key], 0, "errors.{key}");
    }
    assert!(r["messages"].as_u64().unwrap() > 0, "{r}");
    let stats = server.stop();
    assert!(
        stats.closed_by(CloseReason::Stalled) >= 10,
        "the server says it closed them: {stats}"
    );
}

#[test]
fn a_flooder_closed_after_sending_all_its_bytes_is_counted_too() {
    // 4 KiB each is all sent and echoed at once (the flooders' receive
    // buffers take the replies); then nothing moves, and a server with an
    // idle timeout closes them with a plain FIN while they sit silent.
    // Only the flooder's readable registration sees that FIN: it never
    // writes again.
    let config = Config {
        idle_timeout: Some(Duration::from_millis(300)),
        ..Config::default()
    };
    let server = TestServer::start(config, Echo);
    let addr = server.addr.to_string();
    let out = bench(&[
        "--addr",
        &addr,
        "--scenario",
        "flood",
        "--flooders",
        "10",
        "--flood-bytes",
        "4KiB",
        "--json",
        "--connections",
        "2",
        "--duration",
        "2",
        "--warmup",
        "0",
    ]);
    let r = successful_report(&out);
    let flood = &r["flood"];
    assert_eq!(flood["finished"], 10, "{flood}");
    assert_eq!(flood["bytes_sent"], 10 * 4096, "{flood}");
    assert_eq!(flood["closed_by_server"], 10, "{flood}");
    let stats = server.stop();
    assert!(stats.closed_by(CloseReason::Idle) >= 10, "{stats}");
}

// ---- merge, compare, processes, source addresses ----

fn samples_histogram(samples: &[u64]) -> Histogram<u64> {
    // The bench's own histogram: microseconds, up to an hour, 3 digits.
    let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    for &s in samples {
        h.record(s).unwrap();
    }
    h
}

fn encoded(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new().serialize(h, &mut bytes).unwrap();
    STANDARD.encode(bytes)
}

fn decoded(text: &Value) -> Histogram<u64> {
    let bytes = STANDARD
        .decode(text.as_str().expect("a histogram"))
        .unwrap();
    Deserializer::new().deserialize(&mut &bytes[..]).unwrap()
}

/// A report as `bench --json` writes it, holding `samples` as its latencies.
fn report_of(scenario: &str, size: u64, samples: &[u64]) -> Value {
    let h = samples_histogram(samples);
    json!({
        "schema": 2, "scenario": scenario,
        "settings": {"addr": "127.0.0.1:7000", "connections": 10, "size": size, "pipeline": 1,
                     "rate": null, "threads": 1, "protocol": "echo", "duration_s": 1.0},
        "processes": 1,
        "connections": {"requested": 10, "achieved": 10},
        "duration_s": 1.0, "messages": samples.len(), "msgs_per_sec": samples.len() as f64,
        "bytes_per_sec": (samples.len() as u64 * size) as f64, "target_rate": null,
        "latency_us": {"p50": h.value_at_quantile(0.5), "p90": h.value_at_quantile(0.9),
                       "p99": h.value_at_quantile(0.99), "p999": h.value_at_quantile(0.999),
                       "max": h.max()},
        "latency_uncorrected_us": null,
        "histogram": encoded(&h), "histogram_uncorrected": null,
        "errors": {"connect": 0, "mismatch": 0, "reset": 1, "timeout": 0},
        "client": {"cpu_s": 0.25, "cpu_us_per_msg": 1.0},
        "server": {"pid": null, "cpu_s": null, "rss_bytes": null, "rss_peak_bytes": null},
    })
}

/// A directory of one test's own for report files; removed when dropped.
#[test]
fn merge_and_compare_refuse_a_schema_1_report_in_one_line_naming_it() {
    let reports = Reports::new("schema-1");
    let mut old = report_of("echo", 64, &[100, 200]);
    old["schema"] = json!(1);
    let old = reports.write("old.json", &old);
    let new = reports.write("new.json", &report_of("echo", 64, &[100, 200]));
    for action in ["merge", "compare"] {
        let out = bench(&[action, &new, &old]);
        assert!(!out.status.success(), "{action}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{action}: {stderr}");
        assert!(
            stderr.contains("old.json: a report of schema 1"),
            "{action}: {stderr}"
        );
    }
}

struct Reports(std::path::PathBuf);

impl Reports {
    fn new(test: &str) -> Reports {
        let dir = std::env::temp_dir().join(format!("echo-reactor-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Reports(dir)
    }

    /// Write `value` as file `name`; its path.
    fn write(&self, name: &str, value: &Value) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, value.to_string()).unwrap();
        path.display().to_string()
    }
}

impl Drop for Reports {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic, spread-out latencies: a few fast, a long tail.
fn latencies(seed: u64, n: usize) -> Vec<u64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = x >> 33;
            match r % 100 {
                0 => 100_000 + r % 5_000_000, // the tail
                1..=9 => 1_000 + r % 50_000,
                _ => 20 + r % 900,
            }
        })
        .collect()
}

#[test]
fn two_runs_merged_are_the_histogram_of_every_sample_recorded_into_one() {
    let (a, b) = (latencies(1, 20_000), latencies(2, 7_000));
    let reports = Reports::new("merge-exact");
    let file_a = reports.write("a.json", &report_of("echo", 64, &a));
    let file_b = reports.write("b.json", &report_of("echo", 64, &b));
    let out = bench(&["merge", "--json", &file_a, &file_b]);
    // Like a run, a merge of runs that had errors (a reset in each) exits 1.
    assert_eq!(out.status.code(), Some(1));
    let merged = json_report(&out);

    let all: Vec<u64> = a.iter().chain(&b).copied().collect();
    let one = samples_histogram(&all);
    let h = decoded(&merged["histogram"]);
    // Every bucket holds the same count, so every percentile is the same.
    let counts = |h: &Histogram<u64>| {
        h.iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&h), counts(&one));
    for q in [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999, 1.0] {
        assert_eq!(h.value_at_quantile(q), one.value_at_quantile(q), "q {q}");
    }
    let l = &merged["latency_us"];
    assert_eq!(l["p50"], one.value_at_quantile(0.5));
    assert_eq!(l["p99"], one.value_at_quantile(0.99));
    assert_eq!(l["p999"], one.value_at_quantile(0.999));
    assert_eq!(l["max"], one.max());
    // Counts and rates add up; so do errors.
    assert_eq!(merged["messages"], all.len());
    assert_eq!(merged["msgs_per_sec"], all.len() as f64);
    assert_eq!(merged["connections"]["achieved"], 20);
    assert_eq!(merged["errors"]["reset"], 2);
    assert_eq!(merged["merged_from"], json!([file_a, file_b]));
}

#[test]
fn merging_runs_of_different_scenarios_or_sizes_is_refused_with_one_clear_line() {
    let reports = Reports::new("merge-refused");
    let echo = reports.write("echo.json", &report_of("echo", 64, &[10]));
    let hold = reports.write("hold.json", &report_of("hold", 64, &[10]));
    let big = reports.write("big.json", &report_of("echo", 512, &[10]));
    let mut bare = report_of("echo", 64, &[10]);
    bare.as_object_mut().unwrap().remove("histogram");
    let bare = reports.write("bare.json", &bare);
    for (other, says) in [
        (&hold, "scenario"),
        (&big, "message size"),
        (&bare, "no `histogram`"),
    ] {
        let out = bench(&["merge", &echo, other]);
        assert_eq!(out.status.code(), Some(1), "{other}");
        assert!(out.stdout.is_empty(), "nothing merged");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(says) && stderr.contains(other.as_str()),
            "{stderr}"
        );
    }
}

#[test]
fn bench_merge_combines_two_real_runs_exactly() {
    let reports = Reports::new("merge-real");
    let mut files = Vec::new();
    let mut runs = Vec::new();
    for name in ["first.json", "second.json"] {
        let out = bench(&[
            "--json",
            "--connections",
            "4",
            "--duration",
            "0.5",
            "--warmup",
            "0",
        ]);
        let r = successful_report(&out);
        // Each run carries its own histogram: one sample per measured message.
        assert_eq!(
            decoded(&r["histogram"]).len(),
            r["messages"].as_u64().unwrap()
        );
        files.push(reports.write(name, &r));
        runs.push(r);
    }
    let out = bench(&["merge", "--json", &files[0], &files[1]]);
    // Each run had its own child server: the merge says so.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the merged figures add up different targets"),
        "{stderr}"
    );
    let merged = successful_report(&out);
    let messages: u64 = runs.iter().map(|r| r["messages"].as_u64().unwrap()).sum();
    assert_eq!(merged["messages"], messages);
    assert_eq!(merged["connections"]["achieved"], 8);
    let mut one = decoded(&runs[0]["histogram"]);
    one.add(decoded(&runs[1]["histogram"])).unwrap();
    let h = decoded(&merged["histogram"]);
    assert_eq!(h, one);
    assert_eq!(h.len(), messages);
    assert_eq!(merged["latency_us"]["p99"], one.value_at_quantile(0.99));
    // The human form says where it came from.
    let text = String::from_utf8(bench(&["merge", &files[0], &files[1]]).stdout).unwrap();
    assert!(
        text.contains("merged from") && text.contains("8/8 connections"),
        "{text}"
    );
}

#[test]
fn compare_prints_each_figure_with_its_ratio() {
    let mut base = report_of("echo", 64, &[100; 10]);
    let mut new = report_of("echo", 64, &[50; 10]);
    base["msgs_per_sec"] = json!(1000.0);
    new["msgs_per_sec"] = json!(2500.0);
    new["settings"]["pipeline"] = json!(4);
    let reports = Reports::new("compare");
    let base = reports.write("base.json", &base);
    let new = reports.write("new.json", &new);
    let out = bench(&["compare", &base, &new]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let row = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in:\n{text}"))
            .split_whitespace()
            .last()
            .unwrap()
            .to_string()
    };
    assert_eq!(row("msgs/s"), "2.50x");
    assert_eq!(row("p99 us"), "0.50x");
    assert_eq!(row("max us"), "0.50x");
    assert!(
        text.contains("pipeline 1 -> 4"),
        "settings that differ: {text}"
    );
    let json = successful_report(&bench(&["compare", "--json", &base, &new]));
    let msgs = json["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["figure"] == "msgs_per_sec")
        .unwrap();
    assert_eq!(msgs["ratio"], 2.5);
}

#[test]
fn two_processes_share_40_connections_and_their_reports_merge() {
    let server = TestServer::start(Config::default(), Echo);
    let addr = server.addr.to_string();
    let out = bench(&[
        "--addr",
        &addr,
        "--json",
        "--processes",
        "2",
        "--connections",
        "40",
        "--duration",
        "0.5",
        "--warmup",
        "0.1",
    ]);
    let r = successful_report(&out);
    assert_eq!(r["processes"], 2);
    assert_eq!(r["settings"]["processes"], 2);
    assert_eq!(r["connections"]["requested"], 40);
    assert_eq!(r["connections"]["achieved"], 40);
    for key in ["connect", "mismatch", "reset", "timeout"] {
        assert_eq!(r["errors"][key], 0, "errors.{key}");
    }
    let each = r["load_generators"].as_array().unwrap();
    assert_eq!(each.len(), 2);
    assert!(each.iter().all(|g| g["connections"] == 20), "{each:?}");
    let sum: u64 = each.iter().map(|g| g["messages"].as_u64().unwrap()).sum();
    assert!(sum > 0);
    assert_eq!(r["messages"], sum);
    assert_eq!(decoded(&r["histogram"]).len(), sum, "every sample of both");
    let stats = server.stop();
    assert_eq!(stats.accepted, 40, "{stats}");
    assert!(stats.bytes_out >= sum * 64, "{stats}");
}

/// What [`recording_echo_server`] saw.
#[derive(Default)]
struct Seen {
    /// Where each connection came from.
    peers: Mutex<Vec<IpAddr>>,
    /// Bytes echoed, all connections.
    bytes: AtomicU64,
    /// Connections the client has closed.
    closed: AtomicU64,
}

/// A thread-per-connection echo server that records what it sees.
fn recording_echo_server() -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let record = seen.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            record
                .peers
                .lock()
                .unwrap()
                .push(stream.peer_addr().unwrap().ip());
            let record = record.clone();
            thread::spawn(move || {
                let mut reader = stream.try_clone().unwrap();
                let copied = std::io::copy(&mut reader, &mut stream).unwrap_or(0);
                record.bytes.fetch_add(copied, Ordering::SeqCst);
                record.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, seen)
}

/// Wait until `condition` holds, or fail after a generous deadline.
fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// A child of `--processes` as its parent starts it: gated, stdin and stdout piped.
fn gated_child(addr: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
        .args(["bench", "--gated", "--json", "--addr", addr])
        .args(["--connections", "2", "--duration", "0.2", "--warmup", "0"])
        .env("RUST_LOG", "off")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn first_line(
    child: &mut std::process::Child,
) -> (String, std::io::BufReader<std::process::ChildStdout>) {
    use std::io::BufRead;
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    (line, stdout)
}

#[test]
fn a_gated_load_generator_sends_nothing_until_its_parent_says_go() {
    // Held at the gate, then let go by its parent: not one byte is sent.
    let (addr, seen) = recording_echo_server();
    let mut child = gated_child(&addr.to_string());
    let (line, _stdout) = first_line(&mut child);
    assert_eq!(line, "gate connected\n", "it says when it is connected");
    drop(child.stdin.take()); // the parent goes away
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("the parent bench went away"), "{stderr}");
    wait_until("both connections closed", || {
        seen.closed.load(Ordering::SeqCst) == 2
    });
    assert_eq!(
        seen.bytes.load(Ordering::SeqCst),
        0,
        "nothing sent before go"
    );

    // Held at the gate, then told to go: a normal run and its report.
    let (addr, seen) = recording_echo_server();
    let mut child = gated_child(&addr.to_string());
    let (line, mut stdout) = first_line(&mut child);
    assert_eq!(line, "gate connected\n");
    writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    let report: Value = serde_json::from_str(&rest).expect("the report follows the gate line");
    assert!(report["messages"].as_u64().unwrap() > 0, "{report}");
    wait_until("both connections closed", || {
        seen.closed.load(Ordering::SeqCst) == 2
    });
    assert!(seen.bytes.load(Ordering::SeqCst) > 0);
}

#[test]
fn connections_come_round_robin_from_the_source_addresses_given() {
    let (addr, seen) = recording_echo_server();
    let addr = addr.to_string();
    let out = bench(&[
        "--addr",
        &addr,
        "--json",
        "--processes",
        "2",
        "--source-addrs",
        "127.0.0.2,127.0.0.3",
        "--connections",
        "8",
        "--duration",
        "0.3",
        "--warmup",
        "0",
    ]);
    let r = successful_report(&out);
    assert_eq!(r["connections"]["achieved"], 8);
    assert_eq!(r["source_addrs"], json!(["127.0.0.2", "127.0.0.3"]));
    let peers = seen.peers.lock().unwrap().clone();
    let from = |last: u8| {
        let ip = IpAddr::from([127, 0, 0, last]);
        peers.iter().filter(|&&p| p == ip).count()
    };
    assert_eq!((from(2), from(3)), (4, 4), "peers seen: {peers:?}");
}

/// The report's text read into the typed schema and written back: the
/// same JSON, key for key (a key the types lack, or one they add, differs).
fn assert_typed_round_trip(what: &str, text: &str) {
    let raw: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}"));
    let typed: echo_reactor::bench::schema::Report =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(back, raw, "{what}: written back differs");
}

#[test]
fn every_kind_of_report_reads_into_the_typed_schema_and_back_unchanged() {
    let short = ["--json", "--duration", "0.3", "--warmup", "0"];
    let refused = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let refused = refused.to_string(); // (the listener is dropped: nothing listens)
    let runs: [(&str, Vec<&str>); 8] = [
        ("closed loop", vec!["--connections", "2"]),
        ("open loop", vec!["--connections", "2", "--rate", "200"]),
        (
            "connect",
            vec!["--scenario", "connect", "--connections", "2"],
        ),
        ("hold", vec!["--scenario", "hold", "--connections", "2"]),
        (
            "flood",
            vec![
                "--scenario",
                "flood",
                "--flooders",
                "1",
                "--connections",
                "2",
            ],
        ),
        ("sweep", vec!["--sweep", "100,200", "--connections", "2"]),
        ("processes", vec!["--processes", "2", "--connections", "2"]),
        ("refused", vec!["--addr", &refused, "--connections", "2"]),
    ];
    let reports = Reports::new("typed");
    let mut closed = None;
    for (what, args) in runs {
        let out = bench(&[&short[..], &args[..]].concat());
        let text = String::from_utf8(out.stdout).unwrap();
        assert_typed_round_trip(what, text.trim());
        if what == "closed loop" {
            closed = Some(reports.write("closed.json", &serde_json::from_str(&text).unwrap()));
        }
    }
    let closed = closed.unwrap();
    let out = bench(&["merge", "--json", &closed, &closed]);
    assert_typed_round_trip("merged", String::from_utf8(out.stdout).unwrap().trim());
}
