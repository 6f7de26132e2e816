//! Accepting on the listening sockets (with a per-turn cap,
//! `--max-connections` and out-of-descriptors handling) and registering
//! new connections.
//!
//! Under EMFILE/ENFILE the waiting connection stays in the kernel's queue,
//! so the listener stays readable and retrying at once would spin. Instead
//! the reactor releases a spare descriptor to accept-and-close what waits
//! (those clients see a close, not a hang: a reset if they had already
//! sent bytes, since unread input turns a close into one), logs a rate-limited
//! warning, and rests the listener on a reactor timer.
//!
//! These are methods of `Clients` (`clients.rs`), in their own file;
//! the sockets themselves are described in `endpoints.rs`.

use std::fs::File;

use log::{debug, trace, warn};
use mio::{Interest, Registry, Token};

use super::clients::Clients;
use super::endpoints::Listening;
use super::tokens::{endpoint_token, FIRST_RESERVED};
use crate::connection::Connection;
use crate::nonblocking::{try_accept, AcceptOutcome};
use crate::protocol::{Protocol, Reply};
use crate::ratelimit::CLIENT_WARN_INTERVAL_MS;
use crate::stream::Stream;
use crate::timers::{due_after, NEVER};

/// Connections one listener may accept per loop turn.
pub const ACCEPT_BUDGET: usize = 256;
/// EPOLLPRI: urgent data arrived (Linux; elsewhere nothing extra).
#[cfg(any(target_os = "linux", target_os = "android"))]
const URGENT: Interest = Interest::PRIORITY;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const URGENT: Interest = Interest::READABLE;
/// After running out of descriptors, a listener rests this long.
pub const ACCEPT_PAUSE_MS: u64 = 100;
/// At most one out-of-descriptors warning per this many milliseconds.
pub const EMFILE_WARN_INTERVAL_MS: u64 = 10_000;

impl<P: Protocol> Clients<P> {
    /// A listening socket is ready (its event in step 3, or its turn on the
    /// ready queue in step 4, or the end of its rest in step 5): a UDP
    /// socket receives and answers datagrams, a TCP or Unix listener
    /// accepts. The one entry point for all three, so each caller need not
    /// know the socket's kind.
    pub(super) fn on_endpoint_ready(&mut self, index: usize, registry: &Registry) {
        let Some(endpoint) = self.endpoints.get(index) else {
            return; // closed by shutdown earlier in this batch
        };
        if let Listening::Udp(_) = endpoint.socket {
            self.serve_datagrams(index);
        } else {
            self.accept_burst(index, registry);
        }
    }

    /// Put listening socket `index` on the ready queue, at most once: it
    /// stopped on its per-turn budget (or at the connection cap) with
    /// clients or datagrams possibly still waiting, and edge-triggered epoll
    /// will not announce them again. Step 4 of the next turn comes back.
    pub(super) fn queue_endpoint(&mut self, index: usize) {
        let endpoint = &mut self.endpoints[index];
        if !endpoint.queued {
            endpoint.queued = true;
            self.ready.push_back(endpoint_token(index));
        }
    }

    /// Accept until the queue is empty or this turn's budget is spent.
    pub(super) fn accept_burst(&mut self, index: usize, registry: &Registry) {
        if !self.accepting || self.endpoints[index].paused_until_ms != NEVER {
            return; // resting after EMFILE: the timer brings us back
        }
        for _ in 0..ACCEPT_BUDGET {
            if self.conns.len() >= self.max_connections && self.open_count() < self.max_connections
            {
                // Room is coming, but not yet here: closed connections
                // whose sockets wait to be reaped (step 6 closes a budget
                // of them a turn) still hold a descriptor each, so
                // admitting in their place would pass the cap in
                // descriptors — after an eviction of a thousand, up to a
                // thousand more, and EMFILE. The newcomers wait in the
                // kernel's queue; the ready queue brings us back next turn
                // (the loop does not sleep while sockets wait to be reaped).
                self.queue_endpoint(index);
                return;
            }
            match self.try_accept(index) {
                AcceptOutcome::Accepted(stream) => {
                    // Connections closed but not yet reaped no longer count
                    // against the cap (the check above keeps their
                    // descriptors within it).
                    if self.open_count() >= self.max_connections {
                        // Accept-and-close tells the client at once, instead of
                        // leaving it to time out in the kernel's queue.
                        self.ws.ctx.counters.rejected += 1;
                        let now = self.ws.ctx.now_ms;
                        if let Some(held_back) =
                            self.reject_warnings.allow(now, CLIENT_WARN_INTERVAL_MS)
                        {
                            warn!(
                                "at --max-connections ({}): a new connection was closed at once \
                                 ({held_back} more since the last such warning; counted as rejected)",
                                self.max_connections
                            );
                        }
                        drop(stream);
                    } else {
                        self.open(stream, registry);
                    }
                }
                AcceptOutcome::WouldBlock => return trace!("accept would block"),
                AcceptOutcome::OutOfFiles => return self.on_out_of_files(index),
                AcceptOutcome::OutOfMemory => return self.on_out_of_memory(index),
                // e.g. ECONNABORTED: that client gave up while queued. The
                // listener is fine; go on with the next one.
                AcceptOutcome::Failed(kind) => debug!("accept failed: {kind:?}"),
            }
        }
        // Budget spent with connections possibly still queued: the edge that
        // woke us will not fire again for them.
        self.queue_endpoint(index);
    }

