//! The open loop (`bench --rate`) at its edges: past saturation every
//! intended message is accounted for, memory stays flat whatever the rate,
//! what cannot be scheduled is refused up front, and the generator's own
//! send lateness is reported beside the latencies it affects.
//!
//! No test here asserts a speed: figures (how late, how fast) are in
//! docs/BENCHMARKS.md, "Open loop"; these assert structure and accounting.

mod support;

use std::process::{Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use serde_json::Value;
use support::{bench, bench_command, slow_server};

fn report(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn histogram(text: &Value) -> Histogram<u64> {
    let bytes = STANDARD
        .decode(text.as_str().expect("a histogram"))
        .unwrap();
    Deserializer::new().deserialize(&mut &bytes[..]).unwrap()
}

/// Every message intended in the window is in the corrected histogram
/// (answered, or at its lower bound if never sent) or counted as an error.
fn assert_every_intended_message_is_accounted(r: &Value) {
    let intended = r["open_loop"]["intended"].as_u64().expect("intended");
    let recorded = histogram(&r["histogram"]).len();
    let errors = &r["errors"];
    let lost = errors["timeout"].as_u64().unwrap() + errors["mismatch"].as_u64().unwrap();
    assert_eq!(recorded + lost, intended, "{}", r["open_loop"]);
}

#[test]
fn past_saturation_every_intended_message_is_accounted_and_the_run_says_saturated() {
    // 2000 msgs/s asked of a server that can do 200: most are never sent.
    let addr = slow_server(64).to_string();
    let args = [
        "--addr",
        &addr,
        "--connections",
        "2",
        "--rate",
        "2000",
        "--duration",
        "1",
        "--warmup",
        "0",
    ];
    let r = report(&bench(&[&args[..], &["--json"]].concat()));
    assert_eq!(r["open_loop"]["intended"], 2000, "rate x duration");
    assert_every_intended_message_is_accounted(&r);
    let unsent = r["open_loop"]["unsent"].as_u64().unwrap();
    assert!(unsent > 1000, "{}", r["open_loop"]);
    assert_eq!(r["saturated"], true);
    assert!(r["achieved_ratio"].as_f64().unwrap() < 0.5, "{r}");
    // The unsent are the latest in the window, not its early part: the
    // corrected latencies cover the whole window, so the largest is close
    // to it (the first message never sent waited most of the run).
    let max_us = r["latency_us"]["max"].as_u64().unwrap();
    assert!(max_us >= 500_000, "max {max_us} us over a 1 s window");

    let out = bench(&args);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("SATURATED"), "{text}");
    assert!(text.contains("intended messages never sent"), "{text}");
}

/// The bench's peak memory (VmHWM) while it runs, read from /proc until it exits.
fn run_watching_peak_memory(args: &[&str]) -> (Output, u64) {
    let mut child = bench_command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let give_up = Instant::now() + Duration::from_secs(120);
    let mut peak_kib = 0;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > give_up {
            child.kill().unwrap();
            panic!("bench {args:?} still running after 120 s (peak {peak_kib} KiB)");
        }
        let status = std::fs::read_to_string(&status_file).unwrap_or_default();
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        peak_kib = peak_kib.max(hwm.unwrap_or(0));
        thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), peak_kib * 1024)
}

#[test]
fn a_rate_no_server_can_meet_runs_in_bounded_memory_and_accounts_every_message() {
    // 1e8 msgs/s: one entry per missed slot would be gigabytes.
    let args = [
        "--json",
        "--connections",
        "10",
        "--rate",
        "1e8",
        "--duration",
        "1",
        "--warmup",
        "0",
    ];
    let (out, peak) = run_watching_peak_memory(&args);
    let r = report(&out);
    assert!(peak < 64 << 20, "the bench peaked at {peak} bytes");
    assert_eq!(r["open_loop"]["intended"], 100_000_000u64);
    assert_every_intended_message_is_accounted(&r);
    assert_eq!(r["saturated"], true);
}

#[test]
fn what_cannot_be_scheduled_or_held_is_refused_up_front_with_the_reason() {
    for (args, reason) in [
        (&["--rate", "1e30"][..], "cannot be scheduled"),
        (&["--rate", "inf"][..], "positive number"),
        (&["--rate", "1e-12"][..], "days between messages"),
        (&["--pipeline", "100000000"][..], "GiB of buffers"),
        (&["--size", "4GiB"][..], "GiB of buffers"),
        (
            &["--connections", "1", "--size", "3GiB"][..],
            "GiB of buffers",
        ),
    ] {
        // Against a port where nothing listens, and bounded: a bench that
        // does not refuse fails to connect, or is stopped (today's grew to
        // gigabytes on these settings and ran on).
        let args = [args, &["--addr", "127.0.0.1:1"]].concat();
        let mut child = bench_command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let give_up = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() && Instant::now() < give_up {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing ran");
    }
}

#[test]
fn the_generators_own_send_lateness_is_reported_beside_the_latencies() {
    // A low rate against an idle server: what separates the corrected
    // latency from the uncorrected one is the generator's lateness alone.
    let args = [
        "--connections",
        "10",
        "--rate",
        "100",
        "--duration",
        "1",
        "--warmup",
        "0",
    ];
    let r = report(&bench(&[&args[..], &["--json"]].concat()));
    assert_every_intended_message_is_accounted(&r);
    assert_eq!(r["saturated"], false, "{r}");
    let late = &r["send_lateness_us"];
    let sends = late["sends"].as_u64().unwrap();
    assert!(
        (1..=100).contains(&sends),
        "sends on schedule, of the 100 intended: {late}"
    );
    let (p50, p99, max) = (
        late["p50"].as_f64().unwrap(),
        late["p99"].as_f64().unwrap(),
        late["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{late}");
    // Each message's corrected latency is its lateness plus its
    // uncorrected latency, so no send was later than the worst corrected
    // latency (allowing the histograms' 0.1 % buckets and 1 µs units).
    let corrected_max = r["latency_us"]["max"].as_f64().unwrap();
    assert!(
        max <= corrected_max * 1.002 + 1.0,
        "{late} vs {}",
        r["latency_us"]
    );
    let lateness = histogram(&r["histogram_send_lateness"]);
    assert_eq!(lateness.len(), sends);

    let out = bench(&args);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("sends late by p50"), "{text}");
}
