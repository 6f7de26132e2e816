//! Upgrading without downtime, through the real binary: `SIGUSR2` to the
//! supervisor starts the binary on disk as a new generation on the same
//! sockets; the old workers drain; a new binary that fails is rolled back.
//!
//! Each server runs from its own copy of the binary in a temporary
//! directory, so a test can replace "the binary on disk" as an operator
//! deploying a release would.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::scrape::{metrics_addr, wait_for_value};
use support::upgrade::*;
use support::workers::*;
use support::*;

const ACTIVE: &str = "echo_reactor_connections_active";
const ACCEPTED: &str = "echo_reactor_connections_accepted_total";

/// The pid of the process holding the server side of `client`'s
/// connection to `server`, among `candidates`.
fn server_side_owner(client: &TcpStream, server: SocketAddr, candidates: &[i32]) -> Option<i32> {
    let inode = server_side_inode(server, client.local_addr().unwrap())?;
    let target = format!("socket:[{inode}]");
    candidates.iter().copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .any(|link| link.to_string_lossy() == target)
    })
}

/// The inode of the server's socket of the connection `server` <-
/// `client`. `ss` asks the kernel for that one socket (sock_diag, filtered
/// in the kernel), which stays quick on a machine holding a million
/// sockets, where reading /proc/net/tcp whole takes seconds; without `ss`,
/// that is the way.
fn server_side_inode(server: SocketAddr, client: SocketAddr) -> Option<u64> {
    let Some(ss) = required_tool("ss", "iproute2") else {
        return tcp_socket_inode(server, client);
    };
    let filter = format!(
        "( sport = :{} and dport = :{} )",
        server.port(),
        client.port()
    );
    let out = Command::new(ss)
        .args(["-tnHe", "state", "established", &filter])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|field| field.strip_prefix("ino:")?.parse().ok())
}

#[test]
fn a_rate_bench_across_an_upgrade_sees_no_error_and_new_connections_reach_the_new_generation() {
    raise_limit_for_children();
    let scratch = Scratch::new("upgrade-bench");
    let (mut server, stderr) = spawn_from(
        &scratch,
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--workers",
            "2",
        ],
        2,
    );
    let addr = server.addr(0);
    let metrics = metrics_addr(&server.sockets[1]);
    let old_workers = wait_for_children(server.pid(), 2);
    let addr_text = addr.to_string();
    let bench = bench_command(&[
        "--addr",
        &addr_text,
        "--connections",
        "100",
        "--rate",
        "2000",
        "--duration",
        "4",
        "--warmup",
        "0",
        "--json",
    ])
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    // Every bench connection is up, on the old generation.
    wait_for_value(metrics, ACTIVE, |n| n >= 100);
    let new = upgrade(&server, &stderr);
    assert_eq!(
        scratch.pid_in_file(),
        new.0,
        "the pid file names the new generation"
    );
    let new_workers = wait_for_children(new.0, 2);
    // Once both old workers stopped accepting, every connection is the
    // new generation's.
    expect_line(&stderr, "SIGQUIT: draining");
    expect_line(&stderr, "SIGQUIT: draining");
    for i in 0..10 {
        let client = echo_once(addr, &format!("after the handover {i}\n"));
        let owner = server_side_owner(
            &client,
            addr,
            &[old_workers.clone(), new_workers.clone()].concat(),
        );
        assert!(
            owner.is_some_and(|pid| new_workers.contains(&pid)),
            "connection {i} served by {owner:?}: old {old_workers:?}, new {new_workers:?}"
        );
    }
    // And counted there: the metrics port is the new generation's too,
    // its numbers its own workers' alone.
    wait_for_value(metrics, ACCEPTED, |n| n == 10);
    let out = bench.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("the bench's JSON");
    for kind in ["connect", "mismatch", "reset", "server_closed", "timeout"] {
        assert_eq!(
            report["errors"][kind], 0,
            "{kind} errors: {}",
            report["errors"]
        );
    }
    assert!(report["messages"].as_u64().unwrap() > 0, "replies verified");
    // The bench closed its connections: the old generation is done.
    expect_line(&stderr, "drained, exiting");
    let status = wait_for_exit(&mut server);
    assert_eq!(status.code(), Some(0), "{status}");
    // The new generation serves on, alone.
    drop(echo_once(addr, "still here\n"));
}

