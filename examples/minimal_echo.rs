//! The smallest correct mio echo server: read this first.
//!
//! One `Poll`, a listener, a `Slab` of connections keyed by their tokens, and
//! what the tutorials skip: edge-triggered reads drained until `WouldBlock`,
//! partial writes kept for the writable edge, EOF with replies still owed,
//! and running out of descriptors. (No backpressure, budgets or timers: src/
//! adds those.) Its Python twin, line for line: examples/minimal_echo.py.
//! Run: `cargo run --example minimal_echo [ADDR]`, then
//! `cargo run -- client --addr 127.0.0.1:9000 hello`.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX); // slab keys never get this high

struct Conn {
    stream: TcpStream,
    unsent: Vec<u8>, // bytes the kernel has not taken yet, in order
    peer_done: bool, // EOF seen: close once `unsent` is empty
}

fn main() -> std::io::Result<()> {
    let mut poll = Poll::new()?;
    let arg = std::env::args().nth(1).unwrap_or("127.0.0.1:9000".into()); // port 0: any
    let Ok(addr) = arg.parse() else {
        eprintln!("usage: minimal_echo [IP:PORT], e.g. 127.0.0.1:9000 (not {arg:?})");
        std::process::exit(2); // a usage error, like clap's: no panic, no backtrace
    };
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 64 * 1024];
    let mut spare = File::open("/dev/null").ok(); // a descriptor kept for EMFILE
    println!("listening on tcp {}", listener.local_addr()?);

    loop {
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal: not an error
            result => result?,
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                // One edge may stand for many waiting clients: accept them all.
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let entry = conns.vacant_entry();
                            let interest = Interest::READABLE | Interest::WRITABLE;
                            poll.registry()
                                .register(&mut stream, Token(entry.key()), interest)?;
                            let (unsent, peer_done) = (Vec::new(), false);
                            entry.insert(Conn {
                                stream,
                                unsent,
                                peer_done,
                            });
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            // Out of descriptors (EMFILE): the client stays queued and no new
                            // edge will say so. Refuse it cleanly with the spare descriptor.
                            eprintln!("accept: {e}");
                            drop(spare.take()); // frees one descriptor (if we hold it)
                            let refused = listener.accept().map(drop); // closed at once
                            spare = File::open("/dev/null").ok();
                            let Ok(_) = refused else { break }; // not EMFILE: stop, no spin
                        }
                    }
                }
                continue;
            }
            let key = event.token().0;
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            // Writable: finish what a partial write left behind.
            let mut done = event.is_writable() && flush(conn);
            if event.is_readable() && !done && !conn.peer_done {
                // Edge-triggered: this event will not repeat for bytes we
                // leave unread, so read until the kernel says WouldBlock.
                loop {
                    match conn.stream.read(&mut buf) {
                        Ok(0) => {
                            conn.peer_done = true; // EOF (Python: recv returned b'')
                            break;
                        }
                        Ok(n) => {
                            conn.unsent.extend_from_slice(&buf[..n]);
                            if flush(conn) {
                                done = true;
                                break;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => {
                            done = true; // reset or worse
                            break;
                        }
                    }
                }
            }
            // Half-close: the peer sent FIN but may still read; close once every reply left.
            if done || (conn.peer_done && conn.unsent.is_empty()) {
                conns.remove(key); // dropping the stream closes it (and unregisters it)
            }
        }
    }
}

/// Write as much of `unsent` as the kernel takes now. Returns true if the
/// connection is dead. The rest stays, in order, for the next writable edge.
fn flush(conn: &mut Conn) -> bool {
    while !conn.unsent.is_empty() {
        match conn.stream.write(&conn.unsent) {
            Ok(0) => return true,
            Ok(n) => drop(conn.unsent.drain(..n)), // maybe partial: drop only what was sent
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false, // buffer full: wait
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
    false
}
