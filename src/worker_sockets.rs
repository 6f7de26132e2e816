//! The listening sockets of a server with workers (`supervisor.rs`), held
//! by the supervisor: what it binds, what it hands each worker, and when it
//! lets go of them.
//!
//! Per TCP and UDP address there is one `SO_REUSEPORT` socket *per
//! worker*: the kernel spreads new connections (datagrams) over the group
//! by a hash of the client's address and port. A Unix socket is one, shared
//! by all (they take turns accepting from its one queue); so is every
//! socket handed over by socket activation, where the parent bound one
//! socket per address.
//!
//! The supervisor keeps a copy of each socket, so a worker's queue survives
//! the worker — and that copy decides what a client sees while nobody
//! accepts from it. The kernel sends a new connection to any open member of
//! the group, accepted from or not, so:
//! - a dead worker restarted at once keeps its sockets: connections queued
//!   there wait a moment and are served by the successor;
//! - a dead worker whose restart must wait (throttled, or it failed) has
//!   its sockets closed ([`WorkerSockets::close_own`]): the kernel takes
//!   them out of the group, and new connections go to the other workers;
//!   those already queued on them are reset, as when any listener closes
//!   (`epoll(7)` servers and nginx alike; Linux 5.14+ moves them to
//!   another member instead with `net.ipv4.tcp_migrate_req = 1`). A new
//!   socket joins the group when the worker is started again;
//! - once shutdown begins, every copy is closed ([`WorkerSockets::close_all`]):
//!   as each worker stops accepting and closes its own, the port refuses
//!   new connections, as a single-process server's does.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use crate::inherit::listening_fd;
use crate::reactor::Listening;
use crate::server::{BoundSocket, Config, METRICS_BACKLOG};
use crate::sockets::{
    bind_tcp, bind_tcp_group, bind_udp_group, bind_unix, join_tcp_group, join_udp_group,
};

/// The sockets of a server with workers: those each worker gets for
/// itself, and those they all share.
#[derive(Debug)]
pub struct WorkerSockets {
    /// What the `listening on` lines name, one per address.
    pub bound: Vec<BoundSocket>,
    /// The addresses each worker has a socket of its own on (TCP, then
    /// UDP), port 0 resolved: where a closed worker's sockets are reopened.
    groups: Vec<BoundSocket>,
    backlog: u32,
    /// `own[i]`: worker `i`'s own sockets, one per group, in order; `None`
    /// while they are closed (its restart waits, or shutdown began).
    own: Vec<Option<Vec<Listening>>>,
    /// Shared by every worker (the Unix socket; everything under socket
    /// activation, where the parent bound one socket per address).
    shared: Vec<Listening>,
    /// The Unix socket file this process created, removed at exit.
    unix_file: Option<PathBuf>,
    /// `--metrics`: the listener every worker shares.
    metrics: Option<std::net::TcpListener>,
}

impl WorkerSockets {
    /// Bind `config`'s addresses for `workers` workers. Each `SO_REUSEPORT`
    /// group is claimed first by a plain bind (`sockets.rs`): where another
    /// server listens, this fails with "address in use" rather than join
    /// its group.
    pub fn bind(config: &Config, workers: usize) -> io::Result<Self> {
        let mut own: Vec<Vec<Listening>> = (0..workers).map(|_| Vec::new()).collect();
        let mut groups = Vec::new();
        for &addr in &config.listen {
            let group = bind_tcp_group(addr, config.backlog, workers)?;
            groups.push(BoundSocket::Tcp(group[0].local_addr()?));
            for (worker, socket) in own.iter_mut().zip(group) {
                worker.push(Listening::Tcp(socket));
            }
        }
        for &addr in &config.udp {
            let group = bind_udp_group(addr, workers)?;
            groups.push(BoundSocket::Udp(group[0].local_addr()?));
            for (worker, socket) in own.iter_mut().zip(group) {
                worker.push(Listening::Udp(socket));
            }
        }
        let mut bound = groups.clone();
        let mut shared = Vec::new();
        let mut unix_file = None;
        if let Some(path) = &config.unix {
            shared.push(Listening::Unix(bind_unix(path, config.backlog)?));
            bound.push(BoundSocket::Unix(path.clone()));
            unix_file = Some(path.clone());
        }
        Ok(WorkerSockets {
            bound,
            groups,
            backlog: config.backlog,
            own: own.into_iter().map(Some).collect(),
            shared,
            unix_file,
            metrics: None,
        })
    }

