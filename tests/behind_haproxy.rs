//! echo-reactor behind a real HAProxy, configured by
//! `contrib/haproxy/haproxy.cfg` as committed (TCP mode, `send-proxy-v2`,
//! `/healthz` checks): every reply through HAProxy is verified, each
//! instance logs the bench's own address (from the PROXY header), a
//! rolling restart — SIGTERM to one instance mid-run — loses no reply, and
//! a binary upgrade (`SIGUSR2`) under a `--rate` bench costs no error and
//! takes no server DOWN in HAProxy's eyes.
//!
//! Skipped, saying why, when `haproxy` is not installed; with `CI` set it
//! fails instead (`.ci/run` installs it).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use echo_reactor::proxy_header::{encode, HeaderVersion};
use echo_reactor::stats::stat_value;
use support::scrape::wait_for_value;
use support::{read_exact, ServeProcess, DEADLINE};

/// Where the bench's connections come from: not HAProxy's own address
/// (127.0.0.1), so a log line naming it can only come from the header.
const BENCH_SOURCE: &str = "127.0.0.2";
/// The connections opened after the restart began.
const LATE_SOURCE: &str = "127.0.0.3";
/// A v2 header for IPv4 addresses and no TLVs (what `send-proxy-v2` sends
/// without `proxy-v2-options`): 16 fixed bytes + 12 of addresses.
const V2_IPV4_HEADER_BYTES: u64 = 28;

