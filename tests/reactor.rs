//! The reactor over real sockets on 127.0.0.1: round trips of every size,
//! many clients at once, slow readers, backpressure, half-close, resets,
//! and buffers released once connections go idle.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use echo_reactor::fdlimit::raise_nofile_limit;
use echo_reactor::protocol::{Echo, Upper};
use echo_reactor::reactor::SCRATCH_BYTES;
use echo_reactor::{CloseReason, Config};
use socket2::{Domain, SockRef, Socket, Type};
use support::*;

fn echo_server() -> TestServer {
    TestServer::start(Config::default(), Echo)
}

#[test]
fn echo_returns_every_size_byte_for_byte() {
    let server = echo_server();
    for (seed, size) in [0, 1, 1024, 64 * 1024, 1 << 20, 8 << 20]
        .into_iter()
        .enumerate()
    {
        let payload = pattern(size, seed as u64);
        let reply = round_trip(server.addr, payload.clone());
        assert_same_bytes(&reply, &payload);
    }
    let stats = server.stop();
    assert_eq!(stats.closed_by(CloseReason::PeerClosed), 6);
}

#[test]
fn upper_uppercases_ascii_and_leaves_multibyte_utf8_intact() {
    let server = TestServer::start(Config::default(), Upper);
    let text = "hello, wörld — ça va? ß ünïcödé 123 {x}\n";
    let reply = round_trip(server.addr, text.as_bytes().to_vec());
    assert_eq!(
        String::from_utf8(reply).expect("still valid UTF-8"),
        "HELLO, WöRLD — çA VA? ß üNïCöDé 123 {X}\n"
    );
}

#[test]
fn a_thousand_concurrent_connections_each_get_twenty_verified_replies() {
    raise_nofile_limit().unwrap(); // 1000 client + 1000 server sockets in this process
    const CONNECTIONS: usize = 1000;
    const MESSAGES: usize = 20;
    const THREADS: usize = 8;
    let server = echo_server();
    let addr = server.addr;
    let clients: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                let ids: Vec<usize> = (t..CONNECTIONS).step_by(THREADS).collect();
                let mut streams: Vec<TcpStream> = ids.iter().map(|_| connect(addr)).collect();
                for round in 0..MESSAGES {
                    // Every connection has a message in flight at once.
                    for (id, stream) in ids.iter().zip(&mut streams) {
                        let msg = format!("conn {id:04} message {round:02}\n");
                        stream.write_all(msg.as_bytes()).unwrap();
                    }
                    for (id, stream) in ids.iter().zip(&mut streams) {
                        let msg = format!("conn {id:04} message {round:02}\n");
                        let reply = read_exact(stream, msg.len());
                        assert_eq!(reply, msg.as_bytes(), "conn {id} round {round}");
                    }
                }
                ids.len()
            })
        })
        .collect();
    let served: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(served, CONNECTIONS);
    let stats = server.stop();
    assert_eq!(stats.accepted, CONNECTIONS as u64);
    assert_eq!(stats.bytes_out, stats.bytes_in);
}

