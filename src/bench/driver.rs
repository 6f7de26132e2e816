//! One load-generator thread: its own `mio::Poll` driving many connections.
//!
//! Closed loop: each connection keeps `pipeline` messages in flight and
//! sends the next as soon as a reply arrives; each send is stamped with its
//! own clock reading, not the time `poll` returned for the whole batch.
//!
//! Open loop: each connection follows a fixed timetable ([`Schedule`], in
//! integer nanoseconds); a message whose time has come waits if its
//! connection already has `pipeline` in flight, and its latency is
//! measured from its *intended* time, so a slow server cannot hide its
//! queueing by slowing the generator down (no coordinated omission). The
//! uncorrected latency, from the actual send, is kept too. A
//! [`DeadlineTimer`] wakes the thread at each message's nanosecond
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
//! ([`Counters`]) and stops early when a signal asks ([`interrupt`]).

use std::collections::VecDeque;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::deadline::DeadlineTimer;
use super::failures::ConnectFailures;
use super::interrupt;
use super::message::push_message;
use super::progress::{Counters, LATENCY_EVERY};
use super::schedule::Schedule;
use super::sources::{source_for, start_connect};
use crate::nonblocking::{try_read, try_write, ReadOutcome, WriteOutcome};
use crate::proxy_header::{self, HeaderVersion};

/// Latencies are recorded in microseconds, up to an hour.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// The generator's own send lateness is recorded in nanoseconds (it is
/// often below a microsecond), up to an hour.
pub fn new_histogram_ns() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

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
        self.messages += other.messages;
        let _ = self.latency.add(&other.latency);
        let _ = self.latency_uncorrected.add(&other.latency_uncorrected);
        self.errors.add(&other.errors);
        self.intended += other.intended;
        self.unsent += other.unsent;
        let _ = self.send_lateness.add(&other.send_lateness);
    }
}

/// One message sent and not yet answered.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    seq: u64,
    intended: Instant,
    sent: Instant,
}

/// One connection's state in the load generator.
struct Client {
    stream: TcpStream,
    id: u32,
    next_seq: u64,
    in_flight: VecDeque<InFlight>,
    /// Open loop: how many of its scheduled messages were sent; those due
    /// beyond it are its backlog (a count: see [`Schedule`]).
    sent_on_schedule: u64,
    /// Bytes not yet taken by the kernel.
    out: Vec<u8>,
    out_sent: usize,
    /// The reply being assembled.
    reply: Vec<u8>,
    open: bool,
}

/// Open `count` connections starting at id `first_id` (see
/// [`connect_streams_from`]), register each for reading and writing under
/// its index, and return the clients and the failures. `progress` learns
/// how many are up as they come, and when this thread is done.
fn connect_all(
    poll: &mut Poll,
    load: &Load,
    (first_id, count): (u32, usize),
    progress: &Counters,
) -> (Vec<Client>, ConnectFailures) {
    let (streams, mut failures) =
        connect_streams_from(poll, load.addr, (&load.sources, first_id), count, progress);
    let mut clients: Vec<Client> = streams
        .into_iter()
        .enumerate()
        .map(|(index, stream)| Client {
            // The header goes out with the first message (flush sends `out`).
            out: proxy_preamble(load.proxy_header, &stream),
            stream,
            id: first_id + index as u32,
            next_seq: 0,
            in_flight: VecDeque::new(),
            sent_on_schedule: 0,
            out_sent: 0,
            reply: Vec::new(),
            open: true,
        })
        .collect();
    // A connection that cannot be registered never carries a message: it
    // counts as not up (and is dropped, so achieved = clients.len()).
    // `retain_mut` keeps the order, so each token is its final index.
    let mut token = 0;
    clients.retain_mut(|client| {
        let interest = Interest::READABLE | Interest::WRITABLE;
        match poll
            .registry()
            .register(&mut client.stream, Token(token), interest)
        {
            Ok(()) => {
                token += 1;
                true
            }
            Err(e) => {
                failures.count(&e);
                false
            }
        }
    });
    progress.up.store(clients.len() as u64, Ordering::Relaxed);
    progress.failed.store(failures.total(), Ordering::Relaxed);
    progress.open.store(clients.len() as u64, Ordering::Relaxed);
    progress.connected.store(true, Ordering::Release);
    (clients, failures)
}