#[test]
fn an_upgrade_to_a_binary_that_fails_is_rolled_back_and_a_later_one_succeeds() {
    let scratch = Scratch::new("upgrade-rollback");
    let (mut server, stderr) =
        spawn_from(&scratch, &["--listen", "127.0.0.1:0", "--workers", "2"], 1);
    let addr = server.addr(0);
    wait_for_children(server.pid(), 2);
    let held = echo_once(addr, "before\n");

    // No binary at all.
    std::fs::remove_file(scratch.binary()).unwrap();
    server.signal(libc::SIGUSR2);
    let line = expect_line(&stderr, "upgrade: rolled back");
    assert!(line.contains("No such file"), "{line}");
    // One that exits at once.
    scratch.install_script("exit 1");
    server.signal(libc::SIGUSR2);
    let line = expect_line(&stderr, "upgrade: rolled back");
    assert!(
        line.contains("exited") && line.contains("before accepting"),
        "{line}"
    );

    // The old generation serves on, as if nothing happened.
    assert!(server.is_running());
    assert_eq!(scratch.pid_in_file(), server.pid());
    drop(echo_once(addr, "after the rollback\n"));
    let mut held = held;
    held.write_all(b"still held\n").unwrap();
    assert_eq!(read_exact(&mut held, 11), b"still held\n");
    drop(held);

    // The real binary back: the next try succeeds.
    scratch.install_real_binary();
    let new = upgrade(&server, &stderr);
    assert_eq!(scratch.pid_in_file(), new.0);
    assert_eq!(wait_for_exit(&mut server).code(), Some(0));
    drop(echo_once(addr, "new generation\n"));
}

#[test]
fn sigusr2_during_an_upgrade_is_ignored_and_a_new_generation_that_never_accepts_is_killed() {
    let scratch = Scratch::new("upgrade-twice");
    let (server, stderr) = spawn_from(&scratch, &["--listen", "127.0.0.1:0"], 1);
    let addr = server.addr(0);
    wait_for_children(server.pid(), 1);
    // A "binary" that never says it accepts, and leaves when told to
    // drain (it starts with SIGQUIT held back, as any new generation, so
    // only a handler of its own sees it).
    scratch.install_script("trap 'exit 0' QUIT\nwhile :; do sleep 0.05; done");
    server.signal(libc::SIGUSR2);
    expect_line(&stderr, "upgrade: starting");
    server.signal(libc::SIGUSR2);
    let line = expect_line(&stderr, "SIGUSR2");
    assert!(
        line.contains("an upgrade is under way") && line.ends_with("ignored"),
        "{line}"
    );
    // The rollback comes after the readiness timeout (10 s).
    let line = expect_line(&stderr, "upgrade: rolled back");
    assert!(line.contains("not accepting within"), "{line}");
    let pid: i32 = line
        .split("pid ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap();
    // Told to drain (SIGQUIT), it does.
    expect_line(&stderr, &format!("rolled-back generation pid {pid} exited"));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the new generation {pid} was killed and reaped"
    );
    assert_eq!(scratch.pid_in_file(), server.pid());
    drop(echo_once(addr, "served on\n"));
}

