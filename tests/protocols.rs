//! The line protocols, JSON, `--max-line`, the HMAC handshake and the
//! client, over real sockets — including a client written in Python with
//! only its standard `socket` and `hmac` modules.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use echo_reactor::protocol::{
    AuthKey, Authenticated, Echo, Framing, Greet, Json, Prefix, Protocol, CHALLENGE_BYTES,
};
use echo_reactor::reactor::SCRATCH_BYTES;
use echo_reactor::{CloseReason, Config};
use serde_json::Value;
use support::*;

fn start<P: Protocol + Send + 'static>(protocol: P) -> TestServer {
    TestServer::start(Config::default(), protocol)
}

/// Write `input` (one byte per write if `dribble`), shut down our sending
/// side, and read until the server closes.
fn converse(addr: SocketAddr, input: &[u8], dribble: bool) -> Vec<u8> {
    let mut stream = connect(addr);
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let input = input.to_vec();
    let sender = thread::spawn(move || {
        if dribble {
            for byte in &input {
                writer.write_all(std::slice::from_ref(byte)).unwrap();
            }
        } else {
            writer.write_all(&input).unwrap();
        }
        let _ = writer.shutdown(Shutdown::Write);
    });
    let mut received = Vec::new();
    stream.read_to_end(&mut received).unwrap();
    sender.join().unwrap();
    received
}

// ---- prefix ----

#[test]
fn prefix_in_line_framing_answers_each_line_whether_dribbled_or_batched() {
    let server = start(Prefix::new("Echo=>", Framing::Line));
    for dribble in [true, false] {
        let reply = converse(server.addr, b"one\ntwo\r\nthree", dribble);
        assert_eq!(
            reply, b"Echo=>one\nEcho=>two\nEcho=>three\n",
            "dribble={dribble}"
        );
    }
}

#[test]
fn prefix_in_chunk_framing_prefixes_whatever_each_read_returned() {
    let server = start(Prefix::new(">", Framing::Chunk));
    let reply = converse(server.addr, b"abc\n", false);
    assert_eq!(reply, b">abc\n");
    // One byte per write: how many reads the server saw is up to TCP and
    // timing — that is why chunk framing is unreliable. What holds: every
    // byte comes back, in order, behind one or more prefixes.
    let reply = converse(server.addr, b"abcdef", true);
    let prefixes = reply.iter().filter(|&&b| b == b'>').count();
    assert!((1..=6).contains(&prefixes), "{prefixes}");
    let body: Vec<u8> = reply.into_iter().filter(|&b| b != b'>').collect();
    assert_eq!(body, b"abcdef");
}

// ---- greet ----

#[test]
fn greet_welcomes_then_answers_each_line_dribbled_or_batched() {
    let server = start(Greet::new(Framing::Line));
    for dribble in [true, false] {
        let reply = converse(server.addr, b"Ann\nBob\r\n", dribble);
        assert_eq!(
            reply, b"Welcome!\nHello, Ann!\nHello, Bob!\n",
            "dribble={dribble}"
        );
    }
}

#[test]
fn greet_exit_after_pipelined_messages_answers_them_all_then_closes() {
    let server = start(Greet::new(Framing::Line));
    let mut stream = connect(server.addr);
    stream.write_all(b"A\nB\nC\nexit\nD\n").unwrap(); // all in one write; never shut down
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap(); // returns because the server closes
    assert_eq!(reply, b"Welcome!\nHello, A!\nHello, B!\nHello, C!\n");
    let stats = server.wait_for("the close", |s| s.active == 0);
    assert_eq!(stats.closed_by(CloseReason::ProtocolClosed), 1);
}

