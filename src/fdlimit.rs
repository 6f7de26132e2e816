//! The open-file limit (`RLIMIT_NOFILE`): every socket is a descriptor.
//!
//! A process starts with a *soft* limit (often 1024) it may raise up to
//! its *hard* limit without privileges. A server meant to hold tens of
//! thousands of connections raises it at start; tests that open many
//! sockets do the same.
//!
//! Counting the descriptors open right now, for the stats line, must stay
//! cheap at 100 000 connections: listing `/proc/self/fd` costs a directory
//! entry (and a cached inode) per descriptor, tens of milliseconds at
//! 20 000 on the reactor thread. Since Linux 6.2 `stat` of that directory
//! reports the count as its size (the kernel counts the set bits of the
//! descriptor bitmap), which [`open_fds_for_stats`] prefers. Not
//! `FDSize` in `/proc/self/status`: that is the descriptor *table's* size
//! (a power of two), not how many are open.

use std::io;

/// The current `(soft, hard)` open-file limits.
pub fn nofile_limits() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // rlim_t is u64 on Linux and macOS but narrower on some targets.
    #[allow(clippy::useless_conversion)]
    Ok((u64::from(limit.rlim_cur), u64::from(limit.rlim_max)))
}

/// Set the soft open-file limit to `soft` (at most the hard limit).
/// Returns the new `(soft, hard)`.
pub fn set_nofile_soft_limit(soft: u64) -> io::Result<(u64, u64)> {
    let (_, hard) = nofile_limits()?;
    let limit = libc::rlimit {
        rlim_cur: soft.min(hard) as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    nofile_limits()
}

/// Raise the soft open-file limit to the hard limit. Returns `(soft, hard)`.
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let (_, hard) = nofile_limits()?;
    set_nofile_soft_limit(hard)
}

/// How many descriptors this process has open, by listing `/proc/self/fd`
/// (elsewhere `/dev/fd`), or `None` if neither can be read. Exact, but
/// O(descriptors): see [`open_fds_for_stats`] for a figure that stays cheap.
pub fn open_fds() -> Option<usize> {
    ["/proc/self/fd", "/dev/fd"]
        .iter()
        .find_map(|dir| std::fs::read_dir(dir).ok())
        .map(|entries| entries.count().saturating_sub(1)) // the directory handle itself
}

/// The kernel's own count of this process's open descriptors, from one
/// `stat` of `/proc/self/fd` (Linux 6.2 and later report the count as the
/// directory's size; the kernel counts bits in its descriptor bitmap, so
/// the cost does not grow with the count). `None` where the kernel does
/// not say: older Linux reports a size of 0, macOS has no `/proc`.
pub fn open_fds_counted_by_kernel() -> Option<usize> {
    let size = std::fs::metadata("/proc/self/fd").ok()?.len();
    // A process always has a descriptor open (std reopens closed stdio on
    // /dev/null at start), so 0 means "not reported", never "none open".
    (size > 0).then(|| usize::try_from(size).unwrap_or(usize::MAX))
}

/// Without the kernel's count, [`open_fds_for_stats`] walks the descriptor
/// directory only up to this many descriptors (about 2 ms of walking).
pub const WALK_LIMIT_FDS: usize = 1024;

/// Descriptors a reactor holds besides its connections and listening
/// sockets: stdin/stdout/stderr, the epoll instance, the waker's eventfd,
/// the signal self-pipe (two ends), the stats-copy timer (a timerfd) and the
/// spare descriptor kept for EMFILE.
pub const REACTOR_BASE_FDS: usize = 9;

/// The open-descriptor figure of the periodic stats line, cheap at any
/// number of connections.
///
/// `held` is the caller's own count of the descriptors it holds (for the
/// reactor: connections + listening sockets + [`REACTOR_BASE_FDS`]). The
/// figure is the kernel's count where it reports one (one `stat`); else
/// the exact walk of [`open_fds`] while `held` is at most
/// [`WALK_LIMIT_FDS`]; else `held` itself — a lower bound that misses
/// descriptors the process opened elsewhere (a log file, a library's).
pub fn open_fds_for_stats(held: usize) -> usize {
    choose_open_fds(open_fds_counted_by_kernel(), held, open_fds)
}

/// [`open_fds_for_stats`] for any process: `fd_dir` is its descriptor
/// directory (`/proc/PID/fd`), `held` its own count of what it holds. The
/// same bound holds: one `stat`, or a walk of at most [`WALK_LIMIT_FDS`]
/// entries, or `held`.
pub fn open_fds_in(fd_dir: &std::path::Path, held: usize) -> usize {
    let kernel = std::fs::metadata(fd_dir)
        .ok()
        .map(|meta| meta.len())
        .filter(|&size| size > 0) // 0: not reported (Linux < 6.2)
        .map(|size| usize::try_from(size).unwrap_or(usize::MAX));
    let walk = || std::fs::read_dir(fd_dir).ok().map(Iterator::count);
    choose_open_fds(kernel, held, walk)
}

