//! How long the bench gives its connections to come up (`--connect-timeout`,
//! or a deadline that grows with `--connections`), and how fast they came
//! up: the time to connect and the connect rate in the report.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};

use echo_reactor::protocol::Echo;
use echo_reactor::Config;
use serde_json::Value;
use support::{bench, TestServer};

fn report(out: &std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    serde_json::from_str(&stdout).expect("valid JSON")
}

/// A listener whose accept queue is full and never drained: the kernel
/// drops every new SYN (`ListenOverflows`), so a connect stays under way
/// until its client gives up. Returned with the one connection that fills
/// the queue (`listen(0)` admits one), which must live as long as it.
fn listener_that_takes_no_one() -> (socket2::Socket, TcpStream, SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let filler = TcpStream::connect(addr).unwrap();
    (socket, filler, addr)
}

#[test]
fn connections_not_up_within_the_connect_timeout_are_given_up_on() {
    let (_listener, _filler, addr) = listener_that_takes_no_one();
    let out = bench(&[
        "--json",
        "--addr",
        &addr.to_string(),
        "--connections",
        "20",
        "--connect-timeout",
        "0.5",
        "--duration",
        "0.2",
        "--warmup",
        "0",
    ]);
    assert!(!out.status.success());
    let r = report(&out);
    assert_eq!(r["connections"]["connect_timeout_s"], 0.5, "{r}");
    assert_eq!(r["settings"]["connect_timeout_s"], 0.5, "{r}");
    assert_eq!(r["connections"]["achieved"], 0, "{r}");
    // Every one of them, by the reason the deadline gives.
    assert_eq!(r["connect_failures"]["gave_up"], 20, "{r}");
}

#[test]
fn the_report_says_how_long_the_connections_took_and_how_fast_they_came() {
    // Two load generators: the deadline is the whole run's (15 s + 1 s
    // per 10 000 connections), not each one's share of it.
    let out = bench(&[
        "--json",
        "--scenario",
        "hold",
        "--connections",
        "400",
        "--processes",
        "2",
        "--duration",
        "0.2",
    ]);
    let r = report(&out);
    assert!(out.status.success(), "{r}");
    let c = &r["connections"];
    assert_eq!(c["achieved"], 400, "{r}");
    assert_eq!(c["connect_timeout_s"], 15.04, "{r}");
    assert!(
        r["settings"].get("connect_timeout_s").is_none(),
        "not given: {r}"
    );
    let secs = c["connect_s"].as_f64().unwrap();
    let rate = c["connects_per_sec"].as_f64().unwrap();
    assert!(secs > 0.0 && secs < 15.04, "{r}");
    assert!((rate * secs - 400.0).abs() < 1e-6, "{r}");
    // ... the slowest of the two load generators' own times.
    let each: Vec<f64> = r["load_generators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["connect_s"].as_f64().unwrap())
        .collect();
    // The run's time runs from starting the load generators, so it is
    // longer than any one's own (each starts timing when it got going).
    let slowest = each.iter().copied().fold(0.0, f64::max);
    assert!(slowest > 0.0 && secs > slowest, "{secs} vs {each:?}: {r}");
}

#[test]
fn a_connect_timeout_the_run_cannot_use_is_refused_in_one_line() {
    for (args, says) in [
        (
            &["--connect-timeout", "1", "--scenario", "connect"][..],
            "--connect-timeout applies to the echo, hold and flood scenarios",
        ),
        (
            &["--connect-timeout", "0"][..],
            "must be a positive duration",
        ),
        (&["--connect-timeout", "soon"][..], "is not a duration"),
    ] {
        let out = bench(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_load_generator_of_processes_leaves_the_server_pid_check_to_its_parent() {
    // Its parent checked before any connection; a child checking again
    // reads every TCP socket of the machine while the others connect.
    let server = TestServer::start(Config::default(), Echo);
    let mut dead = Command::new("true").spawn().unwrap();
    dead.wait().unwrap();
    let dead = dead.id().to_string();
    let addr = server.addr.to_string();
    let common = ["--addr", &addr, "--server-pid", &dead, "--json"];
    let short = ["--connections", "2", "--duration", "0.2", "--warmup", "0"];
    // On its own, the bench warns...
    let alone = bench(&[&common[..], &short[..]].concat());
    let stderr = String::from_utf8_lossy(&alone.stderr);
    assert!(stderr.contains("no such process"), "{stderr}");
    // ... as a gated child, it does not.
    let mut child = support::bench_command(&[&common[..], &short[..], &["--gated"]].concat())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "gate connected\n");
    writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("warning"), "{stderr}");
}