#[test]
fn the_drain_timeout_closes_a_connection_that_never_ends_after_its_replies() {
    let scratch = Scratch::new("upgrade-drain");
    // One worker: a pid file runs the supervisor all the same.
    let (server, stderr) = spawn_from(
        &scratch,
        &["--listen", "127.0.0.1:0", "--drain-timeout", "1"],
        1,
    );
    let addr = server.addr(0);
    wait_for_children(server.pid(), 1);
    let mut held = echo_once(addr, "before\n");
    let _new = upgrade(&server, &stderr);
    expect_line(&stderr, "SIGQUIT: draining");
    // The old worker serves the connection on, message by message, until
    // the drain timeout ends it: every reply arrives, then a clean end.
    held.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut answered = 0;
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < DEADLINE,
            "the connection was never closed"
        );
        let line = format!("during the drain {answered}\n");
        if held.write_all(line.as_bytes()).is_err() {
            panic!("write failed before the server's end of stream");
        }
        let mut reply = vec![0u8; line.len()];
        match held.read(&mut reply[..]) {
            Ok(0) => break, // the end: not a reset
            Ok(n) => {
                held.read_exact(&mut reply[n..]).unwrap();
                assert_eq!(reply, line.as_bytes());
                answered += 1;
            }
            Err(e) => panic!("after {answered} replies: {e} ({:?})", e.kind()),
        }
    }
    assert!(answered > 0, "served during the drain");
    expect_line(&stderr, "drain timeout: 1 connections still open");
}

#[test]
fn a_pid_file_that_cannot_be_written_is_refused_in_one_line_naming_it() {
    let cmd = ServeProcess::command(&[
        "--listen",
        "127.0.0.1:0",
        "--pid-file",
        "/nonexistent-dir/echo.pid",
    ]);
    let (code, stderr) = run_briefly(cmd);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--pid-file /nonexistent-dir/echo.pid: No such file"),
        "{stderr}"
    );
}

#[test]
fn the_old_generation_answers_healthz_503_from_the_handover_and_new_scrapes_reach_the_new_one() {
    use support::scrape::get;
    let scratch = Scratch::new("upgrade-healthz");
    let (server, stderr) = spawn_from(
        &scratch,
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--workers",
            "2",
        ],
        2,
    );
    let metrics = metrics_addr(&server.sockets[1]);
    wait_for_children(server.pid(), 2);
    assert_eq!(get(metrics, "/healthz").0, 200);
    // A health check an old worker holds, its request not finished yet
    // (it has METRICS_DEADLINE_MS, 3 s, to finish it).
    let mut held = connect(metrics);
    held.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        .unwrap();
    let _new = upgrade(&server, &stderr);
    expect_line(&stderr, "SIGQUIT: draining");
    expect_line(&stderr, "SIGQUIT: draining");
    held.write_all(b"\r\n").unwrap();
    let mut response = String::new();
    held.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 503"), "{response:?}");
    // The port itself answers: the new generation holds it.
    assert_eq!(get(metrics, "/healthz").0, 200);
}

#[test]
fn a_socket_activated_server_upgrades_on_the_socket_it_was_handed() {
    let scratch = Scratch::new("upgrade-activated");
    scratch.install_real_binary();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let args = format!("--workers 2 --pid-file '{}'", scratch.pid_file().display());
    let mut cmd = serve_handed(&scratch.binary(), listener.as_raw_fd(), &args);
    cmd.env("RUST_LOG", "info");
    let (mut server, stderr) = spawn_workers_with(cmd, 1);
    assert_eq!(server.addr(0), addr);
    expect_line(&stderr, "workers accepting");
    drop(listener); // the server's copies keep it open
    let held = echo_once(addr, "before\n");
    server.signal(libc::SIGUSR2);
    let line = expect_line(&stderr, "took over");
    assert!(line.contains("took over 1 sockets"), "{line}");
    let new = accepting(&stderr);
    assert_eq!(scratch.pid_in_file(), new.0);
    expect_line(&stderr, "SIGQUIT: draining");
    expect_line(&stderr, "SIGQUIT: draining");
    drop(echo_once(addr, "after\n"));
    drop(held); // the last old connection: the old generation exits
    assert_eq!(wait_for_exit(&mut server).code(), Some(0));
    drop(echo_once(addr, "new generation alone\n"));
}

