//! `cargo bench`: echo-reactor against its peers, side by side, in one run.
//!
//! Servers, each in its own process pinned to core 0 (with its soft
//! open-file limit raised to the hard one):
//! - `echo-reactor` — `echo-reactor serve`;
//! - `tokio` — tokio `current_thread`, a task per connection, 4 KiB buffer,
//!   read then `write_all` (this bench binary re-executed with `--peer tokio`);
//! - `threads` — std, a thread per connection, same loop (`--peer threads`);
//! - `c-epoll` — ../shared/peers/c_epoll_echo.c built with `cc -O2`, when a
//!   C compiler and the file are there: the floor.
//!
//! The load is `echo-reactor bench` pinned to core 1, so load generator and
//! server never share a core. For every matrix point all servers run one
//! after another (interleaved), so drift on this shared machine hits them
//! alike. Every run verifies every reply; any error fails the bench.
//!
//! Modes: `cargo bench` runs the short smoke matrix (seconds);
//! `ECHO_BENCH=full cargo bench` runs the full matrix of docs/BENCHMARKS.md.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const SERVER_CORE: usize = 0;
const LOAD_CORE: usize = 1;

// ---- peers (this binary re-executed with --peer NAME) ----

fn tokio_peer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("listening on tcp {}", listener.local_addr().unwrap());
        std::io::stdout().flush().unwrap();
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                continue;
            };
            let _ = socket.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if socket.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

fn threads_peer() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("listening on tcp {}", listener.local_addr().unwrap());
    std::io::stdout().flush().unwrap();
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        });
    }
}

// ---- process plumbing ----

/// Pin the child to `core` and give it all the descriptors it may have.
fn confine(cmd: &mut Command, core: Option<usize>) {
    // SAFETY: only async-signal-safe calls, in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
            if let Some(core) = core {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(core, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
            Ok(())
        });
    }
}

fn two_cores() -> bool {
    thread::available_parallelism()
        .map(|n| n.get() >= 2)
        .unwrap_or(false)
}

/// A running peer server; killed (by pid) on drop.
struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until_accepting(addr: SocketAddr) {
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "server at {addr} never accepted"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn start_with_startup_line(name: &'static str, mut cmd: Command) -> Server {
    confine(&mut cmd, two_cores().then_some(SERVER_CORE));
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on tcp ")
        .expect("startup line")
        .parse()
        .unwrap();
    Server { name, child, addr }
}

fn c_peer_binary() -> Option<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/c_epoll_echo.c");
    if !source.exists() {
        return None;
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/c_epoll_echo");
    let built = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(&source)
        .status();
    matches!(built, Ok(s) if s.success()).then_some(out)
}

fn start(name: &'static str, c_binary: Option<&Path>) -> Server {
    match name {
        "echo-reactor" => {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_echo-reactor"));
            cmd.args(["serve", "--listen", "127.0.0.1:0"]);
            start_with_startup_line(name, cmd)
        }
        "tokio" | "threads" => {
            let mut cmd = Command::new(std::env::current_exe().unwrap());
            cmd.args(["--peer", name]);
            start_with_startup_line(name, cmd)
        }
        "c-epoll" => {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut cmd = Command::new(c_binary.expect("built"));
            cmd.arg(port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            confine(&mut cmd, two_cores().then_some(SERVER_CORE));
            let child = cmd.spawn().expect("start c-epoll");
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            wait_until_accepting(addr);
            Server { name, child, addr }
        }
        other => panic!("unknown server {other}"),
    }
}

/// `echo-reactor bench ... --json` against `server`, pinned to the load core.
fn load(server: &Server, args: &[String]) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_echo-reactor"));
    cmd.arg("bench")
        .args([
            "--addr",
            &server.addr.to_string(),
            "--server-pid",
            &server.child.id().to_string(),
            "--json",
        ])
        .args(args)
        .env("RUST_LOG", "off");
    confine(&mut cmd, two_cores().then_some(LOAD_CORE));
    let out = cmd.output().expect("run echo-reactor bench");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{}: bench printed no report: {}",
            server.name,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // A peer's errors are findings to report; ours fail the bench.
    if server.name == "echo-reactor" {
        assert!(
            out.status.success(),
            "echo-reactor: errors in the run: {}",
            report["errors"]
        );
    }
    report
}

/// Owned command-line arguments from string slices.
fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

// ---- the matrix ----

struct Mode {
    points: Vec<(usize, usize)>,
    /// Connection counts for the scale check (echo-reactor alone).
    scale: (usize, usize),
    duration: &'static str,
    warmup: &'static str,
    hold_connections: usize,
    fairness_light: usize,
}

fn mode() -> Mode {
    if std::env::var("ECHO_BENCH").as_deref() == Ok("full") {
        let mut points = Vec::new();
        for connections in [1, 50, 1000] {
            for size in [64, 512, 4096] {
                points.push((connections, size));
            }
        }
        points.push((10_000, 64));
        Mode {
            points,
            scale: (1000, 19_000),
            duration: "5",
            warmup: "1",
            hold_connections: 10_000,
            fairness_light: 1000,
        }
    } else {
        Mode {
            points: vec![(1, 64), (50, 64), (1000, 512)],
            scale: (100, 2000),
            duration: "1",
            warmup: "0.3",
            hold_connections: 1000,
            fairness_light: 100,
        }
    }
}

/// "0" or e.g. "timeout 794": the run's errors, for the tables.
fn errors(r: &Value) -> String {
    let e = &r["errors"];
    let found: Vec<String> = ["connect", "mismatch", "reset", "timeout"]
        .iter()
        .filter(|k| e[**k].as_u64().unwrap_or(0) > 0)
        .map(|k| format!("{k} {}", e[*k]))
        .collect();
    if found.is_empty() {
        "0".into()
    } else {
        found.join(", ")
    }
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

/// Load one light set of connections while (optionally) a hog pipelines
/// 1 MiB messages on one more connection; returns the light p99 in µs.
fn light_p99(server: &Server, light: usize, duration: &str, with_hog: bool) -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    let hog = with_hog.then(|| {
        let (addr, stop) = (server.addr, stop.clone());
        thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            let mut reader = stream.try_clone().unwrap();
            let drain = thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
            });
            let message = vec![b'H'; 1 << 20];
            while !stop.load(Ordering::Relaxed) && stream.write_all(&message).is_ok() {}
            let _ = stream.shutdown(std::net::Shutdown::Both);
            let _ = drain.join();
        })
    });
    let light_arg = light.to_string();
    let args = strings(&[
        "--connections",
        &light_arg,
        "--size",
        "64",
        "--duration",
        duration,
        "--warmup",
        "0.5",
    ]);
    let report = load(server, &args);
    stop.store(true, Ordering::Relaxed);
    if let Some(hog) = hog {
        let _ = hog.join();
    }
    report["latency_us"]["p99"].as_u64().unwrap_or(0)
}

