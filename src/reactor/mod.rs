//! The event loop: one `mio::Poll`, the listening sockets, every connection.
//!
//! Each turn of the loop ([`Reactor::run_once`]; `Reactor::turns` inside
//! [`Reactor::run`]) is the same steps (numbered the same way in
//! `docs/ARCHITECTURE.md`):
//!
//! 1. choose the poll timeout: zero if the ready queue holds work or
//!    closed sockets wait to be reaped, else the nearest deadline (a
//!    connection timer, an accept pause, the stats interval, the end of
//!    the shutdown grace), else forever;
//! 2. `epoll_wait` for events (`EINTR` counts as "no events"), then read the
//!    clock — once per turn, not per event;
//! 3. dispatch each event: accept on a listener, receive on a UDP socket,
//!    drive a connection, note that signals arrived. Reads of at least
//!    [`TRICKLE_BYTES`] share one budget for the step ([`TURN_READ_BUDGET`]); once it
//!    is spent, each read takes at most [`TRICKLE_BYTES`], so a small
//!    message behind a thousand bulk senders is still answered this turn;
//! 4. serve the ready queue: connections and sockets that stopped on their
//!    per-turn budget with work possibly left, which no new edge would
//!    announce — only those queued before step 3 (an event for a queued
//!    connection only records what it said; it is served here, in queue
//!    order), and not one that a deadline drove while it was queued into
//!    spending its budget again (it waits a turn more): one budget per turn
//!    each.
//!    The step has a budget of its own, in proportion to the reads since
//!    the last step 4 ([`BULK_BYTES_PER_READ`] each) less what step 3 read
//!    in bulk, at least one read and at most [`QUEUE_ALONE_READ_BUDGET`] —
//!    all of that when nothing else was read — and stops once it is spent;
//!    the rest of the queue waits, in order, for the next turns;
//! 5. expire deadlines: protocol timers, idle and stalled connections,
//!    lingering closes, accept pauses that are over; then check the memory
//!    budget (`memory.rs`; also checked at once when output or input
//!    crosses its high-water mark);
//! 6. reap: free the slab slots of connections closed this turn — only now,
//!    so a key named by a later event of the same batch is never reused
//!    for a new connection mid-batch — and close their sockets, at most
//!    [`REAP_BUDGET`] of them and for at most [`REAP_TIME_BUDGET_US`]; the
//!    rest wait for the next turns, which do not sleep while any wait;
//! 7. publish the counters for other threads, at most every 10 ms of the
//!    loop's clock (and, under `--workers`, into this worker's shared
//!    slot, at most every 10 ms). A turn that skips the copy leaves the
//!    numbers stale and arms a timer for the copy's due time
//!    (`publish_timer.rs`, a `timerfd` in the epoll set), so a reader never
//!    waits on stale numbers for longer than that, even if no event comes.
//!
//! Between turns (`Reactor::between_turns`), the loop handles the signals
//! step 3 noted, checks whether a stop was asked for, and during a
//! shutdown or drain whether it is over: only after a wake-up, a signal or
//! a stats copy, or while a shutdown or drain is under way, so any other
//! turn pays one test.
//!
//! With `--metrics`, one more listener and its HTTP connections take
//! tokens of their own and are served in step 3, their deadlines expired
//! in step 5 (`metrics_listener.rs`).
//!
//! Tokens: a client's token is its slab key. Other sources take reserved
//! tokens counted down from `usize::MAX` ([`WAKER`], [`SIGNALS`], the
//! stats-copy timer, then the listening sockets by index, then `--metrics`
//! and its connections; `tokens.rs`), far above any key a slab can reach.
//!
//! Interest is registered once per connection, `READABLE | WRITABLE |
//! PRIORITY`, edge-triggered. With edges, a writable interest costs nothing
//! while the send buffer has room (no edge fires), and it saves an
//! `epoll_ctl` to arm and disarm `EPOLLOUT` around every partial write.
//! `PRIORITY` (`EPOLLPRI`, Linux) reports urgent data, after which a short
//! read no longer proves the receive queue empty.

mod accept;
mod clients;
mod endpoints;
mod memory;
mod metrics_listener;
mod publish_timer;
mod shutdown;
mod tokens;
mod udp;

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::{info, log_enabled, trace, warn, Level};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGQUIT, SIGTERM, SIGUSR2};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::budget::MemoryBudget;
pub use crate::connection::TRICKLE_BYTES;
use crate::connection::{Limits, Workspace};
use crate::fdlimit::{open_fds_for_stats, REACTOR_BASE_FDS};
use crate::http::Health;
use crate::protocol::Protocol;
use crate::ratelimit::WarnLimiter;
use crate::stats::{CloseReason, PublishGate, SharedStats, StatsSnapshot};
use crate::timers::{due_after, DeadlineQueue, NEVER};
use crate::udp_budget::ReplyBudget;
use crate::worker_stats::{SlotWriter, WorkerNumbers, WorkerSlots};

pub use accept::{ACCEPT_BUDGET, ACCEPT_PAUSE_MS, EMFILE_WARN_INTERVAL_MS};
use clients::Clients;
use endpoints::Endpoint;
pub use endpoints::Listening;
use metrics_listener::{MetricsEndpoint, OutOfFiles};
pub use metrics_listener::{
    MAX_METRICS_CONNECTIONS, METRICS_DEADLINE_MS, METRICS_LINGER_CAP_MS, METRICS_LINGER_MS,
    METRICS_SLOTS,
};
use publish_timer::PublishTimer;
use tokens::{endpoint_index, endpoint_token, FIRST_RESERVED, PUBLISH_TIMER};
pub use tokens::{MAX_ENDPOINTS, SIGNALS, WAKER};
pub use udp::DATAGRAM_BUDGET;

