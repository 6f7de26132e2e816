//! The connections: dispatching their events, acting on what they answer
//! ([`Next`]), the ready queue, deadlines, closing and reaping.
//!
//! [`Clients`] is everything events are dispatched to, kept apart from
//! `Poll` and `Events` so the loop can iterate events while mutating it.
//!
//! The per-message path is `on_connection_event` → `Connection::drive` →
//! `needs_action`, which in the common case (the connection waits for its
//! next edge and nothing moved a deadline earlier) says there is nothing
//! more to do.

use std::collections::VecDeque;
use std::fs::File;

use log::{debug, trace};
use mio::event::Event;
use mio::{Registry, Token};
use slab::Slab;

use super::endpoints::Endpoint;
use super::tokens::endpoint_index;
use super::{BULK_BYTES_PER_READ, QUEUE_ALONE_READ_BUDGET, REAP_TIME_BUDGET_US, TURN_READ_BUDGET};
use crate::budget::MemoryBudget;
use crate::connection::{Connection, Next, Workspace};
use crate::protocol::Protocol;
use crate::ratelimit::WarnLimiter;
use crate::stats::CloseReason;
use crate::stream::{Linger, Stream};
use crate::timers::{DeadlineQueue, Entry, NEVER};
use crate::udp_budget::ReplyBudget;

/// `false` in the common case, once per message: the connection waits for
/// its next edge and no deadline moved earlier (activity only moves them
/// later) — nothing for the reactor to do. Otherwise [`Clients::act_on`]
/// must look. It only peeks: `act_on` is the one place that takes
/// `NEEDS_REACTOR` and reschedules.
#[inline(always)]
fn needs_action<S, Session>(conn: &Connection<S, Session>, next: Next) -> bool
where
    S: std::io::Read + std::io::Write + Linger,
{
    next != Next::Wait || conn.needs_reactor()
}

/// Whether a deadline entry still speaks for its connection. Stale: the
/// connection closed (and maybe its key was reused by a newer one), or an
/// earlier entry replaced this one.
fn entry_is_live<S, Session>(conns: &Slab<Connection<S, Session>>, entry: &Entry) -> bool {
    conns.get(entry.key).is_some_and(|conn| {
        !conn.is_closed() && conn.serial == entry.serial && conn.scheduled_ms == entry.due_ms
    })
}

/// What events are dispatched to: sockets, connections, queues and timers.
/// Kept apart from `Poll` and `Events` so the loop can iterate events while
/// mutating everything else.
pub(super) struct Clients<P: Protocol> {
    pub(super) protocol: P,
    pub(super) endpoints: Vec<Endpoint>,
    pub(super) conns: Slab<Connection<Stream, P::Session>>,
    /// Work left over from a budget: connection keys and endpoint tokens.
    pub(super) ready: VecDeque<Token>,
    /// Keys closed this turn, freed in step 6.
    pub(super) closed: Vec<usize>,
    pub(super) deadlines: DeadlineQueue,
    pub(super) ws: Workspace,
    pub(super) max_connections: usize,
    /// Serials tell a connection apart from earlier ones with the same key.
    pub(super) next_serial: u32,
    /// A descriptor held in reserve, released to turn connections away
    /// cleanly when the process runs out (see `shed_waiting_connections`).
    pub(super) spare_fd: Option<File>,
    pub(super) accept_warnings: WarnLimiter,
    /// Connections turned away over `--max-connections`: one line per interval.
    pub(super) reject_warnings: WarnLimiter,
    /// `--max-memory`: its marks and whether pressure is on.
    pub(super) budget: MemoryBudget,
    /// One limiter each for pressure starting, evictions, pressure ending.
    pub(super) memory_warnings: [WarnLimiter; 3],
    /// `--udp-reply-budget`: reply bytes per second per source network.
    pub(super) udp_reply_budget: Option<ReplyBudget>,
    /// False once shutdown began.
    pub(super) accepting: bool,
    /// The ready queue's length before this turn's events (step 4 serves
    /// only those entries). A field, not a local of the turn: kept across
    /// the event dispatch, a local cost a spill and a reload every turn.
    pub(super) carried: usize,
    /// The earliest `paused_until_ms` of the endpoints ([`NEVER`] when none
    /// rests), kept so a turn looks at one number, not every endpoint.
    pub(super) endpoints_resume_ms: u64,
    /// `RUST_LOG` asks for trace lines: read once per turn.
    pub(super) tracing: bool,
    /// The read count (`Counters::read_calls`) when step 4 last ended, or
    /// when a connection was queued on an empty queue: the reads since then
    /// served others, who wait for the next step 4 to end
    /// ([`queue_read_budget`]).
    pub(super) reads_after_queue: u64,
}

