//! `serve --workers N`: one supervisor process, N worker processes, each
//! worker the same single-threaded reactor (nginx's master and workers;
//! Seastar's shard per core). Processes, not threads, because the limit
//! that stops one reactor — open descriptors, 20 000 here — is per process.
//!
//! The supervisor:
//! - binds every socket once and keeps a copy (`worker_sockets.rs`: per
//!   TCP and UDP address one `SO_REUSEPORT` socket per worker, a Unix socket
//!   shared by all; or, under socket activation, the sockets it was handed);
//! - starts each worker from its own running image (`/proc/self/exe`, so a
//!   binary replaced or deleted on disk cannot stop a restart), with its
//!   sockets as descriptors 3, 4, ... and `LISTEN_FDS` set (`inherit.rs`),
//!   in a process group of its own (a terminal's Ctrl-C reaches the
//!   supervisor only, and it forwards one signal — two would make a worker
//!   exit without draining), told to drain and exit if the supervisor dies;
//! - restarts a worker that dies, at most [`MAX_RESTARTS`] per
//!   [`RESTART_WINDOW`], logged. A restart that fails (no descriptors, no
//!   processes left) is logged and tried again [`RETRY_DELAY`] later,
//!   within the same budget, while the other workers serve; it never stops
//!   the server. While a worker's restart waits, its sockets are closed so
//!   the other workers take its new connections (`worker_sockets.rs`);
//! - on SIGUSR2, starts a new generation on the same sockets and, once it
//!   accepts, has its workers drain and exits (`upgrade.rs`);
//! - on SIGQUIT, a graceful stop: every worker drains (stops accepting,
//!   serves what it holds until it closes, at most `--drain-timeout`),
//!   then it exits; a rolled-back new generation is told to stop this way;
//! - forwards SIGINT/SIGTERM (each worker drains as `serve` does; a second
//!   signal makes them, and it, exit at once), closing its copies of the
//!   sockets so the port refuses new connections once the workers stop
//!   accepting; and prints one final `stats` line: every worker's numbers
//!   summed — a killed worker's too — plus `workers=N`.
//!
//! Nothing here runs per message: workers make no calls to each other or
//! to the supervisor. They share one region of memory, each publishing its
//! numbers into its own slot at most every 10 ms (`worker_stats.rs`); a
//! scrape of `--metrics`, answered by any worker, and the final line sum
//! the slots. The supervisor writes a slot only after reaping its worker,
//! to take the dead worker's gauges out of the sum.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use signal_hook::consts::{SIGINT, SIGQUIT, SIGTERM, SIGUSR2};
use signal_hook::iterator::Signals;

use crate::inherit::pass_sockets;
use crate::pidfile::RemoveAtExit;
use crate::signal_mask;
use crate::upgrade::{program_path, Announcement, Upgrader, UPGRADE_ENV};
pub use crate::worker_sockets::WorkerSockets;
use crate::worker_stats::{WorkerSlots, METRICS_FD_ENV, SLOTS_FD_ENV};

/// Set in a worker's environment to `INDEX/COUNT`: "you are a worker".
pub const WORKER_ENV: &str = "ECHO_REACTOR_WORKER";
/// Restarts allowed per [`RESTART_WINDOW`]; past that a crashing worker
/// waits, so a bug that kills workers at once cannot fork-bomb the host.
/// Failed restarts count too.
pub const MAX_RESTARTS: usize = 10;
/// The window [`MAX_RESTARTS`] counts in.
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// After a restart fails, the next try for that worker waits this long.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);
/// How often the supervisor looks at signals and its children.
const TICK: Duration = Duration::from_millis(20);

/// One worker slot: the process now in it, and when to start the next.
struct Worker {
    index: usize,
    child: Option<Child>,
    /// Logs the worker's final `stats` line from its stdout.
    reader: Option<JoinHandle<()>>,
    /// Start a process here as soon as the restart budget allows.
    needs_start: bool,
    /// Not before this (a failed restart waits [`RETRY_DELAY`]).
    not_before: Option<Instant>,
}

/// What every start of a worker needs.
struct Launcher {
    /// The running image (`/proc/self/exe`), or where it was found.
    program: PathBuf,
    /// This process's own `argv[0]`, so `ps` shows workers by the same name.
    arg0: OsString,
    /// This process's own arguments (`serve ...`), given again to each worker.
    args: Vec<OsString>,
    workers: usize,
}

