//! The event loop: one `mio::Poll`, the listening sockets, every connection.
//!
//! Each turn of [`Reactor::run_once`] is the same steps (numbered the same
//! way in `docs/ARCHITECTURE.md`):
//!
//! 1. choose the poll timeout: zero if the ready queue holds work, else
//!    the nearest deadline (a connection timer, an accept pause, the stats
//!    interval, the end of the shutdown grace), else forever;
//! 2. `epoll_wait` for events (`EINTR` counts as "no events"), then read the
//!    clock — once per turn, not per event;
//! 3. dispatch each event: accept on a listener, receive on a UDP socket,
//!    drive a connection, handle a signal;
//! 4. serve the ready queue: connections and sockets that stopped on their
//!    per-turn budget with work possibly left, which no new edge would
//!    announce;
//! 5. expire deadlines: protocol timers, idle and stalled connections,
//!    accept pauses that are over;
//! 6. reap: free the slab slots of connections closed this turn — only now,
//!    so a key named by a later event of the same batch is never reused
//!    for a new connection mid-batch;
//! 7. publish the counters for other threads.
//!
//! Tokens: a client's token is its slab key. Other sources take reserved
//! tokens counted down from `usize::MAX` ([`WAKER`], [`SIGNALS`], then the
//! listening sockets by index), far above any key a slab can reach.
//!
//! Interest is registered once per connection, `READABLE | WRITABLE`,
//! edge-triggered. With edges, a writable interest costs nothing while the
//! send buffer has room (no edge fires), and it saves an `epoll_ctl` to arm
//! and disarm `EPOLLOUT` around every partial write.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::{debug, info, warn};
use mio::event::Event;
use mio::net::{TcpListener, UdpSocket, UnixListener};
use mio::{Events, Interest, Poll, Registry, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::connection::{Connection, Limits, Next, Workspace};
use crate::fdlimit::open_fds;
use crate::nonblocking::{
    try_accept, try_recv_from, try_send_to, AcceptOutcome, RecvOutcome, WriteOutcome,
};
use crate::protocol::{Protocol, Reply};
use crate::stats::{CloseReason, SharedStats, StatsSnapshot};
use crate::stream::Stream;
use crate::timers::{due_after, Clock, DeadlineQueue, Entry, NEVER};

/// The token of the `mio::Waker` that another thread uses to stop the loop.
pub const WAKER: Token = Token(usize::MAX);
/// The token of the SIGINT/SIGTERM self-pipe.
pub const SIGNALS: Token = Token(usize::MAX - 1);
/// Listening socket `i` has token `FIRST_ENDPOINT - i`.
const FIRST_ENDPOINT: usize = usize::MAX - 2;
/// At most this many listening sockets (their tokens must stay reserved).
pub const MAX_ENDPOINTS: usize = 256;
/// Tokens from here up are reserved; below are client slab keys.
const FIRST_RESERVED: usize = FIRST_ENDPOINT - MAX_ENDPOINTS + 1;

/// Every read lands here first: one buffer for the whole server. It also
/// holds any UDP datagram whole (the largest is 65 507 bytes).
pub const SCRATCH_BYTES: usize = 64 * 1024;
/// Bytes one connection may read per loop turn before the others get a go.
pub const READ_BUDGET_BYTES: usize = 256 * 1024;
/// Connections one listener may accept per loop turn.
pub const ACCEPT_BUDGET: usize = 256;
/// Datagrams one UDP socket may receive per loop turn.
pub const DATAGRAM_BUDGET: usize = 256;
/// epoll events fetched per `epoll_wait`.
pub const EVENTS_PER_POLL: usize = 1024;
/// After running out of descriptors, a listener rests this long.
pub const ACCEPT_PAUSE_MS: u64 = 100;
/// At most one out-of-descriptors warning per this many milliseconds.
pub const EMFILE_WARN_INTERVAL_MS: u64 = 10_000;

fn endpoint_token(index: usize) -> Token {
    Token(FIRST_ENDPOINT - index)
}

fn endpoint_index(token: Token) -> Option<usize> {
    let index = FIRST_ENDPOINT.checked_sub(token.0)?;
    (index < MAX_ENDPOINTS).then_some(index)
}

/// A listening socket of one of the three kinds.
#[derive(Debug)]
pub enum Listening {
    /// Accepts TCP connections.
    Tcp(TcpListener),
    /// Accepts Unix-domain stream connections.
    Unix(UnixListener),
    /// Receives datagrams and answers each one.
    Udp(UdpSocket),
}

/// A listening socket and its scheduling state.
#[derive(Debug)]
struct Endpoint {
    socket: Listening,
    /// On the ready queue (so it is queued at most once).
    queued: bool,
    /// Resting after EMFILE until this time ([`NEVER`]: not resting).
    paused_until_ms: u64,
}

/// How the reactor runs, beyond the per-connection [`Limits`].
#[derive(Debug, Clone, Copy)]
pub struct ReactorSettings {
    /// Connections served at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// Log a stats line this often (ms).
    pub stats_interval_ms: Option<u64>,
    /// After a stop request, flush pending output for at most this long (ms).
    pub shutdown_grace_ms: u64,
    /// Shut down on SIGINT/SIGTERM (a second signal exits at once).
    pub handle_signals: bool,
}

/// Rate-limits a warning to one per interval, counting what it held back.
#[derive(Debug)]
struct WarnLimiter {
    next_ms: u64,
    suppressed: u64,
}

impl WarnLimiter {
    /// `Some(suppressed since the last one)` if a warning may be logged now.
    fn allow(&mut self, now_ms: u64, interval_ms: u64) -> Option<u64> {
        if now_ms < self.next_ms {
            self.suppressed += 1;
            return None;
        }
        self.next_ms = due_after(now_ms, interval_ms);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// `None` in the common case, once per message: the connection waits for
/// its next edge and no deadline moved earlier (activity only moves them
/// later) — nothing for the reactor to do. Otherwise the answer to act on.
#[inline(always)]
fn needs_action<S, Session>(conn: &mut Connection<S, Session>, next: Next) -> Option<Next>
where
    S: std::io::Read + std::io::Write,
{
    if next == Next::Wait && !conn.take_timers_changed() {
        None
    } else {
        Some(next)
    }
}

/// What events are dispatched to: sockets, connections, queues and timers.
/// Kept apart from `Poll` and `Events` so the loop can iterate events while
/// mutating everything else.
struct Clients<P: Protocol> {
    protocol: P,
    endpoints: Vec<Endpoint>,
    conns: Slab<Connection<Stream, P::Session>>,
    /// Work left over from a budget: connection keys and endpoint tokens.
    ready: VecDeque<Token>,
    /// Keys closed this turn, freed in step 6.
    closed: Vec<usize>,
    deadlines: DeadlineQueue,
    ws: Workspace,
    max_connections: usize,
    /// Serials tell a connection apart from earlier ones with the same key.
    next_serial: u32,
    /// A descriptor held in reserve, released to turn connections away
    /// cleanly when the process runs out (see `shed_waiting_connections`).
    spare_fd: Option<File>,
    emfile_warnings: WarnLimiter,
    /// False once shutdown began.
    accepting: bool,
}

/// The single-threaded event loop serving one [`Protocol`].
pub struct Reactor<P: Protocol> {
    poll: Poll,
    events: Events,
    clients: Clients<P>,
    clock: Clock,
    signals: Option<Signals>,
    stop_requested: Arc<AtomicBool>,
    stats: Arc<SharedStats>,
    settings: ReactorSettings,
    next_stats_ms: u64,
    /// Set when shutdown begins: the end of the flush window.
    shutdown_deadline_ms: Option<u64>,
}

impl<P: Protocol> Reactor<P> {
    /// A reactor over already bound sockets. `stop_requested` is checked
    /// whenever the [`WAKER`] fires.
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
            endpoints.push(Endpoint {
                socket,
                queued: false,
                paused_until_ms: NEVER,
            });
        }
        let signals = if settings.handle_signals {
            let mut signals = Signals::new([SIGINT, SIGTERM])?;
            poll.registry()
                .register(&mut signals, SIGNALS, Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };
        let clock = Clock::start();
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
                emfile_warnings: WarnLimiter {
                    next_ms: 0,
                    suppressed: 0,
                },
                accepting: true,
            },
            clock,
            signals,
            stop_requested,
            stats,
            next_stats_ms: settings.stats_interval_ms.unwrap_or(NEVER),
            settings,
            shutdown_deadline_ms: None,
        })
    }

    /// Run until a stop is requested and the shutdown finishes: stop
    /// accepting, flush pending output for up to the grace period, close
    /// everything. Returns the final stats.
    pub fn run(&mut self) -> io::Result<StatsSnapshot> {
        loop {
            self.run_once()?;
            let now = self.clients.ws.ctx.now_ms;
            if self.shutdown_deadline_ms.is_none() && self.stop_requested.load(Ordering::Acquire) {
                self.begin_shutdown();
            }
            if let Some(deadline) = self.shutdown_deadline_ms {
                if self.clients.conns.is_empty() {
                    break;
                }
                if now >= deadline {
                    warn!(
                        "shutdown grace over: closing {} connections with output still pending",
                        self.clients.conns.len()
                    );
                    self.clients.close_all(CloseReason::Shutdown);
                    self.clients.reap_closed();
                    break;
                }
            }
        }
        self.publish_stats();
        Ok(self.stats.snapshot())
    }

    /// One turn of the loop (see the module docs for the steps).
    pub fn run_once(&mut self) -> io::Result<()> {
        let timeout = self.next_timeout(); // 1. zero if work is queued, else nearest deadline
        self.poll_events(timeout)?; // 2. epoll_wait; EINTR counts as "no events"
        self.clients.ws.ctx.now_ms = self.clock.now_ms(); //    the clock, once per turn
        self.dispatch_events(); // 3. accept / receive / read / write per event
        self.clients.serve_ready_queue(self.poll.registry()); // 4. budget leftovers
        self.clients.expire_deadlines(self.poll.registry()); // 5. timers
        self.clients.reap_closed(); // 6. free slab slots only now
        self.publish_stats(); // 7. counters out to other threads
        Ok(())
    }

    fn next_timeout(&self) -> Option<Duration> {
        if !self.clients.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let resume = self.clients.endpoints.iter().map(|e| e.paused_until_ms);
        let nearest = resume
            .chain(self.clients.deadlines.next_due())
            .chain(self.shutdown_deadline_ms)
            .chain([self.next_stats_ms])
            .min()
            .unwrap_or(NEVER);
        if nearest == NEVER {
            return None;
        }
        Some(Duration::from_millis(
            nearest.saturating_sub(self.clock.now_ms()),
        ))
    }

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

    // A function of its own (not folded into `run`), so the per-event path
    // that `Connection::drive` is inlined into keeps its values in registers
    // instead of in `run`'s large frame (docs/BENCHMARKS.md).
    #[inline(never)]
    fn dispatch_events(&mut self) {
        let registry = self.poll.registry();
        let mut signalled = false;
        for event in self.events.iter() {
            match event.token() {
                // Clients first: by far the most common (slab keys sit far
                // below the reserved tokens).
                Token(key) if key < FIRST_RESERVED => self.clients.on_connection_event(key, event),
                // The flag itself is read by `run`; the wake only ended the wait.
                WAKER => {}
                SIGNALS => signalled = true,
                token => {
                    if let Some(index) = endpoint_index(token) {
                        self.clients.on_endpoint_ready(index, registry);
                    }
                }
            }
        }
        if signalled {
            self.on_signals();
        }
    }

    fn on_signals(&mut self) {
        let Some(signals) = self.signals.as_mut() else {
            return;
        };
        for signal in signals.pending() {
            let name = if signal == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            if self.shutdown_deadline_ms.is_some() {
                // The operator insists: no more waiting for slow clients.
                warn!("{name} again during shutdown: exiting now");
                std::process::exit(128 + signal);
            }
            info!("{name}: shutting down (a second signal exits at once)");
            self.stop_requested.store(true, Ordering::Release);
        }
    }

    /// Stop accepting, stop reading, and give pending output the grace period.
    fn begin_shutdown(&mut self) {
        let now = self.clients.ws.ctx.now_ms;
        self.shutdown_deadline_ms = Some(due_after(now, self.settings.shutdown_grace_ms));
        let pending = self.clients.begin_shutdown(self.poll.registry());
        // Connections with nothing pending closed just now: free them before
        // the next poll, or the loop would sleep until the grace ends.
        self.clients.reap_closed();
        info!(
            "stopped accepting; {pending} connections have output to flush (grace {} ms)",
            self.settings.shutdown_grace_ms
        );
    }

    fn publish_stats(&mut self) {
        let ws = &self.clients.ws;
        self.stats
            .publish(&ws.ctx.counters, &ws.ctx.gauge, self.clients.conns.len());
        if let Some(interval) = self.settings.stats_interval_ms {
            if ws.ctx.now_ms >= self.next_stats_ms {
                self.next_stats_ms = due_after(ws.ctx.now_ms, interval);
                let fds = open_fds().map_or_else(|| "?".to_string(), |n| n.to_string());
                info!("{} open_fds={fds}", self.stats.snapshot());
            }
        }
    }
}

