//! Two instances behind a real HAProxy, configured by
//! `contrib/haproxy/haproxy.cfg` as committed (TCP mode, `send-proxy-v2`,
//! `/healthz` checks): every reply through HAProxy is verified, each
//! instance logs the bench's own address (from the PROXY header), and a
//! rolling restart — SIGTERM to one instance mid-run — loses no reply.
//!
//! Skipped, saying why, when `haproxy` is not installed; with `CI` set it
//! fails instead (`.ci/run` installs it).

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use echo_reactor::proxy_header::{encode, HeaderVersion};
use echo_reactor::stats::stat_value;
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
        let mut cmd = ServeProcess::command(&[
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--proxy-protocol",
            "--shutdown-grace",
            "10",
        ]);
        cmd.env("RUST_LOG", "info,echo_reactor::protocol::proxied=debug")
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

    /// `show stat` on the admin socket: (server, status, check status) per server.
    fn servers(&self) -> Vec<(String, String, String)> {
        let Ok(mut sock) = UnixStream::connect(&self.admin) else {
            return Vec::new(); // not listening yet
        };
        sock.write_all(b"show stat\n").unwrap();
        let mut csv = String::new();
        let _ = sock.read_to_string(&mut csv);
        let header: Vec<&str> = csv.lines().next().unwrap_or("").split(',').collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| h.trim_start_matches("# ") == name)
        };
        let (Some(sv), Some(status), Some(check)) =
            (col("svname"), col("status"), col("check_status"))
        else {
            return Vec::new();
        };
        csv.lines()
            .skip(1)
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > check && f[sv].starts_with('r'))
            .map(|f| {
                (
                    f[sv].to_string(),
                    f[status].to_string(),
                    f[check].to_string(),
                )
            })
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

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_rolling_restart_behind_haproxy_loses_no_reply_and_logs_the_real_clients() {
    let Some(haproxy_bin) = haproxy_binary() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "haproxy is not installed, and CI is set: .ci/run should have installed it"
        );
        eprintln!(
            "SKIPPED: haproxy is not installed (apt-get install haproxy); CI would fail here"
        );
        return;
    };
    support::raise_limit_for_children();
    let dir = std::env::temp_dir().join(format!("echo-reactor-haproxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut r1 = Instance::start();
    let mut r2 = Instance::start();
    let haproxy = Haproxy::start(&haproxy_bin, &dir, [&r1, &r2]);

    // Both instances pass their /healthz checks (L7OK: HTTP 200).
    wait_until("both servers UP with a passing /healthz check", || {
        let servers = haproxy.servers();
        servers.len() == 2
            && servers
                .iter()
                .all(|(_, up, check)| up == "UP" && check == "L7OK")
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
    let _ = std::fs::remove_dir_all(&dir);
}
