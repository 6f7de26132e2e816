//! One client connection: its socket, its buffers, what we know of its
//! readiness, its timestamps, and the loops that move bytes between them.
//!
//! [`Connection::drive`] makes all the progress the kernel allows *right
//! now* — flush pending output, then read and answer input — and tells the
//! reactor what to do next ([`Next`]). It never blocks and never touches
//! `Poll`; the socket is any `Read + Write`, so the tricky paths are tested
//! here with a scripted socket instead of the OS.
//!
//! Readiness is kept as state ([`State`]), because edge-triggered epoll
//! reports only *changes*:
//! - `READ_READY`: the kernel may hold bytes we have not read. Set by a
//!   readable event; cleared only when a read says the queue is empty
//!   (`WouldBlock`, or a short read) or the peer closed (`Ok(0)`). While
//!   it is set and we are not reading (budget spent, or backpressure) no
//!   new edge will come for those bytes, so whoever stops reading must
//!   arrange to come back.
//! - `WRITE_READY`: the send buffer had room last we looked. Cleared by a
//!   write that would block; set again by a writable event.
//!
//! Invariants:
//! - unsent output is in `outbuf`, in order, and is sent before any newer reply;
//! - `!outbuf.is_empty()` implies no `WRITE_READY`, except from a writable
//!   event until the flush step of the `drive` that follows it at once (we
//!   only stop flushing when the kernel says `WouldBlock`). So `send` needs
//!   one test to know that a fresh reply may go straight from the reactor's
//!   buffer: the socket has room *and* nothing older is waiting.

use std::io::{Read, Write};

use bitflags::bitflags;
use log::{debug, error, trace};

use crate::buffer::{BufferGauge, ByteQueue};
use crate::nonblocking::{try_read, ReadOutcome};
use crate::protocol::{DeadlineRequest, Protocol, Reply, Requests};
use crate::ratelimit::CLIENT_WARN_INTERVAL_MS;
use crate::stats::CloseReason;
use crate::stream::Linger;
use crate::timers::{due_after, millis, NEVER};

mod linger;
mod output;
mod parked;
mod workspace;

pub use linger::{LINGER_MS, QUIET_BEFORE_SHUTDOWN_MS, REFUSAL_LINGER_MS};
pub use output::{flush, FlushOutcome};
pub use parked::Parked;
pub use workspace::{Context, Workspace, TRICKLE_BYTES};

/// Per-connection limits, from the server's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Stop reading a connection once its unsent output reaches this.
    pub max_buffered: usize,
    /// Close a connection whose unparsed input (a partial message) exceeds this.
    pub max_line: usize,
    /// Bytes one connection may read per loop turn before others get a go
    /// (`drive` returns [`Next::Requeue`] once they are read; the reactor
    /// reads it again in the next turn).
    pub read_budget_bytes: usize,
    /// Close a connection with no traffic either way for this long (ms).
    pub idle_timeout_ms: Option<u64>,
    /// Close a connection whose pending output has not moved for this long (ms).
    pub stall_timeout_ms: Option<u64>,
    /// Past this many bytes held server-wide (by capacity), connections
    /// with output waiting stop being read (`--max-memory`'s high-water
    /// mark; `usize::MAX` without a budget).
    pub high_water_bytes: usize,
}

/// What the reactor should do with a connection after driving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing more can be done until the next readiness event.
    Wait,
    /// The read budget ran out with bytes possibly still waiting: no edge
    /// will announce them, so put the connection on the ready queue.
    Requeue,
    /// Close it, for this reason.
    Close(CloseReason),
}

/// Why a `fill` drain stopped (a summary of many reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FillOutcome {
    /// The receive queue is empty (`WouldBlock` or a short read).
    Drained,
    /// The per-turn budget is spent; more may be waiting.
    BudgetSpent,
    /// Output passed `--max-buffered`: reading stops until it drains.
    Paused,
    /// The protocol asked to close: later input is ignored.
    Stopped,
    /// `Ok(0)`: the peer sent FIN.
    PeerClosed,
    /// The connection must close now.
    Close(CloseReason),
}

