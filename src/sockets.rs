//! Opening listening sockets with the options mio does not expose.
//!
//! Python's server recipe is `socket()`, `setsockopt(SO_REUSEADDR)`,
//! `bind()`, `listen(backlog)`, `setblocking(False)`. mio's
//! `TcpListener::bind` does the same but fixes the backlog, so we take
//! each step through `socket2` and hand the result to mio.
//!
//! Every error names the step and the address, e.g.
//! `bind 127.0.0.1:7000: Address already in use (os error 98)`.
//!
//! It also holds the one UDP subtlety mio does not cover: a socket bound to
//! a wildcard address (`0.0.0.0`, `[::]`) receives datagrams sent to any
//! local address, but a plain `send_to` lets routing pick the reply's
//! source — which may not be the address the client wrote to, so a client
//! that `connect`ed its socket silently drops the reply. [`recv_with_destination`]
//! learns where each datagram arrived (`IP_PKTINFO`/`IPV6_PKTINFO`, Linux)
//! and [`send_from`] answers from exactly there. Both take any socket as a
//! file descriptor, so they work the same under mio and in tests.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
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
    bind_tcp_with(addr, backlog, false)
}

/// `count` TCP listeners on one address with `SO_REUSEPORT`, one per worker
/// process: the kernel spreads new connections over them by a hash of the
/// client's address and port.
///
/// `SO_REUSEPORT` lets any socket of the same user with the option set
/// join the port, so a second server would silently share it. First a
/// plain bind (`probe_tcp`) claims the address the way a single-process
/// server does: if any server listens there it fails with "address in
/// use".
///
/// Port 0 is not probed: a probe would find a free port P and let it go,
/// and until the group binds P any other `bind(0)` on the machine (a
/// second server starting at the same moment) could be handed P too. The
/// group's first socket asks the kernel for a port itself, which it gives
/// only where no socket is bound, and the others join that port.
pub fn bind_tcp_group(
    addr: SocketAddr,
    backlog: u32,
    count: usize,
) -> io::Result<Vec<mio::net::TcpListener>> {
    if addr.port() == 0 && count > 0 {
        let first = join_tcp_group(addr, backlog)?;
        let bound = first
            .local_addr()
            .map_err(|e| step_error("address of", &addr, e))?;
        let rest = (1..count).map(|_| join_tcp_group(bound, backlog));
        return std::iter::once(Ok(first)).chain(rest).collect();
    }
    let addr = probe_tcp(addr)?;
    (0..count).map(|_| join_tcp_group(addr, backlog)).collect()
}

/// One more `SO_REUSEPORT` listener on `addr`, joining the group this
/// process already holds there (a restarted worker's socket). No probe:
/// our own group holds the port.
pub fn join_tcp_group(addr: SocketAddr, backlog: u32) -> io::Result<mio::net::TcpListener> {
    bind_tcp_with(addr, backlog, true)
}

/// Bind `addr` without `SO_REUSEPORT` and without listening, then let it
/// go: fails with "address in use" where any server listens, as
/// [`bind_tcp`] would. Returns the address bound. Only for a port asked
/// by number (port 0: see [`bind_tcp_group`]).
///
/// The window between this socket's close and the group's first bind is
/// a few microseconds: only a second server starting on the same port at
/// that same moment could slip into it (docs/ARCHITECTURE.md).
fn probe_tcp(addr: SocketAddr) -> io::Result<SocketAddr> {
    let probe = tcp_socket(addr, false)?;
    probe
        .bind(&addr.into())
        .map_err(|e| step_error("bind", &addr, e))?;
    local_addr_of(&probe, &addr)
}

/// The address `socket` was bound to (the real port when 0 was asked),
/// with an error that names the address asked for.
fn local_addr_of(socket: &Socket, addr: &SocketAddr) -> io::Result<SocketAddr> {
    socket
        .local_addr()
        .and_then(|bound| {
            bound
                .as_socket()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP address"))
        })
        .map_err(|e| step_error("address of", addr, e))
}

/// The one sequence every TCP listener of ours goes through (socket and
/// options, non-blocking, bind, listen), alone or as one of a worker group.
fn bind_tcp_with(
    addr: SocketAddr,
    backlog: u32,
    reuse_port: bool,
) -> io::Result<mio::net::TcpListener> {
    let socket = tcp_socket(addr, reuse_port)?;
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

/// A TCP socket for `addr`, not yet bound, with the options every one of
/// ours has: `SO_REUSEADDR`, IPv6-only for an IPv6 address, and
/// `SO_REUSEPORT` when asked.
fn tcp_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| step_error("socket for", &addr, e))?;
    socket
        .set_reuse_address(true)
        .map_err(|e| step_error("set SO_REUSEADDR on", &addr, e))?;
    if reuse_port {
        socket
            .set_reuse_port(true)
            .map_err(|e| step_error("set SO_REUSEPORT on", &addr, e))?;
    }
    if addr.is_ipv6() {
        socket
            .set_only_v6(true)
            .map_err(|e| step_error("set IPV6_V6ONLY on", &addr, e))?;
    }
    Ok(socket)
}

