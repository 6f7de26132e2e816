//! Test-only sockets: [`ScriptedStream`] plays a script, [`SimSocket`] is
//! a small model of a TCP socket for random (property-based) tests.
//!
//! Real sockets make short writes, resets and `EINTR` rare and timing
//! dependent. `ScriptedStream` returns exactly what the script says, in
//! order, so the drain and flush loops can be tested deterministically.
//! Each `read` or `write` call takes the next step; reads and writes share
//! one script, because the code under test decides which it calls.
//!
//! A random script cannot know which call comes next, so property tests use
//! `SimSocket` instead: a receive queue the test's "peer" fills, a send
//! buffer of fixed capacity the peer drains, and per-call noise (`EINTR`,
//! writes that take less than there is room for). It keeps the kernel
//! behaviour the reactor relies on — a read returns everything queued up
//! to the buffer's size, so a short read means the queue is empty
//! (tests/nonblocking_semantics.rs) — and reports, as epoll would, which
//! edges each peer action raises.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};

use crate::stream::Linger;

#[derive(Debug)]
enum Step {
    /// A read returns these bytes (as many as fit; the rest stays queued).
    Give(Vec<u8>),
    /// A read returns `Ok(0)`.
    Eof,
    /// A write takes at most this many bytes.
    Accept(usize),
    /// The call fails with this kind.
    Fail(ErrorKind),
}

/// A scripted `Read + Write`. An exhausted script answers `WouldBlock`.
#[derive(Debug, Default)]
pub struct ScriptedStream {
    script: VecDeque<Step>,
    written: Vec<u8>,
    calls: usize,
    /// `shutdown(SHUT_WR)` was called.
    write_shut: Cell<bool>,
    /// What `unacknowledged` answers.
    unacked: Option<usize>,
    /// What `last_sent_ago_ms` answers.
    last_sent_ago: Option<u64>,
}

impl ScriptedStream {
    pub fn new() -> Self {
        Self::default()
    }
    /// The next read returns `bytes`.
    pub fn gives(mut self, bytes: &[u8]) -> Self {
        self.script.push_back(Step::Give(bytes.to_vec()));
        self
    }
    /// The next read returns `Ok(0)`: the peer sent FIN.
    pub fn eof(mut self) -> Self {
        self.script.push_back(Step::Eof);
        self
    }
    /// The next write takes at most `n` bytes (`0` means `Ok(0)`).
    pub fn accepts(mut self, n: usize) -> Self {
        self.script.push_back(Step::Accept(n));
        self
    }
    /// The next call fails with `WouldBlock`.
    pub fn would_block(self) -> Self {
        self.fails(ErrorKind::WouldBlock)
    }
    /// The next call fails with `kind`.
    pub fn fails(mut self, kind: ErrorKind) -> Self {
        self.script.push_back(Step::Fail(kind));
        self
    }
    /// `unacknowledged()` answers `n`: sent bytes the peer has not acknowledged.
    pub fn unacked(mut self, n: Option<usize>) -> Self {
        self.unacked = n;
        self
    }
    /// `last_sent_ago_ms()` answers `ms`: when data last left for the peer.
    pub fn last_sent_ago(mut self, ms: Option<u64>) -> Self {
        self.last_sent_ago = ms;
        self
    }
    /// Whether the code under test shut down the sending side.
    pub fn write_shut(&self) -> bool {
        self.write_shut.get()
    }
    /// Every byte the code under test managed to write.
    pub fn written(&self) -> &[u8] {
        &self.written
    }
    /// How many read/write calls were made (to count syscalls saved).
    pub fn calls(&self) -> usize {
        self.calls
    }
}