impl<P: Protocol> Clients<P> {
    fn on_connection_event(&mut self, key: usize, event: &Event) {
        let Some(conn) = self.conns.get_mut(key) else {
            return; // cannot happen: slots are freed only between batches
        };
        if conn.closed {
            return; // closed earlier in this batch; the event is stale
        }
        conn.on_event(
            event.is_readable(),
            event.is_writable(),
            event.is_read_closed() || event.is_error(),
        );
        // Drive it now, on the connection already in hand (one slab lookup).
        let next = conn.drive(&self.protocol, &mut self.ws);
        if let Some(next) = needs_action(conn, next) {
            self.after_rest(key, next);
        }
    }

    /// Let a connection make progress, then act on what it says.
    #[inline(always)] // once per message (ready-queue path)
    fn drive(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let next = conn.drive(&self.protocol, &mut self.ws);
        if let Some(next) = needs_action(conn, next) {
            self.after_rest(key, next);
        }
    }

    /// Carry out a connection's [`Next`], and keep its deadline scheduled.
    fn after(&mut self, key: usize, next: Next) {
        if let Some(next) = needs_action(&mut self.conns[key], next) {
            self.after_rest(key, next);
        }
    }

    /// Act on a connection's answer: requeue, close, or schedule a deadline
    /// that moved earlier. (`needs_action` already took `TIMERS_CHANGED`.)
    fn after_rest(&mut self, key: usize, next: Next) {
        let conn = &mut self.conns[key];
        match next {
            Next::Wait => {}
            Next::Requeue => {
                if !conn.queued {
                    conn.queued = true;
                    self.ready.push_back(Token(key));
                }
                if !conn.take_timers_changed() {
                    return;
                }
            }
            Next::Close(reason) => return self.close(key, reason),
        }
        // Lazy timers: only a deadline that moved *earlier* than the one
        // scheduled needs a new entry; later ones are found when it pops.
        let due = conn.next_deadline(&self.ws.ctx.limits);
        if due < conn.scheduled_ms {
            conn.scheduled_ms = due;
            self.deadlines.schedule(Entry {
                due_ms: due,
                key,
                serial: conn.serial,
            });
        }
    }