    /// Sockets handed to us (socket activation), shared by every worker.
    /// Nothing is bound: whoever handed them over decided who shares them.
    pub fn inherited(sockets: Vec<(BoundSocket, Listening)>, workers: usize) -> Self {
        let (bound, shared) = sockets.into_iter().unzip();
        WorkerSockets {
            bound,
            groups: Vec::new(),
            backlog: 0,
            own: (0..workers).map(|_| Some(Vec::new())).collect(),
            shared,
            unix_file: None,
            metrics: None,
        }
    }

    /// Sockets a previous generation handed over (`upgrade.rs`): `own[i]`
    /// were its worker `i`'s, `shared` everyone's. Nothing is bound or
    /// probed: the old generation still serves on the same sockets (and
    /// owns the Unix socket file until we accept: [`Self::own_unix_file`]). With
    /// a different worker count, extra workers get sockets of their own
    /// joining each group when started; with fewer, the sockets of the
    /// workers that are gone go to those left (`regroup`), so no socket
    /// closes — a closing listener would reset the connections queued on it.
    pub fn handed_over(
        own: Vec<Vec<(BoundSocket, Listening)>>,
        shared: Vec<(BoundSocket, Listening)>,
        metrics: Option<std::net::TcpListener>,
        backlog: u32,
        workers: usize,
    ) -> Self {
        let mut groups: Vec<BoundSocket> = Vec::new();
        for (bound, _) in own.iter().flatten() {
            if !groups.contains(bound) {
                groups.push(bound.clone());
            }
        }
        let own = own
            .into_iter()
            .map(|sockets| sockets.into_iter().map(|(_, socket)| socket).collect())
            .collect();
        let (shared_bound, shared): (Vec<BoundSocket>, Vec<Listening>) = shared.into_iter().unzip();
        let mut bound = groups.clone();
        bound.extend(shared_bound);
        WorkerSockets {
            bound,
            groups,
            backlog,
            own: regroup(own, workers),
            shared,
            unix_file: None,
            metrics,
        }
    }

    /// Every socket, for a new generation (`upgrade.rs`): each worker's
    /// own (reopened first if closed, so every worker hands over a full
    /// set), the shared ones, and the metrics listener.
    pub fn handover_fds(&mut self) -> io::Result<HandoverFds> {
        for index in 0..self.own.len() {
            if self.own[index].is_none() {
                self.own[index] = Some(self.reopen_own()?);
            }
        }
        Ok(HandoverFds {
            own: self
                .own
                .iter()
                .map(|own| own.iter().flatten().map(listening_fd).collect())
                .collect(),
            shared: self.shared.iter().map(listening_fd).collect(),
            metrics: self.metrics.as_ref().map(AsRawFd::as_raw_fd),
            unix_file: self.unix_file.is_some(),
        })
    }

    /// A new generation took over: the Unix socket file is its to remove
    /// now, not ours.
    pub fn forget_unix_file(&mut self) {
        self.unix_file = None;
    }

    /// We took over from an old generation, which created the Unix socket
    /// file at `path`: it is ours to remove at exit now.
    pub fn own_unix_file(&mut self, path: PathBuf) {
        self.unix_file = Some(path);
    }

    /// `--metrics ADDR`: bind it once, for every worker to serve. Returns
    /// the address bound.
    pub fn serve_metrics(&mut self, addr: SocketAddr) -> io::Result<SocketAddr> {
        let listener = bind_tcp(addr, METRICS_BACKLOG)
            .map_err(|e| io::Error::new(e.kind(), format!("--metrics: {e}")))?;
        let bound = listener.local_addr()?;
        // Back to std: it crosses to the workers as a plain descriptor.
        self.metrics = Some(std::net::TcpListener::from(OwnedFd::from(listener)));
        Ok(bound)
    }