impl Read for ScriptedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        match self.script.pop_front() {
            Some(Step::Give(mut bytes)) => {
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                if n < bytes.len() {
                    self.script.push_front(Step::Give(bytes.split_off(n)));
                }
                Ok(n)
            }
            Some(Step::Eof) => Ok(0),
            Some(Step::Fail(kind)) => Err(kind.into()),
            Some(step @ Step::Accept(_)) => panic!("read called, but the script expects {step:?}"),
            None => Err(ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for ScriptedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.calls += 1;
        match self.script.pop_front() {
            Some(Step::Accept(limit)) => {
                let n = limit.min(buf.len());
                self.written.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            Some(Step::Fail(kind)) => Err(kind.into()),
            Some(step) => panic!("write called, but the script expects {step:?}"),
            None => Err(ErrorKind::WouldBlock.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Linger for ScriptedStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.write_shut.set(true);
        Ok(())
    }
    fn unacknowledged(&self) -> Option<usize> {
        self.unacked
    }
    /// The bytes of the next step, if it gives any: what a poll that came
    /// before them has not announced.
    fn unread(&self) -> Option<usize> {
        match self.script.front() {
            Some(Step::Give(bytes)) => Some(bytes.len()),
            _ => Some(0),
        }
    }
    fn last_sent_ago_ms(&self) -> Option<u64> {
        self.last_sent_ago
    }
}

// ---- SimSocket: a model of a TCP socket ----

/// How the peer ended its side of a [`SimSocket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEnd {
    /// `shutdown(SHUT_WR)` or `close()`: reads return `Ok(0)` once the
    /// queued bytes are read; the peer still reads our replies.
    Fin,
    /// RST: reads return the queued bytes, then `ECONNRESET`; writes fail
    /// at once and nothing more reaches the peer.
    Reset,
}

/// Readiness as one epoll event reports it (mio's `is_readable`,
/// `is_writable`, `is_read_closed() || is_error()`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Edges {
    /// Bytes (or the end of input) wait to be read.
    pub readable: bool,
    /// The send buffer has room.
    pub writable: bool,
    /// The peer closed its side or reset.
    pub hung_up: bool,
}

impl Edges {
    /// Whether epoll would report anything at all.
    pub fn any(self) -> bool {
        self.readable || self.writable || self.hung_up
    }
}

/// A simulated non-blocking TCP socket, from the server's side. The test
/// plays the peer (`peer_*` methods) and delivers the edges they return.
#[derive(Debug)]
pub struct SimSocket {
    /// Bytes the peer sent that the server has not read.
    arrived: VecDeque<u8>,
    /// How the peer ended, once it has.
    end: Option<PeerEnd>,
    /// A read has returned `Ok(0)`.
    eof_read: bool,
    /// Every byte `read` returned, in order: the server's input.
    received: Vec<u8>,
    /// Send buffer size: bytes written that the peer has not read.
    send_capacity: usize,
    in_flight: usize,
    /// Every byte `write` took, in order: the server's output.
    written: Vec<u8>,
    /// A write said `WouldBlock` and no room was made since: the next
    /// room the peer makes raises a writable edge (epoll's `SOCK_NOSPACE`).
    write_blocked: bool,
    write_shut: Cell<bool>,
    /// xorshift64 state for per-call noise.
    noise: u64,
    /// Chance in 256 that a call fails with `Interrupted` first.
    eintr_per_256: u8,
}

impl SimSocket {
    /// A connected socket with room for `send_capacity` unread bytes
    /// (at least 1). `seed` drives the per-call noise; each call fails with
    /// `EINTR` with probability `eintr_per_256`/256 (at most 1/2, so calls
    /// end). A quarter of writes take less than there is room for.
    pub fn new(send_capacity: usize, seed: u64, eintr_per_256: u8) -> Self {
        assert!(eintr_per_256 <= 128, "EINTR at most half the time");
        SimSocket {
            arrived: VecDeque::new(),
            end: None,
            eof_read: false,
            received: Vec::new(),
            send_capacity: send_capacity.max(1),
            in_flight: 0,
            written: Vec::new(),
            write_blocked: false,
            write_shut: Cell::new(false),
            noise: seed | 1, // xorshift's state must not be 0
            eintr_per_256,
        }
    }

    fn next_noise(&mut self) -> u64 {
        // xorshift64 (Marsaglia): enough to vary calls, reproducible by seed.
        let mut x = self.noise;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.noise = x;
        x
    }

    fn interrupted(&mut self) -> bool {
        (self.next_noise() % 256) < u64::from(self.eintr_per_256)
    }

    /// The readiness an event would report now (epoll reports the whole
    /// current mask with every edge, so events come merged).
    pub fn readiness(&self) -> Edges {
        let reset = self.end == Some(PeerEnd::Reset);
        Edges {
            readable: !self.arrived.is_empty() || self.end.is_some(),
            writable: self.in_flight < self.send_capacity || reset,
            hung_up: self.end.is_some(),
        }
    }

