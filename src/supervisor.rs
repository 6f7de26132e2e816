//! `serve --workers N`: one supervisor process, N worker processes, each
//! worker the same single-threaded reactor (nginx's master and workers;
//! Seastar's shard per core). Processes, not threads, because the limit
//! that stops one reactor — open descriptors, 20 000 here — is per process.
//!
//! The supervisor:
//! - binds every socket once: per TCP and UDP address one `SO_REUSEPORT`
//!   socket *per worker* (the kernel spreads connections over them by a
//!   hash of the client's address and port), a Unix socket shared by all;
//!   or, under socket activation, shares the sockets systemd handed it;
//! - starts each worker by re-executing this binary with its sockets as
//!   descriptors 3, 4, ... and `LISTEN_FDS` set (`inherit.rs`), in a
//!   process group of its own (a terminal's Ctrl-C reaches the supervisor
//!   only, and it forwards one signal — two would make a worker exit
//!   without draining);
//! - restarts a worker that dies, at most [`MAX_RESTARTS`] per
//!   [`RESTART_WINDOW`], logged. The supervisor keeps its copy of every
//!   socket, so connections queued on a dead worker's socket wait for its
//!   successor instead of being reset; only the dead worker's open
//!   connections are lost;
//! - forwards SIGINT/SIGTERM (each worker drains as `serve` does; a second
//!   signal makes them, and it, exit at once), and prints one final
//!   `stats` line: every worker's final line summed, plus `workers=N`.
//!
//! Nothing here runs per message: workers make no calls to each other or
//! to the supervisor. With `--metrics` they share one region of memory,
//! each publishing its numbers into its own slot at most every 10 ms, and a
//! listener any of them answers a scrape on with every slot summed
//! (`worker_stats.rs`).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::inherit::{listening_fd, pass_sockets};
use crate::reactor::Listening;
use crate::server::METRICS_BACKLOG;
use crate::server::{BoundSocket, Config};
use crate::sockets::{bind_tcp, bind_tcp_group, bind_udp_group, bind_unix};
use crate::worker_stats::{WorkerSlots, WorkersMetrics, METRICS_FDS_ENV};

/// Set in a worker's environment to `INDEX/COUNT`: "you are a worker".
pub const WORKER_ENV: &str = "ECHO_REACTOR_WORKER";
/// Restarts allowed per [`RESTART_WINDOW`]; past that a crashing worker
/// waits, so a bug that kills workers at once cannot fork-bomb the host.
pub const MAX_RESTARTS: usize = 10;
/// The window [`MAX_RESTARTS`] counts in.
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// How often the supervisor looks at signals and its children.
const TICK: Duration = Duration::from_millis(20);

/// The sockets of a server with workers: those each worker gets for
/// itself, and those they all share.
#[derive(Debug)]
pub struct WorkerSockets {
    /// What the `listening on` lines name, one per address.
    pub bound: Vec<BoundSocket>,
    /// `own[i]`: worker `i`'s own sockets (TCP and UDP, `SO_REUSEPORT`).
    own: Vec<Vec<Listening>>,
    /// Shared by every worker (the Unix socket; everything under socket
    /// activation, where systemd bound one socket per address).
    shared: Vec<Listening>,
    /// The Unix socket file this process created, removed at exit.
    unix_file: Option<PathBuf>,
    /// `--metrics`: the listener every worker shares, and the slots where
    /// each publishes its numbers (`worker_stats.rs`).
    metrics: Option<WorkersMetrics>,
}

impl WorkerSockets {
    /// Bind `config`'s addresses for `workers` workers.
    pub fn bind(config: &Config, workers: usize) -> io::Result<Self> {
        let mut own: Vec<Vec<Listening>> = (0..workers).map(|_| Vec::new()).collect();
        let mut bound = Vec::new();
        for &addr in &config.listen {
            let group = bind_tcp_group(addr, config.backlog, workers)?;
            bound.push(BoundSocket::Tcp(group[0].local_addr()?));
            for (worker, socket) in own.iter_mut().zip(group) {
                worker.push(Listening::Tcp(socket));
            }
        }
        for &addr in &config.udp {
            let group = bind_udp_group(addr, workers)?;
            bound.push(BoundSocket::Udp(group[0].local_addr()?));
            for (worker, socket) in own.iter_mut().zip(group) {
                worker.push(Listening::Udp(socket));
            }
        }
        let mut shared = Vec::new();
        let mut unix_file = None;
        if let Some(path) = &config.unix {
            shared.push(Listening::Unix(bind_unix(path, config.backlog)?));
            bound.push(BoundSocket::Unix(path.clone()));
            unix_file = Some(path.clone());
        }
        Ok(WorkerSockets {
            bound,
            own,
            shared,
            unix_file,
            metrics: None,
        })
    }

