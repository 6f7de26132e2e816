//! `echo-reactor serve` as a user runs it: the startup line, a working
//! listener, one clear line (no panic) for mistakes, and a clean exit
//! even when nobody reads stdout any more.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use support::{connect, read_exact, DEADLINE};

fn serve(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_echo-reactor"));
    cmd.arg("serve").args(args);
    cmd
}

/// Wait for `child` to exit; kill it and fail after [`DEADLINE`] (a server
/// that should have refused to start would otherwise serve forever).
fn exit_status_within_deadline(child: &mut Child, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Run `cmd` to its end (within [`DEADLINE`]); returns its status and stderr.
fn finish(mut cmd: Command, what: &str) -> (ExitStatus, String) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = exit_status_within_deadline(&mut child, what);
    // Small (a few lines), so it fit the pipe while the child ran.
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

/// Run `serve ARGS` (with extra environment) expecting it to fail with
/// `code` and exactly one line on stderr, which is returned.
fn one_line_failure(args: &[&str], env: &[(&str, &str)], code: i32) -> String {
    let mut cmd = serve(args);
    cmd.env("RUST_LOG", "off");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let (status, stderr) = finish(cmd, &format!("{args:?}"));
    assert_eq!(status.code(), Some(code), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// The child's stderr, line by line, read on a thread so a test can wait
/// for a line with a deadline.
struct StderrLines(mpsc::Receiver<String>);

impl StderrLines {
    fn of(child: &mut Child) -> StderrLines {
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        StderrLines(rx)
    }

    /// Lines up to and including the first containing `needle`; panics at
    /// [`DEADLINE`] or when stderr ends first.
    fn until(&self, needle: &str) -> Vec<String> {
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match self.0.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(e) => panic!("no stderr line with {needle:?} ({e:?}); saw {seen:#?}"),
            }
        }
    }

    /// Every line until stderr closes (the child exited).
    fn rest(&self) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok(line) = self.0.recv_timeout(DEADLINE) {
            seen.push(line);
        }
        seen
    }
}

