//! `--processes P`: one run spread over P load-generator processes.
//!
//! Why processes, not more threads: the open-file limit is per process
//! (20 000 here), so one process cannot hold 100 000 connections; P
//! processes hold P times as many, each under its own limit.
//!
//! How: the bench re-executes its own binary P times as `bench --json`
//! children. Each gets its share of `--connections` (and of `--rate` and
//! `--flooders`), a range of connection ids of its own (so ids stay unique
//! and the round-robin over source addresses is global), the target
//! address and server pid, and every other setting unchanged. Their JSON
//! reports are merged exactly ([`merge`](super::merge)), and this process
//! prints the result as its own, with `processes` = P.
//!
//! The start gate: summed rates mean something only if the children
//! measure over the same window, but connecting thousands of connections
//! takes each process a different time. So a child (hidden flag
//! `--gated`) stops once connected, prints `gate connected` on stdout and
//! waits for a line on stdin; when every child has arrived, the parent
//! answers `go` to all of them, and their warm-up and measured windows
//! start together. `hold` has a second gate once every connection has
//! answered, so the server's memory is read after all processes are done.
//! A child whose stdin closes (the parent is gone) stops with an error.
//!
//! Invariant: every child started is waited for; if one fails before
//! reporting, the others are killed (each by its own handle) and the error
//! is the failing child's own one line.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use clap::ValueEnum;

use super::merge::{merge, Run};
use super::report::{fill_connect_time, hold_per_connection};
use super::schema::{LoadGenerator, Report};
use super::{interrupt, split, sysinfo, BenchArgs, Scenario};

/// A child's side of the start gate (see the module header): a no-op
/// unless the bench runs as a child (`--gated`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Gate {
    enabled: bool,
}

impl Gate {
    pub(super) fn new(enabled: bool) -> Gate {
        Gate { enabled }
    }

    /// Say we reached gate `name`, then wait until the parent says go.
    pub(super) fn pass(&self, name: &str) -> io::Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let mut out = io::stdout().lock();
        writeln!(out, "gate {name}")?;
        out.flush()?;
        let mut line = String::new();
        if io::stdin().lock().read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("bench: gate {name}: the parent bench went away"),
            ));
        }
        Ok(())
    }
}

/// One child load generator.
struct Generator {
    child: Child,
    /// Where `go` is written; `None` once closed.
    stdin: Option<ChildStdin>,
    /// Its stderr, read to the end on a thread of its own.
    stderr: Option<thread::JoinHandle<String>>,
    /// Its report, once printed.
    report: Option<Report>,
}

