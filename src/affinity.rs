//! `--cpu-affinity auto|LIST`: which CPU each worker runs on, and pinning
//! the calling process there (nginx's `worker_cpu_affinity`).
//!
//! A worker pinned to one CPU keeps its caches and its share of the
//! scheduler on that CPU: the kernel never moves it, so the other workers
//! never find it on "their" CPU. Without pinning, the scheduler places the
//! workers wherever it likes, and may move them.
//!
//! The plan is a pure function of the flag, the worker count and the CPUs
//! this process may run on (`sched_getaffinity`, which already reflects
//! `taskset`, cgroup cpusets and offline CPUs):
//! - `auto`: worker `i` gets the `i`-th allowed CPU, going round again
//!   when there are more workers than CPUs;
//! - `LIST` (`0,1`, `0-3`, `0,2-3`; a CPU may repeat): worker `i` gets the
//!   `i`-th entry. Fewer entries than workers is refused (say which CPU
//!   the extra ones get: repeat it, or use `auto`); extra entries are
//!   unused, and the caller says so.
//!
//! A CPU outside the allowed set is refused, by number: pinning there
//! would fail (`EINVAL`) in every worker, or run the worker outside the
//! set the operator gave the whole server.
//!
//! Each process pins itself ([`pin_to`]: `sched_setaffinity(0, ...)`),
//! first thing, before it starts any thread: the mask is per thread, and
//! only threads started later inherit it. The supervisor is not pinned;
//! it sleeps between ticks.
//!
//! With `--incoming-cpu` a pinned worker also asks for what its own CPU
//! received ([`steer_incoming_cpu`], one socket option on a descriptor):
//! nothing here knows of connections.

use std::fmt;
use std::io;
use std::os::fd::RawFd;

use log::{info, warn};

use crate::units::usage_error;

/// The most CPUs a list may name, and one past the highest CPU number: a
/// `cpu_set_t` holds 1024 (`CPU_SETSIZE`).
pub const MAX_CPUS: usize = 1024;

/// What `--cpu-affinity` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuAffinity {
    /// Worker `i` on the `i`-th allowed CPU, round and round.
    Auto,
    /// Worker `i` on entry `i`, as written (ranges expanded, repeats kept).
    List(Vec<usize>),
}

impl fmt::Display for CpuAffinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuAffinity::Auto => f.write_str("auto"),
            CpuAffinity::List(cpus) => f.write_str(&cpu_list(cpus)),
        }
    }
}

/// Parse `--cpu-affinity`: `auto`, or CPU numbers and ranges separated by
/// commas (`0,1`, `0-3`, `0,2-3`), as `taskset -c` and
/// `/proc/PID/status`'s `Cpus_allowed_list` write them.
pub fn parse_cpu_affinity(text: &str) -> Result<CpuAffinity, String> {
    if text == "auto" {
        return Ok(CpuAffinity::Auto);
    }
    let mut cpus = Vec::new();
    for entry in text.split(',') {
        let (first, last) = match entry.split_once('-') {
            Some((first, last)) => (cpu_number(first, text)?, cpu_number(last, text)?),
            None => {
                let cpu = cpu_number(entry, text)?;
                (cpu, cpu)
            }
        };
        if first > last {
            return Err(format!(
                "'{text}': the range {entry} runs backwards (write {last}-{first})"
            ));
        }
        // Bounded: each range is at most MAX_CPUS long, and so is the list.
        if cpus.len() + (last - first + 1) > MAX_CPUS {
            return Err(format!(
                "'{text}' names more than {MAX_CPUS} CPUs (one per worker is enough)"
            ));
        }
        cpus.extend(first..=last);
    }
    Ok(CpuAffinity::List(cpus))
}

/// One CPU number of the list `text`.
fn cpu_number(word: &str, text: &str) -> Result<usize, String> {
    // `parse` alone would take `+1`; a list has digits only.
    if word.is_empty() || !word.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "'{text}' is not auto or a CPU list like 0,1 or 0-3 ('{word}' is not a CPU number)"
        ));
    }
    match word.parse::<usize>() {
        Ok(cpu) if cpu < MAX_CPUS => Ok(cpu),
        _ => Err(format!(
            "'{text}': CPU {word} is past the highest CPU number a CPU set holds ({})",
            MAX_CPUS - 1
        )),
    }
}