#[test]
fn greet_in_chunk_framing_takes_each_read_as_one_name() {
    let server = start(Greet::new(Framing::Chunk));
    let mut stream = connect(server.addr);
    assert_eq!(read_exact(&mut stream, 9), b"Welcome!\n");
    stream.write_all(b"Ann").unwrap();
    assert_eq!(read_exact(&mut stream, 12), b"Hello, Ann!\n");
    stream.write_all(b"exit").unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

// ---- json ----

fn json_lines(reply: &[u8]) -> Vec<Value> {
    std::str::from_utf8(reply)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn json_answers_nested_and_back_to_back_values_dribbled_or_batched() {
    let server = start(Json);
    let input =
        r#"{"user": {"name": "Zoë", "tags": ["a", 1, 2.5, null]}, "ok": true}[1,[2,[3]]]"x" 7
"#
        .as_bytes();
    for dribble in [true, false] {
        let reply = converse(server.addr, input, dribble);
        assert_eq!(
            std::str::from_utf8(&reply).unwrap(),
            "{\"user\":{\"name\":\"Zoë\",\"tags\":[\"a\",1,2.5,null]},\"ok\":true}\n[1,[2,[3]]]\n\"x\"\n7\n",
            "dribble={dribble}"
        );
    }
}

#[test]
fn json_waits_for_whitespace_after_a_top_level_number() {
    let server = start(Json);
    let mut stream = connect(server.addr);
    // `]` lets the parser run; it must answer [1] but hold 42 back: 42 may become 420.
    stream.write_all(b"[1] 42").unwrap();
    assert_eq!(read_exact(&mut stream, 4), b"[1]\n");
    let stats = server.wait_for("everything to be read", |s| s.bytes_in == 6);
    assert_eq!(
        stats.bytes_out, 4,
        "42 was answered before it was known complete"
    );
    stream.write_all(b"0 ").unwrap();
    assert_eq!(read_exact(&mut stream, 4), b"420\n");
}

#[test]
fn invalid_json_gets_an_error_object_and_the_connection_closes() {
    let server = start(Json);
    let reply = converse(
        server.addr,
        b"{\"fine\": 1}\n{\"broken\" 2}\n{\"never\": 3}\n",
        false,
    );
    let values = json_lines(&reply);
    assert_eq!(values.len(), 2, "{values:?}");
    assert_eq!(values[0], serde_json::json!({"fine": 1}));
    assert!(values[1]["error"].is_string(), "{}", values[1]);
    let stats = server.wait_for("the close", |s| s.active == 0);
    assert_eq!(stats.closed_by(CloseReason::ProtocolClosed), 1);
}

// ---- --max-line ----

/// Send `head`, then 10 MiB of `x` with no newline; return (what came back, final stats).
fn send_an_endless_line<P: Protocol + Send + 'static>(
    protocol: P,
    head: &'static [u8],
) -> (Vec<u8>, echo_reactor::StatsSnapshot, TestServer) {
    let config = Config {
        max_line: 65_536,
        ..Config::default()
    };
    let server = TestServer::start(config, protocol);
    let mut stream = connect(server.addr);
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        writer.write_all(head).unwrap();
        for _ in 0..160 {
            if writer.write_all(&chunk).is_err() {
                break; // the server closed on us: expected
            }
        }
    });
    let mut reply = Vec::new();
    match stream.read_to_end(&mut reply) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("read: {e}"),
    }
    sender.join().unwrap();
    let stats = server.wait_for("the close", |s| s.closed_by(CloseReason::LineTooLong) == 1);
    (reply, stats, server)
}

#[test]
fn a_10_mib_line_past_max_line_closes_the_connection_with_bounded_memory() {
    let (reply, stats, _server) = send_an_endless_line(Prefix::new("=>", Framing::Line), b"");
    assert!(reply.is_empty());
    let bound = (65_536 + SCRATCH_BYTES) as u64;
    assert!(
        stats.peak_held_bytes <= bound,
        "peak {} > {bound}",
        stats.peak_held_bytes
    );
    assert_eq!(stats.held_bytes, 0);
}

#[test]
fn a_json_value_past_max_line_gets_an_error_object_before_the_close() {
    // A string that never ends (a bare `x` would be refused at once).
    let (reply, stats, _server) = send_an_endless_line(Json, b"[\"");
    let values = json_lines(&reply);
    assert_eq!(values.len(), 1);
    assert!(
        values[0]["error"].as_str().unwrap().contains("max-line"),
        "{}",
        values[0]
    );
    assert!(stats.peak_held_bytes <= (65_536 + SCRATCH_BYTES) as u64);
}

// ---- the handshake ----

const KEY: &[u8] = b"open sesame";

fn auth_server<P: Protocol + Send + 'static>(inner: P, timeout: Duration) -> TestServer {
    let key = AuthKey::new(KEY).unwrap();
    start(Authenticated::new(inner, key, timeout))
}

fn read_challenge(stream: &mut TcpStream) -> Vec<u8> {
    read_exact(stream, CHALLENGE_BYTES)
}