/// Step 4's read budget, given `reads_since`: the reads made since the last
/// step 4 (or since the queue, empty, took a connection), nearly all of
/// them step 3 serving other clients, who now wait for the next
/// `epoll_wait`; and `step3_bulk`: the bulk bytes step 3 of this turn
/// already copied. None: nobody waits, so a lone bulk sender reads its
/// whole budget, [`QUEUE_ALONE_READ_BUDGET`]. Otherwise the turn may copy
/// [`BULK_BYTES_PER_READ`] for each of those reads, steps 3 and 4
/// together, at most [`QUEUE_ALONE_READ_BUDGET`] in step 4, and at least
/// one read (a budget of 1 byte is spent by the first read), so the queue
/// always moves: the bulk copying of a turn stays in proportion to the
/// small messages answered in it. Beside 50 readers whose turn's step 3
/// already read a flooder's 64 KiB, that is one read; with a floor of
/// 64 KiB for step 4 alone, the readers' p99 beside 19 000 flooders was
/// about twice what it is now (docs/BENCHMARKS.md, "A turn's bulk copying,
/// steps 3 and 4 together"); beside 1 000 (a turn of several ms) a hog
/// still gets 256 KiB.
pub(super) fn queue_read_budget(reads_since: u64, step3_bulk: isize) -> isize {
    if reads_since == 0 {
        return QUEUE_ALONE_READ_BUDGET;
    }
    let earned = reads_since
        .saturating_mul(BULK_BYTES_PER_READ as u64)
        .min(isize::MAX as u64) as isize;
    earned
        .saturating_sub(step3_bulk.max(0))
        .clamp(1, QUEUE_ALONE_READ_BUDGET)
}

/// Record what a readiness event says in the connection's state.
#[inline(always)]
fn record<S, Session>(conn: &mut Connection<S, Session>, event: &Event)
where
    S: std::io::Read + std::io::Write + Linger,
{
    conn.on_event(
        event.is_readable(),
        event.is_writable(),
        // Urgent data (EPOLLPRI) makes reads stop short at its mark:
        // treated like a hang-up, drain to WouldBlock (DRAIN_FULLY).
        event.is_read_closed() || event.is_error() || event.is_priority(),
    );
}

/// What a readiness event says, in words, for the trace.
fn readiness(event: &Event) -> String {
    let said = [
        (event.is_readable(), "readable"),
        (event.is_writable(), "writable"),
        (event.is_read_closed(), "read-closed"),
        (event.is_write_closed(), "write-closed"),
        (event.is_error(), "error"),
        (event.is_priority(), "urgent"),
    ];
    let words: Vec<&str> = said.iter().filter(|(on, _)| *on).map(|(_, w)| *w).collect();
    words.join(" ")
}

