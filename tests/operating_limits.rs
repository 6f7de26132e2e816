//! `serve` as a daemon: several transports at once, UDP, connection caps,
//! running out of descriptors, idle and stalled clients, and SIGTERM.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use echo_reactor::fdlimit::raise_nofile_limit;
use echo_reactor::protocol::{Echo, Upper};
use echo_reactor::stats::stat_value;
use echo_reactor::{CloseReason, Config, Server};
use support::*;

fn temp_socket_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "echo-reactor-test-{}-{name}.sock",
        std::process::id()
    ))
}

/// Echo `msg` over a TCP connection and return the reply.
fn tcp_echo(addr: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    stream.write_all(msg).unwrap();
    read_exact(&mut stream, msg.len())
}

// ---- transports ----

#[test]
fn two_tcp_listeners_ipv6_and_a_unix_socket_are_served_by_one_loop() {
    let path = temp_socket_path("multi");
    let config = Config {
        listen: vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()],
        unix: Some(path.clone()),
        ..Config::default()
    };
    let server = Server::bind(&config, Echo).unwrap();
    let addrs = server.local_addrs();
    assert!(addrs[1].is_ipv6());
    let handle = server.handle();
    let running = thread::spawn(move || server.run());

    assert_eq!(tcp_echo(addrs[0], b"over ipv4\n"), b"over ipv4\n");
    assert_eq!(tcp_echo(addrs[1], b"over ipv6\n"), b"over ipv6\n");
    let mut unix = UnixStream::connect(&path).unwrap();
    unix.set_read_timeout(Some(DEADLINE)).unwrap();
    unix.write_all(b"over unix\n").unwrap();
    let mut reply = [0u8; 10];
    unix.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"over unix\n");

    handle.stop();
    let stats = running.join().unwrap().unwrap();
    assert_eq!(stats.accepted, 3);
    assert!(!path.exists(), "the socket file is removed on clean exit");
}

fn udp_client() -> UdpSocket {
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    client
}

/// Send `datagram` until a reply comes (UDP may drop either), up to the deadline.
fn udp_ask(client: &UdpSocket, server: SocketAddr, datagram: &[u8]) -> Vec<u8> {
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    loop {
        client.send_to(datagram, server).unwrap();
        match client.recv_from(&mut buf) {
            Ok((n, from)) if from == server => return buf[..n].to_vec(),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("udp recv: {e}"),
        }
        assert!(start.elapsed() < DEADLINE, "no UDP reply");
    }
}

fn udp_server<P>(protocol: P) -> (SocketAddr, TestServer)
where
    P: echo_reactor::protocol::Protocol + Send + 'static,
{
    let config = Config {
        listen: vec![],
        udp: vec!["127.0.0.1:0".parse().unwrap()],
        ..Config::default()
    };
    let server = TestServer::start(config, protocol);
    (server.udp_addr.unwrap(), server)
}

#[test]
fn udp_answers_empty_and_60000_byte_datagrams_intact() {
    let (addr, server) = udp_server(Echo);
    let client = udp_client();
    assert_eq!(
        udp_ask(&client, addr, b""),
        b"",
        "an empty datagram gets an empty reply"
    );
    let big = pattern(60_000, 5);
    assert_same_bytes(&udp_ask(&client, addr, &big), &big);
    // Stats are published at the end of a loop turn: the reply can arrive first.
    server.wait_for("both datagrams counted", |s| {
        s.datagrams_in >= 2 && s.datagrams_out >= 2
    });
}

#[test]
fn udp_applies_the_protocol_to_each_datagram() {
    let (addr, _server) = udp_server(Upper);
    assert_eq!(
        udp_ask(&udp_client(), addr, "héllo".as_bytes()),
        "HéLLO".as_bytes()
    );
}

#[test]
fn a_udp_client_that_never_reads_its_replies_does_not_stop_the_server() {
    let (addr, server) = udp_server(Echo);
    let flooder = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&flooder)
        .set_recv_buffer_size(1024)
        .unwrap();
    let datagram = [b'x'; 1000];
    for _ in 0..10_000 {
        flooder.send_to(&datagram, addr).unwrap(); // and never read a reply
    }
    // Still alive and answering someone else.
    assert_eq!(
        udp_ask(&udp_client(), addr, b"anyone home?"),
        b"anyone home?"
    );
    // Every datagram received was either answered or dropped, and counted.
    server.wait_for("every datagram accounted for", |s| {
        s.datagrams_in > 0 && s.datagrams_in == s.datagrams_out + s.datagrams_dropped
    });
}