#[test]
fn the_right_answer_opens_the_protocol() {
    let server = auth_server(Greet::new(Framing::Line), Duration::from_secs(5));
    let mut stream = connect(server.addr);
    let challenge = read_challenge(&mut stream);
    stream
        .write_all(&AuthKey::new(KEY).unwrap().answer(&challenge))
        .unwrap();
    assert_eq!(read_exact(&mut stream, 9), b"Welcome!\n");
    stream.write_all(b"Ann\n").unwrap();
    assert_eq!(read_exact(&mut stream, 12), b"Hello, Ann!\n");
}

#[test]
fn challenges_differ_between_connections() {
    let server = auth_server(Echo, Duration::from_secs(5));
    let first = read_challenge(&mut connect(server.addr));
    let second = read_challenge(&mut connect(server.addr));
    assert_ne!(first, second);
}

#[test]
fn a_wrong_answer_closes_with_nothing_more_sent_and_is_counted() {
    let server = auth_server(Echo, Duration::from_secs(5));
    let mut stream = connect(server.addr);
    let challenge = read_challenge(&mut stream);
    let wrong = AuthKey::new(b"guess").unwrap().answer(&challenge);
    stream.write_all(&wrong).unwrap();
    stream.write_all(b"echo me?").unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest); // EOF or reset: closed either way
    assert!(rest.is_empty(), "sent after a failed handshake: {rest:?}");
    let stats = server.wait_for("the refusal", |s| s.closed_by(CloseReason::Refused) == 1);
    assert_eq!(stats.active, 0);
}

#[test]
fn a_refused_client_still_sending_reads_a_clean_close_not_a_reset() {
    // A client writes its (wrong) answer and its first message at once, as
    // `echo-reactor client` does, and more keeps coming: the refusal must
    // reach it as EOF. Closing with those bytes unread would send RST, and
    // the client would report "connection reset" instead of the refusal.
    let server = auth_server(Echo, Duration::from_secs(5));
    let mut stream = connect(server.addr);
    let challenge = read_challenge(&mut stream);
    let mut sent = AuthKey::new(b"guess").unwrap().answer(&challenge).to_vec();
    sent.extend(pattern(4 * SCRATCH_BYTES, 7)); // more than one read takes
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let _ = writer.write_all(&sent);
        let _ = writer.shutdown(Shutdown::Write);
    });
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let read = stream.read_to_end(&mut rest);
    assert!(read.is_ok(), "the refusal arrived as {read:?}, not EOF");
    assert!(rest.is_empty(), "sent after a failed handshake: {rest:?}");
    sender.join().unwrap();
    server.wait_for("the refusal", |s| {
        s.closed_by(CloseReason::Refused) == 1 && s.active == 0
    });
}

