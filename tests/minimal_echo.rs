//! examples/minimal_echo.rs — the learner's first read — really is correct:
//! every byte comes back in order through a small receive window (partial
//! writes kept), and replies still owed at the client's EOF are delivered
//! before the server closes (half-close).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use support::{assert_same_bytes, pattern, DEADLINE};

/// `cargo test` builds the examples next to the test binaries:
/// target/<profile>/deps/<this test> -> target/<profile>/examples/minimal_echo.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("minimal_echo")
}

#[test]
fn the_minimal_echo_server_returns_every_byte_even_through_a_half_close() {
    let mut child = Command::new(example_binary())
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .expect("run examples/minimal_echo (built by cargo test)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on tcp ")
        .unwrap()
        .parse()
        .unwrap();

    // A 4 KiB receive window: the server's writes come up short and it
    // must keep the tails for the writable edge.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    // 8 MiB, all sent before reading a byte: more than the server's send
    // buffer can hold (at most 4 MiB), so at our EOF it still owes replies.
    let payload = pattern(8 << 20, 11);
    stream.write_all(&payload).unwrap(); // minimal_echo reads everything, so this does not block
    stream.shutdown(Shutdown::Write).unwrap();
    let mut received = Vec::new();
    let result = stream.read_to_end(&mut received);
    let _ = child.kill(); // by the handle we started it with
    let _ = child.wait();
    result.expect("read until the server closes");
    assert_same_bytes(&received, &payload);
}
