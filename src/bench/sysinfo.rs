//! What the bench reads about processes and the kernel (Linux `/proc`; on
//! other systems these return `None` and the report says `null`).

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// CPU time (user + system) used so far by process `pid` and the
/// processes under it: a server with `--workers` is a supervisor that does
/// almost nothing and workers that do everything, so its pid alone says
/// nothing. Each live process counts its own time and that of the
/// children it has already reaped (a worker that died and was replaced).
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let mut ticks = own_and_reaped_ticks(pid)?;
    for descendant in descendants(pid) {
        // One may exit between the listing and the read: it counts nothing
        // here, and its time reaches its parent's reaped time instead.
        ticks += own_and_reaped_ticks(descendant).unwrap_or(0);
    }
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_sec > 0).then(|| Duration::from_secs_f64(ticks as f64 / per_sec as f64))
}

/// `utime + stime + cutime + cstime` of `pid`, in clock ticks.
fn own_and_reaped_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after its ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let tick = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(tick(11)? + tick(12)? + tick(13)? + tick(14)?)
}

/// Every process under `pid` (children, their children, ...), from each
/// thread's `/proc/PID/task/TID/children` (a child is listed under the
/// thread that started it). Empty where `/proc` cannot tell.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut next = vec![pid];
    while let Some(parent) = next.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.filter_map(Result::ok) {
            let path = task.path().join("children");
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            for child in text.split_whitespace().filter_map(|p| p.parse().ok()) {
                if !found.contains(&child) {
                    found.push(child);
                    next.push(child);
                }
            }
        }
    }
    found
}

/// Resident memory of process `pid` and the processes under it (a
/// supervisor and its workers), in bytes. Pages two processes share are
/// counted in each, so compare two readings rather than trust one.
pub fn process_rss(pid: u32) -> Option<u64> {
    let own = status_bytes(pid, "VmRSS:")?;
    Some(
        descendants(pid)
            .into_iter()
            .filter_map(|d| status_bytes(d, "VmRSS:"))
            .sum::<u64>()
            + own,
    )
}

/// What a process and the processes under it hold, read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeMemory {
    /// Resident memory (`VmRSS`), summed: shared pages once per process.
    pub rss: u64,
    /// Private anonymous resident memory (`RssAnon`), summed: the heap,
    /// stacks and every other page that is this process's own. The program
    /// text and libraries (file pages, shared by every worker and mapped
    /// into each as it first runs them, 4 KiB or 2 MiB at a time) are not
    /// in it, so it is what the server holds for its connections, however
    /// many processes share the work.
    pub anon: u64,
    /// How many processes were read.
    pub processes: u64,
}

/// [`TreeMemory`] of `pid` and the processes under it.
pub fn tree_memory(pid: u32) -> Option<TreeMemory> {
    let mut total = TreeMemory {
        rss: status_bytes(pid, "VmRSS:")?,
        anon: status_bytes(pid, "RssAnon:")?,
        processes: 1,
    };
    for descendant in descendants(pid) {
        // One may exit between the listing and the read: it is not counted.
        let (Some(rss), Some(anon)) = (
            status_bytes(descendant, "VmRSS:"),
            status_bytes(descendant, "RssAnon:"),
        ) else {
            continue;
        };
        total.rss += rss;
        total.anon += anon;
        total.processes += 1;
    }
    Some(total)
}

/// The most resident memory process `pid` has had since it started
/// (`VmHWM`, its high-water mark), in bytes. The kernel raises it before
/// any page is given back, so unlike a sample of `VmRSS` it cannot miss a
/// short spike. `pid` alone: for a supervisor it does not rise, and
/// [`Watch`] falls back to its samples of the whole tree.
pub fn process_rss_hwm(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmHWM:")
}

/// A `/proc/PID/status` field given in kB, in bytes.
fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Memory the kernel holds for TCP sockets, machine-wide (the `mem` field
/// of the `TCP:` line of `/proc/net/sockstat`, in pages), in bytes. Every
/// TCP user of the machine counts, not only the bench and its server.
pub fn kernel_tcp_memory() -> Option<u64> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut fields = line.split_whitespace();
    fields.find(|&f| f == "mem")?;
    let pages: u64 = fields.next()?.parse().ok()?;
    Some(pages * page_size())
}