/// A read after which `fill` stops early (the reply failed because the
/// peer reset: closing; output past `--max-buffered`: paused; the protocol
/// asked to close: stopped) still counts against the turn's read budget
/// if it was bulk: uncounted, the resets that end a flood let one turn
/// read every reset connection's bytes (~100 MB, 27 ms, under 19 000
/// flooders), and never-reading clients one 64 KiB read each. Off the
/// per-message path: only these exits call it, and a small message (under
/// [`TRICKLE_BYTES`]) is left out as in `fill`. Whether the budget is now
/// spent: the caller then asks for the reactor (`NEEDS_REACTOR`), which
/// makes the rest of the turn's reads small; a close always gets it.
#[cold]
fn count_bulk_read(n: usize, ctx: &mut Context) -> bool {
    n >= TRICKLE_BYTES && ctx.count_turn_read(n)
}

/// [`count_bulk_read`], then close for `reason`.
#[cold]
fn closing_after_read(n: usize, reason: CloseReason, ctx: &mut Context) -> FillOutcome {
    let _ = count_bulk_read(n, ctx);
    FillOutcome::Close(reason)
}

bitflags! {
    /// What we know of a connection, one bit each. They live in one byte
    /// because the per-message path asks about several at once ("readable,
    /// and the peer has not closed?"): one load and one compare instead of
    /// one per flag.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct State: u8 {
        /// The kernel may hold bytes we have not read (see the module docs).
        const READ_READY = 1;
        /// The send buffer had room when we last looked.
        const WRITE_READY = 1 << 1;
        /// A short read does not prove the receive queue empty here, so
        /// read on until `WouldBlock` or `Ok(0)`. Set by an event that says
        /// the peer hung up or errored (no new edge follows a FIN), by one
        /// that says urgent data arrived (a TCP read stops short at the
        /// urgent mark: tests/reactor.rs
        /// `bytes_behind_a_tcp_urgent_mark_are_echoed_without_new_input`),
        /// and for every Unix stream connection (a read stops short at a
        /// message that carries ancillary data, such as passed descriptors).
        const DRAIN_FULLY = 1 << 2;
        /// We read EOF: the peer will send nothing more.
        const PEER_CLOSED = 1 << 3;
        /// The reactor must look after this drive: something may have moved
        /// a deadline *earlier* than the one it has scheduled (a new
        /// connection, output starting to wait, a protocol deadline, a
        /// fired entry), or what it holds (queued output, a partial
        /// message) took the server's held memory past the high-water mark
        /// of `--max-memory`, or that mark paused its reading. Activity
        /// only moves deadlines later, so without this bit the reactor need
        /// not look: that saves the work on every message.
        const NEEDS_REACTOR = 1 << 4;
        /// We ended the connection, sent every owed byte and shut down our
        /// sending side; now reading and discarding until the peer closes
        /// too, or [`LINGER_MS`] passes (`linger.rs`).
        const LINGERING = 1 << 5;
        /// Queued output has drained completely at least once: the client
        /// has shown it reads its replies. Memory eviction takes such a
        /// connection only after every one that never did (`budget.rs`).
        const OUTPUT_DRAINED = 1 << 6;
        /// On the ready queue, and something drove it until its read budget
        /// ran out (a deadline: events wait for the queue): this turn's
        /// budget is spent, so the reactor's ready
        /// queue passes over it until the next turn (a bit here, not a
        /// field: a new field would grow every connection's slab entry).
        const BUDGET_SPENT = 1 << 7;
    }
}

/// A client connection and everything the reactor knows about it.
#[derive(Debug)]
pub struct Connection<S, Session> {
    socket: S,
    session: Session,
    /// Bytes received but not yet consumed by the protocol (a partial message).
    inbuf: ByteQueue,
    /// Replies the kernel has not taken yet.
    outbuf: ByteQueue,
    /// Last time bytes moved either way (for `--idle-timeout`).
    last_activity_ms: u64,
    /// Last time pending output moved, or began (for `--stall-timeout`).
    output_progress_ms: u64,
    /// When the protocol's deadline fires ([`NEVER`] if none).
    protocol_due_ms: u64,
    /// When this connection's live entry in the reactor's deadline queue is
    /// due ([`NEVER`] if it has none).
    pub scheduled_ms: u64,
    /// Tells this connection apart from earlier ones with the same slab key.
    pub serial: u32,
    /// Readiness and what we know of the peer.
    state: State,
    /// We are ending this connection (the protocol's close or refusal,
    /// `--max-line`, shutdown), for this reason: input is over on our side, and it
    /// closes — through a lingering close — once the owed replies are sent.
    /// (Not to be confused with `closed`: the reactor's mark that it *is*
    /// closed and waits for the end of the turn to leave the slab.)
    ending: Option<CloseReason>,
    /// The reactor's marks: on its ready queue, closed (see [`Parked`]).
    parked: Parked,
}