// ---- connection limits ----

#[test]
fn beyond_max_connections_a_new_client_is_closed_at_once_and_counted() {
    let config = Config {
        max_connections: Some(10),
        ..Config::default()
    };
    let server = TestServer::start(config, Echo);
    let mut held: Vec<TcpStream> = (0..10).map(|_| connect(server.addr)).collect();
    for (i, client) in held.iter_mut().enumerate() {
        let msg = format!("{i}\n");
        client.write_all(msg.as_bytes()).unwrap();
        assert_eq!(read_exact(client, msg.len()), msg.as_bytes());
    }
    let mut eleventh = connect(server.addr);
    let mut buf = [0u8; 1];
    match eleventh.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the 11th connection should be closed, got {other:?}"),
    }
    let stats = server.wait_for("the rejection to be counted", |s| s.rejected == 1);
    assert_eq!(stats.active, 10);
    held[0].write_all(b"still served\n").unwrap();
    assert_eq!(read_exact(&mut held[0], 13), b"still served\n");
}

#[test]
fn out_of_descriptors_the_server_sheds_without_spinning_and_recovers() {
    raise_nofile_limit().unwrap(); // our 400 client sockets
    let mut cmd = ServeProcess::command(&[
        "--listen",
        "127.0.0.1:0",
        "--max-connections",
        "1000", // above what 128 descriptors allow: the EMFILE path, not the cap
    ]);
    cmd.env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null());
    let mut server = ServeProcess::spawn_command(cmd, 1);
    let addr = server.addr(0);
    // Started under our (high) limit, since serve refuses a --max-connections
    // its limit could never allow; then the limit drops under it, as when an
    // operator runs `prlimit --nofile=128` on a running server.
    server.lower_open_file_limit(128);

    // 400 attempts: the kernel completes every handshake (backlog 1024),
    // but the server can hold only ~120 of them.
    let mut clients: Vec<TcpStream> = (0..400).map(|_| connect(addr)).collect();
    let mut answered = Vec::new();
    for (i, mut client) in clients.drain(..).enumerate() {
        let msg = format!("client {i}\n");
        let _ = client.write_all(msg.as_bytes());
        let mut reply = vec![0u8; msg.len()];
        match client.read_exact(&mut reply) {
            Ok(()) => {
                assert_eq!(reply, msg.as_bytes());
                answered.push(client);
            }
            // Shed: closed by the server (EOF or reset), never left hanging.
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
                ),
                "client {i}: {e}"
            ),
        }
    }
    assert!(server.is_running(), "the server died");
    assert!(answered.len() >= 100, "only {} answered", answered.len());
    assert!(
        answered.len() < 400,
        "all 400 answered: EMFILE was never hit"
    );

    // Connections it holds are still served...
    for client in answered.iter_mut().take(10) {
        client.write_all(b"again\n").unwrap();
        assert_eq!(read_exact(client, 6), b"again\n");
    }
    // ...and, with clients still waiting to be turned away, it does not spin.
    let _waiting: Vec<TcpStream> = (0..50).map(|_| connect(addr)).collect();
    let ticks_before = server.cpu_ticks();
    thread::sleep(Duration::from_secs(1)); // the measurement window
    let ticks = server.cpu_ticks() - ticks_before;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    assert!(
        ticks * 4 < ticks_per_sec,
        "used {ticks}/{ticks_per_sec} ticks of CPU in 1 s: spinning"
    );

    // Once some close, new connections are accepted again.
    drop(_waiting);
    answered.truncate(answered.len() - 20);
    let start = Instant::now();
    loop {
        let mut fresh = connect(addr);
        if fresh.write_all(b"room now?\n").is_ok() {
            let mut reply = [0u8; 10];
            if fresh.read_exact(&mut reply).is_ok() {
                assert_eq!(&reply, b"room now?\n");
                break;
            }
        }
        assert!(start.elapsed() < DEADLINE, "never accepted again");
        thread::sleep(Duration::from_millis(20));
    }

    server.signal(libc::SIGTERM);
    let (status, rest) = server.wait_exit();
    assert!(status.success(), "{status}");
    let stats_line = rest
        .lines()
        .find(|l| l.starts_with("stats "))
        .expect("final stats line");
    assert!(stat_value(stats_line, "shed").unwrap() > 0, "{stats_line}");
}

// ---- timers ----

