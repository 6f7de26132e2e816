//! `cargo bench`: echo-reactor against its peers, side by side, in one run.
//!
//! Servers, each in its own process pinned to core 0 (with its soft
//! open-file limit raised to the hard one):
//! - `echo-reactor` — `echo-reactor serve`;
//! - `tokio` — tokio `current_thread`, a task per connection, 4 KiB buffer,
//!   read then `write_all` (this bench binary re-executed with `--peer tokio`);
//! - `threads` — std, a thread per connection, same loop (`--peer threads`);
//! - `c-epoll` — benches/c_epoll_echo.c built with `cc -O2` when a C
//!   compiler is there (else a line on stderr says it is skipped, and why):
//!   the floor.
//!
//! The load is `echo-reactor bench` pinned to core 1, so load generator and
//! server never share a core. For every matrix point all servers run one
//! after another (interleaved), so drift on this shared machine hits them
//! alike. Every run verifies every reply; any error fails the bench.
//!
//! Sections, in order: the matrix; scale (1000 vs 19 000 connections);
//! the load generator's own efficiency; memory per idle connection;
//! fairness beside a hog; flood (peak memory and latency beside clients
//! that send and never read); the per-message cost (instructions and
//! system calls, counted by callgrind and strace when they are installed);
//! and the sweep (the same open-loop rate sweep against every server,
//! drawn as one latency–throughput chart, beside each server's own sweep
//! and single-run charts, all under `target/bench-charts/`).
//!
//! Modes: `cargo bench` runs every section short, as a smoke run (about two
//! minutes); `ECHO_BENCH=full cargo bench` runs the full matrix of
//! docs/BENCHMARKS.md, each point in three interleaved rounds (about 25 minutes).
//!
//! Files: `servers.rs` starts, stops and loads the servers; `cost.rs`
//! counts instructions and system calls.

mod cost;
mod servers;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use echo_reactor::bench::schema::Report;
use echo_reactor::stats::stat_value;
use serde_json::Value;

use servers::{
    c_peer_binary, echo_args, load, pinned_to, start, strings, threads_peer, tokio_peer, Server,
    LOAD_CORE, SERVER_CORE,
};

// ---- the matrix ----

