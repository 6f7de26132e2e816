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

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mio::{Poll, Waker};

use crate::budget::{Marks, DEFAULT_MAX_MEMORY_BYTES};
use crate::connection::Limits;
use crate::fdlimit::{default_max_connections, nofile_limits};
use crate::protocol::Protocol;
use crate::reactor::{Listening, Reactor, ReactorSettings, READ_BUDGET_BYTES, WAKER};
use crate::sockets::{bind_tcp, bind_udp, bind_unix};
use crate::stats::{SharedStats, StatsSnapshot};
use crate::timers::millis;
use crate::worker_stats::{WorkerHandover, WorkerSlots};

/// `--max-buffered`'s default: 1 MiB of unsent output per connection.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 1024 * 1024;
/// `--max-line`'s default: 64 KiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;
/// `--backlog`'s default.
pub const DEFAULT_BACKLOG: u32 = 1024;
/// `--stall-timeout`'s default.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The metrics listener's backlog: scrapes and health checks are few.
pub const METRICS_BACKLOG: u32 = 64;
/// `--shutdown-grace`'s default.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// `--drain-timeout`'s default: a minute for held connections to finish
/// after SIGQUIT (an upgrade's old workers).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// How to run a server. `Config::default()` listens on `127.0.0.1:8888`.
#[derive(Debug, Clone)]
pub struct Config {
    /// TCP addresses to listen on (port 0 picks a free port).
    pub listen: Vec<SocketAddr>,
    /// UDP addresses to serve datagrams on.
    pub udp: Vec<SocketAddr>,
    /// A Unix stream socket path to listen on.
    pub unix: Option<PathBuf>,
    /// Listen backlog (the kernel caps it at `somaxconn`).
    pub backlog: u32,
    /// Unsent bytes per connection before the server stops reading from it.
    pub max_buffered: usize,
    /// Longest message (a line before its `\n`, a JSON value) a protocol
    /// accepts, whole or partial; past it the connection closes.
    pub max_line: usize,
    /// Bytes held for all connections together (buffers by capacity)
    /// before reads pause and, at the budget, the worst holders are
    /// evicted; 0 = no budget (`src/budget.rs`).
    pub max_memory: usize,
    /// UDP reply bytes per second per source network (IPv4 /24, IPv6 /56;
    /// loopback exempt) before replies are dropped; 0 = no limit.
    pub udp_reply_budget: usize,
    /// Connections served at once; `None` derives it from the open-file limit.
    pub max_connections: Option<usize>,
    /// Close connections with no traffic for this long.
    pub idle_timeout: Option<Duration>,
    /// Close connections whose pending output has not moved for this long.
    pub stall_timeout: Option<Duration>,
    /// Log a stats line this often.
    pub stats_interval: Option<Duration>,
    /// After a stop request, flush pending output for at most this long.
    pub shutdown_grace: Duration,
    /// After SIGQUIT (a drain: stop accepting, serve the connections held
    /// until they close), shut down after at most this long.
    pub drain_timeout: Duration,
    /// `--metrics`: serve `/metrics` and `/healthz` over HTTP on this TCP
    /// address, on the same loop (`reactor/metrics_listener.rs`).
    pub metrics: Option<SocketAddr>,
    /// Shut down on SIGINT/SIGTERM (the binary sets this; embedders usually
    /// keep their own signal handling and call [`ServerHandle::stop`]).
    pub handle_signals: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8888))],
            udp: Vec::new(),
            unix: None,
            backlog: DEFAULT_BACKLOG,
            max_buffered: DEFAULT_MAX_BUFFERED_BYTES,
            max_line: DEFAULT_MAX_LINE_BYTES,
            max_memory: DEFAULT_MAX_MEMORY_BYTES,
            udp_reply_budget: 0,
            max_connections: None,
            idle_timeout: None,
            stall_timeout: Some(DEFAULT_STALL_TIMEOUT),
            stats_interval: None,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            metrics: None,
            handle_signals: false,
        }
    }
}