    fn on_endpoint_ready(&mut self, index: usize, registry: &Registry) {
        let Some(endpoint) = self.endpoints.get(index) else {
            return; // closed by shutdown earlier in this batch
        };
        if let Listening::Udp(_) = endpoint.socket {
            self.serve_datagrams(index);
        } else {
            self.accept_burst(index, registry);
        }
    }

    fn queue_endpoint(&mut self, index: usize) {
        let endpoint = &mut self.endpoints[index];
        if !endpoint.queued {
            endpoint.queued = true;
            self.ready.push_back(endpoint_token(index));
        }
    }

    /// Accept until the queue is empty or this turn's budget is spent.
    fn accept_burst(&mut self, index: usize, registry: &Registry) {
        if !self.accepting || self.endpoints[index].paused_until_ms != NEVER {
            return; // resting after EMFILE: the timer brings us back
        }
        for _ in 0..ACCEPT_BUDGET {
            match self.try_accept(index) {
                AcceptOutcome::Accepted(stream) => {
                    if self.conns.len() >= self.max_connections {
                        // Accept-and-close tells the client at once, instead of
                        // leaving it to time out in the kernel's queue.
                        self.ws.ctx.counters.rejected += 1;
                        debug!(
                            "over --max-connections ({}): closed at once",
                            self.max_connections
                        );
                        drop(stream);
                    } else {
                        self.open(stream, registry);
                    }
                }
                AcceptOutcome::WouldBlock => return,
                AcceptOutcome::OutOfFiles => return self.on_out_of_files(index),
                // e.g. ECONNABORTED: that client gave up while queued. The
                // listener is fine; go on with the next one.
                AcceptOutcome::Failed(kind) => debug!("accept failed: {kind:?}"),
            }
        }
        // Budget spent with connections possibly still queued: the edge that
        // woke us will not fire again for them.
        self.queue_endpoint(index);
    }