#[test]
fn a_flood_of_failed_handshakes_logs_one_warning_per_interval_not_one_each() {
    // A client-triggered warning per event would let a client keep the
    // reactor busy writing to stderr (or blocked on it).
    let dir = std::env::temp_dir().join(format!("echo-reactor-warn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("key");
    std::fs::write(&key_file, KEY).unwrap();
    let mut cmd = ServeProcess::command(&[
        "--listen",
        "127.0.0.1:0",
        "--auth-key-file",
        key_file.to_str().unwrap(),
    ]);
    cmd.stderr(Stdio::piped());
    let mut server = ServeProcess::spawn_command(cmd, 1);
    let stderr = server.follow_stderr();
    const TRIES: usize = 40;
    for _ in 0..TRIES {
        let mut stream = connect(server.addr(0));
        let challenge = read_challenge(&mut stream);
        let wrong = AuthKey::new(b"guess").unwrap().answer(&challenge);
        stream.write_all(&wrong).unwrap();
        let _ = stream.read_to_end(&mut Vec::new()); // closed by the server
    }
    server.signal(libc::SIGTERM);
    let (status, stdout) = server.wait_exit();
    assert!(status.success());
    assert_eq!(
        echo_reactor::stats::stat_value(&stdout, "closed_refused"),
        Some(TRIES as u64),
        "{stdout}"
    );
    let warnings = stderr
        .iter()
        .filter(|line| line.contains("handshake failed"))
        .count();
    assert_eq!(warnings, 1, "one warning, the rest counted as suppressed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn thirty_one_bytes_then_silence_is_closed_by_the_deadline() {
    let server = auth_server(Echo, Duration::from_millis(300));
    let mut stream = connect(server.addr);
    let challenge = read_challenge(&mut stream);
    let answer = AuthKey::new(KEY).unwrap().answer(&challenge);
    stream.write_all(&answer[..31]).unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty());
    server.wait_for("the deadline refusal", |s| {
        s.closed_by(CloseReason::Refused) == 1
    });
}

#[test]
fn an_answer_dribbled_one_byte_per_write_is_accepted() {
    let server = auth_server(Echo, Duration::from_secs(5));
    let mut stream = connect(server.addr);
    stream.set_nodelay(true).unwrap();
    let challenge = read_challenge(&mut stream);
    for byte in AuthKey::new(KEY).unwrap().answer(&challenge) {
        stream.write_all(&[byte]).unwrap();
    }
    stream.write_all(b"after\n").unwrap();
    assert_eq!(read_exact(&mut stream, 6), b"after\n");
}

#[test]
fn the_answer_and_the_first_message_in_one_write_lose_nothing() {
    let server = auth_server(Echo, Duration::from_secs(5));
    let mut stream = connect(server.addr);
    let challenge = read_challenge(&mut stream);
    let mut both = AuthKey::new(KEY).unwrap().answer(&challenge).to_vec();
    both.extend_from_slice(b"first message\n");
    stream.write_all(&both).unwrap();
    assert_eq!(read_exact(&mut stream, 14), b"first message\n");
}

// ---- the client ----

fn client(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_echo-reactor"));
    cmd.arg("client").args(args).env("RUST_LOG", "off");
    cmd
}

fn client_output(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_client_sends_its_arguments_to_each_protocol_and_prints_one_reply_each() {
    let cases: Vec<(TestServer, &str, &str)> = vec![
        (start(Echo), "echo", "hi\nthere\n"),
        (start(echo_reactor::protocol::Upper), "upper", "HI\nTHERE\n"),
        (
            start(Prefix::new("Echo=>", Framing::Line)),
            "prefix",
            "Echo=>hi\nEcho=>there\n",
        ),
        (
            start(Greet::new(Framing::Line)),
            "greet",
            "Welcome!\nHello, hi!\nHello, there!\n",
        ),
    ];
    for (server, protocol, expected) in &cases {
        let addr = server.addr.to_string();
        let out = client_output(&mut client(&[
            "--addr",
            &addr,
            "--protocol",
            protocol,
            "hi",
            "there",
        ]));
        assert_eq!(&out, expected, "{protocol}");
    }
    let server = start(Json);
    let addr = server.addr.to_string();
    let out = client_output(&mut client(&[
        "--addr",
        &addr,
        "--protocol",
        "json",
        r#"{"a": [1, 2]}"#,
    ]));
    assert_eq!(out, "{\"a\":[1,2]}\n");
}

#[test]
fn the_client_answers_the_handshake_with_a_key_file() {
    let server = auth_server(Echo, Duration::from_secs(5));
    let key_file =
        std::env::temp_dir().join(format!("echo-reactor-test-key-{}", std::process::id()));
    std::fs::write(&key_file, [KEY, b"\n"].concat()).unwrap();
    let addr = server.addr.to_string();
    let out = client_output(&mut client(&[
        "--addr",
        &addr,
        "--auth-key-file",
        key_file.to_str().unwrap(),
        "secret",
    ]));
    std::fs::remove_file(&key_file).unwrap();
    assert_eq!(out, "secret\n");
}

#[test]
fn the_client_reads_one_message_per_line_from_a_pipe_without_a_prompt() {
    let server = start(Greet::new(Framing::Line));
    let addr = server.addr.to_string();
    let mut child = client(&["--addr", &addr, "--protocol", "greet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Ann\nBob\nexit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "Welcome!\nHello, Ann!\nHello, Bob!\n"
    );
}

#[test]
fn the_client_prompts_on_a_terminal_skips_empty_input_and_quits_on_exit() {
    let server = start(echo_reactor::protocol::Upper);
    // Python's pty module gives the client a real terminal on stdin.
    let script = r#"
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out = b""
def read_until(token, count=1):
    global out
    while out.count(token) < count:
        chunk = os.read(fd, 1024)
        if not chunk:
            raise SystemExit("client ended early: %r" % out)
        out += chunk
read_until(b">>> ")
os.write(fd, b"\n")            # empty: skipped, prompt again
read_until(b">>> ", 2)
os.write(fd, b"hello\n")
read_until(b"HELLO")
read_until(b">>> ", 3)         # wait for each prompt: a pty may drop output once the child exits
os.write(fd, b"exit\n")
try:
    while os.read(fd, 1024):
        pass
except OSError:
    pass                       # EIO once the client has exited
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode() + "\nstatus=%d" % os.waitstatus_to_exitcode(status))
"#;
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            env!("CARGO_BIN_EXE_echo-reactor"),
            "client",
            "--addr",
            &server.addr.to_string(),
            "--protocol",
            "upper",
        ])
        .env("RUST_LOG", "off")
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.ends_with("status=0"), "{text}");
    assert_eq!(
        text.matches(">>> ").count(),
        3,
        "prompt, prompt after the empty line, prompt before exit: {text}"
    );
    assert!(text.contains("HELLO"), "{text}");
}