impl<S: Read + Write + Linger, Session> Connection<S, Session> {
    /// A freshly accepted connection. It starts writable (a new socket has an
    /// empty send buffer) and not known readable (the first event says so).
    pub fn new(socket: S, session: Session, serial: u32, now_ms: u64) -> Self {
        Connection {
            socket,
            session,
            inbuf: ByteQueue::new(),
            outbuf: ByteQueue::new(),
            last_activity_ms: now_ms,
            output_progress_ms: now_ms,
            protocol_due_ms: NEVER,
            scheduled_ms: NEVER,
            serial,
            state: State::WRITE_READY | State::NEEDS_REACTOR,
            ending: None,
            parked: Parked::empty(),
        }
    }

    /// Bytes of output not yet taken by the kernel.
    pub fn unsent(&self) -> &[u8] {
        self.outbuf.as_slice()
    }

    /// Never trust a short read on this connection (a Unix stream socket:
    /// see [`State::DRAIN_FULLY`]).
    pub fn drain_fully(&mut self) {
        self.state.insert(State::DRAIN_FULLY);
    }

    /// Record what a readiness event said. Nothing is read or written here.
    /// `hung_up` also stands for "urgent data arrived": both mean a short
    /// read no longer says the queue is empty.
    pub fn on_event(&mut self, readable: bool, writable: bool, hung_up: bool) {
        let mut seen = State::empty();
        if readable {
            seen |= State::READ_READY;
        }
        if writable {
            seen |= State::WRITE_READY;
        }
        if hung_up {
            // Both ways "ready": the read will say 0, a write reports the error.
            seen |= State::READ_READY | State::WRITE_READY | State::DRAIN_FULLY;
        }
        self.state |= seen;
    }

    /// The peer may still send and we still listen (`may_*`: eventually;
    /// the naming is smoltcp's).
    pub fn may_read(&self) -> bool {
        !self.state.contains(State::PEER_CLOSED) && self.ending.is_none()
    }

    /// With output already waiting, whether we may read (and so queue more):
    /// this connection's output is below `--max-buffered`, and the server
    /// as a whole is below the high-water mark of `--max-memory`. (A
    /// connection with *no* output waiting always reads: a client that
    /// reads its replies is never paused because others do not.)
    pub fn output_has_room(&self, ctx: &Context) -> bool {
        self.outbuf.len() < ctx.limits.max_buffered
            && ctx.gauge.held_capacity < ctx.limits.high_water_bytes
    }

    /// Whether to read now: the kernel may have bytes, the peer has not
    /// closed, we still listen, and there is room for the output.
    fn wants_input(&self, ctx: &Context) -> bool {
        self.input_may_wait() && (self.outbuf.is_empty() || self.output_has_room(ctx))
    }

    /// The kernel may have bytes, the peer has not closed, and we still
    /// listen. Asked once per readiness event, so the two bits are tested
    /// together.
    #[inline(always)]
    fn input_may_wait(&self) -> bool {
        self.state & (State::READ_READY | State::PEER_CLOSED) == State::READ_READY
            && self.ending.is_none()
    }

    /// Whether the reactor must look at this connection (see [`State::NEEDS_REACTOR`]).
    pub fn needs_reactor(&self) -> bool {
        self.state.contains(State::NEEDS_REACTOR)
    }

    /// Note that this turn's read budget is spent while the connection is on
    /// the ready queue (see [`State::BUDGET_SPENT`]).
    pub fn mark_budget_spent(&mut self) {
        self.state.insert(State::BUDGET_SPENT);
    }

    /// Whether this turn's read budget was spent while queued (and reset
    /// that: next turn, the queue serves it).
    pub fn take_budget_spent(&mut self) -> bool {
        let spent = self.state.contains(State::BUDGET_SPENT);
        self.state.remove(State::BUDGET_SPENT);
        spent
    }

