//! What one non-blocking socket call did, as a named outcome.
//!
//! After Python's `sock.setblocking(False)`, a `recv` either returns bytes,
//! returns `b''` (the peer closed), or raises `BlockingIOError` /
//! `ConnectionResetError`. Rust reports the same things as `io::Result`
//! values whose meaning hides in `ErrorKind`s. This module gives each one a
//! name, once, so the rest of the reactor reads as a table of cases:
//!
//! | call       | outcomes                                                     |
//! |------------|--------------------------------------------------------------|
//! | [`try_read`]   | `Data(n)`, `Closed`, `WouldBlock`, `Reset`, `Failed(kind)`     |
//! | [`try_write`]  | `Wrote(n)` (maybe partial), `WouldBlock`, `Closed`, `Failed` |
//! | [`try_accept`] | `Accepted(x)`, `WouldBlock`, `OutOfFiles`, `OutOfMemory`, `Failed` |
//! | [`try_recv_from`] | `Received(n, from, arrived_at)`, `WouldBlock`, `Failed`    |
//! | [`try_send_to`] | `Wrote(n)`, `WouldBlock`, `Failed`                          |
//!
//! Each function is exactly one system call, except that `EINTR` (a signal
//! arrived mid-call) is retried here and never reaches the caller. Loops over
//! many calls (drain until `WouldBlock`, flush until empty) live with the
//! connection and summarise these per-call outcomes in their own enums.
//!
//! Nothing here knows about `Poll`, tokens or buffers.

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;

use mio::net::UdpSocket;

use crate::sockets::{recv_with_destination, send_from, Destination};

/// What one `read`/`recv` on a non-blocking socket did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// `n > 0` bytes were copied into the buffer.
    Data(usize),
    /// `Ok(0)`: the peer sent FIN (Python: `recv` returned `b''`). It will
    /// send nothing more, but it may still be reading our replies.
    Closed,
    /// The receive queue is empty (Python: `BlockingIOError`). Under
    /// edge-triggered readiness the next readable event says when to retry.
    WouldBlock,
    /// `ECONNRESET` (Python: `ConnectionResetError`): the peer is gone and
    /// anything we still owe it cannot be delivered.
    Reset,
    /// Any other failure, kept as its kind so the close can be logged.
    Failed(ErrorKind),
}

/// What one `write`/`send` on a non-blocking socket did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The kernel took `n > 0` bytes. `n` may be less than offered: the rest
    /// must be kept, in order, and sent later (Python's `send` vs `sendall`).
    Wrote(usize),
    /// The send buffer is full: nothing was taken. Wait for a writable event.
    WouldBlock,
    /// `EPIPE` / `ECONNRESET` / a zero-byte write: the peer can no longer
    /// receive, so pending output is discarded.
    Closed,
    /// Any other failure, kept as its kind.
    Failed(ErrorKind),
}

/// What one `accept` on a non-blocking listener did.
#[derive(Debug)]
pub enum AcceptOutcome<T> {
    /// A new connection (the socket and whatever else `accept` returned).
    Accepted(T),
    /// The accept queue is empty.
    WouldBlock,
    /// `EMFILE`/`ENFILE`: we are out of file descriptors. The connection
    /// stays in the kernel's queue, so retrying at once would spin.
    OutOfFiles,
    /// `ENOBUFS`/`ENOMEM`: the kernel is short of memory for a new socket.
    /// Like `OutOfFiles`, the connection stays queued and retrying at once
    /// would spin.
    OutOfMemory,
    /// Any other failure (e.g. `ECONNABORTED`: the client gave up while
    /// queued). The listener itself is still fine.
    Failed(ErrorKind),
}

/// What one `recv_from` on a non-blocking UDP socket did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvOutcome {
    /// A datagram of `n` bytes (maybe 0: empty datagrams exist) from this sender.
    /// The third field is the local address it was sent to, where the
    /// socket reports it (wildcard-bound sockets on Linux): answer from it.
    Received(usize, SocketAddr, Option<Destination>),
    /// No datagram waiting.
    WouldBlock,
    /// Any other failure (e.g. `ECONNREFUSED`, reported for an earlier
    /// send whose target had no listener). The socket itself is fine.
    Failed(ErrorKind),
}