/// Every read lands here first: one buffer for the whole server. It also
/// holds any UDP datagram whole (the largest is 65 507 bytes).
pub const SCRATCH_BYTES: usize = 64 * 1024;
/// Bytes one connection may read in one loop turn. Once it is spent the
/// connection goes on the ready queue and is read again in the *next* turn,
/// after an `epoll_wait` (zero timeout) has let the others' events in: at
/// most one budget per connection per turn (`tests/read_budget.rs`).
pub const READ_BUDGET_BYTES: usize = 256 * 1024;
/// Bytes that reads of at least [`TRICKLE_BYTES`] (and every read that
/// discards input) may take in step 3 of one turn, from all connections
/// together (smaller reads, a message's worth, are not counted: the
/// per-message path pays nothing for the budget). Past it, reads take at
/// most [`TRICKLE_BYTES`] for the rest of step 3; step 4 then has what
/// the reads of the turn earned less what step 3 took
/// ([`BULK_BYTES_PER_READ`]): a turn's copying is bounded however many
/// connections have bulk input, so the next `epoll_wait`, and whoever
/// waits in it, comes soon.
/// One scratch buffer's worth: a turn copies at most about one bulk read
/// in and out while others wait (a flood's 64 KiB costs 30–450 µs, 256 KiB
/// up to 1.8 ms: docs/BENCHMARKS.md, "A reader beside a flood").
pub const TURN_READ_BUDGET: isize = SCRATCH_BYTES as isize;
/// Step 4's budget when nothing was read since the last step 4: no one
/// else was served, so no one waits for the queue to finish, and a lone
/// bulk sender reads a connection's whole budget per turn (one
/// `epoll_wait` per 256 KiB, not per 64 KiB). Also the most step 4 reads
/// in a turn however many others were served.
pub const QUEUE_ALONE_READ_BUDGET: isize = READ_BUDGET_BYTES as isize;
/// Bulk bytes a turn may copy, steps 3 and 4 together, for each read made
/// since the last step 4 (step 4 reads what step 3 left of it, at least
/// one read): answering a small message costs a read and a write, a few
/// µs, about what copying 1 KiB in and out costs, so the bulk's share of a
/// turn stays about the others' share (`Clients::serve_ready_queue`).
pub const BULK_BYTES_PER_READ: usize = 1024;
/// Sockets of closed connections closed (reaped) per loop turn at most;
/// the rest wait for the next turns (`Clients::reap_closed`).
pub const REAP_BUDGET: usize = 128;
/// Step 6 also stops once it has spent this long closing sockets in one
/// turn (µs), the clock read after every close: a close costs from a few
/// µs to a few hundred (a socket holding a flood's unread bytes frees them
/// all, 0.4 ms at the 99th percentile under 19 000 flooders), so a count
/// alone did not bound the turn. At least one socket is closed per turn,
/// so the reaping goes on however slow a close is.
pub const REAP_TIME_BUDGET_US: u64 = 100;

/// epoll events fetched per `epoll_wait`.
pub const EVENTS_PER_POLL: usize = 1024;

/// How the reactor runs, beyond the per-connection [`Limits`].
#[derive(Debug, Clone, Copy)]
pub struct ReactorSettings {
    /// Connections served at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// Log a stats line this often (ms).
    pub stats_interval_ms: Option<u64>,
    /// After a stop request, flush pending output for at most this long (ms).
    pub shutdown_grace_ms: u64,
    /// After SIGQUIT (drain), serve held connections for at most this long
    /// (ms) before the shutdown above closes the rest.
    pub drain_timeout_ms: u64,
    /// Shut down on SIGINT/SIGTERM (a second signal exits at once); drain
    /// on SIGQUIT; say SIGUSR2 (an upgrade) is not for this process.
    pub handle_signals: bool,
    /// `--max-memory`: bytes held for all connections together (0: no budget).
    pub max_memory: usize,
    /// `--udp-reply-budget`: UDP reply bytes per second per source network
    /// (0: no limit).
    pub udp_reply_budget: usize,
}

/// Step 7 copies the counters out at most this often (ms of the loop's
/// clock): other threads and the stats line see numbers at most this old,
/// or as old as the loop's last turn when it sleeps.
pub const STATS_PUBLISH_INTERVAL_MS: u64 = 10;

/// Buckets in the UDP reply budget's table (16 bytes each: 64 KiB).
pub const UDP_BUDGET_SLOTS: usize = 4096;

/// The single-threaded event loop serving one [`Protocol`].
pub struct Reactor<P: Protocol> {
    poll: Poll,
    events: Events,
    clients: Clients<P>,
    signals: Option<Signals>,
    stop_requested: Arc<AtomicBool>,
    stats: Arc<SharedStats>,
    settings: ReactorSettings,
    next_stats_ms: u64,
    /// Step 7: when the counters may next be copied out.
    publish: PublishGate,
    /// Wakes the loop for a copy a turn skipped (`publish_timer.rs`).
    publish_timer: PublishTimer,
    /// Set when shutdown begins: the end of the flush window. Also set
    /// while draining (`draining`): the end of the drain, after which the
    /// shutdown begins. One field for both, so a turn tests one value
    /// ([`NEVER`]: neither).
    shutdown_deadline_ms: u64,
    /// Between two turns, `run` has something to look at: a wake-up came
    /// (`stop_requested` may be set: whoever sets it wakes the loop, as
    /// `ServerHandle::stop` does, or is the loop itself), signals came
    /// (`signals_arrived`), the counters were copied out (at most every
    /// [`STATS_PUBLISH_INTERVAL_MS`]: a flag set without a wake is still
    /// seen), or a shutdown or drain is under way. Any other turn, the
    /// most common by far, pays one test for all of them.
    look_between_turns: bool,
    /// The signal pipe was readable this turn: read it between turns.
    signals_arrived: bool,
    /// SIGQUIT: not accepting, serving what is held until it closes or
    /// `shutdown_deadline_ms` (`shutdown.rs`).
    draining: bool,
    /// The Unix socket files this process created (standalone `serve`;
    /// never a worker's, whose file is its supervisor's, and after an
    /// upgrade a new generation's): a second signal exits at once,
    /// skipping the destructors that would remove them, so it does.
    unix_paths: Vec<std::path::PathBuf>,
    /// `--metrics`: the HTTP listener and its connections (`metrics_listener.rs`).
    // Boxed: a turn asks "any metrics?" twice, and a null test is
    // shorter than a test of the large struct's niche.
    metrics: Option<Box<MetricsEndpoint>>,
    /// Under `--workers`: this worker's slot of the numbers every worker
    /// shares (`worker_stats.rs`).
    slot: Option<Box<SlotWriter>>, // boxed: the loop's own struct stays small
    /// When the slot must be written though no event comes ([`NEVER`]: it
    /// is up to date, or there is none).
    slot_due_ms: u64,
    /// The earlier of `next_stats_ms` and `slot_due_ms`: when step 7 has
    /// work though no event comes (one field for the poll timeout).
    next_publish_ms: u64,
    /// Step 7 has more to do than copy the counters: a stats interval, or
    /// a slot to write.
    publishes_more: bool,
}

