//! `serve --workers N` under faults: a worker killed while the binary on
//! disk was replaced, restarts that fail or must wait, a drain — through
//! the real binary. Whatever happens to one worker, the others serve every
//! new connection, and none waits in a queue nobody accepts from.

mod support;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use echo_reactor::stats::stat_value;
use echo_reactor::supervisor::MAX_RESTARTS;
use support::scrape::{metrics_addr, wait_for_value};
use support::workers::*;
use support::*;

const ACCEPTED: &str = "echo_reactor_connections_accepted_total";

/// `serve --listen 127.0.0.1:0 --metrics 127.0.0.1:0 --workers 2` run by
/// `cmd` (a command naming the binary), its stderr followed: the server,
/// its log lines, the echo address and the metrics address.
fn spawn_counted(
    mut cmd: Command,
) -> (
    ServeProcess,
    std::sync::mpsc::Receiver<String>,
    std::net::SocketAddr,
    std::net::SocketAddr,
) {
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--workers",
        "2",
    ]);
    let (server, stderr) = spawn_workers_with(cmd, 2);
    let (addr, metrics) = (server.addr(0), metrics_addr(&server.sockets[1]));
    wait_for_children(server.pid(), 2);
    (server, stderr, addr, metrics)
}

/// Wait until every worker has published `accepted` connections in all:
/// what a worker counted within its last 10 ms is not in its slot yet,
/// and would be lost if it were killed now.
fn settled(metrics: std::net::SocketAddr, accepted: u64) {
    wait_for_value(metrics, ACCEPTED, |n| n == accepted);
}

/// Set `pid`'s soft open-file limit to `soft` (the hard one unchanged, so
/// it can be raised back); returns the soft limit it had.
fn set_soft_open_file_limit(pid: i32, soft: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reads nothing (new limit null) and writes `old`.
    assert_eq!(
        unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) },
        0
    );
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: prlimit on a process we started; it only reads `new`.
    let set = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
    old.rlim_cur
}

fn sigterm_and_expect_accepted(server: ServeProcess, accepted: u64) {
    server.signal(libc::SIGTERM);
    let (status, stdout) = server.wait_exit();
    assert!(status.success(), "{status}");
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(stat_value(last, "workers"), Some(2), "{stdout}");
    // Every connection, a killed worker's among them (all of those on one
    // worker's socket has a chance of 2^-19 and would only weaken this).
    assert_eq!(stat_value(last, "accepted"), Some(accepted), "{stdout}");
}