#[test]
fn the_client_reports_a_refused_connection_in_one_line_with_exit_1() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = unused.local_addr().unwrap().to_string();
    drop(unused);
    let out = client(&["--addr", &addr, "hi"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("connect {addr}")), "{stderr}");
}

// ---- an outside implementation ----

#[test]
fn a_python_client_with_only_socket_and_hmac_does_the_handshake_and_json() {
    let server = auth_server(Json, Duration::from_secs(5));
    let script = r#"
import hmac, json, socket, sys
key, port = sys.argv[1].encode(), int(sys.argv[2])
sock = socket.create_connection(("127.0.0.1", port))
challenge = b""
while len(challenge) < 32:
    challenge += sock.recv(32 - len(challenge))
# The answer and the first value in one send: nothing may be lost.
sock.sendall(hmac.new(key, challenge, "sha256").digest() + json.dumps({"n": 1, "s": "é"}).encode())
sock.sendall(b" " + json.dumps([1, {"deep": [True, None]}]).encode() + b"\n")
reply = b""
while reply.count(b"\n") < 2:
    chunk = sock.recv(4096)
    if not chunk:
        break
    reply += chunk
print(reply.decode(), end="")
"#;
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            std::str::from_utf8(KEY).unwrap(),
            &server.addr.port().to_string(),
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"n\":1,\"s\":\"é\"}\n[1,{\"deep\":[true,null]}]\n"
    );
}

#[test]
fn the_client_speaks_udp_and_unix_and_the_handshake_guards_unix_sockets() {
    // UDP: one datagram per message.
    let config = Config {
        listen: vec![],
        udp: vec!["127.0.0.1:0".parse().unwrap()],
        ..Config::default()
    };
    let udp = TestServer::start(config, Greet::new(Framing::Line));
    let addr = udp.udp_addr.unwrap().to_string();
    let out = client_output(&mut client(&["--addr", &addr, "--udp", "Ann"]));
    assert_eq!(out, "Hello, Ann!\n");

    // Unix, behind the handshake, through the client with a key file.
    let path = std::env::temp_dir().join(format!("echo-reactor-auth-{}.sock", std::process::id()));
    let config = Config {
        listen: vec![],
        unix: Some(path.clone()),
        ..Config::default()
    };
    let key = AuthKey::new(KEY).unwrap();
    let _unix = TestServer::start(
        config,
        Authenticated::new(Echo, key, Duration::from_secs(5)),
    );
    let key_file =
        std::env::temp_dir().join(format!("echo-reactor-unix-key-{}", std::process::id()));
    std::fs::write(&key_file, KEY).unwrap();
    let out = client_output(&mut client(&[
        "--unix",
        path.to_str().unwrap(),
        "--auth-key-file",
        key_file.to_str().unwrap(),
        "over unix",
    ]));
    assert_eq!(out, "over unix\n");
    // Without the key, the Unix client gets no echo: the challenge is all it sees.
    let mut raw = std::os::unix::net::UnixStream::connect(&path).unwrap();
    raw.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut challenge = [0u8; CHALLENGE_BYTES];
    raw.read_exact(&mut challenge).unwrap();
    raw.write_all(&[0u8; CHALLENGE_BYTES]).unwrap();
    let mut rest = Vec::new();
    let _ = raw.read_to_end(&mut rest);
    assert!(rest.is_empty());
    std::fs::remove_file(&key_file).unwrap();
}

