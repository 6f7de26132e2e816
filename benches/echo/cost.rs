//! What a server spends per echoed message, *counted* rather than timed, so
//! the figures do not move with the noise of a shared machine:
//! - user-space instructions, from valgrind's callgrind: two runs of the same
//!   load, one twice as long, and the marginal count
//!   `(instructions_long - instructions_short) / (messages_long - messages_short)`,
//!   so start-up, accepting and shutdown cancel out;
//! - system calls, from `strace -f -c` (every thread), split into reads,
//!   writes, `epoll_wait` and the rest. strace slows the server down, so the
//!   load saturates it and events batch as they do on a busy server; for
//!   echo-reactor the same run's own counters are shown next to strace's.
//!
//! Messages are the load generator's verified replies, counted the same way
//! for every server. Each tool is optional: without it, its column says `-`.

use std::path::Path;
use std::process::{Command, Stdio};

use echo_reactor::stats::{stat_value, syscalls_in_line};

use crate::servers::{echo_args, load, start_under, Under};

/// The point both counts are taken at: 50 connections × 64 B, closed loop.
fn fifty_by_64(seconds: f64) -> Vec<String> {
    echo_args(50, 64, &seconds.to_string(), "0")
}

/// Whether `tool --version` runs.
pub fn available(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// User-space instructions per message: the marginal count between a run
/// of `seconds` and one of `2 * seconds`.
pub fn instructions_per_message(
    name: &'static str,
    c_binary: Option<&Path>,
    seconds: f64,
    dir: &Path,
) -> Option<f64> {
    let (short_ir, short_msgs) = callgrind_run(name, c_binary, seconds, dir)?;
    let (long_ir, long_msgs) = callgrind_run(name, c_binary, 2.0 * seconds, dir)?;
    (long_msgs > short_msgs && long_ir > short_ir)
        .then(|| (long_ir - short_ir) as f64 / (long_msgs - short_msgs) as f64)
}

/// One run under callgrind: (instructions of the whole process, messages).
fn callgrind_run(
    name: &'static str,
    c_binary: Option<&Path>,
    seconds: f64,
    dir: &Path,
) -> Option<(u64, u64)> {
    let out = dir.join(format!("callgrind.{name}.{seconds}"));
    let server = start_under(name, c_binary, Under::Callgrind(&out));
    let messages = load(&server, &fifty_by_64(seconds))["messages"].as_u64()?;
    server.stop(); // callgrind writes its file as the program exits
    let text = std::fs::read_to_string(&out).ok()?;
    // The whole run's count: `summary: N` (older valgrinds: `totals: N`).
    let total = text.lines().find_map(|line| {
        line.strip_prefix("summary:")
            .or_else(|| line.strip_prefix("totals:"))
    })?;
    Some((total.trim().parse().ok()?, messages))
}

/// System calls per message, by kind.
pub struct Syscalls {
    pub reads: f64,
    pub writes: f64,
    pub polls: f64,
    pub other: f64,
    /// echo-reactor only: its own `read_calls + write_calls + poll_calls`
    /// per echoed message in the same run (the cross-check).
    pub own_counters: Option<f64>,
}

impl Syscalls {
    pub fn total(&self) -> f64 {
        self.reads + self.writes + self.polls + self.other
    }
}

/// One run of `seconds` under `strace -f -c`.
pub fn syscalls_per_message(
    name: &'static str,
    c_binary: Option<&Path>,
    seconds: f64,
    dir: &Path,
) -> Option<Syscalls> {
    let out = dir.join(format!("strace.{name}"));
    let server = start_under(name, c_binary, Under::Strace(&out));
    let messages = load(&server, &fifty_by_64(seconds))["messages"].as_f64()?;
    let printed = server.stop(); // strace writes its summary when the server exits
    let summary = std::fs::read_to_string(&out).ok()?;
    let mut counts = Syscalls {
        reads: 0.0,
        writes: 0.0,
        polls: 0.0,
        other: 0.0,
        own_counters: own_syscalls_per_message(&printed, 64),
    };
    // Rows: `% time  seconds  usecs/call  calls  [errors]  syscall`.
    for row in summary.lines() {
        let fields: Vec<&str> = row.split_whitespace().collect();
        let (Some(calls), Some(&syscall)) = (
            fields.get(3).and_then(|c| c.parse::<f64>().ok()),
            fields.last(),
        ) else {
            continue; // the header and the dashed rules
        };
        let per_message = calls / messages;
        match syscall {
            "total" => {}
            "read" | "readv" | "recvfrom" | "recvmsg" => counts.reads += per_message,
            "write" | "writev" | "sendto" | "sendmsg" => counts.writes += per_message,
            "epoll_wait" | "epoll_pwait" | "epoll_pwait2" => counts.polls += per_message,
            _ => counts.other += per_message,
        }
    }
    Some(counts)
}

/// From echo-reactor's final `stats key=value ...` line: its own system
/// calls (reads, writes, polls) per echoed message of `size` bytes.
pub fn own_syscalls_per_message(printed: &str, size: usize) -> Option<f64> {
    let line = printed.lines().find(|l| l.starts_with("stats "))?;
    let calls = syscalls_in_line(line)? as f64;
    let echoed = stat_value(line, "bytes_out")? as f64 / size as f64;
    (echoed > 0.0).then(|| calls / echoed)
}

/// A figure for the table, or `-` when it could not be measured.
pub fn cell(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}
