//! When the server ends a connection while the client is still sending
//! (greet `exit`, a JSON error, `--max-line`, shutdown), every reply it
//! already owed arrives, followed by a clean EOF — never `ECONNRESET`.
//!
//! Each client here writes on one thread and reads on another, the way a
//! pipelining client does, and keeps writing after the point where the
//! server decides to close: exactly the case where a plain `close()` with
//! unread input makes the kernel send RST and drop queued replies.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;

use echo_reactor::protocol::{Echo, Greet, Json, Protocol};
use echo_reactor::Config;
use support::*;

/// What the reading side saw: every byte, and how the stream ended.
struct Received {
    bytes: Vec<u8>,
    ended: Result<(), ErrorKind>,
}

/// Write `before`, then `after` (bytes the server will never answer),
/// from a writer thread, while this thread reads until the stream ends.
/// Write errors after the server's close are expected and ignored.
fn write_past_the_close(addr: SocketAddr, before: Vec<u8>, after: Vec<u8>) -> Received {
    let mut stream = connect(addr);
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let _ = writer
            .write_all(&before)
            .and_then(|_| writer.write_all(&after));
        // Deliberately no shutdown: the client is still "sending" as far as
        // it knows, and holds its socket open until the reader is done.
        writer
    });
    let received = read_until_end(&mut stream);
    drop(sender.join().unwrap());
    received
}

fn read_until_end(stream: &mut TcpStream) -> Received {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let ended = loop {
        match stream.read(&mut chunk) {
            Ok(0) => break Ok(()),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => break Err(e.kind()),
        }
    };
    Received { bytes, ended }
}

fn lines(prefix: &str, count: usize) -> Vec<u8> {
    prefix.repeat(count).into_bytes()
}

fn start<P: Protocol + Send + 'static>(protocol: P) -> TestServer {
    TestServer::start(Config::default(), protocol)
}

#[test]
fn greet_exit_with_input_still_arriving_delivers_every_owed_reply_then_eof() {
    let server = start(Greet::default());
    let mut before = lines("x\n", 300_000);
    before.extend_from_slice(b"exit\n");
    let got = write_past_the_close(server.addr, before, lines("y\n", 200_000));
    let text = String::from_utf8(got.bytes).unwrap();
    let answers = text.lines().filter(|l| *l == "Hello, x!").count();
    assert_eq!(answers, 300_000, "every reply owed before `exit`");
    assert!(text.starts_with("Welcome!\n") && !text.contains("Hello, y!"));
    assert_eq!(got.ended, Ok(()), "a clean EOF, not a reset");
    let stats = server.wait_for("the close", |s| s.active == 0);
    assert!(stats.lingers >= 1, "{stats}");
    assert!(stats.bytes_discarded > 0, "{stats}");
}

#[test]
fn a_json_error_with_input_still_arriving_delivers_the_answers_and_the_error_then_eof() {
    let server = start(Json);
    let mut before = lines("[1,2,3]\n", 100_000);
    before.extend_from_slice(b"{oops}\n");
    let got = write_past_the_close(server.addr, before, lines("[4]\n", 100_000));
    let text = String::from_utf8(got.bytes).unwrap();
    let mut replies = text.lines();
    assert_eq!(
        replies
            .by_ref()
            .take(100_000)
            .filter(|l| *l == "[1,2,3]")
            .count(),
        100_000
    );
    let error = replies.next().expect("the error object");
    assert!(error.starts_with("{\"error\":"), "{error}");
    assert_eq!(replies.next(), None, "nothing after the error");
    assert_eq!(got.ended, Ok(()));
}

