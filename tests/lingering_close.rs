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