/// Ask the child to shut down gracefully, as an operator would.
fn sigterm(child: &Child) {
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill only sends a signal to the process we started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

/// Kills the child on drop, so a failing test leaves no server behind.
struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_prints_the_real_port_and_answers_with_the_chosen_protocol() {
    let child = serve(&["--listen", "127.0.0.1:0", "--protocol", "upper"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let mut line = String::new();
    BufReader::new(running.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on tcp ")
        .unwrap_or_else(|| panic!("unexpected startup line {line:?}"))
        .parse()
        .unwrap();
    assert_ne!(addr.port(), 0, "the real port, not the 0 we asked for");
    let mut client = connect(addr);
    client.write_all(b"shout\n").unwrap();
    assert_eq!(read_exact(&mut client, 6), b"SHOUT\n");
}

#[test]
fn serve_on_a_port_in_use_exits_1_with_one_line_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let stderr = one_line_failure(&["--listen", &addr], &[], 1);
    assert!(stderr.contains(&format!("bind {addr}")), "{stderr}");
    assert!(stderr.to_lowercase().contains("in use"), "{stderr}");
}

#[test]
fn serve_with_a_bad_flag_value_exits_2_without_a_panic() {
    for args in [
        &["--max-buffered", "lots"][..],
        &["--listen", "localhost"][..],
        &["--protocol", "shout"][..],
        &["--idle-timeout", "0"][..],
        &["--stall-timeout=-1"][..],
        &["--max-connections", "0"][..],
        &["--udp", "nowhere"][..],
    ] {
        let (status, stderr) = finish(serve(args), &format!("{args:?}"));
        assert_eq!(status.code(), Some(2), "{args:?}");
        assert!(
            stderr.starts_with("error: invalid value"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn serve_with_an_unusable_unix_path_exits_1_with_one_line() {
    let stderr = one_line_failure(&["--unix", "/nonexistent-dir/echo.sock"], &[], 1);
    assert!(
        stderr.contains("unix /nonexistent-dir/echo.sock"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn serve_with_an_unreadable_key_file_exits_1_and_a_key_with_udp_2_with_one_line() {
    let stderr = one_line_failure(&["--auth-key-file", "/nonexistent/key"], &[], 1);
    assert!(
        stderr.contains("read auth key file /nonexistent/key"),
        "{stderr}"
    );

    // Flags that cannot work together: a usage error, exit 2 (as clap's).
    let stderr = one_line_failure(
        &["--udp", "127.0.0.1:0"],
        &[("ECHO_REACTOR_AUTH_KEY", "sesame")],
        2,
    );
    assert!(stderr.contains("--udp cannot be combined"), "{stderr}");
}

#[test]
fn serve_refuses_a_timer_shorter_than_a_millisecond_naming_the_flag_and_the_minimum() {
    // Each rounds to 0 ms: a stats line every turn (a busy loop), every
    // connection idle or stalled at once.
    for flag in [
        "--stats-interval",
        "--idle-timeout",
        "--stall-timeout",
        "--shutdown-grace",
    ] {
        let args = ["--listen", "127.0.0.1:0", flag, "1e-10"];
        let (status, stderr) = finish(serve(&args), &format!("{args:?}"));
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.contains(flag), "{args:?}: {stderr}");
        assert!(
            first.contains("at least 0.001 seconds (1 ms"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn serve_refuses_a_memory_budget_too_small_to_hold_anything() {
    let args = ["--listen", "127.0.0.1:0", "--max-memory", "64KiB"];
    let (status, stderr) = finish(serve(&args), "--max-memory 64KiB");
    assert_eq!(status.code(), Some(2), "{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains("--max-memory") && first.contains("1MiB"),
        "{stderr}"
    );
}

#[test]
fn serve_with_an_auth_key_refuses_a_max_line_shorter_than_the_handshake_answer() {
    let stderr = one_line_failure(
        &["--listen", "127.0.0.1:0", "--max-line", "16"],
        &[("ECHO_REACTOR_AUTH_KEY", "sesame")],
        2,
    );
    assert!(
        stderr.contains("--max-line 16 is shorter than the 32-byte handshake answer"),
        "{stderr}"
    );
}

#[test]
fn serve_exits_0_without_a_panic_when_stdout_was_closed_before_the_final_stats() {
    let mut child = serve(&["--listen", "127.0.0.1:0", "--shutdown-grace", "0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = StderrLines::of(&mut child);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("listening on tcp "), "{line:?}");
    drop(stdout); // the reader goes away, like `serve | head -1`
    sigterm(&child); // signals are handled before the listening line is printed
    let status = exit_status_within_deadline(&mut child, "serve after SIGTERM");
    let log = stderr.rest().join("\n");
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("cannot print the final stats"), "{log}");
    assert!(
        log.contains("stats active="),
        "the stats went to the log: {log}"
    );
}

#[test]
fn serve_whose_stdout_is_closed_from_the_start_serves_anyway_and_exits_0() {
    // `echo-reactor serve | true`: the pipe's reader is gone before the
    // server writes its first line.
    let mut ends = [0; 2];
    // SAFETY: pipe writes two new descriptors into the array, which we own from here.
    assert_eq!(unsafe { libc::pipe(ends.as_mut_ptr()) }, 0);
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
    drop(read_end);
    let mut child = serve(&["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = StderrLines::of(&mut child);
    let startup = stderr.until("limits: ").join("\n");
    assert!(
        startup.contains("cannot print the listening lines"),
        "{startup}"
    );
    sigterm(&child);
    let status = exit_status_within_deadline(&mut child, "serve after SIGTERM");
    let log = stderr.rest().join("\n");
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(status.code(), Some(0), "{log}");
}

#[test]
fn serve_with_no_shutdown_grace_closes_at_once_and_prints_the_stats() {
    let mut child = serve(&["--listen", "127.0.0.1:0", "--shutdown-grace", "0"])
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr: SocketAddr = line.trim()["listening on tcp ".len()..].parse().unwrap();
    let mut client = connect(addr);
    client.write_all(b"ping\n").unwrap();
    assert_eq!(read_exact(&mut client, 5), b"ping\n");
    sigterm(&child);
    let status = exit_status_within_deadline(&mut child, "serve after SIGTERM");
    assert_eq!(status.code(), Some(0));
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(rest.starts_with("stats "), "{rest:?}");
    assert!(rest.contains("closed_shutdown=1"), "{rest:?}");
}
