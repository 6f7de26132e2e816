//! Counting what the server does, cheaply, and showing it to other threads.
//!
//! The reactor bumps plain integers in its own [`Counters`] (no atomics on
//! the per-message path) and copies them into [`SharedStats`] with relaxed
//! stores at the end of a turn, at most every 10 ms of the loop's clock
//! ([`PublishGate`]). Any thread holding a `ServerHandle` can take a
//! [`StatsSnapshot`] at any time; it is at most 10 ms of loop time old,
//! since a loop that skipped a copy wakes up for it.
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
    /// The protocol refused the peer (a failed or late handshake).
    Refused,
    /// No traffic either way for `--idle-timeout`.
    Idle,
    /// Pending output did not move for `--stall-timeout` (a client that never reads).
    Stalled,
    /// The server shut down.
    Shutdown,
    /// Closed to keep the server within `--max-memory`: when the budget was
    /// reached it was among the worst holders (never seen reading a queued
    /// reply first, then output stuck longest, then the largest).
    Evicted,
    /// `--proxy-protocol`: the connection did not begin with a valid PROXY header.
    ProxyHeaderInvalid,
    /// `--proxy-protocol`: no complete PROXY header within the handshake time.
    ProxyHeaderTimeout,
}

impl CloseReason {
    /// Every reason, in counter order.
    pub const ALL: [CloseReason; 12] = [
        CloseReason::PeerClosed,
        CloseReason::ProtocolClosed,
        CloseReason::Reset,
        CloseReason::Error,
        CloseReason::LineTooLong,
        CloseReason::Refused,
        CloseReason::Idle,
        CloseReason::Stalled,
        CloseReason::Shutdown,
        CloseReason::Evicted,
        CloseReason::ProxyHeaderInvalid,
        CloseReason::ProxyHeaderTimeout,
    ];