/// The kernel's TCP memory thresholds (`net.ipv4.tcp_mem`), in bytes: below
/// `low` nothing is limited; past `pressure` socket buffers stop growing
/// and are trimmed; at `high` new buffer memory is refused (the kernel
/// logs "TCP: out of memory" and drops segments, for every socket).
pub fn kernel_tcp_memory_limits() -> Option<[u64; 3]> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_mem").ok()?;
    let pages: Vec<u64> = text
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let page = page_size();
    match pages[..] {
        [low, pressure, high] => Some([low * page, pressure * page, high * page]),
        _ => None,
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// How often [`Watch`] samples.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// Peak memory over a window of time (a run): the server's resident
/// memory, and the kernel's TCP memory (where a flood's bytes go when no
/// process holds them).
///
/// The server's has two sources: `VmHWM` (exact, but over the process's
/// whole life) and `VmRSS` sampled every 100 ms on a small thread (over
/// the window only, but it can miss a spike between samples).
/// If `VmHWM` rose during the window, the window holds the lifetime peak
/// and `VmHWM` is it, exactly; otherwise the process had been bigger
/// before (a long-running server given by `--server-pid`) and the samples
/// are the best we know. The server is only read, never changed (resetting
/// its `VmHWM` through `/proc/PID/clear_refs` would be exact too, but it
/// would alter a server the bench does not own).
pub struct Watch {
    pid: Option<u32>,
    hwm_before: Option<u64>,
    stop: mpsc::Sender<()>,
    sampler: thread::JoinHandle<Samples>,
}

/// The largest samples seen.
#[derive(Debug, Default, Clone, Copy)]
struct Samples {
    rss: Option<u64>,
    tcp: Option<u64>,
}

impl Samples {
    fn take(&mut self, pid: Option<u32>) {
        self.rss = self.rss.max(pid.and_then(process_rss));
        self.tcp = self.tcp.max(kernel_tcp_memory());
    }
}

/// A process's peak resident memory over a window, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peak {
    /// Bytes.
    pub bytes: u64,
    /// `"VmHWM"` (exact) or `"sampled"` (a lower bound: the largest sample).
    pub source: &'static str,
}

/// What a [`Watch`] saw.
#[derive(Debug, Clone, Copy)]
pub struct Peaks {
    /// The server's peak resident memory (`None` without its pid or `/proc`).
    pub rss: Option<Peak>,
    /// The kernel's TCP memory at its largest sample, machine-wide.
    pub kernel_tcp: Option<u64>,
}

impl Watch {
    /// Start watching (the server's memory only when its pid is known).
    pub fn start(pid: Option<u32>) -> Watch {
        let hwm_before = pid.and_then(process_rss_hwm);
        let (stop, stopped) = mpsc::channel::<()>();
        let sampler = thread::spawn(move || {
            let mut samples = Samples::default();
            samples.take(pid);
            // `recv_timeout` is the sampling clock and the stop signal at
            // once: it returns `Timeout` every interval until `finish`
            // drops the sender.
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(SAMPLE_INTERVAL) {
                samples.take(pid);
            }
            samples
        });
        Watch {
            pid,
            hwm_before,
            stop,
            sampler,
        }
    }

    /// Stop watching; the window's peaks.
    pub fn finish(self) -> Peaks {
        let hwm_after = self.pid.and_then(process_rss_hwm);
        drop(self.stop);
        let mut samples = self.sampler.join().unwrap_or_default();
        samples.take(self.pid);
        Peaks {
            rss: window_peak(self.hwm_before, hwm_after, samples.rss),
            kernel_tcp: samples.tcp,
        }
    }
}

