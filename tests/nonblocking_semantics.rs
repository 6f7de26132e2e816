//! Pins the kernel behaviour the reactor depends on, through mio directly.
//! If a platform breaks one of these, the reactor's shortcuts are wrong
//! there, and these tests say so loudly (comments in src/ cite them by name).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream as StdStream;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const CLIENT: Token = Token(1);
const DEADLINE: Duration = Duration::from_secs(10);

/// A registered, edge-triggered server-side stream and its blocking peer.
fn pair(interest: Interest) -> (Poll, TcpStream, StdStream) {
    let poll = Poll::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let peer = StdStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server_side, _) = loop {
        match listener.accept() {
            Ok(accepted) => break accepted,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("accept: {e}"),
        }
    };
    poll.registry()
        .register(&mut server_side, CLIENT, interest)
        .unwrap();
    (poll, server_side, peer)
}

/// Wait (up to the deadline) for an event on CLIENT matching `wanted`.
fn wait_for_event(poll: &mut Poll, wanted: impl Fn(&mio::event::Event) -> bool) -> bool {
    let mut events = Events::with_capacity(16);
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        if events.iter().any(|e| e.token() == CLIENT && wanted(e)) {
            return true;
        }
    }
    false
}

#[test]
fn a_short_read_then_new_data_brings_a_new_readable_event() {
    let (mut poll, mut server_side, mut peer) = pair(Interest::READABLE);
    peer.write_all(b"first").unwrap();
    assert!(wait_for_event(&mut poll, |e| e.is_readable()));

    let mut buf = [0u8; 4096];
    assert_eq!(server_side.read(&mut buf).unwrap(), 5, "a short read");
    // We do NOT read again until WouldBlock. The reactor relies on the
    // kernel raising a fresh edge when new bytes arrive anyway.
    peer.write_all(b"second").unwrap();
    assert!(
        wait_for_event(&mut poll, |e| e.is_readable()),
        "no readable edge after a short read: the short-read shortcut is unsafe here"
    );
    assert_eq!(server_side.read(&mut buf).unwrap(), 6);
}

#[test]
fn fin_reads_as_ok_zero_and_is_flagged_read_closed() {
    let (mut poll, mut server_side, peer) = pair(Interest::READABLE);
    peer.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(wait_for_event(&mut poll, |e| e.is_read_closed()));
    let mut buf = [0u8; 16];
    assert_eq!(server_side.read(&mut buf).unwrap(), 0);
}

#[test]
fn a_full_send_buffer_says_wouldblock_and_draining_it_brings_a_writable_event() {
    let (mut poll, mut server_side, mut peer) = pair(Interest::READABLE | Interest::WRITABLE);
    assert!(
        wait_for_event(&mut poll, |e| e.is_writable()),
        "a new socket is writable"
    );
    let chunk = vec![0u8; 64 * 1024];
    let mut filled = false;
    for _ in 0..10_000 {
        match server_side.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                filled = true;
                break;
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(filled, "the send buffer never filled");
    // The peer drains; the registration made once at the start reports it.
    peer.set_read_timeout(Some(DEADLINE)).unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        while total < 4 << 20 {
            match peer.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    });
    assert!(wait_for_event(&mut poll, |e| e.is_writable()));
    drop(server_side);
    reader.join().unwrap();
}

#[test]
fn closing_with_unread_input_sends_a_reset() {
    // Why the reactor lingers (src/connection/linger.rs): close() with bytes
    // still unread in the receive queue does not send FIN but RST, and the
    // peer sees ECONNRESET instead of a clean end of stream.
    let (_poll, mut server_side, mut peer) = pair(Interest::READABLE);
    peer.set_read_timeout(Some(DEADLINE)).unwrap();
    peer.write_all(b"never read by the server").unwrap();
    // Wait until those bytes sit in the server's receive queue.
    let start = Instant::now();
    while server_side.peek(&mut [0u8; 1]).is_err() {
        assert!(start.elapsed() < DEADLINE, "the bytes never arrived");
        std::thread::yield_now();
    }
    server_side.write_all(b"reply").unwrap();
    drop(server_side);
    let mut got = Vec::new();
    let end = peer.read_to_end(&mut got);
    assert_eq!(
        end.map_err(|e| e.kind()).err(),
        Some(ErrorKind::ConnectionReset),
        "the stream ended in a reset (received {got:?} first)"
    );
}
