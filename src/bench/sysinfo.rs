//! What the bench reads about processes and the kernel (Linux `/proc`; on
//! other systems these return `None` and the report says `null`).

use std::time::Duration;

/// CPU time (user + system) used so far by process `pid`.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after its ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_sec > 0).then(|| Duration::from_secs_f64(ticks as f64 / per_sec as f64))
}

/// Resident memory of process `pid`, in bytes.
pub fn process_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time (user + system) used so far by this process, all threads.
pub fn own_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// The kernel's `TcpExt` counters `ListenOverflows` and `ListenDrops`.
pub fn listen_queue_counters() -> Option<(u64, u64)> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let find = |name: &str| {
        let index = names.split_whitespace().position(|n| n == name)?;
        values.split_whitespace().nth(index)?.parse().ok()
    };
    Some((find("ListenOverflows")?, find("ListenDrops")?))
}

/// The kernel release, e.g. `6.18.44`.
pub fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| std::env::consts::OS.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        assert!(process_rss(pid).unwrap() > 0);
        assert!(process_cpu(pid).is_some());
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(20) {}
        assert!(own_cpu() > Duration::ZERO);
        assert!(listen_queue_counters().is_some());
    }
}
