//! systemd's readiness protocol (`sd_notify(3)`), the sender's half: one
//! datagram of `KEY=VALUE` lines to the Unix socket named by
//! `NOTIFY_SOCKET`, when the service manager set one (`Type=notify`).
//!
//! A first supervisor sends `MAINPID=<its pid>` with `READY=1` once its
//! workers accept. An upgrade's commit point is the old supervisor reading
//! the new generation's "accepting" byte (`upgrade.rs`): it is the main
//! process systemd tracks, so it sends `MAINPID=<the new pid>` itself, then
//! waits on a barrier ([`barrier`], `sd_notify_barrier(3)`) until systemd
//! has processed it, and only then drains and exits — systemd never sees
//! its main process exit while it still tracks it. A rolled-back new
//! generation was never named to systemd. The new generation says nothing
//! to systemd unless the old one is gone (killed mid-upgrade): then it
//! sends `MAINPID=<its pid>` and `READY=1` itself, which systemd takes
//! only under `NotifyAccess=all` (`contrib/systemd/`).
//!
//! A name beginning with `@` is in Linux's abstract namespace (no file).
//! Without `NOTIFY_SOCKET` nothing is sent: most runs have no manager.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The variable naming the service manager's socket.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Send `state` (e.g. `"READY=1\nMAINPID=42"`) to the socket
/// `NOTIFY_SOCKET` names. `Ok(false)`: no socket is set, nothing sent.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(name) = std::env::var_os(NOTIFY_SOCKET_ENV) else {
        return Ok(false);
    };
    let name = name.to_string_lossy().into_owned();
    send_to(&name, state)
        .map_err(|e| io::Error::new(e.kind(), format!("{NOTIFY_SOCKET_ENV}={name}: {e}")))?;
    Ok(true)
}

/// One datagram of `state` to the socket `name` (a path, or `@name` in
/// the abstract namespace).
pub fn send_to(name: &str, state: &str) -> io::Result<()> {
    let addr = socket_addr(name)?;
    let socket = UnixDatagram::unbound()?;
    let sent = socket.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        // A datagram goes whole or not at all; a short count is not Unix.
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short datagram"));
    }
    Ok(())
}

/// `BARRIER=1` (`sd_notify_barrier(3)`): send the write end of a pipe
/// along, and wait until the manager closes it — it has then processed
/// every message sent before. `Ok(false)`: no socket is set. An error
/// when it does not answer within `timeout`.
pub fn barrier(timeout: Duration) -> io::Result<bool> {
    let Some(name) = std::env::var_os(NOTIFY_SOCKET_ENV) else {
        return Ok(false);
    };
    let name = name.to_string_lossy().into_owned();
    barrier_at(&name, timeout)
        .map_err(|e| io::Error::new(e.kind(), format!("{NOTIFY_SOCKET_ENV}={name}: {e}")))?;
    Ok(true)
}

/// [`barrier`] on the socket `name`.
pub fn barrier_at(name: &str, timeout: Duration) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.connect_addr(&socket_addr(name)?)?;
    let (wait, hang_up) = pipe()?;
    send_with_fd(&socket, b"BARRIER=1", hang_up.as_raw_fd())?;
    drop(hang_up); // the manager's copy is now the last one
    let mut poll = libc::pollfd {
        fd: wait.as_raw_fd(),
        events: 0, // POLLHUP is always reported
        revents: 0,
    };
    let millis = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    loop {
        // SAFETY: one valid pollfd, for the length given.
        match unsafe { libc::poll(&mut poll, 1, millis) } {
            1.. => return Ok(()),
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("BARRIER=1 not answered within {timeout:?}"),
                ))
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// A pipe, both ends close-on-exec: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are fresh descriptors nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// One datagram of `data` on the connected `socket`, carrying a copy of
/// `fd` (`SCM_RIGHTS`).
fn send_with_fd(socket: &UnixDatagram, data: &[u8], fd: RawFd) -> io::Result<()> {
    let fd_len = std::mem::size_of::<RawFd>() as u32;
    // u64s: the control buffer must be aligned for a `cmsghdr`.
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_len) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: a zeroed msghdr is valid (no name, no buffers yet).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer holds one cmsghdr and one fd
    // (CMSG_SPACE), so CMSG_FIRSTHDR is non-null and CMSG_DATA in bounds.
    unsafe {
        let header = libc::CMSG_FIRSTHDR(&msg);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(fd_len) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<RawFd>(), fd);
    }
    // SAFETY: msg points at live buffers for the call's duration.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, 0) };
    match sent {
        -1 => Err(io::Error::last_os_error()),
        n if n as usize != data.len() => {
            Err(io::Error::new(io::ErrorKind::WriteZero, "short datagram"))
        }
        _ => Ok(()),
    }
}

fn socket_addr(name: &str) -> io::Result<SocketAddr> {
    match name.strip_prefix('@') {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Some(abstract_name) => {
            #[cfg(target_os = "android")]
            use std::os::android::net::SocketAddrExt;
            #[cfg(target_os = "linux")]
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abstract_name.as_bytes())
        }
        _ => SocketAddr::from_pathname(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn the_state_arrives_as_one_datagram_on_a_socket_file() {
        let path = std::env::temp_dir().join(format!("echo-reactor-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let manager = UnixDatagram::bind(&path).unwrap();
        send_to(path.to_str().unwrap(), "READY=1\nMAINPID=42").unwrap();
        assert_eq!(receive(&manager), "READY=1\nMAINPID=42");
        let _ = std::fs::remove_file(&path);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_at_sign_names_a_socket_in_the_abstract_namespace() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("echo-reactor-notify-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let manager = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(&format!("@{name}"), "READY=1").unwrap();
        assert_eq!(receive(&manager), "READY=1");
    }

    #[test]
    fn a_barrier_returns_once_the_manager_has_read_it_and_times_out_if_never() {
        let path =
            std::env::temp_dir().join(format!("echo-reactor-barrier-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let manager = UnixDatagram::bind(&path).unwrap();
        let name = path.to_str().unwrap().to_string();
        // Unread: the pipe's write end sits in the manager's queue.
        let unread = barrier_at(&name, Duration::from_millis(50)).unwrap_err();
        assert_eq!(unread.kind(), io::ErrorKind::TimedOut);
        assert_eq!(receive(&manager), "BARRIER=1"); // its descriptor dropped
                                                    // Read (and the descriptor dropped) while the sender waits.
        let reader = std::thread::spawn(move || receive(&manager));
        barrier_at(&name, Duration::from_secs(30)).unwrap();
        assert_eq!(reader.join().unwrap(), "BARRIER=1");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        assert!(send_to("/nonexistent-dir/notify", "READY=1").is_err());
    }
}
