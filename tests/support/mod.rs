//! Helpers shared by the integration tests: an in-process server on port 0,
//! waiting on the server's stats with a deadline, patterned payloads, and
//! blocking std clients (the simplest possible peers, like the Python
//! tutorials' clients).
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub mod scrape;
pub mod upgrade;
pub mod workers;

use echo_reactor::protocol::Protocol;
use echo_reactor::{Config, Server, ServerHandle, StatsSnapshot};

/// Generous: tests fail instead of hanging, even on a loaded CI machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A server running on its own thread; stopped and joined on drop.
pub struct TestServer {
    /// The first TCP listener (unspecified if there is none).
    pub addr: SocketAddr,
    /// The first UDP socket, if any.
    pub udp_addr: Option<SocketAddr>,
    pub handle: ServerHandle,
    thread: Option<JoinHandle<io::Result<StatsSnapshot>>>,
}

impl TestServer {
    /// Start `protocol` with `config`, listening on 127.0.0.1:0 unless `config.listen` says otherwise.
    pub fn start<P>(mut config: Config, protocol: P) -> TestServer
    where
        P: Protocol + Send + 'static,
    {
        if config.listen == Config::default().listen {
            config.listen = vec!["127.0.0.1:0".parse().unwrap()];
        }
        let (tx, rx) = mpsc::channel();
        let thread = thread::spawn(move || {
            let server = Server::bind(&config, protocol)?;
            let tcp = server.local_addrs().first().copied();
            let udp = server.udp_addrs().first().copied();
            tx.send((tcp, udp, server.handle())).unwrap();
            server.run()
        });
        let (tcp, udp_addr, handle) = rx.recv_timeout(DEADLINE).expect("server did not start");
        TestServer {
            addr: tcp.unwrap_or_else(|| "0.0.0.0:0".parse().unwrap()),
            udp_addr,
            handle,
            thread: Some(thread),
        }
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.handle.stats()
    }

    /// Poll the server's stats until `condition` holds; panic after [`DEADLINE`].
    pub fn wait_for(
        &self,
        what: &str,
        condition: impl Fn(&StatsSnapshot) -> bool,
    ) -> StatsSnapshot {
        let start = Instant::now();
        loop {
            let stats = self.stats();
            if condition(&stats) {
                return stats;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}; last {stats}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stop the server and return its final stats.
    pub fn stop(mut self) -> StatsSnapshot {
        self.handle.stop();
        let thread = self.thread.take().unwrap();
        thread
            .join()
            .expect("server thread panicked")
            .expect("server failed")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.stop();
            let _ = thread.join();
        }
    }
}

/// A blocking client whose reads and writes give up after [`DEADLINE`].
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// `len` bytes that differ by position and seed, so a lost, duplicated or
/// reordered chunk shows up in a comparison.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

/// `base` with `id` stamped at the start of every 4 KiB block: distinct
/// per client and cheap to make, so a reply sent to the wrong client, or a
/// misplaced block, shows up.
pub fn stamped(base: &[u8], id: u64) -> Vec<u8> {
    let mut payload = base.to_vec();
    for block in payload.chunks_mut(4096) {
        let n = block.len().min(8);
        block[..n].copy_from_slice(&id.to_le_bytes()[..n]);
    }
    payload
}

/// Send `payload` from a writer thread, shut down our sending side, and
/// read everything the server sends until it closes.
pub fn round_trip(addr: SocketAddr, payload: Vec<u8>) -> Vec<u8> {
    let mut stream = connect(addr);
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        writer.write_all(&payload).expect("write payload");
        writer.shutdown(Shutdown::Write).expect("shutdown write");
    });
    let mut received = Vec::new();
    stream
        .read_to_end(&mut received)
        .expect("read reply to EOF");
    sender.join().unwrap();
    received
}

/// Read exactly `len` bytes.
pub fn read_exact(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    stream.read_exact(&mut buf).expect("read_exact");
    buf
}

/// Assert two byte strings are equal, reporting the first difference
/// instead of dumping megabytes.
pub fn assert_same_bytes(got: &[u8], want: &[u8]) {
    if got == want {
        return; // memcmp: fast even in debug builds
    }
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("bytes differ first at offset {at} (of {} sent)", want.len());
    }
    assert_eq!(got.len(), want.len(), "same prefix, different lengths");
}

/// The inode of the TCP socket in this network namespace with these
/// endpoints (from /proc/net/tcp), to check later whether an fd still holds it.
pub fn tcp_socket_inode(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let hex = |addr: SocketAddr| match addr {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => unimplemented!("IPv4 only"),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
    })
}

/// Whether any descriptor of this process refers to socket `inode`.
pub fn process_holds_socket(inode: u64) -> bool {
    let target = format!("socket:[{inode}]");
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .any(|link| link.to_string_lossy() == target)
}