/// The haproxy binary, if installed (`/usr/sbin` is not on every PATH).
fn haproxy_binary() -> Option<PathBuf> {
    ["haproxy", "/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]
        .iter()
        .map(PathBuf::from)
        .find(|bin| {
            Command::new(bin)
                .arg("-v")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// An instance: `serve --proxy-protocol --metrics`, its log followed.
struct Instance {
    process: ServeProcess,
    log: Receiver<String>,
    /// Every log line read so far.
    seen: Vec<String>,
    addr: SocketAddr,
    metrics: SocketAddr,
}

impl Instance {
    fn start() -> Instance {
        Instance::start_with(&[])
    }

    /// An instance with `extra` flags besides the ones every instance has.
    fn start_with(extra: &[&str]) -> Instance {
        let mut cmd = ServeProcess::command(&[
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--proxy-protocol",
            "--shutdown-grace",
            "10",
        ]);
        cmd.args(extra)
            .env("RUST_LOG", "info,echo_reactor::protocol::proxied=debug")
            .stderr(Stdio::piped());
        let mut process = ServeProcess::spawn_command(cmd, 2);
        let log = process.follow_stderr();
        let addr = process.addr(0);
        let metrics = process.sockets[1]
            .strip_prefix("metrics http://")
            .and_then(|rest| rest.strip_suffix("/metrics"))
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("metrics line {:?}", process.sockets[1]));
        Instance {
            process,
            log,
            seen: Vec::new(),
            addr,
            metrics,
        }
    }

    /// Read the log lines that have arrived.
    fn read_log(&mut self) {
        self.seen.extend(self.log.try_iter());
    }

    /// Wait for a log line containing `needle` (lines before it are kept
    /// in `seen`); returns it.
    fn wait_for_log(&mut self, needle: &str) -> String {
        let until = Instant::now() + DEADLINE;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => {
                    self.seen.push(line.clone());
                    return line;
                }
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "the instance never said {needle:?}; it said {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// The clients this instance logged (from PROXY headers), by IP.
    fn logged_clients(&mut self, ip: &str) -> BTreeSet<String> {
        self.read_log();
        let marker = format!("header: client {ip}:");
        self.seen
            .iter()
            .filter_map(|l| l.find(&marker).map(|at| l[at + 15..].to_string()))
            .collect()
    }
}

/// A server's row of HAProxy's `show stat`, by column name (HAProxy's
/// management guide, "show stat", lists them).
#[derive(Debug)]
struct ServerStat(BTreeMap<String, String>);

impl ServerStat {
    /// A column's text ("" if absent).
    fn get(&self, column: &str) -> &str {
        self.0.get(column).map_or("", String::as_str)
    }

    /// A counter column (`chkdown`, `econ`, ...).
    fn count(&self, column: &str) -> u64 {
        self.get(column)
            .parse()
            .unwrap_or_else(|_| panic!("{column} is not a count in {self:?}"))
    }

    /// UP, with a passing `/healthz` check.
    fn up(&self) -> bool {
        self.get("status") == "UP" && self.get("check_status") == "L7OK"
    }

    /// UP and its health at the top (`check_health` counts down one per
    /// failed check and up one per passing check, up to rise + fall - 1):
    /// the latest checks all passed.
    fn fully_healthy(&self) -> bool {
        self.up()
            && self.count("check_health") == self.count("check_rise") + self.count("check_fall") - 1
    }
}

/// HAProxy in the foreground, its stderr (alerts, state changes,
/// connection logs) on a channel; killed by pid on drop.
struct Haproxy {
    child: Child,
    lines: Receiver<String>,
    frontend: SocketAddr,
    admin: PathBuf,
}

impl Haproxy {
    fn start(bin: &Path, dir: &Path, servers: [&Instance; 2]) -> Haproxy {
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/haproxy/haproxy.cfg");
        let admin = dir.join("admin.sock");
        // A free port for the frontend (HAProxy cannot report one it picked).
        let frontend = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut child = Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .env("ECHO_FRONTEND", frontend.to_string())
            .env("ECHO_R1", servers[0].addr.to_string())
            .env("ECHO_R2", servers[1].addr.to_string())
            .env(
                "ECHO_R1_METRICS_PORT",
                servers[0].metrics.port().to_string(),
            )
            .env(
                "ECHO_R2_METRICS_PORT",
                servers[1].metrics.port().to_string(),
            )
            .env("ECHO_HAPROXY_ADMIN", &admin)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start haproxy");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Haproxy {
            child,
            lines,
            frontend,
            admin,
        }
    }

    /// `show stat` on the admin socket: one row per server.
    fn servers(&self) -> Vec<ServerStat> {
        let Ok(mut sock) = UnixStream::connect(&self.admin) else {
            return Vec::new(); // not listening yet
        };
        sock.write_all(b"show stat\n").unwrap();
        let mut csv = String::new();
        let _ = sock.read_to_string(&mut csv);
        let mut lines = csv.lines();
        let header: Vec<String> = lines
            .next()
            .unwrap_or("")
            .split(',')
            .map(|h| h.trim_start_matches("# ").to_string())
            .collect();
        lines
            .map(|l| header.iter().cloned().zip(l.split(',').map(str::to_string)))
            .map(|row| ServerStat(row.collect()))
            .filter(|row| row.get("svname").starts_with('r'))
            .collect()
    }

    /// Wait for a stderr line containing `needle`; returns it.
    fn wait_for_line(&self, needle: &str, seen: &mut Vec<String>) -> String {
        let until = Instant::now() + DEADLINE;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!("haproxy never said {needle:?}; it said {seen:#?}"),
            }
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill(); // our child, by pid
        let _ = self.child.wait();
    }
}

/// `echo-reactor bench` through `addr` from `source`, as a child.
fn bench(addr: SocketAddr, source: &str, connections: usize, secs: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
        .args([
            "bench",
            "--addr",
            &addr.to_string(),
            "--source-addrs",
            source,
        ])
        .args(["--connections", &connections.to_string()])
        .args(["--duration", secs, "--warmup", "0", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the bench")
}

/// Wait (bounded) for a bench and read its JSON report.
fn report(child: Child) -> (bool, serde_json::Value) {
    let out = child.wait_with_output().unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench report: {e}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

/// The haproxy binary; `None` (the test skips, saying why) when it is not
/// installed, unless `CI` is set: then the test fails.
fn haproxy_or_skip() -> Option<PathBuf> {
    let found = haproxy_binary();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "haproxy is not installed, and CI is set: .ci/run should have installed it"
        );
        eprintln!(
            "SKIPPED: haproxy is not installed (apt-get install haproxy); CI would fail here"
        );
    }
    found
}

/// A fresh directory of this test's own (HAProxy's admin socket, a pid
/// file), removed when the test ends, passed or failed.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "echo-reactor-haproxy-{test}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_rolling_restart_behind_haproxy_loses_no_reply_and_logs_the_real_clients() {
    let Some(haproxy_bin) = haproxy_or_skip() else {
        return;
    };
    support::raise_limit_for_children();
    let dir = Scratch::new("rolling");
    let mut r1 = Instance::start();
    let mut r2 = Instance::start();
    let haproxy = Haproxy::start(&haproxy_bin, &dir.0, [&r1, &r2]);

    // Both instances pass their /healthz checks (L7OK: HTTP 200).
    wait_until("both servers UP with a passing /healthz check", || {
        let servers = haproxy.servers();
        servers.len() == 2 && servers.iter().all(ServerStat::up)
    });

    // 1. A bench through HAProxy, long-lived connections, every reply verified.
    const EARLY: usize = 20;
    let early = bench(haproxy.frontend, BENCH_SOURCE, EARLY, "8");
    // Each instance logs the bench's own addresses, taken from the header.
    wait_until("both instances to log bench clients", || {
        r1.logged_clients(BENCH_SOURCE).len() + r2.logged_clients(BENCH_SOURCE).len() == EARLY
            && !r1.logged_clients(BENCH_SOURCE).is_empty()
            && !r2.logged_clients(BENCH_SOURCE).is_empty()
    });
    for r in [&mut r1, &mut r2] {
        assert!(
            r.logged_clients("127.0.0.1").is_empty(),
            "an instance logged HAProxy's address as a client: {:#?}",
            r.seen
        );
    }
    let on_r1 = r1.logged_clients(BENCH_SOURCE).len();

    // 2. Rolling restart of r1. A client of its own that has just spoken
    // keeps it draining (lingering) a few seconds, long enough for HAProxy
    // to see /healthz answer 503 rather than a closed port.
    let mut talker = TcpStream::connect(r1.addr).unwrap();
    let mut hello = encode(
        HeaderVersion::V2,
        "127.0.0.9:4242".parse().unwrap(),
        r1.addr,
    );
    hello.extend_from_slice(b"ping");
    talker.write_all(&hello).unwrap();
    assert_eq!(read_exact(&mut talker, 4), b"ping");
    r1.process.signal(libc::SIGTERM);
    let mut haproxy_said = Vec::new();
    let down = haproxy.wait_for_line("Server echo_reactors/r1 is DOWN", &mut haproxy_said);
    assert!(
        down.contains("503"),
        "r1 went down for another reason: {down}"
    );
    drop(talker);

    // 3. Connections opened now all succeed, and all reach r2.
    const LATE: usize = 10;
    let (late_ok, late) = report(bench(haproxy.frontend, LATE_SOURCE, LATE, "1"));
    assert!(late_ok, "{late}");
    assert_eq!(late["connections"]["achieved"], LATE, "{late}");
    assert!(late["messages"].as_u64().unwrap() > 0, "{late}");
    wait_until("r2 to log the late clients", || {
        r2.logged_clients(LATE_SOURCE).len() == LATE
    });
    assert!(r1.logged_clients(LATE_SOURCE).is_empty(), "{:#?}", r1.seen);

    // 4. The first bench: its connections on r1 were closed by the
    // draining server after their last reply — reported as such, never as
    // a mismatch or a reset — and the rest ran to the end on r2.
    let (_, early) = report(early);
    let errors = &early["errors"];
    assert_eq!(errors["mismatch"], 0, "{early}");
    assert_eq!(errors["reset"], 0, "{early}");
    assert_eq!(errors["timeout"], 0, "{early}");
    assert_eq!(errors["connect"], 0, "{early}");
    assert_eq!(errors["server_closed"], on_r1 as u64, "{early}");
    assert!(early["messages"].as_u64().unwrap() > 0, "{early}");

    // 5. r1 drained and exited cleanly, having answered every byte it
    // read before the shutdown: in = out + headers + what it discarded
    // (input that arrived after it stopped reading).
    let (status, stdout) = r1.process.wait_exit();
    assert!(status.success(), "{status}");
    let line = stdout.lines().find(|l| l.starts_with("stats ")).unwrap();
    let stat = |key: &str| stat_value(line, key).unwrap_or_else(|| panic!("{key} in {line}"));
    assert_eq!(
        stat("bytes_in"),
        stat("bytes_out") + stat("bytes_discarded") + V2_IPV4_HEADER_BYTES * stat("accepted"),
        "{line}"
    );
    assert_eq!(stat("closed_reset"), 0, "{line}");
    assert_eq!(stat("closed_proxy_header_invalid"), 0, "{line}");
}

/// A new generation: not our child (the old supervisor started it), so
/// ended by pid when the test is done, with its workers (their parent-death
/// signal).
struct Generation(i32);

impl Drop for Generation {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal, to a server this test started.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

/// A child killed (by pid, then reaped) if the test ends before taking it.
struct Stopped(Option<Child>);

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Clients that connect, echo one line (verified) and close, one after
/// another, on a thread, until stopped (or [`Churn::MOST`] of them).
struct Churn {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<u64>,
}

impl Churn {
    const MOST: u64 = 100_000;

    fn start(addr: SocketAddr) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut done = 0;
            while !stopped.load(Ordering::Relaxed) && done < Churn::MOST {
                let line = format!("client {done} during the handover\n");
                let mut stream = TcpStream::connect(addr).expect("connect through HAProxy");
                stream.set_read_timeout(Some(DEADLINE)).unwrap();
                stream.write_all(line.as_bytes()).unwrap();
                assert_eq!(read_exact(&mut stream, line.len()), line.as_bytes());
                done += 1;
            }
            done
        });
        Churn { stop, thread }
    }

    /// Stop; how many were served.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .expect("a client during the handover failed")
    }
}

