//! Upgrading without downtime: on `SIGUSR2` the supervisor starts a new
//! generation — the binary on disk, as a new supervisor — hands it every
//! listening socket, and steps aside once it accepts (nginx's `USR2`;
//! HAProxy's seamless reload hands its listeners over the same way).
//!
//! The handover, old supervisor's side ([`Upgrader`]):
//! 1. start the file it was started from ([`program_path`]; not
//!    `/proc/self/exe`, which is the old image) with the same arguments,
//!    in a process group of its own and *without* a parent-death signal
//!    (it outlives us). Descriptors 3, 4, ... are every worker's own
//!    sockets, worker by worker, then the shared ones (`LISTEN_FDS` counts
//!    these), then the metrics listener and the write end of a pipe;
//!    [`UPGRADE_ENV`] describes the layout ([`Layout`]) so each new worker
//!    gets the sockets of the old worker of its index — the same sockets,
//!    the same queues: nothing is bound, probed or unlinked, no connection
//!    waits in a queue nobody will accept from;
//! 2. wait for one byte on the pipe, for at most [`READY_TIMEOUT`]. The
//!    byte means "every new worker accepts": then the old workers drain
//!    (`supervisor.rs` sends them SIGQUIT, `reactor/shutdown.rs`).
//!    The new generation exiting, closing the pipe, or the timeout instead
//!    is a **rollback**, logged in one line: the old generation serves
//!    on (its workers never stopped accepting), and a new generation
//!    still running is told to drain (`SIGQUIT`): its workers stop
//!    accepting and serve the connections they took until those close
//!    (at most its `--drain-timeout`); it is killed only if it has not
//!    exited [`ROLLBACK_KILL_AFTER`] later (its workers, in groups of
//!    their own, are not: one draining finishes its drain on its own,
//!    one not yet told gets SIGTERM from its parent-death signal and
//!    closes what it holds gracefully).
//!
//! The byte is the commit point: the old supervisor rewrites the pid file
//! with the new pid and names it to systemd (`MAINPID`, then a barrier:
//! `notify.rs`) before its workers drain, so neither ever names a
//! generation that is rolled back, and systemd never sees its main
//! process exit while it still tracks it.
//!
//! The new supervisor's side ([`take_over`], [`Announcement`]): take the
//! sockets as the layout says, start the workers, and once every one has
//! said it accepts (`worker_stats.rs`), write the byte. If the old
//! supervisor is gone by then (the write fails), it carries on as the live
//! generation and rewrites the pid file and tells systemd itself.
//!
//! Only one upgrade is under way at a time; a `SIGUSR2` meanwhile is
//! logged and ignored. Nothing here knows of connections.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use log::{error, info, warn};

use crate::inherit::{claim_fd, inherited_sockets, pass_sockets};
use crate::notify::{barrier, notify};
use crate::pidfile::{hold_for_life, PidFile, Prepared};
use crate::server::BoundSocket;
use crate::worker_sockets::WorkerSockets;

/// Set in a new generation's environment: the layout of the descriptors
/// it was handed ([`Layout`]), and the old supervisor's pid.
pub const UPGRADE_ENV: &str = "ECHO_REACTOR_UPGRADE";
/// How long a new generation has to accept before it is rolled back.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a rolled-back new generation, told to drain, may take to exit
/// before it is killed (its workers are not: a draining one finishes its
/// drain, bounded by its drain timeout; another shuts down gracefully on
/// its parent-death signal).
pub const ROLLBACK_KILL_AFTER: Duration = Duration::from_secs(30);
/// How long the commit waits for systemd to take the new `MAINPID` in
/// (`sd_notify_barrier`'s usual 5 s).
const BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

/// The binary an upgrade starts: the file this process was started from,
/// looked up now, at start (the working directory may not stay). A path
/// in `argv[0]` is taken as given, and a bare name is looked up on `PATH`
/// as the shell did, neither with its symlinks resolved: a symlink
/// switched to a new release is followed.
pub fn program_path() -> io::Result<PathBuf> {
    program_path_from(std::env::args_os().next(), std::env::var_os("PATH"))
}