/// What a connection sends before its first message: a PROXY header
/// naming this connection's own address as the client and the target as
/// the destination (`--proxy-header`), or nothing.
fn proxy_preamble(version: Option<HeaderVersion>, stream: &TcpStream) -> Vec<u8> {
    match (version, stream.local_addr(), stream.peer_addr()) {
        (Some(version), Ok(local), Ok(peer)) => proxy_header::encode(version, local, peer),
        // Connected streams have both addresses; without them, send no
        // header and let the server's refusal show up as an error.
        _ => Vec::new(),
    }
}

/// Open `count` connections to `addr` from the kernel's choice of source
/// address (see [`connect_streams_from`]).
pub(super) fn connect_streams(
    poll: &mut Poll,
    addr: SocketAddr,
    count: usize,
) -> (Vec<TcpStream>, ConnectFailures) {
    connect_streams_from(poll, addr, (&[], 0), count, &Counters::default())
}

/// Open `count` connections to `addr`, at most a wave of them in progress
/// at a time (so the server's listen queue is not flooded), each with
/// `TCP_NODELAY`; attempt `i` comes from source address `first_id + i`
/// round-robin. Returns the connected streams, in the order they
/// connected and registered with nothing, and why the others failed;
/// `progress.up` and `.failed` follow along.
pub(super) fn connect_streams_from(
    poll: &mut Poll,
    addr: SocketAddr,
    (sources, first_id): (&[IpAddr], u32),
    count: usize,
    progress: &Counters,
) -> (Vec<TcpStream>, ConnectFailures) {
    // Past this, what is not up counts as `gave_up`: a server that
    // completes handshakes this slowly is itself the finding.
    const CONNECT_DEADLINE: Duration = Duration::from_secs(15);
    connect_streams_within(
        poll,
        addr,
        (sources, first_id),
        count,
        (CONNECT_DEADLINE, progress),
    )
}

/// [`connect_streams_from`], giving up on what is not connected after `deadline`.
fn connect_streams_within(
    poll: &mut Poll,
    addr: SocketAddr,
    sources: (&[IpAddr], u32),
    count: usize,
    deadline: (Duration, &Counters),
) -> (Vec<TcpStream>, ConnectFailures) {
    let (connected, failures, _) = connect_waves(poll, addr, sources, count, deadline);
    (connected, failures)
}

/// The connects under way, by token. A slab: starting one, finishing one
/// and counting them are each one step, so the loop's work grows with the
/// connections, not with their square (a list rescanned for each new
/// connection made 20 000 connections 200 million steps).
struct Wave {
    under_way: Slab<TcpStream>,
    /// Entries of `under_way` looked at so far (the loop's work, for a test).
    steps: u64,
}

impl Wave {
    fn len(&mut self) -> usize {
        self.steps += 1;
        self.under_way.len()
    }

    fn start(&mut self, poll: &Poll, mut stream: TcpStream) -> io::Result<()> {
        self.steps += 1;
        let entry = self.under_way.vacant_entry();
        poll.registry()
            .register(&mut stream, Token(entry.key()), Interest::WRITABLE)?;
        entry.insert(stream);
        Ok(())
    }

    /// The connect of `token`, if still under way (an event may come twice).
    fn finish(&mut self, token: Token) -> Option<TcpStream> {
        self.steps += 1;
        self.under_way.try_remove(token.0)
    }
}