impl<P: Protocol> Clients<P> {
    /// A readiness event for connection `key` (step 3): record what it says,
    /// then drive the connection. `TRACE`: log the event and each outcome
    /// (chosen once per turn, so the untraced copy of this path has no trace
    /// code).
    pub(super) fn on_connection_event<const TRACE: bool>(&mut self, key: usize, event: &Event) {
        let Some(conn) = self.conns.get_mut(key) else {
            return; // cannot happen: slots are freed only between batches
        };
        if TRACE {
            trace!("conn {key} {}", readiness(event));
        }
        if conn.is_parked() {
            // Closed earlier in this batch: the event is stale. On the ready
            // queue: it is driven there, in its order, and what the event
            // says is kept for then — driving it now would let a thousand
            // bulk senders' new bytes each cost a read before the events
            // behind theirs are reached (docs/BENCHMARKS.md, "A reader
            // beside a flood").
            if !conn.is_closed() {
                record(conn, event);
            }
            return;
        }
        record(conn, event);
        // Drive it now, on the connection already in hand (one slab lookup).
        let next = conn.drive_logged::<P, TRACE>(&self.protocol, &mut self.ws);
        if needs_action(conn, next) {
            self.act_on(key, next);
        }
    }

    /// Drive a connection from the ready queue (it stopped on its budget,
    /// or pressure paused it), then act on what it says. (`Connection::drive`
    /// is the connection's own step; this is the reactor's around it.)
    #[inline(always)] // once per message (ready-queue path)
    pub(super) fn drive_queued(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let next = if self.tracing {
            trace!("conn {key} from the ready queue");
            conn.drive_logged::<P, true>(&self.protocol, &mut self.ws)
        } else {
            conn.drive_logged::<P, false>(&self.protocol, &mut self.ws)
        };
        if needs_action(conn, next) {
            self.act_on(key, next);
        }
    }

    /// Carry out a connection's [`Next`], and keep its deadline scheduled.
    pub(super) fn after(&mut self, key: usize, next: Next) {
        if needs_action(&self.conns[key], next) {
            self.act_on(key, next);
        }
    }

    /// Act on a connection's answer: requeue or close it, and reschedule
    /// its deadline if one moved earlier — the one place that consumes
    /// `NEEDS_REACTOR`.
    pub(super) fn act_on(&mut self, key: usize, next: Next) {
        if self.ws.ctx.turn_budget_spent() {
            // The turn's read budget, not only this connection's: the rest
            // of the turn reads small (`Workspace::trickle`).
            self.ws.trickle();
        }
        let conn = &mut self.conns[key];
        match next {
            Next::Wait => {}
            Next::Requeue => {
                trace!("conn {key} read budget spent: on the ready queue");
                if !conn.is_queued() {
                    if self.ready.is_empty() {
                        // Step 4 will count the others served from here,
                        // not from a step 4 turns ago (`queue_read_budget`).
                        self.reads_after_queue = self.ws.ctx.counters.read_calls;
                    }
                    conn.set_queued(true);
                    self.ready.push_back(Token(key));
                } else {
                    // Already queued from an earlier turn, and a deadline
                    // drove it meanwhile (events wait for the queue): that
                    // was this turn's budget. Its entry is
                    // passed over in step 4 and served next turn (checked
                    // here, off the per-message path; tests/read_budget.rs).
                    conn.mark_budget_spent();
                }
            }
            Next::Close(reason) => return self.close(key, reason),
        }
        if !conn.take_needs_reactor() {
            return;
        }
        // Lazy timers: only a deadline that moved *earlier* than the one
        // scheduled needs a new entry; later ones are found when it pops.
        // Never due in the pass that is running: `expire_deadlines` would pop
        // it again at once, and the clock does not move within a turn.
        let due = conn
            .next_deadline(&self.ws.ctx.limits)
            .max(self.ws.ctx.now_ms + 1);
        if due < conn.scheduled_ms {
            conn.scheduled_ms = due;
            self.deadlines.schedule(Entry {
                due_ms: due,
                key,
                serial: conn.serial,
            });
        }
        // Output queued past the high-water mark also raised the flag.
        if self.ws.ctx.gauge.held_capacity >= self.ws.ctx.limits.high_water_bytes {
            self.enforce_budget();
        }
    }

