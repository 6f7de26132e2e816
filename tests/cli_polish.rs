//! The command line as a newcomer meets it: every refused value names the
//! flag at fault and says what would be right, with the same rules for
//! `serve`, `client` and `bench`.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a command that should fail at once may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// Run `echo-reactor ARGS` (stdin closed, `RUST_LOG=off` unless `env`
/// says otherwise) to its end; its status and stderr.
fn run(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_echo-reactor"));
    cmd.args(args)
        .env("RUST_LOG", "off")
        .env_remove("ECHO_REACTOR_AUTH_KEY");
    for (key, value) in env {
        cmd.env(key, value);
    }
    finish(cmd, &format!("{args:?}"))
}

/// Run `cmd` to its end within [`DEADLINE`] (killed and failed after it: a
/// server that should have refused to start would serve forever).
fn finish(mut cmd: Command, args: &str) -> (ExitStatus, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args}: still running after {DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!stderr.contains("panicked"), "{args}: {stderr}");
    (status, stderr)
}

/// `args` must be a usage error: exit 2, naming `flag`, saying `says`.
fn usage_error(args: &[&str], flag: &str, says: &str) {
    let (status, stderr) = run(args, &[]);
    assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(flag),
        "{args:?} should name {flag}: {stderr}"
    );
    assert!(
        stderr.contains(says),
        "{args:?} should say {says:?}: {stderr}"
    );
}

#[test]
fn every_command_says_what_is_wrong_with_an_address() {
    let cases = [
        (
            "::1:8888",
            "IPv6 address needs brackets before the port (try [::1]:8888)",
        ),
        ("[::1]", "the port is missing (try [::1]:8888)"),
        ("127.0.0.1", "the port is missing (try 127.0.0.1:8888)"),
        (":8888", "the IP address is missing"),
        ("127.0.0.1:99999", "port 99999 is out of range"),
        ("localhost:8888", "host names are not resolved"),
    ];
    for (addr, says) in cases {
        usage_error(&["serve", "--listen", addr], "--listen", says);
        usage_error(&["serve", "--udp", addr], "--udp", says);
        usage_error(&["client", "--addr", addr, "hi"], "--addr", says);
        usage_error(&["bench", "--addr", addr], "--addr", says);
    }
}

#[test]
fn a_negative_number_or_an_impossible_budget_is_a_usage_error_naming_the_flag() {
    usage_error(
        &["serve", "--workers", "-1"],
        "--workers",
        "must be positive",
    );
    usage_error(
        &["serve", "--max-memory", "-5"],
        "--max-memory",
        "must be positive",
    );
    usage_error(&["bench", "--warmup", "-1"], "--warmup", "must be positive");
    usage_error(
        &["bench", "--rate", "-1"],
        "--rate",
        "must be a positive number",
    );
    // A petabyte is a size, and more memory than this machine has.
    usage_error(
        &["serve", "--listen", "127.0.0.1:0", "--max-memory", "1PB"],
        "--max-memory",
        "more than this machine's memory",
    );
    usage_error(&["bench", "--slo-p99-us", "500"], "--sweep", "required");
}

#[test]
fn serve_refuses_more_connections_than_the_hard_open_file_limit_allows() {
    // `ulimit -n 64` sets the hard limit too: the server cannot raise past it.
    let script = format!(
        "ulimit -n 64 && exec '{}' serve --listen 127.0.0.1:0 --max-connections 1000",
        env!("CARGO_BIN_EXE_echo-reactor")
    );
    let (status, stderr) = run_shell(&script);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--max-connections 1000 cannot be reached"),
        "{stderr}"
    );
    assert!(stderr.contains("hard open-file limit is 64"), "{stderr}");
    assert!(!stderr.contains("  "), "one line, single-spaced: {stderr}");
}

#[test]
fn serve_refuses_a_max_buffered_no_memory_could_hold() {
    for args in [
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-buffered",
            "100000GiB",
        ][..],
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-buffered",
            "100000GiB",
            "--max-memory",
            "0",
        ][..],
    ] {
        let (status, stderr) = run(args, &[]);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("--max-buffered 107374182400000 is "),
            "{stderr}"
        );
        assert!(!stderr.contains("  "), "one line, single-spaced: {stderr}");
    }
}

