//! Counting what the server does, cheaply, and showing it to other threads.
//!
//! The reactor bumps plain integers in its own [`Counters`] (no atomics on
//! the per-message path) and copies them into [`SharedStats`] once per loop
//! turn with relaxed stores. Any thread holding a `ServerHandle` can take a
//! [`StatsSnapshot`] at any time; it is at most one loop turn old.
//!
//! The syscall counters (`read_calls`, `write_calls`, `poll_calls`) let a
//! benchmark report system calls per echoed message without `strace`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::buffer::BufferGauge;

/// Why a connection ended. Each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent FIN and every reply owed to it was delivered.
    PeerClosed,
    /// The protocol asked to close (e.g. `greet`'s `exit`), after its replies.
    ProtocolClosed,
    /// The peer reset the connection, or stopped receiving (`EPIPE`).
    Reset,
    /// A socket call failed in some other way.
    Error,
    /// The client sent a message longer than `--max-line`.
    LineTooLong,
    /// The server shut down.
    Shutdown,
}

impl CloseReason {
    /// Every reason, in counter order.
    pub const ALL: [CloseReason; 6] = [
        CloseReason::PeerClosed,
        CloseReason::ProtocolClosed,
        CloseReason::Reset,
        CloseReason::Error,
        CloseReason::LineTooLong,
        CloseReason::Shutdown,
    ];

    /// The name used in stats lines.
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::ProtocolClosed => "protocol_closed",
            CloseReason::Reset => "reset",
            CloseReason::Error => "error",
            CloseReason::LineTooLong => "line_too_long",
            CloseReason::Shutdown => "shutdown",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

const REASONS: usize = CloseReason::ALL.len();

/// The reactor's own tallies: plain integers, bumped on the hot path.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed, by [`CloseReason`].
    pub closed: [u64; REASONS],
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// `read`/`recv` system calls made (including those that would block).
    pub read_calls: u64,
    /// `write`/`send` system calls made.
    pub write_calls: u64,
    /// `epoll_wait` calls made.
    pub poll_calls: u64,
    /// Times a connection stopped being read because its output passed `--max-buffered`.
    pub read_pauses: u64,
}

impl Counters {
    /// Count one close.
    pub fn count_close(&mut self, reason: CloseReason) {
        self.closed[reason.index()] += 1;
    }
}

/// A consistent-enough copy of the server's numbers at one moment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections open now.
    pub active: u64,
    /// Connections accepted since start.
    pub accepted: u64,
    /// Connections closed since start, by [`CloseReason`] (see [`StatsSnapshot::closed_by`]).
    pub closed: [u64; REASONS],
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Bytes held in connection buffers now (unsent output + unparsed input).
    pub held_bytes: u64,
    /// Heap capacity of connection buffers now.
    pub held_capacity: u64,
    /// The most bytes ever held in connection buffers at once.
    pub peak_held_bytes: u64,
    /// `read` system calls.
    pub read_calls: u64,
    /// `write` system calls.
    pub write_calls: u64,
    /// `epoll_wait` calls.
    pub poll_calls: u64,
    /// Backpressure pauses (reading stopped because output passed `--max-buffered`).
    pub read_pauses: u64,
}

impl StatsSnapshot {
    /// Connections closed for `reason`.
    pub fn closed_by(&self, reason: CloseReason) -> u64 {
        self.closed[reason.index()]
    }

    /// Connections closed for any reason.
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().sum()
    }
}

/// `stats active=.. accepted=.. closed_peer_closed=.. ...`: one line of `key=value` pairs.
impl fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stats active={} accepted={}", self.active, self.accepted)?;
        for reason in CloseReason::ALL {
            write!(f, " closed_{}={}", reason.name(), self.closed_by(reason))?;
        }
        write!(
            f,
            " bytes_in={} bytes_out={} held_bytes={} peak_held_bytes={} read_calls={} write_calls={} poll_calls={} read_pauses={}",
            self.bytes_in,
            self.bytes_out,
            self.held_bytes,
            self.peak_held_bytes,
            self.read_calls,
            self.write_calls,
            self.poll_calls,
            self.read_pauses
        )
    }
}

/// The published copy of the counters, readable from any thread.
#[derive(Debug, Default)]
pub struct SharedStats {
    active: AtomicU64,
    accepted: AtomicU64,
    closed: [AtomicU64; REASONS],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    held_bytes: AtomicU64,
    held_capacity: AtomicU64,
    peak_held_bytes: AtomicU64,
    read_calls: AtomicU64,
    write_calls: AtomicU64,
    poll_calls: AtomicU64,
    read_pauses: AtomicU64,
}

impl SharedStats {
    /// Copy the reactor's numbers out (once per loop turn).
    pub fn publish(&self, counters: &Counters, gauge: &BufferGauge, active: usize) {
        self.active.store(active as u64, Relaxed);
        self.accepted.store(counters.accepted, Relaxed);
        for (shared, &count) in self.closed.iter().zip(&counters.closed) {
            shared.store(count, Relaxed);
        }
        self.bytes_in.store(counters.bytes_in, Relaxed);
        self.bytes_out.store(counters.bytes_out, Relaxed);
        self.held_bytes.store(gauge.held_bytes as u64, Relaxed);
        self.held_capacity
            .store(gauge.held_capacity as u64, Relaxed);
        self.peak_held_bytes
            .store(gauge.peak_held_bytes as u64, Relaxed);
        self.read_calls.store(counters.read_calls, Relaxed);
        self.write_calls.store(counters.write_calls, Relaxed);
        self.poll_calls.store(counters.poll_calls, Relaxed);
        self.read_pauses.store(counters.read_pauses, Relaxed);
    }

    /// Read the last published numbers.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            active: self.active.load(Relaxed),
            accepted: self.accepted.load(Relaxed),
            closed: std::array::from_fn(|i| self.closed[i].load(Relaxed)),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            held_bytes: self.held_bytes.load(Relaxed),
            held_capacity: self.held_capacity.load(Relaxed),
            peak_held_bytes: self.peak_held_bytes.load(Relaxed),
            read_calls: self.read_calls.load(Relaxed),
            write_calls: self.write_calls.load(Relaxed),
            poll_calls: self.poll_calls.load(Relaxed),
            read_pauses: self.read_pauses.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_counters_come_back_in_a_snapshot_and_its_line() {
        let shared = SharedStats::default();
        let mut counters = Counters {
            accepted: 3,
            bytes_in: 10,
            ..Counters::default()
        };
        counters.count_close(CloseReason::Reset);
        let gauge = BufferGauge {
            held_bytes: 5,
            held_capacity: 8,
            peak_held_bytes: 9,
        };
        shared.publish(&counters, &gauge, 2);
        let snap = shared.snapshot();
        assert_eq!(snap.active, 2);
        assert_eq!(snap.closed_by(CloseReason::Reset), 1);
        assert_eq!(snap.closed_total(), 1);
        assert_eq!(snap.held_capacity, 8);
        let line = snap.to_string();
        assert!(line.starts_with("stats active=2 accepted=3 "), "{line}");
        assert!(line.contains(" closed_reset=1 "), "{line}");
        assert!(line.contains(" bytes_in=10 "), "{line}");
    }
}
