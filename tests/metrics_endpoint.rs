//! `serve --metrics ADDR`: `/metrics` and `/healthz` over HTTP on the same
//! loop, checked with real clients, `promtool`, SIGTERM, and clients that
//! misbehave (too slow, too large) while echo clients are served.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use echo_reactor::reactor::{MAX_METRICS_CONNECTIONS, METRICS_SLOTS};
use support::scrape::*;
use support::{connect, pattern, round_trip, ServeProcess, DEADLINE};

/// `echo-reactor serve --listen 127.0.0.1:0 --metrics 127.0.0.1:0 EXTRA...`
/// and the two addresses it printed (echo, metrics).
fn serve_with_metrics(extra: &[&str]) -> (ServeProcess, SocketAddr, SocketAddr) {
    let mut args = vec!["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let server = ServeProcess::spawn(&args, 2);
    let echo = server.addr(0);
    let metrics = metrics_addr(&server.sockets[1]);
    (server, echo, metrics)
}

/// A scrape's samples: (series, value).
type Samples = Vec<(String, u64)>;

/// Every counter sample of a scrape (`..._total`, by series: name and
/// labels), or `None` if the scrape failed (a worker killed while it was
/// answering resets the scrape's connection).
fn counter_samples(metrics: SocketAddr) -> Option<Samples> {
    let mut stream = TcpStream::connect(metrics).ok()?;
    stream.set_read_timeout(Some(DEADLINE)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200 ") {
        return None;
    }
    let samples = body
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            name.ends_with("_total")
                .then(|| Some((series.to_string(), value.parse().ok()?)))?
        })
        .collect();
    Some(samples)
}