    /// Whether the reactor must look (and reset that).
    pub fn take_needs_reactor(&mut self) -> bool {
        let changed = self.state.contains(State::NEEDS_REACTOR);
        if changed {
            self.state.remove(State::NEEDS_REACTOR);
        }
        changed
    }

    /// The earliest moment one of this connection's deadlines could expire
    /// ([`NEVER`] if none applies).
    pub fn next_deadline(&self, limits: &Limits) -> u64 {
        if self.state.contains(State::LINGERING) {
            // The linger's end is its only deadline: its output is all
            // sent (nothing can stall) and the linger is bounded anyway. An
            // idle deadline passing mid-linger would find the linger not
            // over and ask to be scheduled again at once — due by `now`,
            // so the reactor's pass over due entries would pop it forever.
            // Pinned by `a_lingering_connection_past_its_idle_time_is_not_due_again_at_once`.
            return self.protocol_due_ms;
        }
        let mut due = self.protocol_due_ms;
        if let Some(idle) = limits.idle_timeout_ms {
            due = due.min(due_after(self.last_activity_ms, idle));
        }
        if let (false, Some(stall)) = (self.outbuf.is_empty(), limits.stall_timeout_ms) {
            due = due.min(due_after(self.output_progress_ms, stall));
        }
        due
    }

    /// Send what the protocol put in `ws.reply` when the connection opened (a greeting).
    pub fn on_open_reply(&mut self, requests: Requests, ws: &mut Workspace) -> Next {
        if let Err(reason) = self.apply_reply(requests, &ws.reply, &mut ws.ctx) {
            return Next::Close(reason);
        }
        self.next_after_output(ws)
    }

    /// Stop reading for good (the server is shutting down): close once the
    /// replies already owed have been delivered.
    pub fn stop_reading(&mut self, ws: &mut Workspace) -> Next {
        // Decided before the partial message in `inbuf` is dropped: a
        // client in the middle of one is not idle (`linger.rs`).
        if self.ending.is_none() && self.idle_at_shutdown(ws.ctx.now_ms) {
            self.ending = Some(CloseReason::Shutdown);
            return Next::Close(CloseReason::Shutdown); // an idle client: nothing to lose
        }
        self.stop_reading_lingering(ws)
    }

    /// Stop reading for good, idle or not: close once the replies already
    /// owed have been delivered, through the lingering close (`linger.rs`)
    /// — half-closed first, so a request crossing our end meets an EOF,
    /// not a reset. What is dropped is only a partial message: every
    /// complete one read was answered as it was read.
    pub fn stop_reading_lingering(&mut self, ws: &mut Workspace) -> Next {
        self.ending.get_or_insert(CloseReason::Shutdown);
        self.inbuf.clear(&mut ws.ctx.gauge);
        self.next_after_output(ws)
    }

    /// A deadline may have passed: fire the protocol's, or close an idle or
    /// stalled connection. Called when this connection's queue entry is due.
    pub fn on_deadline<P>(&mut self, protocol: &P, ws: &mut Workspace) -> Next
    where
        P: Protocol<Session = Session>,
    {
        let now = ws.ctx.now_ms;
        self.state.insert(State::NEEDS_REACTOR); // our queue entry was consumed: schedule anew
        if self.state.contains(State::LINGERING) {
            return self.on_linger_deadline(&mut ws.ctx);
        }
        if self.protocol_due_ms <= now {
            self.protocol_due_ms = NEVER;
            ws.reply.clear();
            let mut reply = Reply::new(&mut ws.reply);
            protocol.on_deadline(&mut self.session, &mut reply);
            let requests = reply.requests();
            if let Err(reason) = self.apply_reply(requests, &ws.reply, &mut ws.ctx) {
                return Next::Close(reason);
            }
            match self.next_after_output(ws) {
                Next::Wait => {}
                other => return other, // a close, or a discard that ran out of budget
            }
        }
        let limits = &ws.ctx.limits;
        if let Some(idle) = limits.idle_timeout_ms {
            if due_after(self.last_activity_ms, idle) <= now {
                return Next::Close(CloseReason::Idle);
            }
        }
        if let (false, Some(stall)) = (self.outbuf.is_empty(), limits.stall_timeout_ms) {
            if due_after(self.output_progress_ms, stall) <= now {
                return Next::Close(CloseReason::Stalled);
            }
        }
        Next::Wait
    }

