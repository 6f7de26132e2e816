//! A wake-up at a nanosecond deadline, for the open loop's schedule.
//!
//! Why not `Poll::poll`'s timeout: `epoll_wait` takes milliseconds, so mio
//! rounds a timeout *up* to the next whole millisecond (never early), and
//! the kernel adds the thread's timer slack (50 µs by default) on top. A
//! message due in 300 µs would go out about 1 ms late; at 100 msgs/s the
//! corrected latency measured mostly the generator (docs/BENCHMARKS.md,
//! "Open loop", has the before and after).
//!
//! Why a `timerfd` rather than spinning until the deadline: the timer is an
//! hrtimer armed with no slack, and it makes its descriptor readable, so
//! one `epoll_wait` sleeps until either a reply or the deadline arrives.
//! A spin would burn a core for every message of a low-rate run — on a
//! small machine, the core the server needs.
//!
//! The descriptor is edge-triggered in the driver's `Poll`, and never read:
//! every expiry wakes epoll's waiters once (a new edge), and re-arming
//! (`timerfd_settime`) resets the expiry count, so there is nothing to
//! drain. One system call per new deadline, none per wake-up.
//!
//! Nothing here knows about `mio`: the driver registers [`DeadlineTimer::fd`].

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A one-shot `CLOCK_MONOTONIC` timer descriptor (the clock `Instant` reads).
#[derive(Debug)]
pub struct DeadlineTimer {
    fd: OwnedFd,
}

impl DeadlineTimer {
    /// A disarmed timer, non-blocking and closed on exec.
    pub fn new() -> io::Result<DeadlineTimer> {
        // SAFETY: plain system call; the result is checked before use.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        Ok(DeadlineTimer {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Fire once, `after` from now (at least 1 ns: zero would disarm it).
    pub fn arm_after(&mut self, after: Duration) -> io::Result<()> {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec; the old value is not wanted.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The descriptor to register for readability.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};
    use std::time::Instant;

    #[test]
    fn the_timer_wakes_the_poll_at_its_deadline_never_before() {
        // Structure, not speed: the wake-up comes from the timer's own
        // event, and not before the deadline; twice, to show re-arming
        // works without reading the descriptor.
        let mut poll = Poll::new().unwrap();
        let mut timer = DeadlineTimer::new().unwrap();
        const TIMER: Token = Token(7);
        poll.registry()
            .register(&mut SourceFd(&timer.fd()), TIMER, Interest::READABLE)
            .unwrap();
        let mut events = Events::with_capacity(4);
        for after_us in [300, 700] {
            let armed = Instant::now();
            timer.arm_after(Duration::from_micros(after_us)).unwrap();
            let give_up = armed + Duration::from_secs(10);
            let mut woke = None;
            while woke.is_none() && Instant::now() < give_up {
                poll.poll(&mut events, Some(Duration::from_secs(1)))
                    .unwrap();
                if events.iter().any(|e| e.token() == TIMER) {
                    woke = Some(Instant::now());
                }
            }
            let woke = woke.expect("the timer's event arrived");
            assert!(woke - armed >= Duration::from_micros(after_us));
        }
    }
}
