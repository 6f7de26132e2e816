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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_the_soft_limit_reaches_the_hard_limit() {
        let (soft, hard) = raise_nofile_limit().unwrap();
        assert_eq!(soft, hard);
    }
}