/// One `recv_from` on a non-blocking UDP socket, retried on `EINTR`.
pub fn try_recv_from(socket: &UdpSocket, buf: &mut [u8]) -> RecvOutcome {
    // recvmsg rather than recv_from: one call either way, and it also says
    // where the datagram arrived (IP_PKTINFO), so the reply can leave from
    // the address the client wrote to.
    loop {
        return match recv_with_destination(socket, buf) {
            Ok((n, from, arrived_at)) => RecvOutcome::Received(n, from, arrived_at),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => RecvOutcome::WouldBlock,
            Err(e) => RecvOutcome::Failed(e.kind()),
        };
    }
}

/// One `send_to` on a non-blocking UDP socket (from `from`, the address the
/// request arrived at, when known), retried on `EINTR`. A
/// datagram goes whole or not at all, and an empty one is legal, so
/// `Wrote(0)` here means "sent". `WouldBlock` means the datagram was not sent.
pub fn try_send_to(
    socket: &UdpSocket,
    datagram: &[u8],
    to: SocketAddr,
    from: Option<Destination>,
) -> WriteOutcome {
    loop {
        return match send_from(socket, datagram, to, from) {
            Ok(n) => WriteOutcome::Wrote(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => WriteOutcome::WouldBlock,
            Err(e) => WriteOutcome::Failed(e.kind()),
        };
    }
}

/// One `read` on a non-blocking source, retried on `EINTR`.
///
/// `buf` must not be empty: reading into an empty buffer returns `Ok(0)`,
/// which would look exactly like the peer closing.
#[inline(always)] // once per message; as a call it cost more than its body
pub fn try_read(source: &mut impl Read, buf: &mut [u8]) -> ReadOutcome {
    debug_assert!(!buf.is_empty(), "an empty read buffer fakes an EOF");
    loop {
        return match source.read(buf) {
            Ok(0) => ReadOutcome::Closed,
            Ok(n) => ReadOutcome::Data(n),
            Err(e) => match e.kind() {
                ErrorKind::Interrupted => continue, // a signal landed mid-call; nothing was read
                ErrorKind::WouldBlock => ReadOutcome::WouldBlock,
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => ReadOutcome::Reset,
                kind => ReadOutcome::Failed(kind),
            },
        };
    }
}

/// One `write` on a non-blocking source, retried on `EINTR`.
///
/// `buf` must not be empty (a zero-length write says nothing about the peer).
#[inline(always)] // once per message; as a call it cost more than its body
pub fn try_write(source: &mut impl Write, buf: &[u8]) -> WriteOutcome {
    debug_assert!(!buf.is_empty(), "a zero-length write proves nothing");
    loop {
        return match source.write(buf) {
            // A stream socket never takes 0 of a non-empty buffer unless it is
            // unusable; std maps that to WriteZero in write_all for the same reason.
            Ok(0) => WriteOutcome::Closed,
            Ok(n) => WriteOutcome::Wrote(n),
            Err(e) => match e.kind() {
                ErrorKind::Interrupted => continue,
                ErrorKind::WouldBlock => WriteOutcome::WouldBlock,
                ErrorKind::BrokenPipe
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted => WriteOutcome::Closed,
                kind => WriteOutcome::Failed(kind),
            },
        };
    }
}

/// One `accept` (any listener: pass a closure that calls it), retried on `EINTR`.
pub fn try_accept<T>(mut accept: impl FnMut() -> io::Result<T>) -> AcceptOutcome<T> {
    loop {
        return match accept() {
            Ok(accepted) => AcceptOutcome::Accepted(accepted),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => AcceptOutcome::WouldBlock,
            Err(e) if is_out_of_files(&e) => AcceptOutcome::OutOfFiles,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::ENOMEM)) => {
                AcceptOutcome::OutOfMemory
            }
            Err(e) => AcceptOutcome::Failed(e.kind()),
        };
    }
}