    /// The name used in stats lines.
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::ProtocolClosed => "protocol_closed",
            CloseReason::Reset => "reset",
            CloseReason::Error => "error",
            CloseReason::LineTooLong => "line_too_long",
            CloseReason::Refused => "refused",
            CloseReason::Idle => "idle",
            CloseReason::Stalled => "stalled",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Evicted => "evicted",
            CloseReason::ProxyHeaderInvalid => "proxy_header_invalid",
            CloseReason::ProxyHeaderTimeout => "proxy_header_timeout",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

const REASONS: usize = CloseReason::ALL.len();

/// Defines [`Counters`] (plain integers the reactor bumps), [`StatsSnapshot`]
/// (a copy for other threads) and [`SharedStats`] (the atomics between them)
/// from one list, so a new counter cannot be forgotten in one of the three.
macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// The reactor's own tallies: plain integers, bumped on the hot path.
        #[derive(Debug, Default, Clone)]
        pub struct Counters {
            /// Connections closed, by [`CloseReason`].
            pub closed: [u64; REASONS],
            $($(#[$doc])* pub $name: u64,)*
        }

        /// A copy of the server's numbers at one moment (at most a publish interval old).
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        pub struct StatsSnapshot {
            /// Connections open now.
            pub active: u64,
            /// Connections closed since start, by [`CloseReason`] (see [`StatsSnapshot::closed_by`]).
            pub closed: [u64; REASONS],
            /// Bytes held in connection buffers now (unsent output + unparsed input).
            pub held_bytes: u64,
            /// Heap capacity of connection buffers now.
            pub held_capacity: u64,
            /// The most bytes ever held in connection buffers at once.
            pub peak_held_bytes: u64,
            /// The most heap capacity ever held by connection buffers at once
            /// (what `--max-memory` bounds).
            pub peak_held_capacity: u64,
            $($(#[$doc])* pub $name: u64,)*
        }

        /// The published copy of the counters, readable from any thread.
        #[derive(Debug, Default)]
        pub struct SharedStats {
            active: AtomicU64,
            closed: [AtomicU64; REASONS],
            held_bytes: AtomicU64,
            held_capacity: AtomicU64,
            peak_held_bytes: AtomicU64,
            peak_held_capacity: AtomicU64,
            $($name: AtomicU64,)*
        }

        impl SharedStats {
            /// Copy the reactor's numbers out (when its [`PublishGate`] says so).
            pub fn publish(&self, counters: &Counters, gauge: &BufferGauge, active: usize) {
                self.active.store(active as u64, Relaxed);
                for (shared, &count) in self.closed.iter().zip(&counters.closed) {
                    shared.store(count, Relaxed);
                }
                self.held_bytes.store(gauge.held_bytes as u64, Relaxed);
                self.held_capacity.store(gauge.held_capacity as u64, Relaxed);
                self.peak_held_bytes.store(gauge.peak_held_bytes as u64, Relaxed);
                self.peak_held_capacity.store(gauge.peak_held_capacity as u64, Relaxed);
                $(self.$name.store(counters.$name, Relaxed);)*
            }

            /// Store `snapshot` whole (a worker's shared slot, whose
            /// numbers carry its predecessors': `worker_stats.rs`).
            pub fn store(&self, snapshot: &StatsSnapshot) {
                self.active.store(snapshot.active, Relaxed);
                for (shared, &count) in self.closed.iter().zip(&snapshot.closed) {
                    shared.store(count, Relaxed);
                }
                self.held_bytes.store(snapshot.held_bytes, Relaxed);
                self.held_capacity.store(snapshot.held_capacity, Relaxed);
                self.peak_held_bytes.store(snapshot.peak_held_bytes, Relaxed);
                self.peak_held_capacity.store(snapshot.peak_held_capacity, Relaxed);
                $(self.$name.store(snapshot.$name, Relaxed);)*
            }

            /// Read the last published numbers.
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot {
                    active: self.active.load(Relaxed),
                    closed: std::array::from_fn(|i| self.closed[i].load(Relaxed)),
                    held_bytes: self.held_bytes.load(Relaxed),
                    held_capacity: self.held_capacity.load(Relaxed),
                    peak_held_bytes: self.peak_held_bytes.load(Relaxed),
                    peak_held_capacity: self.peak_held_capacity.load(Relaxed),
                    $($name: self.$name.load(Relaxed),)*
                }
            }
        }

        impl StatsSnapshot {
            /// Add another reactor's numbers, field by field (workers'
            /// totals: gauges add up as each is a worker's share; peaks
            /// summed are an upper bound on the server's peak).
            pub fn add(&mut self, other: &StatsSnapshot) {
                self.active += other.active;
                for (sum, n) in self.closed.iter_mut().zip(&other.closed) {
                    *sum += n;
                }
                self.held_bytes += other.held_bytes;
                self.held_capacity += other.held_capacity;
                self.peak_held_bytes += other.peak_held_bytes;
                self.peak_held_capacity += other.peak_held_capacity;
                $(self.$name += other.$name;)*
            }
        }

        /// `stats active=.. accepted=.. ... closed_reset=.. ...`: one line of `key=value` pairs.
        impl fmt::Display for StatsSnapshot {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "stats active={}", self.active)?;
                $(write!(f, concat!(" ", stringify!($name), "={}"), self.$name)?;)*
                for reason in CloseReason::ALL {
                    write!(f, " closed_{}={}", reason.name(), self.closed_by(reason))?;
                }
                write!(
                    f,
                    " held_bytes={} held_capacity={} peak_held_bytes={} peak_held_capacity={}",
                    self.held_bytes, self.held_capacity, self.peak_held_bytes, self.peak_held_capacity
                )
            }
        }
    };
}

counters! {
    /// Connections accepted and served.
    accepted,
    /// Connections accepted and closed at once because `--max-connections` were open.
    rejected,
    /// Connections turned away while the process was out of descriptors (EMFILE/ENFILE).
    shed,
    /// Bytes read from clients (streams and datagrams).
    bytes_in,
    /// Bytes written to clients (streams and datagrams).
    bytes_out,
    /// UDP datagrams received.
    datagrams_in,
    /// UDP replies sent.
    datagrams_out,
    /// UDP replies dropped because the socket would block (or the send failed).
    datagrams_dropped,
    /// UDP replies not sent: their source network was over `--udp-reply-budget`.
    datagrams_limited,
    /// `read`/`recv` system calls made (including those that would block).
    read_calls,
    /// `write`/`send` system calls made.
    write_calls,
    /// `epoll_wait` calls made.
    poll_calls,
    /// Times a connection stopped being read because its output passed `--max-buffered`.
    read_pauses,
    /// Connections we ended while the client might still send: our sending
    /// side shut down, input read and dropped until the client closed too.
    lingers,
    /// Lingering closes that ran out of time (`LINGER_MS`) before the client closed.
    linger_timeouts,
    /// Input read and dropped after we ended a connection (while lingering).
    bytes_discarded,
    /// 1 while the server is over the memory high-water mark (reads of
    /// connections with unread output paused), else 0: a gauge.
    memory_pressure,
    /// Times held memory crossed the high-water mark of `--max-memory`.
    memory_pressure_episodes,
}