/// The CPU of each of `workers` workers (index `i` is worker `i`'s), given
/// the CPUs this process may run on, `allowed` (ascending, as
/// [`allowed_cpus`] returns them). The error is one line naming the flag.
pub fn cpus_for_workers(
    affinity: &CpuAffinity,
    workers: usize,
    allowed: &[usize],
) -> Result<Vec<usize>, String> {
    match affinity {
        CpuAffinity::Auto if allowed.is_empty() => {
            // sched_getaffinity never returns an empty set; a caller might.
            Err("--cpu-affinity auto: this process may run on no CPU".to_string())
        }
        CpuAffinity::Auto => Ok((0..workers).map(|i| allowed[i % allowed.len()]).collect()),
        CpuAffinity::List(cpus) => {
            if let Some(cpu) = cpus.iter().find(|cpu| !allowed.contains(cpu)) {
                return Err(format!(
                    "--cpu-affinity {affinity}: CPU {cpu} is not one this process may run on \
                     (allowed: {})",
                    cpu_list(allowed)
                ));
            }
            if cpus.len() < workers {
                return Err(format!(
                    "--cpu-affinity {affinity} names {} CPU(s) for {workers} workers: name one \
                     per worker (a CPU may repeat, e.g. 0,1,0,1), or give auto to go round the \
                     allowed CPUs ({})",
                    cpus.len(),
                    cpu_list(allowed)
                ));
            }
            Ok(cpus[..workers].to_vec())
        }
    }
}

/// `cpus` written as a list (`0-3,6`), as `Cpus_allowed_list` does.
pub fn cpu_list(cpus: &[usize]) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        // A run of consecutive numbers is one range.
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        words.push(if j > i {
            format!("{}-{}", cpus[i], cpus[j])
        } else {
            cpus[i].to_string()
        });
        i = j + 1;
    }
    words.join(",")
}

/// The CPUs this process may run on (`sched_getaffinity(0)`), ascending.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid, empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most size_of::<cpu_set_t>() bytes into `set`.
    // (On a machine with more than MAX_CPUS possible CPUs it fails, EINVAL.)
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("read this process's CPUs (sched_getaffinity): {e}"),
        ));
    }
    // SAFETY: CPU_ISSET only reads `set`; every cpu < MAX_CPUS is in range.
    Ok((0..MAX_CPUS)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Run the calling thread (and every thread it starts later) on `cpu`
/// alone (`sched_setaffinity(0)`). Call it before starting any thread.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn pin_to(cpu: usize) -> io::Result<()> {
    if cpu >= MAX_CPUS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("pin to CPU {cpu}: past the highest CPU number a CPU set holds"),
        ));
    }
    // SAFETY: a zeroed cpu_set_t is a valid, empty set; `cpu` is in range.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: the kernel reads size_of::<cpu_set_t>() bytes from `set`.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("pin to CPU {cpu} (sched_setaffinity): {e}"),
        ));
    }
    Ok(())
}

/// Have the kernel hand `socket`, a member of a `SO_REUSEPORT` group, the
/// connections (SYNs) and datagrams it processed on `cpu`
/// (`SO_INCOMING_CPU`): Linux 6.2+ picks the member whose CPU matches,
/// and hashes when none does.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn steer_incoming_cpu(socket: RawFd, cpu: usize) -> io::Result<()> {
    let cpu = libc::c_int::try_from(cpu)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "CPU number out of range"))?;
    // SAFETY: setsockopt reads an int from `cpu`, whose size we pass.
    let set = unsafe {
        libc::setsockopt(
            socket,
            libc::SOL_SOCKET,
            libc::SO_INCOMING_CPU,
            (&cpu as *const libc::c_int).cast(),
            std::mem::size_of_val(&cpu) as libc::socklen_t,
        )
    };
    if set != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("steer to CPU {cpu} (SO_INCOMING_CPU): {e}"),
        ));
    }
    Ok(())
}

/// Not on this system: `--cpu-affinity` is refused (by [`allowed_cpus`] first).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn steer_incoming_cpu(socket: RawFd, cpu: usize) -> io::Result<()> {
    let _ = (socket, cpu);
    allowed_cpus().map(drop)
}