/// The pid in a pid file.
fn pid_in(file: &Path) -> i32 {
    let text = std::fs::read_to_string(file).unwrap();
    text.trim().parse().unwrap_or_else(|_| panic!("{text:?}"))
}

#[test]
fn a_binary_upgrade_behind_haproxy_costs_no_error_and_takes_no_server_down() {
    let Some(haproxy_bin) = haproxy_or_skip() else {
        return;
    };
    support::raise_limit_for_children();
    let dir = Scratch::new("upgrade");
    let pid_file = dir.0.join("echo-reactor.pid");
    let pid_file_arg = pid_file.display().to_string();
    let mut server = Instance::start_with(&["--workers", "2", "--pid-file", &pid_file_arg]);
    // Both of HAProxy's servers are this one instance: every connection
    // goes through the upgrade, none can fail over to another instance.
    let haproxy = Haproxy::start(&haproxy_bin, &dir.0, [&server, &server]);
    server.wait_for_log("workers accepting"); // a SIGUSR2 before then is ignored
    wait_until("both servers UP with a passing /healthz check", || {
        let servers = haproxy.servers();
        servers.len() == 2 && servers.iter().all(ServerStat::fully_healthy)
    });
    let before = haproxy.servers();

    // 1. An open-loop bench through HAProxy, every reply verified; it runs
    // until the test interrupts it (SIGINT: a summary of what it measured).
    const CONNECTIONS: u64 = 100;
    let frontend = haproxy.frontend.to_string();
    let mut rate_bench = Stopped(Some(
        Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
            .args(["bench", "--addr", &frontend, "--source-addrs", BENCH_SOURCE])
            .args(["--connections", &CONNECTIONS.to_string(), "--rate", "2000"])
            .args(["--duration", "120", "--warmup", "0", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the bench"),
    ));
    wait_for_value(server.metrics, "echo_reactor_connections_active", |n| {
        n >= CONNECTIONS
    });

    // 2. The upgrade, while every bench connection is held by an old
    // worker and new clients keep arriving: had the server refused one,
    // HAProxy would have retried it (counted below).
    let churn = Churn::start(haproxy.frontend);
    server.process.signal(libc::SIGUSR2);
    let line = server.wait_for_log("upgrade: new generation pid");
    let new = Generation(
        line.split("pid ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {line:?}")),
    );
    assert_eq!(
        pid_in(&pid_file),
        new.0,
        "the pid file names the new generation"
    );
    server.wait_for_log("SIGQUIT: draining");
    server.wait_for_log("SIGQUIT: draining");
    let churned = churn.stop();
    assert!(churned > 0, "no client connected during the handover");

    // 3. New clients through HAProxy, now that only the new generation
    // accepts (tests/upgrade.rs shows whose they are), are served.
    let (late_ok, late) = report(bench(haproxy.frontend, LATE_SOURCE, 10, "1"));
    assert!(late_ok, "{late}");
    assert_eq!(late["connections"]["achieved"], 10, "{late}");
    assert!(late["messages"].as_u64().unwrap() > 0, "{late}");

    // 4. The bench ran across the handover: every reply verified, no
    // error of any kind.
    let mut rate_bench = rate_bench.0.take().unwrap();
    assert!(
        rate_bench.try_wait().unwrap().is_none(),
        "the bench ended before the test interrupted it"
    );
    // SAFETY: kill only sends a signal, to the bench this test started
    // and has not reaped.
    unsafe { libc::kill(rate_bench.id() as i32, libc::SIGINT) };
    let (_, run) = report(rate_bench);
    assert_eq!(run["connections"]["achieved"], CONNECTIONS, "{run}");
    for kind in ["connect", "mismatch", "reset", "server_closed", "timeout"] {
        assert_eq!(run["errors"][kind], 0, "{kind} errors: {}", run["errors"]);
    }
    assert!(run["messages"].as_u64().unwrap() > 0, "{run}");

    // 5. Its connections closed, the old generation drains and exits 0.
    server.wait_for_log("drained, exiting");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = server.process.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the old supervisor did not exit"
        );
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0), "{status}");

    // 6. HAProxy never took a server DOWN, and never had to retry a
    // connection elsewhere: once the latest checks pass (the new
    // generation's), no counter moved since before the upgrade.
    wait_until("both servers' latest checks to pass", || {
        haproxy.servers().iter().all(ServerStat::fully_healthy)
    });
    // DOWN transitions, seconds DOWN, failed connections to it, retries,
    // redispatches; failed checks (`chkfail`) only for the message: one
    // check an old worker answered 503 while draining does not take a
    // server down (that takes `fall`, 2, in a row).
    const WATCHED: [&str; 5] = ["chkdown", "downtime", "econ", "wretr", "wredis"];
    let after = haproxy.servers();
    let counters = |s: &ServerStat| {
        (WATCHED.iter().chain(&["chkfail"]))
            .map(|c| format!("{c}={}", s.get(c)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (was, now) in before.iter().zip(&after) {
        for counter in WATCHED {
            assert_eq!(
                now.count(counter),
                was.count(counter),
                "{counter} of {}: before {}, after {}",
                now.get("svname"),
                counters(was),
                counters(now)
            );
        }
    }
    let said: Vec<String> = haproxy.lines.try_iter().collect();
    assert!(
        !said.iter().any(|l| l.contains(" is DOWN")),
        "HAProxy said: {said:#?}"
    );
}
