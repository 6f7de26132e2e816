//! Watching the loop run (`RUST_LOG=echo_reactor=trace`): one line per event
//! and per outcome, for a client's whole life; and the read budget is per
//! connection *per turn* — a connection whose budget ran out is not read
//! again before the next `epoll_wait` (the trace's `poll:` lines).

mod support;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::mpsc::Receiver;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

fn traced_serve(args: &[&str]) -> (ServeProcess, Receiver<String>) {
    let mut cmd = ServeProcess::command(args);
    cmd.env("RUST_LOG", "echo_reactor=trace")
        .stderr(std::process::Stdio::piped());
    let mut server = ServeProcess::spawn_command(cmd, 1);
    let lines = server.follow_stderr();
    (server, lines)
}

/// The trace's message part: the text after `] ` (env_logger's prefix).
fn message(line: &str) -> &str {
    line.split_once("] ").map_or(line, |(_, m)| m)
}

/// Collect trace messages until one satisfies `done`, or the deadline.
fn collect_until(lines: &Receiver<String>, done: impl Fn(&str) -> bool) -> Vec<String> {
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < DEADLINE {
        let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let msg = message(&line).to_string();
        let stop = done(&msg);
        seen.push(msg);
        if stop {
            return seen;
        }
    }
    panic!(
        "trace line not seen in {DEADLINE:?}; last lines: {:?}",
        &seen[seen.len().saturating_sub(20)..]
    );
}

#[test]
fn the_trace_shows_a_clients_life_event_by_event() {
    let (server, lines) = traced_serve(&["--listen", "127.0.0.1:0", "--max-buffered", "65536"]);
    // A 4 KiB receive window and 8 MiB sent before reading (more than the
    // kernel buffers between us hold): the server's
    // writes come up short, the unsent tail passes --max-buffered, and
    // reading pauses until we read.
    let mut stream = connect_with_receive_buffer(server.addr(0), 4096);
    let payload = pattern(8 << 20, 3);
    let mut writer = stream.try_clone().unwrap();
    let sent = payload.clone();
    let sender = thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap(); // half-close, replies owed
    });
    let seen_pause = collect_until(&lines, |m| m.starts_with("paused: "));
    let mut received = Vec::new();
    stream.read_to_end(&mut received).unwrap();
    sender.join().unwrap();
    assert_same_bytes(&received, &payload);
    let rest = collect_until(&lines, |m| m.starts_with("connection 0 closed"));
    let trace: Vec<String> = seen_pause.into_iter().chain(rest).collect();
    let position = |what: &str| {
        trace
            .iter()
            .position(|m| m.starts_with(what))
            .unwrap_or_else(|| panic!("no trace line {what:?} in {trace:#?}"))
    };
    // In the order a client's life goes.
    let order = [
        position("conn 0 accepted"),
        position("conn 0 readable"),
        position("read "),
        position("wrote "),
        position("paused: "),
        position("flushed "),
        position("read 0: peer closed its side"),
        position("connection 0 closed: peer_closed"),
    ];
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "out of order: {order:?} in {trace:#?}"
    );
    assert!(
        trace.iter().any(|m| m.contains("write would block")),
        "no short write in {trace:#?}"
    );
    assert!(
        trace.iter().any(|m| m.starts_with("poll: ")),
        "no poll line"
    );
}

#[test]
fn a_connection_whose_read_budget_ran_out_is_not_read_again_in_the_same_turn() {
    let (server, lines) = traced_serve(&["--listen", "127.0.0.1:0"]);
    let mut stream = connect(server.addr(0));
    let mut reader = stream.try_clone().unwrap();
    // Read every echo, so only the budget (never backpressure) stops reads.
    let drain = thread::spawn(move || {
        let mut buf = vec![0; 1 << 16];
        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
    });
    // Send until the server reports a spent budget (a logging server reads
    // slower than loopback delivers, so the queue soon holds 256 KiB), then
    // watch that turn to its end; bounded by bytes and by the deadline.
    let chunk = pattern(1 << 20, 5);
    let start = Instant::now();
    let mut trace = Vec::new();
    let mut budget_spent_at = None;
    'send: for _ in 0..2048 {
        stream.write_all(&chunk).unwrap();
        while let Ok(line) = lines.try_recv() {
            trace.push(message(&line).to_string());
            if trace.last().unwrap().starts_with("read budget spent") {
                budget_spent_at = Some(trace.len() - 1);
                break 'send;
            }
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no spent budget in {DEADLINE:?}"
        );
    }
    let at = budget_spent_at.expect("a spent read budget");
    trace.extend(collect_until(&lines, |m| m.starts_with("poll: ")));
    // Between the spent budget and the next epoll_wait: no more reads.
    let rest_of_turn = &trace[at + 1..];
    let reads: Vec<&String> = rest_of_turn
        .iter()
        .filter(|m| m.starts_with("read ") || m.starts_with("short read"))
        .collect();
    assert!(
        reads.is_empty(),
        "read again in the turn its budget ran out: {rest_of_turn:#?}"
    );
    stream.shutdown(Shutdown::Write).unwrap();
    drain.join().unwrap();
}