/// [`program_path`] for `argv[0]` and `PATH` as given.
fn program_path_from(arg0: Option<OsString>, path: Option<OsString>) -> io::Result<PathBuf> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("find this program's file: {e}"));
    let Some(arg0) = arg0 else {
        return std::env::current_exe().map_err(named);
    };
    if Path::new(&arg0).components().count() > 1 {
        return std::path::absolute(&arg0).map_err(named);
    }
    let on_path = path.iter().flat_map(std::env::split_paths).find_map(|dir| {
        let candidate = dir.join(&arg0);
        let executable = std::fs::metadata(&candidate)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        executable.then_some(candidate)
    });
    match on_path {
        Some(found) => std::path::absolute(found).map_err(named),
        // Started by a name not on PATH (execve is free to pass any):
        // the image's own file, the best there is.
        None => std::env::current_exe().map_err(named),
    }
}

/// Whether `a` and `b` name the same file (device and inode).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// What a new generation is handed besides the descriptors, as
/// [`UPGRADE_ENV`]'s value: `pid=12 own=2,2 shared=1 metrics=1 unix_file=1 pid_file=1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The old supervisor's pid.
    pub old_pid: u32,
    /// How many sockets each old worker had of its own, in order (first
    /// in the descriptors).
    pub own: Vec<usize>,
    /// Sockets every worker shared (the Unix socket; under socket
    /// activation, all of them), after the own ones.
    pub shared: usize,
    /// A `--metrics` listener follows the listening sockets.
    pub metrics: bool,
    /// The old generation created the Unix socket's file: whoever exits
    /// last must remove it.
    pub unix_file: bool,
    /// An open, locked pid file follows (`pidfile.rs`): the one the old
    /// supervisor renames into place at the commit.
    pub pid_file: bool,
}

impl Layout {
    /// Listening sockets in all (`LISTEN_FDS`).
    pub fn listening(&self) -> usize {
        self.own.iter().sum::<usize>() + self.shared
    }

    /// The variable's value.
    pub fn to_env(&self) -> String {
        let own: Vec<String> = self.own.iter().map(usize::to_string).collect();
        format!(
            "pid={} own={} shared={} metrics={} unix_file={} pid_file={}",
            self.old_pid,
            own.join(","),
            self.shared,
            u8::from(self.metrics),
            u8::from(self.unix_file),
            u8::from(self.pid_file)
        )
    }

    /// Read [`Layout::to_env`]'s text back; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Layout, String> {
        let mut layout = Layout {
            old_pid: 0,
            own: Vec::new(),
            shared: 0,
            metrics: false,
            unix_file: false,
            pid_file: false,
        };
        let number = |key: &str, value: &str| {
            value
                .parse::<usize>()
                .map_err(|_| format!("{key}={value}: not a number"))
        };
        let flag = |key: &str, value: &str| match value {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(format!("{key}={value}: expected 0 or 1")),
        };
        let mut seen = 0;
        for field in text.split_whitespace() {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| format!("{field}: expected KEY=VALUE"))?;
            match key {
                "pid" => {
                    layout.old_pid = value
                        .parse()
                        .map_err(|_| format!("{key}={value}: not a pid"))?
                }
                "own" => {
                    layout.own = value
                        .split(',')
                        .map(|n| number(key, n))
                        .collect::<Result<_, _>>()?
                }
                "shared" => layout.shared = number(key, value)?,
                "metrics" => layout.metrics = flag(key, value)?,
                "unix_file" => layout.unix_file = flag(key, value)?,
                // Optional: a binary without it hands no pid file over.
                "pid_file" => {
                    layout.pid_file = flag(key, value)?;
                    continue;
                }
                _ => return Err(format!("{key}: unknown")),
            }
            seen += 1;
        }
        if seen != 5 || layout.own.is_empty() {
            return Err("expected pid, own, shared, metrics and unix_file".into());
        }
        Ok(layout)
    }
}

/// The old supervisor's upgrades: at most one under way.
pub struct Upgrader {
    /// Where the new binary is; why not, if that was not found at start.
    program: Result<PathBuf, String>,
    arg0: OsString,
    args: Vec<OsString>,
    /// `--pid-file`: rewritten with the new pid at the commit point.
    pid_file: Option<PidFile>,
    under_way: Option<Upgrade>,
}

/// A new generation started and not yet accepting.
struct Upgrade {
    child: Child,
    /// The pipe's read end (non-blocking): one byte = accepting. Kept
    /// open through a rollback: a late byte must not meet a closed pipe,
    /// which the new generation takes for "the old one is gone".
    ready: File,
    /// When it must accept by; rolling back, when it is killed.
    deadline: Instant,
    /// Rolled back: told to drain, waited for.
    rolling_back: bool,
    /// The pid file to put in place at the commit (removed if rolled back).
    pid_file: Option<Prepared>,
}