/// A non-blocking UDP socket bound to `addr`.
///
/// Like [`bind_tcp`], an IPv6 socket is IPv6-only, so `--udp [::]:P` and
/// `--udp 0.0.0.0:P` can both be served (a dual-stack `[::]` socket would
/// also claim IPv4's port P, and the second bind would fail). No
/// `SO_REUSEADDR`: for UDP it would let a second server share the port.
/// On a wildcard address the socket also reports each datagram's
/// destination (see [`report_destinations`]), so replies can leave from it.
pub fn bind_udp(addr: SocketAddr) -> io::Result<mio::net::UdpSocket> {
    bind_udp_with(addr, false)
}

/// `count` UDP sockets on one address with `SO_REUSEPORT`, one per worker
/// (datagrams spread by a hash of their source), claimed first by a plain
/// bind as in [`bind_tcp_group`].
pub fn bind_udp_group(addr: SocketAddr, count: usize) -> io::Result<Vec<mio::net::UdpSocket>> {
    if addr.port() == 0 && count > 0 {
        // As in bind_tcp_group: the kernel picks a port no socket holds.
        let first = join_udp_group(addr)?;
        let bound = first
            .local_addr()
            .map_err(|e| step_error("address of", &addr, e))?;
        let rest = (1..count).map(|_| join_udp_group(bound));
        return std::iter::once(Ok(first)).chain(rest).collect();
    }
    let addr = probe_udp(addr)?;
    (0..count).map(|_| join_udp_group(addr)).collect()
}

/// One more `SO_REUSEPORT` UDP socket on `addr`, joining our own group
/// there, as [`join_tcp_group`].
pub fn join_udp_group(addr: SocketAddr) -> io::Result<mio::net::UdpSocket> {
    bind_udp_with(addr, true)
}

/// A plain UDP bind of `addr`, let go at once: "address in use" where any
/// socket holds the port, as [`bind_udp`] would. Returns the address
/// bound, port 0 resolved.
fn probe_udp(addr: SocketAddr) -> io::Result<SocketAddr> {
    let probe = udp_socket(addr, false)?;
    probe
        .bind(&addr.into())
        .map_err(|e| step_error("bind udp", &addr, e))?;
    local_addr_of(&probe, &addr)
}

/// The one sequence every UDP socket of ours goes through, alone or as one
/// of a worker group.
fn bind_udp_with(addr: SocketAddr, reuse_port: bool) -> io::Result<mio::net::UdpSocket> {
    let socket = udp_socket(addr, reuse_port)?;
    socket
        .set_nonblocking(true)
        .map_err(|e| step_error("set non-blocking on udp", &addr, e))?;
    socket
        .bind(&addr.into())
        .map_err(|e| step_error("bind udp", &addr, e))?;
    if addr.ip().is_unspecified() {
        report_destinations(&socket, addr.is_ipv6())
            .map_err(|e| step_error("set IP_PKTINFO on udp", &addr, e))?;
    }
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}

/// A UDP socket for `addr`, not yet bound: IPv6-only for an IPv6 address,
/// `SO_REUSEPORT` when asked.
fn udp_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| step_error("socket for udp", &addr, e))?;
    if reuse_port {
        socket
            .set_reuse_port(true)
            .map_err(|e| step_error("set SO_REUSEPORT on udp", &addr, e))?;
    }
    if addr.is_ipv6() {
        socket
            .set_only_v6(true)
            .map_err(|e| step_error("set IPV6_V6ONLY on udp", &addr, e))?;
    }
    Ok(socket)
}

/// Where a datagram arrived: the local address the client sent it to (for
/// a broadcast, a local unicast address instead) and the interface it came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    /// The address to answer from.
    pub ip: IpAddr,
    /// The receiving interface's index (0: unknown).
    pub ifindex: u32,
}

/// Ask the kernel to attach each received datagram's [`Destination`]
/// (`IP_PKTINFO`, or `IPV6_RECVPKTINFO` for an IPv6 socket). Only needed
/// for wildcard-bound sockets. Where the platform has no such option
/// (macOS, here) it does nothing and [`recv_with_destination`] reports `None`.
pub fn report_destinations(socket: &impl AsFd, ipv6: bool) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let (level, name) = if ipv6 {
            (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
        } else {
            (libc::IPPROTO_IP, libc::IP_PKTINFO)
        };
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `on`.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_fd().as_raw_fd(),
                level,
                name,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (socket, ipv6);
    Ok(())
}