    /// The peer sends `bytes`. Returns the edge it raises.
    pub fn peer_sends(&mut self, bytes: &[u8]) -> Edges {
        assert!(self.end.is_none(), "the peer sends after it ended");
        self.arrived.extend(bytes);
        Edges {
            readable: !bytes.is_empty(),
            ..Edges::default()
        }
    }

    /// The peer ends its side (FIN or RST). Returns the edge it raises.
    pub fn peer_ends(&mut self, how: PeerEnd) -> Edges {
        assert!(self.end.is_none(), "the peer ended twice");
        self.end = Some(how);
        if how == PeerEnd::Reset {
            self.in_flight = 0; // the kernel drops its send queue
        }
        Edges {
            readable: true,
            writable: how == PeerEnd::Reset,
            hung_up: true,
        }
    }

    /// The peer reads up to `n` of the bytes we sent. Returns the edge
    /// it raises: writable, if a write was refused and room was made.
    pub fn peer_reads(&mut self, n: usize) -> Edges {
        let n = n.min(self.in_flight);
        self.in_flight -= n;
        let edge = n > 0 && self.write_blocked;
        if edge {
            self.write_blocked = false;
        }
        Edges {
            writable: edge,
            ..Edges::default()
        }
    }

    /// How the peer ended, if it has.
    pub fn peer_end(&self) -> Option<PeerEnd> {
        self.end
    }
    /// Whether a read has returned `Ok(0)`.
    pub fn eof_read(&self) -> bool {
        self.eof_read
    }
    /// Bytes the peer sent that the server has not read.
    pub fn unread(&self) -> usize {
        self.arrived.len()
    }
    /// Bytes written that the peer has not read.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
    /// Every byte the server read, in order.
    pub fn received(&self) -> &[u8] {
        &self.received
    }
    /// Every byte the server wrote, in order.
    pub fn written(&self) -> &[u8] {
        &self.written
    }
    /// Whether the server shut down its sending side.
    pub fn write_shut(&self) -> bool {
        self.write_shut.get()
    }
}

impl Read for SimSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        assert!(!buf.is_empty(), "a read into an empty buffer fakes an EOF");
        if self.interrupted() {
            return Err(ErrorKind::Interrupted.into());
        }
        if !self.arrived.is_empty() {
            // All that is queued, up to the buffer: short only when it
            // empties the queue, as Linux TCP does.
            let n = buf.len().min(self.arrived.len());
            for (dst, src) in buf.iter_mut().zip(self.arrived.drain(..n)) {
                *dst = src;
            }
            self.received.extend_from_slice(&buf[..n]);
            return Ok(n);
        }
        match self.end {
            Some(PeerEnd::Fin) => {
                self.eof_read = true;
                Ok(0)
            }
            Some(PeerEnd::Reset) => Err(ErrorKind::ConnectionReset.into()),
            None => Err(ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for SimSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        assert!(!buf.is_empty(), "a zero-length write proves nothing");
        assert!(!self.write_shut.get(), "write after shutdown(SHUT_WR)");
        if self.interrupted() {
            return Err(ErrorKind::Interrupted.into());
        }
        if self.end == Some(PeerEnd::Reset) {
            return Err(ErrorKind::ConnectionReset.into());
        }
        let room = self.send_capacity - self.in_flight;
        if room == 0 {
            self.write_blocked = true;
            return Err(ErrorKind::WouldBlock.into());
        }
        let mut n = buf.len().min(room);
        if self.next_noise().is_multiple_of(4) {
            n = 1 + (self.next_noise() as usize % n); // took less than it could
        }
        self.written.extend_from_slice(&buf[..n]);
        self.in_flight += n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Linger for SimSocket {
    fn shutdown_write(&self) -> io::Result<()> {
        if self.end == Some(PeerEnd::Reset) {
            return Err(ErrorKind::NotConnected.into()); // as Linux after an RST
        }
        self.write_shut.set(true);
        Ok(())
    }
    /// Bytes the peer has not *read* (a real kernel counts those it has
    /// not acknowledged, which is fewer): erring towards lingering.
    fn unacknowledged(&self) -> Option<usize> {
        Some(self.in_flight)
    }
    fn unread(&self) -> Option<usize> {
        Some(self.arrived.len())
    }
    /// Unknown, as for a Unix socket: the caller falls back on its own
    /// record of activity.
    fn last_sent_ago_ms(&self) -> Option<u64> {
        None
    }
}