/// The loop of [`connect_streams_within`]; also returns its work (see [`Wave`]).
fn connect_waves(
    poll: &mut Poll,
    addr: SocketAddr,
    (sources, first_id): (&[IpAddr], u32),
    count: usize,
    (deadline, progress): (Duration, &Counters),
) -> (Vec<TcpStream>, ConnectFailures, u64) {
    const WAVE: usize = 256;
    let mut connected: Vec<TcpStream> = Vec::with_capacity(count);
    let mut failures = ConnectFailures::default();
    let mut events = Events::with_capacity(1024);
    let start = Instant::now();
    let mut wave = Wave {
        under_way: Slab::with_capacity(WAVE),
        steps: 0,
    };
    let mut next = 0;
    while next < count || wave.len() > 0 {
        while next < count && wave.len() < WAVE {
            let source = source_for(sources, first_id as usize + next);
            if let Err(e) = start_connect(addr, source).and_then(|s| wave.start(poll, s)) {
                failures.count(&e);
            }
            next += 1;
        }
        let stopped = interrupt::requested();
        if start.elapsed() > deadline || stopped {
            // Those under way and those never started alike: every
            // connection asked for is either connected or counted.
            let left = wave.len() + (count - next);
            if stopped {
                failures.stopped += left as u64;
            } else {
                failures.gave_up += left as u64;
            }
            break;
        }
        if poll
            .poll(&mut events, Some(Duration::from_millis(100)))
            .is_err()
        {
            continue;
        }
        for event in events.iter() {
            let Some(mut stream) = wave.finish(event.token()) else {
                continue;
            };
            // Writable after a non-blocking connect: connected, or failed.
            let _ = poll.registry().deregister(&mut stream);
            match connect_outcome(&stream) {
                Ok(()) => {
                    let _ = stream.set_nodelay(true);
                    connected.push(stream);
                }
                Err(e) => failures.count(&e),
            }
        }
        progress.up.store(connected.len() as u64, Ordering::Relaxed);
        progress.failed.store(failures.total(), Ordering::Relaxed);
    }
    progress.up.store(connected.len() as u64, Ordering::Relaxed);
    progress.failed.store(failures.total(), Ordering::Relaxed);
    (connected, failures, wave.steps)
}

/// How a non-blocking connect ended, once its socket reported writable:
/// `SO_ERROR` holds the reason it failed (`ECONNREFUSED`, `ETIMEDOUT`, ...);
/// without one, a peer address means it is up.
fn connect_outcome(stream: &TcpStream) -> io::Result<()> {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => Err(e),
        Ok(None) => stream.peer_addr().map(drop),
    }
}

/// Per-thread buffers and tallies used while handling events.
struct Tally {
    scratch: Vec<u8>,
    expected: Vec<u8>,
    measure_from: Instant,
    measure_until: Instant,
    /// Open loop: latencies are those of the messages intended in the
    /// window, whenever answered; closed loop: of those sent and answered in it.
    open_loop: bool,
    measured: Measured,
    /// Verified replies, warm-up and drain included (for the progress lines).
    replies: u64,
    /// Measured latencies since the last merge into the progress counters.
    latency_since_tick: Histogram<u64>,
}

impl Tally {
    fn new(
        size: usize,
        (measure_from, measure_until): (Instant, Instant),
        open_loop: bool,
        measured: Measured,
    ) -> Tally {
        Tally {
            scratch: vec![0; 64 * 1024],
            expected: Vec::with_capacity(size),
            measure_from,
            measure_until,
            open_loop,
            measured,
            replies: 0,
            latency_since_tick: new_histogram(),
        }
    }

    /// Publish the running totals for the main thread's progress lines.
    fn publish(&self, progress: &Counters) {
        progress.replies.store(self.replies, Ordering::Relaxed);
        progress
            .measured
            .store(self.measured.messages, Ordering::Relaxed);
    }
}

impl Client {
    /// Queue message `next_seq` and try to send it, stamped with the clock
    /// read now (closed loop: also its intended time). Returns the stamp.
    fn send_next(
        &mut self,
        size: usize,
        intended: Option<Instant>,
        errors: &mut Errors,
    ) -> Instant {
        // One clock read per send (a vDSO call, about 20 ns): a stamp
        // shared by a whole batch of events would charge the time spent on
        // the earlier events to the later messages' latency.
        let sent = Instant::now();
        let seq = self.next_seq;
        self.next_seq += 1;
        push_message(&mut self.out, self.id, seq, size);
        self.in_flight.push_back(InFlight {
            seq,
            intended: intended.unwrap_or(sent),
            sent,
        });
        self.flush(errors);
        sent
    }

