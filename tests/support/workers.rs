//! Helpers for tests of `serve --workers N`: the supervisor's children,
//! its log lines, and clients that echo one line each.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::thread;
use std::time::{Duration, Instant};

use super::{connect, read_exact, ServeProcess, DEADLINE};

/// The pids of `pid`'s children (Linux: /proc/PID/task/PID/children).
pub fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Wait until `pid` has exactly `count` children; return them.
pub fn wait_for_children(pid: i32, count: usize) -> Vec<i32> {
    let start = Instant::now();
    loop {
        let found = children(pid);
        if found.len() == count {
            return found;
        }
        assert!(start.elapsed() < DEADLINE, "{pid} has children {found:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Wait for a stderr line containing `needle`.
pub fn wait_for_line(stderr: &Receiver<String>, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let line = stderr.recv_timeout(DEADLINE).expect("a log line");
        if line.contains(needle) {
            return line;
        }
        assert!(start.elapsed() < DEADLINE, "no line with {needle:?}");
    }
}

/// `count` connections, each echoing one line and closing.
pub fn echo_each(addr: SocketAddr, count: usize) {
    for i in 0..count {
        let mut stream = connect(addr);
        let line = format!("hello {i}\n");
        stream.write_all(line.as_bytes()).unwrap();
        assert_eq!(read_exact(&mut stream, line.len()), line.as_bytes());
    }
}

/// `serve ARGS` with its stderr followed (one `listening on` line read).
pub fn spawn_workers(args: &[&str]) -> (ServeProcess, Receiver<String>) {
    spawn_workers_with(ServeProcess::command(args), 1)
}

/// `cmd` (a `serve` command) spawned with its stderr followed, once
/// `lines` startup lines are read.
pub fn spawn_workers_with(
    mut cmd: std::process::Command,
    lines: usize,
) -> (ServeProcess, Receiver<String>) {
    cmd.stderr(Stdio::piped());
    let mut server = ServeProcess::spawn_command(cmd, lines);
    let stderr = server.follow_stderr();
    (server, stderr)
}

/// Send `signal` to `pid`, a process the test started (or its child).
pub fn kill(pid: i32, signal: i32) {
    // SAFETY: kill only sends a signal, to a process of the server we started.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid}");
}

/// Kill `victim`, a worker of `server`, and wait until its replacement
/// runs; returns the new set of workers.
pub fn kill_and_wait_for_replacement(
    server: &ServeProcess,
    victim: i32,
    workers: usize,
) -> Vec<i32> {
    kill(victim, libc::SIGKILL);
    let start = Instant::now();
    loop {
        let now = children(server.pid());
        if now.len() == workers && !now.contains(&victim) {
            return now;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no replacement for {victim}: {now:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Run `cmd` to its end, at most [`DEADLINE`] (killed after): its exit
/// code (`None`: still running at the deadline) and stderr.
pub fn run_briefly(mut cmd: std::process::Command) -> (Option<i32>, String) {
    use std::io::Read;
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stderr = child.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    (code, reader.join().unwrap())
}

/// A client owed a reply it does not read yet: 8 MiB sent to `addr`,
/// returned once the worker has read all of it and holds replies it could
/// not send (seen in its `stats` lines on `stderr`: start the server with
/// [`Hoarder::SERVER_ARGS`]). Read
/// [`Hoarder::payload`]'s length back to release it.
pub struct Hoarder {
    pub stream: std::net::TcpStream,
    pub payload: Vec<u8>,
    sender: thread::JoinHandle<()>,
}

impl Hoarder {
    /// What `serve --workers 2` needs for a hoarder: stats lines to watch,
    /// and room to read all 8 MiB before pausing.
    pub const SERVER_ARGS: [&'static str; 8] = [
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--stats-interval",
        "0.05",
        "--max-buffered",
        "16MiB",
    ];

    pub fn start(addr: SocketAddr, stderr: &Receiver<String>) -> Hoarder {
        use echo_reactor::stats::stat_value;
        let stream = connect(addr);
        let payload = super::pattern(8 << 20, 5);
        let mut writer = stream.try_clone().unwrap();
        let sent = payload.clone();
        let sender = thread::spawn(move || writer.write_all(&sent).unwrap());
        loop {
            let line = wait_for_line(stderr, "stats active=");
            let stats = &line[line.find("stats ").unwrap()..];
            if stat_value(stats, "bytes_in") >= Some(8 << 20)
                && stat_value(stats, "held_bytes") > Some(0)
            {
                break;
            }
        }
        Hoarder {
            stream,
            payload,
            sender,
        }
    }

    /// Read every byte owed, check it, and close.
    pub fn read_all(mut self) {
        use std::io::Read;
        let mut echoed = vec![0u8; self.payload.len()];
        self.stream.read_exact(&mut echoed).unwrap();
        self.sender.join().unwrap();
        super::assert_same_bytes(&echoed, &self.payload);
    }
}

/// `BINARY serve ARGS` started the way systemd starts a socket-activated
/// service: `fd` at descriptor 3, `LISTEN_FDS=1`, `LISTEN_PID` its own
/// pid (the shell execs the server, so `$$` is its pid).
pub fn serve_handed(binary: &Path, fd: std::os::fd::RawFd, args: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "LISTEN_PID=$$ LISTEN_FDS=1 exec '{}' serve {args}",
            binary.display()
        ))
        .stdout(Stdio::piped());
    // SAFETY: only dup2/fcntl between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would leave close-on-exec set: clear it then.
            let placed = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if placed == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}
