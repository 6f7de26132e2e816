//! `--metrics`: the HTTP listener and its connections, on the same loop as
//! the clients. This file only moves bytes — accept, read into a bounded
//! buffer, write the response, close; what a request means and what the
//! answer says are `http.rs` and `metrics.rs`, which know nothing of mio.
//!
//! Limits (a scraper gets the same distrust as a client):
//! - at most [`MAX_METRICS_CONNECTIONS`] requests served at once; more are
//!   answered `503` at once (and closed as below), counted `busy`.
//!   Connections lingering after their answer do not count: those clients
//!   have their whole response. They hold a slot of their own (up to as
//!   many again, [`METRICS_SLOTS`] in all), and when every slot is taken
//!   the oldest lingering one is closed to make room — sixteen scrapers
//!   that read and do not close cannot lock `/healthz` out;
//! - the request head is read into a buffer of at most
//!   [`MAX_REQUEST_HEAD_BYTES`]; past it, 431 and close;
//! - the whole exchange (request in, response out) must finish within
//!   [`METRICS_DEADLINE_MS`] of the accept, or the connection is closed
//!   (`timeout`): a client sending one byte a second holds a slot for
//!   3 s, not forever;
//! - one request per connection: the response says `Connection: close`,
//!   and once it is sent the connection ends with a lingering close, as
//!   client connections do (`connection/linger.rs`): `shutdown(SHUT_WR)`,
//!   then read and drop whatever the client still sends until it closes,
//!   or its input stops for [`METRICS_LINGER_MS`] (shorter than a client
//!   connection's linger: a scraper's request is all it sends), or
//!   [`METRICS_LINGER_CAP_MS`] passes in all (a flood after the answer
//!   keeps the loop from sleeping only this long). While the rest of a
//!   large refused request still arrives, the linger goes on: on a busy
//!   machine a fixed 500 ms ran out mid-request and reset the client's
//!   write before it could read its 4xx. A plain
//!   `close()` with bytes unread (the
//!   rest of a head refused with 431, a request pipelined behind the
//!   first) makes the kernel send RST instead of FIN, and the client would
//!   see a reset instead of the refusal it was sent. Discarding reads at
//!   most [`DISCARD_BUDGET_BYTES`] a turn per connection, so a client that
//!   floods after its answer cannot hold the loop;
//!
//! - out of descriptors (EMFILE/ENFILE), the waiting connections are
//!   accepted and closed with the reactor's spare descriptor and the
//!   listener rests [`ACCEPT_PAUSE_MS`] on a timer, as the client listeners
//!   do (`accept.rs`): the queued connection keeps the listener readable
//!   without a new edge, so breaking out alone would leave it unserved
//!   until another connection arrived.
//!
//! Nothing here runs on the clients' per-message path: its events have
//! tokens of their own (`tokens.rs`) and its per-turn cost is one check of
//! an empty table.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;

use super::accept::{ACCEPT_BUDGET, ACCEPT_PAUSE_MS, EMFILE_WARN_INTERVAL_MS};
use super::tokens::{metrics_conn_index, metrics_conn_token, METRICS_LISTENER};
pub use super::tokens::{MAX_METRICS_CONNECTIONS, METRICS_SLOTS};
use crate::fdlimit::REACTOR_BASE_FDS;
use crate::http::{
    parse_request_head, route, Health, RequestHead, Response, MAX_REQUEST_HEAD_BYTES,
};
use crate::metrics::{encode_text, Exposition, HttpCounters, HttpRefusal, ProcessFigures};
use crate::nonblocking::{try_accept, AcceptOutcome};
use crate::ratelimit::WarnLimiter;
use crate::stats::StatsSnapshot;
use crate::timers::{due_after, NEVER};
use crate::worker_stats::WorkerSlots;

/// A metrics connection must have sent its request and received the whole
/// response within this long of being accepted.
pub const METRICS_DEADLINE_MS: u64 = 3_000;

