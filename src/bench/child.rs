//! The child server: `echo-reactor serve` started on an ephemeral port
//! when the bench has no `--addr`, and stopped at the end whatever
//! happens (its final stats line is read back).

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::args::BenchProtocol;
use super::interrupt;

/// An `echo-reactor serve` child on an ephemeral port; stopped on drop.
pub(super) struct ChildServer {
    child: Child,
    pub(super) addr: SocketAddr,
    stdout: BufReader<ChildStdout>,
}

impl ChildServer {
    pub(super) fn start(protocol: BenchProtocol, proxy_header: bool) -> io::Result<ChildServer> {
        let protocol = match protocol {
            BenchProtocol::Echo => "echo",
            BenchProtocol::Upper => "upper",
        };
        let exe = std::env::current_exe()?;
        let mut command = Command::new(exe);
        // It dies with us, and Ctrl-C at the terminal reaches only us (we
        // then stop it in order, below).
        interrupt::die_with_parent(&mut command);
        let mut child = command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--protocol",
                protocol,
                "--shutdown-grace",
                "2",
            ])
            .args(proxy_header.then_some("--proxy-protocol"))
            .env("RUST_LOG", "warn")
            // The bench does no auth handshake: a key in our environment
            // would make every connection fail it.
            .env_remove(crate::auth_key::AUTH_KEY_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("start the server: {e}")))?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on tcp ")
            .and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!(
                "the server did not start (it said {line:?})"
            )));
        };
        Ok(ChildServer {
            child,
            addr,
            stdout,
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, wait (then kill if needed), and return its final stats line.
    pub(super) fn stop(mut self) -> Option<String> {
        // SAFETY: signals only the child we started, by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut rest = String::new();
        let _ = io::Read::read_to_string(&mut self.stdout, &mut rest);
        rest.lines()
            .find(|l| l.starts_with("stats "))
            .map(str::to_string)
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