    /// One `accept` on listening socket `index`, as a named outcome
    /// (`nonblocking::try_accept`), the accepted socket wrapped as the
    /// [`Stream`] a connection holds whatever its kind. A UDP socket has
    /// nothing to accept: `WouldBlock`.
    pub(super) fn try_accept(&self, index: usize) -> AcceptOutcome<Stream> {
        match &self.endpoints[index].socket {
            Listening::Tcp(l) => try_accept(|| l.accept().map(|(s, _)| Stream::Tcp(s))),
            Listening::Unix(l) => try_accept(|| l.accept().map(|(s, _)| Stream::Unix(s))),
            Listening::Udp(_) => AcceptOutcome::WouldBlock,
        }
    }

    /// EMFILE/ENFILE: keep serving, turn the waiting clients away, rest.
    pub(super) fn on_out_of_files(&mut self, index: usize) {
        let now = self.ws.ctx.now_ms;
        let shed = self.shed_waiting_connections(index);
        if let Some(suppressed) = self.accept_warnings.allow(now, EMFILE_WARN_INTERVAL_MS) {
            warn!(
                "accept: out of file descriptors with {} connections open; shed {shed} waiting \
                 connections, pausing accepts for {ACCEPT_PAUSE_MS} ms ({suppressed} similar warnings suppressed)",
                self.conns.len()
            );
        }
        self.rest_listener(index);
    }

    /// ENOBUFS/ENOMEM: the kernel cannot allocate a socket now. Nothing to
    /// shed (accepting is what fails); keep serving, warn, rest.
    pub(super) fn on_out_of_memory(&mut self, index: usize) {
        let now = self.ws.ctx.now_ms;
        if let Some(suppressed) = self.accept_warnings.allow(now, EMFILE_WARN_INTERVAL_MS) {
            warn!(
                "accept: the kernel is out of socket memory (ENOBUFS/ENOMEM) with {} connections \
                 open; pausing accepts for {ACCEPT_PAUSE_MS} ms ({suppressed} similar warnings suppressed)",
                self.conns.len()
            );
        }
        self.rest_listener(index);
    }

    /// Retrying now would fail again (and spin: the waiting connection keeps
    /// the listener readable). A reactor timer resumes it.
    fn rest_listener(&mut self, index: usize) {
        let now = self.ws.ctx.now_ms;
        let until = due_after(now, ACCEPT_PAUSE_MS);
        self.endpoints[index].paused_until_ms = until;
        self.endpoints_resume_ms = self.endpoints_resume_ms.min(until);
    }

    /// Close the spare descriptor so `accept` can succeed, then accept and
    /// close the waiting connections (they see a close, not a hang; a reset if they had already sent),
    /// and take the spare back. Returns how many were shed.
    pub(super) fn shed_waiting_connections(&mut self, index: usize) -> u64 {
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
    pub(super) fn open(&mut self, mut stream: Stream, registry: &Registry) {
        if let Stream::Tcp(tcp) = &stream {
            // Replies are written whole as soon as they are ready; Nagle's
            // algorithm would hold small ones back waiting for an ACK.
            if let Err(e) = tcp.set_nodelay(true) {
                debug!("set TCP_NODELAY: {e}");
            }
            // Urgent (MSG_OOB) bytes stay in the stream, so the echo is
            // every byte, in order; a read still stops at their mark, so
            // we also ask for EPOLLPRI, which tells us to drain fully.
            if let Err(e) = socket2::SockRef::from(tcp).set_out_of_band_inline(true) {
                debug!("set SO_OOBINLINE: {e}");
            }
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        debug_assert!(key < FIRST_RESERVED);
        // Both interests, once: see the module docs.
        let interest = Interest::READABLE | Interest::WRITABLE | URGENT;
        if let Err(e) = registry.register(&mut stream, Token(key), interest) {
            let now = self.ws.ctx.now_ms;
            if let Some(held_back) = self.accept_warnings.allow(now, EMFILE_WARN_INTERVAL_MS) {
                warn!("register accepted socket: {e} ({held_back} similar warnings suppressed)");
            }
            return; // dropping `stream` closes it
        }
        self.ws.ctx.counters.accepted += 1;
        trace!("conn {key} accepted");
        self.next_serial = self.next_serial.wrapping_add(1);
        self.ws.reply.clear();
        let mut reply = Reply::new(&mut self.ws.reply);
        let session = self.protocol.on_open(&mut reply);
        let requests = reply.requests();
        let now = self.ws.ctx.now_ms;
        let unix = matches!(stream, Stream::Unix(_));
        let conn = entry.insert(Connection::new(stream, session, self.next_serial, now));
        if unix {
            conn.drain_fully(); // reads stop short at ancillary data
        }
        let next = conn.on_open_reply(requests, &mut self.ws);
        self.after(key, next);
    }
}
