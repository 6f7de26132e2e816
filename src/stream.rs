//! A client socket of either stream kind: TCP or Unix.
//!
//! The reactor treats both the same — bytes in, bytes out, readiness
//! edges — so a [`Stream`] forwards mio's `Source` to whichever socket it
//! holds, and reads and writes with one `recv(2)` / `send(2)` on its
//! descriptor. Only accepting differs (see `reactor`).
//!
//! Why not forward `Read`/`Write` to mio too: that path is mio's wrapper,
//! then std's, then libc's, and on the per-message path those layers cost
//! more instructions than the reactor's own logic (docs/BENCHMARKS.md).
//! The system call is the same either way.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

/// A connected, non-blocking stream socket.
#[derive(Debug)]
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix-domain stream connection.
    Unix(UnixStream),
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// `send` flags: do not raise SIGPIPE on a closed peer; report `EPIPE`
/// instead (macOS has no such flag; Rust ignores SIGPIPE there anyway).
#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = 0;

/// A `recv`/`send` return value as an `io::Result`.
fn from_ssize(n: libc::ssize_t) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error()) // errno: EAGAIN, ECONNRESET, EINTR, ...
    } else {
        Ok(n as usize)
    }
}

impl Read for Stream {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the descriptor is an open socket this Stream owns, and
        // `buf` is valid for writes of `buf.len()` bytes.
        from_ssize(unsafe { libc::recv(self.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) })
    }
}

impl Write for Stream {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: the descriptor is an open socket this Stream owns, and
        // `buf` is valid for reads of `buf.len()` bytes.
        from_ssize(unsafe {
            libc::send(self.as_raw_fd(), buf.as_ptr().cast(), buf.len(), SEND_FLAGS)
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(()) // sockets have no user-space buffer to flush
    }
}

/// Closing our side without losing what we owe (see `connection/linger.rs`).
///
/// `close()` on a socket whose receive queue still holds unread bytes makes
/// Linux answer with RST, and an RST throws away whatever of our replies the
/// peer has not acknowledged yet. A server that ends a connection while the
/// client may still be sending therefore shuts down its sending side first
/// and reads (discarding) until the client closes too.
pub trait Linger {
    /// `shutdown(SHUT_WR)`: queue a FIN after the bytes already sent. We
    /// can still read.
    fn shutdown_write(&self) -> io::Result<()>;

    /// Bytes handed to the kernel that the peer has not yet acknowledged
    /// (`ioctl(SIOCOUTQ)`; for a Unix socket, bytes the peer has not read).
    /// `None` where the platform cannot tell.
    fn unacknowledged(&self) -> Option<usize>;

    /// Bytes waiting in the receive queue, not yet read (`ioctl(FIONREAD)`):
    /// what arrived after the last `epoll_wait`, whose edge we have not
    /// fetched yet. `None` where the platform cannot tell.
    fn unread(&self) -> Option<usize>;

    /// How long ago (ms) data last left for the peer, [`u64::MAX`] if none
    /// ever did. `None` where the kernel does not say (Unix sockets, TCP
    /// outside Linux or before 4.6).
    fn last_sent_ago_ms(&self) -> Option<u64>;
}

/// Bytes handed to the kernel on `socket` that the peer has not yet
/// acknowledged (`ioctl(SIOCOUTQ)`; for a Unix socket, bytes the peer has
/// not read); `None` where the platform cannot tell. [`Linger::unacknowledged`]
/// for a [`Stream`], and for any socket (a test waiting for its bytes to
/// reach the server).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn unacknowledged_bytes(socket: &impl AsRawFd) -> Option<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int through the pointer we pass.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    (rc == 0).then_some(queued.max(0) as usize)
}

/// See the Linux version: elsewhere the kernel does not say.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn unacknowledged_bytes(_socket: &impl AsRawFd) -> Option<usize> {
    None
}

impl Linger for Stream {
    fn shutdown_write(&self) -> io::Result<()> {
        // SAFETY: the descriptor is an open socket this Stream owns.
        let rc = unsafe { libc::shutdown(self.as_raw_fd(), libc::SHUT_WR) };
        from_ssize(rc as libc::ssize_t).map(drop)
    }

    fn unacknowledged(&self) -> Option<usize> {
        unacknowledged_bytes(self)
    }

    fn unread(&self) -> Option<usize> {
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the pointer we pass.
        let rc = unsafe { libc::ioctl(self.as_raw_fd(), libc::FIONREAD, &mut queued) };
        (rc == 0).then_some(queued.max(0) as usize)
    }

    #[cfg(target_os = "linux")]
    fn last_sent_ago_ms(&self) -> Option<u64> {
        let Stream::Tcp(_) = self else {
            return None;
        };
        // SAFETY: tcp_info is plain integers, for which all zeroes is valid.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: TCP_INFO writes at most `len` bytes into `info` and the
        // length it wrote into `len`.
        let rc = unsafe {
            libc::getsockopt(
                self.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        // An older kernel answers with a shorter struct: without
        // `tcpi_data_segs_out` (Linux 4.6) "never sent" cannot be told.
        let needed =
            std::mem::offset_of!(libc::tcp_info, tcpi_data_segs_out) + std::mem::size_of::<u32>();
        if rc != 0 || (len as usize) < needed {
            return None;
        }
        if info.tcpi_data_segs_out == 0 {
            return Some(u64::MAX);
        }
        Some(u64::from(info.tcpi_last_data_sent))
    }

    #[cfg(not(target_os = "linux"))]
    fn last_sent_ago_ms(&self) -> Option<u64> {
        None
    }
}

impl Source for Stream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(registry, token, interest),
            Stream::Unix(s) => s.register(registry, token, interest),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(registry, token, interest),
            Stream::Unix(s) => s.reregister(registry, token, interest),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(registry),
            Stream::Unix(s) => s.deregister(registry),
        }
    }
}
