//! systemd's readiness protocol (`sd_notify(3)`), the sender's half: one
//! datagram of `KEY=VALUE` lines to the Unix socket named by
//! `NOTIFY_SOCKET`, when the service manager set one (`Type=notify`).
//!
//! The supervisor sends `READY=1` once its workers accept, and with it
//! `MAINPID=<its pid>`: after an upgrade the new supervisor is not the
//! process systemd started, and `MAINPID` tells systemd to track it from
//! now on (the unit needs `NotifyAccess=all` for systemd to take the
//! message from it; `contrib/systemd/`).
//!
//! A name beginning with `@` is in Linux's abstract namespace (no file).
//! Without `NOTIFY_SOCKET` nothing is sent: most runs have no manager.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

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
    fn a_missing_socket_is_an_error_not_a_panic() {
        assert!(send_to("/nonexistent-dir/notify", "READY=1").is_err());
    }
}