#[test]
fn serve_warns_once_about_each_flag_its_protocol_ignores() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
        .args(["serve", "--listen", "127.0.0.1:0", "--protocol", "json"])
        .args(["--framing", "chunk", "--prefix", "> "])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    while !(seen
        .iter()
        .any(|l: &String| l.contains("--prefix is ignored"))
        && seen
            .iter()
            .any(|l| l.contains("--framing chunk is ignored")))
    {
        match rx.recv_timeout(DEADLINE) {
            Ok(line) => seen.push(line),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no warnings ({e:?}); saw {seen:#?}");
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `sh -c SCRIPT` to its end: status and stderr.
fn run_shell(script: &str) -> (ExitStatus, String) {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]).env("RUST_LOG", "off");
    finish(cmd, script)
}

#[test]
fn bench_usage_errors_exit_2_naming_only_the_flag_at_fault() {
    let flags = [
        "--connections",
        "--threads",
        "--pipeline",
        "--processes",
        "--size",
        "--rate",
        "--duration",
    ];
    for (flag, value) in [
        ("--rate", "0"),
        ("--size", "1"),
        ("--threads", "0"),
        ("--duration", "0"),
        ("--connections", "0"),
        ("--pipeline", "0"),
        ("--processes", "0"),
    ] {
        let (status, stderr) = run(&["bench", flag, value], &[]);
        assert_eq!(status.code(), Some(2), "{flag} {value}: {stderr}");
        for other in flags.iter().filter(|&&f| f != flag) {
            assert!(
                !stderr.contains(other),
                "{flag} {value} names {other}: {stderr}"
            );
        }
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}

/// `serve ARGS` with `ECHO_REACTOR_AUTH_KEY=sesame`: the handshake is on.
fn serve_with_key(args: &[&str]) -> support::ServeProcess {
    let mut all = vec!["--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut cmd = support::ServeProcess::command(&all);
    cmd.env("ECHO_REACTOR_AUTH_KEY", "sesame")
        .env("RUST_LOG", "off");
    support::ServeProcess::spawn_command(cmd, 1)
}

#[test]
fn the_client_names_a_handshake_it_was_not_given_a_key_for_or_that_refused_its_key() {
    for protocol in ["echo", "greet"] {
        let server = serve_with_key(&["--protocol", protocol]);
        let addr = server.addr(0).to_string();
        let client = ["client", "--addr", &addr, "--protocol", protocol, "hi"];
        let (status, stderr) = run(&client, &[]);
        assert_eq!(status.code(), Some(1), "{protocol}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{protocol}: {stderr}");
        assert!(
            stderr.contains("the server asks for authentication (use --auth-key-file"),
            "{protocol}: {stderr}"
        );
        let (status, stderr) = run(&client, &[("ECHO_REACTOR_AUTH_KEY", "wrong")]);
        assert_eq!(status.code(), Some(1), "{protocol}: {stderr}");
        assert!(
            stderr.contains("authentication refused"),
            "{protocol}: {stderr}"
        );
        let (status, stderr) = run(&client, &[("ECHO_REACTOR_AUTH_KEY", "sesame")]);
        assert!(status.success(), "{protocol}: {stderr}");
    }
}

#[test]
fn a_handshake_answered_with_a_reset_is_named_a_refusal() {
    // A server that refuses by resetting (or whose close found our first
    // message unread, which the kernel answers with RST) refused the key
    // all the same: the client says so, not "connection reset".
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let refuser = thread::spawn(move || {
        let (mut stream, _) = server.accept().unwrap();
        stream.write_all(&[7u8; 32]).unwrap(); // a challenge
        let mut answer = [0u8; 32];
        stream.read_exact(&mut answer).unwrap();
        support::reset_on_close(&stream);
    });
    let client = ["client", "--addr", &addr, "hi"];
    let (status, stderr) = run(&client, &[("ECHO_REACTOR_AUTH_KEY", "wrong")]);
    refuser.join().unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("authentication refused"), "{stderr}");
}

#[test]
fn the_client_waits_for_a_reply_as_long_as_timeout_says() {
    // Accepts (the kernel completes the handshake) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let (status, stderr) = run(&["client", "--addr", &addr, "--timeout", "0.2", "hi"], &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no reply in time"), "{stderr}");
    usage_error(&["client", "--timeout", "0", "hi"], "--timeout", "positive");
}

#[test]
fn the_client_refuses_a_line_message_with_a_newline_and_warns_of_messages_after_exit() {
    usage_error(
        &["client", "--addr", "127.0.0.1:9", "one", "two\nthree"],
        "message 2 contains a newline",
        "--raw",
    );
    let server =
        support::ServeProcess::spawn(&["--listen", "127.0.0.1:0", "--protocol", "greet"], 1);
    let addr = server.addr(0).to_string();
    let (status, stderr) = run(
        &[
            "client",
            "--addr",
            &addr,
            "--protocol",
            "greet",
            "Ann",
            "exit",
            "Bob",
            "Cy",
        ],
        &[],
    );
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: 2 messages after `exit` not sent"),
        "{stderr}"
    );
}

#[test]
fn an_empty_key_names_the_variable_or_the_file_it_came_from() {
    for command in [
        &["serve", "--listen", "127.0.0.1:0"][..],
        &["client", "hi"][..],
    ] {
        let (status, stderr) = run(command, &[("ECHO_REACTOR_AUTH_KEY", "")]);
        assert_eq!(status.code(), Some(1), "{command:?}: {stderr}");
        assert!(
            stderr
                .contains("ECHO_REACTOR_AUTH_KEY (set in the environment): the auth key is empty"),
            "{command:?}: {stderr}"
        );
    }
    let empty = std::env::temp_dir().join(format!("echo-reactor-empty-key-{}", std::process::id()));
    std::fs::write(&empty, b"\n").unwrap();
    let (status, stderr) = run(&["serve", "--auth-key-file", empty.to_str().unwrap()], &[]);
    std::fs::remove_file(&empty).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("auth key file /"), "{stderr}");
    assert!(stderr.contains(": the auth key is empty"), "{stderr}");
}