impl Upgrader {
    /// Upgrades to the binary at `program`, started as `arg0 args...`.
    /// Not knowing where it is stops upgrades (each `SIGUSR2` says why),
    /// not the server.
    /// `pid_file` is rewritten at the commit point.
    pub fn new(
        program: io::Result<PathBuf>,
        arg0: OsString,
        args: Vec<OsString>,
        pid_file: Option<PidFile>,
    ) -> Self {
        Upgrader {
            program: program.map_err(|e| e.to_string()),
            arg0,
            args,
            pid_file,
            under_way: None,
        }
    }

    /// `SIGUSR2`: start a new generation on `sockets`, unless one is
    /// under way already. A start that fails is a rollback at once.
    pub fn begin(&mut self, sockets: &mut WorkerSockets) {
        if let Some(upgrade) = &self.under_way {
            warn!(
                "SIGUSR2: an upgrade is under way (new generation pid {}): ignored",
                upgrade.child.id()
            );
            return;
        }
        let program = match &self.program {
            Ok(program) => program.clone(),
            Err(why) => {
                error!("upgrade: not started: {why}");
                return;
            }
        };
        info!("upgrade: starting {}", program.display());
        if same_file(&program, Path::new("/proc/self/exe")) {
            // Legitimate (a restart in place), but a deploy that forgot to
            // install the new release looks just like this.
            warn!(
                "upgrade: {} is the file this generation runs: the new generation \
                 runs the same release",
                program.display()
            );
        }
        match self.start(&program, sockets) {
            Ok(upgrade) => self.under_way = Some(upgrade),
            Err(e) => error!("upgrade: rolled back: {e}; this generation serves on"),
        }
    }