    /// Make all the progress possible now: flush pending output, then read
    /// and answer input until the receive queue is empty, the read budget
    /// is spent, or backpressure pauses reading. Returns what the reactor
    /// should do next ([`Next`]). Never blocks.
    pub fn drive<P>(&mut self, protocol: &P, ws: &mut Workspace) -> Next
    where
        P: Protocol<Session = Session>,
    {
        self.drive_logged::<P, false>(protocol, ws)
    }

    /// [`Connection::drive`], logging each read and write outcome at trace
    /// level when `TRACE` (the reactor picks the copy once per turn, so the
    /// untraced one carries no trace code).
    // Inlined into the reactor's event loop (with `fill` and `send`): as a
    // call per message, saving and restoring registers cost more than any
    // of its checks (docs/BENCHMARKS.md, "How the instruction count came down").
    #[inline(always)]
    pub fn drive_logged<P, const TRACE: bool>(&mut self, protocol: &P, ws: &mut Workspace) -> Next
    where
        P: Protocol<Session = Session>,
    {
        // The common case first: nothing owed, so nothing to flush and
        // room for output — one test of the buffer answers both.
        let wants_input = if self.outbuf.is_empty() {
            self.input_may_wait()
        } else {
            // 1. Output first: freeing room in the send buffer may lift backpressure.
            if self.state.contains(State::WRITE_READY) {
                let ctx = &mut ws.ctx;
                let before = self.outbuf.len();
                let outcome = flush(
                    &mut self.socket,
                    &mut self.outbuf,
                    &mut ctx.gauge,
                    &mut ctx.counters,
                );
                if self.outbuf.len() < before {
                    self.last_activity_ms = ctx.now_ms;
                    self.output_progress_ms = ctx.now_ms;
                }
                if TRACE {
                    let left = self.outbuf.len();
                    trace!("flushed {}: {outcome:?}, {left} unsent", before - left);
                }
                if let Err(reason) = self.after_flush(outcome) {
                    return Next::Close(reason);
                }
                if outcome == FlushOutcome::Flushed {
                    self.state.insert(State::OUTPUT_DRAINED);
                }
            }
            // 2. Input, if the kernel may have some and we are willing to take it.
            self.wants_input(&ws.ctx)
        };
        if !wants_input {
            // Paused by backpressure leaves READ_READY set: when a writable
            // edge drains the output, step 1 above runs again and reads the
            // bytes no new readable edge would announce.
            return self.next_after_output(ws);
        }
        match self.fill::<P, TRACE>(protocol, ws) {
            // Still open both ways (fill reports a close request as Stopped
            // and EOF as PeerClosed): nothing to do until the next edge.
            FillOutcome::Drained | FillOutcome::Paused => Next::Wait,
            FillOutcome::Stopped => self.next_after_output(ws),
            FillOutcome::BudgetSpent => Next::Requeue,
            FillOutcome::PeerClosed => {
                self.state.insert(State::PEER_CLOSED);
                self.state.remove(State::READ_READY);
                if let Err(reason) = self.answer_peer_closed(protocol, ws) {
                    return Next::Close(reason);
                }
                self.next_after_output(ws)
            }
            FillOutcome::Close(reason) => Next::Close(reason),
        }
    }

    /// Once input is over (EOF, the protocol's close, shutdown), close when
    /// the last reply has left; until then, wait for writable edges to flush
    /// it. When *we* end the connection while the peer may still be
    /// sending, the close goes through a lingering close (`linger.rs`), so
    /// unread input cannot turn it into a reset that loses owed replies.
    fn next_after_output(&mut self, ws: &mut Workspace) -> Next {
        if self.may_read() {
            return Next::Wait;
        }
        match self.ending {
            // We end it and the peer may still send (`linger.rs`).
            Some(reason) if !self.state.contains(State::PEER_CLOSED) => {
                self.end_gracefully(reason, ws)
            }
            // EOF was read: nothing unread is left, so close once flushed.
            _ if self.outbuf.is_empty() => {
                Next::Close(self.ending.unwrap_or(CloseReason::PeerClosed))
            }
            _ => Next::Wait,
        }
    }

