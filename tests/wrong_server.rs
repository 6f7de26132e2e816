//! A client or bench that meets a server set up otherwise than it assumed
//! (a PROXY header expected, a greeting, nothing listening on a UDP port,
//! a handshake) hears the likely cause, not only what went wrong.

mod support;

use std::net::UdpSocket;
use std::process::{Command, Output, Stdio};

use support::ServeProcess;

/// `echo-reactor ARGS` run to its end, stdin closed, logging off.
fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
        .args(args)
        .env("RUST_LOG", "off")
        .env_remove("ECHO_REACTOR_AUTH_KEY")
        .stdin(Stdio::null())
        .output()
        .expect("run echo-reactor")
}

/// `serve --listen 127.0.0.1:0 ARGS`, logging off.
fn serve(args: &[&str]) -> ServeProcess {
    let mut all = vec!["--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut cmd = ServeProcess::command(&all);
    cmd.env("RUST_LOG", "off");
    ServeProcess::spawn_command(cmd, 1)
}

#[test]
fn a_client_without_a_proxy_header_hears_the_server_may_want_one() {
    let server = serve(&["--proxy-protocol"]);
    let addr = server.addr(0).to_string();
    let out = run(&["client", "--addr", &addr, "hello"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the server closed the connection before its first reply")
            && stderr.contains("--proxy-protocol")
            && stderr.contains("--proxy-header v1 or v2"),
        "{stderr}"
    );
    // With the header, the same server answers.
    let out = run(&["client", "--addr", &addr, "--proxy-header", "v2", "hello"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
}

#[test]
fn a_client_not_told_of_greet_prints_the_welcome_as_such_and_stays_in_step() {
    let server = serve(&["--protocol", "greet"]);
    let addr = server.addr(0).to_string();
    let out = run(&["client", "--addr", &addr, "Ann", "Bob"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Each reply after the message it answers, not one message late.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Welcome!\nHello, Ann!\nHello, Bob!\n"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("pass --protocol greet"),
        "{stderr}"
    );
    // Told, it prints the same and warns of nothing.
    let out = run(&["client", "--addr", &addr, "--protocol", "greet", "Ann"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Welcome!\nHello, Ann!\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn a_udp_client_to_a_closed_port_hears_connection_refused() {
    // A port nothing listens on: bound once to learn a free one, then closed.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    // A timeout far longer than the refusal takes: without the kernel's
    // answer, the client would wait it out and say "no reply in time".
    let out = run(&["client", "--udp", "--addr", &addr, "--timeout", "20", "hi"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "udp {addr}: connection refused (nothing listens on that port"
        )),
        "{stderr}"
    );
}

#[test]
fn a_udp_client_still_gets_its_replies() {
    let server = {
        let mut cmd = ServeProcess::command(&["--udp", "127.0.0.1:0"]);
        cmd.env("RUST_LOG", "off");
        ServeProcess::spawn_command(cmd, 1)
    };
    let addr = server.addr(0).to_string();
    let out = run(&["client", "--udp", "--addr", &addr, "one", "two"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\n");
}

#[test]
fn a_bench_against_a_server_wanting_a_first_message_hears_which_it_may_be() {
    for (args, key) in [(&["--proxy-protocol"][..], None), (&[][..], Some("sesame"))] {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut cmd = ServeProcess::command(&all);
        cmd.env("RUST_LOG", "off");
        if let Some(key) = key {
            cmd.env("ECHO_REACTOR_AUTH_KEY", key);
        }
        let server = ServeProcess::spawn_command(cmd, 1);
        let addr = server.addr(0).to_string();
        let out = support::bench(&[
            "--addr",
            &addr,
            "--connections",
            "2",
            "--duration",
            "0.5",
            "--warmup",
            "0",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("closed before any reply")
                && stderr.contains("auth handshake")
                && stderr.contains("--proxy-header"),
            "{args:?}: {stderr}"
        );
    }
}
