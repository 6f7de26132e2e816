//! `echo-reactor bench` as a command-line tool at the edges: killed,
//! interrupted, watched while it runs, pointed at the wrong thing.
//! Each test runs the real binary and waits on real conditions.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use echo_reactor::protocol::Echo;
use echo_reactor::Config;
use serde_json::Value;
use support::TestServer;

const DEADLINE: Duration = Duration::from_secs(20);

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_echo-reactor"));
    command.arg("bench").args(args).env("RUST_LOG", "off");
    command
}

fn bench(args: &[&str]) -> Output {
    command(args).output().expect("run echo-reactor bench")
}

fn spawn(args: &[&str]) -> Child {
    command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start echo-reactor bench")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn report(out: &Output) -> Value {
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    serde_json::from_str(&stdout).expect("valid JSON")
}

/// Gone, or a zombie waiting to be reaped: either way, not running.
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// The child server of bench `pid`, once it runs `serve` (after exec).
fn child_server_of(pid: u32) -> u32 {
    let children =
        || std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let serving = |child: &str| {
        std::fs::read(format!("/proc/{child}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("serve"))
    };
    wait_until("the bench's child server", || {
        children().split_whitespace().any(serving)
    });
    let list = children();
    let child = list.split_whitespace().find(|c| serving(c)).unwrap();
    child.parse().unwrap()
}

/// Stderr lines as they come, on a channel (read on a thread of its own).
fn follow_stderr(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Read lines until one contains `needle`; all of them, in order.
fn lines_until(rx: &mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no line with {needle:?}; saw {seen:?}"));
        let found = line.contains(needle);
        seen.push(line);
        if found {
            return seen;
        }
    }
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: signals a process this test started.
    unsafe { libc::kill(pid as i32, signal) };
}

/// Wait for `child` with a deadline (killing it if it overruns), and collect its stdout.
fn finish(mut child: Child) -> (std::process::ExitStatus, String) {
    let mut stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the bench did not stop");
        }
        thread::sleep(Duration::from_millis(10));
    };
    (status, reader.join().unwrap())
}

fn echo_server() -> TestServer {
    TestServer::start(Config::default(), Echo)
}

/// A port that refuses connections for as long as the returned socket
/// lives: bound, never listening. A port merely bound and let go could be
/// handed to another test's server (`bind(0)`) while this one runs, and
/// the bench would then connect; this socket, bound without
/// `SO_REUSEADDR`, keeps every other bind off the port.
fn closed_port() -> (socket2::Socket, String) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    (socket, addr.to_string())
}

#[test]
fn killing_the_bench_takes_its_child_server_with_it() {
    let mut bench = spawn(&["--json", "--connections", "2", "--duration", "60"]);
    let server = child_server_of(bench.id());
    bench.kill().unwrap(); // SIGKILL: no handler, no clean-up code runs
    bench.wait().unwrap();
    let gone = Instant::now() + DEADLINE;
    while !is_dead(server) && Instant::now() < gone {
        thread::sleep(Duration::from_millis(10));
    }
    if !is_dead(server) {
        signal(server, libc::SIGKILL); // do not leave it behind either way
        panic!("the child server {server} outlived the bench");
    }
}

#[test]
fn ctrl_c_prints_the_partial_summary_then_exits_130() {
    for json in [true, false] {
        let mut args = vec!["--progress", "--connections", "4"];
        args.extend(["--duration", "60", "--warmup", "0"]);
        if json {
            args.push("--json");
        }
        let mut bench = spawn(&args);
        let server = child_server_of(bench.id());
        let stderr = follow_stderr(&mut bench);
        lines_until(&stderr, "measuring");
        signal(bench.id(), libc::SIGINT);
        let (status, stdout) = finish(bench);
        assert_eq!(status.code(), Some(130), "{stdout}");
        if json {
            let r: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
            assert_eq!(r["interrupted"], true, "{r}");
            assert_eq!(r["interrupted_by"], "SIGINT");
            assert!(r["messages"].as_u64().unwrap() > 0, "{r}");
            let secs = r["duration_s"].as_f64().unwrap();
            assert!(secs > 0.0 && secs < 60.0, "the part measured: {secs}");
            assert_eq!(
                r["errors"]["timeout"], 0,
                "in flight at the stop is no error"
            );
        } else {
            assert!(stdout.contains("interrupted  by SIGINT"), "{stdout}");
            assert!(stdout.contains("throughput"), "{stdout}");
        }
        wait_until("the child server to stop", || is_dead(server));
    }
}

