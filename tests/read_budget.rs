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
fn no_connection_reads_more_than_its_budget_in_one_loop_turn() {
    const READ_BUDGET_BYTES: usize = echo_reactor::reactor::READ_BUDGET_BYTES;
    let (server, lines) = traced_serve(&["--listen", "127.0.0.1:0"]);
    let mut stream = connect(server.addr(0));
    let mut reader = stream.try_clone().unwrap();
    // Read every echo, so only the budget (never backpressure) stops reads.
    let drain = thread::spawn(move || {
        let mut buf = vec![0; 1 << 16];
        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
    });
    // Send until the server has reported a spent budget 20 times (a logging
    // server reads slower than loopback delivers, so the queue soon holds
    // 256 KiB): budgets spent on an event and on the ready queue, turn
    // after turn. Bounded by bytes and by the deadline.
    let chunk = pattern(1 << 20, 5);
    let start = Instant::now();
    let mut trace = Vec::new();
    let mut spent = 0;
    for _ in 0..2048 {
        if spent >= 20 {
            break;
        }
        stream.write_all(&chunk).unwrap();
        while let Ok(line) = lines.try_recv() {
            let msg = message(&line).to_string();
            spent += usize::from(msg.starts_with("read budget spent"));
            trace.push(msg);
        }
        assert!(
            start.elapsed() < DEADLINE,
            "only {spent} spent budgets in {DEADLINE:?}"
        );
    }
    assert!(spent >= 20, "only {spent} spent budgets");
    trace.extend(collect_until(&lines, |m| m.starts_with("poll: ")));
    stream.shutdown(Shutdown::Write).unwrap();
    drain.join().unwrap();
    // Bytes read per connection between two epoll_waits (`poll:` lines);
    // a `conn N ...` line says whose reads follow.
    let mut turn: std::collections::HashMap<String, usize> = Default::default();
    let mut current = String::new();
    for msg in &trace {
        if msg.starts_with("poll: ") {
            turn.clear();
        } else if let Some(rest) = msg.strip_prefix("conn ") {
            current = rest.split(' ').next().unwrap().to_string();
        } else if let Some(n) = msg
            .strip_prefix("read ")
            .and_then(|n| n.parse::<usize>().ok())
        {
            let total = turn.entry(current.clone()).or_default();
            *total += n;
            assert!(
                *total <= READ_BUDGET_BYTES,
                "conn {current} read {total} bytes in one turn (budget {READ_BUDGET_BYTES})"
            );
        }
    }
}