/// How long a lingering metrics connection waits for the client's next
/// bytes or its close (ms): a round trip on any network a scraper uses.
/// Input arriving moves this on, up to [`METRICS_LINGER_CAP_MS`].
pub const METRICS_LINGER_MS: u64 = 500;

/// The longest a metrics connection lingers in all, however its input
/// keeps coming (ms).
pub const METRICS_LINGER_CAP_MS: u64 = 5_000;

/// Bytes a lingering metrics connection's input is read and dropped per
/// turn; more waiting is taken up in the next turn (`expire`).
pub const DISCARD_BUDGET_BYTES: usize = 64 * 1024;

/// One metrics connection.
struct MetricsConn {
    stream: TcpStream,
    /// The request head so far (at most `MAX_REQUEST_HEAD_BYTES`).
    received: Vec<u8>,
    /// The response, once the request is complete; `sent` of it written.
    response: Option<Vec<u8>>,
    sent: usize,
    /// The end of the whole exchange, then (lingering) of the linger.
    deadline_ms: u64,
    /// The response is sent and our side shut down: input is dropped
    /// until the client closes or the deadline.
    lingering: bool,
    /// Lingering: the deadline never moves past this.
    linger_cap_ms: u64,
    /// Lingering, and the last discard stopped on its budget with input
    /// possibly left, which no new edge will announce.
    more_to_discard: bool,
}

/// What a connection's event came to.
enum Progress {
    /// Waiting for more of the request, or for room to write.
    Waiting,
    /// Done (answered, refused, or the client went away): close it.
    Finished,
}

/// The metrics listener, its connections and its tallies.
pub struct MetricsEndpoint {
    /// `None` once the worker drains: new scrapes go to the other holders.
    listener: Option<TcpListener>,
    conns: Slab<MetricsConn>,
    counters: HttpCounters,
    /// Under `--workers`: every worker's slots, summed by a scrape.
    shared: Option<Arc<WorkerSlots>>,
    /// Resting until this time ([`NEVER`]: not resting): after EMFILE, or
    /// (due at once) after a turn's accept budget.
    paused_until_ms: u64,
    accept_warnings: WarnLimiter,
}

/// What accepting needs from the reactor when descriptors run out: its
/// spare descriptor, and its count of connections turned away (`shed`).
pub struct OutOfFiles<'a> {
    /// Released to accept-and-close what waits, then taken back.
    pub spare_fd: &'a mut Option<File>,
    /// Counts each connection so closed.
    pub shed: &'a mut u64,
}

impl MetricsEndpoint {
    /// Register `listener` (already bound, non-blocking) with the loop.
    pub fn new(
        mut listener: TcpListener,
        shared: Option<Arc<WorkerSlots>>,
        registry: &Registry,
    ) -> io::Result<Self> {
        registry.register(&mut listener, METRICS_LISTENER, Interest::READABLE)?;
        Ok(MetricsEndpoint {
            listener: Some(listener),
            conns: Slab::with_capacity(METRICS_SLOTS),
            counters: HttpCounters::default(),
            shared,
            paused_until_ms: NEVER,
            accept_warnings: WarnLimiter::default(),
        })
    }

    /// Close the listener (a drain): the connections held are served on,
    /// new ones go to whoever else holds the socket.
    pub fn stop_accepting(&mut self, registry: &Registry) {
        if let Some(mut listener) = self.listener.take() {
            let _ = registry.deregister(&mut listener);
        }
        self.paused_until_ms = NEVER;
    }

    /// The nearest connection deadline, or the end of an accept pause.
    pub fn next_deadline(&self) -> Option<u64> {
        let resume = (self.paused_until_ms != NEVER).then_some(self.paused_until_ms);
        self.conns
            .iter()
            // Input left to discard: due at once (`expire` takes it up).
            .map(|(_, c)| if c.more_to_discard { 0 } else { c.deadline_ms })
            .chain(resume)
            .min()
    }

