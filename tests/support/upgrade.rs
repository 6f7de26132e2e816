//! Helpers for the tests of upgrading without downtime: a scratch
//! directory holding the binary a server runs from (replaced as a deploy
//! would), the new generation's pid, and the log lines an upgrade writes.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::thread;
use std::time::{Duration, Instant};

use super::workers::spawn_workers_with;
use super::{connect, read_exact, ServeProcess, DEADLINE};

/// A directory of the test's own, removed at the end.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("echo-reactor-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn binary(&self) -> PathBuf {
        self.0.join("echo-reactor")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.0.join("echo-reactor.pid")
    }

    pub fn pid_in_file(&self) -> i32 {
        std::fs::read_to_string(self.pid_file())
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Put the real binary at [`Scratch::binary`] (a rename over the file,
    /// as a package manager does: the running image is not touched), and
    /// wait until it can be run.
    pub fn install_real_binary(&self) {
        let staged = self.0.join("staged");
        std::fs::copy(env!("CARGO_BIN_EXE_echo-reactor"), &staged).unwrap();
        std::fs::rename(&staged, self.binary()).unwrap();
        // A process another test thread forks while the copy was open for
        // writing holds that descriptor until it execs: running the file
        // meanwhile fails with ETXTBSY.
        let start = Instant::now();
        while let Err(e) = Command::new(self.binary()).arg("--version").output() {
            assert!(
                e.raw_os_error() == Some(libc::ETXTBSY) && start.elapsed() < DEADLINE,
                "run {}: {e}",
                self.binary().display()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Put a shell script at [`Scratch::binary`] in its place.
    pub fn install_script(&self, body: &str) {
        let staged = self.0.join("staged");
        std::fs::write(&staged, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&staged, self.binary()).unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A new generation: not our child (the old supervisor started it), so
/// ended by pid when the test is done, with its workers (their parent-death
/// signal).
pub struct Generation(pub i32);

impl Drop for Generation {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal, to a server this test started.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

/// `serve ARGS --pid-file` run from the scratch copy of the binary, its
/// stderr followed, `lines` startup lines read.
pub fn spawn_from(
    scratch: &Scratch,
    args: &[&str],
    lines: usize,
) -> (ServeProcess, Receiver<String>) {
    scratch.install_real_binary();
    let mut cmd = Command::new(scratch.binary());
    cmd.arg("serve")
        .args(args)
        .arg("--pid-file")
        .arg(scratch.pid_file())
        .stdout(Stdio::piped())
        .env("RUST_LOG", "info");
    let (server, stderr) = spawn_workers_with(cmd, lines);
    // A SIGUSR2 before then is ignored.
    expect_line(&stderr, "workers accepting");
    assert_eq!(
        scratch.pid_in_file(),
        server.pid(),
        "the pid file names the supervisor"
    );
    (server, stderr)
}

/// Wait for the process `server` (the old supervisor) to exit: its
/// status. (Its stdout stays open: the new generation shares it.)
pub fn wait_for_exit(server: &mut ServeProcess) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the old supervisor did not exit"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Wait for a log line containing `needle`; on a timeout, the lines seen
/// meanwhile are in the failure.
pub fn expect_line(stderr: &Receiver<String>, needle: &str) -> String {
    let start = Instant::now();
    let mut seen = Vec::new();
    while let Some(left) = DEADLINE.checked_sub(start.elapsed()) {
        match stderr.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no line with {needle:?}; seen:\n{}", seen.join("\n"));
}

/// `SIGUSR2`, then the line saying the new generation accepts: its pid.
pub fn upgrade(server: &ServeProcess, stderr: &Receiver<String>) -> Generation {
    server.signal(libc::SIGUSR2);
    accepting(stderr)
}

/// The line saying the new generation accepts: its pid.
pub fn accepting(stderr: &Receiver<String>) -> Generation {
    let line = expect_line(stderr, "upgrade: new generation pid");
    assert!(line.ends_with("accepting"), "{line}");
    let pid = line
        .split("pid ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .expect("a pid in the line");
    Generation(pid)
}

/// One line echoed on a new connection; the connection kept open.
pub fn echo_once(addr: SocketAddr, line: &str) -> TcpStream {
    let mut stream = connect(addr);
    stream.write_all(line.as_bytes()).unwrap();
    assert_eq!(read_exact(&mut stream, line.len()), line.as_bytes());
    stream
}