#[test]
fn the_minimal_example_answers_a_bad_address_with_a_usage_line_not_a_panic() {
    // `cargo test` builds the examples next to the test binaries:
    // target/<profile>/deps/<this test> -> target/<profile>/examples/minimal_echo.
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/minimal_echo");
    let mut cmd = Command::new(example);
    cmd.arg("garbage");
    let (status, stderr) = finish(cmd, "minimal_echo garbage");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("usage: minimal_echo [IP:PORT]"),
        "{stderr}"
    );
}

#[test]
fn the_c_peer_the_bench_compares_against_lives_here_builds_and_echoes_every_byte() {
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/c_epoll_echo.c");
    assert!(source.exists(), "the C peer must be in the repository");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("c_epoll_echo_test");
    let built = match Command::new("cc")
        .args(["-O2", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(&source)
        .output()
    {
        Ok(built) => built,
        Err(e) => {
            eprintln!("skipped: no C compiler (cc: {e})");
            return;
        }
    };
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(&out)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), format!("listening on tcp 127.0.0.1:{port}"));
    // 8 MiB, more than the socket buffers hold: partial writes kept in
    // order; then the half-close: every byte still owed is delivered
    // before the server closes.
    let payload = support::pattern(8 << 20, 17);
    let addr = ([127, 0, 0, 1], port).into();
    let got = support::round_trip(addr, payload.clone());
    let _ = child.kill();
    let _ = child.wait();
    support::assert_same_bytes(&got, &payload);
}

#[test]
fn the_repository_carries_what_a_crate_user_expects() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |name: &str| {
        std::fs::read_to_string(root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    // Cargo.toml says `MIT OR Apache-2.0`: both texts must be here.
    assert!(read("Cargo.toml").contains(r#"license = "MIT OR Apache-2.0""#));
    assert!(read("LICENSE-MIT").contains("Permission is hereby granted, free of charge"));
    let apache = read("LICENSE-APACHE");
    assert!(apache.contains("Apache License") && apache.contains("Version 2.0, January 2004"));
    assert!(apache.contains("END OF TERMS AND CONDITIONS"));
    let changelog = read("CHANGELOG.md");
    assert!(changelog.contains("## [Unreleased]") && changelog.contains("## [0.1.0]"));
    let contributing = read("CONTRIBUTING.md");
    for needle in [
        "cargo test",
        "cargo bench",
        "scripts/instructions-per-message.sh",
        "140",
    ] {
        assert!(contributing.contains(needle), "CONTRIBUTING.md: {needle}");
    }
    assert!(read("deny.toml").contains("[licenses]"));
    let ci = read(".ci/run");
    assert!(ci.contains("cargo deny check licenses bans sources"));
    assert!(
        ci.contains("advisories NOT checked"),
        "say so, never skip silently"
    );
}

/// Lines from `rx` until one contains `needle` (panics at [`DEADLINE`]).
fn wait_for_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(DEADLINE.saturating_sub(start.elapsed())) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(e) => panic!("no line with {needle:?} ({e:?}); saw {seen:#?}"),
        }
    }
}

#[test]
fn connections_over_max_connections_are_logged_rate_limited() {
    let mut cmd =
        support::ServeProcess::command(&["--listen", "127.0.0.1:0", "--max-connections", "1"]);
    cmd.env("RUST_LOG", "info").stderr(Stdio::piped());
    let mut server = support::ServeProcess::spawn_command(cmd, 1);
    let stderr = server.follow_stderr();
    let addr = server.addr(0);
    let mut held = support::connect(addr);
    std::io::Write::write_all(&mut held, b"x").unwrap();
    assert_eq!(support::read_exact(&mut held, 1), b"x");
    // Three over the cap: one warning now, the next two held back.
    for _ in 0..3 {
        let mut turned_away = support::connect(addr);
        let mut byte = [0u8; 1];
        let _ = turned_away.read(&mut byte); // EOF or reset: closed at once
    }
    let lines = wait_for_line(
        &stderr,
        "at --max-connections (1): a new connection was closed at once",
    );
    assert!(
        lines
            .last()
            .unwrap()
            .contains("(0 more since the last such warning"),
        "{lines:#?}"
    );
    server.signal(libc::SIGTERM);
    let rejected = server.wait_exit();
    assert!(rejected.0.success());
    assert!(rejected.1.contains("rejected=3"), "{}", rejected.1);
    // The other two were held back (stderr is closed now: the rest is all).
    let more: Vec<String> = stderr
        .iter()
        .filter(|l| l.contains("a new connection was closed at once"))
        .collect();
    assert!(more.is_empty(), "rate-limited to one line: {more:#?}");
}

#[test]
fn the_client_refuses_a_key_with_udp_as_a_usage_error() {
    let (status, stderr) = run(
        &["client", "--udp", "--addr", "127.0.0.1:9", "hi"],
        &[("ECHO_REACTOR_AUTH_KEY", "sesame")],
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--udp cannot do the auth handshake"),
        "{stderr}"
    );
}