    /// The `--metrics` listener's address, if one is held (bound, or
    /// handed over).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref()?.local_addr().ok()
    }

    /// Worker `index`'s listening descriptors, in the order it will list
    /// them (its own sockets reopened first if they were closed), and the
    /// metrics listener's if any.
    pub fn fds_for(&mut self, index: usize) -> io::Result<(Vec<RawFd>, Option<RawFd>)> {
        if self.own[index].is_none() {
            self.own[index] = Some(self.reopen_own()?);
        }
        let fds = self.own[index]
            .iter()
            .flatten()
            .chain(&self.shared)
            .map(listening_fd)
            .collect();
        Ok((fds, self.metrics.as_ref().map(AsRawFd::as_raw_fd)))
    }

    /// New sockets of its own for a worker whose were closed: each joins
    /// the group the other workers still hold — or, if none does (every
    /// worker's were closed, and the port was free for a while), claims
    /// the port again first, as at start.
    fn reopen_own(&self) -> io::Result<Vec<Listening>> {
        let held = self.own.iter().any(Option::is_some);
        let mut sockets = Vec::with_capacity(self.groups.len());
        for group in &self.groups {
            let socket = match (group, held) {
                (BoundSocket::Tcp(addr), true) => {
                    Listening::Tcp(join_tcp_group(*addr, self.backlog)?)
                }
                (BoundSocket::Tcp(addr), false) => {
                    let mut one = bind_tcp_group(*addr, self.backlog, 1)?;
                    Listening::Tcp(one.remove(0))
                }
                (BoundSocket::Udp(addr), true) => Listening::Udp(join_udp_group(*addr)?),
                (BoundSocket::Udp(addr), false) => {
                    Listening::Udp(bind_udp_group(*addr, 1)?.remove(0))
                }
                (BoundSocket::Unix(_), _) => continue, // shared, never closed early
            };
            sockets.push(socket);
        }
        Ok(sockets)
    }

    /// Close our copies of worker `index`'s own sockets: once the worker
    /// is gone too, they leave the `SO_REUSEPORT` group.
    pub fn close_own(&mut self, index: usize) {
        if !self.groups.is_empty() {
            self.own[index] = None;
        }
    }

    /// Shutdown began: close our copy of every socket, so that each closes
    /// for good as its workers close theirs.
    pub fn close_all(&mut self) {
        for own in &mut self.own {
            *own = None;
        }
        self.shared.clear();
        self.metrics = None;
    }

    /// Remove the Unix socket file we created, if any.
    pub fn remove_unix_file(&self) {
        if let Some(path) = &self.unix_file {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The descriptors handed to a new generation, grouped as it must take
/// them ([`WorkerSockets::handover_fds`]).
#[derive(Debug)]
pub struct HandoverFds {
    /// Per worker, its own sockets.
    pub own: Vec<Vec<RawFd>>,
    /// Shared by every worker.
    pub shared: Vec<RawFd>,
    /// The `--metrics` listener.
    pub metrics: Option<RawFd>,
    /// Whether we created the Unix socket's file (the taker removes it at its exit).
    pub unix_file: bool,
}

/// `own[i]` (worker `i`'s sockets under the old generation) for `workers`
/// workers: extra workers get `None` (sockets of their own are opened
/// when they start); with fewer, worker `i` also serves the sockets of old
/// workers `i + workers`, `i + 2 * workers`, ...
fn regroup<T>(own: Vec<Vec<T>>, workers: usize) -> Vec<Option<Vec<T>>> {
    let mut regrouped: Vec<Option<Vec<T>>> = (0..workers).map(|_| None).collect();
    for (index, sockets) in own.into_iter().enumerate() {
        regrouped[index % workers]
            .get_or_insert_with(Vec::new)
            .extend(sockets);
    }
    regrouped
}

#[cfg(test)]
mod tests {
    use super::regroup;

    #[test]
    fn a_generation_with_other_worker_counts_keeps_every_handed_socket() {
        let old = || vec![vec![1, 2], vec![3, 4], vec![5, 6]];
        // Same count: each worker its own.
        assert_eq!(
            regroup(old(), 3),
            [Some(vec![1, 2]), Some(vec![3, 4]), Some(vec![5, 6])]
        );
        // More: the new worker opens sockets of its own when started.
        assert_eq!(
            regroup(old(), 4),
            [Some(vec![1, 2]), Some(vec![3, 4]), Some(vec![5, 6]), None]
        );
        // Fewer: nothing is closed; the third worker's go to the first.
        assert_eq!(
            regroup(old(), 2),
            [Some(vec![1, 2, 5, 6]), Some(vec![3, 4])]
        );
    }
}
