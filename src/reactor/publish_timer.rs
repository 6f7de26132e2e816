//! The wake-up for a skipped stats copy: a kernel timer (`timerfd`) in the
//! epoll set.
//!
//! Step 7 copies the loop's counters out at most every 10 ms
//! (`stats::PublishGate`). A turn that skips the copy owes one: if traffic
//! stops, the loop must still wake to make it, or readers would see stale
//! numbers for as long as it sleeps. The wake could be a timeout on every
//! `epoll_wait`, but then every turn pays for computing and converting
//! that timeout. A timer armed once per owed copy costs one
//! `timerfd_settime` per 10 ms, not a conversion per message
//! (docs/BENCHMARKS.md, "A turn of the loop at one connection").
//!
//! The timer is registered edge-triggered (as mio registers everything)
//! and never read: every expiry wakes the epoll set, and arming it again
//! resets its count. Its event only ends the wait; step 7 of that turn
//! finds the copy due and makes it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::timers::NEVER;

/// A one-shot `CLOCK_MONOTONIC` timer in the loop's epoll set.
pub(super) struct PublishTimer {
    fd: OwnedFd,
    /// The loop-clock time it was last armed for ([`NEVER`]: not yet).
    armed_for_ms: u64,
}

impl PublishTimer {
    /// Create the timer and register it for `token`.
    pub(super) fn new(registry: &Registry, token: Token) -> io::Result<Self> {
        // SAFETY: plain syscall; the descriptor is owned at once below.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        Ok(PublishTimer {
            fd,
            armed_for_ms: NEVER,
        })
    }

    /// Make sure the loop wakes by `due_ms` (the loop clock's
    /// milliseconds), `now_ms` being the turn's time. Once per due time:
    /// every other turn pays one comparison.
    #[inline]
    pub(super) fn wake_by(&mut self, due_ms: u64, now_ms: u64) {
        if self.armed_for_ms != due_ms {
            self.arm(due_ms, now_ms);
        }
    }

    #[inline(never)] // once per owed copy, not per turn
    fn arm(&mut self, due_ms: u64, now_ms: u64) {
        // Relative to the turn's time, rounded to whole milliseconds as the
        // loop clock is: it fires no sooner than the loop clock reads
        // `due_ms`. A zero value would disarm the timer, so at least 1 ns.
        let ms = due_ms.saturating_sub(now_ms);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (ms / 1000) as libc::time_t,
                tv_nsec: if ms == 0 {
                    1
                } else {
                    ((ms % 1000) * 1_000_000) as libc::c_long
                },
            },
        };
        // SAFETY: a valid descriptor and a valid, initialised itimerspec.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc == 0 {
            self.armed_for_ms = due_ms;
        } else {
            // Cannot happen with these arguments; if it did, the copy waits
            // for the next event or timeout, as before the timer.
            log::debug!("timerfd_settime: {}", io::Error::last_os_error());
        }
    }
}
