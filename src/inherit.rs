//! Listening sockets handed over by a parent process instead of bound here:
//! systemd's socket activation (`LISTEN_FDS`, `LISTEN_PID`: descriptors 3,
//! 4, ... are open, listening sockets), which is also how the supervisor
//! hands its sockets to worker processes (`supervisor.rs`) and to a new
//! generation (`upgrade.rs`).
//!
//! Reading the environment is the `listenfd` crate's; here each descriptor
//! is classified (TCP listener, Unix listener, UDP socket), made
//! non-blocking and close-on-exec, and described for the `listening on`
//! lines. The other half, placing descriptors at 3, 4, ... in a child
//! process, is [`pass_sockets`].

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use listenfd::ListenFd;

use crate::reactor::Listening;
use crate::server::BoundSocket;

/// The sockets a parent handed over, in order, with what each one is.
/// `None` when the environment hands over nothing (no `LISTEN_FDS`, or a
/// `LISTEN_PID` naming another process).
pub fn inherited_sockets() -> io::Result<Option<Vec<(BoundSocket, Listening)>>> {
    let mut fds = ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let mut sockets = Vec::with_capacity(fds.len());
    for index in 0..fds.len() {
        let fd = 3 + index;
        let named = |e: io::Error| io::Error::new(e.kind(), format!("inherited fd {fd}: {e}"));
        // listenfd leaves a descriptor in place when it is not the kind asked for.
        let socket = if let Ok(Some(listener)) = fds.take_tcp_listener(index) {
            listener.set_nonblocking(true).map_err(named)?;
            let bound = BoundSocket::Tcp(listener.local_addr().map_err(named)?);
            (
                bound,
                Listening::Tcp(mio::net::TcpListener::from_std(listener)),
            )
        } else if let Ok(Some(listener)) = fds.take_unix_listener(index) {
            listener.set_nonblocking(true).map_err(named)?;
            let path = listener.local_addr().map_err(named)?;
            let path = path
                .as_pathname()
                .map(|p| p.to_path_buf())
                .unwrap_or_default();
            let bound = BoundSocket::Unix(path);
            (
                bound,
                Listening::Unix(mio::net::UnixListener::from_std(listener)),
            )
        } else if let Ok(Some(socket)) = fds.take_udp_socket(index) {
            socket.set_nonblocking(true).map_err(named)?;
            let bound = BoundSocket::Udp(socket.local_addr().map_err(named)?);
            (bound, Listening::Udp(mio::net::UdpSocket::from_std(socket)))
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "inherited fd {fd} (LISTEN_FDS) is not a listening TCP or Unix stream \
                     socket, nor a UDP socket"
                ),
            ));
        };
        set_cloexec(listening_fd(&socket.1)).map_err(named)?;
        sockets.push(socket);
    }
    Ok(Some(sockets))
}

/// The descriptor of a listening socket.
pub fn listening_fd(socket: &Listening) -> RawFd {
    match socket {
        Listening::Tcp(s) => s.as_raw_fd(),
        Listening::Unix(s) => s.as_raw_fd(),
        Listening::Udp(s) => s.as_raw_fd(),
    }
}

/// Take ownership of descriptor `fd`, handed to this process by its
/// parent outside `LISTEN_FDS` (named by a variable of its own), made
/// close-on-exec first so nothing we start gets it.
pub fn claim_fd(fd: RawFd) -> io::Result<OwnedFd> {
    set_cloexec(fd)?; // EBADF if it was not handed over after all
                      // SAFETY: open (checked just above), and handed to us alone; each
                      // caller claims a number once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Descriptors we were handed arrive inheritable; nothing we start later
/// should get them by accident.
fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; F_SETFD takes an int flag.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Start `command` with `fds` open as descriptors 3, 4, ... and the
/// environment of socket activation (`LISTEN_FDS`), the way systemd
/// starts a service.
///
/// The descriptors are first duplicated above any the child could be
/// handed (so placing one cannot overwrite another), then, between fork
/// and exec, `dup2`ed into place — `dup2` clears close-on-exec on the copy.
/// `LISTEN_PID` is left unset: the child's pid is not known before the
/// fork, and `listenfd` accepts a missing one.
pub fn pass_sockets(command: &mut Command, fds: &[RawFd]) -> io::Result<PassedCopies> {
    // Above 3 + fds.len(), so no dup2 target collides with a source.
    let floor = 3 + fds.len() as libc::c_int + 16;
    let mut copies = Vec::with_capacity(fds.len());
    for &fd in fds {
        // SAFETY: F_DUPFD_CLOEXEC duplicates an open descriptor we own.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, floor) };
        if copy == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `copy` is a fresh descriptor that nothing else owns.
        copies.push(unsafe { OwnedFd::from_raw_fd(copy) });
    }
    let sources: Vec<RawFd> = copies.iter().map(|fd| fd.as_raw_fd()).collect();
    // Only LISTEN_FDS describes what the child gets: what our own parent
    // said of ours (names, pid, a first descriptor other than 3) is not true
    // of the child's.
    command
        .env("LISTEN_FDS", fds.len().to_string())
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .env_remove("LISTEN_FDS_FIRST_FD");
    // SAFETY: only dup2 runs between fork and exec: async-signal-safe, no
    // allocation (the vector was built before the fork).
    unsafe {
        command.pre_exec(move || {
            for (index, &fd) in sources.iter().enumerate() {
                if libc::dup2(fd, 3 + index as libc::c_int) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(PassedCopies { _copies: copies })
}

/// The parent's copies made by [`pass_sockets`]; drop them once the child
/// has been spawned (it has its own by then).
#[derive(Debug)]
pub struct PassedCopies {
    _copies: Vec<OwnedFd>,
}