    /// The endpoint's tallies (under `--workers`, for this worker's slot).
    pub fn counters(&self) -> HttpCounters {
        self.counters
    }

    /// Metrics connections open now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Descriptors held: the connections and, until a drain, the listener.
    pub fn held_fds(&self) -> usize {
        self.connections() + usize::from(self.listener.is_some())
    }

    /// An event for the listener or a connection. `stats` is this
    /// reactor's latest snapshot; `health` what `/healthz` says.
    pub fn on_event(
        &mut self,
        token: Token,
        now_ms: u64,
        health: Health,
        stats: impl Fn() -> StatsSnapshot,
        registry: &Registry,
        out_of_files: OutOfFiles<'_>,
    ) {
        if token == METRICS_LISTENER {
            self.accept_all(now_ms, registry, out_of_files);
            return;
        }
        let Some(index) = metrics_conn_index(token) else {
            return;
        };
        let metrics_fds = self.conns.len() as u64 + u64::from(self.listener.is_some());
        let Some(conn) = self.conns.get_mut(index) else {
            return; // closed earlier in this batch
        };
        let progress = conn.advance(now_ms, health, &mut self.counters, |counters| {
            exposition(
                counters,
                health,
                &stats,
                self.shared.as_deref(),
                metrics_fds,
            )
        });
        if let Progress::Finished = progress {
            self.close(index, registry);
        }
    }

