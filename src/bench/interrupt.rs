//! Ctrl-C and `kill`: an orderly stop with the summary of what was measured.
//!
//! `SIGINT` and `SIGTERM` only set a flag ([`requested`]); every loop of the
//! bench (connecting, the load threads, the flood, the hold) looks at it at
//! least every [`CHECK_EVERY`] and stops; the main thread then prints the
//! partial summary, marked `interrupted`, and the process exits 128 + the
//! signal (130 for Ctrl-C: the shell's convention for "ended by a signal").
//! A second signal while stopping ends the process at once, same code.
//!
//! Whatever ends the bench — these signals, `SIGKILL`, a panic — its child
//! processes end with it: [`die_with_parent`].

use std::fmt;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// The longest a loop of the bench may go without looking at the flag.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Set by the first `SIGINT`/`SIGTERM`.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// Which signal it was.
static SIGNAL: AtomicUsize = AtomicUsize::new(0);

/// Catch `SIGINT` and `SIGTERM` from now on (for a bench run; `merge` and
/// `compare` keep the default action, which suits them).
pub fn install() -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let caught = |e: io::Error| io::Error::new(e.kind(), format!("bench: catch signals: {e}"));
    for signal in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag as it was before this
        // delivery: the second signal exits at once, the first does not.
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, &STOPPING)
            .map_err(caught)?;
        signal_hook::flag::register_usize(signal, &SIGNAL, signal as usize).map_err(caught)?;
        signal_hook::flag::register(signal, &STOPPING).map_err(caught)?;
    }
    Ok(())
}

/// Whether a signal asked the bench to stop.
pub fn requested() -> bool {
    STOPPING.load(Ordering::Relaxed)
}

/// The error a bench run returns once it has printed its partial summary:
/// the process exits with [`Interrupted::exit_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted {
    signal: i32,
}

impl Interrupted {
    /// The stop that was asked for, if any.
    pub fn now() -> Option<Interrupted> {
        requested().then(|| Interrupted {
            signal: SIGNAL.load(Ordering::Relaxed) as i32,
        })
    }

    /// The signal's name, for the summary.
    pub fn signal_name(&self) -> &'static str {
        match self.signal {
            libc::SIGINT => "SIGINT",
            libc::SIGTERM => "SIGTERM",
            _ => "a signal",
        }
    }

    /// 128 + the signal number: 130 for `SIGINT`, 143 for `SIGTERM`.
    pub fn exit_code(&self) -> u8 {
        u8::try_from(128 + self.signal).unwrap_or(130)
    }

    /// As an `io::Error`, for the run's `Result`.
    pub fn into_error(self) -> io::Error {
        io::Error::new(io::ErrorKind::Interrupted, self)
    }
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bench: interrupted by {}; the summary covers the run until then",
            self.signal_name()
        )
    }
}

impl std::error::Error for Interrupted {}

/// The exit code for `error` if it is an [`Interrupted`] run.
pub fn exit_code_of(error: &io::Error) -> Option<u8> {
    let inner = error.get_ref()?.downcast_ref::<Interrupted>()?;
    Some(inner.exit_code())
}

/// Have the child `command` starts get `SIGKILL` when the thread that
/// spawns it ends (`PR_SET_PDEATHSIG`), and keep it out of our process
/// group, so a Ctrl-C at the terminal reaches only the bench, which then
/// stops its children in order.
///
/// Linux sends the signal when the *thread* that forked exits, not the
/// process: spawn from the main thread (the bench does), which lives as long
/// as the process does.
pub fn die_with_parent(command: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only async-signal-safe functions (prctl, getppid, _exit).
    let parent = std::process::id() as libc::pid_t;
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl: then nobody will send
            // the signal, and we were re-parented already.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    command.process_group(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_code_is_128_plus_the_signal() {
        let int = Interrupted {
            signal: libc::SIGINT,
        };
        assert_eq!(int.exit_code(), 130);
        assert_eq!(exit_code_of(&int.into_error()), Some(130));
        assert_eq!(exit_code_of(&io::Error::other("x")), None);
    }
}