/// An `echo-reactor serve` child process: started, its `listening on ...`
/// lines read, and killed on drop if it is still running (ended by pid).
pub struct ServeProcess {
    pub child: std::process::Child,
    /// What each startup line named, e.g. `tcp 127.0.0.1:40211`.
    pub sockets: Vec<String>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl ServeProcess {
    /// `echo-reactor serve ARGS`, waiting for `lines` startup lines.
    pub fn spawn(args: &[&str], lines: usize) -> ServeProcess {
        Self::spawn_command(Self::command(args), lines)
    }

    /// The command `spawn` would run, to adjust before spawning.
    pub fn command(args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_echo-reactor"));
        cmd.arg("serve").args(args);
        cmd.stdout(std::process::Stdio::piped());
        cmd
    }

    pub fn spawn_command(mut cmd: std::process::Command, lines: usize) -> ServeProcess {
        use std::io::BufRead;
        let mut child = cmd.spawn().expect("spawn echo-reactor serve");
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut sockets = Vec::new();
        for _ in 0..lines {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read startup line");
            let named = line
                .trim()
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("unexpected startup line {line:?}"));
            sockets.push(named.to_string());
        }
        ServeProcess {
            child,
            sockets,
            stdout,
        }
    }

    /// The address of the `i`th startup line (`tcp ADDR` or `udp ADDR`).
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.sockets[i].split_once(' ').unwrap().1.parse().unwrap()
    }

    /// Every stderr line from now on, through a channel (read on a thread,
    /// so the child never blocks on a full pipe). Spawn with piped stderr.
    pub fn follow_stderr(&mut self) -> mpsc::Receiver<String> {
        use std::io::BufRead;
        let stderr = self.child.stderr.take().expect("spawned with piped stderr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Lower the running server's open-file limit (soft and hard) to `n`,
    /// as an operator's `prlimit --nofile=N --pid PID` would.
    pub fn lower_open_file_limit(&self, n: u64) {
        let limit = libc::rlimit {
            rlim_cur: n,
            rlim_max: n,
        };
        // SAFETY: prlimit on our own child; it only reads `limit`.
        let lowered = unsafe {
            libc::prlimit(
                self.pid(),
                libc::RLIMIT_NOFILE,
                &limit,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(lowered, 0, "{}", std::io::Error::last_os_error());
    }

    /// Send a signal to the child (and only the child, by pid).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill only sends a signal to the pid we started.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0, "kill");
    }

    /// CPU time (user + system) the child has used, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the parenthesised command name; utime and stime are 14th and 15th.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Wait (up to [`DEADLINE`]) for the child to exit; returns its exit
    /// status and the rest of its stdout.
    pub fn wait_exit(mut self) -> (std::process::ExitStatus, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(start.elapsed() < DEADLINE, "the server did not exit");
            thread::sleep(Duration::from_millis(10));
        };
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        (status, rest)
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Raise our soft open-file limit to the hard one; child processes inherit it.
pub fn raise_limit_for_children() {
    echo_reactor::fdlimit::raise_nofile_limit().expect("raise the open-file limit");
}

/// Make `close()` of this socket send RST instead of FIN (`SO_LINGER` 0):
/// a client that vanishes mid-conversation.
pub fn reset_on_close(stream: &TcpStream) {
    socket2::SockRef::from(stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
}

/// Connect with a receive buffer of about `bytes` (set before the
/// handshake, so the window the server sees is small from the start).
pub fn connect_with_receive_buffer(addr: SocketAddr, bytes: usize) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// `poll(2)` one socket for `events` (`libc::POLLIN`, ...) for at most
/// `timeout`; returns the events that are ready (0: timed out).
pub fn poll_socket(stream: &TcpStream, events: i16, timeout: Duration) -> i16 {
    use std::os::fd::AsRawFd;
    let mut pollfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events,
        revents: 0,
    };
    let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: one valid pollfd, and its count is 1.
        let rc = unsafe { libc::poll(&mut pollfd, 1, millis) };
        if rc >= 0 {
            return pollfd.revents;
        }
        let err = io::Error::last_os_error();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted, "poll: {err}");
    }
}

/// Whether the peer has closed or reset this connection, without reading
/// from it (replies may be waiting unread): waits up to `timeout`.
pub fn peer_hung_up(stream: &TcpStream, timeout: Duration) -> bool {
    let hung_up = libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR;
    poll_socket(stream, hung_up, timeout) & hung_up != 0
}

/// This process's resident set size (`VmRSS` in /proc/self/status), in bytes.
pub fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|n| n.trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// `echo-reactor bench ARGS...`, with logging off, not yet run.
pub fn bench_command(args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_echo-reactor"));
    command.arg("bench").args(args).env("RUST_LOG", "off");
    command
}

/// Run `echo-reactor bench ARGS...` to the end.
pub fn bench(args: &[&str]) -> std::process::Output {
    bench_command(args)
        .output()
        .expect("run echo-reactor bench")
}

/// An echo server that takes 10 ms per message: 100 msgs/s per
/// connection (a thread each, std only: a server of known, low capacity).
pub fn slow_server(size: usize) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            thread::spawn(move || {
                let mut msg = vec![0u8; size];
                while stream.read_exact(&mut msg).is_ok() {
                    thread::sleep(Duration::from_millis(10)); // deliberately slow
                    if stream.write_all(&msg).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// The path of the program `name` on PATH, or `None` (a printed reason to
/// skip) when it is not installed — except under CI, where its absence is
/// a failure: `.ci/run` installs `package`, which provides it.
pub fn required_tool(name: &str, package: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is not installed, and CI is set: .ci/run should have installed {package}"
        );
        eprintln!("SKIPPED: {name} is not installed (apt-get install {package})");
    }
    found
}