impl Drop for Generator {
    fn drop(&mut self) {
        // Only reached early on a failure: a child that is still running
        // would wait at a gate forever.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a child said on stdout, as the reader threads pass it on.
enum Said {
    Line(usize, String),
    Closed(usize),
}

/// The arguments of child `index`: its share, and every other setting as given.
fn child_args(
    args: &BenchArgs,
    addr: SocketAddr,
    server_pid: Option<u32>,
    sources: &[IpAddr],
    (first_id, connections): (u32, usize),
    flooders: Option<usize>,
) -> Vec<String> {
    let name = |v: &dyn Fn() -> Option<clap::builder::PossibleValue>| {
        v().map(|p| p.get_name().to_string()).unwrap_or_default()
    };
    let mut a: Vec<String> = vec![
        "bench".into(),
        "--json".into(),
        "--gated".into(),
        "--addr".into(),
        addr.to_string(),
        "--connections".into(),
        connections.to_string(),
        "--first-connection-id".into(),
        first_id.to_string(),
        "--size".into(),
        args.size.to_string(),
        "--duration".into(),
        args.duration.as_secs_f64().to_string(),
        "--warmup".into(),
        args.warmup.as_secs_f64().to_string(),
        "--pipeline".into(),
        args.pipeline.to_string(),
        "--threads".into(),
        args.threads.to_string(),
        "--protocol".into(),
        name(&|| args.protocol.to_possible_value()),
        "--scenario".into(),
        name(&|| args.scenario.to_possible_value()),
    ];
    if args.scenario != Scenario::Connect {
        // The deadline for the whole run's connections, not the share's:
        // every child connects at once, to the same server.
        let deadline = args.connect_deadline().as_secs_f64();
        a.extend(["--connect-timeout".into(), deadline.to_string()]);
    }
    if let Some(version) = args.proxy_header {
        a.extend(["--proxy-header".into(), version.to_string()]);
    }
    if let Some(rate) = args.rate {
        let share = rate * connections as f64 / args.connections as f64;
        a.extend(["--rate".into(), share.to_string()]);
    }
    if let Some(pid) = server_pid {
        a.extend(["--server-pid".into(), pid.to_string()]);
    }
    if let Some(flooders) = flooders {
        a.extend([
            "--flooders".into(),
            flooders.to_string(),
            "--flood-bytes".into(),
            args.flood_bytes.to_string(),
        ]);
    }
    if !sources.is_empty() {
        let list: Vec<String> = sources.iter().map(IpAddr::to_string).collect();
        a.extend(["--source-addrs".into(), list.join(",")]);
    }
    a
}

/// Run the bench as `args.processes` children against `addr` and merge
/// their reports. The report's settings and environment are this
/// process's (what the user asked for), with `processes` = P.
pub(super) fn run(
    args: &BenchArgs,
    addr: SocketAddr,
    server_pid: Option<u32>,
    sources: &[IpAddr],
    base_report: Report,
) -> io::Result<Report> {
    let p = args.processes;
    let shares = split(args.connections, p);
    let flooders: Vec<Option<usize>> = match (args.scenario, args.flooders) {
        (Scenario::Flood, Some(n)) => split(n, p).into_iter().map(|s| Some(s.1)).collect(),
        _ => vec![None; p],
    };
    // The server before any child connects (a child's own "before" may
    // include another child's connections).
    let before = server_pid.and_then(sysinfo::tree_memory);
    let peak_before = server_pid.and_then(sysinfo::process_rss_hwm);
    let exe = std::env::current_exe()?;
    // The run's time to connect: from starting the children to the last
    // one connected (each child times only its own connects, from when it
    // got going; on a busy machine the last ones start late).
    let started = Instant::now();
    let mut connected_after = None;
    let (said, hear) = mpsc::channel();
    let mut generators: Vec<Generator> = Vec::with_capacity(p);
    for (index, (&share, &flood_share)) in shares.iter().zip(&flooders).enumerate() {
        let mut command = Command::new(&exe);
        // Each dies with this process; a Ctrl-C reaches this one only, which
        // passes it on (below), so each child reports what it measured.
        interrupt::die_with_parent(&mut command);
        let mut child = command
            .args(child_args(
                args,
                addr,
                server_pid,
                sources,
                share,
                flood_share,
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("bench: start load generator: {e}")))?;
        let stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let said = said.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if said.send(Said::Line(index, line)).is_err() {
                    return;
                }
            }
            let _ = said.send(Said::Closed(index));
        });
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        generators.push(Generator {
            stdin: child.stdin.take(),
            child,
            stderr: Some(stderr),
            report: None,
        });
    }
    drop(said);

    let (mut at_gate, mut closed, mut passed_on) = (0, 0, false);
    while closed < p {
        if interrupt::requested() && !passed_on {
            passed_on = true;
            for generator in &mut generators {
                // SAFETY: signals only a child we started and have not waited for.
                unsafe { libc::kill(generator.child.id() as libc::pid_t, libc::SIGINT) };
                // Those waiting at a gate for the others go on now.
                if let Some(stdin) = generator.stdin.as_mut() {
                    let _ = writeln!(stdin, "go").and_then(|()| stdin.flush());
                }
            }
        }
        let event = match hear.recv_timeout(interrupt::CHECK_EVERY) {
            Ok(event) => event,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        match event {
            // Once stopping, nobody waits for the others: a child at a gate
            // goes on at once, finds the stop asked for, and reports.
            Said::Line(index, line) if line.starts_with("gate ") && passed_on => {
                if let Some(stdin) = generators[index].stdin.as_mut() {
                    let _ = writeln!(stdin, "go").and_then(|()| stdin.flush());
                }
            }
            Said::Line(_, line) if line.starts_with("gate ") => {
                at_gate += 1;
                if at_gate == p && line == "gate connected" && connected_after.is_none() {
                    connected_after = Some(started.elapsed());
                }
                if at_gate == p {
                    // Everyone is there: open the gate for all at once.
                    at_gate = 0;
                    for generator in &mut generators {
                        if let Some(stdin) = generator.stdin.as_mut() {
                            let _ = writeln!(stdin, "go").and_then(|()| stdin.flush());
                        }
                    }
                }
            }
            Said::Line(index, line) => {
                generators[index].report = serde_json::from_str(&line).ok();
            }
            Said::Closed(index) => {
                closed += 1;
                if generators[index].report.is_none() {
                    return Err(failure(&mut generators, index));
                }
            }
        }
    }
    let mut runs = Vec::with_capacity(p);
    for (index, generator) in generators.iter_mut().enumerate() {
        generator.stdin = None;
        let _ = generator.child.wait();
        runs.push(Run {
            name: format!("load generator {} of {p}", index + 1),
            report: generator.report.take().unwrap_or_default(),
        });
    }
    // Each process's own figures, to see how evenly the load was spread.
    let each: Vec<LoadGenerator> = runs
        .iter()
        .map(|run| {
            let r = &run.report;
            LoadGenerator {
                connections: r.connections.achieved,
                messages: r.messages,
                msgs_per_sec: r.msgs_per_sec,
                latency_us: r.latency_us,
                errors: r.errors,
                connect_s: r.connections.connect_s,
            }
        })
        .collect();
    let mut report = merge(&runs).map_err(io::Error::other)?;
    report.load_generators = Some(each);
    report.processes = p as u64;
    report.settings = base_report.settings;
    report.environment = base_report.environment;
    report.connections.requested = args.connections as u64;
    if let (Some(took), Some(_)) = (connected_after, report.connections.connect_s) {
        fill_connect_time(&mut report, took);
    }
    if let Some(hold) = report.hold.as_mut() {
        hold.rss_before_bytes = before.map(|m| m.rss);
        hold.anon_before_bytes = before.map(|m| m.anon);
        hold.server_processes_before = before.map(|m| m.processes);
        hold.rss_peak_before_bytes = peak_before;
        // The children ran with --addr; the server is fresh if this
        // process started it, or was said to be.
        hold.rss_fresh_server = args.addr.is_none() || args.server_fresh;
        hold_per_connection(&mut report);
    }
    Ok(report)
}

