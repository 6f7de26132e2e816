//! `echo-reactor bench` as a user runs it: against its own child server,
//! against servers written here to misbehave, and in every scenario.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use echo_reactor::protocol::Echo;
use echo_reactor::{CloseReason, Config};
use serde_json::Value;
use support::TestServer;

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
        .arg("bench")
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run echo-reactor bench")
}

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
    assert_eq!(r["schema"], 1);
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
    ] {
        let out = bench(args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing ran");
    }
}

/// An echo server that takes 10 ms per message: 100 msgs/s per connection.
fn slow_server(size: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            thread::spawn(move || {
                let mut msg = vec![0u8; size];
                while stream.read_exact(&mut msg).is_ok() {
                    thread::sleep(Duration::from_millis(10)); // deliberately slow
                    if stream.write_all(&msg).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
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
        "--duration",
        "2",
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