    fn start(&self, program: &Path, sockets: &mut WorkerSockets) -> io::Result<Upgrade> {
        let handed = sockets.handover_fds()?;
        let layout = Layout {
            old_pid: std::process::id(),
            own: handed.own.iter().map(Vec::len).collect(),
            shared: handed.shared.len(),
            metrics: handed.metrics.is_some(),
            unix_file: handed.unix_file,
            pid_file: self.pid_file.is_some(),
        };
        // The pid file it will be named in, locked now: the new generation
        // shares the lock from its start, and keeps it after we exit.
        let pid_file = self.pid_file.as_ref().map(PidFile::prepare).transpose()?;
        let (ready, tell) = pipe()?;
        let mut fds: Vec<RawFd> = handed.own.into_iter().flatten().collect();
        fds.extend(handed.shared);
        fds.extend(handed.metrics);
        fds.push(tell.as_raw_fd());
        fds.extend(pid_file.as_ref().map(|p| p.file().as_raw_fd()));
        let mut command = Command::new(program);
        command
            .arg0(&self.arg0)
            .args(&self.args)
            .env(UPGRADE_ENV, layout.to_env())
            .stdin(Stdio::null())
            // Its own group: rolled back, it is killed as a whole; a
            // terminal's Ctrl-C reaching us does not reach it.
            .process_group(0);
        let _copies = pass_sockets(&mut command, &fds)?;
        command.env("LISTEN_FDS", layout.listening().to_string());
        // A second SIGUSR2, or a rollback's SIGQUIT, may come before its
        // handlers are in place.
        crate::signal_mask::hold_until_handled(&mut command);
        let child = command
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("start {}: {e}", program.display())))?;
        drop(tell); // the child has its copy: its exit closes the pipe
        Ok(Upgrade {
            child,
            ready: File::from(ready),
            deadline: Instant::now() + READY_TIMEOUT,
            rolling_back: false,
            pid_file,
        })
    }

    /// Look at the upgrade under way, if any: `Some(child)` once the new
    /// generation accepts (the old one drains now; the child is returned
    /// to be reaped). A failure is rolled back here, and logged.
    pub fn poll(&mut self) -> Option<Child> {
        let upgrade = self.under_way.as_mut()?;
        if upgrade.rolling_back {
            // Its byte, if it comes now, is too late: not read.
            self.reap_rolled_back();
            return None;
        }
        let pid = upgrade.child.id();
        let failure = match upgrade.ready.read(&mut [0u8; 1]) {
            Ok(1..) => {
                let pid_file = upgrade.pid_file.take();
                Self::commit(pid, pid_file);
                info!("upgrade: new generation pid {pid} accepting");
                return self.under_way.take().map(|u| u.child);
            }
            // Nothing yet, or the end of the pipe (the new generation is
            // exiting, or gave its end away): its exit says more.
            Ok(0) => self.exited_or_late()?,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.exited_or_late()?,
            Err(e) => format!("read new generation pid {pid}'s pipe: {e}"),
        };
        self.abort(&format!("{failure}; this generation serves on"));
        None
    }

    /// The commit point: the new generation `pid` accepts, and from now on
    /// it is the live one. We are still the process systemd tracks, so we
    /// name the new one (`MAINPID`) and wait until systemd has taken it in
    /// ([`barrier`]) before draining towards our exit; the pid file names
    /// it too. Neither happens for a generation rolled back.
    fn commit(pid: u32, pid_file: Option<Prepared>) {
        match pid_file.map(|file| file.commit(pid)) {
            Some(Ok(lock)) => hold_for_life(lock), // shared with the new one
            Some(Err(e)) => error!("upgrade: {e}"),
            None => {}
        }
        let told = notify(&format!("MAINPID={pid}")).and_then(|sent| match sent {
            true => barrier(BARRIER_TIMEOUT),
            false => Ok(false),
        });
        if let Err(e) = told {
            warn!("sd_notify: {e}");
        }
    }

    /// Why the upgrade under way failed, if it has: its new generation
    /// exited, or is not accepting by the deadline. `None`: still waiting.
    fn exited_or_late(&mut self) -> Option<String> {
        let upgrade = self.under_way.as_mut()?;
        let pid = upgrade.child.id();
        match upgrade.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "new generation pid {pid} exited ({status}) before accepting"
            )),
            _ if Instant::now() >= upgrade.deadline => Some(format!(
                "new generation pid {pid} not accepting within {READY_TIMEOUT:?}"
            )),
            _ => None,
        }
    }

    /// Roll the upgrade under way back, `why` logged. The new generation,
    /// if it still runs, is told to drain (`SIGQUIT`: its supervisor has
    /// its workers stop accepting and serve the connections they took
    /// until they close, then exits, `supervisor.rs`) and is killed only
    /// if it has not exited [`ROLLBACK_KILL_AFTER`] later ([`Upgrader::poll`]).
    pub fn abort(&mut self, why: &str) {
        let Some(upgrade) = self.under_way.as_mut() else {
            return;
        };
        if upgrade.rolling_back {
            return; // told already; `poll` ends it
        }
        let pid = upgrade.child.id();
        // `try_wait` reaped it already if it exited (`exited_or_late`; the
        // status is kept): its pid may name another process by now. Not
        // reaped, the child keeps its pid (a zombie at worst).
        if let Ok(None) = upgrade.child.try_wait() {
            // SAFETY: kill only sends a signal, to a child not reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGQUIT) };
            upgrade.rolling_back = true;
            upgrade.deadline = Instant::now() + ROLLBACK_KILL_AFTER;
            error!(
                "upgrade: rolled back: {why}; new generation pid {pid} drains the connections \
                 it accepted (killed if still running after {ROLLBACK_KILL_AFTER:?})"
            );
            return;
        }
        self.under_way = None;
        error!("upgrade: rolled back: {why}");
    }

    /// A new generation rolled back and told to drain: reap it once it
    /// exits, or kill it at its deadline.
    fn reap_rolled_back(&mut self) {
        let Some(upgrade) = self.under_way.as_mut() else {
            return;
        };
        let pid = upgrade.child.id();
        match upgrade.child.try_wait() {
            Ok(Some(status)) => {
                info!("upgrade: rolled-back generation pid {pid} exited ({status})")
            }
            Err(e) => warn!("upgrade: rolled-back generation pid {pid}: waitpid: {e}"),
            Ok(None) if Instant::now() >= upgrade.deadline => {
                // SAFETY: kill only sends a signal: to the process group of
                // a child we started in a group of its own and have not
                // reaped (its pid and group are still its own), then to it.
                unsafe {
                    libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
                let _ = upgrade.child.wait();
                warn!(
                    "upgrade: rolled-back generation pid {pid} still running after \
                     {ROLLBACK_KILL_AFTER:?}: killed (its workers finish on their own)"
                );
            }
            Ok(None) => return,
        }
        self.under_way = None;
    }
}

/// A pipe, both ends close-on-exec, the read end non-blocking.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) =
        crate::notify::pipe().map_err(|e| io::Error::new(e.kind(), format!("pipe: {e}")))?;
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(read.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok((read, write))
}

