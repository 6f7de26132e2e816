//! `--metrics`: the HTTP listener and its connections, on the same loop as
//! the clients. This file only moves bytes — accept, read into a bounded
//! buffer, write the response, close; what a request means and what the
//! answer says are `http.rs` and `metrics.rs`, which know nothing of mio.
//!
//! Limits (a scraper gets the same distrust as a client):
//! - at most [`MAX_METRICS_CONNECTIONS`] open at once; more are accepted
//!   and closed at once, counted `busy`;
//! - the request head is read into a buffer of at most
//!   [`MAX_REQUEST_HEAD_BYTES`]; past it, 431 and close;
//! - the whole exchange (request in, response out) must finish within
//!   [`METRICS_DEADLINE_MS`] of the accept, or the connection is closed
//!   (`timeout`): a client sending one byte a second holds a slot for
//!   3 s, not forever;
//! - one request per connection: the response says `Connection: close`
//!   and the server closes once it is sent (bytes pipelined after the
//!   first request are never read; closing with them unread makes the
//!   kernel send RST instead of FIN, which such a client sees as a reset).
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
pub use super::tokens::MAX_METRICS_CONNECTIONS;
use super::tokens::{metrics_conn_index, metrics_conn_token, METRICS_LISTENER};
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

/// One metrics connection.
struct MetricsConn {
    stream: TcpStream,
    /// The request head so far (at most `MAX_REQUEST_HEAD_BYTES`).
    received: Vec<u8>,
    /// The response, once the request is complete; `sent` of it written.
    response: Option<Vec<u8>>,
    sent: usize,
    deadline_ms: u64,
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
    listener: TcpListener,
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
            listener,
            conns: Slab::with_capacity(MAX_METRICS_CONNECTIONS),
            counters: HttpCounters::default(),
            shared,
            paused_until_ms: NEVER,
            accept_warnings: WarnLimiter::default(),
        })
    }

    /// The nearest connection deadline, or the end of an accept pause.
    pub fn next_deadline(&self) -> Option<u64> {
        let resume = (self.paused_until_ms != NEVER).then_some(self.paused_until_ms);
        self.conns
            .iter()
            .map(|(_, c)| c.deadline_ms)
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
        let metrics_fds = self.conns.len() as u64 + 1; // + the listener
        let Some(conn) = self.conns.get_mut(index) else {
            return; // closed earlier in this batch
        };
        let progress = conn.advance(health, &mut self.counters, |counters| {
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

    /// Close connections past their deadline (they were too slow), and
    /// resume accepting after an out-of-descriptors pause.
    pub fn expire(&mut self, now_ms: u64, registry: &Registry, out_of_files: OutOfFiles<'_>) {
        if self.paused_until_ms <= now_ms {
            // No edge announces connections that queued while we rested.
            self.paused_until_ms = NEVER;
            self.accept_all(now_ms, registry, out_of_files);
        }
        if self.conns.is_empty() {
            return;
        }
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| now_ms >= c.deadline_ms)
            .map(|(index, _)| index)
            .collect();
        for index in late {
            debug!("metrics connection {index}: not done within {METRICS_DEADLINE_MS} ms; closed");
            self.counters.refused[HttpRefusal::Timeout.index()] += 1;
            self.close(index, registry);
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
            match try_accept(|| self.listener.accept()) {
                AcceptOutcome::Accepted((mut stream, _)) => {
                    if self.conns.len() >= MAX_METRICS_CONNECTIONS {
                        self.counters.refused[HttpRefusal::Busy.index()] += 1;
                        continue; // dropping `stream` closes it
                    }
                    let entry = self.conns.vacant_entry();
                    let token = metrics_conn_token(entry.key());
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) = registry.register(&mut stream, token, interest) {
                        debug!("register metrics connection: {e}");
                        continue;
                    }
                    entry.insert(MetricsConn {
                        stream,
                        received: Vec::new(),
                        response: None,
                        sent: 0,
                        deadline_ms: due_after(now_ms, METRICS_DEADLINE_MS),
                    });
                }
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

    /// Release the spare descriptor, accept and close what waits (a clean
    /// close, not a hang), take the spare back. Returns how many were shed.
    fn shed_waiting(&mut self, spare_fd: &mut Option<File>) -> u64 {
        let mut shed = 0;
        if spare_fd.take().is_some() {
            for _ in 0..ACCEPT_BUDGET {
                match try_accept(|| self.listener.accept()) {
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

    fn rest(&mut self, now_ms: u64, why: &str, shed: u64) {
        if let Some(suppressed) = self.accept_warnings.allow(now_ms, EMFILE_WARN_INTERVAL_MS) {
            warn!(
                "metrics accept: {why}; shed {shed} waiting connections, pausing accepts for \
                 {ACCEPT_PAUSE_MS} ms ({suppressed} similar warnings suppressed)"
            );
        }
        self.paused_until_ms = due_after(now_ms, ACCEPT_PAUSE_MS);
    }

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
    /// then write the response; `answer` builds a scrape's figures.
    fn advance(
        &mut self,
        health: Health,
        counters: &mut HttpCounters,
        answer: impl FnOnce(&HttpCounters) -> Exposition,
    ) -> Progress {
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
        self.write_response()
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
        // FIN after the response: the client reads to the end of the stream.
        let _ = self.stream.shutdown(Shutdown::Write);
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
        let handled = |e: &MetricsEndpoint| {
            e.conns.len() as u64 + e.counters.refused[HttpRefusal::Busy.index()]
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
}