/// Room for one `in6_pktinfo` control message (the larger of the two), as
/// `u64`s so the buffer is aligned for `cmsghdr`.
type ControlBuf = [u64; 8];

/// One `recvmsg`: a datagram into `buf`, its sender, and — on a socket set
/// up with [`report_destinations`] — where it arrived. A datagram longer
/// than `buf` is cut to fit, as with `recv_from`. `WouldBlock` and
/// `Interrupted` come back as errors, for the caller to classify.
pub fn recv_with_destination(
    socket: &impl AsFd,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<Destination>)> {
    let mut control: ControlBuf = [0; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero bytes are a valid msghdr (no name, no control yet).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of::<ControlBuf>() as _;
    // SAFETY: `try_init` hands us zeroed storage for the sender's address
    // and its size; every pointer in `msg` points at a live buffer of the
    // length given, and we report back the length the kernel wrote.
    let (n, sender) = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            msg.msg_name = storage.cast();
            msg.msg_namelen = *len;
            let n = libc::recvmsg(socket.as_fd().as_raw_fd(), &mut msg, 0);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            *len = msg.msg_namelen;
            Ok(n as usize)
        })
    }?;
    let from = sender
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "recvmsg: not an IP sender"))?;
    Ok((n, from, destination_of(&msg)))
}

/// The `IP_PKTINFO`/`IPV6_PKTINFO` control message of a received `msg`, if any.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn destination_of(msg: &libc::msghdr) -> Option<Destination> {
    // SAFETY: `msg` came back from recvmsg, so its control buffer holds
    // `msg_controllen` bytes of well-formed cmsghdrs; CMSG_* walk them and
    // `read_unaligned` copies a payload of the type its header announces.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                    // ipi_spec_dst, not ipi_addr: for a broadcast, ipi_addr is
                    // the broadcast address, which cannot be a reply's source.
                    let ip = std::net::Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
                    return Some(Destination {
                        ip: IpAddr::V4(ip),
                        ifindex: u32::try_from(info.ipi_ifindex).unwrap_or(0),
                    });
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    return Some(Destination {
                        ip: IpAddr::V6(info.ipi6_addr.s6_addr.into()),
                        ifindex: info.ipi6_ifindex,
                    });
                }
                _ => cmsg = libc::CMSG_NXTHDR(msg, cmsg),
            }
        }
    }
    None
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn destination_of(_msg: &libc::msghdr) -> Option<Destination> {
    None
}