impl<P: Protocol> Reactor<P> {
    /// A reactor over already bound sockets. `stop_requested` is checked
    /// after a wake-up through the [`WAKER`] (whoever sets it then wakes
    /// the loop, as `ServerHandle::stop` does, so the turn comes at once),
    /// and at least every [`STATS_PUBLISH_INTERVAL_MS`] while events come.
    pub fn new(
        poll: Poll,
        sockets: Vec<Listening>,
        protocol: P,
        limits: Limits,
        settings: ReactorSettings,
        stop_requested: Arc<AtomicBool>,
        stats: Arc<SharedStats>,
    ) -> io::Result<Self> {
        if sockets.len() > MAX_ENDPOINTS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("at most {MAX_ENDPOINTS} listening sockets"),
            ));
        }
        let mut endpoints = Vec::with_capacity(sockets.len());
        for (index, mut socket) in sockets.into_iter().enumerate() {
            let token = endpoint_token(index);
            let registry = poll.registry();
            match &mut socket {
                Listening::Tcp(s) => registry.register(s, token, Interest::READABLE)?,
                Listening::Unix(s) => registry.register(s, token, Interest::READABLE)?,
                Listening::Udp(s) => registry.register(s, token, Interest::READABLE)?,
            }
            endpoints.push(Endpoint::new(socket));
        }
        let signals = if settings.handle_signals {
            let mut signals = Signals::new([SIGINT, SIGTERM, SIGQUIT, SIGUSR2])?;
            poll.registry()
                .register(&mut signals, SIGNALS, Interest::READABLE)?;
            // A worker starts with these held (its supervisor's doing).
            crate::signal_mask::release_held();
            Some(signals)
        } else {
            None
        };
        let publish_timer = PublishTimer::new(poll.registry(), PUBLISH_TIMER)?;
        Ok(Reactor {
            poll,
            events: Events::with_capacity(EVENTS_PER_POLL),
            clients: Clients {
                protocol,
                endpoints,
                conns: Slab::new(),
                ready: VecDeque::new(),
                closed: Vec::new(),
                deadlines: DeadlineQueue::default(),
                ws: Workspace::new(limits, SCRATCH_BYTES),
                max_connections: settings.max_connections.max(1),
                next_serial: 0,
                spare_fd: File::open("/dev/null").ok(),
                accept_warnings: WarnLimiter::default(),
                reject_warnings: WarnLimiter::default(),
                budget: MemoryBudget::new(settings.max_memory),
                memory_warnings: Default::default(),
                udp_reply_budget: (settings.udp_reply_budget > 0).then(|| {
                    let rate = settings.udp_reply_budget as u64;
                    ReplyBudget::new(rate, rate, UDP_BUDGET_SLOTS)
                }),
                accepting: true,
                carried: 0,
                endpoints_resume_ms: NEVER,
                tracing: false,
                reads_after_queue: 0,
            },
            signals,
            stop_requested,
            stats,
            next_stats_ms: settings.stats_interval_ms.unwrap_or(NEVER),
            publish: PublishGate::new(STATS_PUBLISH_INTERVAL_MS),
            publish_timer,
            settings,
            shutdown_deadline_ms: NEVER,
            look_between_turns: true, // a stop asked for before the first turn
            signals_arrived: false,
            draining: false,
            unix_paths: Vec::new(),
            metrics: None,
            slot: None,
            slot_due_ms: NEVER,
            next_publish_ms: settings.stats_interval_ms.unwrap_or(NEVER),
            publishes_more: settings.stats_interval_ms.is_some(),
        })
    }

    /// This process created the Unix socket file at `path`: a second
    /// signal, exiting at once, removes it. Only its creator may: the same
    /// file may be listened on by another process, which then owns it.
    pub fn own_unix_file(&mut self, path: std::path::PathBuf) {
        self.unix_paths.push(path);
    }

    /// Under `--workers`: publish this loop's numbers into `slot`, at most
    /// every 10 ms and once more at exit.
    pub fn publish_to_slot(&mut self, slot: SlotWriter) {
        self.slot = Some(Box::new(slot));
        self.publishes_more = true;
    }

    /// Serve `/metrics` and `/healthz` on `listener` (bound, non-blocking),
    /// on this loop; with `shared`, a scrape sums every worker's slot.
    pub fn serve_metrics(
        &mut self,
        listener: mio::net::TcpListener,
        shared: Option<Arc<WorkerSlots>>,
    ) -> io::Result<()> {
        let endpoint = MetricsEndpoint::new(listener, shared, self.poll.registry())?;
        self.metrics = Some(Box::new(endpoint));
        Ok(())
    }

    /// Run until a stop is requested and the shutdown finishes: stop
    /// accepting, flush pending output for up to the grace period, close
    /// everything. Returns the final stats.
    pub fn run(&mut self) -> io::Result<StatsSnapshot> {
        if let Some(slot) = &self.slot {
            slot.mark_accepting(); // a new generation waits for this (`upgrade.rs`)
        }
        self.turns()?;
        self.publish.force_next(); // the final numbers go out whatever the clock says
        self.publish_stats();
        if let Some(slot) = &self.slot {
            let numbers = worker_numbers(&self.stats, &self.clients, self.metrics.as_deref());
            slot.publish_now(&numbers); // the last word, exact
        }
        Ok(self.stats.snapshot())
    }

    /// The turns themselves, until the shutdown is over: what `run` is
    /// besides its first and last words.
    // One function with every step inlined into it (`turn`, and the
    // per-event path of `dispatch_events_logged`): as a call per turn, the
    // event dispatch saved and restored its registers every message
    // (docs/BENCHMARKS.md, "A turn of the loop at one connection").
    #[inline(never)]
    fn turns(&mut self) -> io::Result<()> {
        loop {
            self.turn()?;
            if self.look_between_turns && self.between_turns().is_break() {
                return Ok(());
            }
        }
    }

    /// One turn of the loop (see the module docs for the steps), then what
    /// `run` does between turns when there is anything to do (signals, a
    /// requested stop, the end of a shutdown or drain). `Ok(false)` once
    /// the shutdown is over: [`Reactor::run`] is this in a loop, with a
    /// first and a last word.
    pub fn run_once(&mut self) -> io::Result<bool> {
        self.turn()?;
        Ok(!self.look_between_turns || self.between_turns().is_continue())
    }

    /// Between turns, only when `look_between_turns` says so: read the
    /// signals the turn noted, begin the shutdown if a stop was asked for,
    /// and during a shutdown or drain see whether it is over (`Break`).
    #[inline(never)] // rare: kept out of the turn's frame
    fn between_turns(&mut self) -> ControlFlow<()> {
        if std::mem::take(&mut self.signals_arrived) {
            self.on_signals();
        }
        if self.shutdown_deadline_ms == NEVER && self.stop_requested.load(Ordering::Acquire) {
            self.begin_shutdown(false);
        }
        let deadline = self.shutdown_deadline_ms;
        // Until a shutdown or drain begins, nothing more to look at.
        self.look_between_turns = deadline != NEVER;
        if deadline != NEVER {
            let now = self.clients.ws.ctx.now_ms;
            // A drain waits for the health checks it holds too (each
            // has METRICS_DEADLINE_MS): exiting would reset them.
            let scrapes =
                self.draining && self.metrics.as_ref().is_some_and(|m| m.connections() > 0);
            if self.clients.conns.is_empty() && !scrapes {
                return ControlFlow::Break(());
            }
            if now >= deadline && self.draining {
                self.end_drain(); // the drain's time is up: shut down
            } else if now >= deadline {
                warn!(
                    "shutdown grace over: closing {} connections with output still pending",
                    self.clients.open_count()
                );
                self.clients.close_all(CloseReason::Shutdown);
                self.clients.reap_all_closed(); // exiting: all of them
                return ControlFlow::Break(());
            }
        }
        // What this did (closed idle connections, stopped accepting) moved
        // the numbers after step 7 ran: copy them, or arm the timer for it.
        self.publish_stats();
        ControlFlow::Continue(())
    }

    /// One turn of the loop: the seven steps (see the module docs).
    #[inline(always)]
    fn turn(&mut self) -> io::Result<()> {
        let timeout = self.next_timeout(); // 1. zero if work is queued, else nearest deadline
        self.poll_events(timeout)?; // 2. epoll_wait; EINTR counts as "no events"
        self.clients.ws.ctx.now_ms = self.clients.ws.ctx.clock.now_ms(); // the clock, once per turn
        self.clients.ws.begin_turn(TURN_READ_BUDGET); //         a fresh read budget for the turn
        self.clients.carried = self.clients.ready.len(); //     queued before this turn
        self.dispatch_events(); // 3. accept / receive / read / write per event
        let registry = self.poll.registry();
        self.clients.serve_ready_queue(registry); //             4. budget leftovers
        self.clients.expire_deadlines(registry); //             5. timers
        self.clients.enforce_budget(); //                        memory: pressure, eviction
        if let Some(metrics) = &mut self.metrics {
            let out_of_files = OutOfFiles {
                spare_fd: &mut self.clients.spare_fd,
                shed: &mut self.clients.ws.ctx.counters.shed,
            };
            let now = self.clients.ws.ctx.now_ms;
            metrics.expire(now, self.poll.registry(), out_of_files); // slow scrapers, pauses
        }
        self.clients.reap_closed(REAP_BUDGET); // 6. free slab slots only now
        self.publish_stats(); // 7. counters out to other threads
        Ok(())
    }

    /// Step 1: how long `epoll_wait` may sleep — zero while the ready queue
    /// holds work or closed sockets wait to be reaped, else until the nearest deadline (connection timers, an
    /// accept pause after EMFILE, the stats interval, the end of the
    /// shutdown grace), else forever (`None`).
    fn next_timeout(&self) -> Option<Duration> {
        if !self.clients.ready.is_empty() || !self.clients.closed.is_empty() {
            return Some(Duration::ZERO); // more to serve, or sockets to close
        }
        // Plain `min`s, not an iterator chain: this runs every turn, and
        // the chain compiled to an out-of-line fold.
        let metrics_due = self
            .metrics
            .as_deref()
            .and_then(MetricsEndpoint::next_deadline);
        let nearest = self
            .clients
            .endpoints_resume_ms
            .min(self.clients.deadlines.next_due().unwrap_or(NEVER))
            .min(self.shutdown_deadline_ms)
            .min(metrics_due.unwrap_or(NEVER))
            .min(self.next_publish_ms);
        if nearest == NEVER {
            return None; // a skipped stats copy has its own timer
        }
        Some(Duration::from_millis(
            nearest.saturating_sub(self.clients.ws.ctx.clock.now_ms()),
        ))
    }

    /// Step 2: wait for events (`epoll_wait`) at most `timeout`. A signal
    /// interrupting the wait (`EINTR`) counts as no events, not an error.
    fn poll_events(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.clients.ws.ctx.counters.poll_calls += 1;
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => Ok(()),
            // A signal interrupted epoll_wait: not an error, just no events.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                self.events.clear();
                Ok(())
            }
            Err(e) => Err(io::Error::new(e.kind(), format!("epoll_wait: {e}"))),
        }
    }

    /// Step 3: hand each event to what its token names — a connection, a
    /// listener or UDP socket, the waker, the signal pipe.
    fn dispatch_events(&mut self) {
        // Decided once per turn: the untraced copy has no trace code at all,
        // so the per-message path costs the same with tracing off. (Here,
        // after the clock is read: the flag stays in a register.)
        let tracing = log_enabled!(Level::Trace);
        self.clients.tracing = tracing;
        if tracing {
            trace!("poll: {} events", self.events.iter().count());
            self.dispatch_events_logged::<true>();
        } else {
            self.dispatch_events_logged::<false>();
        }
    }

    /// Step 3 itself, with trace lines per event and outcome when `TRACE`:
    /// each event goes to what its token names.
    // Inlined into `turns` with the rest of the turn (see there).
    #[inline(always)]
    fn dispatch_events_logged<const TRACE: bool>(&mut self) {
        let registry = self.poll.registry();
        for event in self.events.iter() {
            match event.token() {
                // Clients first: by far the most common (slab keys sit far
                // below the reserved tokens).
                Token(key) if key < FIRST_RESERVED => {
                    self.clients.on_connection_event::<TRACE>(key, event)
                }
                // The flag itself is read between turns (`between_turns`).
                WAKER => self.look_between_turns = true,
                // Step 7 of this turn finds the owed copy due.
                PUBLISH_TIMER => {}
                // Read between turns (`between_turns`), after steps 4–7.
                SIGNALS => {
                    self.signals_arrived = true;
                    self.look_between_turns = true;
                }
                token => {
                    // A queued endpoint is served in step 4, once a turn.
                    let index = endpoint_index(token);
                    if let Some(index) =
                        index.filter(|&i| self.clients.endpoints.get(i).is_some_and(|e| !e.queued))
                    {
                        self.clients.on_endpoint_ready(index, registry);
                    } else if let Some(metrics) = &mut self.metrics {
                        let health = if self.shutdown_deadline_ms != NEVER
                            || self.stop_requested.load(Ordering::Acquire)
                        {
                            Health::ShuttingDown
                        } else {
                            Health::Accepting
                        };
                        let now = self.clients.ws.ctx.now_ms;
                        let stats = || self.stats.snapshot();
                        let out_of_files = OutOfFiles {
                            spare_fd: &mut self.clients.spare_fd,
                            shed: &mut self.clients.ws.ctx.counters.shed,
                        };
                        metrics.on_event(token, now, health, stats, registry, out_of_files);
                    }
                }
            }
        }
    }

    /// Step 7: copy the loop's plain counters to the shared atomics, at
    /// most every [`STATS_PUBLISH_INTERVAL_MS`] (not per turn: at one
    /// message a turn the ~30 atomic stores were a sixth of a message's
    /// cost); then, with a stats interval or a worker's slot, the rest of
    /// the step.
    #[inline]
    fn publish_stats(&mut self) {
        let now = self.clients.ws.ctx.now_ms;
        // The gate is due no later than `next_publish_ms` (the stats line
        // or the worker's slot, which show the numbers copied out then):
        // one compare a turn covers both.
        if self.publish.should_publish(now) {
            self.copy_stats_out();
        } else {
            // Skipped: if traffic stops now, the timer still brings the
            // loop back for the copy.
            self.publish_timer.wake_by(self.publish.due_ms(), now);
        }
    }

    /// Step 7 when the gate lets it through: the copy itself, then the
    /// rest of the step when there is one.
    #[inline(never)]
    fn copy_stats_out(&mut self) {
        let ws = &self.clients.ws;
        self.stats
            .publish(&ws.ctx.counters, &ws.ctx.gauge, self.clients.open_count());
        if self.publishes_more {
            self.publish_more();
        }
        self.publish.due_no_later_than(self.next_publish_ms);
        // A stop flag set without a wake (a failed wake, a program driving
        // the reactor itself) is still seen, within one copy's interval
        // while events come; this runs at most once per interval.
        self.look_between_turns = true;
    }

    /// The rest of step 7, out of line (a plain loop carries none of it and
    /// pays one test a turn): log the stats line when one is due; under
    /// `--workers`, write this worker's slot when due.
    #[inline(never)]
    fn publish_more(&mut self) {
        let now = self.clients.ws.ctx.now_ms;
        if let Some(slot) = &mut self.slot {
            let (stats, clients, metrics) = (&self.stats, &self.clients, self.metrics.as_deref());
            if let Some(metrics) = metrics {
                slot.publish_http(&metrics.counters());
            }
            slot.publish(now, || worker_numbers(stats, clients, metrics));
            self.slot_due_ms = slot.next_deadline().unwrap_or(NEVER);
        }
        if let Some(interval) = self.settings.stats_interval_ms {
            if now >= self.next_stats_ms {
                self.next_stats_ms = due_after(now, interval);
                // Cheap at any scale: the kernel's own count (Linux 6.2+),
                // not a walk of /proc/self/fd per interval.
                let held = self.clients.conns.len() + self.clients.endpoints.len();
                let fds = open_fds_for_stats(held + REACTOR_BASE_FDS);
                info!("{} open_fds={fds}", self.stats.snapshot());
            }
        }
        self.next_publish_ms = self.next_stats_ms.min(self.slot_due_ms);
    }
}

