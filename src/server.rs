//! The library's front door: configure, bind, run, stop, and watch a server.
//!
//! ```no_run
//! use echo_reactor::{Config, Server};
//! use echo_reactor::protocol::Echo;
//!
//! let config = Config { listen: vec!["127.0.0.1:0".parse().unwrap()], ..Config::default() };
//! let server = Server::bind(&config, Echo)?;
//! println!("listening on {}", server.local_addrs()[0]);
//! let handle = server.handle(); // Send + Clone: stop it or read stats from any thread
//! let final_stats = server.run()?; // runs on this thread until handle.stop()
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Binding happens in [`Server::bind`], so address errors surface before
//! anything runs, and port 0 can be resolved with [`Server::local_addrs`]
//! before a client connects.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mio::{Poll, Waker};

use crate::connection::Limits;
use crate::protocol::Protocol;
use crate::reactor::{Reactor, READ_BUDGET_BYTES, WAKER};
use crate::sockets::bind_tcp;
use crate::stats::{SharedStats, StatsSnapshot};

/// `--max-buffered`'s default: 1 MiB of unsent output per connection.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 1024 * 1024;
/// `--max-line`'s default: 64 KiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;
/// `--backlog`'s default.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// How to run a server. `Config::default()` listens on `127.0.0.1:8888`.
#[derive(Debug, Clone)]
pub struct Config {
    /// TCP addresses to listen on (port 0 picks a free port).
    pub listen: Vec<SocketAddr>,
    /// Listen backlog (the kernel caps it at `somaxconn`).
    pub backlog: u32,
    /// Unsent bytes per connection before the server stops reading from it.
    pub max_buffered: usize,
    /// Longest partial message a line protocol may buffer.
    pub max_line: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8888))],
            backlog: DEFAULT_BACKLOG,
            max_buffered: DEFAULT_MAX_BUFFERED_BYTES,
            max_line: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

/// A bound server, ready to [`run`](Server::run) on the current thread.
pub struct Server<P: Protocol> {
    reactor: Reactor<P>,
    local_addrs: Vec<SocketAddr>,
    handle: ServerHandle,
}

impl<P: Protocol> Server<P> {
    /// Bind every listener in `config` and build the reactor.
    /// Errors name the step and address (`bind 127.0.0.1:8888: ...`).
    pub fn bind(config: &Config, protocol: P) -> io::Result<Self> {
        let poll =
            Poll::new().map_err(|e| io::Error::new(e.kind(), format!("epoll_create: {e}")))?;
        let mut listeners = Vec::with_capacity(config.listen.len());
        let mut local_addrs = Vec::with_capacity(config.listen.len());
        for &addr in &config.listen {
            let listener = bind_tcp(addr, config.backlog)?;
            local_addrs.push(listener.local_addr()?);
            listeners.push(listener);
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let handle = ServerHandle {
            waker,
            stop_requested: Arc::new(AtomicBool::new(false)),
            stats: Arc::new(SharedStats::default()),
        };
        let limits = Limits {
            max_buffered: config.max_buffered.max(1),
            max_line: config.max_line,
            read_budget_bytes: READ_BUDGET_BYTES,
        };
        let reactor = Reactor::new(
            poll,
            listeners,
            protocol,
            limits,
            handle.stop_requested.clone(),
            handle.stats.clone(),
        )?;
        Ok(Server {
            reactor,
            local_addrs,
            handle,
        })
    }

    /// The addresses actually bound, in `config.listen` order (real ports for port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// A handle to stop the server or read its stats from another thread.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Serve on the current thread until [`ServerHandle::stop`]; returns the final stats.
    pub fn run(mut self) -> io::Result<StatsSnapshot> {
        self.reactor.run()
    }
}

/// Stops a running server and reads its live stats; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct ServerHandle {
    waker: Arc<Waker>,
    stop_requested: Arc<AtomicBool>,
    stats: Arc<SharedStats>,
}

impl ServerHandle {
    /// Ask the server to stop: sets a flag, then wakes `epoll_wait` through
    /// the `mio::Waker` (an eventfd), so a sleeping loop notices at once.
    pub fn stop(&self) {
        self.stop_requested.store(true, Ordering::Release);
        if let Err(e) = self.waker.wake() {
            log::warn!("wake the reactor to stop it: {e}");
        }
    }

    /// The server's numbers as of its last loop turn.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }
}