    /// Go on discarding where a linger's budget ran out, close connections
    /// past their deadline (too slow, or their linger is over), and resume
    /// accepting after an out-of-descriptors pause.
    pub fn expire(&mut self, now_ms: u64, registry: &Registry, out_of_files: OutOfFiles<'_>) {
        if self.paused_until_ms <= now_ms {
            // No edge announces connections that queued while we rested.
            self.paused_until_ms = NEVER;
            self.accept_all(now_ms, registry, out_of_files);
        }
        if self.conns.is_empty() {
            return;
        }
        let due: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.more_to_discard || now_ms >= c.deadline_ms)
            .map(|(index, _)| index)
            .collect();
        for index in due {
            let conn = &mut self.conns[index];
            if now_ms >= conn.deadline_ms {
                if conn.lingering {
                    debug!("metrics connection {index}: linger over; closed");
                } else {
                    debug!(
                        "metrics connection {index}: not done within {METRICS_DEADLINE_MS} ms; closed"
                    );
                    self.counters.refused[HttpRefusal::Timeout.index()] += 1;
                }
                self.close(index, registry);
            } else if let Progress::Finished = conn.discard_input(now_ms) {
                self.close(index, registry);
            }
        }
    }

    /// Accept until the queue is empty, at most [`ACCEPT_BUDGET`] a turn
    /// as on the client listeners: a flood of connections to this port
    /// (each served or closed at once) cannot hold the loop from the
    /// clients. Budget spent, the rest are taken up by `expire` (step 5),
    /// a budget at a time, the loop not sleeping while any may wait.
    fn accept_all(&mut self, now_ms: u64, registry: &Registry, out_of_files: OutOfFiles<'_>) {
        if self.paused_until_ms != NEVER {
            return; // resting: `expire` brings us back
        }
        for taken in 0.. {
            if taken == ACCEPT_BUDGET {
                // No new edge will announce those still queued: due at
                // once, so the loop does not sleep and `expire` goes on.
                self.paused_until_ms = now_ms;
                break;
            }
            let Some(listener) = &self.listener else {
                return; // draining: closed
            };
            match try_accept(|| listener.accept()) {
                AcceptOutcome::Accepted((stream, _)) => self.open(stream, now_ms, registry),
                AcceptOutcome::WouldBlock => break,
                // The waiting connection keeps the listener readable with no
                // new edge: turn it away now and retry on a timer.
                AcceptOutcome::OutOfFiles => {
                    let shed = self.shed_waiting(out_of_files.spare_fd);
                    *out_of_files.shed += shed;
                    self.rest(now_ms, "out of file descriptors", shed);
                    break;
                }
                AcceptOutcome::OutOfMemory => {
                    self.rest(now_ms, "the kernel is out of socket memory", 0);
                    break;
                }
                // e.g. ECONNABORTED: that client gave up while queued.
                AcceptOutcome::Failed(kind) => debug!("accept metrics connection: {kind:?}"),
            }
        }
    }

    /// Take a new connection: served, or, with [`MAX_METRICS_CONNECTIONS`]
    /// requests in progress, answered 503 at once and closed as any other
    /// (lingering) — a bare close could reset the request it has sent.
    fn open(&mut self, mut stream: TcpStream, now_ms: u64, registry: &Registry) {
        let busy = self.serving() >= MAX_METRICS_CONNECTIONS;
        if self.conns.len() >= METRICS_SLOTS && !self.close_oldest_lingering(registry) {
            // Every slot serving a request: only a busy answer's pending
            // write keeps one from lingering. Nothing to free; close.
            self.counters.refused[HttpRefusal::Busy.index()] += 1;
            return;
        }
        let entry = self.conns.vacant_entry();
        let index = entry.key();
        let token = metrics_conn_token(index);
        if let Err(e) =
            registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            debug!("register metrics connection: {e}");
            return;
        }
        let conn = entry.insert(MetricsConn {
            stream,
            received: Vec::new(),
            response: None,
            sent: 0,
            deadline_ms: due_after(now_ms, METRICS_DEADLINE_MS),
            lingering: false,
            linger_cap_ms: NEVER,
            more_to_discard: false,
        });
        if busy {
            self.counters.refused[HttpRefusal::Busy.index()] += 1;
            conn.response = Some(Response::text(503, "busy\n").to_bytes(false));
            // A new socket's send buffer takes it whole, and the linger
            // drops the request, whenever it arrives.
            if let Progress::Finished = conn.send_response(now_ms) {
                self.close(index, registry);
            }
        }
    }

    /// Connections still serving a request (not lingering).
    fn serving(&self) -> usize {
        self.conns.iter().filter(|(_, c)| !c.lingering).count()
    }

    /// Close the lingering connection whose linger began first, if there
    /// is one: its client has had its whole response longest.
    fn close_oldest_lingering(&mut self, registry: &Registry) -> bool {
        let oldest = self
            .conns
            .iter()
            .filter(|(_, c)| c.lingering)
            .min_by_key(|(_, c)| c.deadline_ms)
            .map(|(index, _)| index);
        if let Some(index) = oldest {
            debug!("metrics connection {index}: linger cut short, its slot is needed");
            self.close(index, registry);
        }
        oldest.is_some()
    }

    /// Release the spare descriptor, accept and close what waits (a clean
    /// close, not a hang), take the spare back. Returns how many were shed.
    fn shed_waiting(&mut self, spare_fd: &mut Option<File>) -> u64 {
        let mut shed = 0;
        let Some(listener) = &self.listener else {
            return 0;
        };
        if spare_fd.take().is_some() {
            for _ in 0..ACCEPT_BUDGET {
                match try_accept(|| listener.accept()) {
                    AcceptOutcome::Accepted(stream) => {
                        drop(stream);
                        shed += 1;
                    }
                    _ => break,
                }
            }
        }
        *spare_fd = File::open("/dev/null").ok(); // if this fails, the next EMFILE retries
        shed
    }

    /// Accepting failed for want of descriptors or socket memory: warn
    /// (rate-limited) and rest the listener [`ACCEPT_PAUSE_MS`], since
    /// retrying at once would fail again and the queued connection keeps
    /// the listener readable.
    fn rest(&mut self, now_ms: u64, why: &str, shed: u64) {
        if let Some(suppressed) = self.accept_warnings.allow(now_ms, EMFILE_WARN_INTERVAL_MS) {
            warn!(
                "metrics accept: {why}; shed {shed} waiting connections, pausing accepts for \
                 {ACCEPT_PAUSE_MS} ms ({suppressed} similar warnings suppressed)"
            );
        }
        self.paused_until_ms = due_after(now_ms, ACCEPT_PAUSE_MS);
    }

    /// Close metrics connection `index` now: deregister it and drop the
    /// socket, which frees its slot for the next accept. (A stale event
    /// later in the same batch naming a reused slot only costs a read that
    /// would block: every exchange here is non-blocking and starts over
    /// from what the socket says.)
    fn close(&mut self, index: usize, registry: &Registry) {
        if let Some(mut conn) = self.conns.try_remove(index) {
            let _ = registry.deregister(&mut conn.stream);
        }
    }
}