/// A socket the server is serving, as bound (real ports for port 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundSocket {
    /// A TCP listener.
    Tcp(SocketAddr),
    /// A UDP socket.
    Udp(SocketAddr),
    /// A Unix stream listener.
    Unix(PathBuf),
}

/// `tcp 127.0.0.1:8888`, `udp [::1]:9000`, `unix /tmp/echo.sock`.
impl fmt::Display for BoundSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoundSocket::Tcp(addr) => write!(f, "tcp {addr}"),
            BoundSocket::Udp(addr) => write!(f, "udp {addr}"),
            BoundSocket::Unix(path) => write!(f, "unix {}", path.display()),
        }
    }
}

/// Removes the Unix socket file this server created, when the server goes away.
struct UnixPathGuard(PathBuf);

impl Drop for UnixPathGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A bound server, ready to [`run`](Server::run) on the current thread.
pub struct Server<P: Protocol> {
    reactor: Reactor<P>,
    bound: Vec<BoundSocket>,
    max_connections: usize,
    handle: ServerHandle,
    /// Where `/metrics` is served, if anywhere.
    metrics_addr: Option<SocketAddr>,
    /// Removes the Unix socket file when the server goes away.
    unix_guard: Option<UnixPathGuard>,
}

impl<P: Protocol> Server<P> {
    /// Bind every socket in `config` and build the reactor.
    /// Errors name the step and address (`bind 127.0.0.1:8888: ...`).
    pub fn bind(config: &Config, protocol: P) -> io::Result<Self> {
        let mut sockets = Vec::new();
        let mut bound = Vec::new();
        for &addr in &config.listen {
            let listener = bind_tcp(addr, config.backlog)?;
            bound.push(BoundSocket::Tcp(listener.local_addr()?));
            sockets.push(Listening::Tcp(listener));
        }
        for &addr in &config.udp {
            let socket = bind_udp(addr)?;
            bound.push(BoundSocket::Udp(socket.local_addr()?));
            sockets.push(Listening::Udp(socket));
        }
        let mut unix_path = None;
        if let Some(path) = &config.unix {
            let listener = bind_unix(path, config.backlog)?;
            unix_path = Some(path.clone());
            bound.push(BoundSocket::Unix(path.clone()));
            sockets.push(Listening::Unix(listener));
        }
        let mut server = Self::adopt(config, protocol, bound.into_iter().zip(sockets).collect())?;
        if let Some(path) = unix_path {
            server.reactor.own_unix_file(path.clone());
            server.unix_guard = Some(UnixPathGuard(path));
        }
        Ok(server)
    }

