//! Closing from our side without losing the replies we owe: a lingering
//! close (nginx's `lingering_close`).
//!
//! When *we* end a connection (greet's `exit`, a JSON error, `--max-line`,
//! a refused handshake or PROXY header, shutdown) the client may still be
//! sending. If its bytes sit unread in our receive queue when we call
//! `close()`, Linux does not send FIN: it sends
//! RST (RFC 1122 §4.2.2.13), and the RST makes the peer's kernel throw away
//! whatever of our replies it had not yet acknowledged — the client sees
//! `ECONNRESET` instead of its last answers (pinned by the test
//! `closing_with_unread_input_sends_a_reset` in
//! tests/nonblocking_semantics.rs).
//!
//! So from the moment we decide to end a connection, input is read and
//! dropped as it arrives (even while replies are still being flushed: a
//! client that writes everything before it reads would otherwise deadlock
//! with us), and once the last owed byte is with the kernel:
//! 1. `shutdown(SHUT_WR)` — the peer reads our last reply, then EOF — and
//!    start the linger clock;
//! 2. keep reading and discarding until the peer closes too, or
//!    [`LINGER_MS`] passes — [`REFUSAL_LINGER_MS`] after a refusal, which
//!    owes the client nothing but a clean FIN (counted in
//!    `linger_timeouts`). Then close.
//!
//! One shortcut, for a shutdown on a signal only (not at the end of an
//! upgrade's drain, whose remaining clients are pooled ones that may send
//! their next request at any moment): a connection with no partial message
//! of the client's in our input buffer and nothing queued to read (neither
//! announced by the last poll nor arrived since it: `FIONREAD` is 0), whose
//! peer has acknowledged everything we sent (`SIOCOUTQ` is 0),
//! and to which we sent nothing for at least [`QUIET_BEFORE_SHUTDOWN_MS`]
//! — an idle client, or one that never got a byte from us — is closed at
//! once, as nginx closes idle keep-alive connections on a graceful stop:
//! a server full of idle clients exits at once instead of waiting out the
//! grace for each. "When we last sent" is the kernel's own record for TCP
//! on Linux (`TCP_INFO`: `tcpi_data_segs_out`, `tcpi_last_data_sent`);
//! where the kernel does not say (Unix sockets), the last traffic either
//! way stands in for it, which errs towards lingering. A client in the
//! middle of a conversation (we answered it within that time, or half of
//! its message is in our buffer) lingers like any other: its next segment
//! may be on the wire already — "nothing queued" is only what `FIONREAD`
//! saw a moment ago — and a `close()` that finds it unread resets the
//! connection, where a draining server (a rolling restart) owes it a
//! clean FIN. For the closes a *client* causes
//! (greet's `exit`, a JSON error, `--max-line`) there is no shortcut: "the
//! queue is empty right now" does not mean the client has stopped sending,
//! and its next segment would draw the reset we are avoiding.
//!
//! The linger is bounded, so a client that never closes — or floods us for
//! the whole time — cannot hold a descriptor for longer. Discarded input
//! costs no memory: it lands in the shared scratch buffer and is dropped.

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

/// The linger after a refusal (a wrong handshake answer or none in time,
/// a bad or late PROXY header), in ms. Such a client owes us nothing and
/// we owe it no reply, only a clean FIN instead of a reset: what it had
/// sent is drained at once, and half a second covers the round trip for
/// what was on the wire. A scanner, refused by the thousand, holds each
/// descriptor that long, not [`LINGER_MS`].
pub const REFUSAL_LINGER_MS: u64 = 500;

/// How long a close for `reason` lingers at most.
fn linger_ms(reason: CloseReason) -> u64 {
    match reason {
        CloseReason::Refused
        | CloseReason::ProxyHeaderInvalid
        | CloseReason::ProxyHeaderTimeout => REFUSAL_LINGER_MS,
        _ => LINGER_MS,
    }
}

/// At shutdown, a connection silent for this long counts as idle and is
/// closed without a linger (see the module docs). A second: far longer
/// than a request/response client's gap between messages, far shorter
/// than a long-lived idle connection's silence.
pub const QUIET_BEFORE_SHUTDOWN_MS: u64 = 1_000;