/// What a worker publishes in its slot: the numbers just copied out to
/// `stats`, and the descriptors it knows it holds.
fn worker_numbers<P: Protocol>(
    stats: &SharedStats,
    clients: &Clients<P>,
    metrics: Option<&MetricsEndpoint>,
) -> WorkerNumbers {
    let metrics_fds = metrics.map_or(0, MetricsEndpoint::held_fds);
    let held = clients.conns.len() + clients.endpoints.len() + metrics_fds;
    WorkerNumbers {
        stats: stats.snapshot(),
        held_fds: (held + REACTOR_BASE_FDS) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Echo;

    /// A reactor on 127.0.0.1 serving echo, with `clients` accepted.
    fn reactor_with(clients: usize) -> (Reactor<Echo>, Vec<std::net::TcpStream>) {
        reactor_with_receive_buffer(clients, None)
    }

    /// [`reactor_with`], the accepted sockets' receive buffers set to
    /// `receive_buffer` bytes (inherited from the listener).
    fn reactor_with_receive_buffer(
        clients: usize,
        receive_buffer: Option<usize>,
    ) -> (Reactor<Echo>, Vec<std::net::TcpStream>) {
        let buffers = Buffers {
            server_receive: receive_buffer,
            ..Buffers::default()
        };
        reactor_with_buffers(clients, buffers)
    }

    /// Socket buffer sizes for [`reactor_with_buffers`] (`None`: the
    /// kernel's default).
    #[derive(Default, Clone, Copy)]
    struct Buffers {
        server_receive: Option<usize>,
        server_send: Option<usize>,
        client_receive: Option<usize>,
    }

    /// [`reactor_with`], with the server's and clients' socket buffers
    /// sized: the server's through the listener (accepted sockets inherit
    /// them), the clients' before they connect.
    fn reactor_with_buffers(
        clients: usize,
        buffers: Buffers,
    ) -> (Reactor<Echo>, Vec<std::net::TcpStream>) {
        let listener = mio::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        if let Some(bytes) = buffers.server_receive {
            socket2::SockRef::from(&listener)
                .set_recv_buffer_size(bytes)
                .unwrap();
        }
        if let Some(bytes) = buffers.server_send {
            socket2::SockRef::from(&listener)
                .set_send_buffer_size(bytes)
                .unwrap();
        }
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            max_buffered: 1 << 20,
            max_line: 1 << 20,
            read_budget_bytes: READ_BUDGET_BYTES,
            idle_timeout_ms: None,
            stall_timeout_ms: None,
            high_water_bytes: usize::MAX,
        };
        let settings = ReactorSettings {
            max_connections: 10_000,
            stats_interval_ms: None,
            shutdown_grace_ms: 1_000,
            drain_timeout_ms: 1_000,
            handle_signals: false,
            max_memory: 0,
            udp_reply_budget: 0,
        };
        let mut reactor = Reactor::new(
            Poll::new().unwrap(),
            vec![Listening::Tcp(listener)],
            Echo,
            limits,
            settings,
            Arc::default(),
            Arc::default(),
        )
        .unwrap();
        // Connected from a thread while the loop accepts (the backlog may be
        // shorter than `clients`); every turn until the last accept has a
        // connection to take, so none sleeps for good.
        let connecting = std::thread::spawn(move || {
            (0..clients)
                .map(|_| {
                    use socket2::{Domain, Socket, Type};
                    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                    if let Some(bytes) = buffers.client_receive {
                        socket.set_recv_buffer_size(bytes).unwrap();
                    }
                    socket.connect(&addr.into()).unwrap();
                    std::net::TcpStream::from(socket)
                })
                .collect::<Vec<_>>()
        });
        while reactor.clients.open_count() < clients {
            reactor.run_once().unwrap();
        }
        (reactor, connecting.join().unwrap())
    }

    #[test]
    fn a_stop_flag_set_without_a_wake_is_seen_while_events_come() {
        use std::io::{Read, Write};
        let (mut reactor, mut streams) = reactor_with(1);
        let client = &mut streams[0];
        // Set the flag as a program driving the reactor might, without
        // waking the loop: no WAKER event will say so.
        reactor.stop_requested.store(true, Ordering::Release);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut reply = [0u8; 3];
        while reactor.shutdown_deadline_ms == NEVER {
            assert!(
                std::time::Instant::now() < deadline,
                "20 s of traffic and the stop was never seen"
            );
            client.write_all(b"hi\n").unwrap();
            let out_before = reactor.clients.ws.ctx.counters.bytes_out;
            while reactor.shutdown_deadline_ms == NEVER
                && reactor.clients.ws.ctx.counters.bytes_out == out_before
            {
                reactor.run_once().unwrap();
            }
            client.read_exact(&mut reply).unwrap(); // answered before it stops
        }
    }

    /// Write exactly `bytes` on `stream` without blocking (the server's
    /// receive buffer must hold them), then wait (20 s at most) until they
    /// have reached the server's receive queue (`SIOCOUTQ` 0: sent and
    /// acknowledged), so the next turn finds them, however late a busy
    /// machine delivers.
    fn queue_at_server(stream: &mut std::net::TcpStream, bytes: &[u8]) {
        use std::io::Write;
        stream.set_nonblocking(true).unwrap();
        stream
            .write_all(bytes)
            .expect("all of it queued at the server");
        stream.set_nonblocking(false).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let queued = crate::stream::unacknowledged_bytes(stream).expect("SIOCOUTQ");
            if queued == 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{queued} bytes never delivered"
            );
            std::thread::yield_now();
        }
    }

    /// Write up to `bytes` to `stream` without blocking; the bytes written.
    fn write_some(stream: &mut std::net::TcpStream, bytes: usize) -> usize {
        use std::io::Write;
        stream.set_nonblocking(true).unwrap();
        let chunk = vec![b'x'; 16 * 1024];
        let mut written = 0;
        while written < bytes {
            match stream.write(&chunk) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        written
    }

    #[test]
    fn a_turn_reads_a_bounded_bulk_and_still_answers_a_small_message_behind_it() {
        use std::io::{Read, Write};
        // Many bulk senders, then one small message: epoll reports the
        // small one last. Loopback delivers a write before it returns, so
        // every byte below waits in the server's receive queues.
        const BULK: usize = 16;
        let (mut reactor, mut streams) = reactor_with(BULK + 1);
        let mut reader = streams.pop().unwrap();
        let queued: usize = streams.iter_mut().map(|s| write_some(s, 1 << 20)).sum();
        assert!(
            queued > 3 * TURN_READ_BUDGET as usize,
            "only {queued} bytes queued"
        );
        reader.write_all(b"hi\n").unwrap();
        let read = |reactor: &Reactor<Echo>| reactor.clients.ws.ctx.counters.bytes_in;
        let before = read(&reactor);
        reactor.run_once().unwrap();
        // Step 3 read the turn's budget (and at most one read past it),
        // then a small read per bulk sender; the ready queue, empty when
        // the turn began, was not served.
        let bound = TURN_READ_BUDGET as usize + SCRATCH_BYTES + BULK * TRICKLE_BYTES + 3;
        let first = (read(&reactor) - before) as usize;
        assert!(
            first <= bound,
            "{first} bytes read in one turn, over {bound}"
        );
        // The small message was answered in that same turn.
        reader
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reply = [0; 3];
        reader.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"hi\n");
        // The next turn serves the ready queue within a budget of its own
        // and leaves the rest of it, in order, for later turns.
        let before = read(&reactor);
        reactor.run_once().unwrap();
        let second = (read(&reactor) - before) as usize;
        let bound = 2 * (TURN_READ_BUDGET as usize + SCRATCH_BYTES) + BULK * TRICKLE_BYTES;
        assert!(
            second <= bound,
            "{second} bytes read in one turn, over {bound}"
        );
        assert!(!reactor.clients.ready.is_empty(), "the whole queue served");
        // Every byte is read in the end, a turn at a time.
        for _ in 0..10_000 {
            if read(&reactor) as usize == queued + 3 {
                break;
            }
            reactor.run_once().unwrap();
        }
        assert_eq!(read(&reactor) as usize, queued + 3);
    }

    #[test]
    fn an_eviction_of_many_connections_closes_their_sockets_a_budget_a_turn() {
        let (mut reactor, _streams) = reactor_with(REAP_BUDGET * 2 + 10);
        let keys: Vec<usize> = reactor.clients.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            reactor.clients.close(key, CloseReason::Evicted);
        }
        assert_eq!(
            reactor.clients.open_count(),
            0,
            "closed at once, as counted"
        );
        // Each turn closes at most a budget of sockets (fewer if the time
        // for them runs out, but always one), and does not sleep while more
        // wait.
        let mut left = reactor.clients.conns.len();
        while left > 0 {
            reactor.run_once().unwrap();
            let closed = left - reactor.clients.conns.len();
            assert!(closed <= REAP_BUDGET, "{closed} sockets closed in one turn");
            assert!(closed >= 1, "none closed");
            left = reactor.clients.conns.len();
        }
        // What other threads see counts only open connections.
        let (mut reactor, _streams) = reactor_with(REAP_BUDGET * 2 + 10);
        let keys: Vec<usize> = reactor.clients.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            reactor.clients.close(key, CloseReason::Evicted);
        }
        reactor.publish.force_next();
        reactor.publish_stats();
        assert_eq!(reactor.stats.snapshot().active, 0);
    }

    #[test]
    fn closing_sockets_asks_the_clock_after_every_close() {
        let (mut reactor, _streams) = reactor_with(10);
        let keys: Vec<usize> = reactor.clients.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            reactor.clients.close(key, CloseReason::Evicted);
        }
        // Time is up at the second answer: two sockets closed, no more.
        let mut asked = 0;
        reactor.clients.close_sockets(REAP_BUDGET, || {
            asked += 1;
            asked < 2
        });
        assert_eq!(asked, 2);
        assert_eq!(reactor.clients.conns.len(), 8);
        assert_eq!(reactor.clients.closed.len(), 8);
        // Out of time from the start: still one, so reaping goes on.
        reactor.clients.close_sockets(REAP_BUDGET, || false);
        assert_eq!(reactor.clients.closed.len(), 7);
        // With time to spare, the count bounds it; the earliest closed go
        // first, and the rest stay listed.
        let next = reactor.clients.closed[0];
        reactor.clients.close_sockets(3, || true);
        assert!(!reactor.clients.conns.contains(next));
        assert_eq!(reactor.clients.closed.len(), 4);
        assert_eq!(reactor.clients.conns.len(), 4);
    }

    /// A client on `stream` that writes 4 MiB (blocking) from one thread and
    /// reads its echo from another, until the server closes; it returns
    /// once `queued` bytes are out of the sending thread (20 s at most):
    /// with a receive buffer that holds them, they wait at the server
    /// before the first turn, however slowly the thread is scheduled
    /// afterwards.
    fn bulk_sender(stream: std::net::TcpStream, queued: usize) -> [std::thread::JoinHandle<()>; 2] {
        use std::io::{Read, Write};
        use std::sync::atomic::AtomicUsize;
        let written = Arc::new(AtomicUsize::new(0));
        let mut echo = stream.try_clone().unwrap();
        let mut stream = stream;
        let sending = written.clone();
        let threads = [
            std::thread::spawn(move || {
                let chunk = vec![b'x'; 64 * 1024];
                for _ in 0..64 {
                    // Fails once the server is dropped mid-write: that ends it.
                    if stream.write_all(&chunk).is_err() {
                        return;
                    }
                    sending.fetch_add(chunk.len(), Ordering::Release);
                }
            }),
            std::thread::spawn(move || {
                let mut sink = vec![0; 64 * 1024];
                while matches!(echo.read(&mut sink), Ok(n) if n > 0) {}
            }),
        ];
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while written.load(Ordering::Acquire) < queued {
            assert!(
                std::time::Instant::now() < deadline,
                "the sender never got {queued} bytes out"
            );
            std::thread::yield_now();
        }
        threads
    }

    /// Turn the loop until `done` says so or 20 s have passed (the sending
    /// threads may be slow to start on a busy machine); the bytes read in
    /// each turn.
    fn turns_until(
        reactor: &mut Reactor<Echo>,
        mut each: impl FnMut(),
        mut done: impl FnMut(&Reactor<Echo>) -> bool,
    ) -> Vec<usize> {
        let mut per_turn = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            each();
            let before = reactor.clients.ws.ctx.counters.bytes_in;
            reactor.run_once().unwrap();
            per_turn.push((reactor.clients.ws.ctx.counters.bytes_in - before) as usize);
            if done(reactor) {
                break;
            }
        }
        per_turn
    }

    #[test]
    fn a_bulk_sender_beside_a_reader_reads_one_turn_budget_a_turn() {
        use std::io::{Read, Write};
        let (mut reactor, mut streams) = reactor_with(2);
        let mut reader = streams.pop().unwrap();
        let sender = bulk_sender(streams.pop().unwrap(), 0);
        reader
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // Every turn, the reader's message is answered in step 3; the queue
        // (the bulk sender) then has the turn's budget, not its own 256 KiB.
        let bulk_read = |r: &Reactor<Echo>| r.clients.ws.ctx.counters.bytes_in as usize;
        let sent = std::cell::Cell::new(0);
        let per_turn = turns_until(
            &mut reactor,
            || {
                reader.write_all(b"hi\n").unwrap();
                sent.set(sent.get() + 3);
            },
            |r| bulk_read(r) >= (1 << 20) + sent.get(),
        );
        let sent = sent.get();
        assert!(
            bulk_read(&reactor) >= 1 << 20,
            "the bulk sender starved: {} bytes read",
            bulk_read(&reactor)
        );
        // At most one read past the budget (one scratch buffer), and the
        // reader's 3 bytes: a quarter of the bulk sender's own budget.
        let bound = 2 * SCRATCH_BYTES + 3;
        let most = per_turn.iter().max().copied().unwrap_or(0);
        assert!(most <= bound, "{most} bytes read in one turn, over {bound}");
        let mut replies = vec![0; sent];
        reader.read_exact(&mut replies).unwrap();
        drop(reactor); // ends the sender's threads
        sender.into_iter().for_each(|t| t.join().unwrap());
    }

    #[test]
    fn the_queue_step_reads_in_proportion_to_the_others_served() {
        use clients::queue_read_budget;
        let per_read = BULK_BYTES_PER_READ as isize;
        // Nobody else served: a lone bulk sender's own budget.
        assert_eq!(queue_read_budget(0, 0), QUEUE_ALONE_READ_BUDGET);
        // In proportion to the others served, up to the lone sender's.
        assert_eq!(queue_read_budget(1, 0), per_read);
        assert_eq!(queue_read_budget(50, 0), 50 * per_read);
        assert_eq!(queue_read_budget(1_000, 0), QUEUE_ALONE_READ_BUDGET);
        assert_eq!(queue_read_budget(u64::MAX, 0), QUEUE_ALONE_READ_BUDGET);
        // Less what step 3 already copied in bulk this turn...
        assert_eq!(queue_read_budget(100, 30 * per_read), 70 * per_read);
        assert_eq!(
            queue_read_budget(1_000, TURN_READ_BUDGET),
            QUEUE_ALONE_READ_BUDGET
        );
        // ...and at least one read, however much that was (a read past
        // the step's budget leaves less than nothing of it).
        assert_eq!(queue_read_budget(50, TURN_READ_BUDGET), 1);
        assert_eq!(queue_read_budget(50, TURN_READ_BUDGET + 60_000), 1);
        // A budget step 3 never touched (less than nothing used) adds nothing.
        assert_eq!(queue_read_budget(50, -1_000_000), 50 * per_read);
    }

    #[test]
    fn step_four_reads_only_what_step_three_left_of_the_turns_bulk_share() {
        const QUEUED: usize = 8;
        const READERS: usize = 50;
        // Receive buffers that hold every byte below before a turn reads.
        let (mut reactor, mut streams) =
            reactor_with_receive_buffer(QUEUED + 1 + READERS, Some(8 << 20));
        let mut readers = streams.split_off(QUEUED + 1);
        let mut fresh = streams.pop().unwrap();
        // Turn 1: eight bulk senders of 84 KiB. Step 3 reads 64 KiB of one
        // (the turn's budget), then a small read of each other: all eight
        // wait on the ready queue.
        for sender in &mut streams {
            queue_at_server(sender, &[b'x'; 84 * 1024]);
        }
        reactor.run_once().unwrap();
        assert_eq!(reactor.clients.ready.len(), QUEUED);
        // Turn 2: 50 readers' messages and a fresh sender's 64 KiB. Step 3
        // answers the readers and reads the fresh sender's 64 KiB: more
        // than the 57 reads since the queue began earned (57 KiB), so step
        // 4 reads one queued connection, not a budget of its own.
        for reader in &mut readers {
            queue_at_server(reader, b"hi\n");
        }
        queue_at_server(&mut fresh, &[b'x'; 64 * 1024]);
        let reads = |r: &Reactor<Echo>| r.clients.ws.ctx.counters.read_calls;
        let before = reads(&reactor);
        reactor.run_once().unwrap();
        assert_eq!(
            reads(&reactor) - before,
            (READERS + 1 + 1) as u64,
            "step 3's reads, then step 4's"
        );
        // That read took the first queued connection's last 20 KiB.
        assert_eq!(
            reactor.clients.ready.len(),
            QUEUED,
            "7 left and the fresh one"
        );
    }

    #[test]
    fn bulk_reads_of_peers_that_reset_count_against_the_turn_budget() {
        const SENDERS: usize = 8;
        let (mut reactor, mut streams) = reactor_with_receive_buffer(SENDERS, Some(8 << 20));
        // Each sends 48 KiB and resets: the server reads the bytes, and
        // the echo of each read fails. Those reads are bulk all the same.
        for stream in &mut streams {
            queue_at_server(stream, &[b'x'; 48 * 1024]);
            socket2::SockRef::from(&*stream)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
        drop(streams); // RST, behind the bytes
        let before = reactor.clients.ws.ctx.counters.bytes_in as usize;
        reactor.run_once().unwrap();
        let read = reactor.clients.ws.ctx.counters.bytes_in as usize - before;
        // Two reads fit the budget; then small reads for the rest.
        let bound = TURN_READ_BUDGET as usize + SCRATCH_BYTES + SENDERS * TRICKLE_BYTES;
        assert!(read <= bound, "{read} bytes read in one turn, over {bound}");
        assert!(read > 0, "nothing read");
    }

    #[test]
    fn bulk_reads_that_pause_on_unsent_output_spend_the_turn_budget_and_then_trickle() {
        const CLIENTS: usize = 8;
        // Clients that never read, with small buffers on both sides of the
        // echo, so a server's output soon waits in its own buffer.
        let buffers = Buffers {
            server_receive: Some(8 << 20),
            server_send: Some(4096),
            client_receive: Some(2048),
        };
        let (mut reactor, mut streams) = reactor_with_buffers(CLIENTS, buffers);
        reactor.clients.ws.ctx.limits.max_buffered = 64 * 1024;
        let counters = |r: &Reactor<Echo>| {
            let c = &r.clients.ws.ctx.counters;
            (c.bytes_in as usize, c.read_pauses)
        };
        // Each sends 32 KiB: echoed, most of it left waiting at the
        // server, below --max-buffered, and no read paused yet.
        let (start, _) = counters(&reactor);
        for stream in &mut streams {
            queue_at_server(stream, &[b'x'; 32 * 1024]);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while counters(&reactor).0 - start < CLIENTS * 32 * 1024 {
            assert!(
                std::time::Instant::now() < deadline,
                "the 32 KiB never all read"
            );
            reactor.run_once().unwrap();
        }
        assert_eq!(counters(&reactor).1, 0, "a read paused already");
        // Then 64 KiB more each: every such read takes the output past
        // --max-buffered and pauses. The first spends the turn's budget;
        // the rest of the turn's reads are small ones.
        for stream in &mut streams {
            queue_at_server(stream, &[b'x'; 64 * 1024]);
        }
        let (before, pauses_before) = counters(&reactor);
        reactor.run_once().unwrap();
        let (after, pauses) = counters(&reactor);
        assert!(pauses > pauses_before, "no read paused");
        let read = after - before;
        let bound = TURN_READ_BUDGET as usize + SCRATCH_BYTES + CLIENTS * TRICKLE_BYTES;
        assert!(read <= bound, "{read} bytes read in one turn, over {bound}");
    }

    #[test]
    fn a_bulk_sender_beside_many_readers_reads_more_than_one_turn_budget() {
        use std::io::{Read, Write};
        const READERS: usize = 300;
        const QUEUED: usize = 1536 * 1024;
        // The bulk bytes wait in the server's receive buffer before the
        // first turn, so every turn's step 4 has more than it may read
        // however slowly the sending thread is scheduled (a busy machine
        // once left it 130 921 bytes short of filling a turn).
        let (mut reactor, mut streams) = reactor_with_receive_buffer(READERS + 1, Some(8 << 20));
        let sender = bulk_sender(streams.pop().unwrap(), QUEUED);
        let turns = std::cell::Cell::new(0);
        // Every reader sends a message every turn: 300 reads earn the
        // queue 300 KiB, more than the turn budget.
        let per_turn = turns_until(
            &mut reactor,
            || {
                for reader in &mut streams {
                    reader.write_all(b"hi\n").unwrap();
                }
                turns.set(turns.get() + 1);
            },
            |r| {
                r.clients.ws.ctx.counters.bytes_in as usize >= (1 << 20) + READERS * 3 * turns.get()
            },
        );
        let shared = TURN_READ_BUDGET as usize + SCRATCH_BYTES + READERS * 3;
        let most = per_turn.iter().max().copied().unwrap_or(0);
        assert!(
            most > shared,
            "at most {most} bytes read in a turn, within a shared budget of {shared}"
        );
        // Every message was answered.
        for reader in &mut streams {
            reader
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut replies = vec![0; 3 * turns.get()];
            reader.read_exact(&mut replies).unwrap();
        }
        drop(reactor);
        sender.into_iter().for_each(|t| t.join().unwrap());
    }

    #[test]
    fn a_lone_bulk_sender_reads_more_than_a_shared_turn_budget() {
        let (mut reactor, mut streams) = reactor_with_receive_buffer(1, Some(8 << 20));
        // Queued at the server first, as beside many readers (above).
        let sender = bulk_sender(streams.pop().unwrap(), 1536 * 1024);
        // No one else is served: the queue reads the connection's own
        // budget a turn, not the turn budget shared with others.
        let shared = TURN_READ_BUDGET as usize + SCRATCH_BYTES;
        let per_turn = turns_until(
            &mut reactor,
            || {},
            |r| r.clients.ws.ctx.counters.bytes_in >= 4 << 20,
        );
        let most = per_turn.iter().max().copied().unwrap_or(0);
        assert!(
            most > shared,
            "at most {most} bytes read in a turn, within a shared budget of {shared}"
        );
        assert!(most <= QUEUE_ALONE_READ_BUDGET as usize + SCRATCH_BYTES);
        drop(reactor);
        sender.into_iter().for_each(|t| t.join().unwrap());
    }

    #[test]
    fn sockets_waiting_to_be_reaped_keep_new_connections_within_the_cap() {
        // At --max-connections, every connection evicted at once: their
        // sockets are closed a budget a turn, and until then each still
        // holds a descriptor. Newcomers must wait for them, not pile on.
        let cap = REAP_BUDGET * 2;
        let (mut reactor, streams) = reactor_with(cap);
        reactor.clients.max_connections = cap;
        let addr = streams[0].peer_addr().unwrap();
        let keys: Vec<usize> = reactor.clients.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            reactor.clients.close(key, CloseReason::Evicted);
        }
        // Fewer than the listener's backlog (128): all wait in its queue.
        let newcomers = 100;
        let _newcomers: Vec<std::net::TcpStream> = (0..newcomers)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        // What one turn's accepting does, before that turn's reaping.
        reactor.clients.accept_burst(0, reactor.poll.registry());
        assert!(
            reactor.clients.conns.len() <= cap,
            "{} sockets held, past the cap of {cap}",
            reactor.clients.conns.len()
        );
        // They are admitted as the closed sockets are reaped.
        for _ in 0..100 {
            if reactor.clients.open_count() == newcomers {
                break;
            }
            reactor.run_once().unwrap();
            assert!(reactor.clients.conns.len() <= cap);
        }
        assert_eq!(reactor.clients.open_count(), newcomers);
        assert_eq!(
            reactor.clients.ws.ctx.counters.rejected, 0,
            "none turned away"
        );
    }
}