#[test]
fn a_slow_reader_with_a_small_receive_buffer_gets_all_4mib_in_order() {
    let server = echo_server();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap(); // before connect, so the window is small
    socket.connect(&server.addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let payload = pattern(4 << 20, 42);
    let mut writer = stream.try_clone().unwrap();
    let to_send = payload.clone();
    let sender = thread::spawn(move || {
        writer.write_all(&to_send).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    // Read in small bites, pausing now and then, so the server keeps
    // meeting a full send buffer and must keep the tail of partial writes.
    let mut received = Vec::with_capacity(payload.len());
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk).unwrap() {
            0 => break,
            n => received.extend_from_slice(&chunk[..n]),
        }
        if received.len() % (256 * 1024) < 1024 {
            thread::sleep(Duration::from_millis(2));
        }
    }
    sender.join().unwrap();
    assert_same_bytes(&received, &payload);
}

#[test]
fn backpressure_bounds_server_memory_for_a_client_that_does_not_read() {
    const MAX_BUFFERED: usize = 256 * 1024;
    const SENT: usize = 32 << 20;
    let config = Config {
        max_buffered: MAX_BUFFERED,
        ..Config::default()
    };
    let server = TestServer::start(config, Echo);
    // One read's reply can land on top of a buffer just under the mark.
    let bound = (MAX_BUFFERED + SCRATCH_BYTES) as u64;

    let mut flooder = connect(server.addr);
    let mut writer = flooder.try_clone().unwrap();
    let payload = pattern(SENT, 7);
    let to_send = payload.clone();
    let sender = thread::spawn(move || writer.write_all(&to_send).unwrap());

    // The server fills its buffer for this client, then stops reading it.
    let paused = server.wait_for("reading to pause", |s| {
        s.read_pauses >= 1 && s.held_bytes >= MAX_BUFFERED as u64
    });
    assert!(
        paused.held_bytes <= bound,
        "held {} > {bound}",
        paused.held_bytes
    );

    // Another client is served meanwhile.
    let reply = round_trip(server.addr, b"still there?".to_vec());
    assert_eq!(reply, b"still there?");

    // The flooder now reads all 32 MiB back, intact and in order.
    let received = read_exact(&mut flooder, SENT);
    sender.join().unwrap();
    assert_same_bytes(&received, &payload);
    let stats = server.stats();
    assert!(
        stats.peak_held_bytes <= bound,
        "peak {} > {bound}",
        stats.peak_held_bytes
    );
}

#[test]
fn half_close_delivers_every_reply_before_the_server_closes() {
    let server = echo_server();
    let payload = pattern(1 << 20, 3);
    // round_trip sends everything, then shutdown(Write), then reads to EOF.
    let reply = round_trip(server.addr, payload.clone());
    assert_same_bytes(&reply, &payload);
    let stats = server.wait_for("the connection to close", |s| s.active == 0);
    assert_eq!(stats.closed_by(CloseReason::PeerClosed), 1);
}

/// Write without reading until `server_is_holding()` says the server now
/// buffers output for us (checked whenever the kernel stops taking bytes).
/// Returns every byte sent, to verify the echo later.
fn flood_until(stream: &mut TcpStream, seed: u64, server_is_holding: impl Fn() -> bool) -> Vec<u8> {
    let chunk = pattern(64 * 1024, seed);
    let mut sent = Vec::new();
    stream.set_nonblocking(true).unwrap();
    let start = std::time::Instant::now();
    loop {
        match stream.write(&chunk) {
            Ok(n) => sent.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if server_is_holding() {
                    break;
                }
                assert!(
                    start.elapsed() < DEADLINE,
                    "the server never buffered output"
                );
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("flood: {e}"),
        }
    }
    stream.set_nonblocking(false).unwrap();
    sent
}

#[test]
fn a_client_that_resets_is_released_without_disturbing_others() {
    let config = Config {
        max_buffered: 64 * 1024,
        ..Config::default()
    };
    let server = TestServer::start(config, Echo);
    let mut bystander = connect(server.addr);
    bystander.write_all(b"before\n").unwrap();
    assert_eq!(read_exact(&mut bystander, 7), b"before\n");

    // The resetter floods without reading until the kernel stops taking
    // bytes, so the server holds output for it.
    let mut resetter = connect(server.addr);
    // Until accept() the queued socket has no file, so its inode reads 0.
    server.wait_for("the resetter to be accepted", |s| s.accepted == 2);
    let server_side_inode = tcp_socket_inode(server.addr, resetter.local_addr().unwrap())
        .expect("server-side socket in /proc/net/tcp");
    flood_until(&mut resetter, 9, || {
        let s = server.stats();
        s.held_bytes > 0 && s.read_pauses >= 1
    });
    assert!(process_holds_socket(server_side_inode));

    // SO_LINGER 0 turns close into an RST.
    SockRef::from(&resetter)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(resetter);

    let stats = server.wait_for("the reset connection to be released", |s| {
        s.active == 1 && s.held_bytes == 0 && s.held_capacity == 0
    });
    assert_eq!(stats.closed_by(CloseReason::Reset), 1, "{stats}");
    assert!(
        !process_holds_socket(server_side_inode),
        "the server still holds the reset socket's descriptor"
    );
    bystander.write_all(b"after\n").unwrap();
    assert_eq!(read_exact(&mut bystander, 6), b"after\n");
}

#[test]
fn idle_connections_hold_no_buffers_after_their_replies_are_sent() {
    raise_nofile_limit().unwrap();
    const CONNECTIONS: usize = 1000;
    const FLOODERS: usize = 10;
    let config = Config {
        max_buffered: 256 * 1024,
        ..Config::default()
    };
    let server = TestServer::start(config, Echo);
    let mut clients: Vec<TcpStream> = (0..CONNECTIONS).map(|_| connect(server.addr)).collect();

    // A few clients send without reading until every kernel buffer on the
    // way is full, so the server must hold reply tails for them...
    // (Each stuck flooder holds at least max_buffered: that is when reading pauses.)
    let floods: Vec<Vec<u8>> = clients[..FLOODERS]
        .iter_mut()
        .enumerate()
        .map(|(i, client)| {
            flood_until(client, i as u64, || {
                server.stats().held_bytes >= ((i + 1) * 256 * 1024) as u64
            })
        })
        .collect();
    let busy = server.stats();
    assert!(
        busy.held_capacity > 0,
        "the server should be holding reply tails: {busy}"
    );
    // ...while every client echoes once.
    for (i, client) in clients[FLOODERS..].iter_mut().enumerate() {
        let msg = format!("hello from {i}\n");
        client.write_all(msg.as_bytes()).unwrap();
        assert_eq!(read_exact(client, msg.len()), msg.as_bytes());
    }
    for (client, sent) in clients.iter_mut().zip(&floods) {
        assert_same_bytes(&read_exact(client, sent.len()), sent);
    }

    // Everyone is idle now: no connection may keep a buffer.
    let idle = server.wait_for("buffers released", |s| s.held_capacity == 0);
    assert_eq!(idle.held_bytes, 0);
    assert_eq!(
        idle.active, CONNECTIONS as u64,
        "idle connections stay open"
    );
    assert!(
        idle.peak_held_bytes >= (FLOODERS * 256 * 1024) as u64,
        "{idle}"
    );
}

#[test]
fn the_server_stops_from_another_thread_and_reports_final_stats() {
    let server = echo_server();
    let addr: SocketAddr = server.addr;
    let mut client = connect(addr);
    client.write_all(b"x").unwrap();
    assert_eq!(read_exact(&mut client, 1), b"x");
    let stats = server.stop(); // the Waker interrupts epoll_wait
    assert_eq!(stats.closed_by(CloseReason::Shutdown), 1);
    assert_eq!(stats.active, 0);
    let mut rest = Vec::new();
    assert_eq!(
        client.read_to_end(&mut rest).unwrap(),
        0,
        "closed by the server"
    );
}

#[test]
fn stopping_closes_idle_connections_at_once_instead_of_waiting_out_the_grace() {
    let config = Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        shutdown_grace: Duration::from_secs(120),
        ..Config::default()
    };
    let server = echo_reactor::Server::bind(&config, Echo).unwrap();
    let addr = server.local_addrs()[0];
    let handle = server.handle();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    thread::spawn(move || done_tx.send(server.run().unwrap()).unwrap());
    let mut idle = connect(addr);
    idle.write_all(b"hi").unwrap();
    assert_eq!(read_exact(&mut idle, 2), b"hi");

    handle.stop();
    // Nothing is pending, so there is nothing to wait for.
    let stats = done_rx
        .recv_timeout(DEADLINE)
        .expect("run() still waiting after a stop with nothing to flush");
    assert_eq!(stats.closed_by(CloseReason::Shutdown), 1);
}

