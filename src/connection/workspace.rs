//! What the reactor lends a connection while it runs: the scratch buffer
//! every read lands in, the reply buffer, and the [`Context`] (limits, the
//! turn's clock, the tallies, the turn's read budget).
//!
//! One per reactor, so buffer memory does not grow with the number of
//! clients. The turn's read budget lives here because every connection
//! draws on it: once it is spent, reads shrink to [`TRICKLE_BYTES`] until
//! the reactor refills it ([`Workspace::trickle`]).

use crate::buffer::BufferGauge;
use crate::ratelimit::WarnLimiter;
use crate::stats::Counters;
use crate::timers::Clock;

use super::Limits;

/// What every connection call needs besides buffers: limits, the loop
/// turn's clock reading (and the clock, for a deadline set), and the tallies.
#[derive(Debug)]
pub struct Context {
    /// Bytes and capacity held in connection buffers.
    pub gauge: BufferGauge,
    /// Syscall and byte counters.
    pub counters: Counters,
    /// Limits applied to every connection.
    pub limits: Limits,
    /// Milliseconds since start, read once per loop turn (when it began).
    pub now_ms: u64,
    /// The clock `now_ms` is read from: a deadline a protocol sets counts
    /// from a fresh reading, not from the turn's (`timers.rs`).
    pub clock: Clock,
    /// Rate-limits warnings a connection can trigger.
    pub warnings: WarnLimiter,
    /// Bytes reads may still take this loop turn, from all connections
    /// together; zero or less: spent (`isize::MAX`: no such limit). The
    /// reactor sets it each turn ([`Workspace::begin_turn`]); a connection
    /// whose read takes the last of it stops as if its own read budget were
    /// spent, and asks the reactor to make the rest of the turn's reads
    /// small ([`Workspace::trickle`]).
    pub turn_bytes_left: isize,
}

impl Context {
    /// Count `n` bytes read against the turn's budget: whether it is spent.
    #[inline(always)]
    pub fn count_turn_read(&mut self, n: usize) -> bool {
        // No overflow: reads are at most a scratch buffer long, and the
        // budget is reset every turn.
        self.turn_bytes_left -= n as isize;
        self.turn_bytes_left <= 0
    }

    /// Whether the turn's read budget is spent.
    pub fn turn_budget_spent(&self) -> bool {
        self.turn_bytes_left <= 0
    }
}

/// How much one read takes once the turn's read budget is spent (see
/// [`Workspace::trickle`]): a small message still arrives whole, a bulk
/// sender gives up its turn after one small copy.
pub const TRICKLE_BYTES: usize = 4 * 1024;

/// What the reactor lends a connection while it runs: one scratch buffer,
/// one reply buffer, and the [`Context`]. One per reactor, so buffer memory
/// does not grow with the number of clients.
#[derive(Debug)]
pub struct Workspace {
    /// Every read lands here first (64 KiB in the server; only
    /// [`TRICKLE_BYTES`] while [`Workspace::trickle`] is on).
    pub scratch: Box<[u8]>,
    /// The other buffer: the small one, or the full one while reads trickle.
    spare: Box<[u8]>,
    /// Reads land in the small buffer until the turn's budget is refilled.
    trickling: bool,
    /// Protocols write replies here; reused, so replying allocates nothing.
    pub reply: Vec<u8>,
    /// Limits, clock and tallies.
    pub ctx: Context,
}

impl Workspace {
    /// A workspace whose reads land in a `scratch_bytes`-byte buffer.
    pub fn new(limits: Limits, scratch_bytes: usize) -> Self {
        Workspace {
            scratch: vec![0; scratch_bytes].into_boxed_slice(),
            spare: vec![0; TRICKLE_BYTES.min(scratch_bytes)].into_boxed_slice(),
            trickling: false,
            reply: Vec::new(),
            ctx: Context {
                gauge: BufferGauge::default(),
                counters: Counters::default(),
                limits,
                now_ms: 0,
                clock: Clock::start(),
                warnings: WarnLimiter::default(),
                turn_bytes_left: isize::MAX,
            },
        }
    }

    /// The turn's read budget is spent: until it is refilled, reads take at
    /// most [`TRICKLE_BYTES`] each. A connection with a small message in
    /// its queue is still served in full, while one with a bulk of input
    /// costs one small copy before it waits on the ready queue, so events
    /// queued behind a flood are reached soon (docs/BENCHMARKS.md, "A
    /// reader beside a flood").
    pub fn trickle(&mut self) {
        if !self.trickling {
            std::mem::swap(&mut self.scratch, &mut self.spare);
            self.trickling = true;
        }
    }

    /// A fresh read budget of `bytes` for the turn, read in full-size reads.
    pub fn refill_turn_budget(&mut self, bytes: isize) {
        self.ctx.turn_bytes_left = bytes;
        if self.trickling {
            std::mem::swap(&mut self.scratch, &mut self.spare);
            self.trickling = false;
        }
    }

    /// At the start of a loop turn: the read budget back to `bytes` if any
    /// of it was used. One compare on a turn that read nothing in bulk.
    #[inline(always)]
    pub fn begin_turn(&mut self, bytes: isize) {
        if self.ctx.turn_bytes_left != bytes {
            self.refill_turn_budget(bytes);
        }
    }

    /// The full-size buffer, the reply buffer and the context, whether reads
    /// trickle or not: a datagram must fit whole.
    pub fn full_scratch(&mut self) -> (&mut [u8], &mut Vec<u8>, &mut Context) {
        let full = if self.trickling {
            &mut self.spare
        } else {
            &mut self.scratch
        };
        (full, &mut self.reply, &mut self.ctx)
    }
}
