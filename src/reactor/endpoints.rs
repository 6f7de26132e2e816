//! The listening sockets the reactor owns: their three kinds, and each
//! one's scheduling state (queued, resting after EMFILE).
//!
//! Only data lives here, so `Clients` (`clients.rs`) can hold the
//! endpoints without depending on how they accept: that is `accept.rs`,
//! which depends on both.

use mio::net::{TcpListener, UdpSocket, UnixListener};

use crate::timers::NEVER;

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
pub(super) struct Endpoint {
    pub(super) socket: Listening,
    /// On the ready queue (so it is queued at most once).
    pub(super) queued: bool,
    /// Resting after EMFILE until this time ([`NEVER`]: not resting).
    pub(super) paused_until_ms: u64,
}

impl Endpoint {
    /// A socket just registered: not queued, not resting.
    pub(super) fn new(socket: Listening) -> Self {
        Endpoint {
            socket,
            queued: false,
            paused_until_ms: NEVER,
        }
    }
}