// ---- reads that stop short with more queued ----
//
// "A short read means the queue is empty" is false in two places. To pin
// that deterministically the server is a child process held with SIGSTOP
// while the client queues everything, then resumed: its first read then
// meets all of it at once, and no later input brings a new edge.

/// Run `client` against a stopped `echo-reactor serve ARGS`, resume the
/// server, and return what `client`'s closure reads back.
fn against_a_paused_server(
    args: &[&str],
    client: impl FnOnce(&ServeProcess) -> Box<dyn FnOnce() -> Vec<u8>>,
) -> Vec<u8> {
    let server = ServeProcess::spawn(args, 1);
    server.signal(libc::SIGSTOP);
    let read_back = client(&server);
    server.signal(libc::SIGCONT);
    read_back()
}

#[test]
fn bytes_behind_a_tcp_urgent_mark_are_echoed_without_new_input() {
    // A TCP read stops at the urgent mark. The client sends `ab`, an urgent
    // `X`, then `cd`, and nothing more: every byte must come back (the
    // urgent one inline, in order).
    let echoed = against_a_paused_server(&["--listen", "127.0.0.1:0"], |server| {
        let mut stream = connect(server.addr(0));
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(b"ab").unwrap();
        SockRef::from(&stream).send_out_of_band(b"X").unwrap();
        stream.write_all(b"cd").unwrap();
        Box::new(move || {
            let mut echoed = vec![0u8; 5];
            let got = stream.read_exact(&mut echoed);
            assert!(got.is_ok(), "{got:?} after {echoed:?}");
            echoed
        })
    });
    assert_eq!(echoed, b"abXcd");
}