    /// Mark connection `key` closed and count `reason`; its buffers are
    /// freed now, its slab slot and socket only in step 6 (`reap_closed`).
    pub(super) fn close(&mut self, key: usize, reason: CloseReason) {
        let conn = &mut self.conns[key];
        if conn.is_closed() {
            return;
        }
        conn.mark_closed();
        // Its memory is free now, not at the end of the turn: eviction
        // counts on that, and nothing reads these buffers again.
        conn.discard_buffers(&mut self.ws.ctx.gauge);
        self.ws.ctx.counters.count_close(reason);
        self.closed.push(key);
        debug!("connection {key} closed: {}", reason.name());
    }

    /// Connections open: those in the slab but the ones closed and not yet
    /// reaped.
    pub(super) fn open_count(&self) -> usize {
        self.conns.len() - self.closed.len()
    }

    /// Close every connection (the shutdown grace ran out).
    pub(super) fn close_all(&mut self, reason: CloseReason) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, reason);
        }
    }

    /// Step 4: serve the first [`Clients::carried`] entries of the ready queue — those
    /// queued before this turn's events were dispatched. An entry queued
    /// during this turn (its budget ran out in step 3) waits for the next
    /// turn, as does one that re-queues itself now, and one a deadline drove
    /// into spending this turn's budget while it was queued (`BUDGET_SPENT`;
    /// an event never drives a queued connection): the read budget is
    /// per connection *per turn*, and a zero-timeout poll lets fresh events
    /// in before anyone gets another. The step reads at most about
    /// [`queue_read_budget`] in bulk (1 KiB per other client served since
    /// the last step 4, less what step 3 read, one read at least and
    /// 256 KiB at most): once it is spent the rest of the
    /// queue waits, in order, for the next turns, so a queue of thousands
    /// of bulk senders does not hold up the next `epoll_wait`, and whoever
    /// waits in it.
    pub(super) fn serve_ready_queue(&mut self, registry: &Registry) {
        let carried = self.carried;
        if carried == 0 {
            return;
        }
        let reads_since = self
            .ws
            .ctx
            .counters
            .read_calls
            .saturating_sub(self.reads_after_queue);
        // What step 3 read in bulk this turn: the turn budget it began
        // with, less what is left of it (less than nothing once a read
        // crossed it).
        let step3_bulk = TURN_READ_BUDGET - self.ws.ctx.turn_bytes_left;
        self.ws
            .refill_turn_budget(queue_read_budget(reads_since, step3_bulk));
        for _ in 0..carried.min(self.ready.len()) {
            if self.ws.ctx.turn_budget_spent() {
                break; // the step's budget is spent: the rest next turn
            }
            let Some(token) = self.ready.pop_front() else {
                break;
            };
            if let Some(index) = endpoint_index(token) {
                if let Some(endpoint) = self.endpoints.get_mut(index) {
                    endpoint.queued = false;
                    self.on_endpoint_ready(index, registry);
                }
                continue;
            }
            let Some(conn) = self.conns.get_mut(token.0) else {
                continue;
            };
            if conn.take_budget_spent() {
                // Its event spent this turn's budget: next turn, then.
                trace!(
                    "conn {} passed over: its budget is spent this turn",
                    token.0
                );
                self.ready.push_back(token);
                continue;
            }
            conn.set_queued(false);
            if !conn.is_closed() {
                self.drive_queued(token.0);
            }
        }
        self.reads_after_queue = self.ws.ctx.counters.read_calls;
    }

    /// Fire every deadline that is due, and resume rested listeners.
    pub(super) fn expire_deadlines(&mut self, registry: &Registry) {
        let now = self.ws.ctx.now_ms;
        while let Some(entry) = self.deadlines.pop_due(now) {
            if !entry_is_live(&self.conns, &entry) {
                continue;
            }
            trace!("conn {} deadline due", entry.key);
            let conn = &mut self.conns[entry.key];
            conn.scheduled_ms = NEVER;
            let next = conn.on_deadline(&self.protocol, &mut self.ws);
            self.after(entry.key, next);
        }
        if self.endpoints_resume_ms <= now {
            self.resume_endpoints(now, registry);
        }
    }

    /// Resume the endpoints whose accept pause is over, and note when the
    /// next one ends. Off the per-turn path: endpoints rest only after
    /// EMFILE or ENOBUFS.
    #[cold]
    fn resume_endpoints(&mut self, now: u64, registry: &Registry) {
        for index in 0..self.endpoints.len() {
            if self.endpoints[index].paused_until_ms <= now {
                // No edge will announce connections that queued up while
                // we rested: look now.
                self.endpoints[index].paused_until_ms = NEVER;
                self.on_endpoint_ready(index, registry);
            }
        }
        self.endpoints_resume_ms = self
            .endpoints
            .iter()
            .map(|e| e.paused_until_ms)
            .min()
            .unwrap_or(NEVER);
    }

    /// Step 6: free the slab slots of the connections closed this turn and
    /// drop their sockets (closing the descriptor also takes it out of the
    /// epoll set). Only now, so no later event of the batch finds its key
    /// reused by a new connection. At most `budget` of them, and for at
    /// most [`REAP_TIME_BUDGET_US`]: closing a socket frees what the kernel
    /// holds for it, a flooder's megabytes, so an eviction of a thousand
    /// flooders closed in one turn held every other client for all of
    /// those frees (docs/BENCHMARKS.md, "A reader beside a flood"). The
    /// rest are closed in the next turns (the loop does not sleep while any
    /// wait); their memory in our buffers was freed when they were closed.
    #[inline]
    pub(super) fn reap_closed(&mut self, budget: usize) {
        // Most turns close nothing, and the heap of deadlines is small or
        // mostly live: two compares, no call.
        if self.closed.is_empty() && !self.deadlines.may_need_compaction(self.conns.len()) {
            return;
        }
        self.reap_closed_now(budget);
    }

    /// [`Self::reap_closed`] past the quick look.
    #[inline(never)]
    fn reap_closed_now(&mut self, budget: usize) {
        if self.closed.is_empty() {
            // The heap's stale entries grow with re-armed timers, not
            // closes, so look at those still.
            let conns = &self.conns;
            self.deadlines
                .compact_if_needed(conns.len(), |entry| entry_is_live(conns, entry));
            return;
        }
        let clock = self.ws.ctx.clock;
        let until_ns = clock.elapsed_ns() + REAP_TIME_BUDGET_US * 1_000;
        self.close_sockets(budget, || clock.elapsed_ns() < until_ns);
        self.after_reaping();
    }

    /// Step 6 at exit: every closed connection's socket, however long it takes.
    pub(super) fn reap_all_closed(&mut self) {
        self.close_sockets(usize::MAX, || true);
        self.after_reaping();
    }

    /// What reaping leaves to tidy: stale timers, and queue entries of
    /// freed keys.
    fn after_reaping(&mut self) {
        // Stale deadline entries wait in the heap until they come due: with
        // a long --idle-timeout and fast churn they would pile up. Rebuild
        // it when they outnumber the live ones (at most one per connection).
        let conns = &self.conns;
        self.deadlines
            .compact_if_needed(conns.len(), |entry| entry_is_live(conns, entry));
        // A queued key that was just freed must not be driven later.
        if !self.ready.is_empty() {
            let conns = &self.conns;
            self.ready
                .retain(|t| endpoint_index(*t).is_some() || conns.contains(t.0));
        }
    }

    /// Free the slab slots and sockets of up to `budget` closed connections,
    /// the earliest closed first; after each, go on only while
    /// `time_left()` says so (at least one is always closed). The clock is
    /// read after every close: it costs tens of ns, a close µs to hundreds.
    #[inline(never)] // off the per-turn path: most turns close nothing
    pub(super) fn close_sockets(&mut self, budget: usize, mut time_left: impl FnMut() -> bool) {
        let budget = self.closed.len().min(budget);
        let mut done = 0;
        while done < budget {
            let conn = self.conns.remove(self.closed[done]);
            // Dropping the socket closes the fd, which also removes it
            // from the epoll set: no epoll_ctl(DEL) needed.
            drop(conn.release(&mut self.ws.ctx.gauge));
            done += 1;
            if !time_left() {
                break;
            }
        }
        self.closed.drain(..done);
    }
}
