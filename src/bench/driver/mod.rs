//! One load-generator thread: its own `mio::Poll` driving many connections.
//!
//! Closed loop: each connection keeps `pipeline` messages in flight and
//! sends the next as soon as a reply arrives; each send is stamped with its
//! own clock reading, not the time `poll` returned for the whole batch.
//!
//! Open loop: each connection follows a fixed timetable ([`Schedule`](super::schedule::Schedule), in
//! integer nanoseconds); a message whose time has come waits if its
//! connection already has `pipeline` in flight, and its latency is
//! measured from its *intended* time, so a slow server cannot hide its
//! queueing by slowing the generator down (no coordinated omission). The
//! uncorrected latency, from the actual send, is kept too. A
//! [`DeadlineTimer`](super::deadline::DeadlineTimer) wakes the thread at each message's nanosecond
//! deadline; how late the generator itself sends is measured
//! (`send_lateness`), so its error can be told from the server's.
//!
//! Every intended message is accounted for: the corrected histogram holds
//! every message intended in the measured window — answered (in the window
//! or in the drain after it), or never sent, at its lower bound (end −
//! intended) — except those lost to an error (a timeout, a mismatch, a
//! reset), which are counted as errors. The backlog of a connection that
//! falls behind is a count, not a queue: memory does not grow with the rate.
//!
//! Every reply is compared byte for byte with the message it answers. A
//! connection's first failure is its one error ([`Errors`]); connections
//! that never came up are counted by their OS reason ([`ConnectFailures`]).
//! Each thread publishes running totals for the progress lines
//! ([`Counters`](super::progress::Counters)) and stops early when a signal
//! asks ([`interrupt`](super::interrupt)).
//!
//! One file per part: `connecting` opens the connections (a wave at a
//! time), `client` is one connection's sends, reads and checks, and
//! each scenario's thread loop has its own file (`echo`, `hold`,
//! `connect`).

mod client;
mod connect;
mod connecting;
mod echo;
mod hold;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::failures::ConnectFailures;
use super::latency::{new_histogram, new_histogram_ns};
use crate::proxy_header::HeaderVersion;

pub use connect::{run_connect, Connects};
pub(super) use connecting::connect_streams_from;
pub use echo::run_echo;
pub use hold::run_hold;

/// What can go wrong, counted once per connection: a connection's first
/// failure is its error, and the connection is closed (a reset after
/// messages went unanswered is one reset, not a reset and a timeout).
/// Precedence, for the one connection: never up (`connect`), else its
/// first failure in time (`mismatch` or `reset`), else, still open with
/// messages unanswered when the drain window ended, `timeout`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Errors {
    /// Connections that could not be established (`connect_reasons.total()`).
    pub connect: u64,
    /// Why, by class.
    pub connect_reasons: ConnectFailures,
    /// Connections closed on a reply that differs from the message it
    /// answers (or arrives unasked).
    pub mismatch: u64,
    /// Connections reset by the server (or failing otherwise) mid-run.
    pub reset: u64,
    /// Connections the server closed cleanly (FIN) mid-run — a draining
    /// server in a rolling restart does this once its owed replies are
    /// sent. Told apart from resets and mismatches: every reply that came
    /// was verified; the messages still in flight were never read by the
    /// server and are not counted as timeouts.
    pub server_closed: u64,
    /// Connections with messages still unanswered when the run's drain
    /// window ended.
    pub timeout: u64,
}

impl Errors {
    /// Add another thread's counts.
    pub fn add(&mut self, other: &Errors) {
        self.connect += other.connect;
        self.connect_reasons.add(&other.connect_reasons);
        self.mismatch += other.mismatch;
        self.reset += other.reset;
        self.server_closed += other.server_closed;
        self.timeout += other.timeout;
    }

    /// Any error at all.
    pub fn any(&self) -> bool {
        self.connect + self.mismatch + self.reset + self.server_closed + self.timeout > 0
    }
}

