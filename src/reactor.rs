//! The event loop: one `mio::Poll`, the listeners, and every connection.
//!
//! Each turn of [`Reactor::run_once`] is the same six steps (numbered the
//! same way in `docs/ARCHITECTURE.md`):
//!
//! 1. choose the poll timeout: zero if the ready queue holds work;
//! 2. `epoll_wait` for events (`EINTR` counts as "no events");
//! 3. dispatch each event: accept on a listener, drive a connection;
//! 4. serve the ready queue: connections (and listeners) that stopped on
//!    their per-turn budget with work possibly left, which no new edge
//!    would announce;
//! 5. reap: free the slab slots of connections closed this turn — only now,
//!    so a key named by a later event of the same batch is never reused for
//!    a new connection mid-batch;
//! 6. publish the counters for other threads.
//!
//! Tokens: a client's token is its slab key. Other sources take reserved
//! tokens counted down from `usize::MAX` ([`WAKER`], then listeners by
//! index), far above any key a slab can reach.
//!
//! Interest is registered once per connection, `READABLE | WRITABLE`,
//! edge-triggered. With edges, a writable interest costs nothing while the
//! send buffer has room (no edge fires), and it saves an `epoll_ctl` to arm
//! and disarm `EPOLLOUT` around every partial write.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::{debug, warn};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;

use crate::connection::{Connection, Limits, Next, Workspace};
use crate::nonblocking::{try_accept, AcceptOutcome};
use crate::protocol::{Protocol, Reply};
use crate::stats::{CloseReason, SharedStats, StatsSnapshot};

/// The token of the `mio::Waker` that another thread uses to stop the loop.
pub const WAKER: Token = Token(usize::MAX);
/// Listener `i` has token `FIRST_LISTENER - i`.
const FIRST_LISTENER: usize = usize::MAX - 1;
/// At most this many listeners (their tokens must stay reserved).
pub const MAX_LISTENERS: usize = 256;

/// Every read lands here first: one buffer for the whole server.
pub const SCRATCH_BYTES: usize = 64 * 1024;
/// Bytes one connection may read per loop turn before the others get a go.
pub const READ_BUDGET_BYTES: usize = 256 * 1024;
/// Connections one listener may accept per loop turn.
pub const ACCEPT_BUDGET: usize = 256;
/// epoll events fetched per `epoll_wait`.
pub const EVENTS_PER_POLL: usize = 1024;

fn listener_token(index: usize) -> Token {
    Token(FIRST_LISTENER - index)
}

fn listener_index(token: Token) -> Option<usize> {
    let index = FIRST_LISTENER.checked_sub(token.0)?;
    (index < MAX_LISTENERS).then_some(index)
}

/// A listening socket and whether it waits on the ready queue.
#[derive(Debug)]
struct Listener {
    socket: TcpListener,
    queued: bool,
}

/// What events are dispatched to: listeners, connections, the ready queue.
/// Kept apart from `Poll` and `Events` so the loop can iterate events while
/// mutating everything else.
struct Clients<P: Protocol> {
    protocol: P,
    listeners: Vec<Listener>,
    conns: Slab<Connection<TcpStream, P::Session>>,
    /// Work left over from a budget: connection keys and listener tokens.
    ready: VecDeque<Token>,
    /// Keys closed this turn, freed in step 5.
    closed: Vec<usize>,
    ws: Workspace,
}

/// The single-threaded event loop serving one [`Protocol`].
pub struct Reactor<P: Protocol> {
    poll: Poll,
    events: Events,
    clients: Clients<P>,
    stop_requested: Arc<AtomicBool>,
    stats: Arc<SharedStats>,
}

impl<P: Protocol> Reactor<P> {
    /// A reactor over already bound listeners. `stop_requested` is checked
    /// whenever the [`WAKER`] fires.
    pub fn new(
        poll: Poll,
        listeners: Vec<TcpListener>,
        protocol: P,
        limits: Limits,
        stop_requested: Arc<AtomicBool>,
        stats: Arc<SharedStats>,
    ) -> io::Result<Self> {
        if listeners.len() > MAX_LISTENERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("at most {MAX_LISTENERS} listeners"),
            ));
        }
        let mut registered = Vec::with_capacity(listeners.len());
        for (index, mut socket) in listeners.into_iter().enumerate() {
            poll.registry()
                .register(&mut socket, listener_token(index), Interest::READABLE)?;
            registered.push(Listener {
                socket,
                queued: false,
            });
        }
        Ok(Reactor {
            poll,
            events: Events::with_capacity(EVENTS_PER_POLL),
            clients: Clients {
                protocol,
                listeners: registered,
                conns: Slab::new(),
                ready: VecDeque::new(),
                closed: Vec::new(),
                ws: Workspace::new(limits, SCRATCH_BYTES),
            },
            stop_requested,
            stats,
        })
    }

    /// Run until a stop is requested, then close every connection.
    pub fn run(&mut self) -> io::Result<StatsSnapshot> {
        while !self.stop_requested.load(Ordering::Acquire) {
            self.run_once()?;
        }
        self.clients.close_all(CloseReason::Shutdown);
        self.clients.reap_closed();
        self.publish_stats();
        Ok(self.stats.snapshot())
    }

    /// One turn of the loop (see the module docs for the steps).
    pub fn run_once(&mut self) -> io::Result<()> {
        let timeout = self.clients.next_timeout(); // 1. zero if work is queued
        self.poll_events(timeout)?; // 2. epoll_wait; EINTR counts as "no events"
        self.dispatch_events(); // 3. accept / read / write per event
        self.clients.serve_ready_queue(self.poll.registry()); // 4. budget leftovers
        self.clients.reap_closed(); // 5. free slab slots only now
        self.publish_stats(); // 6. counters out to other threads
        Ok(())
    }

    fn poll_events(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.clients.ws.counters.poll_calls += 1;
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

    fn dispatch_events(&mut self) {
        let registry = self.poll.registry();
        for event in self.events.iter() {
            match event.token() {
                // The flag itself is read by `run`; the wake only ended the wait.
                WAKER => {}
                token => match listener_index(token) {
                    Some(index) => self.clients.accept_burst(index, registry),
                    None => self.clients.on_connection_event(token.0, event),
                },
            }
        }
    }

    fn publish_stats(&self) {
        let ws = &self.clients.ws;
        self.stats
            .publish(&ws.counters, &ws.gauge, self.clients.conns.len());
    }
}

