//! `--max-memory`: whatever never-reading clients do, the bytes the server
//! holds stay within the budget, and a client that reads its replies is
//! neither paused for long nor evicted.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use echo_reactor::protocol::Echo;
use echo_reactor::reactor::SCRATCH_BYTES;
use echo_reactor::{CloseReason, Config};
use support::*;

const MIB: usize = 1024 * 1024;

/// Open `count` connections that each write up to `bytes` and never read,
/// round-robin and non-blocking, until every one has sent it all, been
/// closed by the server, or stopped moving for a whole pass while the
/// server is under memory pressure or has evicted.
fn flood(server: &TestServer, count: usize, bytes: usize) -> Vec<TcpStream> {
    let mut flooders: Vec<(TcpStream, usize, bool)> = (0..count)
        .map(|_| {
            let stream = TcpStream::connect(server.addr).unwrap();
            stream.set_nonblocking(true).unwrap();
            (stream, 0, false)
        })
        .collect();
    let block = vec![b'f'; 64 * 1024];
    let start = Instant::now();
    loop {
        let mut moved = false;
        for (stream, sent, done) in flooders.iter_mut().filter(|f| !f.2) {
            match stream.write(&block[..block.len().min(bytes - *sent)]) {
                Ok(n) => {
                    *sent += n;
                    moved = true;
                    *done = *sent >= bytes;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => *done = true, // closed by the server (evicted)
            }
        }
        if flooders.iter().all(|f| f.2) {
            break;
        }
        // Nobody could write: the server has stopped reading them all, by
        // the budget. Not merely "some read was paused once": on a busy
        // machine a whole pass can find every send buffer full while the
        // server waits for a core, and the flood would end before the
        // budget was ever reached.
        let stats = server.stats();
        let held_back = stats.memory_pressure == 1 || stats.closed_by(CloseReason::Evicted) > 0;
        if !moved && held_back {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the flood never settled: {stats}"
        );
        if !moved {
            thread::yield_now();
        }
    }
    flooders.into_iter().map(|f| f.0).collect()
}

/// Send `rounds` messages of `size` bytes and check each echo.
fn well_behaved(addr: std::net::SocketAddr, rounds: usize, size: usize) {
    well_behaved_on(connect(addr), rounds, size);
}

/// [`well_behaved`] on a connection already open.
fn well_behaved_on(mut stream: TcpStream, rounds: usize, size: usize) {
    for round in 0..rounds {
        let message = pattern(size, round as u64);
        let mut writer = stream.try_clone().unwrap();
        let sent = message.clone();
        let sender = thread::spawn(move || writer.write_all(&sent).unwrap());
        let mut echoed = vec![0u8; size];
        stream.read_exact(&mut echoed).unwrap();
        sender.join().unwrap();
        assert_same_bytes(&echoed, &message);
    }
}

/// A connection that has shown the server it reads its replies: one reply
/// large enough to queue in the server, read only once it is queued (the
/// server then sees its queued output drain). Evictions spare such clients
/// until every one that never read is gone.
fn proven_reader(server: &TestServer) -> TcpStream {
    let mut stream = connect(server.addr);
    let message = pattern(8 * MIB, 99);
    let mut writer = stream.try_clone().unwrap();
    let sent = message.clone();
    let sender = thread::spawn(move || writer.write_all(&sent).unwrap());
    server.wait_for("the reply to queue", |s| s.held_bytes > 0);
    let mut echoed = vec![0u8; message.len()];
    stream.read_exact(&mut echoed).unwrap();
    sender.join().unwrap();
    assert_same_bytes(&echoed, &message);
    stream
}

fn budget_server(max_memory: usize) -> TestServer {
    raise_limit_for_children();
    let config = Config {
        max_memory,
        stall_timeout: Some(Duration::from_secs(60)),
        ..Config::default()
    };
    TestServer::start(config, Echo)
}

#[test]
fn never_readers_cannot_push_held_bytes_past_the_budget_and_a_reader_gets_every_reply() {
    let budget = 32 * MIB;
    let server = budget_server(budget);
    let reader = {
        let stream = proven_reader(&server);
        thread::spawn(move || well_behaved_on(stream, 50, 256 * 1024))
    };
    let flooders = flood(&server, 2_000, 2 * MIB);
    if reader.join().is_err() {
        panic!("the well-behaved client lost replies: {}", server.stats());
    }
    // One more round trip after the flood settled.
    well_behaved(server.addr, 5, 1024 * 1024);
    let stats = server.stats();
    assert!(
        stats.peak_held_bytes as usize <= budget + SCRATCH_BYTES,
        "peak held {} bytes over a {budget}-byte budget: {stats}",
        stats.peak_held_bytes
    );
    assert!(
        stats.memory_pressure_episodes > 0 || stats.closed_by(CloseReason::Evicted) > 0,
        "the budget was never reached, so this tested nothing: {stats}"
    );
    drop(flooders);
}

#[test]
fn a_reader_that_keeps_sending_large_messages_it_reads_back_is_never_evicted() {
    // A small budget and many never-readers: the server must evict. Beside
    // them a client that has read its replies before echoes 1 MiB messages
    // — for a moment it too holds output, often more than any one
    // never-reader — and reads them back. The never-readers go first.
    let budget = 8 * MIB;
    let server = budget_server(budget);
    let reader = {
        let stream = proven_reader(&server);
        thread::spawn(move || well_behaved_on(stream, 40, MIB))
    };
    let flooders = flood(&server, 400, 4 * MIB);
    if reader.join().is_err() {
        panic!("the well-behaved client lost replies: {}", server.stats());
    }
    let stats = server.stats();
    assert!(
        stats.closed_by(CloseReason::Evicted) > 0,
        "nothing was evicted: {stats}"
    );
    assert!(
        stats.peak_held_bytes as usize <= budget + SCRATCH_BYTES,
        "{stats}"
    );
    drop(flooders);
}

/// Whether the server has closed `stream` (a client that sent a partial
/// line, so no reply is owed): a read finds its end or a reset.
fn closed_by_server(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0; 1];
    let closed = match (&*stream).read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

#[test]
fn partial_messages_from_one_batch_of_events_cannot_overshoot_the_budget() {
    // 200 clients each send 60 KB of a line that never ends while the
    // server is held (SIGSTOP), so one epoll_wait hands it all at once.
    // Input held for partial messages counts against the budget, checked
    // as it grows — not only at the end of the turn.
    raise_limit_for_children();
    let budget = 4 * MIB;
    let server = ServeProcess::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--protocol",
            "prefix",
            "--max-memory",
            "4MiB",
        ],
        1,
    );
    server.signal(libc::SIGSTOP);
    let clients: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addr(0)).unwrap();
            stream.write_all(&vec![b'p'; 60_000]).unwrap();
            stream
        })
        .collect();
    server.signal(libc::SIGCONT);
    // The batch is read a turn's budget at a time, and a fresh connection
    // is answered between those turns, so wait for the eviction itself:
    // the server closing one of the clients.
    let start = Instant::now();
    while !clients.iter().any(closed_by_server) {
        assert!(
            start.elapsed() < DEADLINE,
            "no client evicted in {DEADLINE:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
    // The loop still answers.
    let mut probe = connect(server.addr(0));
    probe.write_all(b"probe\n").unwrap();
    assert_eq!(read_exact(&mut probe, 12), b"Echo=>probe\n");
    server.signal(libc::SIGTERM);
    let (status, stdout) = server.wait_exit();
    assert!(status.success());
    let stat = |key| echo_reactor::stats::stat_value(&stdout, key).unwrap() as usize;
    assert!(stat("closed_evicted") > 0, "{stdout}");
    assert!(
        stat("peak_held_capacity") <= budget + 2 * SCRATCH_BYTES,
        "input overshot the budget: {stdout}"
    );
    assert!(stat("memory_pressure_episodes") >= 1, "{stdout}");
    drop(clients);
}