/// What a new generation took over: where to say it accepts.
#[derive(Debug)]
pub struct Takeover {
    old_pid: u32,
    tell: File,
    /// The Unix socket file the old generation created: ours to remove
    /// once we accept (not before: a new generation rolled back must leave
    /// it).
    unix_file: Option<PathBuf>,
}

/// In a new generation (with [`UPGRADE_ENV`]): the sockets handed over,
/// as `workers` workers' ([`WorkerSockets::handed_over`]), and the way
/// back to the old supervisor. `None` when this is no new generation.
pub fn take_over(backlog: u32, workers: usize) -> io::Result<Option<(WorkerSockets, Takeover)>> {
    let Ok(text) = std::env::var(UPGRADE_ENV) else {
        return Ok(None);
    };
    let layout = Layout::parse(&text).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{UPGRADE_ENV}={text}: {e}"),
        )
    })?;
    let handed = inherited_sockets()?.unwrap_or_default();
    if handed.len() != layout.listening() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{UPGRADE_ENV}={text}: {} listening sockets handed over, {} described",
                handed.len(),
                layout.listening()
            ),
        ));
    }
    let mut handed = handed.into_iter();
    let own: Vec<Vec<_>> = layout
        .own
        .iter()
        .map(|&n| handed.by_ref().take(n).collect())
        .collect();
    let shared: Vec<_> = handed.collect();
    let mut next = 3 + layout.listening() as RawFd;
    let metrics = if layout.metrics {
        let listener = std::net::TcpListener::from(claim_fd(next)?);
        listener.set_nonblocking(true)?;
        next += 1;
        Some(listener)
    } else {
        None
    };
    let tell = File::from(claim_fd(next)?);
    if layout.pid_file {
        // The lock on the pid file the old supervisor puts in place at the
        // commit: ours from now on, as long as we run.
        hold_for_life(File::from(claim_fd(next + 1)?));
    }
    let unix_file = shared.iter().find_map(|(bound, _)| match bound {
        BoundSocket::Unix(path) if layout.unix_file => Some(path.clone()),
        _ => None,
    });
    info!(
        "took over {} sockets from pid {} ({} workers there, {workers} here)",
        layout.listening() + usize::from(layout.metrics),
        layout.old_pid,
        layout.own.len()
    );
    let sockets = WorkerSockets::handed_over(own, shared, metrics, backlog, workers);
    Ok(Some((
        sockets,
        Takeover {
            old_pid: layout.old_pid,
            tell,
            unix_file,
        },
    )))
}

/// What a supervisor says once every worker accepts: the old generation
/// told (it commits), or systemd told; the pid file rewritten only by a new
/// generation whose old one is gone (a first one's was written at start).
#[derive(Debug, Default)]
pub struct Announcement {
    /// `--pid-file`.
    pub pid_file: Option<PidFile>,
    /// Set in a new generation.
    pub takeover: Option<Takeover>,
}

impl Announcement {
    /// In a new generation: the old supervisor's pid.
    pub fn old_pid(&self) -> Option<u32> {
        self.takeover.as_ref().map(|t| t.old_pid)
    }

    /// Every worker accepts: say so. A first generation tells systemd
    /// (`MAINPID`, `READY=1`); a new one tells the old supervisor, which
    /// commits — pid file, systemd — and drains. Nothing here fails the
    /// generation: its workers accept, and a supervisor that exited now
    /// would take them down with it (their parent-death signal). An old
    /// generation that cannot be told is gone (killed, crashed): this one
    /// carries on as the live one and says so itself. Returns the Unix
    /// socket file a new generation is now to remove at its exit.
    pub fn announce(self) -> Option<PathBuf> {
        let pid = std::process::id();
        if let Some(mut takeover) = self.takeover {
            let told = takeover.tell.write_all(b"1");
            match told {
                Ok(()) => info!("accepting: pid {} drains now", takeover.old_pid),
                // EPIPE: nobody holds the read end any more.
                Err(e) => {
                    live(pid, self.pid_file.as_ref());
                    warn!(
                        "tell pid {}: {e}: the old generation is gone; serving on as the live one",
                        takeover.old_pid
                    );
                }
            }
            return takeover.unix_file;
        }
        live(pid, None); // a first generation wrote its pid file at start
        None
    }
}