#[test]
fn sigusr2_to_a_server_without_a_supervisor_is_logged_and_ignored() {
    let (mut server, stderr) = spawn_workers(&["--listen", "127.0.0.1:0"]);
    let addr = server.addr(0);
    drop(echo_once(addr, "before\n")); // serving: its signal handlers are in place
    server.signal(libc::SIGUSR2);
    let line = expect_line(&stderr, "SIGUSR2");
    assert!(
        line.contains("ignored") && line.contains("--pid-file"),
        "{line}"
    );
    assert!(server.is_running());
    drop(echo_once(addr, "after\n"));
}

#[test]
fn systemd_learns_the_new_main_pid_from_the_old_supervisor_at_the_commit_and_nothing_more() {
    use std::os::unix::net::UnixDatagram;
    let scratch = Scratch::new("upgrade-notify");
    let socket_path = scratch.0.join("notify.sock");
    let manager = UnixDatagram::bind(&socket_path).unwrap();
    manager.set_read_timeout(Some(DEADLINE)).unwrap();
    let received = || {
        let mut buf = [0u8; 512];
        let n = manager.recv(&mut buf).expect("a notification");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    };
    scratch.install_real_binary();
    let mut cmd = Command::new(scratch.binary());
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--workers", "2", "--pid-file"])
        .arg(scratch.pid_file())
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::piped());
    let (mut server, stderr) = spawn_workers_with(cmd, 1);
    assert_eq!(received(), format!("MAINPID={}\nREADY=1", server.pid()));
    let new = upgrade(&server, &stderr);
    // From the old supervisor, before it drains: the new main pid, then a
    // barrier (its descriptor, dropped by this receive, lets it go on).
    assert_eq!(received(), format!("MAINPID={}", new.0));
    assert_eq!(received(), "BARRIER=1");
    assert_eq!(wait_for_exit(&mut server).code(), Some(0));
    // The new generation said nothing: whatever it would have said at its
    // announcement came before the byte that let the old one exit.
    manager.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    match manager.recv(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!(
            "more notifications: {other:?} {:?}",
            String::from_utf8_lossy(&buf)
        ),
    }
}

#[test]
fn udp_and_unix_sockets_are_handed_over_and_the_unix_file_outlives_the_old_generation() {
    use std::os::unix::net::UnixStream;
    let scratch = Scratch::new("upgrade-sockets");
    let unix = scratch.0.join("echo.sock");
    let unix_arg = unix.display().to_string();
    let (mut server, stderr) = spawn_from(
        &scratch,
        &[
            "--listen",
            "127.0.0.1:0",
            "--udp",
            "127.0.0.1:0",
            "--unix",
            &unix_arg,
            "--workers",
            "2",
        ],
        3,
    );
    let udp = server.addr(1);
    let new = upgrade(&server, &stderr);
    assert_eq!(wait_for_exit(&mut server).code(), Some(0));
    assert!(
        unix.exists(),
        "the old generation removed the Unix socket file"
    );
    // The new generation answers on both.
    let mut stream = UnixStream::connect(&unix).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(b"over unix\n").unwrap();
    let mut reply = [0u8; 10];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"over unix\n");
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    client.send_to(b"over udp", udp).unwrap();
    let mut reply = [0u8; 16];
    let (n, _) = client.recv_from(&mut reply).unwrap();
    assert_eq!(&reply[..n], b"over udp");
    // The file is the new generation's now: removed when it exits.
    drop(stream);
    kill(new.0, libc::SIGTERM);
    let start = Instant::now();
    while unix.exists() {
        assert!(
            start.elapsed() < DEADLINE,
            "the new generation left the file"
        );
        thread::sleep(Duration::from_millis(10));
    }
}