impl Counters {
    /// Count one close.
    pub fn count_close(&mut self, reason: CloseReason) {
        self.closed[reason.index()] += 1;
    }
}

impl StatsSnapshot {
    /// These numbers with the gauges — what a live process holds now
    /// (`active`, `held_bytes`, `held_capacity`, `memory_pressure`) — set to
    /// zero: what remains of a process once it is gone. Counters and peaks
    /// stay.
    pub fn without_gauges(&self) -> StatsSnapshot {
        StatsSnapshot {
            active: 0,
            held_bytes: 0,
            held_capacity: 0,
            memory_pressure: 0,
            ..self.clone()
        }
    }

    /// The numbers of a series of processes in one place (a worker slot's
    /// successive workers): `self` what the earlier ones left, `current`
    /// the live one's own. Counters add up, so they never go down when a
    /// process is replaced; each peak is the higher of the two; the gauges
    /// are the live process's alone.
    pub fn continued_by(&self, current: &StatsSnapshot) -> StatsSnapshot {
        let mut total = self.without_gauges();
        total.add(current);
        total.peak_held_bytes = self.peak_held_bytes.max(current.peak_held_bytes);
        total.peak_held_capacity = self.peak_held_capacity.max(current.peak_held_capacity);
        total
    }

    /// Connections closed for `reason`.
    pub fn closed_by(&self, reason: CloseReason) -> u64 {
        self.closed[reason.index()]
    }

    /// Connections closed for any reason.
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().sum()
    }
}

/// Read field `key` back from a `stats key=value ...` line (the line a
/// [`StatsSnapshot`] displays as): for tools that see only a server's output.
pub fn stat_value(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// The system calls a stats line counts: `read_calls + write_calls + poll_calls`.
pub fn syscalls_in_line(line: &str) -> Option<u64> {
    ["read_calls", "write_calls", "poll_calls"]
        .iter()
        .map(|key| stat_value(line, key))
        .sum()
}

/// When the loop may copy its counters out again: at most once per
/// `interval_ms` of its clock, and never later than that once a turn has
/// changed them.
///
/// At one message a turn the copy (about thirty atomic stores) cost a sixth
/// of the message; gated, it costs one compare. The catch is a loop that
/// goes to sleep right after a skipped copy: the numbers would stay stale
/// until the next event, which may never come. So after a skip the copy
/// is owed by [`PublishGate::due_ms`], and the loop must wake by then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishGate {
    interval_ms: u64,
    due_ms: u64,
}

impl PublishGate {
    /// A gate that lets the first copy through at once.
    pub const fn new(interval_ms: u64) -> Self {
        PublishGate {
            interval_ms,
            due_ms: 0,
        }
    }

    /// End of a turn at `now_ms`: true if the caller copies now (the gate
    /// then waits `interval_ms`); false if it skips: the copy is then owed
    /// by [`PublishGate::due_ms`].
    #[inline]
    pub fn should_publish(&mut self, now_ms: u64) -> bool {
        if now_ms < self.due_ms {
            return false;
        }
        self.due_ms = now_ms.saturating_add(self.interval_ms);
        true
    }

    /// The next copy goes out whatever the clock says (the final stats).
    pub fn force_next(&mut self) {
        self.due_ms = 0;
    }

    /// The next copy goes out no later than `ms`, though the interval
    /// would allow it later (another reader of the numbers is due then).
    pub fn due_no_later_than(&mut self, ms: u64) {
        self.due_ms = self.due_ms.min(ms);
    }