impl<P: Protocol> Clients<P> {
    fn next_timeout(&self) -> Option<Duration> {
        if self.ready.is_empty() {
            None
        } else {
            Some(Duration::ZERO)
        }
    }

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
        self.drive(key);
    }

    /// Let a connection make progress, then act on what it says.
    fn drive(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        match conn.drive(&self.protocol, &mut self.ws) {
            Next::Wait => {}
            Next::Requeue => {
                if !conn.queued {
                    conn.queued = true;
                    self.ready.push_back(Token(key));
                }
            }
            Next::Close(reason) => self.close(key, reason),
        }
    }

    /// Accept until the queue is empty or this turn's budget is spent.
    fn accept_burst(&mut self, index: usize, registry: &Registry) {
        for _ in 0..ACCEPT_BUDGET {
            match try_accept(|| self.listeners[index].socket.accept()) {
                AcceptOutcome::Accepted((stream, _peer)) => self.open(stream, registry),
                AcceptOutcome::WouldBlock => return,
                AcceptOutcome::OutOfFiles => {
                    warn!("accept: out of file descriptors; waiting connections stay queued");
                    return;
                }
                // e.g. ECONNABORTED: that client gave up while queued. The
                // listener is fine; go on with the next one.
                AcceptOutcome::Failed(kind) => debug!("accept failed: {kind:?}"),
            }
        }
        // Budget spent with connections possibly still queued: the edge that
        // woke us will not fire again for them.
        let listener = &mut self.listeners[index];
        if !listener.queued {
            listener.queued = true;
            self.ready.push_back(listener_token(index));
        }
    }

    /// Register a new connection and let the protocol greet it.
    fn open(&mut self, mut stream: TcpStream, registry: &Registry) {
        // Replies are written whole as soon as they are ready; Nagle's
        // algorithm would hold small ones back waiting for an ACK.
        if let Err(e) = stream.set_nodelay(true) {
            debug!("set TCP_NODELAY: {e}");
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        debug_assert!(key < FIRST_LISTENER - MAX_LISTENERS);
        // Both interests, once: see the module docs.
        if let Err(e) = registry.register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("register accepted socket: {e}");
            return; // dropping `stream` closes it
        }
        self.ws.counters.accepted += 1;
        self.ws.reply.clear();
        let mut reply = Reply::new(&mut self.ws.reply);
        let session = self.protocol.on_open(&mut reply);
        let wants_close = reply.wants_close();
        let conn = entry.insert(Connection::new(stream, session));
        match conn.on_open_reply(wants_close, &mut self.ws) {
            Next::Close(reason) => self.close(key, reason),
            Next::Wait | Next::Requeue => {}
        }
    }

    fn close(&mut self, key: usize, reason: CloseReason) {
        let conn = &mut self.conns[key];
        if conn.closed {
            return;
        }
        conn.closed = true;
        self.ws.counters.count_close(reason);
        self.closed.push(key);
        debug!("connection {key} closed: {}", reason.name());
    }

    fn close_all(&mut self, reason: CloseReason) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, reason);
        }
    }

    fn serve_ready_queue(&mut self, registry: &Registry) {
        // Only what is queued now: whatever re-queues itself waits for the
        // next turn, after a zero-timeout poll lets fresh events in.
        for _ in 0..self.ready.len() {
            let Some(token) = self.ready.pop_front() else {
                break;
            };
            if let Some(index) = listener_index(token) {
                self.listeners[index].queued = false;
                self.accept_burst(index, registry);
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

    fn reap_closed(&mut self) {
        for key in self.closed.drain(..) {
            let conn = self.conns.remove(key);
            // Dropping the socket closes the fd, which also removes it from
            // the epoll set: no epoll_ctl(DEL) needed.
            drop(conn.release(&mut self.ws.gauge));
        }
        // A queued key that was just freed must not be driven later.
        if !self.ready.is_empty() {
            let conns = &self.conns;
            self.ready
                .retain(|t| listener_index(*t).is_some() || conns.contains(t.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_tokens_never_meet_slab_keys_or_each_other() {
        assert_eq!(listener_index(listener_token(0)), Some(0));
        assert_eq!(
            listener_index(listener_token(MAX_LISTENERS - 1)),
            Some(MAX_LISTENERS - 1)
        );
        assert_eq!(listener_index(WAKER), None);
        assert_eq!(listener_index(Token(0)), None);
        assert_eq!(listener_index(Token(1_000_000)), None);
    }
}
