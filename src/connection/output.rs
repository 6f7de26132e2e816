//! Output: sending replies, and keeping what the kernel did not take.
//!
//! The common case — one `write` takes the whole reply — is kept short,
//! since it runs once per message; short writes, `WouldBlock` and errors go
//! to the cold `send_rest`. Whatever the kernel refuses is queued in the
//! connection's `outbuf`, in order, and flushed on the next writable edge.
//!
//! Invariant: when a flush returns [`FlushOutcome::Pending`], the unsent
//! bytes are still at the front of the queue, in order.

use std::io::{ErrorKind, Read, Write};

use log::debug;

use super::{Connection, Context, State};
use crate::buffer::{BufferGauge, ByteQueue};
use crate::nonblocking::{try_write, WriteOutcome};
use crate::stats::{CloseReason, Counters};
use crate::stream::Linger;

/// Why a flush stopped (a summary of many writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushOutcome {
    /// Everything was sent.
    Flushed,
    /// The send buffer filled (`WouldBlock`); the rest waits for a writable edge.
    Pending,
    /// The peer can no longer receive (`EPIPE`, `ECONNRESET`).
    PeerGone,
    /// Another error.
    Failed(ErrorKind),
}

/// Write `bytes` until all are sent or the kernel stops us. Returns how many
/// were sent and why it stopped. Short writes are normal (the kernel took
/// what fit); we keep offering the rest until it says `WouldBlock`.
pub(super) fn write_until_blocked(
    socket: &mut impl Write,
    bytes: &[u8],
    counters: &mut Counters,
) -> (usize, FlushOutcome) {
    let mut sent = 0;
    while sent < bytes.len() {
        counters.write_calls += 1;
        match try_write(socket, &bytes[sent..]) {
            WriteOutcome::Wrote(n) => {
                counters.bytes_out += n as u64;
                sent += n;
            }
            stop => return (sent, FlushOutcome::stopped_by(stop)),
        }
    }
    (sent, FlushOutcome::Flushed)
}

impl FlushOutcome {
    /// Why a write that took nothing stopped the flush: the one place a
    /// write's outcome becomes a flush's.
    fn stopped_by(outcome: WriteOutcome) -> FlushOutcome {
        match outcome {
            WriteOutcome::WouldBlock => FlushOutcome::Pending,
            WriteOutcome::Closed => FlushOutcome::PeerGone,
            WriteOutcome::Failed(kind) => FlushOutcome::Failed(kind),
            WriteOutcome::Wrote(_) => unreachable!("a write that took bytes does not stop a flush"),
        }
    }
}

/// Send the front of `out` until it is empty or the socket would block.
/// Invariant: on `Pending`, the unsent bytes are still at the front of `out`, in order.
pub fn flush(
    socket: &mut impl Write,
    out: &mut ByteQueue,
    gauge: &mut BufferGauge,
    counters: &mut Counters,
) -> FlushOutcome {
    let (sent, outcome) = write_until_blocked(socket, out.as_slice(), counters);
    out.consume(sent, gauge);
    outcome
}

impl<S: Read + Write + Linger, Session> Connection<S, Session> {
    /// Send a reply: straight from `bytes` when nothing older is waiting and
    /// the socket has room; whatever the kernel does not take is queued.
    /// The caller stamps `last_activity_ms` (`fill` on every read, `apply_reply`
    /// for other replies), so the per-message path stores it once.
    #[inline(always)] // once per message: keep the common case free of call overhead
    pub(super) fn send(&mut self, bytes: &[u8], ctx: &mut Context) -> Result<(), CloseReason> {
        if bytes.is_empty() {
            return Ok(());
        }
        // By the invariant (module docs), WRITE_READY also says nothing
        // older is waiting in `outbuf`: one test covers both.
        debug_assert!(!self.state.contains(State::WRITE_READY) || self.outbuf.is_empty());
        if !self.state.contains(State::WRITE_READY) {
            // The last write said WouldBlock and no writable edge came since:
            // writing now would fail again. Queue behind older output.
            self.queue_output(bytes, ctx);
            return Ok(());
        }
        // The common case, kept short because it runs once per message: one
        // write, and the kernel takes the whole reply.
        ctx.counters.write_calls += 1;
        let first = try_write(&mut self.socket, bytes);
        if let WriteOutcome::Wrote(n) = first {
            if n == bytes.len() {
                ctx.counters.bytes_out += n as u64;
                return Ok(());
            }
        }
        self.send_rest(bytes, first, ctx)
    }

    /// The uncommon ends of `send`: the first write was short, would block,
    /// or failed.
    #[cold]
    #[inline(never)]
    fn send_rest(
        &mut self,
        bytes: &[u8],
        first: WriteOutcome,
        ctx: &mut Context,
    ) -> Result<(), CloseReason> {
        let (sent, outcome) = match first {
            // Short writes are normal: offer the rest until the kernel says WouldBlock.
            WriteOutcome::Wrote(n) => {
                ctx.counters.bytes_out += n as u64;
                let (more, outcome) =
                    write_until_blocked(&mut self.socket, &bytes[n..], &mut ctx.counters);
                (n + more, outcome)
            }
            stop => (0, FlushOutcome::stopped_by(stop)),
        };
        self.after_flush(outcome)?;
        // Whatever the kernel did not take is kept here, in order; the
        // writable edge (registered once at accept) brings us back.
        if sent < bytes.len() {
            self.queue_output(&bytes[sent..], ctx);
        }
        Ok(())
    }

    /// Act on how a flush (or a send) ended — the one place that does:
    /// `Pending` means the send buffer is full until a writable edge;
    /// anything but `Flushed` or `Pending` ends the connection.
    pub(super) fn after_flush(&mut self, outcome: FlushOutcome) -> Result<(), CloseReason> {
        match outcome {
            FlushOutcome::Flushed => Ok(()),
            FlushOutcome::Pending => {
                self.state.remove(State::WRITE_READY);
                Ok(())
            }
            FlushOutcome::PeerGone => Err(CloseReason::Reset),
            FlushOutcome::Failed(kind) => {
                debug!("write failed: {kind:?}");
                Err(CloseReason::Error)
            }
        }
    }

    /// Keep `bytes` the kernel did not take at the end of `outbuf`, behind any
    /// older unsent output (order is kept); starts the stall clock when the
    /// queue was empty, and tells the reactor to look (`NEEDS_REACTOR`).
    pub(super) fn queue_output(&mut self, bytes: &[u8], ctx: &mut Context) {
        if self.outbuf.is_empty() {
            // The stall clock starts when output starts waiting.
            self.output_progress_ms = ctx.now_ms;
            self.state.insert(State::NEEDS_REACTOR);
        }
        self.outbuf.push(bytes, &mut ctx.gauge);
        if ctx.gauge.held_capacity >= ctx.limits.high_water_bytes {
            // Memory pressure: the reactor checks the budget before it
            // serves anyone else (and may evict), not only at the turn's end.
            self.state.insert(State::NEEDS_REACTOR);
        }
    }
}