    /// Drain the socket into the protocol until the queue is empty, the
    /// budget is spent, or backpressure says stop.
    #[inline(always)] // see `drive`
    fn fill<P, const TRACE: bool>(&mut self, protocol: &P, ws: &mut Workspace) -> FillOutcome
    where
        P: Protocol<Session = Session>,
    {
        let Workspace {
            scratch,
            reply,
            ctx,
            ..
        } = ws;
        let mut taken = 0;
        // Edge-triggered: epoll reported a *change* and will not report again
        // until new bytes arrive, so we read until the queue is empty — or
        // until the budget runs out (fairness: one fast sender must not
        // starve the rest; the reactor requeues us).
        loop {
            ctx.counters.read_calls += 1;
            match try_read(&mut self.socket, scratch) {
                ReadOutcome::Data(n) => {
                    ctx.counters.bytes_in += n as u64;
                    self.last_activity_ms = ctx.now_ms;
                    let (sent_before, writes_before) =
                        (ctx.counters.bytes_out, ctx.counters.write_calls); // trace only
                    if TRACE {
                        trace!("read {n}");
                    }
                    // (`in_preamble` is a constant `false` for every protocol
                    // but the PROXY-header wrapper, which is byte-for-byte
                    // only once its header is in.)
                    if P::BYTE_FOR_BYTE && !protocol.in_preamble(&self.session) {
                        // Shortest path (echo, upper): the reply is the read
                        // bytes transformed where they lie; send them as is.
                        protocol.transform_in_place(&mut scratch[..n]);
                        if let Err(reason) = self.send(&scratch[..n], ctx) {
                            return closing_after_read(n, reason, ctx);
                        }
                    } else {
                        if let Err(reason) = self.on_input(protocol, &scratch[..n], reply, ctx) {
                            return closing_after_read(n, reason, ctx);
                        }
                        // The protocol asked to close (a byte-for-byte one never does).
                        if self.ending.is_some() {
                            if count_bulk_read(n, ctx) {
                                self.state.insert(State::NEEDS_REACTOR);
                            }
                            return FillOutcome::Stopped;
                        }
                    }
                    if TRACE {
                        let writes = ctx.counters.write_calls - writes_before;
                        trace_sent(
                            ctx.counters.bytes_out - sent_before,
                            writes,
                            self.outbuf.len(),
                        );
                    }
                    // Only output the kernel refused can pass the mark, so
                    // the common case (nothing queued) is one test.
                    if !self.outbuf.is_empty() && !self.output_has_room(ctx) {
                        ctx.counters.read_pauses += 1;
                        if TRACE {
                            trace!("paused: {} unsent", self.outbuf.len());
                        }
                        // The reactor is needed if this read spent the
                        // turn's budget (the rest of the turn reads small),
                        // or if memory paused it, not --max-buffered (it
                        // must start the pressure episode whose end will
                        // resume this read).
                        let spent = count_bulk_read(n, ctx);
                        if spent || ctx.gauge.held_capacity >= ctx.limits.high_water_bytes {
                            self.state.insert(State::NEEDS_REACTOR);
                        }
                        return FillOutcome::Paused;
                    }
                    // A short read means the receive queue is empty, and new
                    // bytes will raise a new edge: skip the read that would
                    // only say WouldBlock. Pinned by the test
                    // `a_short_read_then_new_data_brings_a_new_readable_event`
                    // in tests/nonblocking_semantics.rs. Not after a hang-up
                    // event: no new edge follows the FIN, so read on to Ok(0).
                    if n < scratch.len() && !self.state.contains(State::DRAIN_FULLY) {
                        if TRACE {
                            trace!("short read: queue empty");
                        }
                        self.state.remove(State::READ_READY);
                        // A bulk sender's tail counts against the turn's
                        // budget; a small message (one per event at most)
                        // is left out, off the per-message path.
                        if n >= TRICKLE_BYTES && ctx.count_turn_read(n) {
                            // Spent: the reactor makes the rest of the
                            // turn's reads small.
                            self.state.insert(State::NEEDS_REACTOR);
                        }
                        return FillOutcome::Drained;
                    }
                    // The read filled the buffer: more may be waiting.
                    taken += n;
                    let turn_spent = ctx.count_turn_read(n);
                    if taken >= ctx.limits.read_budget_bytes || turn_spent {
                        if TRACE {
                            let left = ctx.turn_bytes_left;
                            trace!("read budget spent: {taken} bytes ({left} left this turn)");
                        }
                        return FillOutcome::BudgetSpent;
                    }
                }
                ReadOutcome::WouldBlock => {
                    if TRACE {
                        trace!("read would block");
                    }
                    self.state.remove(State::READ_READY);
                    return FillOutcome::Drained;
                }
                ReadOutcome::Closed => {
                    if TRACE {
                        trace!("read 0: peer closed its side");
                    }
                    return FillOutcome::PeerClosed;
                }
                ReadOutcome::Reset => {
                    if TRACE {
                        trace!("read: connection reset");
                    }
                    return FillOutcome::Close(CloseReason::Reset);
                }
                ReadOutcome::Failed(kind) => {
                    debug!("read failed: {kind:?}");
                    return FillOutcome::Close(CloseReason::Error);
                }
            }
        }
    }