/// This process `pid` is the live generation, with nobody to commit for
/// it: rewrite `pid_file`, tell systemd.
fn live(pid: u32, pid_file: Option<&PidFile>) {
    match pid_file.map(|file| file.write_locked(pid)) {
        Some(Ok(lock)) => hold_for_life(lock),
        Some(Err(e)) => error!("{e}"),
        None => {}
    }
    // MAINPID first: systemd must know whom to track before "ready".
    if let Err(e) = notify(&format!("MAINPID={pid}\nREADY=1")) {
        warn!("sd_notify: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_reads_back_as_written_and_bad_text_is_named() {
        let layout = Layout {
            old_pid: 41,
            own: vec![2, 2, 2],
            shared: 1,
            metrics: true,
            unix_file: true,
            pid_file: true,
        };
        assert_eq!(
            layout.to_env(),
            "pid=41 own=2,2,2 shared=1 metrics=1 unix_file=1 pid_file=1"
        );
        assert_eq!(Layout::parse(&layout.to_env()), Ok(layout.clone()));
        assert_eq!(layout.listening(), 7);
        // Socket activation: nothing of their own, all shared.
        let activated = Layout::parse("pid=1 own=0,0 shared=3 metrics=0 unix_file=0").unwrap();
        assert_eq!(activated.listening(), 3);
        for bad in [
            "",
            "pid=1 own=2 shared=0 metrics=0",
            "pid=x own=2 shared=0 metrics=0 unix_file=0",
            "pid=1 own=2 shared=0 metrics=2 unix_file=0",
            "pid=1 own=2 shared=0 metrics=0 unix_file=0 color=red",
            // Past a pid's range: an error, not a pid cut to 32 bits.
            "pid=4294967297 own=2 shared=0 metrics=0 unix_file=0",
        ] {
            assert!(Layout::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_new_generation_already_reaped_is_not_killed_nor_its_group() {
        // It exits at once, leaving a process in its group: once the
        // child is reaped, that group (and its pid) are not ours to kill.
        let left_path = std::env::temp_dir().join(format!(
            "echo-reactor-upgrade-reaped-{}",
            std::process::id()
        ));
        let script = format!("sleep 30 & echo $! > '{}'; exit 3", left_path.display());
        let child = Command::new("sh")
            .args(["-c", &script])
            .process_group(0)
            .spawn()
            .unwrap();
        let (ready, _tell) = pipe().unwrap();
        let mut upgrader = Upgrader::new(Ok(PathBuf::from("/bin/true")), "x".into(), vec![], None);
        upgrader.under_way = Some(Upgrade {
            child,
            ready: File::from(ready),
            deadline: Instant::now() + Duration::from_secs(30),
            rolling_back: false,
            pid_file: None,
        });
        let start = Instant::now();
        while upgrader.under_way.is_some() {
            assert!(upgrader.poll().is_none(), "it never accepted");
            assert!(start.elapsed() < Duration::from_secs(30), "not rolled back");
            std::thread::sleep(Duration::from_millis(10));
        }
        let left: libc::pid_t = std::fs::read_to_string(&left_path)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = std::fs::remove_file(&left_path);
        let state = std::fs::read_to_string(format!("/proc/{left}/stat")).unwrap_or_default();
        // SAFETY: kill only sends a signal, to the sleep this test started.
        unsafe { libc::kill(left, libc::SIGKILL) };
        let state = state
            .rsplit(") ")
            .next()
            .and_then(|rest| rest.chars().next());
        assert!(
            matches!(state, Some('S' | 'R')),
            "the process left in the reaped child's group was killed: state {state:?}"
        );
    }

    #[test]
    fn a_bare_name_is_found_on_path_without_resolving_its_symlink() {
        let dir = std::env::temp_dir().join(format!("echo-reactor-path-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let release = dir.join("release-1");
        std::fs::write(&release, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&release, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = dir.join("bin").join("echo-reactor");
        std::os::unix::fs::symlink(&release, &link).unwrap();
        let path = std::env::join_paths(["/nonexistent-dir", dir.join("bin").to_str().unwrap()]);
        let found = program_path_from(Some("echo-reactor".into()), Some(path.unwrap())).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        // The link, which a deploy switches to the next release.
        assert_eq!(found, link);
    }

    #[test]
    fn the_program_upgraded_to_is_a_file_on_disk_not_the_running_image() {
        let path = program_path().unwrap();
        assert!(path.is_absolute(), "{}", path.display());
        assert!(!path.starts_with("/proc"), "{}", path.display());
    }
}