/// Not on this system: `--cpu-affinity` is refused.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "--cpu-affinity: pinning to CPUs is supported on Linux only",
    ))
}

/// Not on this system: `--cpu-affinity` is refused (by [`allowed_cpus`] first).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn pin_to(cpu: usize) -> io::Result<()> {
    let _ = cpu;
    allowed_cpus().map(drop)
}

/// `--cpu-affinity`: refuse a plan that cannot work before anything is
/// bound (the supervisor, or the only process), and pin this process if it
/// serves: a worker (`worker_index`) to its CPU, the only process to the
/// first.
/// Returns the CPU this process now runs on alone, if it was pinned.
pub fn apply_cpu_affinity(
    affinity: Option<&CpuAffinity>,
    workers: usize,
    worker_index: Option<usize>,
) -> io::Result<Option<usize>> {
    let Some(affinity) = affinity else {
        return Ok(None);
    };
    let workers = workers.max(1);
    let plan = allowed_cpus()
        .and_then(|allowed| cpus_for_workers(affinity, workers, &allowed).map_err(usage_error));
    if let Some(index) = worker_index {
        // The supervisor checked the plan at start. A restarted worker whose
        // CPU has gone since (unplugged, a cpuset narrowed) serves unpinned
        // rather than not at all, as nginx's workers do.
        let pinned = plan.and_then(|cpus| {
            let cpu = cpus[index % cpus.len()];
            pin_to(cpu).map(|()| cpu)
        });
        return Ok(match pinned {
            Ok(cpu) => {
                info!("worker {index} pinned to CPU {cpu}");
                Some(cpu)
            }
            Err(e) => {
                warn!("worker {index}: --cpu-affinity {affinity}: {e}; running unpinned");
                None
            }
        });
    }
    let cpus = plan?;
    if let CpuAffinity::List(listed) = affinity {
        if listed.len() > workers {
            warn!(
                "--cpu-affinity {affinity}: CPU(s) {} unused: one per worker, and there are {workers}",
                cpu_list(&listed[workers..])
            );
        }
    }
    if workers > 1 {
        info!("--cpu-affinity {affinity}: {}", workers_on(&cpus));
        return Ok(None); // the supervisor itself sleeps between ticks: not pinned
    }
    pin_to(cpus[0])?;
    info!("pinned to CPU {}", cpus[0]);
    Ok(Some(cpus[0]))
}

