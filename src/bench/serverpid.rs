//! Is `--server-pid` the server we load? A check from `/proc`.
//!
//! The server's CPU time and memory are read by pid, so a wrong pid gives
//! another process's figures under the server's name. Before the run the
//! bench looks for the sockets listening on the target's port in this
//! network namespace (`/proc/net/tcp`, `/proc/net/tcp6`) and for one of
//! them among the descriptors of the pid (or of its children: a
//! supervisor's workers hold the listeners). It warns when the pid is
//! gone, or is not the listener; when it cannot tell (a remote target, a
//! process of another user), it says nothing.

use std::collections::HashSet;
use std::net::SocketAddr;

use super::sysinfo::descendants;

/// Socket state `0A` in `/proc/net/tcp`: `TCP_LISTEN`.
const TCP_LISTEN: &str = "0A";

/// A warning if `pid` is not (or no longer) the server listening on `addr`.
pub fn check(pid: u32, addr: SocketAddr) -> Option<String> {
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Some(format!(
            "--server-pid {pid}: no such process; the server's CPU and memory will be missing"
        ));
    }
    let listening = listening_inodes(addr.port());
    if listening.is_empty() {
        return None; // not a listener of this namespace: nothing to compare
    }
    let mut pids = vec![pid];
    pids.extend(descendants(pid));
    let mut readable = false;
    for p in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{p}/fd")) else {
            continue;
        };
        readable = true;
        for fd in fds.filter_map(Result::ok) {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let inode = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok());
            if inode.is_some_and(|i| listening.contains(&i)) {
                return None;
            }
        }
    }
    readable.then(|| {
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        format!(
            "--server-pid {pid} ({}) is not the process listening on {addr}: \
             the \"server\" CPU and memory figures will be that process's",
            name.trim()
        )
    })
}

/// The inodes of the sockets listening on `port` in this network namespace.
fn listening_inodes(port: u16) -> HashSet<u64> {
    let mut found = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        found.extend(text.lines().skip(1).filter_map(|l| listener_on(l, port)));
    }
    found
}

/// The inode of a `/proc/net/tcp` line if it is a listener on `port`.
/// Columns: `sl local_address rem_address st ... uid timeout inode`,
/// addresses as `HEXADDR:HEXPORT`.
fn listener_on(line: &str, port: u16) -> Option<u64> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let local_port = fields.get(1)?.rsplit(':').next()?;
    let listening = *fields.get(3)? == TCP_LISTEN;
    (listening && u16::from_str_radix(local_port, 16).ok()? == port)
        .then(|| fields.get(9)?.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proc_net_tcp_line_names_its_listener() {
        let line = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0000000000000000 100 0 0 10 0";
        assert_eq!(listener_on(line, 0x1F90), Some(123456));
        assert_eq!(listener_on(line, 80), None);
        let established = line.replace(" 0A ", " 01 ");
        assert_eq!(listener_on(&established, 0x1F90), None);
    }

    #[test]
    fn this_process_is_the_listener_of_its_own_socket_and_not_of_another() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(check(std::process::id(), addr), None);
        // PID 1 does not hold our listener (or cannot be read: no warning).
        if let Some(warning) = check(1, addr) {
            assert!(
                warning.contains("is not the process listening"),
                "{warning}"
            );
        }
    }
}