impl Launcher {
    /// What every start needs, found once: the running image (so a binary
    /// replaced or deleted on disk cannot stop a restart), `argv[0]` and
    /// the arguments to give each worker.
    fn new(workers: usize, args: Vec<OsString>) -> io::Result<Self> {
        // The image this process runs, wherever it came from: exec'ing
        // /proc/self/exe works even once the file on disk is replaced or
        // deleted (the link names the inode we run, not the path).
        let this_image = PathBuf::from("/proc/self/exe");
        let program = if this_image.exists() {
            this_image
        } else {
            std::env::current_exe().map_err(|e| {
                io::Error::new(e.kind(), format!("find this program to start workers: {e}"))
            })?
        };
        Ok(Launcher {
            program,
            arg0: std::env::args_os()
                .next()
                .unwrap_or_else(|| "echo-reactor".into()),
            args,
            workers,
        })
    }
}

/// Run `workers` workers over `sockets` until they have all exited after a
/// signal, or drained after a new generation took over. `args` are this
/// process's own arguments (`serve ...`), given again to each worker and
/// to a new generation; `ready` is said once every worker accepts.
/// Returns the exit code.
pub fn run(
    mut sockets: WorkerSockets,
    workers: usize,
    args: Vec<OsString>,
    ready: Announcement,
) -> io::Result<i32> {
    // First: every way out of here, errors included, removes the pid file.
    let _remove_pid_file = ready.pid_file.clone().map(RemoveAtExit);
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGQUIT, SIGUSR2])
        .map_err(|e| io::Error::new(e.kind(), format!("install signal handlers: {e}")))?;
    signal_mask::release_held(); // started by an old generation: held till now
    let slots = WorkerSlots::create(workers)?;
    let launcher = Launcher::new(workers, args)?;
    let mut upgrader = Upgrader::new(
        program_path(),
        launcher.arg0.clone(),
        launcher.args.clone(),
        ready.pid_file.clone(),
    );
    let old_pid = ready.old_pid(); // a new generation's old supervisor
    let mut ready = Some(ready); // until every worker accepts
    let mut announced = false;
    // A new generation accepts: our workers drain, none is restarted.
    let mut draining = false;
    let mut successor = None; // the new generation, reaped if it exits first
    let mut pool: Vec<Worker> = (0..workers)
        .map(|index| Worker {
            index,
            child: None,
            reader: None,
            needs_start: true,
            not_before: None,
        })
        .collect();
    for worker in &mut pool {
        // At start a failure is the operator's to see at once: exit (the
        // workers already started are told to by their death signal).
        if let Err(e) = start(worker, &mut sockets, &slots, &launcher) {
            sockets.remove_unix_file();
            return Err(e);
        }
    }
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    let mut stopping = false;
    let mut throttled_logged = false;
    loop {
        let arrived: Vec<i32> = signals.pending().collect();
        // Before the signals: a SIGUSR2 that comes once a worker served a
        // client finds the generation announced. Not once told to stop or
        // drain: a new generation rolled back, or shut down, must not say
        // it accepts (its old one would commit to it).
        let leaving = stopping || draining || arrived.iter().any(|&signal| signal != SIGUSR2);
        if !leaving && ready.is_some() && slots.all_accepting() {
            if let Some(ready) = ready.take() {
                announced = true;
                info!("all {workers} workers accepting");
                if let Some(path) = ready.announce() {
                    sockets.own_unix_file(path); // ours to remove at exit, from now on
                }
            }
        }
        for signal in arrived {
            if signal == SIGQUIT {
                if stopping || draining {
                    info!("SIGQUIT during shutdown or a drain: ignored");
                    continue;
                }
                // A graceful stop (nginx's QUIT), and how a rolled-back new
                // generation hears it is one: every worker drains.
                upgrader.abort("draining instead");
                let left = pool.iter().filter(|w| w.child.is_some()).count();
                info!("SIGQUIT: draining {left} workers, then exiting");
                ready = None; // never announced now
                draining = true;
                forward(&pool, SIGQUIT);
                sockets.close_all();
                continue;
            }
            if signal == SIGUSR2 {
                match (stopping || draining, ready.is_some()) {
                    (true, _) => warn!("SIGUSR2 during shutdown or a drain: ignored"),
                    (_, true) => warn!("SIGUSR2 before every worker accepts: ignored"),
                    // A container's init: our exit, which ends an upgrade,
                    // would end the namespace and kill the new generation.
                    _ if std::process::id() == 1 => error!(
                        "SIGUSR2 ignored: this supervisor is PID 1 (a container's init), and \
                         its exit after an upgrade would kill the new generation: \
                         restart the container to upgrade"
                    ),
                    _ => upgrader.begin(&mut sockets),
                }
                continue;
            }
            upgrader.abort("shutting down instead");
            let name = if signal == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            if stopping {
                warn!("{name} again during shutdown: stopping the workers at once");
                forward(&pool, SIGTERM); // a worker's second signal: exit now
                sockets.remove_unix_file();
                return Ok(128 + signal);
            }
            info!("{name}: shutting down {workers} workers (a second signal exits at once)");
            stopping = true;
            draining = false; // a drain's workers shut down instead
            forward(&pool, SIGTERM);
            // Our copies would keep the sockets open, and new clients
            // queued in them, after every worker stopped accepting.
            sockets.close_all();
            if let Some(old) = old_pid.filter(|&old| announced && parent_pid() == old) {
                // The service stops while the old generation still drains
                // (systemd signals only its main process, us): it shuts
                // down gracefully too, rather than be killed with the unit
                // once we exit. Still our parent, so the pid is still its;
                // only once we took over (before, a stop of ours cancels
                // the upgrade, not the service).
                info!("{name}: passed on to the old generation (pid {old}), still draining");
                // SAFETY: kill only sends a signal, to our living parent.
                unsafe { libc::kill(old as libc::pid_t, SIGTERM) };
            }
        }
        if let Some(child) = upgrader.poll() {
            successor = Some(child);
            let left = pool.iter().filter(|w| w.child.is_some()).count();
            info!("draining {left} workers");
            draining = true;
            sockets.close_all(); // the new generation holds them now
            sockets.forget_unix_file(); // and its file
            forward(&pool, SIGQUIT);
        }
        if let Some(child) = successor.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                // Our copies of the sockets went at the commit, and our
                // workers stopped accepting: nobody accepts any more.
                error!(
                    "the new generation (pid {}) exited ({status}) after taking over: nobody \
                     accepts new connections; this generation only finishes its drain",
                    child.id()
                );
                successor = None;
            }
        }
        for worker in &mut pool {
            let Some(how) = reap(worker, &slots) else {
                continue;
            };
            if !stopping && !draining {
                warn!(
                    "worker {} exited ({}); starting another (its connections are lost, \
                     those queued on its sockets wait for the new one)",
                    worker.index, how
                );
                worker.needs_start = true;
            }
        }
        if !stopping && !draining {
            let now = Instant::now();
            while restarts
                .front()
                .is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
            {
                restarts.pop_front();
            }
            for worker in pool.iter_mut().filter(|w| w.needs_start) {
                if worker.not_before.is_some_and(|t| now < t) {
                    continue;
                }
                if restarts.len() >= MAX_RESTARTS {
                    // Nobody will accept from its sockets for a while.
                    sockets.close_own(worker.index);
                    if !throttled_logged {
                        error!(
                            "workers keep dying: {MAX_RESTARTS} restarts in {RESTART_WINDOW:?}; \
                             waiting before the next (their sockets are closed meanwhile: \
                             the other workers take new connections)"
                        );
                        throttled_logged = true;
                    }
                    continue;
                }
                restarts.push_back(now);
                match start(worker, &mut sockets, &slots, &launcher) {
                    Ok(()) => throttled_logged = false,
                    Err(e) => {
                        sockets.close_own(worker.index);
                        worker.not_before = Some(now + RETRY_DELAY);
                        error!(
                            "worker {}: restart failed: {e}; trying again in {RETRY_DELAY:?} \
                             (its sockets are closed meanwhile: the other workers take new \
                             connections)",
                            worker.index
                        );
                    }
                }
            }
        }
        if (stopping || draining) && pool.iter().all(|w| w.child.is_none()) {
            break;
        }
        thread::sleep(TICK);
    }
    if draining {
        info!("drained, exiting");
    }
    if old_pid.is_some_and(|pid| parent_pid() == pid) {
        // A new generation rolled back: the file is still its old one's
        // (owned here only if the byte went out as the rollback began).
        // Stopped while the old one still drains instead, the file is left
        // behind, stale: a later bind replaces it, where removing a file
        // still served would refuse every new client.
        info!(
            "the old generation (pid {}) still runs: the Unix socket file is left",
            parent_pid()
        );
    } else {
        sockets.remove_unix_file(); // not after a handover: forgotten then
    }
    // Every worker has exited and published its last numbers; a killed
    // one's are those it published last.
    let summed = slots.total().stats;
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