    /// Sockets handed to us (socket activation), shared by every worker.
    pub fn inherited(sockets: Vec<(BoundSocket, Listening)>, workers: usize) -> Self {
        let (bound, shared) = sockets.into_iter().unzip();
        WorkerSockets {
            bound,
            own: (0..workers).map(|_| Vec::new()).collect(),
            shared,
            unix_file: None,
            metrics: None,
        }
    }

    /// `--metrics ADDR`: bind it once and create the shared slots, for
    /// `workers` workers. Returns the address bound.
    pub fn serve_metrics(&mut self, addr: SocketAddr, workers: usize) -> io::Result<SocketAddr> {
        let listener = bind_tcp(addr, METRICS_BACKLOG)
            .map_err(|e| io::Error::new(e.kind(), format!("--metrics: {e}")))?;
        let bound = listener.local_addr()?;
        // Back to std: it crosses to the workers as a plain descriptor.
        let listener = std::net::TcpListener::from(OwnedFd::from(listener));
        let slots = WorkerSlots::create(workers)?;
        self.metrics = Some(WorkersMetrics { listener, slots });
        Ok(bound)
    }

    /// Worker `index`'s descriptors, in the order it will list them.
    fn fds_for(&self, index: usize) -> Vec<RawFd> {
        self.own[index]
            .iter()
            .chain(&self.shared)
            .map(listening_fd)
            .collect()
    }