    /// Serve sockets bound elsewhere — handed over by systemd or by the
    /// supervisor (`inherit.rs`) — instead of binding `config`'s addresses.
    /// The addresses in `config` are ignored; a Unix socket's file is left
    /// to whoever bound it.
    pub fn adopt(
        config: &Config,
        protocol: P,
        sockets: Vec<(BoundSocket, Listening)>,
    ) -> io::Result<Self> {
        let poll =
            Poll::new().map_err(|e| io::Error::new(e.kind(), format!("epoll_create: {e}")))?;
        let (bound, sockets): (Vec<BoundSocket>, Vec<Listening>) = sockets.into_iter().unzip();
        let max_connections = match config.max_connections {
            Some(n) => n.max(1),
            None => default_max_connections(nofile_limits()?.0, sockets.len()),
        };
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
            idle_timeout_ms: config.idle_timeout.map(millis),
            stall_timeout_ms: config.stall_timeout.map(millis),
            high_water_bytes: Marks::high_water(Marks::for_budget(config.max_memory)),
        };
        let settings = ReactorSettings {
            max_connections,
            stats_interval_ms: config.stats_interval.map(millis),
            shutdown_grace_ms: millis(config.shutdown_grace),
            drain_timeout_ms: millis(config.drain_timeout),
            handle_signals: config.handle_signals,
            max_memory: config.max_memory,
            udp_reply_budget: config.udp_reply_budget,
        };
        let reactor = Reactor::new(
            poll,
            sockets,
            // A complete message past --max-line ends the connection like a
            // partial one: the same outcome however TCP cut the input.
            protocol.with_max_line(config.max_line),
            limits,
            settings,
            handle.stop_requested.clone(),
            handle.stats.clone(),
        )?;
        let mut server = Server {
            reactor,
            bound,
            max_connections,
            handle,
            metrics_addr: None,
            unix_guard: None,
        };
        if let Some(addr) = config.metrics {
            let listener = bind_tcp(addr, METRICS_BACKLOG)
                .map_err(|e| io::Error::new(e.kind(), format!("--metrics: {e}")))?;
            server.serve_metrics(listener, None)?;
        }
        Ok(server)
    }

    /// Serve `/metrics` and `/healthz` on `listener` (bound elsewhere: a
    /// worker is handed its supervisor's), summing the workers' `shared`
    /// slots in a scrape when given.
    pub fn serve_metrics(
        &mut self,
        listener: mio::net::TcpListener,
        shared: Option<Arc<WorkerSlots>>,
    ) -> io::Result<()> {
        self.metrics_addr = Some(listener.local_addr()?);
        self.reactor.serve_metrics(listener, shared)
    }

    /// Serve as one of a supervisor's workers: publish into the slot it
    /// handed over, and with `--metrics` serve its listener, a scrape
    /// summing every worker's slot (`worker_stats.rs`).
    pub fn serve_as_worker(&mut self, handover: WorkerHandover) -> io::Result<()> {
        let slots = Arc::clone(handover.slot.slots());
        self.reactor.publish_to_slot(handover.slot);
        if let Some(listener) = handover.metrics {
            self.serve_metrics(mio::net::TcpListener::from_std(listener), Some(slots))?;
        }
        Ok(())
    }

    /// The address `/metrics` is served on (the real port when 0 was asked).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Every socket served, in order: TCP listeners, UDP sockets, the Unix listener.
    pub fn bound(&self) -> &[BoundSocket] {
        &self.bound
    }

    /// The TCP addresses actually bound, in `config.listen` order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs_where(|b| match b {
            BoundSocket::Tcp(addr) => Some(*addr),
            _ => None,
        })
    }

    /// The UDP addresses actually bound, in `config.udp` order.
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.addrs_where(|b| match b {
            BoundSocket::Udp(addr) => Some(*addr),
            _ => None,
        })
    }

    fn addrs_where(&self, pick: impl Fn(&BoundSocket) -> Option<SocketAddr>) -> Vec<SocketAddr> {
        self.bound.iter().filter_map(pick).collect()
    }

    /// The Unix socket path, if any.
    pub fn unix_path(&self) -> Option<&Path> {
        self.unix_guard.as_ref().map(|g| g.0.as_path())
    }

    /// The effective connection cap (given, or derived from the fd limit).
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// A handle to stop the server or read its stats from another thread.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Serve on the current thread until stopped ([`ServerHandle::stop`], or
    /// a signal when `handle_signals` is set), then shut down gracefully:
    /// stop accepting, flush pending output for up to `shutdown_grace`,
    /// close everything, remove the Unix socket file. Returns the final stats.
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
    /// Ask the server to shut down gracefully: sets a flag, then wakes
    /// `epoll_wait` through the `mio::Waker` (an eventfd), so a sleeping
    /// loop notices at once.
    pub fn stop(&self) {
        self.stop_requested.store(true, Ordering::Release);
        if let Err(e) = self.waker.wake() {
            log::warn!("wake the reactor to stop it: {e}");
        }
    }

    /// The server's numbers as of the loop's last copy (at most
    /// `STATS_PUBLISH_INTERVAL_MS` of its clock before its last turn).
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }
}
