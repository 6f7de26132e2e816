//! A custom protocol written against the library: the tutorials' "gate".
//!
//! The classic Python server reads one message with a 5 s timeout: `1` gets
//! `welcome to server!`, anything else `please go out!`, and the
//! connection closes either way:
//!
//! ```python
//! connection.settimeout(5)
//! buf = connection.recv(1024)
//! connection.send(b'welcome to server!' if buf == b'1' else b'please go out!')
//! connection.close()
//! ```
//!
//! Here the timeout is a protocol deadline on the reactor's timers, and the
//! message is a line (so `1` typed into `nc` works too). Thousands of
//! clients can wait at the gate at once; none blocks another.
//!
//! Run: `cargo run --example gate -- 127.0.0.1:7000`, then
//! `echo 1 | nc -q1 127.0.0.1 7000`.

use std::time::Duration;

use echo_reactor::protocol::framing::{Flow, LineCursor};
use echo_reactor::protocol::{Protocol, Reply};
use echo_reactor::{Config, Server};

/// How long a client may take to say its word.
const GATE_TIMEOUT: Duration = Duration::from_secs(5);

/// One line in, one verdict out, then close.
struct Gate;

impl Protocol for Gate {
    type Session = LineCursor;

    fn on_open(&self, reply: &mut Reply<'_>) -> LineCursor {
        reply.set_deadline(GATE_TIMEOUT); // settimeout(5)
        LineCursor::default()
    }

    fn on_bytes(&self, cursor: &mut LineCursor, input: &[u8], reply: &mut Reply<'_>) -> usize {
        cursor.split(input, |word| {
            reply.send(if word == b"1" {
                b"welcome to server!\n"
            } else {
                b"please go out!\n"
            });
            reply.close(); // after the verdict is sent
            Flow::Stop
        })
    }

    fn on_deadline(&self, _: &mut LineCursor, reply: &mut Reply<'_>) {
        log::info!("time out"); // as the tutorial prints
        reply.close();
    }

    fn on_datagram(&self, datagram: &[u8], reply: &mut Vec<u8>) {
        let verdict: &[u8] = if datagram == b"1" {
            b"welcome to server!"
        } else {
            b"please go out!"
        };
        reply.extend_from_slice(verdict);
    }
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".to_string());
    let addr = listen.parse().map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{listen}: {e}"))
    })?;
    let config = Config {
        listen: vec![addr],
        handle_signals: true, // Ctrl-C shuts down gracefully
        ..Config::default()
    };
    let server = Server::bind(&config, Gate)?;
    println!("gate listening on {}", server.local_addrs()[0]);
    let stats = server.run()?;
    println!("{stats}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn gate_server() -> (std::net::SocketAddr, echo_reactor::ServerHandle) {
        let config = Config {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            ..Config::default()
        };
        let server = Server::bind(&config, Gate).unwrap();
        let (addr, handle) = (server.local_addrs()[0], server.handle());
        std::thread::spawn(move || server.run());
        (addr, handle)
    }

    fn knock(addr: std::net::SocketAddr, word: &[u8]) -> Vec<u8> {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.write_all(word).unwrap();
        let mut verdict = Vec::new();
        stream.read_to_end(&mut verdict).unwrap(); // the gate closes after its verdict
        verdict
    }

    #[test]
    fn one_is_welcome_and_anything_else_is_sent_away() {
        let (addr, handle) = gate_server();
        assert_eq!(knock(addr, b"1\n"), b"welcome to server!\n");
        assert_eq!(knock(addr, b"2\n"), b"please go out!\n");
        assert_eq!(knock(addr, b"1\r\nmore\n"), b"welcome to server!\n");
        handle.stop();
    }
}