    /// Open loop: send what is due on this connection (the thread's
    /// connection `index`) by `now_ns`, as far as its pipeline allows.
    /// `on_time` says the sends happen because their time came (the
    /// schedule's wake-up), not because a reply freed a slot: only those
    /// measure the generator's own lateness.
    fn send_due(
        &mut self,
        (index, now_ns): (usize, u64),
        plan: &Plan,
        on_time: bool,
        tally: &mut Tally,
    ) {
        let due = plan.schedule.due_count(index, now_ns);
        while self.open && self.in_flight.len() < plan.pipeline && self.sent_on_schedule < due {
            let intended_ns = plan.schedule.intended_ns(index, self.sent_on_schedule);
            self.sent_on_schedule += 1;
            let intended = plan.began + Duration::from_nanos(intended_ns);
            let sent = self.send_next(plan.size, Some(intended), &mut tally.measured.errors);
            if on_time && plan.schedule.in_window(intended_ns) {
                let late = u64::try_from((sent - intended).as_nanos()).unwrap_or(u64::MAX);
                tally.measured.send_lateness.saturating_record(late.max(1));
            }
        }
    }

    /// Whether a due message could be sent now (a free pipeline slot).
    fn can_send(&self, pipeline: usize) -> bool {
        self.open && self.in_flight.len() < pipeline
    }

    /// Write pending bytes until done or the kernel says wait.
    fn flush(&mut self, errors: &mut Errors) {
        while self.open && self.out_sent < self.out.len() {
            match try_write(&mut self.stream, &self.out[self.out_sent..]) {
                WriteOutcome::Wrote(n) => self.out_sent += n,
                WriteOutcome::WouldBlock => return,
                WriteOutcome::Closed | WriteOutcome::Failed(_) => {
                    errors.reset += 1;
                    self.open = false;
                }
            }
        }
        if self.out_sent == self.out.len() {
            self.out.clear();
            self.out_sent = 0;
        }
    }

    /// Read everything available; verify and count each complete reply.
    /// Returns how many replies completed (each frees a pipeline slot).
    fn on_readable(&mut self, size: usize, hung_up: bool, tally: &mut Tally) -> usize {
        let mut completed = 0;
        // Borrow the thread's scratch buffer apart from the tallies it feeds.
        let mut scratch = std::mem::take(&mut tally.scratch);
        while self.open {
            match try_read(&mut self.stream, &mut scratch) {
                ReadOutcome::Data(n) => {
                    let mut data = &scratch[..n];
                    while !data.is_empty() {
                        let take = (size - self.reply.len()).min(data.len());
                        self.reply.extend_from_slice(&data[..take]);
                        data = &data[take..];
                        if self.reply.len() == size {
                            self.check_reply(size, tally);
                            self.reply.clear();
                            completed += 1;
                            if !self.open {
                                break; // a mismatch: the rest cannot be verified
                            }
                        }
                    }
                    // The server's short-read rule, here too: a short read
                    // means the queue is empty and new bytes bring a new
                    // edge, so the read that would say WouldBlock is skipped
                    // (one syscall per reply saved; see the reactor's `fill`).
                    if n < scratch.len() && !hung_up {
                        break;
                    }
                }
                ReadOutcome::WouldBlock => break,
                ReadOutcome::Closed => {
                    // The server ended the connection after its last reply
                    // (e.g. it is draining): not a reset, not a mismatch.
                    // Close our side too, so its lingering close ends now.
                    tally.measured.errors.server_closed += 1;
                    self.in_flight.clear();
                    self.open = false;
                    let _ = self.stream.shutdown(std::net::Shutdown::Both);
                }
                ReadOutcome::Reset | ReadOutcome::Failed(_) => {
                    tally.measured.errors.reset += 1;
                    self.open = false;
                }
            }
        }
        tally.scratch = scratch;
        completed
    }