/// The largest corrected latency of a report part, in seconds, against
/// the time it measured: a latency cannot be longer than the run (plus
/// the stop's own reaction time, a tenth of a second).
fn assert_latency_within_measured_time(part: &Value, secs: f64) {
    let max_s = part["latency_us"]["max"].as_f64().unwrap_or(0.0) / 1e6;
    assert!(
        max_s <= secs + 0.5,
        "max latency {max_s} s in {secs} s measured: {part}"
    );
}

#[test]
fn ctrl_c_in_an_open_loop_counts_only_what_was_intended_before_it() {
    let mut bench = spawn(&[
        "--json",
        "--progress",
        "--connections",
        "4",
        "--rate",
        "2000",
        "--duration",
        "60",
        "--warmup",
        "0",
    ]);
    let stderr = follow_stderr(&mut bench);
    lines_until(&stderr, "measuring");
    lines_until(&stderr, "measuring");
    signal(bench.id(), libc::SIGINT);
    let (status, stdout) = finish(bench);
    assert_eq!(status.code(), Some(130), "{stdout}");
    let r: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let secs = r["duration_s"].as_f64().unwrap();
    assert!(secs > 0.0 && secs < 60.0, "the part measured: {secs}");
    assert_latency_within_measured_time(&r, secs);
    // Intended: about the rate times the part measured, not the 60 s planned.
    let intended = r["open_loop"]["intended"].as_f64().unwrap();
    assert!(intended <= 2000.0 * (secs + 0.5), "{intended} in {secs} s");
}

