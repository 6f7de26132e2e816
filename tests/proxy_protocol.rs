//! `serve --proxy-protocol`: a PROXY v1/v2 header starts every stream
//! connection; it is consumed, not echoed, and the address it names is
//! the one logged; a bad or missing header closes the connection, counted.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use echo_reactor::protocol::{Echo, ProxyHeaderFirst, Upper};
use echo_reactor::proxy_header::{encode, HeaderVersion};
use echo_reactor::{CloseReason, Config};
use support::{connect, read_exact, ServeProcess, TestServer, DEADLINE};

/// The handshake time the in-process servers give a header.
const HEADER_TIMEOUT: Duration = Duration::from_millis(300);

fn proxied_echo() -> TestServer {
    TestServer::start(
        Config::default(),
        ProxyHeaderFirst::new(Echo, HEADER_TIMEOUT),
    )
}

fn client_addr() -> SocketAddr {
    "203.0.113.7:51234".parse().unwrap()
}

/// The header a proxy would send for [`client_addr`] reaching `server`.
fn header_for(version: HeaderVersion, server: SocketAddr) -> Vec<u8> {
    encode(version, client_addr(), server)
}

/// Read until the server closes; returns what arrived (a reset counts as a close).
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("read: {e} (the server did not close the connection)"),
        }
    }
}

#[test]
fn a_header_split_at_every_byte_is_consumed_and_the_data_in_its_last_segment_is_echoed() {
    let server = proxied_echo();
    // Every byte this test sends, counted here: the server's published
    // counters may lag its loop by a publish interval, so the count before
    // each connection is not read back from them.
    let mut bytes_before = 0;
    for version in [HeaderVersion::V1, HeaderVersion::V2] {
        let header = header_for(version, server.addr);
        for cut in 1..header.len() {
            let mut stream = connect(server.addr);
            stream.write_all(&header[..cut]).unwrap();
            // The first piece is in the server (read, kept as a partial
            // header) before the rest arrives: two reads, split at `cut`.
            server.wait_for("the first piece of the header to be read", |s| {
                s.bytes_in == bytes_before + cut as u64
            });
            let mut rest = header[cut..].to_vec();
            rest.extend_from_slice(b"data after the header");
            bytes_before += (header.len() + b"data after the header".len()) as u64;
            stream.write_all(&rest).unwrap();
            let echoed = read_exact(&mut stream, b"data after the header".len());
            assert_eq!(echoed, b"data after the header", "{version} cut at {cut}");
            // Nothing else: the header is never echoed.
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            assert_eq!(read_to_close(&mut stream), b"", "{version} cut at {cut}");
        }
    }
    let stats = server.stop();
    assert_eq!(
        stats.closed_by(CloseReason::ProxyHeaderInvalid),
        0,
        "{stats}"
    );
}

#[test]
fn a_whole_header_and_data_in_one_segment_are_answered_too() {
    let server = proxied_echo();
    for version in [HeaderVersion::V1, HeaderVersion::V2] {
        let mut stream = connect(server.addr);
        let mut segment = header_for(version, server.addr);
        segment.extend_from_slice(b"one segment\n");
        stream.write_all(&segment).unwrap();
        assert_eq!(read_exact(&mut stream, 12), b"one segment\n", "{version}");
        // Later reads take the reactor's byte-for-byte shortcut.
        stream.write_all(b"and later").unwrap();
        assert_eq!(read_exact(&mut stream, 9), b"and later", "{version}");
    }
}

#[test]
fn a_transforming_protocol_behind_the_header_transforms_every_byte_after_it() {
    let server = TestServer::start(
        Config::default(),
        ProxyHeaderFirst::new(Upper, HEADER_TIMEOUT),
    );
    let mut stream = connect(server.addr);
    let mut segment = header_for(HeaderVersion::V1, server.addr);
    segment.extend_from_slice(b"first ");
    stream.write_all(&segment).unwrap();
    assert_eq!(read_exact(&mut stream, 6), b"FIRST ");
    stream.write_all(b"then more").unwrap();
    assert_eq!(read_exact(&mut stream, 9), b"THEN MORE");
}

#[test]
fn a_garbage_header_closes_the_connection_and_is_counted() {
    let server = proxied_echo();
    let mut stream = connect(server.addr);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_to_close(&mut stream),
        b"",
        "nothing is echoed to a refused client"
    );
    let stats = server.wait_for("the refusal to be counted", |s| {
        s.closed_by(CloseReason::ProxyHeaderInvalid) == 1
    });
    assert_eq!(
        stats.closed_by(CloseReason::ProxyHeaderTimeout),
        0,
        "{stats}"
    );
    // Other clients are served as usual.
    let mut good = connect(server.addr);
    let mut segment = header_for(HeaderVersion::V2, server.addr);
    segment.extend_from_slice(b"still here");
    good.write_all(&segment).unwrap();
    assert_eq!(read_exact(&mut good, 10), b"still here");
}

