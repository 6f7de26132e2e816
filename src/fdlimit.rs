//! The open-file limit (`RLIMIT_NOFILE`): every socket is a descriptor.
//!
//! A process starts with a *soft* limit (often 1024) it may raise up to
//! its *hard* limit without privileges. A server meant to hold tens of
//! thousands of connections raises it at start; tests that open many
//! sockets do the same.

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

/// How many descriptors this process has open (Linux: `/proc/self/fd`;
/// elsewhere `/dev/fd`), or `None` if neither can be read.
pub fn open_fds() -> Option<usize> {
    ["/proc/self/fd", "/dev/fd"]
        .iter()
        .find_map(|dir| std::fs::read_dir(dir).ok())
        .map(|entries| entries.count().saturating_sub(1)) // the directory handle itself
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
