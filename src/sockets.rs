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
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

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

/// A non-blocking UDP socket bound to `addr`.
///
/// Like [`bind_tcp`], an IPv6 socket is IPv6-only, so `--udp [::]:P` and
/// `--udp 0.0.0.0:P` can both be served (a dual-stack `[::]` socket would
/// also claim IPv4's port P, and the second bind would fail). No
/// `SO_REUSEADDR`: for UDP it would let a second server share the port.
pub fn bind_udp(addr: SocketAddr) -> io::Result<mio::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| step_error("socket for udp", &addr, e))?;
    if addr.is_ipv6() {
        socket
            .set_only_v6(true)
            .map_err(|e| step_error("set IPV6_V6ONLY on udp", &addr, e))?;
    }
    socket
        .set_nonblocking(true)
        .map_err(|e| step_error("set non-blocking on udp", &addr, e))?;
    socket
        .bind(&addr.into())
        .map_err(|e| step_error("bind udp", &addr, e))?;
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}

/// A non-blocking Unix stream listener at `path`.
///
/// A socket file left behind by a server that died is replaced; one that a
/// live server still answers on is refused, as is a path that exists but
/// is not a socket. (The caller removes the file on clean exit.)
pub fn bind_unix(path: &Path, backlog: u32) -> io::Result<mio::net::UnixListener> {
    let shown = path.display();
    let fail =
        |step: &str, e: io::Error| io::Error::new(e.kind(), format!("{step} unix {shown}: {e}"));
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("bind unix {shown}: the path exists and is not a socket"),
            ));
        }
        // Is anyone listening? A refused connection means the file is stale.
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("bind unix {shown}: another server is listening there"),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(|e| fail("remove stale socket", e))?;
            }
            Err(e) => return Err(fail("probe existing socket", e)),
        }
    }
    let socket =
        Socket::new(Domain::UNIX, Type::STREAM, None).map_err(|e| fail("socket for", e))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| fail("set non-blocking on", e))?;
    let addr = socket2::SockAddr::unix(path).map_err(|e| fail("address of", e))?;
    socket.bind(&addr).map_err(|e| fail("bind", e))?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket.listen(backlog).map_err(|e| fail("listen on", e))?;
    let fd: std::os::fd::OwnedFd = socket.into();
    Ok(mio::net::UnixListener::from_std(fd.into()))
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

    fn temp_socket_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("echo-reactor-{}-{name}.sock", std::process::id()))
    }

    #[test]
    fn a_stale_unix_socket_file_is_replaced_and_a_live_one_refused() {
        let path = temp_socket_path("stale");
        let _ = std::fs::remove_file(&path);
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // leaves the file behind
        let live = bind_unix(&path, 16).expect("stale file replaced");
        let err = bind_unix(&path, 16).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert!(
            err.to_string().contains("another server is listening"),
            "{err}"
        );
        drop(live);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_unix_path_that_is_not_a_socket_is_refused() {
        let path = temp_socket_path("plain-file");
        std::fs::write(&path, b"not a socket").unwrap();
        let err = bind_unix(&path, 16).unwrap_err();
        assert!(err.to_string().contains("is not a socket"), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"not a socket",
            "left untouched"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn udp_on_the_ipv6_wildcard_leaves_the_same_ipv4_port_free() {
        let v6 = bind_udp("[::]:0".parse().unwrap()).unwrap();
        let port = v6.local_addr().unwrap().port();
        let v4 = bind_udp(SocketAddr::from(([0, 0, 0, 0], port)))
            .expect("IPv4 wildcard on the port the IPv6 socket holds");
        assert_eq!(v4.local_addr().unwrap().port(), port);
        // And each still refuses a second server on its own family.
        let err = bind_udp(SocketAddr::from(([0, 0, 0, 0], port))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(
            err.to_string().starts_with(&format!("bind udp 0.0.0.0:{port}: ")),
            "{err}"
        );
    }

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