struct Mode {
    points: Vec<(usize, usize)>,
    /// Connection counts for the scale check (echo-reactor alone).
    scale: (usize, usize),
    /// Interleaved rounds of the scale check and of the load-generator
    /// check (their medians are reported: single runs of the same point
    /// move by ±15 % or more on this shared machine).
    matrix_rounds: usize,
    scale_rounds: usize,
    loadgen_rounds: usize,
    /// Seconds of the shorter callgrind run (the longer is twice as long)
    /// and of the strace run.
    cost_seconds: f64,
    duration: &'static str,
    warmup: &'static str,
    hold_connections: usize,
    fairness_light: usize,
    /// Flood section: measured clients, and the floods beside them
    /// (flooders, bytes each), each run against a fresh server.
    flood_clients: usize,
    floods: Vec<(usize, &'static str)>,
    flood_duration: &'static str,
    flood_rounds: usize,
    /// Sweep section: seconds per step (+ warmup) and of the single runs.
    sweep_duration: &'static str,
    sweep_warmup: &'static str,
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
            matrix_rounds: 3,
            scale_rounds: 3,
            loadgen_rounds: 5,
            cost_seconds: 2.0,
            duration: "5",
            warmup: "1",
            hold_connections: 10_000,
            fairness_light: 1000,
            flood_clients: 50,
            // 2000 x 4 MiB is past what the kernel will buffer for TCP
            // machine-wide (tcp_mem): it affects every TCP user of the machine.
            floods: vec![(2000, "4MiB"), (200, "16MiB")],
            flood_duration: "5",
            flood_rounds: 3,
            sweep_duration: "5",
            sweep_warmup: "1",
        }
    } else {
        Mode {
            points: vec![(1, 64), (50, 64), (1000, 512)],
            scale: (100, 2000),
            matrix_rounds: 1,
            scale_rounds: 1,
            loadgen_rounds: 1,
            cost_seconds: 1.0,
            duration: "1",
            warmup: "0.3",
            hold_connections: 1000,
            fairness_light: 100,
            flood_clients: 50,
            floods: vec![(200, "4MiB"), (100, "16MiB")],
            flood_duration: "2",
            flood_rounds: 1,
            // Whole seconds: the per-second record lines up with the window.
            sweep_duration: "1",
            sweep_warmup: "1",
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

/// The errors of several runs of one point: "0", or each run's that had any.
fn errors_of(reports: &[Value]) -> String {
    let found: Vec<String> = reports.iter().map(errors).filter(|e| e != "0").collect();
    if found.is_empty() {
        "0".into()
    } else {
        found.join("; ")
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
/// 1 MiB messages on one more connection. Returns the light p99 in µs and
/// the hog's echoed MB/s.
///
/// The hog runs in this process, on the load core, at nice 10: on two cores
/// it must share a core with the server or with the load generator, and at
/// equal priority it would take the load generator's time and inflate the
/// latency the load generator measures, whatever the server does. Lowered,
/// it still sends whenever the load generator waits (the MB/s column says
/// how much).
fn light_p99(server: &Server, light: usize, duration: &str, with_hog: bool) -> (u64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicU64::new(0));
    let hog = with_hog.then(|| {
        let (addr, stop, echoed) = (server.addr, stop.clone(), echoed.clone());
        thread::spawn(move || {
            lower_this_thread();
            let mut stream = TcpStream::connect(addr).unwrap();
            let mut reader = stream.try_clone().unwrap();
            let drain = thread::spawn(move || {
                lower_this_thread();
                let mut buf = vec![0u8; 1 << 20];
                while let Ok(n @ 1..) = reader.read(&mut buf) {
                    echoed.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
            let message = vec![b'H'; 1 << 20];
            while !stop.load(Ordering::Relaxed) && stream.write_all(&message).is_ok() {}
            let _ = stream.shutdown(std::net::Shutdown::Both);
            let _ = drain.join();
        })
    });
    let args = echo_args(light, 64, duration, "0.5");
    let began = Instant::now();
    let report = load(server, &args);
    let hog_mb_s = echoed.load(Ordering::Relaxed) as f64 / began.elapsed().as_secs_f64() / 1e6;
    stop.store(true, Ordering::Relaxed);
    if let Some(hog) = hog {
        let _ = hog.join();
    }
    (report["latency_us"]["p99"].as_u64().unwrap_or(0), hog_mb_s)
}

/// Nice 10 for the calling thread (Linux: a thread id names one thread).
fn lower_this_thread() {
    // SAFETY: setpriority on this thread's own id; no memory is passed.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
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
    let setup = Setup {
        mode,
        c_binary,
        servers,
    };
    // `cargo bench -- cost scale` runs only those sections; no names: all.
    let chosen: Vec<&str> = args[1..]
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let sections: [(&str, Section); 8] = [
        ("matrix", matrix),
        ("scale", scale),
        ("loadgen", load_generator),
        ("memory", memory),
        ("fairness", fairness),
        ("flood", flood),
        ("cost", per_message_cost),
        ("sweep", sweep),
    ];
    for (name, section) in sections {
        if chosen.is_empty() || chosen.contains(&name) {
            section(&setup);
        }
    }
}

/// One section of the output.
type Section = fn(&Setup);

/// What every section needs: the mode and the servers to compare.
struct Setup {
    mode: Mode,
    c_binary: Option<std::path::PathBuf>,
    servers: Vec<&'static str>,
}

/// The matrix: every server at every (connections, size) point, interleaved.
fn matrix(setup: &Setup) {
    println!(
        "echo matrix: servers on core {SERVER_CORE}, load (echo-reactor bench, 1 thread) on core {LOAD_CORE}; {} s per run (+{} s warmup); medians of {} interleaved rounds",
        setup.mode.duration, setup.mode.warmup, setup.mode.matrix_rounds
    );
    println!(
        "{:<13} {:>6} {:>5} {:>11} {:>7} {:>9} {:>11} {:>8} {:>8} {:>9} {:>8}  errors",
        "server",
        "conns",
        "size",
        "msgs/s",
        "spread",
        "p99 us",
        "server us/msg",
        "x tokio",
        "cpu/tok",
        "client us",
        "sys/msg"
    );
    for &(connections, size) in &setup.mode.points {
        let args = echo_args(connections, size, setup.mode.duration, setup.mode.warmup);
        // Per server: every round's report, and echo-reactor's own system
        // calls per message (for the others, see the per-message cost section).
        let mut runs: Vec<(&str, Vec<Value>, Vec<f64>)> = setup
            .servers
            .iter()
            .map(|&name| (name, Vec::new(), Vec::new()))
            .collect();
        for _ in 0..setup.mode.matrix_rounds {
            for (name, reports, syscalls) in &mut runs {
                let server = start(name, setup.c_binary.as_deref());
                reports.push(load(&server, &args));
                syscalls.extend(cost::own_syscalls_per_message(&server.stop(), size));
            }
        }
        let middle = |reports: &[Value], pick: fn(&Value) -> f64| {
            median(&mut reports.iter().map(pick).collect::<Vec<_>>())
        };
        let rate = |r: &Value| f(&r["msgs_per_sec"]);
        let server_cpu = |r: &Value| f(&r["server"]["cpu_us_per_msg"]);
        let client_cpu = |r: &Value| f(&r["client"]["cpu_us_per_msg"]);
        let p99 = |r: &Value| f(&r["latency_us"]["p99"]);
        let (_, tokio, _) = runs.iter().find(|(n, _, _)| *n == "tokio").unwrap();
        let (tokio_rate, tokio_cpu) = (middle(tokio, rate), middle(tokio, server_cpu));
        for (name, reports, syscalls) in &mut runs {
            let syscalls = (!syscalls.is_empty()).then(|| median(syscalls));
            println!(
                "{:<13} {:>6} {:>5} {:>11.0} {:>7} {:>9.0} {:>11.2} {:>8} {:>8} {:>9.2} {:>8}  {}",
                name,
                connections,
                size,
                middle(reports, rate),
                spread(reports, rate),
                middle(reports, p99),
                middle(reports, server_cpu),
                ratio(middle(reports, rate), tokio_rate),
                ratio(middle(reports, server_cpu), tokio_cpu),
                middle(reports, client_cpu),
                cost::cell(syscalls, 2),
                errors_of(reports),
            );
        }
    }
}

/// Scale: echo-reactor at the small and the large connection count,
/// alternating, with the C floor beside it (same kernel, least user-space
/// work) to show how much of any drop is the kernel's.
fn scale(setup: &Setup) {
    let (small, large) = setup.mode.scale;
    let servers: Vec<&'static str> = ["echo-reactor", "c-epoll"]
        .into_iter()
        .filter(|name| setup.servers.contains(name))
        .collect();
    println!(
        "\nscale: 64 B closed loop, {small} vs {large} connections (load: 2 threads), {} interleaved rounds",
        setup.mode.scale_rounds
    );
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    for round in 1..=setup.mode.scale_rounds {
        for (which, &name) in servers.iter().enumerate() {
            let mut rates = Vec::new();
            for connections in [small, large] {
                let server = start(name, setup.c_binary.as_deref());
                let mut args = echo_args(connections, 64, setup.mode.duration, setup.mode.warmup);
                args.extend(strings(&["--threads", "2"]));
                let r = load(&server, &args);
                println!(
                    "  round {round}: {name:<13} {connections:>6} connections: {}/{} achieved, {:.0} msgs/s, p99 {} us, server {:.2} us/msg, client {:.2} us/msg, errors {}",
                    r["connections"]["achieved"],
                    connections,
                    f(&r["msgs_per_sec"]),
                    r["latency_us"]["p99"],
                    f(&r["server"]["cpu_us_per_msg"]),
                    f(&r["client"]["cpu_us_per_msg"]),
                    errors(&r)
                );
                rates.push(f(&r["msgs_per_sec"]));
            }
            println!(
                "  round {round}: {name:<13} ratio {large}/{small}: {}",
                ratio(rates[1], rates[0])
            );
            ratios[which].push(rates[1] / rates[0]);
        }
    }
    for (name, ratios) in servers.iter().zip(&mut ratios) {
        println!(
            "  median ratio {large}/{small}, {name}: {:.2}",
            median(ratios)
        );
    }
}

/// The load generator against a thread-per-connection client, per CPU-second.
fn load_generator(setup: &Setup) {
    println!(
        "\nload generator: msgs per client CPU-second, 50 x 64 B ping-pong against echo-reactor, {} interleaved rounds",
        setup.mode.loadgen_rounds
    );
    let mut efficiency = Vec::new();
    for round in 1..=setup.mode.loadgen_rounds {
        let server = start("echo-reactor", None);
        let r = load(
            &server,
            &echo_args(50, 64, setup.mode.duration, setup.mode.warmup),
        );
        let ours = f(&r["messages"]) / f(&r["client"]["cpu_s"]);
        let secs: f64 = setup.mode.duration.parse().unwrap();
        // The thread-per-connection client runs in this process, on the load core.
        let (threaded_rate, threaded) = pinned_to(LOAD_CORE, || {
            threaded_client(server.addr, 50, Duration::from_secs_f64(secs))
        });
        println!(
            "  round {round}: echo-reactor bench (mio, 1 thread): {:.0} msgs/s, {ours:.0} msgs per CPU-second; thread-per-connection client: {threaded_rate:.0} msgs/s, {threaded:.0} msgs per CPU-second; ratio {}",
            f(&r["msgs_per_sec"]),
            ratio(ours, threaded)
        );
        efficiency.push(ours / threaded);
    }
    println!("  median efficiency ratio: {:.2}", median(&mut efficiency));
}

/// Memory: server RSS per idle connection, and after each echoed once.
fn memory(setup: &Setup) {
    println!(
        "\nmemory: {} idle connections held, then each echoes once (server RSS per connection)",
        setup.mode.hold_connections
    );
    println!(
        "{:<13} {:>12} {:>16}",
        "server", "idle B/conn", "after echo B/conn"
    );
    let hold_arg = setup.mode.hold_connections.to_string();
    for &name in &setup.servers {
        let server = start(name, setup.c_binary.as_deref());
        let r = load(
            &server,
            &strings(&[
                "--scenario",
                "hold",
                // Each server here is started for this run: its growth is per connection.
                "--server-fresh",
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
}

/// Fairness: light connections' p99 alone and beside a hog.
fn fairness(setup: &Setup) {
    println!("\nfairness: p99 of {} light 64 B connections, alone and beside one connection pipelining 1 MiB messages (the hog at nice 10 on the load core)", setup.mode.fairness_light);
    println!(
        "{:<13} {:>10} {:>10} {:>8} {:>10}",
        "server", "alone us", "w/ hog us", "ratio", "hog MB/s"
    );
    for &name in &setup.servers {
        let server = start(name, setup.c_binary.as_deref());
        let (alone, _) = light_p99(
            &server,
            setup.mode.fairness_light,
            setup.mode.duration,
            false,
        );
        // The hog's threads belong to this process: keep them on the load core.
        let (with_hog, hog_mb_s) = pinned_to(LOAD_CORE, || {
            light_p99(
                &server,
                setup.mode.fairness_light,
                setup.mode.duration,
                true,
            )
        });
        println!(
            "{:<13} {:>10} {:>10} {:>8} {:>10.0}",
            name,
            alone,
            with_hog,
            ratio(with_hog as f64, alone as f64),
            hog_mb_s
        );
    }
}

/// Flood: the measured clients' latency and errors, and the server's peak
/// memory, alone and beside flooders (connections that send up to their
/// bytes and never read). Every run gets a fresh server, so its peak is
/// this run's (`VmHWM`). In each round every server runs alone and then
/// beside each flood, back to back, so its "x alone" ratio compares runs
/// made under the same machine load; with several rounds, medians.
fn flood(setup: &Setup) {
    let m = &setup.mode;
    println!(
        "\nflood: {} measured clients, 64 B closed loop, alone and beside flooders that each send up to the bytes shown and never read (`bench --scenario flood`, flood thread under SCHED_IDLE on the load core); {} s measured after {} s warmup, the flood fills the measured window; a fresh server per run; medians of {} round(s)",
        m.flood_clients, m.flood_duration, m.warmup, m.flood_rounds
    );
    let floods: Vec<(usize, &str)> = std::iter::once((0, ""))
        .chain(m.floods.iter().copied())
        .collect();
    // Per server, per flood: every round's report and echo-reactor's own
    // counters from its final stats line (none for the peers).
    let mut runs: Vec<Vec<(Vec<Value>, Vec<OwnCounters>)>> =
        vec![vec![(Vec::new(), Vec::new()); floods.len()]; setup.servers.len()];
    for _ in 0..m.flood_rounds {
        for (which, &name) in setup.servers.iter().enumerate() {
            for (point, &(flooders, bytes)) in floods.iter().enumerate() {
                let server = start(name, setup.c_binary.as_deref());
                let mut args = echo_args(m.flood_clients, 64, m.flood_duration, m.warmup);
                if flooders > 0 {
                    let count = flooders.to_string();
                    args.extend(strings(&[
                        "--scenario",
                        "flood",
                        "--flooders",
                        &count,
                        "--flood-bytes",
                        bytes,
                    ]));
                }
                let report = load(&server, &args);
                let (reports, counters) = &mut runs[which][point];
                reports.push(report);
                counters.extend(OwnCounters::from_stats(&server.stop()));
            }
        }
    }
    println!(
        "{:<13} {:>14} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>9} {:>8} {:>10} {:>8}  errors",
        "server",
        "flood",
        "peak RSS",
        "held MiB",
        "evicted",
        "pressure",
        "TCP MiB",
        "msgs/s",
        "p50 us",
        "p99 us",
        "x alone",
        "sent MiB",
        "closed"
    );
    let mib = |v: f64| format!("{:.1}", v / 1048576.0);
    let middle = |reports: &[Value], pick: &dyn Fn(&Value) -> f64| {
        median(&mut reports.iter().map(pick).collect::<Vec<_>>())
    };
    for (point, &(flooders, bytes)) in floods.iter().enumerate() {
        for (which, &name) in setup.servers.iter().enumerate() {
            let alone_p99 = middle(&runs[which][0].0, &|r| f(&r["latency_us"]["p99"]));
            let (reports, counters) = &runs[which][point];
            let own = |pick: fn(&OwnCounters) -> f64, show: &dyn Fn(f64) -> String| {
                let mut values: Vec<f64> = counters.iter().map(pick).collect();
                if values.is_empty() {
                    "-".to_string()
                } else {
                    show(median(&mut values))
                }
            };
            let count = |v: f64| format!("{v:.0}");
            let p99 = middle(reports, &|r| f(&r["latency_us"]["p99"]));
            let sampled = reports
                .iter()
                .any(|r| r["server"]["rss_peak_source"] == "sampled");
            let flood_cell = |text: String| if flooders == 0 { "-".into() } else { text };
            println!(
                "{:<13} {:>14} {:>9} {:>9} {:>8} {:>8} {:>8.0} {:>9.0} {:>8.0} {:>9.0} {:>8} {:>10} {:>8}  {}",
                name,
                if flooders == 0 {
                    "alone".to_string()
                } else {
                    format!("{flooders} x {bytes}")
                },
                format!(
                    "{}{}",
                    mib(middle(reports, &|r| f(&r["server"]["rss_peak_bytes"]))),
                    if sampled { "*" } else { "" }
                ),
                own(|c| c.peak_held_bytes, &mib),
                own(|c| c.closed_evicted, &count),
                own(|c| c.memory_pressure_episodes, &count),
                middle(reports, &|r| f(&r["kernel"]["tcp_mem_peak_bytes"])) / 1048576.0,
                middle(reports, &|r| f(&r["msgs_per_sec"])),
                middle(reports, &|r| f(&r["latency_us"]["p50"])),
                p99,
                flood_cell(ratio(p99, alone_p99)),
                flood_cell(mib(middle(reports, &|r| f(&r["flood"]["bytes_sent"])))),
                flood_cell(format!(
                    "{:.0}",
                    middle(reports, &|r| f(&r["flood"]["closed_by_server"]))
                )),
                errors_of(reports),
            );
        }
    }
    println!("  peak RSS in MiB: the server's VmHWM over the run (* where it did not rise and 100 ms samples of VmRSS are shown); held, evicted, pressure: echo-reactor's own peak_held_bytes, closed_evicted and memory_pressure_episodes (--max-memory, default 64 MiB); TCP: the kernel's TCP socket memory at its peak, machine-wide (every TCP user of the machine counts; buffers are trimmed past net.ipv4.tcp_mem's pressure mark); closed: flooders the server closed");
}

/// echo-reactor's own memory-budget counters, from its final stats line.
#[derive(Clone, Copy)]
struct OwnCounters {
    peak_held_bytes: f64,
    closed_evicted: f64,
    memory_pressure_episodes: f64,
}

impl OwnCounters {
    /// `None` for a server that prints no stats line (the peers).
    fn from_stats(line: &str) -> Option<OwnCounters> {
        let value = |key| stat_value(line, key).map(|v| v as f64);
        Some(OwnCounters {
            peak_held_bytes: value("peak_held_bytes")?,
            closed_evicted: value("closed_evicted").unwrap_or(0.0),
            memory_pressure_episodes: value("memory_pressure_episodes").unwrap_or(0.0),
        })
    }
}

/// The per-message cost: instructions and system calls, counted.
fn per_message_cost(setup: &Setup) {
    println!(
        "\nper-message cost, 50 x 64 B closed loop, counted (not timed): user-space instructions (callgrind, marginal of a {0} s and a {1} s run) and system calls (strace -f -c, one {0} s run)",
        setup.mode.cost_seconds,
        2.0 * setup.mode.cost_seconds
    );
    let (callgrind, strace) = (cost::available("valgrind"), cost::available("strace"));
    if !callgrind || !strace {
        println!(
            "  (not installed, so shown as -: {}{})",
            if callgrind { "" } else { "valgrind " },
            if strace { "" } else { "strace" }
        );
    }
    println!(
        "{:<13} {:>10} {:>12} {:>6} {:>6} {:>6} {:>6} {:>13}",
        "server", "instr/msg", "syscalls/msg", "read", "write", "poll", "other", "own counters"
    );
    let dir = std::env::temp_dir().join(format!("echo-bench-cost.{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    for &name in &setup.servers {
        let c = setup.c_binary.as_deref();
        let instructions = callgrind
            .then(|| cost::instructions_per_message(name, c, setup.mode.cost_seconds, &dir))
            .flatten();
        let syscalls = strace
            .then(|| cost::syscalls_per_message(name, c, setup.mode.cost_seconds, &dir))
            .flatten();
        let part = |pick: fn(&cost::Syscalls) -> f64| syscalls.as_ref().map(pick);
        println!(
            "{:<13} {:>10} {:>12} {:>6} {:>6} {:>6} {:>6} {:>13}",
            name,
            cost::cell(instructions, 0),
            cost::cell(part(cost::Syscalls::total), 2),
            cost::cell(part(|s| s.reads), 2),
            cost::cell(part(|s| s.writes), 2),
            cost::cell(part(|s| s.polls), 2),
            cost::cell(part(|s| s.other), 2),
            cost::cell(syscalls.as_ref().and_then(|s| s.own_counters), 2),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// How far the rounds' values lie apart: ±half the range, in % of the
/// median ("-" for a single round).
fn spread(reports: &[Value], pick: fn(&Value) -> f64) -> String {
    let mut values: Vec<f64> = reports.iter().map(pick).collect();
    let (low, high) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let middle = median(&mut values);
    if values.len() < 2 || middle <= 0.0 {
        return "-".into();
    }
    format!("±{:.0}%", 50.0 * (high - low) / middle)
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Where the sweep section writes its charts: `target/bench-charts/`.
fn charts_dir() -> std::path::PathBuf {
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(tmp).join("bench-charts");
    std::fs::create_dir_all(&dir).expect("create target/bench-charts");
    dir
}

/// The sweep: every server through the same open-loop rates (50 x 64 B,
/// pipeline 1). The rates come from short closed-loop probes of every
/// server: from a tenth of the largest capacity to past it, so every
/// server meets the same offered loads and the weaker ones show their
/// knee first. One chart holds every server's p99 against its achieved
/// msgs/s; each server also gets its own sweep chart (p50/p99/p99.9) and a
/// single-run chart at half the largest capacity.
fn sweep(setup: &Setup) {
    let (duration, warmup) = (setup.mode.sweep_duration, setup.mode.sweep_warmup);
    let dir = charts_dir();
    let mut capacity: f64 = 0.0;
    for &name in &setup.servers {
        let server = start(name, setup.c_binary.as_deref());
        let r = load(&server, &echo_args(50, 64, "2", "0.5"));
        capacity = capacity.max(f(&r["msgs_per_sec"]));
    }
    let rates = echo_reactor::bench::sweep::auto_rates(capacity);
    let list: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
    println!(
        "\nsweep: 50 x 64 B, pipeline 1, open loop; {} steps of {duration} s (+{warmup} s warmup) at {} msgs/s (a tenth to 1.15 x the largest closed-loop capacity, {capacity:.0} msgs/s); SLO p99 1 ms",
        rates.len(),
        list.join(", ")
    );
    let mut reports = Vec::new();
    for &name in &setup.servers {
        let server = start(name, setup.c_binary.as_deref());
        let mut args = echo_args(50, 64, duration, warmup);
        args.extend(strings(&["--sweep", &list.join(",")]));
        let r = load(&server, &args);
        let typed =
            |r: &Value| -> Report { serde_json::from_value(r.clone()).expect("a bench report") };
        // Drawn here rather than with --plot: the subtitle names the server.
        let about = |r: &Report| {
            echo_reactor::bench::plot::describe_report(r).replacen(
                &format!("server at {}", server.addr),
                name,
                1,
            )
        };
        // The report too, so the charts can be redrawn or compared later.
        let _ = std::fs::write(dir.join(format!("sweep-{name}.json")), r.to_string());
        let own_chart = dir.join(format!("sweep-{name}.svg"));
        let sweep = typed(&r);
        echo_reactor::bench::plot::sweep_chart(&sweep, &about(&sweep), &own_chart)
            .expect("draw the chart");
        let knee = &r["knee"];
        println!(
            "  {name:<13} knee {}  (steps: {})",
            if knee.is_null() {
                "none".to_string()
            } else {
                format!(
                    "{:.0} msgs/s at p99 {} us",
                    f(&knee["msgs_per_sec"]),
                    knee["p99_us"]
                )
            },
            r["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| format!(
                    "{:.0}/s p99 {} us",
                    f(&s["msgs_per_sec"]),
                    s["latency_us"]["p99"]
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        // A single run at half the largest capacity, for its spectrum.
        let run_chart = dir.join(format!("run-{name}.svg"));
        let mut args = echo_args(50, 64, duration, warmup);
        let half = format!("{:.0}", capacity / 2.0);
        args.extend(strings(&["--rate", &half]));
        let single = load(&server, &args);
        let single = typed(&single);
        echo_reactor::bench::plot::run_chart(&single, &about(&single), &run_chart)
            .expect("draw the chart");
        reports.push((name.to_string(), sweep));
    }
    let chart = dir.join("sweep-servers.svg");
    let subtitle = format!(
        "servers on core {SERVER_CORE}, echo-reactor bench (1 thread) on core {LOAD_CORE} · 50 connections · 64 B · pipeline 1 · {} steps of {duration} s · {}",
        rates.len(),
        reports
            .first()
            .map(|(_, r)| format!("Linux {}", r.environment.kernel))
            .unwrap_or_default()
    );
    echo_reactor::bench::plot::servers_chart(&reports, &subtitle, &chart).expect("draw the chart");
    println!(
        "  charts: {} (and sweep-*.svg, run-*.svg beside it)",
        chart.display()
    );
}