/// What a scrape shows: this reactor's numbers, or every worker's summed.
/// `metrics_fds` are the descriptors the endpoint holds (its listener and
/// connections), for the process's count of what it holds.
fn exposition(
    counters: &HttpCounters,
    health: Health,
    stats: &impl Fn() -> StatsSnapshot,
    shared: Option<&WorkerSlots>,
    metrics_fds: u64,
) -> Exposition {
    let shutting_down = health == Health::ShuttingDown;
    match shared {
        Some(slots) => {
            let total = slots.total();
            Exposition {
                stats: total.stats,
                http: total.http,
                process: total.process,
                shutting_down,
                workers: total.workers,
            }
        }
        None => {
            let stats = stats();
            // Connections, the endpoint's own, the reactor's base set: what
            // it knows it holds (listening sockets aside), the figure where
            // counting descriptors would take a long walk.
            let held_fds = stats.active + metrics_fds + REACTOR_BASE_FDS as u64;
            Exposition {
                stats,
                http: *counters,
                process: ProcessFigures::read(None, held_fds),
                shutting_down,
                workers: 1,
            }
        }
    }
}

impl MetricsConn {
    /// Read the request (until complete, refused or the peer is gone),
    /// write the response, then linger; `answer` builds a scrape's figures.
    fn advance(
        &mut self,
        now_ms: u64,
        health: Health,
        counters: &mut HttpCounters,
        answer: impl FnOnce(&HttpCounters) -> Exposition,
    ) -> Progress {
        if self.lingering {
            return self.discard_input(now_ms);
        }
        if self.response.is_none() {
            match self.read_request() {
                Ok(Some(head)) => {
                    let response = match Response::for_refused(&head) {
                        Some(refusal) => {
                            let why = if head == RequestHead::TooLarge {
                                HttpRefusal::TooLarge
                            } else {
                                HttpRefusal::Invalid
                            };
                            counters.refused[why.index()] += 1;
                            refusal.to_bytes(false)
                        }
                        None => {
                            let RequestHead::Complete { method, path } = head else {
                                return Progress::Finished;
                            };
                            counters.answered += 1;
                            // Built only for /metrics: a health check
                            // costs no /proc reads and no encoding.
                            route(&method, &path, health, || encode_text(&answer(counters)))
                                .to_bytes(method == "HEAD")
                        }
                    };
                    self.response = Some(response);
                }
                Ok(None) => return Progress::Waiting,
                Err(()) => return Progress::Finished,
            }
        }
        self.send_response(now_ms)
    }

    /// Write what is left of the response; once all of it is out, shut
    /// down our side and linger.
    fn send_response(&mut self, now_ms: u64) -> Progress {
        match self.write_response() {
            Progress::Finished if self.sent == self.response.as_ref().map_or(0, Vec::len) => {
                // FIN after the response: the client reads to the end of
                // the stream. Then linger (see the module docs).
                if self.stream.shutdown(Shutdown::Write).is_err() {
                    return Progress::Finished; // not connected any more
                }
                self.lingering = true;
                self.deadline_ms = due_after(now_ms, METRICS_LINGER_MS);
                self.linger_cap_ms = due_after(now_ms, METRICS_LINGER_CAP_MS);
                self.discard_input(now_ms)
            }
            progress => progress,
        }
    }