impl<S: Read + Write + Linger, Session> Connection<S, Session> {
    /// We are ending the connection for `reason` and the peer has not
    /// closed its side: drop its input as it comes, and once our output
    /// is empty shut down writing and linger (see the module docs).
    pub(super) fn end_gracefully(&mut self, reason: CloseReason, ws: &mut Workspace) -> Next {
        if self.outbuf.is_empty() && !self.state.contains(State::LINGERING) {
            if self.socket.shutdown_write().is_err() {
                return Next::Close(reason); // not connected any more: nothing to save
            }
            // The clock starts before any discarding, so a flood cannot
            // postpone it.
            self.state.insert(State::LINGERING | State::NEEDS_REACTOR);
            // While lingering, the protocol's deadline slot holds the
            // linger's end: the protocol has nothing more to say.
            self.protocol_due_ms = due_after(ws.ctx.now_ms, linger_ms(reason));
            ws.ctx.counters.lingers += 1;
        }
        if let Err(next) = self.discard_input(ws) {
            return next; // the read budget ran out: more next turn
        }
        match (
            self.state.contains(State::PEER_CLOSED),
            self.outbuf.is_empty(),
        ) {
            // EOF and nothing owed: close() now sends FIN, not RST.
            (true, true) => Next::Close(reason),
            // EOF with replies still owed: flush them first (writable edges).
            (true, false) => Next::Wait,
            // Still sending: until its EOF, our output drains, or the linger ends.
            (false, _) => Next::Wait,
        }
    }

    /// Whether shutdown may close this connection at once: nothing owed
    /// or unsent, no partial message of the client's in `inbuf`, nothing
    /// queued to read (neither seen by the last poll nor arrived since:
    /// `FIONREAD`), everything we sent acknowledged, and nothing sent for
    /// [`QUIET_BEFORE_SHUTDOWN_MS`] (see the module docs). Two syscalls a
    /// connection, only at shutdown.
    pub(super) fn idle_at_shutdown(&self, now_ms: u64) -> bool {
        if !self.outbuf.is_empty()
            || !self.inbuf.is_empty()
            || self
                .state
                .intersects(State::READ_READY | State::PEER_CLOSED | State::LINGERING)
            || self.socket.unread() != Some(0)
            || self.socket.unacknowledged() != Some(0)
        {
            return false;
        }
        match self.socket.last_sent_ago_ms() {
            Some(ago) => ago >= QUIET_BEFORE_SHUTDOWN_MS,
            None => {
                now_ms
                    >= self
                        .last_activity_ms
                        .saturating_add(QUIET_BEFORE_SHUTDOWN_MS)
            }
        }
    }

    /// Read and drop input until the receive queue is empty or the peer
    /// closes (then `PEER_CLOSED` is set). `Err` when the connection must
    /// close (the peer reset it) or the read budget ran out with more
    /// waiting (requeue).
    fn discard_input(&mut self, ws: &mut Workspace) -> Result<(), Next> {
        let Workspace { scratch, ctx, .. } = ws;
        let mut taken = 0;
        while self.state.contains(State::READ_READY) && !self.state.contains(State::PEER_CLOSED) {
            ctx.counters.read_calls += 1;
            match try_read(&mut self.socket, scratch) {
                ReadOutcome::Data(n) => {
                    ctx.counters.bytes_in += n as u64;
                    ctx.counters.bytes_discarded += n as u64;
                    taken += n;
                    let turn_spent = ctx.count_turn_read(n);
                    // A short read empties the queue (as in `fill`), unless
                    // DRAIN_FULLY says it may not.
                    if n < scratch.len() && !self.state.contains(State::DRAIN_FULLY) {
                        self.state.remove(State::READ_READY);
                    } else if taken >= ctx.limits.read_budget_bytes || turn_spent {
                        // Fairness, as in `fill`: this connection's budget,
                        // or the turn's.
                        return Err(Next::Requeue);
                    }
                }
                ReadOutcome::WouldBlock => self.state.remove(State::READ_READY),
                ReadOutcome::Closed => {
                    self.state.insert(State::PEER_CLOSED);
                    self.state.remove(State::READ_READY);
                }
                // The peer is gone; whatever it had not taken is lost already.
                ReadOutcome::Reset => return Err(Next::Close(CloseReason::Reset)),
                ReadOutcome::Failed(_) => return Err(Next::Close(CloseReason::Error)),
            }
        }
        Ok(())
    }

    /// The linger ran out: close even with input unread (counted).
    pub(super) fn on_linger_deadline(&mut self, ctx: &mut Context) -> Next {
        if self.protocol_due_ms > ctx.now_ms {
            return Next::Wait; // an idle or stall entry from before the linger came due
        }
        ctx.counters.linger_timeouts += 1;
        Next::Close(self.ending.unwrap_or(CloseReason::Shutdown))
    }
}