/// If `worker`'s process has exited: collect it, take its gauges out of
/// the shared sum, and return how it ended (`None` while it runs). A `waitpid` that fails
/// (only `ECHILD` can, with `WNOHANG`: the child is not ours to wait for
/// any more) counts as an exit: the worker is gone either way, and one
/// worker's bookkeeping must not stop the server the others keep serving.
fn reap(worker: &mut Worker, slots: &WorkerSlots) -> Option<String> {
    let child = worker.child.as_mut()?;
    let how = match child.try_wait() {
        Ok(None) => return None,
        Ok(Some(status)) => describe(status),
        Err(e) => format!("waitpid failed: {e}; taken for gone"),
    };
    worker.child = None;
    if let Some(reader) = worker.reader.take() {
        let _ = reader.join(); // its stdout is closed: the line is logged
    }
    slots.retire(worker.index);
    Some(how)
}

/// Start the process for `worker`.
fn start(
    worker: &mut Worker,
    sockets: &mut WorkerSockets,
    slots: &WorkerSlots,
    launcher: &Launcher,
) -> io::Result<()> {
    let index = worker.index;
    let named = |e: io::Error| io::Error::new(e.kind(), format!("start worker {index}: {e}"));
    let (mut fds, metrics) = sockets.fds_for(index).map_err(named)?;
    let mut command = Command::new(&launcher.program);
    command
        .arg0(&launcher.arg0)
        .args(&launcher.args)
        .env(WORKER_ENV, format!("{index}/{}", launcher.workers))
        .env_remove(UPGRADE_ENV) // a new generation's variable, not its workers'
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // Its own process group: a terminal's Ctrl-C reaches the supervisor
        // alone, which forwards exactly one signal.
        .process_group(0);
    // After the sockets, outside LISTEN_FDS: named by variables of their own.
    let listening = fds.len();
    command.env(SLOTS_FD_ENV, (3 + listening).to_string());
    fds.push(slots.raw_fd());
    if let Some(fd) = metrics {
        command.env(METRICS_FD_ENV, (3 + fds.len()).to_string());
        fds.push(fd);
    }
    let _copies = pass_sockets(&mut command, &fds).map_err(named)?;
    command.env("LISTEN_FDS", listening.to_string());
    drain_if_orphaned(&mut command, std::process::id() as libc::pid_t);
    signal_mask::hold_until_handled(&mut command); // a drain's SIGQUIT may come early
    let mut child = command.spawn().map_err(named)?;
    info!("worker {index} started (pid {})", child.id());
    let stdout = child.stdout.take().expect("stdout was piped");
    worker.reader = Some(thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("stats ") {
                // Each worker's own figures, for how evenly they shared the load.
                info!("worker {index} final {line}");
            }
        }
    }));
    worker.child = Some(child);
    worker.needs_start = false;
    worker.not_before = None;
    Ok(())
}