    /// Hand freshly read bytes to the protocol and send its reply.
    fn on_input<P>(
        &mut self,
        protocol: &P,
        data: &[u8],
        reply_buf: &mut Vec<u8>,
        ctx: &mut Context,
    ) -> Result<(), CloseReason>
    where
        P: Protocol<Session = Session>,
    {
        reply_buf.clear();
        let mut reply = Reply::new(reply_buf);
        if self.inbuf.is_empty() {
            // Fast path: parse straight from the scratch buffer and keep only
            // a trailing partial message (for echo/upper: nothing at all).
            let consumed = protocol.on_bytes(&mut self.session, data, &mut reply);
            let consumed = checked_consumed(consumed, data.len(), ctx)?;
            self.inbuf.push(&data[consumed..], &mut ctx.gauge);
        } else {
            // A partial message is waiting: the new bytes complete it.
            self.inbuf.push(data, &mut ctx.gauge);
            let consumed = protocol.on_bytes(&mut self.session, self.inbuf.as_slice(), &mut reply);
            let consumed = checked_consumed(consumed, self.inbuf.len(), ctx)?;
            self.inbuf.consume(consumed, &mut ctx.gauge);
        }
        let mut requests = reply.requests();
        if !requests.close && requests.refuse.is_none() && self.inbuf.len() > ctx.limits.max_line {
            // A partial message past --max-line: memory must stay bounded,
            // so stop here. The protocol may say why (json sends an error).
            protocol.on_input_too_long(&mut self.session, &mut reply);
            requests = reply.requests();
            self.inbuf.clear(&mut ctx.gauge);
            self.ending.get_or_insert(CloseReason::LineTooLong);
        }
        if ctx.gauge.held_capacity >= ctx.limits.high_water_bytes {
            // Partial messages count against --max-memory too: let the
            // reactor check the budget now, not at the end of the turn.
            self.state.insert(State::NEEDS_REACTOR);
        }
        self.apply_reply(requests, reply_buf, ctx)
    }

    /// EOF: let the protocol answer a trailing partial message, then send.
    fn answer_peer_closed<P>(&mut self, protocol: &P, ws: &mut Workspace) -> Result<(), CloseReason>
    where
        P: Protocol<Session = Session>,
    {
        ws.reply.clear();
        let mut reply = Reply::new(&mut ws.reply);
        protocol.on_peer_closed(&mut self.session, self.inbuf.as_slice(), &mut reply);
        let requests = reply.requests();
        self.inbuf.clear(&mut ws.ctx.gauge);
        self.apply_reply(requests, &ws.reply, &mut ws.ctx)
    }

