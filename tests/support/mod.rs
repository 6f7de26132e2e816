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

use echo_reactor::protocol::Protocol;
use echo_reactor::{Config, Server, ServerHandle, StatsSnapshot};

/// Generous: tests fail instead of hanging, even on a loaded CI machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A server running on its own thread; stopped and joined on drop.
pub struct TestServer {
    pub addr: SocketAddr,
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
            tx.send((server.local_addrs()[0], server.handle())).unwrap();
            server.run()
        });
        let (addr, handle) = rx.recv_timeout(DEADLINE).expect("server did not start");
        TestServer {
            addr,
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