/// [`open_fds_for_stats`] with its sources passed in, so each branch can be tested.
fn choose_open_fds(
    kernel: Option<usize>,
    held: usize,
    walk: impl FnOnce() -> Option<usize>,
) -> usize {
    if let Some(count) = kernel {
        return count;
    }
    if held <= WALK_LIMIT_FDS {
        if let Some(count) = walk() {
            return count;
        }
    }
    held
}

/// Descriptors kept back from `--max-connections`' default: stdio, the
/// epoll instance, the waker and signal pipe, the spare descriptor, the
/// listening sockets, and some slack for logging or a stats read.
pub const FD_RESERVE: u64 = 32;

/// The default connection cap for a soft open-file limit `soft` with
/// `listening` sockets: every connection needs one descriptor.
pub fn default_max_connections(soft: u64, listening: usize) -> usize {
    let reserve = FD_RESERVE + listening as u64;
    usize::try_from(soft.saturating_sub(reserve).max(1)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_the_soft_limit_reaches_the_hard_limit() {
        let (soft, hard) = raise_nofile_limit().unwrap();
        assert_eq!(soft, hard);
    }

    #[test]
    fn the_default_cap_leaves_a_reserve_and_is_never_zero() {
        assert_eq!(default_max_connections(20_000, 2), 20_000 - 34);
        assert_eq!(default_max_connections(10, 2), 1);
    }

    /// Set in the child process that [`run_alone`] starts.
    const ALONE_ENV: &str = "ECHO_REACTOR_TEST_ALONE";

    /// Run the unit test `name` (of this module) by itself in a child
    /// process, where no other test opens descriptors meanwhile. Returns
    /// true in that child (go on with the test), false in the parent once
    /// the child passed.
    fn run_alone(name: &str) -> bool {
        if std::env::var_os(ALONE_ENV).is_some() {
            return true;
        }
        let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
        let test = format!("{module}::{name}");
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([test.as_str(), "--exact", "--test-threads=1", "--nocapture"])
            .env(ALONE_ENV, "1")
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{test} in a child process:\n{report}");
        assert!(report.contains("1 passed"), "{test} did not run:\n{report}");
        false
    }

    #[test]
    fn the_kernel_count_moves_by_exactly_the_descriptors_opened() {
        if !run_alone("the_kernel_count_moves_by_exactly_the_descriptors_opened") {
            return;
        }
        let Some(before) = open_fds_counted_by_kernel() else {
            eprintln!(
                "this kernel does not report the count (Linux < 6.2): only the walk is checked"
            );
            assert!(open_fds().is_some());
            return;
        };
        assert_eq!(open_fds(), Some(before), "the walk agrees");
        let files: Vec<std::fs::File> = (0..100)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        assert_eq!(open_fds_counted_by_kernel(), Some(before + 100));
        assert_eq!(open_fds_for_stats(0), before + 100);
        drop(files);
        assert_eq!(open_fds_counted_by_kernel(), Some(before));
    }

    #[test]
    fn a_reactor_holds_its_base_descriptors_plus_one_per_socket() {
        if !run_alone("a_reactor_holds_its_base_descriptors_plus_one_per_socket") {
            return;
        }
        let Some(before) = open_fds() else { return };
        let config = crate::Config {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            udp: vec!["127.0.0.1:0".parse().unwrap()],
            handle_signals: true,
            ..crate::Config::default()
        };
        let server = crate::Server::bind(&config, crate::protocol::Echo).unwrap();
        let stdio = 3;
        assert_eq!(open_fds(), Some(before + REACTOR_BASE_FDS - stdio + 2));
        drop(server);
    }

    #[test]
    fn without_the_kernel_count_the_walk_is_used_only_while_it_is_cheap() {
        assert_eq!(choose_open_fds(Some(7), 100_000, || panic!("walked")), 7);
        assert_eq!(choose_open_fds(None, 10, || Some(12)), 12);
        assert_eq!(choose_open_fds(None, 10, || None), 10);
        let many = WALK_LIMIT_FDS + 1;
        assert_eq!(choose_open_fds(None, many, || panic!("walked")), many);
    }

    #[test]
    fn another_process_s_descriptors_are_walked_only_while_it_holds_few() {
        // /proc/self reports a size of 0 on every kernel, as /proc/PID/fd
        // does before Linux 6.2: the kernel gives no count there.
        let uncounted = std::path::Path::new("/proc/self");
        let Some(entries) = std::fs::read_dir(uncounted).ok().map(Iterator::count) else {
            return; // no /proc
        };
        if std::fs::metadata(uncounted).map_or(true, |m| m.len() != 0) {
            return;
        }
        assert_eq!(open_fds_in(uncounted, 5), entries, "few: walked, exact");
        let many = WALK_LIMIT_FDS + 1;
        assert_eq!(open_fds_in(uncounted, many), many, "many: not walked");
        let missing = std::path::Path::new("/nonexistent/fd");
        assert_eq!(open_fds_in(missing, 9), 9);
    }

    #[test]
    fn open_fds_counts_a_new_descriptor() {
        let before = open_fds().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        // Other tests run in parallel threads, so only a lower bound is safe.
        assert!(open_fds().unwrap() >= 1);
        drop(file);
        assert!(before >= 3, "stdio at least: {before}");
    }
}
