//! The signals a process this server starts — a worker, a new generation —
//! holds back until it has installed its handlers for them.
//!
//! `SIGQUIT` (drain) and `SIGUSR2` (upgrade) end a process by default, the
//! first with a core dump. A supervisor may send either to a child that is
//! still starting: a worker restarted just before an upgrade's commit gets
//! the drain's `SIGQUIT`, a new supervisor an operator's second `SIGUSR2`.
//! So the child starts with both blocked ([`hold_until_handled`]: the mask
//! survives `exec`), a signal sent meanwhile stays pending, and once its
//! handlers are in place it unblocks them ([`release_held`]) and the
//! pending one is delivered to them. `SIGTERM` is not held: it is also the
//! parent-death signal, which must end a worker at any moment.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The signals held: those whose default action would end a starting
/// process that is meant to handle them.
fn held() -> libc::sigset_t {
    // SAFETY: sigemptyset initializes the set; sigaddset adds valid signals.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGQUIT);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        set
    }
}

/// Have the process `command` starts begin with the held signals blocked.
pub fn hold_until_handled(command: &mut Command) {
    let set = held();
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only sigprocmask, which is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// This thread's handlers for the held signals are installed: unblock them
/// (a signal that came meanwhile is delivered now). Harmless when they were
/// not blocked.
pub fn release_held() {
    let set = held();
    // SAFETY: pthread_sigmask with a valid set and no old set.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
}