/// `EMFILE` (this process hit RLIMIT_NOFILE) or `ENFILE` (the whole system did).
pub fn is_out_of_files(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ScriptedStream;

    // ---- read ----

    #[test]
    fn read_names_data_eof_wouldblock_and_reset() {
        let mut sock = ScriptedStream::new()
            .gives(b"hi")
            .would_block()
            .fails(ErrorKind::ConnectionReset)
            .eof();
        let mut buf = [0u8; 16];
        assert_eq!(try_read(&mut sock, &mut buf), ReadOutcome::Data(2));
        assert_eq!(&buf[..2], b"hi");
        assert_eq!(try_read(&mut sock, &mut buf), ReadOutcome::WouldBlock);
        assert_eq!(try_read(&mut sock, &mut buf), ReadOutcome::Reset);
        assert_eq!(try_read(&mut sock, &mut buf), ReadOutcome::Closed);
    }

    #[test]
    fn read_retries_eintr_inside() {
        let mut sock = ScriptedStream::new()
            .fails(ErrorKind::Interrupted)
            .fails(ErrorKind::Interrupted)
            .gives(b"x");
        let mut buf = [0u8; 4];
        assert_eq!(try_read(&mut sock, &mut buf), ReadOutcome::Data(1));
    }

    #[test]
    fn read_keeps_other_errors_as_their_kind() {
        let mut sock = ScriptedStream::new().fails(ErrorKind::PermissionDenied);
        let mut buf = [0u8; 4];
        assert_eq!(
            try_read(&mut sock, &mut buf),
            ReadOutcome::Failed(ErrorKind::PermissionDenied)
        );
    }

    // ---- write ----

    #[test]
    fn write_reports_partial_writes_as_what_the_kernel_took() {
        let mut sock = ScriptedStream::new().accepts(3).would_block();
        assert_eq!(try_write(&mut sock, b"hello"), WriteOutcome::Wrote(3));
        assert_eq!(try_write(&mut sock, b"lo"), WriteOutcome::WouldBlock);
        assert_eq!(sock.written(), b"hel");
    }

    #[test]
    fn write_names_broken_pipe_and_reset_as_closed() {
        let mut sock = ScriptedStream::new()
            .fails(ErrorKind::Interrupted)
            .fails(ErrorKind::BrokenPipe)
            .fails(ErrorKind::ConnectionReset)
            .accepts(0)
            .fails(ErrorKind::OutOfMemory);
        assert_eq!(try_write(&mut sock, b"x"), WriteOutcome::Closed);
        assert_eq!(try_write(&mut sock, b"x"), WriteOutcome::Closed);
        assert_eq!(try_write(&mut sock, b"x"), WriteOutcome::Closed);
        assert_eq!(
            try_write(&mut sock, b"x"),
            WriteOutcome::Failed(ErrorKind::OutOfMemory)
        );
    }

    // ---- accept ----

    // ---- datagrams ----

    #[test]
    fn udp_recv_and_send_name_their_outcomes_including_empty_datagrams() {
        let server = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(try_recv_from(&server, &mut buf), RecvOutcome::WouldBlock);
        client.send_to(b"", server.local_addr().unwrap()).unwrap();
        let from = client.local_addr().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let outcome = loop {
            match try_recv_from(&server, &mut buf) {
                RecvOutcome::WouldBlock if std::time::Instant::now() < deadline => {
                    std::thread::yield_now()
                }
                other => break other,
            }
        };
        assert_eq!(outcome, RecvOutcome::Received(0, from, None));
        assert_eq!(
            try_send_to(&server, b"", from, None),
            WriteOutcome::Wrote(0)
        );
    }

    #[test]
    fn accept_names_emfile_and_enfile_as_out_of_files() {
        for errno in [libc::EMFILE, libc::ENFILE] {
            let outcome = try_accept(|| Err::<(), _>(io::Error::from_raw_os_error(errno)));
            assert!(matches!(outcome, AcceptOutcome::OutOfFiles), "{errno}");
        }
    }

    #[test]
    fn accept_names_enobufs_and_enomem_as_out_of_memory() {
        for errno in [libc::ENOBUFS, libc::ENOMEM] {
            let outcome = try_accept(|| Err::<(), _>(io::Error::from_raw_os_error(errno)));
            assert!(matches!(outcome, AcceptOutcome::OutOfMemory), "{errno}");
        }
    }

    #[test]
    fn accept_retries_eintr_and_reports_wouldblock_and_other_failures() {
        let mut script = vec![
            Err(io::Error::from(ErrorKind::ConnectionAborted)),
            Err(io::Error::from(ErrorKind::WouldBlock)),
            Ok(7),
            Err(io::Error::from(ErrorKind::Interrupted)),
        ];
        let mut next = move || script.pop().unwrap();
        assert!(matches!(try_accept(&mut next), AcceptOutcome::Accepted(7)));
        assert!(matches!(try_accept(&mut next), AcceptOutcome::WouldBlock));
        assert!(matches!(
            try_accept(&mut next),
            AcceptOutcome::Failed(ErrorKind::ConnectionAborted)
        ));
    }
}