    fn check_reply(&mut self, size: usize, tally: &mut Tally) {
        let now = Instant::now();
        let Some(sent) = self.in_flight.pop_front() else {
            // A reply nobody asked for: the stream is out of step, so
            // nothing more from it can be verified.
            tally.measured.errors.mismatch += 1;
            self.open = false;
            return;
        };
        tally.expected.clear();
        push_message(&mut tally.expected, self.id, sent.seq, size);
        if self.reply != tally.expected {
            tally.measured.errors.mismatch += 1;
            self.open = false; // counted once; see `Errors`
            return;
        }
        tally.replies += 1;
        let corrected = micros(now - sent.intended);
        let in_window = sent.sent >= tally.measure_from && now <= tally.measure_until;
        if in_window {
            tally.latency_since_tick.saturating_record(corrected);
            tally.measured.messages += 1;
        }
        // Open loop: every message intended in the window has its latency
        // recorded, even when its reply comes in the drain after it —
        // otherwise past saturation only the early window would count.
        let accounted = if tally.open_loop {
            sent.intended >= tally.measure_from && sent.intended < tally.measure_until
        } else {
            in_window
        };
        if accounted {
            tally.measured.latency.saturating_record(corrected);
            tally
                .measured
                .latency_uncorrected
                .saturating_record(micros(now - sent.sent));
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// The open loop's plan for one thread: its timetable and what a send needs.
struct Plan {
    schedule: Schedule,
    began: Instant,
    pipeline: usize,
    size: usize,
}

/// The poll's wake-up token for the schedule's [`DeadlineTimer`] (client
/// tokens are indices into the thread's connections).
const SCHEDULE_TIMER: Token = Token(usize::MAX);

fn nanos_since(began: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(began).as_nanos()).unwrap_or(u64::MAX)
}

/// Run the echo scenario on this thread's connections `[first_id, first_id + count)`.
/// All threads and the main thread meet at `connected` once connected;
/// then at `start` (with the flood thread, if any), when the main thread
/// says the run begins (after the other processes are connected too).
/// The running totals go to `progress`; a stop asked for by a signal ends
/// the run early (what is in flight then is neither measured nor an error).
pub fn run_echo(
    load: &Load,
    first_id: u32,
    count: usize,
    (connected, start): (&Barrier, &Barrier),
    progress: &Counters,
) -> Measured {
    let mut poll = Poll::new().expect("epoll_create");
    let (mut clients, failures) = connect_all(&mut poll, load, (first_id, count), progress);
    let mut timer = None;
    if load.pacing.is_some() {
        let made = DeadlineTimer::new().and_then(|t| {
            poll.registry()
                .register(&mut SourceFd(&t.fd()), SCHEDULE_TIMER, Interest::READABLE)
                .map(|()| t)
        });
        timer = Some(made.expect("timerfd_create"));
    }
    connected.wait();
    start.wait();
    let began = Instant::now();
    let window = (began + load.warmup, began + load.warmup + load.duration);
    let open_loop = load.pacing.is_some();
    let measured = Measured::new(clients.len(), failures);
    let mut tally = Tally::new(load.size, window, open_loop, measured);
    let stop_sending = tally.measure_until;
    let give_up = stop_sending + load.drain;
    let mut next_tick = began + LATENCY_EVERY;
    let mut events = Events::with_capacity(1024);
    let mut plan = load.pacing.map(|pacing| Plan {
        schedule: Schedule::new(
            pacing.period_ps,
            (
                pacing.connections,
                first_id.saturating_sub(pacing.first_id) as usize,
                clients.len(),
            ),
            (
                nanos_since(began, tally.measure_from),
                nanos_since(began, stop_sending),
            ),
        ),
        began,
        pipeline: load.pipeline,
        size: load.size,
    });
    // Open loop: the next slot (see `Schedule`) not yet visited, the
    // deadline the timer is armed for, and how many connections have a
    // free pipeline slot (none: nothing to wake up for but replies).
    let mut cursor: u64 = 0;
    let mut armed_ns: Option<u64> = None;
    let mut free = clients.len();

    if plan.is_none() {
        for client in &mut clients {
            for _ in 0..load.pipeline {
                client.send_next(load.size, None, &mut tally.measured.errors);
            }
        }
    }

    loop {
        let now = Instant::now();
        let sending = now < stop_sending;
        // (The scan over all clients only runs once sending has stopped.)
        let drained = || !clients.iter().any(|c| c.open && !c.in_flight.is_empty());
        if (!sending && drained()) || now >= give_up || clients.is_empty() {
            break;
        }
        if interrupt::requested() {
            // Cut short: what was intended after now is not part of the run.
            if let Some(plan) = &mut plan {
                plan.schedule.stop_at(nanos_since(began, now));
            }
            break;
        }
        // Open loop: visit every slot whose time has come. At most one
        // round of slots one by one; further behind than that, every
        // connection is due anyway: offer each one its backlog and jump the
        // cursor — the work per wake-up is bounded whatever the rate.
        if let (Some(plan), true) = (&plan, sending) {
            let now_ns = nanos_since(began, now);
            let mut visited = 0;
            while plan.schedule.slot_due_ns(cursor) <= now_ns && visited < clients.len() {
                let (index, _) = plan.schedule.slot(cursor);
                let client = &mut clients[index];
                let could = client.can_send(plan.pipeline);
                client.send_due((index, now_ns), plan, true, &mut tally);
                free -= usize::from(could && !client.can_send(plan.pipeline));
                cursor += 1;
                visited += 1;
            }
            if plan.schedule.slot_due_ns(cursor) <= now_ns {
                for (index, client) in clients.iter_mut().enumerate() {
                    let could = client.can_send(plan.pipeline);
                    client.send_due((index, now_ns), plan, true, &mut tally);
                    free -= usize::from(could && !client.can_send(plan.pipeline));
                }
                cursor = cursor.max(plan.schedule.slots_due(now_ns));
            }
        }
        tally.publish(progress);
        if now >= next_tick {
            let open = clients.iter().filter(|c| c.open).count();
            progress.open.store(open as u64, Ordering::Relaxed);
            progress.add_latency(&tally.latency_since_tick);
            tally.latency_since_tick.reset();
            next_tick += LATENCY_EVERY;
        }
        let wake = next_tick.min(if sending { stop_sending } else { give_up });
        let mut timeout = wake.saturating_duration_since(Instant::now());
        // The schedule's own deadline, to the nanosecond, by the timer
        // (poll's timeout is in whole milliseconds, rounded up). Only
        // while some connection could send: one whose pipeline is full
        // sends when a reply frees it, and a reply wakes the poll anyway.
        if let (Some(plan), Some(timer), true) = (&plan, &mut timer, sending && free > 0) {
            let due_ns = plan.schedule.slot_due_ns(cursor);
            let now_ns = nanos_since(began, Instant::now());
            if due_ns <= now_ns {
                timeout = Duration::ZERO;
            } else if armed_ns != Some(due_ns) {
                timer
                    .arm_after(Duration::from_nanos(due_ns - now_ns))
                    .expect("timerfd_settime");
                armed_ns = Some(due_ns);
            }
        }
        let timeout = timeout.min(interrupt::CHECK_EVERY);
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            panic!("epoll_wait: {e}");
        }
        let polled = Instant::now();
        let sending = polled < stop_sending;
        for event in events.iter() {
            if event.token() == SCHEDULE_TIMER {
                continue; // the slots are visited at the top of the loop
            }
            let client = &mut clients[event.token().0];
            if !client.open {
                continue;
            }
            let could = client.can_send(load.pipeline);
            if event.is_writable() {
                client.flush(&mut tally.measured.errors);
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                let hung_up = event.is_read_closed() || event.is_error();
                let completed = client.on_readable(load.size, hung_up, &mut tally);
                if sending && client.open {
                    match &plan {
                        None => {
                            for _ in 0..completed {
                                client.send_next(load.size, None, &mut tally.measured.errors);
                            }
                        }
                        // Messages that waited for this slot: their wait
                        // is the server's, not the generator's lateness.
                        Some(plan) => client.send_due(
                            (event.token().0, nanos_since(began, Instant::now())),
                            plan,
                            false,
                            &mut tally,
                        ),
                    }
                }
            }
            match (could, client.can_send(load.pipeline)) {
                (false, true) => free += 1,
                (true, false) => free -= 1,
                _ => {}
            }
        }
    }
    if let Some(plan) = &plan {
        // Every message intended in the window and never sent is
        // accounted at its lower bound: sending stopped at the window's
        // end (or the stop), and it had not gone out by then.
        let end_ns = plan.schedule.until_ns();
        for (index, client) in clients.iter().enumerate() {
            tally.measured.intended += plan.schedule.intended_in_window(index);
            tally.measured.unsent += plan.schedule.record_unsent(
                index,
                (client.sent_on_schedule, u64::MAX),
                end_ns,
                &mut tally.measured.latency,
            );
        }
    }
    tally.measured.errors.timeout += unanswered(&clients);
    tally.publish(progress);
    progress.add_latency(&tally.latency_since_tick);
    tally.measured
}

/// Connections still open with messages unanswered: the `timeout` errors.
/// One that closed already was counted as a reset or mismatch; after a
/// signal, nothing in flight is an error (the run was cut short).
fn unanswered(clients: &[Client]) -> u64 {
    if interrupt::requested() {
        return 0;
    }
    clients
        .iter()
        .filter(|c| c.open && !c.in_flight.is_empty())
        .count() as u64
}

/// Hold scenario: connect, meet the main thread (which measures memory),
/// stay idle until it says so, then have every connection answer once.
/// Barrier meetings: connected, hold over, answered (the main thread
/// measures memory again), released. After a signal, nobody is asked
/// to answer.
pub fn run_hold(
    load: &Load,
    (first_id, count): (u32, usize),
    meet: &Barrier,
    progress: &Counters,
) -> Measured {
    let mut poll = Poll::new().expect("epoll_create");
    let (mut clients, failures) = connect_all(&mut poll, load, (first_id, count), progress);
    let mut measured = Measured::new(clients.len(), failures);
    meet.wait(); // 1: all connected
    meet.wait(); // 2: the hold is over
    let began = Instant::now();
    let mut tally = Tally::new(load.size, (began, began + load.drain), false, measured);
    if !interrupt::requested() {
        for client in &mut clients {
            client.send_next(load.size, None, &mut tally.measured.errors);
        }
    }
    let mut events = Events::with_capacity(1024);
    while clients.iter().any(|c| c.open && !c.in_flight.is_empty())
        && began.elapsed() < load.drain
        && !interrupt::requested()
    {
        let _ = poll.poll(&mut events, Some(Duration::from_millis(100)));
        for event in events.iter() {
            let client = &mut clients[event.token().0];
            if event.is_writable() {
                client.flush(&mut tally.measured.errors);
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                let hung_up = event.is_read_closed() || event.is_error();
                client.on_readable(load.size, hung_up, &mut tally);
            }
        }
    }
    measured = tally.measured;
    measured.errors.timeout += unanswered(&clients);
    meet.wait(); // 3: every connection answered (or not)
    meet.wait(); // 4: memory measured; now close
    measured
}

/// What one thread of the connect scenario measured.
#[derive(Debug)]
pub struct Connects {
    /// Connections completed (established, then closed).
    pub completed: u64,
    /// Time from `connect` to established, microseconds.
    pub latency: Histogram<u64>,
    /// Attempts that failed, by class.
    pub failed: ConnectFailures,
    /// Slots (of `concurrency`) that completed at least one connection:
    /// the concurrency actually achieved.
    pub slots_up: usize,
}

/// Connect scenario: keep `concurrency` connects in progress; close each
/// one as soon as it is established (with an RST, so no `TIME_WAIT` piles
/// up and exhausts the ephemeral ports), for `duration`. Slot `i` connects
/// from source address `first_slot + i` round-robin.
pub fn run_connect(
    addr: SocketAddr,
    (sources, first_slot): (&[IpAddr], u32),
    concurrency: usize,
    duration: Duration,
    start: &Barrier,
) -> Connects {
    let mut poll = Poll::new().expect("epoll_create");
    let mut slots: Vec<Option<(TcpStream, Instant)>> = (0..concurrency).map(|_| None).collect();
    let mut result = Connects {
        completed: 0,
        latency: new_histogram(),
        failed: ConnectFailures::default(),
        slots_up: 0,
    };
    let mut ever_up = vec![false; concurrency];
    let mut events = Events::with_capacity(1024);
    start.wait();
    let end = Instant::now() + duration;
    while Instant::now() < end && !interrupt::requested() {
        for (index, slot) in slots.iter_mut().enumerate() {
            if slot.is_none() {
                let source = source_for(sources, first_slot as usize + index);
                match start_connect(addr, source) {
                    Ok(mut stream) => {
                        let registered =
                            poll.registry()
                                .register(&mut stream, Token(index), Interest::WRITABLE);
                        match registered {
                            Ok(()) => *slot = Some((stream, Instant::now())),
                            Err(e) => result.failed.count(&e),
                        }
                    }
                    Err(e) => result.failed.count(&e),
                }
            }
        }
        let timeout = end.saturating_duration_since(Instant::now());
        let timeout = timeout.min(interrupt::CHECK_EVERY);
        if poll.poll(&mut events, Some(timeout)).is_err() {
            continue;
        }
        for event in events.iter() {
            let Some((stream, began)) = slots.get_mut(event.token().0).and_then(Option::take)
            else {
                continue;
            };
            let index = event.token().0;
            if let Err(e) = connect_outcome(&stream) {
                result.failed.count(&e);
            } else {
                result.completed += 1;
                result.latency.saturating_record(micros(began.elapsed()));
                if !ever_up[index] {
                    ever_up[index] = true;
                    result.slots_up += 1;
                }
            }
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            drop(stream);
        }
    }
    result
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
    fn connections_never_started_before_the_deadline_count_as_failed() {
        // A listener that accepts nothing; its backlog completes a few
        // handshakes. With no time at all, one wave is under way and the
        // rest never start: all of them must be counted.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut poll = Poll::new().unwrap();
        let progress = Counters::default();
        let (connected, failed) =
            connect_streams_within(&mut poll, addr, (&[], 0), 1000, (Duration::ZERO, &progress));
        assert_eq!(connected.len() as u64 + failed.total(), 1000);
        // ... and each of them as given up on, the reason the summary names.
        assert_eq!(failed.gave_up, failed.total());
        assert_eq!(progress.failed.load(Ordering::Relaxed), failed.total());
    }

    #[test]
    fn the_connect_loop_does_work_in_proportion_to_the_connections() {
        // Each connection is started, counted and finished a few times
        // over; a loop that rescans what is under way for each new
        // connection takes ~count * WAVE steps instead.
        const COUNT: usize = 1500;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = std::thread::spawn(move || {
            (0..COUNT)
                .map_while(|_| listener.accept().ok())
                .collect::<Vec<_>>()
        });
        let mut poll = Poll::new().unwrap();
        let progress = Counters::default();
        let deadline = Duration::from_secs(30);
        let (connected, failed, steps) =
            connect_waves(&mut poll, addr, (&[], 0), COUNT, (deadline, &progress));
        assert_eq!((connected.len(), failed.total()), (COUNT, 0));
        assert!(
            steps <= 6 * COUNT as u64,
            "{steps} steps for {COUNT} connections"
        );
        drop(connected);
        assert_eq!(acceptor.join().unwrap().len(), COUNT);
    }

    #[test]
    fn a_closed_loop_send_is_stamped_when_it_is_made_not_when_poll_returned() {
        // The batch's clock reading, then time spent on earlier events of
        // the batch (a bounded spin on the monotonic clock), then the send:
        // its stamp, sent and intended alike, must be the send's own.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut client = Client {
            stream: TcpStream::from_std(stream),
            id: 0,
            next_seq: 0,
            in_flight: VecDeque::new(),
            sent_on_schedule: 0,
            out: Vec::new(),
            out_sent: 0,
            reply: Vec::new(),
            open: true,
        };
        let polled = Instant::now();
        while polled.elapsed() < Duration::from_millis(2) {}
        let mut errors = Errors::default();
        client.send_next(64, None, &mut errors);
        let sent = client.in_flight.back().copied().unwrap();
        assert!(sent.sent - polled >= Duration::from_millis(2), "{sent:?}");
        assert_eq!(sent.intended, sent.sent);
        assert_eq!(errors, Errors::default());
    }

    #[test]
    fn latency_is_never_recorded_as_zero() {
        assert_eq!(micros(Duration::ZERO), 1);
        assert_eq!(micros(Duration::from_millis(3)), 3000);
    }
}