    fn try_accept(&self, index: usize) -> AcceptOutcome<Stream> {
        match &self.endpoints[index].socket {
            Listening::Tcp(l) => try_accept(|| l.accept().map(|(s, _)| Stream::Tcp(s))),
            Listening::Unix(l) => try_accept(|| l.accept().map(|(s, _)| Stream::Unix(s))),
            Listening::Udp(_) => AcceptOutcome::WouldBlock,
        }
    }

    /// EMFILE/ENFILE: keep serving, turn the waiting clients away, rest.
    fn on_out_of_files(&mut self, index: usize) {
        let now = self.ws.ctx.now_ms;
        let shed = self.shed_waiting_connections(index);
        if let Some(suppressed) = self.emfile_warnings.allow(now, EMFILE_WARN_INTERVAL_MS) {
            warn!(
                "accept: out of file descriptors with {} connections open; shed {shed} waiting \
                 connections, pausing accepts for {ACCEPT_PAUSE_MS} ms ({suppressed} similar warnings suppressed)",
                self.conns.len()
            );
        }
        // Retrying now would fail again (and spin: the waiting connection
        // keeps the listener readable). A reactor timer resumes us.
        self.endpoints[index].paused_until_ms = due_after(now, ACCEPT_PAUSE_MS);
    }