/// How one thread should load the server.
#[derive(Debug, Clone)]
pub struct Load {
    /// Server address.
    pub addr: SocketAddr,
    /// Message size in bytes.
    pub size: usize,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// Open loop: the timetable's settings; `None` is closed loop.
    pub pacing: Option<Pacing>,
    /// Time before measuring starts.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
    /// After the run, how long to wait for replies still in flight.
    pub drain: Duration,
    /// How long the connections may take to come up (`--connect-timeout`).
    pub connect_deadline: Duration,
    /// Local addresses the connections come from, round-robin by
    /// connection id (empty: the kernel's choice).
    pub sources: Vec<IpAddr>,
    /// Begin each connection with a PROXY header of this version.
    pub proxy_header: Option<HeaderVersion>,
}

/// The open loop's settings, the same for every thread of a process.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// Each connection's period, picoseconds (`--connections / --rate`;
    /// see [`check_rate`](super::schedule::check_rate)).
    pub period_ps: u64,
    /// Connections in this process: the turns the period is shared into.
    pub connections: usize,
    /// Id of this process's first connection (thread shares are offsets from it).
    pub first_id: u32,
}

/// What one thread measured.
#[derive(Debug)]
pub struct Measured {
    /// Connections established.
    pub connected: usize,
    /// From the first connect to the last connection up.
    pub connect_time: Duration,
    /// Verified replies inside the measured window.
    pub messages: u64,
    /// Latency from the intended send time (closed loop: the actual send).
    pub latency: Histogram<u64>,
    /// Latency from the actual send time (open loop only differs).
    pub latency_uncorrected: Histogram<u64>,
    /// Errors counted.
    pub errors: Errors,
    /// Open loop: messages intended in the measured window.
    pub intended: u64,
    /// Open loop: of those, never sent (recorded in `latency` at end − intended).
    pub unsent: u64,
    /// Open loop: actual − intended send time, nanoseconds, of the messages
    /// sent when their time came (not those that waited for a reply to free
    /// a pipeline slot: that wait is the server's).
    pub send_lateness: Histogram<u64>,
}

impl Measured {
    /// Nothing measured yet, on `connected` connections (`failed` did not connect).
    pub fn new(connected: usize, failed: ConnectFailures) -> Self {
        Measured {
            connected,
            connect_time: Duration::ZERO,
            messages: 0,
            latency: new_histogram(),
            latency_uncorrected: new_histogram(),
            errors: Errors {
                connect: failed.total(),
                connect_reasons: failed,
                ..Errors::default()
            },
            intended: 0,
            unsent: 0,
            send_lateness: new_histogram_ns(),
        }
    }

    /// Add another thread's measurements.
    pub fn merge(&mut self, other: &Measured) {
        self.connected += other.connected;
        // The threads connect at once: the slowest one's time is the run's.
        self.connect_time = self.connect_time.max(other.connect_time);
        self.messages += other.messages;
        let _ = self.latency.add(&other.latency);
        let _ = self.latency_uncorrected.add(&other.latency_uncorrected);
        self.errors.add(&other.errors);
        self.intended += other.intended;
        self.unsent += other.unsent;
        let _ = self.send_lateness.add(&other.send_lateness);
    }
}

/// A latency in whole microseconds, at least 1 (a histogram records no 0).
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_add_up_across_threads() {
        let mut total = Errors::default();
        assert!(!total.any());
        total.add(&Errors {
            mismatch: 2,
            ..Errors::default()
        });
        total.add(&Errors {
            reset: 1,
            ..Errors::default()
        });
        assert_eq!((total.mismatch, total.reset), (2, 1));
        assert!(total.any());
    }

    #[test]
    fn latency_is_never_recorded_as_zero() {
        assert_eq!(micros(Duration::ZERO), 1);
        assert_eq!(micros(Duration::from_millis(3)), 3000);
    }
}