/// One `sendmsg` of `datagram` to `to`, from `from` when given (the
/// [`Destination`] its request arrived at), else from wherever routing
/// says. Errors come back unclassified, as from `send_to`.
pub fn send_from(
    socket: &impl AsFd,
    datagram: &[u8],
    to: SocketAddr,
    from: Option<Destination>,
) -> io::Result<usize> {
    let to = socket2::SockAddr::from(to);
    let mut control: ControlBuf = [0; 8];
    let mut iov = libc::iovec {
        iov_base: datagram.as_ptr().cast_mut().cast(),
        iov_len: datagram.len(),
    };
    // SAFETY: all-zero bytes are a valid msghdr (no name, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = to.as_ptr().cast_mut().cast();
    msg.msg_namelen = to.len();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(from) = from {
        let len = write_source(&mut control, from);
        if len > 0 {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = len as _;
        }
    }
    // SAFETY: every pointer in `msg` points at a live buffer of the length
    // given; sendmsg only reads them.
    let n = unsafe { libc::sendmsg(socket.as_fd().as_raw_fd(), &msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Write the control message that sets a datagram's source to `from` into
/// `control`; returns its length (0: the platform cannot say).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn write_source(control: &mut ControlBuf, from: Destination) -> usize {
    // SAFETY: a zeroed msghdr whose control pointer and length describe
    // `control`, so CMSG_FIRSTHDR returns its start (non-null: the buffer
    // holds a whole cmsghdr) and the payload written fits: 64 bytes hold
    // CMSG_SPACE(in6_pktinfo) = 40.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of::<ControlBuf>() as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        let data = libc::CMSG_DATA(cmsg);
        match from.ip {
            IpAddr::V4(ip) => {
                let size = std::mem::size_of::<libc::in_pktinfo>() as u32;
                (*cmsg).cmsg_level = libc::IPPROTO_IP;
                (*cmsg).cmsg_type = libc::IP_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size) as _;
                // The source address only; interface 0 lets routing choose
                // the way out, as for any other reply.
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(data.cast(), info);
                libc::CMSG_SPACE(size) as usize
            }
            IpAddr::V6(ip) => {
                let size = std::mem::size_of::<libc::in6_pktinfo>() as u32;
                (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
                (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size) as _;
                // The interface only for a link-local address (fe80::/10), which means
                // nothing without it; pinning any other reply to the arrival
                // interface would break asymmetric routing.
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: ip.octets(),
                    },
                    ipi6_ifindex: if ip.segments()[0] & 0xffc0 == 0xfe80 {
                        from.ifindex
                    } else {
                        0
                    },
                };
                std::ptr::write_unaligned(data.cast(), info);
                libc::CMSG_SPACE(size) as usize
            }
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn write_source(_control: &mut ControlBuf, _from: Destination) -> usize {
    0
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
            err.to_string()
                .starts_with(&format!("bind udp 0.0.0.0:{port}: ")),
            "{err}"
        );
    }

    // ---- replies from the address the client wrote to ----

    use std::net::UdpSocket;
    use std::time::Duration;

    /// A blocking client on `local`, with a deadline on receives.
    fn udp_client(local: &str) -> UdpSocket {
        let client = UdpSocket::bind(local).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        client
    }

    /// A wildcard server socket (blocking, for the test) reporting destinations.
    fn wildcard_server(addr: &str) -> UdpSocket {
        let addr: SocketAddr = addr.parse().unwrap();
        let server: UdpSocket = bind_udp(addr).unwrap().into();
        server.set_nonblocking(false).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        server
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_wildcard_udp_socket_answers_from_the_address_the_client_used() {
        // All of 127/8 is loopback on Linux: the client writes to 127.0.0.2.
        let server = wildcard_server("0.0.0.0:0");
        let port = server.local_addr().unwrap().port();
        let client = udp_client("127.0.0.1:0");
        let asked = SocketAddr::from(([127, 0, 0, 2], port));

        client.send_to(b"ping", asked).unwrap();
        let mut buf = [0u8; 64];
        let (n, from, dest) = recv_with_destination(&server, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(from, client.local_addr().unwrap());
        let dest = dest.expect("the wildcard socket reports where the datagram arrived");
        assert_eq!(dest.ip, asked.ip());

        // What routing alone picks: not the address the client wrote to.
        send_from(&server, b"plain", from, None).unwrap();
        let (n, replied_from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"plain");
        assert_ne!(
            replied_from, asked,
            "the test needs routing to pick another source"
        );

        send_from(&server, b"pong", from, Some(dest)).unwrap();
        let (n, replied_from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"pong");
        assert_eq!(replied_from, asked);
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_wildcard_ipv6_udp_socket_reports_and_answers_from_its_destination() {
        let server = wildcard_server("[::]:0");
        let port = server.local_addr().unwrap().port();
        let client = udp_client("[::1]:0");
        let asked = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        client.connect(asked).unwrap(); // a connected client drops replies from elsewhere
        client.send(b"ping").unwrap();
        let mut buf = [0u8; 64];
        let (n, from, dest) = recv_with_destination(&server, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        let dest = dest.expect("reported");
        assert_eq!(dest.ip, asked.ip());
        assert_ne!(dest.ifindex, 0, "the loopback interface");
        send_from(&server, b"pong", from, Some(dest)).unwrap();
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"pong");
    }

    #[test]
    fn a_specific_udp_address_needs_no_destination_and_plain_sends_still_work() {
        let server = wildcard_server("127.0.0.1:0"); // not a wildcard after all
        let client = udp_client("127.0.0.1:0");
        client.send_to(b"x", server.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 8];
        let (n, from, dest) = recv_with_destination(&server, &mut buf).unwrap();
        assert_eq!((n, dest), (1, None));
        assert_eq!(
            send_from(&server, b"", from, None).unwrap(),
            0,
            "an empty datagram is legal"
        );
        assert_eq!(client.recv(&mut buf).unwrap(), 0);
    }

    #[test]
    fn receiving_on_an_empty_nonblocking_socket_would_block() {
        let socket = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let err = recv_with_destination(&socket, &mut [0u8; 8]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_reuseport_group_is_refused_where_another_group_listens_but_can_grow_itself() {
        let first = bind_tcp_group("127.0.0.1:0".parse().unwrap(), 16, 2).unwrap();
        let addr = first[0].local_addr().unwrap();
        assert_eq!(first[1].local_addr().unwrap(), addr, "port 0 resolved once");
        // Another server's group: the kernel would let it join ours.
        let err = bind_tcp_group(addr, 16, 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert!(
            err.to_string().starts_with(&format!("bind {addr}: ")),
            "{err}"
        );
        // A restarted worker's socket joins the group we hold.
        let third = join_tcp_group(addr, 16).unwrap();
        assert_eq!(third.local_addr().unwrap(), addr);

        let first = bind_udp_group("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = first[0].local_addr().unwrap();
        let err = bind_udp_group(addr, 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert!(
            err.to_string().starts_with(&format!("bind udp {addr}: ")),
            "{err}"
        );
        assert!(join_udp_group(addr).is_ok());
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