    /// Close the spare descriptor so `accept` can succeed, then accept and
    /// close the waiting connections (they see a clean close, not a hang),
    /// and take the spare back. Returns how many were shed.
    fn shed_waiting_connections(&mut self, index: usize) -> u64 {
        let mut shed = 0;
        if self.spare_fd.take().is_some() {
            for _ in 0..ACCEPT_BUDGET {
                match self.try_accept(index) {
                    AcceptOutcome::Accepted(stream) => {
                        drop(stream);
                        shed += 1;
                    }
                    _ => break,
                }
            }
        }
        self.spare_fd = File::open("/dev/null").ok(); // if this fails, the next EMFILE retries
        self.ws.ctx.counters.shed += shed;
        shed
    }

    /// Register a new connection and let the protocol greet it.
    fn open(&mut self, mut stream: Stream, registry: &Registry) {
        if let Stream::Tcp(tcp) = &stream {
            // Replies are written whole as soon as they are ready; Nagle's
            // algorithm would hold small ones back waiting for an ACK.
            if let Err(e) = tcp.set_nodelay(true) {
                debug!("set TCP_NODELAY: {e}");
            }
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        debug_assert!(key < FIRST_RESERVED);
        // Both interests, once: see the module docs.
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = registry.register(&mut stream, Token(key), interest) {
            warn!("register accepted socket: {e}");
            return; // dropping `stream` closes it
        }
        self.ws.ctx.counters.accepted += 1;
        self.next_serial = self.next_serial.wrapping_add(1);
        self.ws.reply.clear();
        let mut reply = Reply::new(&mut self.ws.reply);
        let session = self.protocol.on_open(&mut reply);
        let requests = reply.requests();
        let now = self.ws.ctx.now_ms;
        let conn = entry.insert(Connection::new(stream, session, self.next_serial, now));
        let next = conn.on_open_reply(requests, &mut self.ws);
        self.after(key, next);
    }

    /// Receive datagrams and answer each; a reply that would block is dropped.
    fn serve_datagrams(&mut self, index: usize) {
        let Listening::Udp(socket) = &self.endpoints[index].socket else {
            return;
        };
        let (scratch, reply, counters) = (
            &mut self.ws.scratch,
            &mut self.ws.reply,
            &mut self.ws.ctx.counters,
        );
        for _ in 0..DATAGRAM_BUDGET {
            counters.read_calls += 1;
            match try_recv_from(socket, scratch) {
                RecvOutcome::Received(n, from) => {
                    counters.datagrams_in += 1;
                    counters.bytes_in += n as u64;
                    reply.clear();
                    self.protocol.on_datagram(&scratch[..n], reply);
                    counters.write_calls += 1;
                    match try_send_to(socket, reply, from) {
                        WriteOutcome::Wrote(sent) => {
                            counters.datagrams_out += 1;
                            counters.bytes_out += sent as u64;
                        }
                        // UDP promises nothing, and the loop never blocks:
                        // a reply the socket cannot take now is dropped, counted.
                        outcome => {
                            counters.datagrams_dropped += 1;
                            debug!("udp reply to {from} dropped: {outcome:?}");
                        }
                    }
                }
                RecvOutcome::WouldBlock => return,
                // e.g. ECONNREFUSED for an earlier reply: the socket is fine.
                RecvOutcome::Failed(kind) => debug!("udp recv failed: {kind:?}"),
            }
        }
        self.queue_endpoint(index);
    }

    fn close(&mut self, key: usize, reason: CloseReason) {
        let conn = &mut self.conns[key];
        if conn.closed {
            return;
        }
        conn.closed = true;
        self.ws.ctx.counters.count_close(reason);
        self.closed.push(key);
        debug!("connection {key} closed: {}", reason.name());
    }

    fn close_all(&mut self, reason: CloseReason) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, reason);
        }
    }

    /// Close every listening socket and stop reading every connection.
    /// Returns how many connections still have output to flush.
    fn begin_shutdown(&mut self, registry: &Registry) -> usize {
        self.accepting = false;
        for endpoint in &mut self.endpoints {
            let _ = match &mut endpoint.socket {
                Listening::Tcp(s) => registry.deregister(s),
                Listening::Unix(s) => registry.deregister(s),
                Listening::Udp(s) => registry.deregister(s),
            };
        }
        self.endpoints.clear(); // closes them; later events for their tokens are ignored
        self.ready.retain(|t| endpoint_index(*t).is_none());
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for &key in &keys {
            let conn = &mut self.conns[key];
            if !conn.closed {
                let next = conn.stop_reading(&mut self.ws.ctx.gauge);
                self.after(key, next);
            }
        }
        self.conns.iter().filter(|(_, c)| !c.closed).count()
    }

    fn serve_ready_queue(&mut self, registry: &Registry) {
        // Only what is queued now: whatever re-queues itself waits for the
        // next turn, after a zero-timeout poll lets fresh events in.
        for _ in 0..self.ready.len() {
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
            conn.queued = false;
            if !conn.closed {
                self.drive(token.0);
            }
        }
    }

    /// Fire every deadline that is due, and resume rested listeners.
    fn expire_deadlines(&mut self, registry: &Registry) {
        let now = self.ws.ctx.now_ms;
        while let Some(entry) = self.deadlines.pop_due(now) {
            let Some(conn) = self.conns.get_mut(entry.key) else {
                continue;
            };
            // Stale: the connection closed (and maybe the key was reused),
            // or an earlier entry replaced this one.
            if conn.closed || conn.serial != entry.serial || conn.scheduled_ms != entry.due_ms {
                continue;
            }
            conn.scheduled_ms = NEVER;
            let next = conn.on_deadline(&self.protocol, &mut self.ws);
            self.after(entry.key, next);
        }
        for index in 0..self.endpoints.len() {
            if self.endpoints[index].paused_until_ms <= now {
                // No edge will announce connections that queued up while
                // we rested: look now.
                self.endpoints[index].paused_until_ms = NEVER;
                self.on_endpoint_ready(index, registry);
            }
        }
    }

    fn reap_closed(&mut self) {
        for key in self.closed.drain(..) {
            let conn = self.conns.remove(key);
            // Dropping the socket closes the fd, which also removes it from
            // the epoll set: no epoll_ctl(DEL) needed.
            drop(conn.release(&mut self.ws.ctx.gauge));
        }
        // A queued key that was just freed must not be driven later.
        if !self.ready.is_empty() {
            let conns = &self.conns;
            self.ready
                .retain(|t| endpoint_index(*t).is_some() || conns.contains(t.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_tokens_never_meet_slab_keys_or_each_other() {
        assert_eq!(endpoint_index(endpoint_token(0)), Some(0));
        assert_eq!(
            endpoint_index(endpoint_token(MAX_ENDPOINTS - 1)),
            Some(MAX_ENDPOINTS - 1)
        );
        assert_eq!(endpoint_index(WAKER), None);
        assert_eq!(endpoint_index(SIGNALS), None);
        assert_eq!(endpoint_index(Token(0)), None);
        assert_eq!(endpoint_index(Token(1_000_000)), None);
        assert_eq!(
            endpoint_index(Token(FIRST_RESERVED)),
            Some(MAX_ENDPOINTS - 1)
        );
        assert_eq!(endpoint_index(Token(FIRST_RESERVED - 1)), None);
    }

    #[test]
    fn warnings_are_limited_to_one_per_interval_and_count_the_rest() {
        let mut limiter = WarnLimiter {
            next_ms: 0,
            suppressed: 0,
        };
        assert_eq!(limiter.allow(0, 1000), Some(0));
        assert_eq!(limiter.allow(10, 1000), None);
        assert_eq!(limiter.allow(999, 1000), None);
        assert_eq!(limiter.allow(1000, 1000), Some(2));
    }
}