#[test]
fn metrics_counts_what_clients_did_and_healthz_says_ok() {
    let (_server, echo, metrics) = serve_with_metrics(&[]);
    for id in 0..3 {
        assert_eq!(round_trip(echo, pattern(100, id)), pattern(100, id));
    }
    // Each round trip's connection is counted when accepted (published at
    // the end of that loop turn); bytes_received once its data is read.
    let accepted = wait_for_value(metrics, "echo_reactor_connections_accepted_total", |n| {
        n >= 3
    });
    assert_eq!(accepted, 3);
    let received = wait_for_value(metrics, "echo_reactor_bytes_received_total", |n| n >= 300);
    assert_eq!(received, 300);
    let closed = "echo_reactor_connections_closed_total{reason=\"peer_closed\"}";
    assert_eq!(wait_for_value(metrics, closed, |n| n >= 3), 3);
    assert!(scrape_value(metrics, "process_open_fds") >= 3);
    assert!(scrape_value(metrics, "process_resident_memory_bytes") > 0);
    assert_eq!(get(metrics, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(get(metrics, "/nothing-here").0, 404);
    assert_eq!(request(metrics, "POST /metrics HTTP/1.1\r\n\r\n").0, 405);
    assert_eq!(request(metrics, "\x16\x03\x01 not http\r\n\r\n").0, 400);
    // The metrics clients are not echo clients.
    assert_eq!(
        scrape_value(metrics, "echo_reactor_connections_accepted_total"),
        3
    );
    let invalid = "echo_reactor_metrics_requests_refused_total{reason=\"invalid\"}";
    assert_eq!(scrape_value(metrics, invalid), 1);
}

#[test]
fn promtool_accepts_the_scrape() {
    let Some(promtool) = support::required_tool("promtool", "prometheus") else {
        return;
    };
    let (_server, echo, metrics) = serve_with_metrics(&[]);
    assert_eq!(round_trip(echo, pattern(10, 1)), pattern(10, 1));
    let (status, body) = get(metrics, "/metrics");
    assert_eq!(status, 200);
    let mut check = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics: {said}\n{body}"
    );
    assert_eq!(said.trim(), "", "promtool found problems:\n{body}");
}

#[test]
fn healthz_turns_503_when_sigterm_arrives_while_replies_are_still_owed() {
    let (mut server, echo, metrics) =
        serve_with_metrics(&["--max-buffered", "64KiB", "--shutdown-grace", "60"]);
    assert_eq!(get(metrics, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(scrape_value(metrics, "echo_reactor_shutting_down"), 0);
    // A client that never reads: its echoes pile up in the server.
    let mut hoarder = connect(echo);
    hoarder.set_nonblocking(true).unwrap();
    let chunk = pattern(64 * 1024, 2);
    let start = Instant::now();
    while scrape_value(metrics, "echo_reactor_held_bytes") == 0 {
        match hoarder.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("write: {e}"),
        }
        assert!(start.elapsed() < DEADLINE, "the server never held output");
    }
    server.signal(libc::SIGTERM);
    let start = Instant::now();
    loop {
        let (status, body) = get(metrics, "/healthz");
        if status == 503 {
            break;
        }
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        assert!(start.elapsed() < DEADLINE, "/healthz never said 503");
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(scrape_value(metrics, "echo_reactor_shutting_down"), 1);
    assert!(server.is_running(), "still flushing for the hoarder");
    assert!(
        TcpStream::connect(echo).is_err(),
        "the echo listener closed when shutdown began"
    );
    drop(hoarder); // reset: nothing left to flush, the server exits
    let (status, _) = server.wait_exit();
    assert!(status.success(), "{status}");
}

/// Bytes of a request trickled one per interval: the server must close the
/// connection within its deadline, never answer it.
#[test]
fn a_refused_request_with_more_bytes_behind_it_reads_its_4xx_not_a_reset() {
    // A client that writes its whole request before it reads (as most
    // HTTP clients do) while the server stops reading at the refusal: a
    // close with those bytes unread would reset the connection, fail the
    // client's write, and it would never read the 4xx. 8 MiB is far more
    // than the kernel buffers of a socket nobody reads.
    let (_server, _echo, metrics) = serve_with_metrics(&[]);
    const SENT: usize = 8 * 1024 * 1024;
    let mut oversized = b"GET /".to_vec();
    oversized.resize(SENT, b'a'); // past the head cap, no end in sight
    let mut garbage = b"\x16\x03\x01 not http\r\n\r\n".to_vec();
    garbage.extend(pattern(SENT, 3));
    for (sent, status) in [(oversized, "431"), (garbage, "400")] {
        let mut stream = connect(metrics);
        let mut writer = stream.try_clone().unwrap();
        let sender = thread::spawn(move || {
            writer.write_all(&sent)?;
            writer.shutdown(std::net::Shutdown::Write)
        });
        let mut response = Vec::new();
        let read = stream.read_to_end(&mut response);
        let wrote = sender.join().unwrap();
        assert!(
            wrote.is_ok(),
            "{status}: the request's write failed: {wrote:?}"
        );
        assert!(read.is_ok(), "{status}: read {read:?}");
        let response = String::from_utf8_lossy(&response);
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status} ")),
            "{response}"
        );
    }
}

#[test]
fn scrapers_that_read_their_answer_and_hold_on_do_not_lock_out_healthz() {
    // Each reads its whole response (to our FIN) and keeps its socket
    // open: a lingering close on our side. More of them than there are
    // slots: each past the last takes the slot of the oldest.
    let (_server, _echo, metrics) = serve_with_metrics(&[]);
    let holding: Vec<TcpStream> = (0..METRICS_SLOTS + 8)
        .map(|_| {
            let mut stream = connect(metrics);
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
            stream
        })
        .collect();
    assert_eq!(get(metrics, "/healthz").0, 200);
    drop(holding);
}

#[test]
fn a_request_past_the_cap_reads_503_busy_not_a_reset() {
    // As many connections as are served at once, each silent (its
    // request never comes): the next one is answered, not dropped.
    let (_server, _echo, metrics) = serve_with_metrics(&[]);
    let silent: Vec<TcpStream> = (0..MAX_METRICS_CONNECTIONS)
        .map(|_| connect(metrics))
        .collect();
    // Accepted after them: the listener's queue is first in, first out.
    let (status, body) = get(metrics, "/healthz");
    assert_eq!(status, 503, "{body}");
    drop(silent);
    // Until the loop has seen the silent ones close, a scrape is turned
    // away busy too (a busy machine may take a while): wait for a 200.
    let start = Instant::now();
    while get(metrics, "/healthz").0 != 200 {
        assert!(
            start.elapsed() < DEADLINE,
            "still busy after the silent ones left"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let busy = "echo_reactor_metrics_requests_refused_total{reason=\"busy\"}";
    // Counted (more than once if the wait above was turned away too).
    wait_for_value(metrics, busy, |n| n >= 1);
}

#[test]
fn slow_and_huge_metrics_clients_are_closed_while_echo_clients_are_served() {
    let (_server, echo, metrics) = serve_with_metrics(&[]);
    let slow = thread::spawn(move || {
        let mut stream = connect(metrics);
        let request = b"GET /metrics HTTP/1.1\r\nHost: slow\r\n\r\n";
        let start = Instant::now();
        for &byte in request.iter() {
            if stream.write_all(&[byte]).is_err() {
                break; // closed under us: what we wait for
            }
            if support::peer_hung_up(&stream, Duration::from_secs(1)) {
                break;
            }
        }
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest); // EOF or reset
        (start.elapsed(), rest)
    });
    let huge = thread::spawn(move || {
        let mut stream = connect(metrics);
        let mut line = b"GET /".to_vec();
        line.resize(1024 * 1024, b'a');
        // The server stops reading at its cap and closes: the write fails
        // (reset) or completes into the kernel's buffers; either way the
        // connection ends, with a 431 if it arrived before the reset.
        let wrote_all = stream.write_all(&line).is_ok();
        let mut rest = Vec::new();
        let ended = match stream.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => e.kind() == ErrorKind::ConnectionReset,
        };
        (wrote_all, ended, rest)
    });
    // Meanwhile an echo client keeps getting its replies.
    let mut client = connect(echo);
    let mut rounds = 0;
    while !(slow.is_finished() && huge.is_finished()) {
        let message = pattern(64, rounds);
        client.write_all(&message).unwrap();
        assert_eq!(support::read_exact(&mut client, 64), message);
        rounds += 1;
        thread::sleep(Duration::from_millis(10));
        assert!(
            rounds < 3_000,
            "a misbehaving metrics client was never closed"
        );
    }
    let (slow_took, slow_rest) = slow.join().unwrap();
    assert!(
        slow_rest.is_empty(),
        "a request that never completed got an answer"
    );
    assert!(slow_took < Duration::from_secs(20), "{slow_took:?}");
    let (_wrote_all, ended, huge_rest) = huge.join().unwrap();
    assert!(ended);
    let huge_rest = String::from_utf8_lossy(&huge_rest);
    assert!(
        huge_rest.is_empty() || huge_rest.starts_with("HTTP/1.1 431 "),
        "{huge_rest}"
    );
    assert!(rounds > 10, "echo client served only {rounds} rounds");
    let timeouts = "echo_reactor_metrics_requests_refused_total{reason=\"timeout\"}";
    assert_eq!(scrape_value(metrics, timeouts), 1);
    let too_large = "echo_reactor_metrics_requests_refused_total{reason=\"too_large\"}";
    assert_eq!(scrape_value(metrics, too_large), 1);
}

#[test]
fn one_scrape_counts_every_workers_connections() {
    support::raise_limit_for_children();
    let (_server, echo, metrics) = serve_with_metrics(&["--workers", "2"]);
    const CONNECTIONS: u64 = 40;
    for id in 0..CONNECTIONS {
        assert_eq!(round_trip(echo, pattern(10, id)), pattern(10, id));
    }
    let name = "echo_reactor_connections_accepted_total";
    let accepted = wait_for_value(metrics, name, |n| n >= CONNECTIONS);
    assert_eq!(accepted, CONNECTIONS);
    assert_eq!(scrape_value(metrics, "echo_reactor_workers"), 2);
    // Whichever worker answers, the sum is the same.
    for _ in 0..10 {
        assert_eq!(scrape_value(metrics, name), CONNECTIONS);
    }
}

/// Ends the Prometheus server we started (by pid) and removes its data.
struct PrometheusServer {
    child: std::process::Child,
    data: std::path::PathBuf,
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET` on Prometheus' HTTP API; `None` until it answers 200.
fn prometheus_get(addr: SocketAddr, path_and_query: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(DEADLINE)).ok()?;
    let head =
        format!("GET {path_and_query} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    if !response.starts_with("HTTP/1.1 200") {
        return None;
    }
    Some(response.split_once("\r\n\r\n")?.1.to_string())
}

/// The value of an instant query's single sample, if it has one yet.
fn query_value(prometheus: SocketAddr, query: &str) -> Option<u64> {
    let body = prometheus_get(prometheus, &format!("/api/v1/query?query={query}"))?;
    // The body may be chunked; the JSON object is between the outer braces.
    let json = &body[body.find('{')?..=body.rfind('}')?];
    let reply: serde_json::Value = serde_json::from_str(json).ok()?;
    let value = reply["data"]["result"][0]["value"][1].as_str()?;
    value.parse::<f64>().ok().map(|v| v as u64)
}

#[test]
fn a_real_prometheus_scraping_the_contrib_config_sees_every_connection() {
    let Some(prometheus) = support::required_tool("prometheus", "prometheus") else {
        return;
    };
    let (_server, echo, metrics) = serve_with_metrics(&[]);
    const CONNECTIONS: u64 = 7;
    for id in 0..CONNECTIONS {
        assert_eq!(round_trip(echo, pattern(32, id)), pattern(32, id));
    }
    // The committed example, with this test's target and a 1 s interval.
    let template = include_str!("../contrib/prometheus/prometheus.yml");
    for placeholder in [
        "\"127.0.0.1:9898\"",
        "scrape_interval: 15s",
        "scrape_timeout: 5s",
    ] {
        assert!(
            template.contains(placeholder),
            "the example lost {placeholder}"
        );
    }
    let config = template
        .replace("\"127.0.0.1:9898\"", &format!("\"{metrics}\""))
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("scrape_timeout: 5s", "scrape_timeout: 1s");
    let data = std::env::temp_dir().join(format!("echo-reactor-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    let config_file = data.join("prometheus.yml");
    std::fs::write(&config_file, config).unwrap();
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = std::process::Command::new(prometheus)
        .arg(format!("--config.file={}", config_file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            data.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(data.join("prometheus.log")).unwrap())
        .spawn()
        .expect("start prometheus");
    let mut server = PrometheusServer { child, data };
    let start = Instant::now();
    let deadline = Duration::from_secs(90); // Prometheus starts in seconds on a busy machine
    loop {
        let seen = query_value(web, "echo_reactor_connections_accepted_total");
        if seen == Some(CONNECTIONS) {
            break;
        }
        let exited = server.child.try_wait().unwrap();
        if start.elapsed() > deadline || exited.is_some() {
            let log =
                std::fs::read_to_string(server.data.join("prometheus.log")).unwrap_or_default();
            panic!("Prometheus ({exited:?}) saw {seen:?}, not {CONNECTIONS}; its log:\n{log}");
        }
        thread::sleep(Duration::from_millis(250));
    }
    // The scrape itself succeeded: `up` is 1 for our job.
    assert_eq!(query_value(web, "up{job=\"echo-reactor\"}"), Some(1));
}

/// Out of descriptors, a scraper waiting in the metrics listener's queue is
/// turned away (a clean close), not left hanging until some other scraper
/// happens to connect; once descriptors are free, scrapes are answered again.
#[test]
fn out_of_descriptors_a_waiting_scraper_is_closed_not_left_hanging() {
    support::raise_limit_for_children(); // our own sockets
    let mut cmd = ServeProcess::command(&[
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--max-connections",
        "1000", // above what 64 descriptors allow: the EMFILE path, not the cap
    ]);
    cmd.env("RUST_LOG", "error")
        .stderr(std::process::Stdio::null());
    let mut server = ServeProcess::spawn_command(cmd, 2);
    let echo = server.addr(0);
    let metrics = metrics_addr(&server.sockets[1]);
    server.lower_open_file_limit(64);

    // Echo clients until one is turned away: the server's descriptors are
    // all in use (its spare taken back).
    let mut held = Vec::new();
    loop {
        assert!(held.len() < 100, "64 descriptors never ran out");
        let mut client = connect(echo);
        let _ = client.write_all(b"hi\n");
        let mut reply = [0u8; 3];
        match client.read_exact(&mut reply) {
            Ok(()) => held.push(client),
            Err(_) => break,
        }
    }

    // A scraper now: its accept fails with EMFILE. It must hear a close
    // (shed), not wait for an edge that no other scraper will bring.
    let mut scraper = connect(metrics);
    scraper
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = scraper.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n");
    let mut heard = Vec::new();
    match scraper.read_to_end(&mut heard) {
        Ok(_) => {}
        Err(e) => assert!(
            e.kind() == ErrorKind::ConnectionReset,
            "the waiting scraper was left hanging: {e}"
        ),
    }

    // Room again: scrapes are answered.
    held.truncate(held.len() - 10);
    let start = Instant::now();
    loop {
        let mut stream = connect(metrics);
        let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n");
        let mut response = String::new();
        if stream.read_to_string(&mut response).is_ok() && response.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "scrapes never answered again");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(server.is_running(), "the server died");
}

#[test]
fn no_counter_goes_down_when_a_worker_is_killed_under_traffic() {
    let (server, echo, metrics) = serve_with_metrics(&["--workers", "2"]);
    let workers = support::workers::wait_for_children(server.pid(), 2);
    // One connection after another all along, spread over both workers
    // (one on the killed worker may be reset: not counted as served).
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut stream) = TcpStream::connect(echo) else {
                    continue;
                };
                stream.set_read_timeout(Some(DEADLINE)).unwrap();
                let mut reply = [0u8; 3];
                let _ = stream
                    .write_all(b"hi\n")
                    .and_then(|()| stream.read_exact(&mut reply));
            }
        })
    };
    let accepted = |samples: &Samples| {
        samples
            .iter()
            .find(|(series, _)| series == "echo_reactor_connections_accepted_total")
            .map_or(0, |(_, n)| *n)
    };
    let mut scrapes: Vec<Samples> = Vec::new();
    let scrape_until = |scrapes: &mut Vec<Samples>, done: &dyn Fn(&Samples) -> bool| {
        let start = Instant::now();
        loop {
            if let Some(samples) = counter_samples(metrics) {
                let finished = done(&samples);
                scrapes.push(samples);
                if finished {
                    return;
                }
            }
            assert!(start.elapsed() < DEADLINE, "the traffic was not counted");
            thread::sleep(Duration::from_millis(5));
        }
    };
    scrape_until(&mut scrapes, &|s| accepted(s) >= 200);
    let before_kill = accepted(scrapes.last().unwrap());
    support::workers::kill_and_wait_for_replacement(&server, workers[0], 2);
    // On until the replacement has counted traffic of its own.
    scrape_until(&mut scrapes, &|s| accepted(s) >= before_kill + 200);
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    for (i, pair) in scrapes.windows(2).enumerate() {
        for (series, before) in &pair[0] {
            let after = pair[1].iter().find(|(s, _)| s == series).map(|(_, n)| *n);
            assert!(
                after >= Some(*before),
                "{series} went from {before} to {after:?} (scrapes {i} and {})",
                i + 1
            );
        }
    }
}
