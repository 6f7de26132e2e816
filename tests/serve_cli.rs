//! `echo-reactor serve` as a user runs it: the startup line, a working
//! listener, and one clear line (no panic) for mistakes.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};

use support::{connect, read_exact};

fn serve(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_echo-reactor"));
    cmd.arg("serve").args(args);
    cmd
}

/// Run `serve ARGS` (with extra environment) expecting it to fail with
/// `code` and exactly one line on stderr, which is returned.
fn one_line_failure(args: &[&str], env: &[(&str, &str)], code: i32) -> String {
    let mut cmd = serve(args);
    cmd.env("RUST_LOG", "off");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(code), "{args:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
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
        let stderr = serve(args).output().unwrap();
        assert_eq!(stderr.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(stderr.stderr).unwrap();
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
fn serve_with_an_unreadable_key_file_or_a_key_and_udp_exits_1_with_one_line() {
    let stderr = one_line_failure(&["--auth-key-file", "/nonexistent/key"], &[], 1);
    assert!(
        stderr.contains("read auth key file /nonexistent/key"),
        "{stderr}"
    );

    let stderr = one_line_failure(
        &["--udp", "127.0.0.1:0"],
        &[("ECHO_REACTOR_AUTH_KEY", "sesame")],
        1,
    );
    assert!(stderr.contains("--udp cannot be combined"), "{stderr}");
}