#[test]
fn idle_timeout_closes_a_silent_connection_but_never_a_chatty_one() {
    let config = Config {
        idle_timeout: Some(Duration::from_secs(1)),
        ..Config::default()
    };
    let server = TestServer::start(config, Echo);
    let addr = server.addr;
    let chatty = thread::spawn(move || {
        let mut stream = connect(addr);
        for _ in 0..12 {
            stream.write_all(b".").unwrap();
            assert_eq!(read_exact(&mut stream, 1), b".", "chatty client was closed");
            thread::sleep(Duration::from_millis(250)); // well inside the 1 s idle limit
        }
    });
    let mut silent = connect(addr);
    let opened = Instant::now();
    let mut buf = [0u8; 1];
    assert_eq!(silent.read(&mut buf).unwrap(), 0, "closed by the server");
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_millis(950),
        "closed too early: {after:?}"
    );
    assert!(after < Duration::from_secs(3), "closed too late: {after:?}");
    chatty.join().unwrap();
    // The client can see EOF before the turn's counters are published.
    let stats = server.wait_for("the idle close to be counted", |s| {
        s.closed_by(CloseReason::Idle) >= 1
    });
    assert_eq!(
        stats.closed_by(CloseReason::Idle),
        1,
        "only the silent client"
    );
}

#[test]
fn stall_timeout_closes_a_client_that_never_reads_its_replies() {
    let config = Config {
        max_buffered: 64 * 1024,
        stall_timeout: Some(Duration::from_secs(1)),
        ..Config::default()
    };
    let server = TestServer::start(config, Echo);
    let mut hoarder = connect(server.addr);
    hoarder.set_nonblocking(true).unwrap();
    let chunk = pattern(64 * 1024, 1);
    let start = Instant::now();
    // Send without ever reading, until the server reports it holds output.
    while !(server.stats().read_pauses > 0 && server.stats().held_bytes > 0) {
        match hoarder.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("write: {e}"),
        }
        assert!(start.elapsed() < DEADLINE);
    }
    let stats = server.wait_for("the stalled client to be closed", |s| {
        s.closed_by(CloseReason::Stalled) == 1
    });
    assert_eq!(stats.held_bytes, 0, "its pending output was released");
    assert_eq!(stats.active, 0);
}

// ---- signals ----

#[test]
fn sigterm_delivers_every_pending_reply_then_exits_0_with_final_stats() {
    raise_nofile_limit().unwrap();
    const CLIENTS: usize = 100;
    const EACH: usize = 6 << 20;
    let mut cmd = ServeProcess::command(&[
        "--listen",
        "127.0.0.1:0",
        "--stats-interval",
        "0.05",
        "--max-buffered",
        "8MiB", // so it reads every byte before the signal
        "--max-memory",
        "0", // holds 600 MiB on purpose: this tests the drain, not the budget
        "--shutdown-grace",
        "60", // the test reads the clients one after another
    ]);
    cmd.stderr(std::process::Stdio::piped());
    let mut server = ServeProcess::spawn_command(cmd, 1);
    let addr = server.addr(0);
    // Follow the periodic stats lines on stderr to know what the server holds.
    let rx = server.follow_stderr();

    // 6 MiB each: more than the kernel can absorb (a send buffer autotunes
    // to at most tcp_wmem[2] = 4 MiB, a receive window that the client does
    // not drain stays near 128 KiB), so the
    // server itself holds replies when the signal comes.
    let base = pattern(EACH, 0);
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(addr)).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.write_all(&stamped(&base, i as u64)).unwrap(); // and do not read yet
    }
    // Wait until the server has read everything and holds replies it could not send.
    let start = Instant::now();
    loop {
        let line = rx.recv_timeout(DEADLINE).expect("stats line");
        let Some(at) = line.find("stats active=") else {
            continue;
        };
        let stats = &line[at..];
        if stat_value(stats, "bytes_in") == Some((CLIENTS * EACH) as u64) {
            assert!(stat_value(stats, "held_bytes").unwrap() > 0, "{stats}");
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "server never read everything: {stats}"
        );
    }

    server.signal(libc::SIGTERM);
    for (i, client) in clients.iter_mut().enumerate() {
        let mut received = Vec::new();
        client
            .read_to_end(&mut received)
            .expect("read until the server closes");
        assert_same_bytes(&received, &stamped(&base, i as u64));
    }
    let (status, rest) = server.wait_exit();
    assert_eq!(status.code(), Some(0));
    let stats_line = rest
        .lines()
        .find(|l| l.starts_with("stats "))
        .expect("final stats line");
    assert_eq!(
        stat_value(stats_line, "closed_shutdown"),
        Some(CLIENTS as u64),
        "{stats_line}"
    );
    assert_eq!(stat_value(stats_line, "active"), Some(0));
}