    fn remove_unix_file(&self) {
        if let Some(path) = &self.unix_file {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One worker slot: the process now in it, and what its predecessors said.
struct Worker {
    index: usize,
    child: Option<Child>,
    /// Collects the worker's final `stats` line from its stdout.
    reader: Option<JoinHandle<()>>,
    /// Restart as soon as the restart budget allows.
    needs_start: bool,
}

/// Run `workers` workers over `sockets` until they have all exited after a
/// signal. `args` are this process's own arguments (`serve ...`), given
/// again to each worker. Returns the exit code.
pub fn run(sockets: WorkerSockets, workers: usize, args: Vec<OsString>) -> io::Result<i32> {
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| io::Error::new(e.kind(), format!("install signal handlers: {e}")))?;
    let final_lines = Arc::new(Mutex::new(Vec::new()));
    let mut slots: Vec<Worker> = (0..workers)
        .map(|index| Worker {
            index,
            child: None,
            reader: None,
            needs_start: true,
        })
        .collect();
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    let mut first_start = true;
    let mut stopping = false;
    let mut throttled_logged = false;
    loop {
        for signal in signals.pending() {
            let name = if signal == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            if stopping {
                warn!("{name} again during shutdown: stopping the workers at once");
                forward(&slots, SIGTERM); // a worker's second signal: exit now
                sockets.remove_unix_file();
                return Ok(128 + signal);
            }
            info!("{name}: shutting down {workers} workers (a second signal exits at once)");
            stopping = true;
            forward(&slots, SIGTERM);
        }
        for slot in &mut slots {
            let Some(child) = slot.child.as_mut() else {
                continue;
            };
            let Some(status) = child.try_wait()? else {
                continue;
            };
            slot.child = None;
            if let Some(reader) = slot.reader.take() {
                let _ = reader.join(); // its stdout is closed: the line is in
            }
            if !stopping {
                warn!(
                    "worker {} exited ({}); starting another (its connections are lost, \
                     those queued on its sockets wait for the new one)",
                    slot.index,
                    describe(status)
                );
                slot.needs_start = true;
            }
        }
        if !stopping {
            let now = Instant::now();
            while restarts
                .front()
                .is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
            {
                restarts.pop_front();
            }
            for slot in slots.iter_mut().filter(|s| s.needs_start) {
                if !first_start && restarts.len() >= MAX_RESTARTS {
                    if !throttled_logged {
                        error!(
                            "workers keep dying: {MAX_RESTARTS} restarts in {RESTART_WINDOW:?}; \
                             waiting before the next"
                        );
                        throttled_logged = true;
                    }
                    break;
                }
                start(slot, &sockets, workers, &args, &final_lines)?;
                if !first_start {
                    restarts.push_back(now);
                }
                throttled_logged = false;
            }
            first_start = false;
        }
        if stopping && slots.iter().all(|s| s.child.is_none()) {
            break;
        }
        thread::sleep(TICK);
    }
    sockets.remove_unix_file();
    let lines = final_lines.lock().unwrap_or_else(|e| e.into_inner());
    let summed = sum_stats_lines(&lines);
    Ok(
        match crate::stdout::print_report(&format!("{summed} workers={workers}\n")) {
            Ok(()) => 0,
            Err(e) => {
                warn!("stdout: cannot print the final stats ({e}); they were: {summed} workers={workers}");
                0
            }
        },
    )
}

/// Start the worker for `slot`.
fn start(
    slot: &mut Worker,
    sockets: &WorkerSockets,
    workers: usize,
    args: &[OsString],
    final_lines: &Arc<Mutex<Vec<String>>>,
) -> io::Result<()> {
    let exe = std::env::current_exe().map_err(|e| {
        io::Error::new(e.kind(), format!("find this program to start workers: {e}"))
    })?;
    let mut command = Command::new(exe);
    command
        .args(args)
        .env(WORKER_ENV, format!("{}/{workers}", slot.index))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // Its own process group: a terminal's Ctrl-C reaches the supervisor
        // alone, which forwards exactly one signal.
        .process_group(0);
    let mut fds = sockets.fds_for(slot.index);
    let listening = fds.len();
    if let Some(metrics) = &sockets.metrics {
        // After the sockets, outside LISTEN_FDS: named by their own variable.
        fds.extend(metrics.fds());
        command.env(
            METRICS_FDS_ENV,
            WorkersMetrics::env_value(3 + listening as RawFd),
        );
    }
    let _copies = pass_sockets(&mut command, &fds)?;
    command.env("LISTEN_FDS", listening.to_string());
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: prctl is async-signal-safe. If the supervisor dies, its
    // workers are told to drain and exit rather than serve on unsupervised.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("start worker {}: {e}", slot.index)))?;
    info!("worker {} started (pid {})", slot.index, child.id());
    let stdout = child.stdout.take().expect("stdout was piped");
    let lines = Arc::clone(final_lines);
    let index = slot.index;
    slot.reader = Some(thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("stats ") {
                // Each worker's own figures, for how evenly they shared the load.
                info!("worker {index} final {line}");
                lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        }
    }));
    slot.child = Some(child);
    slot.needs_start = false;
    Ok(())
}

fn forward(slots: &[Worker], signal: i32) {
    for child in slots.iter().filter_map(|s| s.child.as_ref()) {
        // SAFETY: kill only sends a signal, to a child we started.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// Every worker's final `stats key=value ...` line, summed key by key, in
/// the first line's order. Gauges (`active`, `held_bytes`, ...) add up as
/// well as counters do: each is a worker's share of the whole. Peaks are
/// summed too, so they are an upper bound on the server's peak.
pub fn sum_stats_lines(lines: &[String]) -> String {
    let mut keys: Vec<String> = Vec::new();
    let mut sums: Vec<u64> = Vec::new();
    for line in lines {
        for pair in line.split_whitespace().skip(1) {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let value: u64 = value.parse().unwrap_or(0);
            match keys.iter().position(|k| k == key) {
                Some(at) => sums[at] += value,
                None => {
                    keys.push(key.to_string());
                    sums.push(value);
                }
            }
        }
    }
    let mut out = String::from("stats");
    for (key, sum) in keys.iter().zip(sums) {
        out.push_str(&format!(" {key}={sum}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_lines_are_summed_key_by_key_in_order() {
        let lines = [
            "stats active=0 accepted=120 closed_reset=1".to_string(),
            "stats active=0 accepted=80 closed_reset=2".to_string(),
        ];
        assert_eq!(
            sum_stats_lines(&lines),
            "stats active=0 accepted=200 closed_reset=3"
        );
        assert_eq!(sum_stats_lines(&[]), "stats");
    }
}
