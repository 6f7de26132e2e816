//! Opening listening sockets with the options mio does not expose.
//!
//! Python's server recipe is `socket()`, `setsockopt(SO_REUSEADDR)`,
//! `bind()`, `listen(backlog)`, `setblocking(False)`. mio's
//! `TcpListener::bind` does the same but fixes the backlog, so we take
//! each step through `socket2` and hand the result to mio.
//!
//! Every error names the step and the address, e.g.
//! `bind 127.0.0.1:7000: Address already in use (os error 98)`.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// An error that says which step failed on which address.
fn step_error(step: &str, addr: &SocketAddr, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{step} {addr}: {e}"))
}

/// A non-blocking TCP listener on `addr` with the given accept backlog.
///
/// `SO_REUSEADDR` is set, so a restarted server can bind while old
/// connections sit in `TIME_WAIT`; `SO_REUSEPORT` is not, so a second
/// server on the same port fails with "address in use" instead of
/// silently sharing it. For `[::]`-style addresses the socket is IPv6-only,
/// so an IPv4 listener on the same port can coexist.
pub fn bind_tcp(addr: SocketAddr, backlog: u32) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| step_error("socket for", &addr, e))?;
    socket
        .set_reuse_address(true)
        .map_err(|e| step_error("set SO_REUSEADDR on", &addr, e))?;
    if addr.is_ipv6() {
        socket
            .set_only_v6(true)
            .map_err(|e| step_error("set IPV6_V6ONLY on", &addr, e))?;
    }
    socket
        .set_nonblocking(true)
        .map_err(|e| step_error("set non-blocking on", &addr, e))?;
    socket
        .bind(&addr.into())
        .map_err(|e| step_error("bind", &addr, e))?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket
        .listen(backlog)
        .map_err(|e| step_error("listen on", &addr, e))?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// The kernel's cap on listen backlogs (`net.core.somaxconn`), if readable.
/// `listen(n)` silently uses `min(n, somaxconn)`.
pub fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_bind_on_the_same_port_fails_and_names_the_address() {
        let first = bind_tcp("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = first.local_addr().unwrap();
        let err = bind_tcp(addr, 16).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(
            err.to_string().starts_with(&format!("bind {addr}: ")),
            "{err}"
        );
    }
}
