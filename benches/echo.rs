//! `cargo bench`: a quick closed-loop echo measurement against an in-process
//! echo-reactor, reporting throughput and — the figure that separates server
//! designs on loopback — system calls per echoed message, from the server's
//! own counters.
//!
//! This is the seed of the full matrix (peers, connection counts, sizes,
//! CPU per message) that the bench-harness issue builds. Every run is
//! bounded: a fixed message count per connection and a time cap.
//!
//! `ECHO_BENCH_MESSAGES` (default 5000) sets messages per connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use echo_reactor::fdlimit::raise_nofile_limit;
use echo_reactor::protocol::Echo;
use echo_reactor::{Config, Server};

const TIME_CAP: Duration = Duration::from_secs(60);

fn run_point(connections: usize, size: usize, messages: usize) {
    let config = Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        ..Config::default()
    };
    let server = Server::bind(&config, Echo).expect("bind");
    let addr = server.local_addrs()[0];
    let handle = server.handle();
    let server_thread = thread::spawn(move || server.run().expect("server"));

    let start = Instant::now();
    let clients: Vec<_> = (0..connections)
        .map(|id| {
            thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream.set_nodelay(true).unwrap();
                let mut msg = vec![b'x'; size];
                msg[..8].copy_from_slice(&(id as u64).to_le_bytes());
                let mut reply = vec![0u8; size];
                let mut done = 0;
                while done < messages && start.elapsed() < TIME_CAP {
                    stream.write_all(&msg).unwrap();
                    stream.read_exact(&mut reply).unwrap();
                    assert_eq!(reply, msg, "reply differs from what was sent");
                    done += 1;
                }
                done
            })
        })
        .collect();
    let echoed: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let elapsed = start.elapsed().as_secs_f64();
    let before_stop = handle.stats();
    handle.stop();
    server_thread.join().unwrap();

    let per_msg = |calls: u64| calls as f64 / echoed as f64;
    println!(
        "connections={connections:<5} size={size:<5} messages={echoed:<8} msgs/s={:<10.0} read/msg={:.3} write/msg={:.3} poll/msg={:.3} syscalls/msg={:.3}",
        echoed as f64 / elapsed,
        per_msg(before_stop.read_calls),
        per_msg(before_stop.write_calls),
        per_msg(before_stop.poll_calls),
        per_msg(before_stop.read_calls + before_stop.write_calls + before_stop.poll_calls),
    );
}

fn main() {
    // `cargo test --benches` passes --bench-less args; only run when benchmarking.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    raise_nofile_limit().expect("raise the open-file limit");
    let messages: usize = std::env::var("ECHO_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    println!(
        "echo-reactor closed-loop echo, blocking client threads (load-generator bound; see docs)"
    );
    for (connections, size) in [(1, 64), (50, 64), (50, 4096)] {
        run_point(connections, size, messages);
    }
}