/// Child `index` stopped without a report: its own last line of stderr
/// (the others are killed when `generators` is dropped).
fn failure(generators: &mut [Generator], index: usize) -> io::Error {
    let generator = &mut generators[index];
    let status = generator.child.wait().ok();
    let stderr = generator
        .stderr
        .take()
        .and_then(|h| h.join().ok())
        .unwrap_or_default();
    let said = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim_start_matches("echo-reactor: ").to_string())
        .unwrap_or_else(|| format!("exited with {status:?} and no report"));
    io::Error::other(format!(
        "load generator {} of {}: {said}",
        index + 1,
        generators.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn a_child_gets_its_share_and_every_other_setting() {
        let cli = Cli::parse_from([
            "bench",
            "--connections",
            "10",
            "--rate",
            "1000",
            "--duration",
            "2.5",
            "--warmup",
            "0",
            "--processes",
            "2",
            "--protocol",
            "upper",
        ]);
        let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let sources: Vec<IpAddr> = vec!["127.0.0.2".parse().unwrap()];
        let a = child_args(&cli.bench, addr, Some(42), &sources, (5, 5), None);
        let child = Cli::parse_from(&a); // a[0], "bench", stands for the program name
        let b = &child.bench;
        assert_eq!((b.connections, b.first_connection_id), (5, 5));
        assert_eq!(b.rate, Some(500.0));
        assert_eq!(b.duration, cli.bench.duration);
        assert_eq!(b.warmup, cli.bench.warmup);
        assert_eq!(b.protocol, cli.bench.protocol);
        assert_eq!((b.addr, b.server_pid), (Some(addr), Some(42)));
        assert_eq!(b.source_addrs, sources);
        assert!(b.gated && b.json);
        assert_eq!(b.processes, 1, "a child runs in its own process only");
    }
}