#[test]
fn ctrl_c_during_a_sweep_ends_it_at_that_step() {
    let rates = "100,200,300,400,500,600";
    let mut bench = spawn(&[
        "--json",
        "--progress",
        "--connections",
        "4",
        "--sweep",
        rates,
        "--duration",
        "60",
        "--warmup",
        "0",
    ]);
    let server = child_server_of(bench.id());
    let stderr = follow_stderr(&mut bench);
    lines_until(&stderr, "measuring");
    signal(bench.id(), libc::SIGINT);
    let (status, stdout) = finish(bench);
    assert_eq!(status.code(), Some(130), "{stdout}");
    let r: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(r["interrupted"], true, "{r}");
    // The steps after the stop were not run: no connections to count as
    // failed, no windows to count as measured.
    assert_eq!(r["steps"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["errors"]["connect"], 0, "{r}");
    let secs = r["duration_s"].as_f64().unwrap();
    assert!(secs > 0.0 && secs < 60.0, "the part measured: {secs}");
    // The step cut short counts only what was intended before the stop.
    assert_latency_within_measured_time(&r["steps"][0], secs);
    wait_until("the child server to stop", || is_dead(server));
}

#[test]
fn a_sweep_stopped_before_any_window_reports_a_rate_of_zero() {
    let mut bench = spawn(&[
        "--json",
        "--progress",
        "--connections",
        "2",
        "--sweep",
        "100,200",
        "--duration",
        "60",
        "--warmup",
        "60",
    ]);
    let stderr = follow_stderr(&mut bench);
    lines_until(&stderr, "warmup");
    signal(bench.id(), libc::SIGINT);
    let (status, stdout) = finish(bench);
    assert_eq!(status.code(), Some(130), "{stdout}");
    let r: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(r["duration_s"], 0.0, "{r}");
    assert_eq!(r["msgs_per_sec"], 0.0, "{r}");
    assert_eq!(r["bytes_per_sec"], 0.0, "{r}");
}

#[test]
fn a_sweep_reports_its_latency_and_server_cpu_over_all_steps() {
    let out = bench(&[
        "--json",
        "--connections",
        "2",
        "--sweep",
        "200,400",
        "--duration",
        "0.5",
        "--warmup",
        "0",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = report(&out);
    let steps = r["steps"].as_array().unwrap();
    let step_max = steps
        .iter()
        .map(|s| s["latency_us"]["max"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(r["latency_us"]["max"].as_u64(), Some(step_max), "{r}");
    assert!(r["latency_us"]["p99"].as_u64().is_some(), "{r}");
    // Each step, and the sweep, say why connections failed, beside the counts.
    assert_eq!(steps[0]["connect_failures"]["refused"], 0, "{r}");
    assert_eq!(r["connect_failures"]["refused"], 0, "{r}");
    let cpu: f64 = steps
        .iter()
        .map(|s| s["server_cpu_s"].as_f64().unwrap())
        .sum();
    let total = r["server"]["cpu_s"]
        .as_f64()
        .expect("the server's CPU time");
    assert!((total - cpu).abs() < 1e-9, "{total} vs the steps' {cpu}");
}

#[test]
fn a_run_that_measured_no_message_fails() {
    // 10 ms per message: nothing comes back within a 1 ms window.
    let addr = support::slow_server(64).to_string();
    let out = bench(&[
        "--addr",
        &addr,
        "--connections",
        "1",
        "--duration",
        "1ms",
        "--warmup",
        "0",
    ]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("no message was measured"), "{stderr}");
    assert!(
        text(&out.stdout).contains("throughput   0 messages"),
        "printed first"
    );
}

/// The number after `word` in `line` (`"measuring   123 msgs"` -> 123).
fn count_after(line: &str, word: &str) -> u64 {
    let rest = &line[line.find(word).unwrap() + word.len()..];
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn progress_lines_show_each_phase_and_add_up_to_the_summary() {
    let out = bench(&[
        "--json",
        "--progress",
        "--connections",
        "4",
        "--warmup",
        "1",
        "--duration",
        "2",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = report(&out);
    let summary = r["messages"].as_u64().unwrap();
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    // "[   2.0s] measuring ...": the word after the time is the phase.
    let phase_of = |l: &str| {
        l.split_once("s] ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .map(str::to_string)
    };
    let phase = |name: &str| -> Vec<&str> {
        lines
            .iter()
            .copied()
            .filter(|l| phase_of(l).as_deref() == Some(name))
            .collect()
    };
    assert_eq!(phase("connected").len(), 1, "{stderr}");
    assert!(phase("connected")[0].contains("4 of 4 up"), "{stderr}");
    assert!(!phase("warmup").is_empty(), "{stderr}");
    let measuring = phase("measuring");
    // One line a second of the 2 s measured (and one as it ends), none doubled.
    assert!((1..=3).contains(&measuring.len()), "{stderr}");
    for line in &measuring {
        let n = count_after(line, "measuring");
        assert!(n > 0 && n <= summary, "a zero or doubled line: {line}");
    }
    let total = phase("measured");
    assert_eq!(total.len(), 1, "{stderr}");
    let rest = count_after(total[0], "(");
    let lines_sum: u64 = measuring.iter().map(|l| count_after(l, "measuring")).sum();
    assert_eq!(
        lines_sum + rest,
        summary,
        "the lines add up to the summary: {stderr}"
    );
    assert_eq!(count_after(total[0], "measured"), summary);
    // Warm-up replies are not in the measured count, nor the phases out of order.
    let first = |name: &str| {
        lines
            .iter()
            .position(|l| phase_of(l).as_deref() == Some(name))
    };
    assert!(first("connected") < first("warmup") && first("warmup") < first("measuring"));
}

#[test]
fn hold_says_when_memory_per_connection_cannot_be_trusted() {
    let server = echo_server();
    let addr = server.addr.to_string();
    let me = std::process::id().to_string(); // the test server runs in this process
    for (extra, why) in [
        (&[][..], "unknown: no server pid"),
        (
            &["--server-pid", me.as_str()][..],
            "unknown: the server was not started by this bench",
        ),
    ] {
        let mut args = vec!["--scenario", "hold", "--addr", &addr];
        args.extend(["--connections", "20", "--duration", "0.2"]);
        args.extend(extra);
        let out = bench(&args);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(stdout.contains(why), "{stdout}");
        assert!(stdout.contains("growth of the server's RSS"), "{stdout}");
        for wrong in ["null", "? B", "0.0 B"] {
            assert!(!stdout.contains(wrong), "{wrong:?} in {stdout}");
        }
        assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
    }
}

#[test]
fn hold_against_a_server_that_already_ran_says_unknown_not_a_smaller_figure() {
    support::raise_limit_for_children();
    let server = support::ServeProcess::spawn(&["--listen", "127.0.0.1:0"], 1);
    let (addr, pid) = (server.addr(0).to_string(), server.child.id().to_string());
    let hold = || {
        let out = bench(&[
            "--json",
            "--scenario",
            "hold",
            "--addr",
            &addr,
            "--server-pid",
            &pid,
            "--server-fresh",
            "--connections",
            "1000",
            "--duration",
            "0.2",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        report(&out)["hold"].clone()
    };
    let first = hold();
    assert!(
        first["rss_per_conn_idle_bytes"].as_f64().unwrap() > 0.0,
        "a fresh server: {first}"
    );
    // The same server again: it reuses what the first run left it.
    let second = hold();
    assert!(second["rss_per_conn_idle_bytes"].is_null(), "{second}");
    let why = second["rss_per_conn_unknown"].as_str().unwrap();
    assert!(why.contains("before"), "{why}");
}

#[test]
fn connections_that_never_came_up_are_each_explained_by_their_os_reason() {
    let (_held, port) = closed_port();
    for scenario in ["echo", "hold", "connect"] {
        let out = bench(&[
            "--json",
            "--scenario",
            scenario,
            "--addr",
            &port,
            "--connections",
            "5",
            "--duration",
            "0.3",
        ]);
        assert!(!out.status.success(), "{scenario}");
        let r = report(&out);
        let requested = r["connections"]["requested"].as_u64().unwrap();
        let achieved = r["connections"]["achieved"].as_u64().unwrap();
        assert_eq!(achieved, 0, "{scenario}: {r}");
        let failed = r["errors"]["connect"].as_u64().unwrap();
        let refused = r["connect_failures"]["refused"].as_u64().unwrap();
        // `errors` holds counts only: their sum is the failures' total.
        let counts = r["errors"].as_object().unwrap().values();
        let sum: u64 = counts.map(|n| n.as_u64().expect("a count")).sum();
        assert_eq!(sum, failed, "{scenario}: {r}");
        assert_eq!(
            refused, failed,
            "{scenario}: every failure by its reason: {r}"
        );
        if scenario != "connect" {
            // (connect retries each slot for the whole run.)
            assert_eq!(requested - achieved, failed, "{scenario}: {r}");
        } else {
            assert!(failed >= requested, "{scenario}: {r}");
        }
        let error = r["error"].as_str().unwrap();
        assert!(error.contains("refused (ECONNREFUSED"), "{error}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("refused (ECONNREFUSED"), "{stderr}");
    }
}

/// A server that reads one message on each connection, never answers, and
/// resets the connection after `after`.
fn resetting_server(size: usize, after: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            thread::spawn(move || {
                let mut message = vec![0; size];
                if stream.read_exact(&mut message).is_ok() {
                    thread::sleep(after);
                }
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            });
        }
    });
    addr
}

#[test]
fn a_connection_reset_with_replies_missing_is_one_error_not_two() {
    let addr = resetting_server(64, Duration::from_millis(200)).to_string();
    let args = [
        "--addr",
        &addr,
        "--connections",
        "3",
        "--duration",
        "0.5",
        "--warmup",
        "0",
    ];
    let out = bench(&[&args[..], &["--json"]].concat());
    assert!(!out.status.success());
    let r = report(&out);
    assert_eq!(r["errors"]["reset"], 3, "{r}");
    assert_eq!(r["errors"]["timeout"], 0, "counted once, as the reset: {r}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("3 connections failed"), "{stderr}");
    // The human summary and the error line: words, no JSON, no null.
    let out = bench(&args);
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(all.contains("reset (closed by the server) 3"), "{all}");
    assert!(all.contains("n/a (no reply was measured)"), "{all}");
    for wrong in ["null", "{", "\"connect\""] {
        assert!(!all.contains(wrong), "{wrong:?} in {all}");
    }
}

#[test]
fn the_child_server_does_not_inherit_the_auth_key() {
    let out = command(&["--json", "--connections", "2", "--duration", "0.3"])
        .env("ECHO_REACTOR_AUTH_KEY", "a key the bench cannot answer for")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = report(&out);
    assert_eq!(r["connections"]["achieved"], 2, "{r}");
    assert!(r["messages"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn a_server_pid_that_is_not_the_server_is_warned_about() {
    let server = echo_server();
    let addr = server.addr.to_string();
    let mut other = Command::new("sleep").arg("30").spawn().unwrap();
    let mut dead = Command::new("true").spawn().unwrap();
    dead.wait().unwrap();
    for (pid, says) in [
        (other.id(), "is not the process listening on"),
        (dead.id(), "no such process"),
    ] {
        let pid = pid.to_string();
        let out = bench(&[
            "--addr",
            &addr,
            "--server-pid",
            &pid,
            "--connections",
            "2",
            "--duration",
            "0.2",
            "--warmup",
            "0",
        ]);
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("warning") && stderr.contains(says),
            "{stderr}"
        );
    }
    // The listener itself (the test server runs in this process): no warning.
    let me = std::process::id().to_string();
    let out = bench(&[
        "--addr",
        &addr,
        "--server-pid",
        &me,
        "--duration",
        "0.2",
        "--warmup",
        "0",
    ]);
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
    let _ = other.kill();
    let _ = other.wait();
}

#[test]
fn connect_reports_what_it_achieved_and_only_what_applies_to_it() {
    let server = echo_server();
    let addr = server.addr.to_string();
    let out = bench(&[
        "--scenario",
        "connect",
        "--addr",
        &addr,
        "--connections",
        "3",
        "--duration",
        "0.3",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let header = stdout.lines().next().unwrap();
    assert!(header.contains("3/3 concurrent connect slots"), "{header}");
    for irrelevant in ["B messages", "pipeline", "loop", "warmup"] {
        assert!(!header.contains(irrelevant), "{irrelevant:?} in {header}");
    }
    assert!(stdout.contains("whole network namespace"), "{stdout}");
}