/// Answers `ok` to anything; a connection silent for 200 ms gets `timeout`
/// and is closed — a protocol deadline running on the reactor's timers.
struct Impatient;

impl echo_reactor::protocol::Protocol for Impatient {
    type Session = ();
    fn on_open(&self, reply: &mut echo_reactor::protocol::Reply<'_>) {
        reply.set_deadline(Duration::from_millis(200));
    }
    fn on_bytes(
        &self,
        _: &mut (),
        input: &[u8],
        reply: &mut echo_reactor::protocol::Reply<'_>,
    ) -> usize {
        reply.send(b"ok\n");
        reply.set_deadline(Duration::from_millis(200)); // re-armed by every message
        input.len()
    }
    fn on_deadline(&self, _: &mut (), reply: &mut echo_reactor::protocol::Reply<'_>) {
        reply.send(b"timeout\n");
        reply.close();
    }
    fn on_datagram(&self, _: &[u8], _: &mut Vec<u8>) {}
}

#[test]
fn a_protocol_deadline_fires_on_the_reactor_timers_and_its_reply_is_delivered() {
    let server = TestServer::start(Config::default(), Impatient);
    let mut client = connect(server.addr);
    let opened = Instant::now();
    for _ in 0..3 {
        client.write_all(b"x").unwrap();
        assert_eq!(read_exact(&mut client, 3), b"ok\n");
    }
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"timeout\n");
    assert!(opened.elapsed() >= Duration::from_millis(200));
    let stats = server.wait_for("the close to be counted", |s| s.active == 0);
    assert_eq!(stats.closed_by(CloseReason::ProtocolClosed), 1);
}

#[test]
fn a_second_sigterm_during_the_grace_period_exits_at_once_and_removes_the_unix_socket() {
    let dir = std::env::temp_dir().join(format!("echo-reactor-2nd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    let mut cmd = ServeProcess::command(&[
        "--unix",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--max-buffered",
        "64KiB",
        "--shutdown-grace",
        "600",
        "--stats-interval",
        "0.05",
    ]);
    cmd.stderr(std::process::Stdio::piped());
    let mut server = ServeProcess::spawn_command(cmd, 2);
    assert!(path.exists());
    let rx = server.follow_stderr();
    // A client that never reads keeps output pending, so the grace period would last.
    let mut hoarder = connect(server.addr(0));
    hoarder.set_nonblocking(true).unwrap();
    let chunk = pattern(64 * 1024, 2);
    let start = Instant::now();
    'flood: loop {
        match hoarder.write(&chunk) {
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("write: {e}"),
        }
        while let Ok(line) = rx.try_recv() {
            if line.contains("stats ") && !line.contains(" held_bytes=0 ") {
                break 'flood; // the server holds output it cannot send
            }
        }
        assert!(start.elapsed() < DEADLINE, "the server never held output");
    }
    server.signal(libc::SIGTERM);
    let start = Instant::now();
    while !rx
        .recv_timeout(DEADLINE)
        .expect("log line")
        .contains("0 connections lingering, 1 with output to flush")
    {
        assert!(start.elapsed() < DEADLINE);
    }
    assert!(server.is_running(), "still flushing for the hoarder");
    server.signal(libc::SIGTERM);
    let (status, _) = server.wait_exit();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status}");
    assert!(!path.exists(), "the socket file outlived the server");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_connection_closed_earlier_in_the_same_turn_does_not_count_against_max_connections() {
    // With --max-connections 1: client A leaves and client B arrives while
    // the server is held (SIGSTOP), so one epoll_wait reports both. A is
    // closed first but stays in the slab until the end of the turn; B must
    // still be served, not turned away as if A were alive.
    let server = ServeProcess::spawn(&["--listen", "127.0.0.1:0", "--max-connections", "1"], 1);
    let addr = server.addr(0);
    let mut a = connect(addr);
    a.write_all(b"a\n").unwrap();
    assert_eq!(read_exact(&mut a, 2), b"a\n", "A is being served");
    server.signal(libc::SIGSTOP);
    drop(a);
    let mut b = connect(addr);
    b.write_all(b"b\n").unwrap();
    server.signal(libc::SIGCONT);
    // A rejected client would read EOF (or a reset) here instead.
    let mut reply = [0u8; 2];
    let got = b.read_exact(&mut reply);
    assert!(got.is_ok(), "B was turned away: {got:?}");
    assert_eq!(&reply, b"b\n");
}