    /// Read and drop input until the queue is empty (`Waiting`), the peer
    /// closes or fails (`Finished`), or the per-turn budget is spent
    /// (`Waiting`, with `more_to_discard` set). Input read moves the
    /// linger's deadline to [`METRICS_LINGER_MS`] from `now_ms`, never
    /// past its cap.
    fn discard_input(&mut self, now_ms: u64) -> Progress {
        let mut chunk = [0u8; 4096];
        let mut taken = 0;
        self.more_to_discard = false;
        let progress = loop {
            if taken >= DISCARD_BUDGET_BYTES {
                self.more_to_discard = true;
                break Progress::Waiting;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Progress::Finished, // EOF: close() now sends FIN
                Ok(n) => taken += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Progress::Waiting,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Progress::Finished,
            }
        };
        if taken > 0 {
            self.deadline_ms = due_after(now_ms, METRICS_LINGER_MS).min(self.linger_cap_ms);
        }
        progress
    }

    /// `Ok(Some(head))` once the head is complete or refused, `Ok(None)` to
    /// wait for more, `Err(())` when the peer is gone.
    fn read_request(&mut self) -> Result<Option<RequestHead>, ()> {
        let mut chunk = [0u8; 4096];
        loop {
            // Never more than the cap: a 1 MiB request line costs 8 KiB.
            let room = MAX_REQUEST_HEAD_BYTES - self.received.len();
            let want = room.min(chunk.len());
            match self.stream.read(&mut chunk[..want]) {
                Ok(0) => return Err(()), // closed before a whole request
                Ok(n) => {
                    self.received.extend_from_slice(&chunk[..n]);
                    match parse_request_head(&self.received) {
                        RequestHead::Partial => continue,
                        head => return Ok(Some(head)),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(()),
            }
        }
    }

    /// Write what is left of the response: `Finished` once all of it is
    /// written (or the peer is gone), `Waiting` for room.
    fn write_response(&mut self) -> Progress {
        let Some(response) = &self.response else {
            return Progress::Waiting;
        };
        while self.sent < response.len() {
            match self.stream.write(&response[self.sent..]) {
                Ok(0) => return Progress::Finished,
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Waiting,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Progress::Finished,
            }
        }
        Progress::Finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_connections_is_accepted_a_budget_a_turn_and_none_forgotten() {
        let poll = mio::Poll::new().unwrap();
        // A backlog with room for the whole flood (mio's default is 128).
        let listener = crate::sockets::bind_tcp("127.0.0.1:0".parse().unwrap(), 1024).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut endpoint = MetricsEndpoint::new(listener, None, poll.registry()).unwrap();
        // Handshakes complete in the kernel: all of them wait in the queue.
        let flood = ACCEPT_BUDGET + 40;
        let _clients: Vec<std::net::TcpStream> = (0..flood)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let (mut spare, mut shed) = (None, 0);
        // Served, or answered 503 (busy) and lingering or closed.
        let handled = |e: &MetricsEndpoint| {
            e.serving() as u64 + e.counters.refused[HttpRefusal::Busy.index()]
        };
        let health = Health::Accepting;
        let stats = StatsSnapshot::default;
        endpoint.on_event(
            METRICS_LISTENER,
            5,
            health,
            stats,
            poll.registry(),
            OutOfFiles {
                spare_fd: &mut spare,
                shed: &mut shed,
            },
        );
        assert_eq!(
            handled(&endpoint),
            ACCEPT_BUDGET as u64,
            "one budget this turn"
        );
        assert_eq!(
            endpoint.next_deadline(),
            Some(5),
            "the loop must not sleep on the rest"
        );
        endpoint.expire(
            5,
            poll.registry(),
            OutOfFiles {
                spare_fd: &mut spare,
                shed: &mut shed,
            },
        );
        assert_eq!(
            handled(&endpoint),
            flood as u64,
            "the rest, with no new edge"
        );
        assert_eq!(endpoint.paused_until_ms, NEVER);
    }

    #[test]
    fn a_scraper_that_reads_its_answer_but_does_not_close_is_let_go_after_the_short_linger() {
        let (poll, mut endpoint, mut client) = lingering_scraper();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut response = String::new();
        client.read_to_string(&mut response).unwrap(); // to our FIN
        assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
        assert!(endpoint.conns[0].lingering);
        for (now, open) in [(METRICS_LINGER_MS - 1, 1), (METRICS_LINGER_MS, 0)] {
            assert_eq!(expire_at(&mut endpoint, &poll, now), open, "at {now} ms");
        }
    }

    /// A scraper answered and lingering (loopback delivers its request
    /// before `write_all` returns).
    fn lingering_scraper() -> (mio::Poll, MetricsEndpoint, std::net::TcpStream) {
        let poll = mio::Poll::new().unwrap();
        let listener = crate::sockets::bind_tcp("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut endpoint = MetricsEndpoint::new(listener, None, poll.registry()).unwrap();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        // Each write leaves at once (no Nagle wait for the last one's ACK).
        client.set_nodelay(true).unwrap();
        client.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
        for token in [METRICS_LISTENER, metrics_conn_token(0)] {
            event_at(&mut endpoint, &poll, token, 0);
        }
        assert!(endpoint.conns[0].lingering);
        (poll, endpoint, client)
    }

    fn event_at(endpoint: &mut MetricsEndpoint, poll: &mio::Poll, token: mio::Token, now: u64) {
        let (mut spare, mut shed) = (None, 0);
        let out_of_files = OutOfFiles {
            spare_fd: &mut spare,
            shed: &mut shed,
        };
        let stats = StatsSnapshot::default;
        endpoint.on_event(
            token,
            now,
            Health::Accepting,
            stats,
            poll.registry(),
            out_of_files,
        );
    }

    fn expire_at(endpoint: &mut MetricsEndpoint, poll: &mio::Poll, now: u64) -> usize {
        let (mut spare, mut shed) = (None, 0);
        let out_of_files = OutOfFiles {
            spare_fd: &mut spare,
            shed: &mut shed,
        };
        endpoint.expire(now, poll.registry(), out_of_files);
        endpoint.connections()
    }

    #[test]
    fn a_linger_lasts_while_the_client_still_sends_and_ends_when_it_stops() {
        let (poll, mut endpoint, mut client) = lingering_scraper();
        // The rest of a large request arriving at 400 and 800 ms: past the
        // first 500 ms, the linger goes on.
        for now in [400, 800] {
            client.write_all(&[b'a'; 1000]).unwrap(); // loopback: there at once
            event_at(&mut endpoint, &poll, metrics_conn_token(0), now);
            assert_eq!(expire_at(&mut endpoint, &poll, now), 1, "at {now} ms");
        }
        assert_eq!(
            expire_at(&mut endpoint, &poll, 800 + METRICS_LINGER_MS - 1),
            1
        );
        assert_eq!(
            expire_at(&mut endpoint, &poll, 800 + METRICS_LINGER_MS),
            0,
            "input stopped at 800 ms: let go {METRICS_LINGER_MS} ms later"
        );
    }

    #[test]
    fn a_client_that_never_stops_sending_is_let_go_at_the_cap() {
        let (poll, mut endpoint, mut client) = lingering_scraper();
        let mut now = 0;
        while now < METRICS_LINGER_CAP_MS {
            assert_eq!(expire_at(&mut endpoint, &poll, now), 1, "at {now} ms");
            now += 400;
            client.write_all(&[b'a'; 1000]).unwrap();
            event_at(&mut endpoint, &poll, metrics_conn_token(0), now);
        }
        assert_eq!(
            expire_at(&mut endpoint, &poll, now),
            0,
            "still sending at {now} ms"
        );
    }
}