/// Which figure is the window's peak: `VmHWM` if it rose during the
/// window (then the window holds the lifetime peak), else the samples.
fn window_peak(
    hwm_before: Option<u64>,
    hwm_after: Option<u64>,
    sampled: Option<u64>,
) -> Option<Peak> {
    match (hwm_before, hwm_after) {
        (Some(before), Some(after)) if after > before => Some(Peak {
            bytes: after,
            source: "VmHWM",
        }),
        _ => sampled.map(|bytes| Peak {
            bytes,
            source: "sampled",
        }),
    }
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
        assert!(process_rss_hwm(pid).unwrap() > 0);
        let tree = tree_memory(pid).unwrap();
        assert!(0 < tree.anon && tree.anon < tree.rss, "{tree:?}");
        // At least this process: other tests of this binary run beside
        // this one and may have children of their own at this moment.
        assert!(tree.processes >= 1, "{tree:?}");
    }

    #[test]
    fn a_process_s_cpu_and_memory_include_the_processes_under_it() {
        // A shell that first runs a busy subshell (about 0.2 s of CPU, then
        // reaped), then waits on a `sleep`: what a supervisor is to a
        // worker that died and one that lives.
        let mut shell = std::process::Command::new("sh")
            .arg("-c")
            .arg("(i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done); sleep 30 & wait")
            .spawn()
            .unwrap();
        let pid = shell.id();
        let start = std::time::Instant::now();
        let sleeper = loop {
            let under = descendants(pid);
            let comm = |p: u32| std::fs::read_to_string(format!("/proc/{p}/comm"));
            if let [only] = under[..] {
                if comm(only).is_ok_and(|c| c.trim() == "sleep") {
                    break only;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(30), "{under:?}");
            thread::sleep(Duration::from_millis(10));
        };
        // The sleeper has just exec'd: its pages may still be faulting in,
        // so read until two readings taken one after another agree (both
        // idle, both steady), within a deadline.
        let read = || {
            let rss = process_rss(pid).unwrap();
            let own = status_bytes(pid, "VmRSS:").unwrap();
            let child = status_bytes(sleeper, "VmRSS:").unwrap();
            let tree = tree_memory(pid).unwrap();
            let anon =
                status_bytes(pid, "RssAnon:").unwrap() + status_bytes(sleeper, "RssAnon:").unwrap();
            (rss, own, child, tree, anon)
        };
        let (rss, own, child, tree, anon) = loop {
            let reading = read();
            let (rss, own, child, tree, anon) = reading;
            let agree = rss == own + child && (tree.rss, tree.anon) == (rss, anon);
            if agree || start.elapsed() > Duration::from_secs(30) {
                break reading;
            }
            thread::sleep(Duration::from_millis(10));
        };
        // SAFETY: kill sends a signal to the child we started, by pid.
        unsafe { libc::kill(sleeper as libc::pid_t, libc::SIGKILL) };
        let cpu = process_cpu(pid).unwrap();
        let _ = shell.kill();
        let _ = shell.wait();
        assert_eq!(rss, own + child, "both idle, so both steady");
        assert_eq!((tree.rss, tree.anon, tree.processes), (rss, anon, 2));
        // The shell itself forked twice and waited: its own time is a few
        // milliseconds at most; the reaped subshell's is 0.1 s or more.
        assert!(cpu >= Duration::from_millis(50), "{cpu:?}");
    }

    #[test]
    fn the_peak_is_vmhwm_when_it_rose_during_the_window_else_the_samples() {
        let exact = Peak {
            bytes: 900,
            source: "VmHWM",
        };
        assert_eq!(window_peak(Some(100), Some(900), Some(700)), Some(exact));
        // The process was bigger before the window: VmHWM says nothing about it.
        let sampled = Peak {
            bytes: 700,
            source: "sampled",
        };
        assert_eq!(window_peak(Some(900), Some(900), Some(700)), Some(sampled));
        assert_eq!(window_peak(None, None, Some(700)), Some(sampled));
        assert_eq!(window_peak(None, None, None), None);
    }

    #[test]
    fn the_peaks_of_this_process_and_the_kernel_are_known_after_a_window() {
        let peaks = Watch::start(Some(std::process::id())).finish();
        assert!(peaks.rss.unwrap().bytes > 0);
        assert!(peaks.kernel_tcp.is_some());
        let [low, pressure, high] = kernel_tcp_memory_limits().unwrap();
        assert!(0 < low && low <= pressure && pressure <= high);
    }
}