/// `worker 0 on CPU 1, worker 1 on CPU 0`: `cpus`, one per worker.
fn workers_on(cpus: &[usize]) -> String {
    let each: Vec<String> = cpus
        .iter()
        .enumerate()
        .map(|(worker, cpu)| format!("worker {worker} on CPU {cpu}"))
        .collect();
    each.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(cpus: &[usize]) -> CpuAffinity {
        CpuAffinity::List(cpus.to_vec())
    }

    // ---- parsing ----

    #[test]
    fn auto_single_cpus_and_ranges_parse_in_order_with_repeats_kept() {
        assert_eq!(parse_cpu_affinity("auto"), Ok(CpuAffinity::Auto));
        assert_eq!(parse_cpu_affinity("1"), Ok(list(&[1])));
        assert_eq!(parse_cpu_affinity("0-3"), Ok(list(&[0, 1, 2, 3])));
        assert_eq!(parse_cpu_affinity("1,0"), Ok(list(&[1, 0])));
        assert_eq!(parse_cpu_affinity("0,2-3,0"), Ok(list(&[0, 2, 3, 0])));
        assert_eq!(parse_cpu_affinity("5-5"), Ok(list(&[5])));
        assert_eq!(parse_cpu_affinity("1023"), Ok(list(&[1023])));
    }

    #[test]
    fn a_malformed_list_is_refused_naming_the_bad_word() {
        for (text, word) in [
            ("", "''"),
            ("0,", "''"),
            (",1", "''"),
            ("0,,1", "''"),
            ("one", "'one'"),
            ("Auto", "'Auto'"),
            ("0 1", "'0 1'"),
            ("+1", "'+1'"),
            ("-1", "''"),
            ("0-", "''"),
            ("0-1-2", "'1-2'"),
            ("0x1", "'0x1'"),
        ] {
            let err = parse_cpu_affinity(text).expect_err(text);
            assert!(
                err.contains(&format!("{word} is not a CPU number")),
                "{text:?}: {err}"
            );
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn a_backwards_range_is_refused_with_the_range_the_user_meant() {
        let err = parse_cpu_affinity("0,3-1").unwrap_err();
        assert!(
            err.contains("the range 3-1 runs backwards (write 1-3)"),
            "{err}"
        );
    }

    #[test]
    fn cpu_numbers_past_a_cpu_set_and_lists_past_its_size_are_refused() {
        let err = parse_cpu_affinity("1024").unwrap_err();
        assert!(err.contains("CPU 1024 is past the highest"), "{err}");
        let err = parse_cpu_affinity("0-99999999999999999999999").unwrap_err();
        assert!(err.contains("is past the highest"), "{err}");
        // Memory stays bounded however long the text.
        let err = parse_cpu_affinity("0-1023,0").unwrap_err();
        assert!(err.contains("more than 1024 CPUs"), "{err}");
        assert!(parse_cpu_affinity("0-1023").is_ok());
    }

    // ---- one CPU per worker ----

    #[test]
    fn auto_gives_worker_i_the_i_th_allowed_cpu_round_and_round() {
        let allowed = [2, 3, 7];
        assert_eq!(
            cpus_for_workers(&CpuAffinity::Auto, 1, &allowed),
            Ok(vec![2])
        );
        assert_eq!(
            cpus_for_workers(&CpuAffinity::Auto, 5, &allowed),
            Ok(vec![2, 3, 7, 2, 3])
        );
        assert!(cpus_for_workers(&CpuAffinity::Auto, 2, &[])
            .unwrap_err()
            .contains("no CPU"));
    }

    #[test]
    fn a_list_gives_worker_i_entry_i_and_extra_entries_are_unused() {
        let allowed = [0, 1];
        assert_eq!(
            cpus_for_workers(&list(&[1, 0]), 2, &allowed),
            Ok(vec![1, 0])
        );
        assert_eq!(
            cpus_for_workers(&list(&[1, 1]), 2, &allowed),
            Ok(vec![1, 1])
        );
        assert_eq!(cpus_for_workers(&list(&[0, 1]), 1, &allowed), Ok(vec![0]));
    }

    #[test]
    fn a_cpu_outside_the_allowed_set_is_refused_by_number_in_one_line() {
        let err = cpus_for_workers(&list(&[0, 5, 6]), 2, &[0, 1, 2, 4]).unwrap_err();
        assert_eq!(
            err,
            "--cpu-affinity 0,5-6: CPU 5 is not one this process may run on (allowed: 0-2,4)"
        );
    }

    #[test]
    fn fewer_listed_cpus_than_workers_is_refused_saying_how_to_wrap() {
        let err = cpus_for_workers(&list(&[0, 1]), 4, &[0, 1]).unwrap_err();
        assert!(
            err.starts_with("--cpu-affinity 0-1 names 2 CPU(s) for 4 workers")
                && err.contains("0,1,0,1")
                && err.contains("auto"),
            "{err}"
        );
    }

    #[test]
    fn a_cpu_list_is_written_as_the_kernel_writes_it() {
        assert_eq!(cpu_list(&[]), "");
        assert_eq!(cpu_list(&[0]), "0");
        assert_eq!(cpu_list(&[0, 1, 2, 4, 6, 7]), "0-2,4,6-7");
        assert_eq!(cpu_list(&[1, 0]), "1,0");
    }

    // ---- the kernel ----

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_thread_pinned_to_an_allowed_cpu_runs_there_alone() {
        // In a thread of its own, so the test process keeps its CPUs.
        std::thread::spawn(|| {
            let allowed = allowed_cpus().unwrap();
            assert!(!allowed.is_empty());
            let last = *allowed.last().unwrap();
            pin_to(last).unwrap();
            assert_eq!(allowed_cpus().unwrap(), [last]);
            // SAFETY: sched_getcpu only reports where this thread runs.
            assert_eq!(unsafe { libc::sched_getcpu() }, last as i32);
            assert!(pin_to(MAX_CPUS).is_err());
        })
        .join()
        .unwrap();
    }
}