    /// Carry out what a protocol answered: arm or cancel its deadline,
    /// note a close request, and send the bytes (a reply counts as activity).
    fn apply_reply(
        &mut self,
        requests: Requests,
        bytes: &[u8],
        ctx: &mut Context,
    ) -> Result<(), CloseReason> {
        if let Some(reason) = requests.refuse {
            // Nothing more is sent, not even output still queued. But the
            // close is a lingering one like any close of ours: the client
            // may have sent more behind what we refuse (a message right
            // after its handshake answer), and a close() that finds it
            // unread turns our FIN into a reset — the client would read
            // "connection reset" instead of the refusal (`linger.rs`).
            self.ending = Some(reason);
            self.inbuf.clear(&mut ctx.gauge);
            self.outbuf.clear(&mut ctx.gauge);
            return Ok(());
        }
        match requests.deadline {
            DeadlineRequest::Unchanged => {}
            DeadlineRequest::Set(after) => {
                // From a fresh reading rounded up, not the turn's: the turn
                // may have begun long before this moment, and a deadline
                // must not fire early (`timers.rs`). At least 1 ms: a
                // deadline due *now* would be popped again in the same pass
                // over the queue, and a protocol that re-arms a zero
                // deadline from `on_deadline` would spin the loop.
                let set_at = ctx.now_ms.max(ctx.clock.now_ms_ceil());
                self.protocol_due_ms = due_after(set_at, millis(after).max(1));
                self.state.insert(State::NEEDS_REACTOR);
            }
            DeadlineRequest::Cancel => self.protocol_due_ms = NEVER,
        }
        if requests.close {
            self.ending.get_or_insert(CloseReason::ProtocolClosed);
            self.inbuf.clear(&mut ctx.gauge); // input after the close request is ignored
        }
        if !bytes.is_empty() {
            self.last_activity_ms = ctx.now_ms;
        }
        self.send(bytes, ctx)
    }

    /// Whether reading stopped only because the server passed the memory
    /// high-water mark: bytes may wait in the kernel, the peer and we are
    /// both still going, and this connection's own output is under
    /// `--max-buffered`. When the pressure ends no edge will announce those
    /// bytes, so the reactor looks for these and puts them on the ready queue.
    pub fn read_paused_for_memory(&self, limits: &Limits) -> bool {
        self.state.contains(State::READ_READY)
            && self.may_read()
            && !self.outbuf.is_empty()
            && self.outbuf.len() < limits.max_buffered
    }

    /// Heap bytes this connection holds (both buffers, by capacity).
    pub fn held_capacity(&self) -> usize {
        self.inbuf.capacity() + self.outbuf.capacity()
    }

    /// Whether replies are waiting for the client to read them.
    pub fn has_unsent_output(&self) -> bool {
        !self.outbuf.is_empty()
    }

    /// Whether queued output has ever drained completely: the client reads.
    pub fn has_drained_output(&self) -> bool {
        self.state.contains(State::OUTPUT_DRAINED)
    }

    /// Since when pending output has not moved (meaningful while
    /// [`Connection::has_unsent_output`]).
    pub fn output_stuck_since_ms(&self) -> u64 {
        self.output_progress_ms
    }

    /// Drop both buffers now (the connection was closed and will be reaped
    /// at the end of the turn): its memory counts as free at once.
    pub fn discard_buffers(&mut self, gauge: &mut BufferGauge) {
        self.inbuf.clear(gauge);
        self.outbuf.clear(gauge);
    }

    /// Drop buffered bytes (the connection is closing); returns the socket.
    pub fn release(mut self, gauge: &mut BufferGauge) -> S {
        self.inbuf.clear(gauge);
        self.outbuf.clear(gauge);
        self.socket
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

/// The trace line for a reply: what the kernel took, and what was kept.
#[cold]
fn trace_sent(sent: u64, writes: u64, unsent: usize) {
    if unsent == 0 && sent > 0 {
        trace!("wrote {sent}");
    } else if writes == 0 && unsent > 0 {
        // No write tried: the last one said WouldBlock, no writable edge since.
        trace!("queued behind unsent output: {unsent} unsent");
    } else if unsent > 0 {
        trace!("wrote {sent}, write would block: {unsent} unsent");
    }
}

/// A protocol's `on_bytes` answer, checked: consuming more than it was
/// given is a bug in that protocol, and closes this connection (logged)
/// instead of panicking the whole server.
fn checked_consumed(
    consumed: usize,
    given: usize,
    ctx: &mut Context,
) -> Result<usize, CloseReason> {
    if consumed <= given {
        return Ok(consumed);
    }
    if let Some(held_back) = ctx.warnings.allow(ctx.now_ms, CLIENT_WARN_INTERVAL_MS) {
        error!(
            "protocol bug: on_bytes consumed {consumed} of {given} bytes; closing the connection \
             ({held_back} similar errors suppressed)"
        );
    }
    Err(CloseReason::Error)
}