/// Have the worker `command` starts get SIGTERM (drain and exit) when its
/// `parent`, the supervisor, dies, rather than serve on unsupervised.
///
/// Linux sends the signal when the *thread* that forked exits: the
/// supervisor starts workers from its main thread, which lives as long as
/// the process.
fn drain_if_orphaned(command: &mut Command, parent: libc::pid_t) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: the closure runs in the child between fork and exec and
        // calls only async-signal-safe functions (prctl, getppid, _exit).
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error()); // the spawn fails, and says why
                }
                // If the supervisor died before prctl, nobody will send the
                // signal: we were re-parented already.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (command, parent);
}

/// Send `signal` to every worker alive: they run in their own process
/// group, so a terminal's signal reaches the supervisor alone, and this is
/// how each worker hears of a shutdown, exactly once.
fn forward(pool: &[Worker], signal: i32) {
    for child in pool.iter().filter_map(|w| w.child.as_ref()) {
        // SAFETY: kill only sends a signal, to a child we started.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    }
}

/// This process's parent.
fn parent_pid() -> u32 {
    // SAFETY: getppid cannot fail.
    unsafe { libc::getppid() as u32 }
}

/// How a worker ended, for the log line that says it is replaced.
fn describe(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_worker_whose_supervisor_is_already_gone_exits_before_it_runs() {
        let run = |parent| {
            let mut command = Command::new("sh");
            command.args(["-c", "exit 7"]);
            drain_if_orphaned(&mut command, parent);
            command.status().unwrap().code()
        };
        assert_eq!(run(std::process::id() as libc::pid_t), Some(7), "ran");
        // Its parent is not the one that asked: as if that one had died
        // before the death signal was set.
        assert_eq!(run(1), Some(1), "exited at once");
    }
}