#[test]
fn a_line_past_max_line_with_input_still_arriving_delivers_earlier_replies_then_eof() {
    let config = Config {
        max_line: 1024,
        ..Config::default()
    };
    let server = TestServer::start(config, Greet::default());
    let mut before = lines("x\n", 100_000);
    // A line far longer than --max-line (and longer than any one read, so
    // no newline can complete it within the read that crosses the limit).
    before.extend(std::iter::repeat_n(b'z', 256 * 1024));
    let got = write_past_the_close(server.addr, before, lines("y\n", 100_000));
    let text = String::from_utf8(got.bytes).unwrap();
    assert_eq!(text.lines().filter(|l| *l == "Hello, x!").count(), 100_000);
    assert_eq!(got.ended, Ok(()));
}

#[test]
fn shutdown_while_a_client_is_still_sending_delivers_what_was_read_then_eof() {
    let server = start(Echo);
    let mut stream = connect(server.addr);
    let mut writer = stream.try_clone().unwrap();
    // Keep sending until the server stops us; the reader checks that the
    // echo it gets back is an unbroken prefix of what was sent.
    let sender = thread::spawn(move || {
        let block = pattern(64 * 1024, 7);
        for _ in 0..2_000 {
            if writer.write_all(&block).is_err() {
                break;
            }
        }
        writer
    });
    server.wait_for("echo under way", |s| s.bytes_out > 1024 * 1024);
    let handle = server.handle.clone();
    let stopper = thread::spawn(move || handle.stop());
    let got = read_until_end(&mut stream);
    stopper.join().unwrap();
    let stats = server.stop();
    drop(sender.join().unwrap());
    assert_eq!(got.ended, Ok(()), "a clean EOF, not a reset ({stats})");
    let block = pattern(64 * 1024, 7);
    for (i, chunk) in got.bytes.chunks(block.len()).enumerate() {
        assert_eq!(chunk, &block[..chunk.len()], "block {i} of the echo");
    }
    assert_eq!(
        got.bytes.len() as u64,
        stats.bytes_out,
        "every echoed byte arrived"
    );
}

#[test]
fn shutdown_closes_idle_clients_at_once_and_lingers_only_on_one_it_is_answering() {
    // Idle clients, just connected and never answered (we owe them
    // nothing), are closed at once; a client we are answering right now
    // lingers until it closes. The idle ones keep their sockets open: had
    // the server lingered on them, it would wait out each linger (counted
    // in linger_timeouts) before exiting.
    const IDLE: usize = 100;
    let config = Config {
        shutdown_grace: std::time::Duration::from_secs(60),
        ..Config::default()
    };
    let server = TestServer::start(config, Echo);
    let mut idle: Vec<TcpStream> = (0..IDLE).map(|_| connect(server.addr)).collect();
    let mut talker = connect(server.addr);
    let mut reader = talker.try_clone().unwrap();
    // Talks until the server ends the conversation, then closes.
    let talking = thread::spawn(move || {
        let mut rounds = 0u64;
        loop {
            if talker.write_all(b"ping").is_err() {
                break;
            }
            let mut reply = [0u8; 4];
            match reader.read_exact(&mut reply) {
                Ok(()) => rounds += 1,
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => break,
                Err(e) => panic!("talker: {e} after {rounds} rounds"),
            }
            thread::sleep(std::time::Duration::from_millis(5));
        }
        rounds
    });
    server.wait_for("every client accepted and talking", |s| {
        s.active == IDLE as u64 + 1 && s.bytes_out >= 4
    });
    let handle = server.handle.clone();
    let stopper = thread::spawn(move || handle.stop());
    for (i, stream) in idle.iter_mut().enumerate() {
        let got = read_until_end(stream);
        assert_eq!(got.ended, Ok(()), "idle client {i}: a clean EOF");
        assert!(got.bytes.is_empty());
    }
    assert!(talking.join().unwrap() > 0);
    stopper.join().unwrap();
    let stats = server.stop();
    assert_eq!(stats.linger_timeouts, 0, "{stats}");
    assert_eq!(
        stats.lingers, 1,
        "only the talking client lingered: {stats}"
    );
    drop(idle);
}