/// A thread-per-connection blocking client (what public echo benchmarks
/// use): `connections` threads ping-pong 64 B messages for `duration`.
/// Returns (messages per second, messages per CPU-second of this process).
fn threaded_client(addr: SocketAddr, connections: usize, duration: Duration) -> (f64, f64) {
    let cpu = || {
        // SAFETY: getrusage writes into the struct we pass.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
        let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
        t(usage.ru_utime) + t(usage.ru_stime)
    };
    let (cpu0, start) = (cpu(), Instant::now());
    let handles: Vec<_> = (0..connections)
        .map(|_| {
            thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream.set_nodelay(true).unwrap();
                let (msg, mut reply) = ([b'x'; 64], [0u8; 64]);
                let mut count = 0u64;
                while start.elapsed() < duration {
                    stream.write_all(&msg).unwrap();
                    stream.read_exact(&mut reply).unwrap();
                    count += 1;
                }
                count
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let (secs, cpu_s) = (start.elapsed().as_secs_f64(), cpu() - cpu0);
    (total as f64 / secs, total as f64 / cpu_s)
}

/// Pin the calling thread's process to one core (for the in-process client).
fn pin_self(core: usize) {
    if two_cores() {
        // SAFETY: plain syscall on this process with a zeroed, then set, mask.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(core, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--peer") {
        match args.get(i + 1).map(String::as_str) {
            Some("tokio") => tokio_peer(),
            Some("threads") => threads_peer(),
            other => panic!("unknown peer {other:?}"),
        }
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; there is nothing to run there
    }
    let mode = mode();
    let c_binary = c_peer_binary();
    let mut servers = vec!["echo-reactor", "tokio", "threads"];
    if c_binary.is_some() {
        servers.push("c-epoll");
    }
    println!(
        "echo matrix: servers on core {SERVER_CORE}, load (echo-reactor bench, 1 thread) on core {LOAD_CORE}; {} s per run (+{} s warmup)",
        mode.duration, mode.warmup
    );
    println!(
        "{:<13} {:>6} {:>5} {:>11} {:>9} {:>11} {:>8} {:>8} {:>9}  errors",
        "server",
        "conns",
        "size",
        "msgs/s",
        "p99 us",
        "server us/msg",
        "x tokio",
        "cpu/tok",
        "client us"
    );
    for &(connections, size) in &mode.points {
        let (connections_arg, size_arg) = (connections.to_string(), size.to_string());
        let args = strings(&[
            "--connections",
            &connections_arg,
            "--size",
            &size_arg,
            "--duration",
            mode.duration,
            "--warmup",
            mode.warmup,
        ]);
        let mut rows = Vec::new();
        for &name in &servers {
            let server = start(name, c_binary.as_deref());
            let report = load(&server, &args);
            rows.push((name, report));
        }
        let tokio = rows
            .iter()
            .find(|(n, _)| *n == "tokio")
            .map(|(_, r)| r.clone())
            .unwrap();
        for (name, r) in &rows {
            println!(
                "{:<13} {:>6} {:>5} {:>11.0} {:>9} {:>11.2} {:>8} {:>8} {:>9.2}  {}",
                name,
                connections,
                size,
                f(&r["msgs_per_sec"]),
                r["latency_us"]["p99"],
                f(&r["server"]["cpu_us_per_msg"]),
                ratio(f(&r["msgs_per_sec"]), f(&tokio["msgs_per_sec"])),
                ratio(
                    f(&r["server"]["cpu_us_per_msg"]),
                    f(&tokio["server"]["cpu_us_per_msg"])
                ),
                f(&r["client"]["cpu_us_per_msg"]),
                errors(r),
            );
        }
    }

    let (small, large) = mode.scale;
    println!(
        "\nscale: echo-reactor, 64 B closed loop, {small} vs {large} connections (load: 2 threads)"
    );
    let mut scale_rates = Vec::new();
    for connections in [small, large] {
        let server = start("echo-reactor", None);
        let connections_arg = connections.to_string();
        let r = load(
            &server,
            &strings(&[
                "--connections",
                &connections_arg,
                "--size",
                "64",
                "--duration",
                mode.duration,
                "--warmup",
                mode.warmup,
                "--threads",
                "2",
            ]),
        );
        println!(
            "{connections:>6} connections: {}/{} achieved, {:.0} msgs/s, p99 {} us, errors {}",
            r["connections"]["achieved"],
            connections,
            f(&r["msgs_per_sec"]),
            r["latency_us"]["p99"],
            r["errors"]
        );
        scale_rates.push(f(&r["msgs_per_sec"]));
    }
    println!(
        "  ratio {large}/{small}: {}",
        ratio(scale_rates[1], scale_rates[0])
    );

    println!(
        "\nload generator: msgs per client CPU-second, 50 x 64 B ping-pong against echo-reactor"
    );
    {
        let server = start("echo-reactor", None);
        let r = load(
            &server,
            &strings(&[
                "--connections",
                "50",
                "--size",
                "64",
                "--duration",
                mode.duration,
                "--warmup",
                mode.warmup,
            ]),
        );
        let ours = f(&r["messages"]) / f(&r["client"]["cpu_s"]);
        pin_self(LOAD_CORE);
        let secs: f64 = mode.duration.parse().unwrap();
        let (threaded_rate, threaded) =
            threaded_client(server.addr, 50, Duration::from_secs_f64(secs));
        println!(
            "  echo-reactor bench (mio, 1 thread): {:.0} msgs/s, {ours:.0} msgs per CPU-second",
            f(&r["msgs_per_sec"])
        );
        println!("  thread-per-connection client:       {threaded_rate:.0} msgs/s, {threaded:.0} msgs per CPU-second");
        println!("  efficiency ratio: {}", ratio(ours, threaded));
    }

    println!(
        "\nmemory: {} idle connections held, then each echoes once (server RSS per connection)",
        mode.hold_connections
    );
    println!(
        "{:<13} {:>12} {:>16}",
        "server", "idle B/conn", "after echo B/conn"
    );
    let hold_arg = mode.hold_connections.to_string();
    for &name in &servers {
        let server = start(name, c_binary.as_deref());
        let r = load(
            &server,
            &strings(&[
                "--scenario",
                "hold",
                "--connections",
                &hold_arg,
                "--duration",
                "2",
                "--threads",
                "1",
            ]),
        );
        println!(
            "{:<13} {:>12.0} {:>16.0}  errors {}",
            name,
            f(&r["hold"]["rss_per_conn_idle_bytes"]),
            f(&r["hold"]["rss_per_conn_after_echo_bytes"]),
            errors(&r)
        );
    }

    println!("\nfairness: p99 of {} light 64 B connections, alone and beside one connection pipelining 1 MiB messages", mode.fairness_light);
    println!(
        "{:<13} {:>10} {:>10} {:>8}",
        "server", "alone us", "w/ hog us", "ratio"
    );
    for &name in &servers {
        let server = start(name, c_binary.as_deref());
        let alone = light_p99(&server, mode.fairness_light, mode.duration, false);
        let with_hog = light_p99(&server, mode.fairness_light, mode.duration, true);
        println!(
            "{:<13} {:>10} {:>10} {:>8}",
            name,
            alone,
            with_hog,
            ratio(with_hog as f64, alone as f64)
        );
    }
}