    /// When the next copy may go out; after a skip, when the owed copy is
    /// due: the loop sleeps no later than this.
    pub fn due_ms(&self) -> u64 {
        self.due_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- the publish gate ----

    #[test]
    fn the_gate_lets_one_copy_through_per_interval() {
        let mut gate = PublishGate::new(1);
        assert!(gate.should_publish(5));
        assert!(
            !gate.should_publish(5),
            "a second turn in the same ms skips"
        );
        assert!(gate.should_publish(6));
    }

    #[test]
    fn a_skipped_copy_is_owed_by_the_end_of_the_interval() {
        let mut gate = PublishGate::new(1);
        assert_eq!(gate.due_ms(), 0, "the first copy at once");
        assert!(gate.should_publish(5));
        assert!(!gate.should_publish(5));
        assert_eq!(gate.due_ms(), 6, "owed: sleep no later than its due time");
        assert!(gate.should_publish(9));
        assert_eq!(gate.due_ms(), 10);
    }

    #[test]
    fn a_forced_copy_goes_out_whatever_the_clock_says() {
        let mut gate = PublishGate::new(1_000);
        assert!(gate.should_publish(5));
        gate.force_next();
        assert!(gate.should_publish(5));
    }

    #[test]
    fn a_copy_another_reader_is_due_for_goes_out_before_the_interval_ends() {
        let mut gate = PublishGate::new(1_000);
        assert!(gate.should_publish(5));
        gate.due_no_later_than(40); // e.g. the stats line is due at 40
        assert!(!gate.should_publish(39));
        assert_eq!(gate.due_ms(), 40, "the skipped copy wakes the loop by 40");
        assert!(gate.should_publish(40));
        gate.due_no_later_than(u64::MAX); // nothing else due: the interval
        assert!(!gate.should_publish(1_039));
        assert!(gate.should_publish(1_040));
    }

    #[test]
    fn stats_lines_are_read_by_key() {
        let line = "stats active=0 accepted=3 read_calls=10";
        assert_eq!(stat_value(line, "read_calls"), Some(10));
        assert_eq!(stat_value(line, "calls"), None);
    }

    #[test]
    fn a_line_counts_reads_writes_and_polls_as_its_syscalls() {
        let line = "stats read_calls=10 write_calls=9 poll_calls=2 bytes_out=576";
        assert_eq!(syscalls_in_line(line), Some(21));
        assert_eq!(syscalls_in_line("stats read_calls=10"), None);
    }

    #[test]
    fn a_successor_continues_the_counters_keeps_the_higher_peak_and_alone_holds_the_gauges() {
        let mut before = StatsSnapshot {
            active: 7,
            accepted: 100,
            held_bytes: 50,
            held_capacity: 64,
            peak_held_bytes: 900,
            peak_held_capacity: 10,
            memory_pressure: 1,
            memory_pressure_episodes: 2,
            ..StatsSnapshot::default()
        };
        before.closed[CloseReason::Reset.index()] = 3;
        let gone = before.without_gauges();
        assert_eq!(
            (gone.active, gone.held_bytes, gone.held_capacity),
            (0, 0, 0)
        );
        assert_eq!(gone.memory_pressure, 0);
        assert_eq!((gone.accepted, gone.peak_held_bytes), (100, 900));
        let mut now = StatsSnapshot {
            active: 2,
            accepted: 5,
            held_bytes: 8,
            peak_held_bytes: 20,
            peak_held_capacity: 30,
            ..StatsSnapshot::default()
        };
        now.closed[CloseReason::Reset.index()] = 1;
        let total = before.continued_by(&now);
        assert_eq!(total.accepted, 105);
        assert_eq!(total.closed_by(CloseReason::Reset), 4);
        assert_eq!(total.memory_pressure_episodes, 2);
        assert_eq!(
            (total.active, total.held_bytes, total.memory_pressure),
            (2, 8, 0)
        );
        assert_eq!((total.peak_held_bytes, total.peak_held_capacity), (900, 30));
        let shared = SharedStats::default();
        shared.store(&total);
        assert_eq!(shared.snapshot(), total);
    }

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
            peak_held_capacity: 10,
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