// ---- --max-line, however the input is cut ----

/// What a client of `protocol` under `--max-line max_line` gets for
/// `input` cut at `cuts`, driven the way the reactor drives it: the
/// unconsumed rest is kept and passed again with the next piece, and past
/// `max_line` it ends the connection (`on_input_too_long`). Returns the
/// bytes sent and whether the connection ended for a too-long message.
fn served_with_max_line<P: Protocol>(
    protocol: P,
    max_line: usize,
    input: &[u8],
    cuts: &[usize],
) -> (Vec<u8>, bool) {
    use echo_reactor::protocol::Reply;
    let protocol = protocol.with_max_line(max_line);
    let mut sent = Vec::new();
    let mut session = protocol.on_open(&mut Reply::new(&mut sent));
    let mut pending = Vec::new();
    let mut from = 0;
    for end in cuts.iter().copied().chain([input.len()]) {
        pending.extend_from_slice(&input[from..end]);
        from = end;
        let mut reply = Reply::new(&mut sent);
        let used = protocol.on_bytes(&mut session, &pending, &mut reply);
        let closing = reply.wants_close() || reply.refused();
        pending.drain(..used);
        if closing {
            return (sent, false);
        }
        if pending.len() > max_line {
            protocol.on_input_too_long(&mut session, &mut Reply::new(&mut sent));
            return (sent, true);
        }
    }
    (sent, false)
}

#[test]
fn max_line_means_the_same_whether_a_message_comes_whole_or_split_at_any_point() {
    // A message longer than --max-line closes the connection. With
    // --max-line 16: a 20-byte message closes it, a 16-byte one is
    // answered, however the bytes arrive.
    let long_line = [&b"Ann\n"[..], &[b'x'; 20], b"\n"].concat();
    let fits = [&b"Ann\n"[..], &[b'y'; 16], b"\n"].concat();
    let long_json = [&b"[1] "[..], b"\"", &[b'x'; 18], b"\" "].concat();
    let json_fits = [&b"[1] "[..], b"\"", &[b'y'; 14], b"\" "].concat();
    let cases: [(&str, &[u8], bool); 6] = [
        ("greet", &long_line, true),
        ("greet", &fits, false),
        ("prefix", &long_line, true),
        ("prefix", &fits, false),
        ("json", &long_json, true),
        ("json", &json_fits, false),
    ];
    for (name, input, too_long) in cases {
        let serve = |cuts: &[usize]| match name {
            "greet" => served_with_max_line(Greet::default(), 16, input, cuts),
            "prefix" => served_with_max_line(Prefix::new(">", Framing::Line), 16, input, cuts),
            _ => served_with_max_line(Json, 16, input, cuts),
        };
        let whole = serve(&[]);
        assert_eq!(
            whole.1,
            too_long,
            "{name} {:?}",
            String::from_utf8_lossy(input)
        );
        for cut in 1..input.len() {
            assert_eq!(serve(&[cut]), whole, "{name}: cut at {cut}");
        }
        // And one byte at a time.
        let every: Vec<usize> = (1..input.len()).collect();
        assert_eq!(serve(&every), whole, "{name}: byte by byte");
    }
}

#[test]
fn a_whole_line_past_max_line_in_one_write_closes_the_connection() {
    for (protocol, input, answered) in [
        (
            "greet",
            &b"Ann\nxxxxxxxxxxxxxxxxxxxx\nBob\n"[..],
            &b"Welcome!\nHello, Ann!\n"[..],
        ),
        (
            "json",
            &b"[1] \"xxxxxxxxxxxxxxxxxx\" [2] "[..],
            &b"[1]\n{\"error\":\"value longer than --max-line\"}\n"[..],
        ),
    ] {
        let config = Config {
            max_line: 16,
            ..Config::default()
        };
        let server = match protocol {
            "greet" => TestServer::start(config, Greet::default()),
            _ => TestServer::start(config, Json),
        };
        let reply = converse(server.addr, input, false);
        assert_eq!(
            String::from_utf8_lossy(&reply),
            String::from_utf8_lossy(answered),
            "{protocol}"
        );
        server.wait_for("the close", |s| s.closed_by(CloseReason::LineTooLong) == 1);
    }
}
