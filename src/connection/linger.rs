//! Closing from our side without losing the replies we owe: a lingering
//! close (nginx's `lingering_close`).
//!
//! When *we* end a connection (greet's `exit`, a JSON error, `--max-line`,
//! shutdown) the client may still be sending. If its bytes sit unread in our
//! receive queue when we call `close()`, Linux does not send FIN: it sends
//! RST (RFC 1122 §4.2.2.13), and the RST makes the peer's kernel throw away
//! whatever of our replies it had not yet acknowledged — the client sees
//! `ECONNRESET` instead of its last answers (pinned by the test
//! `closing_with_unread_input_sends_a_reset` in
//! tests/nonblocking_semantics.rs).
//!
//! So once the last owed byte is with the kernel:
//! 1. read and discard whatever input is already queued;
//! 2. if the peer has acknowledged everything we sent (`SIOCOUTQ` is 0),
//!    nothing owed can be lost any more: close now;
//! 3. otherwise `shutdown(SHUT_WR)` — the peer reads our last reply, then
//!    EOF — and keep reading and discarding until the peer closes too, the
//!    peer acknowledges everything, or [`LINGER_MS`] passes. Then close.
//!
//! The linger is bounded, so a client that never closes cannot hold a
//! descriptor: `closed_linger_timeouts` counts those that ran out of time.
//! Discarded input still costs no memory: it lands in the shared scratch
//! buffer and is dropped there.

use std::io::{Read, Write};

use super::{Connection, Context, Next, State, Workspace};
use crate::nonblocking::{try_read, ReadOutcome};
use crate::stats::CloseReason;
use crate::stream::Linger;
use crate::timers::due_after;

/// The longest we wait for a client to close after our last reply (ms).
/// nginx's `lingering_time` defaults to 30 s; an echo server's replies are
/// small and a well-behaved client closes within a round trip, so 5 s is
/// ample and bounds how long a descriptor can be held.
pub const LINGER_MS: u64 = 5_000;

impl<S: Read + Write + Linger, Session> Connection<S, Session> {
    /// Every owed byte is with the kernel and we end the connection for
    /// `reason`, while the peer may still be sending: close without an RST
    /// that would lose those bytes (see the module docs).
    pub(super) fn close_gracefully(&mut self, reason: CloseReason, ws: &mut Workspace) -> Next {
        // Input already queued would turn close() into a reset: drop it.
        let discarded = match self.discard_input(reason, ws) {
            Ok(discarded) => discarded,
            Err(next) => return next,
        };
        if self.state.contains(State::LINGERING) {
            return Next::Wait; // until the peer's EOF, or the deadline
        }
        // A quiet peer that has acknowledged everything we sent (an idle
        // client at shutdown, say): a reset could lose nothing, so close now
        // rather than make it wait for the client to close first.
        if discarded == 0 && self.socket.unacknowledged() == Some(0) {
            return Next::Close(reason);
        }
        if self.socket.shutdown_write().is_err() {
            return Next::Close(reason); // not connected any more: nothing to save
        }
        self.state.insert(State::LINGERING | State::NEEDS_REACTOR);
        // While lingering, the protocol's deadline slot holds the linger's
        // end: the protocol has nothing more to say.
        self.protocol_due_ms = due_after(ws.ctx.now_ms, LINGER_MS);
        ws.ctx.counters.lingers += 1;
        Next::Wait
    }

    /// Read and drop input until the receive queue is empty; `Ok(bytes
    /// dropped)`. `Err` when that settles the connection: the peer closed
    /// (or failed), or the read budget ran out with more waiting.
    fn discard_input(&mut self, reason: CloseReason, ws: &mut Workspace) -> Result<usize, Next> {
        let Workspace { scratch, ctx, .. } = ws;
        let mut taken = 0;
        while self.state.contains(State::READ_READY) {
            ctx.counters.read_calls += 1;
            match try_read(&mut self.socket, scratch) {
                ReadOutcome::Data(n) => {
                    ctx.counters.bytes_in += n as u64;
                    ctx.counters.bytes_discarded += n as u64;
                    taken += n;
                    // A short read empties the queue (as in `fill`), except
                    // after a hang-up: then read on to the EOF.
                    if n < scratch.len() && !self.state.contains(State::HUP_SEEN) {
                        self.state.remove(State::READ_READY);
                    } else if taken >= ctx.limits.read_budget_bytes {
                        return Err(Next::Requeue); // fairness, as in `fill`
                    }
                }
                ReadOutcome::WouldBlock => self.state.remove(State::READ_READY),
                // The peer closed too: nothing is left unread, so close()
                // sends FIN, not RST.
                ReadOutcome::Closed => return Err(Next::Close(reason)),
                // The peer is gone; whatever it had not taken is lost already.
                ReadOutcome::Reset | ReadOutcome::Failed(_) => return Err(Next::Close(reason)),
            }
        }
        Ok(taken)
    }

    /// The linger ran out: close even with input unread (counted).
    pub(super) fn on_linger_deadline(&mut self, ctx: &mut Context) -> Next {
        if self.protocol_due_ms > ctx.now_ms {
            return Next::Wait; // an idle or stall entry from before the linger came due
        }
        let reason = self.closing.unwrap_or(CloseReason::Shutdown);
        if self.socket.unacknowledged() != Some(0) {
            ctx.counters.linger_timeouts += 1;
        }
        Next::Close(reason)
    }
}