#[test]
fn a_worker_restarts_from_the_running_image_after_the_binary_is_replaced_and_deleted() {
    let dir = std::env::temp_dir().join(format!("echo-reactor-image-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("echo-reactor");
    std::fs::copy(env!("CARGO_BIN_EXE_echo-reactor"), &binary).unwrap();
    let mut cmd = Command::new(&binary);
    cmd.arg("serve").stdout(std::process::Stdio::piped());
    let (server, _stderr, addr, metrics) = spawn_counted(cmd);
    let workers = children(server.pid());
    echo_each(addr, 20);
    settled(metrics, 20);

    // A deploy renames a new file over the old one...
    let new = dir.join("echo-reactor.new");
    std::fs::write(&new, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&new, &binary).unwrap();
    let workers = kill_and_wait_for_replacement(&server, workers[0], 2);
    echo_each(addr, 20);
    settled(metrics, 40);
    // ...or the file goes away.
    std::fs::remove_file(&binary).unwrap();
    kill_and_wait_for_replacement(&server, workers[0], 2);
    echo_each(addr, 20);
    sigterm_and_expect_accepted(server, 60);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_restart_that_fails_is_retried_while_the_other_worker_serves_every_new_connection() {
    let (server, stderr, addr, metrics) = spawn_counted(ServeProcess::command(&[]));
    let workers = children(server.pid());
    echo_each(addr, 20);
    // Clients that stay: some on the worker about to die.
    let mut idle: Vec<TcpStream> = (0..20).map(|_| connect(addr)).collect();
    for stream in &mut idle {
        stream.write_all(b"here\n").unwrap();
        assert_eq!(read_exact(stream, 5), b"here\n");
    }
    settled(metrics, 40);
    // The supervisor out of descriptors: starting a worker fails.
    let soft = set_soft_open_file_limit(server.pid(), 16);
    kill(workers[0], libc::SIGKILL);
    wait_for_line(&stderr, "restart failed");
    // The dead worker's connections left the sum when it was reaped, not
    // when a successor publishes (none yet).
    let alive = idle
        .iter()
        .filter(|s| !peer_hung_up(s, Duration::from_millis(1)))
        .count() as u64;
    wait_for_value(metrics, "echo_reactor_connections_active", |n| n == alive);
    // Its socket is closed while the restart waits: no connection is left
    // in a queue nobody accepts from.
    echo_each(addr, 40);
    wait_for_line(&stderr, "restart failed"); // tried again, failed again
    assert_eq!(children(server.pid()), [workers[1]], "the server serves on");
    set_soft_open_file_limit(server.pid(), soft);
    wait_for_line(&stderr, "started (pid");
    wait_for_children(server.pid(), 2);
    echo_each(addr, 40);
    drop(idle);
    sigterm_and_expect_accepted(server, 120);
}

#[test]
fn past_the_restart_budget_the_dead_worker_s_connections_go_to_the_others() {
    let (server, stderr) = spawn_workers(&["--listen", "127.0.0.1:0", "--workers", "2"]);
    let mut workers = wait_for_children(server.pid(), 2);
    let survivor = workers[1];
    let victim = |workers: &[i32]| *workers.iter().find(|&&p| p != survivor).unwrap();
    for _ in 0..MAX_RESTARTS {
        workers = kill_and_wait_for_replacement(&server, victim(&workers), 2);
    }
    kill(victim(&workers), libc::SIGKILL);
    wait_for_line(&stderr, "workers keep dying");
    assert_eq!(children(server.pid()), [survivor]);
    echo_each(server.addr(0), 40);
    server.signal(libc::SIGTERM);
    let (status, stdout) = server.wait_exit();
    assert!(status.success(), "{status}");
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(stat_value(last, "accepted"), Some(40), "{stdout}");
}

#[test]
fn once_the_workers_stop_accepting_the_port_refuses_new_connections() {
    // The drain lasts until the hoarder reads.
    let drain = ["--shutdown-grace", "120", "--stall-timeout", "120"];
    let (server, stderr) = spawn_workers(&[&Hoarder::SERVER_ARGS[..], &drain].concat());
    wait_for_children(server.pid(), 2);
    let addr = server.addr(0);
    let hoarder = Hoarder::start(addr, &stderr);
    server.signal(libc::SIGTERM);
    for _ in 0..2 {
        wait_for_line(&stderr, "stopped accepting");
    }
    // The server is draining and accepts nobody: a client is refused at
    // once, as by a single-process server, not queued until the end.
    let start = Instant::now();
    loop {
        // A connection queued where nobody accepts completes (the kernel's
        // handshake) until the queue is full; then its SYNs go unanswered.
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
            other => assert!(
                start.elapsed() < DEADLINE,
                "still connecting during the drain: {other:?}"
            ),
        }
        thread::sleep(Duration::from_millis(10));
    }
    hoarder.read_all();
    let (status, _) = server.wait_exit();
    assert!(status.success(), "{status}");
}

#[test]
fn workers_get_a_clean_listen_environment() {
    // What the supervisor's parent said of the supervisor's descriptors is
    // not true of a worker's: listenfd would look for them at fd 50.
    let mut cmd = ServeProcess::command(&["--listen", "127.0.0.1:0", "--workers", "2"]);
    cmd.env("LISTEN_FDS_FIRST_FD", "50")
        .env("LISTEN_FDNAMES", "web")
        .env("LISTEN_PID", "1");
    let (server, _stderr) = spawn_workers_with(cmd, 1);
    let workers = wait_for_children(server.pid(), 2);
    echo_each(server.addr(0), 20);
    for pid in workers {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let names: Vec<String> = environ
            .split(|&b| b == 0)
            .filter_map(|var| {
                let var = String::from_utf8_lossy(var);
                let name = var.split_once('=')?.0;
                name.starts_with("LISTEN_").then(|| name.to_string())
            })
            .collect();
        assert_eq!(names, ["LISTEN_FDS"], "worker {pid}");
    }
    sigterm_and_expect_accepted(server, 20);
}