#[test]
fn no_header_within_the_handshake_time_closes_the_connection_and_is_counted() {
    let server = proxied_echo();
    let mut silent = connect(server.addr);
    // And one that sends a valid beginning but never finishes it.
    let mut partial = connect(server.addr);
    partial
        .write_all(&header_for(HeaderVersion::V1, server.addr)[..10])
        .unwrap();
    let started = Instant::now();
    assert_eq!(read_to_close(&mut silent), b"");
    assert_eq!(read_to_close(&mut partial), b"");
    assert!(
        started.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(50),
        "closed after {:?}, before the handshake time",
        started.elapsed()
    );
    let stats = server.wait_for("both timeouts to be counted", |s| {
        s.closed_by(CloseReason::ProxyHeaderTimeout) == 2
    });
    assert_eq!(
        stats.closed_by(CloseReason::ProxyHeaderInvalid),
        0,
        "{stats}"
    );
}

#[test]
fn a_unix_stream_connection_needs_the_header_too() {
    let dir = std::env::temp_dir().join(format!("echo-reactor-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    let config = Config {
        listen: Vec::new(),
        unix: Some(path.clone()),
        ..Config::default()
    };
    let server = TestServer::start(config, ProxyHeaderFirst::new(Echo, HEADER_TIMEOUT));
    let mut stream = UnixStream::connect(&path).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut segment = header_for(HeaderVersion::V2, "192.0.2.1:8888".parse().unwrap());
    segment.extend_from_slice(b"over unix");
    stream.write_all(&segment).unwrap();
    let mut got = [0u8; 9];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"over unix");
    let mut bare = UnixStream::connect(&path).unwrap();
    bare.write_all(b"no header\n").unwrap();
    server.wait_for("the bare connection to be refused", |s| {
        s.closed_by(CloseReason::ProxyHeaderInvalid) == 1
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_logged_client_address_is_the_one_the_header_names() {
    let mut cmd = ServeProcess::command(&["--listen", "127.0.0.1:0", "--proxy-protocol"]);
    cmd.env("RUST_LOG", "info,echo_reactor::protocol::proxied=debug")
        .stderr(Stdio::piped());
    let mut server = ServeProcess::spawn_command(cmd, 1);
    let lines = server.follow_stderr();
    let addr = server.addr(0);
    for version in [HeaderVersion::V1, HeaderVersion::V2] {
        let mut stream = connect(addr);
        let mut segment = header_for(version, addr);
        segment.extend_from_slice(b"ping");
        stream.write_all(&segment).unwrap();
        assert_eq!(read_exact(&mut stream, 4), b"ping");
        let want = format!("PROXY {version} header: client {}", client_addr());
        let until = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(&want) => break,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no log line with {want:?}; saw {seen:#?}"),
            }
        }
        // The proxy's own address (the socket's peer, 127.0.0.1) is not
        // the one logged for this client.
        assert!(
            !seen.iter().any(|l| l.contains("header: client 127.0.0.1")),
            "{seen:#?}"
        );
    }
    server.signal(libc::SIGTERM);
    let (status, stdout) = server.wait_exit();
    assert!(status.success(), "{status}");
    assert!(stdout.contains("closed_proxy_header_invalid=0"), "{stdout}");
}

#[test]
fn the_client_and_the_bench_send_the_header_the_server_wants() {
    let server = ServeProcess::spawn(&["--listen", "127.0.0.1:0", "--proxy-protocol"], 1);
    let addr = server.addr(0).to_string();
    let exe = env!("CARGO_BIN_EXE_echo-reactor");
    for version in ["v1", "v2"] {
        let out = std::process::Command::new(exe)
            .args([
                "client",
                "--addr",
                &addr,
                "--proxy-header",
                version,
                "hello",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    }
    // Without the header, this server refuses the client.
    let out = std::process::Command::new(exe)
        .args(["client", "--addr", &addr, "hello"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = std::process::Command::new(exe)
        .args([
            "bench",
            "--addr",
            &addr,
            "--proxy-header",
            "v2",
            "--connections",
            "4",
        ])
        .args(["--duration", "0.5", "--warmup", "0", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["messages"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["connections"]["achieved"], 4, "{report}");
}

#[test]
fn a_max_line_too_short_for_a_header_is_refused_before_serving() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--proxy-protocol",
            "--max-line",
            "100",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--max-line 100") && stderr.contains("536"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