#[test]
fn bytes_after_a_unix_message_carrying_descriptors_are_echoed_without_new_input() {
    // A Unix stream read stops after a message that carried ancillary data
    // (here a passed descriptor, which the server's plain read discards).
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    let dir = std::env::temp_dir().join(format!("echo-reactor-anc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    // A line protocol, so the first read ("ab", no newline yet) sends
    // nothing back: the client reading a reply would free send space, and
    // that wake-up would reveal "cd\n" and hide the bug.
    let args = ["--unix", path.to_str().unwrap(), "--protocol", "prefix"];
    let echoed = against_a_paused_server(&args, |_| {
        let mut stream = UnixStream::connect(&path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        send_with_descriptor(stream.as_raw_fd(), b"ab", 0);
        stream.write_all(b"cd\n").unwrap();
        Box::new(move || {
            let mut echoed = vec![0u8; 11];
            let got = stream.read_exact(&mut echoed);
            assert!(got.is_ok(), "{got:?} after {echoed:?}");
            echoed
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(echoed, b"Echo=>abcd\n");
}

/// `sendmsg` of `bytes` with `fd` attached (SCM_RIGHTS).
fn send_with_descriptor(socket: i32, bytes: &[u8], fd: i32) {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer holds one cmsghdr with room for one int.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), fd);
        assert_eq!(libc::sendmsg(socket, &msg, 0), bytes.len() as isize);
    }
}

#[test]
fn counters_a_quiet_loop_has_not_copied_out_yet_reach_other_threads_while_it_sleeps() {
    // The loop copies its counters out at most once per publish interval;
    // a quick run of round trips leaves the last turns' numbers unseen. If
    // the loop then slept until the next event (none comes), a reader would
    // see them stale forever: it must wake up to publish them.
    let server = echo_server();
    let mut stream = connect(server.addr);
    let rounds = 200;
    for i in 0..rounds {
        stream.write_all(&[i as u8; 16]).unwrap();
        assert_eq!(read_exact(&mut stream, 16), vec![i as u8; 16]);
    }
    // The connection stays open and silent: no event will come.
    server.wait_for("every byte received to be published", |s| {
        s.bytes_in == 16 * rounds
    });
    drop(stream);
}
