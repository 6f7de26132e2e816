//! `serve --cpu-affinity auto|LIST`, through the real binary: each worker
//! runs on its one CPU (as `/proc/PID/status` says), a replacement on the
//! same one, and a plan that cannot work is refused before anything runs;
//! with `--incoming-cpu`, a connection goes to the worker on its CPU.

mod support;

use std::os::unix::process::CommandExt;
use std::sync::mpsc::Receiver;
use std::thread;
use std::time::{Duration, Instant};

use echo_reactor::affinity::{allowed_cpus, cpu_list, pin_to, MAX_CPUS};
use echo_reactor::stats::stat_value;
use support::workers::*;
use support::*;

/// `Cpus_allowed_list` of `pid` (`0-1`, `1`), as the kernel writes it.
fn cpus_allowed_list(pid: i32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .map(|list| list.trim().to_string())
        .unwrap_or_default()
}

/// Wait until `pid` may run on exactly `cpu` (a process pins itself just
/// after it starts); panic with what it may run on after [`DEADLINE`].
fn wait_until_pinned(pid: i32, cpu: usize) {
    let start = Instant::now();
    while cpus_allowed_list(pid) != cpu.to_string() {
        assert!(
            start.elapsed() < DEADLINE,
            "pid {pid} runs on CPUs {:?}, not CPU {cpu} alone",
            cpus_allowed_list(pid)
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// The pid of worker `index`, from the supervisor's `worker N started (pid P)`.
fn worker_pid(stderr: &Receiver<String>, index: usize) -> i32 {
    let line = wait_for_line(stderr, &format!("worker {index} started (pid "));
    let pid = line.rsplit("(pid ").next().unwrap().trim_end_matches(')');
    pid.parse().unwrap_or_else(|_| panic!("{line}"))
}

/// `serve --workers 2 --cpu-affinity AFFINITY` running, and its workers'
/// pids in worker order.
fn two_pinned_workers(affinity: &str) -> (ServeProcess, Receiver<String>, [i32; 2]) {
    let (server, stderr) = spawn_workers(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--cpu-affinity",
        affinity,
    ]);
    let pids = [worker_pid(&stderr, 0), worker_pid(&stderr, 1)];
    (server, stderr, pids)
}

#[test]
fn auto_runs_worker_i_on_the_i_th_allowed_cpu_and_a_replacement_on_the_same_one() {
    let allowed = allowed_cpus().unwrap();
    let (server, stderr, pids) = two_pinned_workers("auto");
    // With one CPU allowed, both share it: auto goes round.
    let expected = [allowed[0], allowed[1 % allowed.len()]];
    for (pid, cpu) in pids.into_iter().zip(expected) {
        wait_until_pinned(pid, cpu);
    }
    // The supervisor itself is not pinned.
    assert_eq!(cpus_allowed_list(server.pid()), cpu_list(&allowed));
    echo_each(server.addr(0), 20);

    kill(pids[0], libc::SIGKILL);
    let replacement = worker_pid(&stderr, 0);
    wait_until_pinned(replacement, expected[0]);
    echo_each(server.addr(0), 20);
}

#[test]
fn a_list_runs_worker_i_on_entry_i() {
    let allowed = allowed_cpus().unwrap();
    let Some(&last) = allowed.get(1) else {
        eprintln!("one CPU allowed: no list of two different CPUs to give");
        return;
    };
    // Backwards, so worker 0 on the first allowed CPU proves nothing by chance.
    let list = format!("{last},{}", allowed[0]);
    let (server, _stderr, pids) = two_pinned_workers(&list);
    wait_until_pinned(pids[0], last);
    wait_until_pinned(pids[1], allowed[0]);
    echo_each(server.addr(0), 20);
}

#[test]
fn without_workers_the_one_process_is_pinned_to_the_first_entry() {
    let allowed = allowed_cpus().unwrap();
    let last = *allowed.last().unwrap();
    let server = ServeProcess::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--cpu-affinity",
            &last.to_string(),
        ],
        1,
    );
    // Pinned before it bound: the listening line came after.
    assert_eq!(cpus_allowed_list(server.pid()), last.to_string());
    echo_each(server.addr(0), 5);
}

/// `serve ARGS` run to its end: exit code and stderr.
fn refused(cmd: std::process::Command) -> (Option<i32>, String) {
    let (code, stderr) = run_briefly(cmd);
    (code, stderr.trim_end().to_string())
}

#[test]
fn a_cpu_this_process_may_not_run_on_is_refused_in_one_line_naming_it() {
    let allowed = allowed_cpus().unwrap();
    let outside = allowed.last().unwrap() + 1;
    assert!(outside < MAX_CPUS, "{allowed:?}");
    let list = format!("{},{outside}", allowed[0]);
    let (code, stderr) = refused(ServeProcess::command(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--cpu-affinity",
        &list,
    ]));
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "echo-reactor: --cpu-affinity {list}: CPU {outside} is not one this process may \
             run on (allowed: {})",
            cpu_list(&allowed)
        )
    );

    // What may run where is the process's own set (taskset, a cpuset), not
    // the machine's CPUs: a server limited to one CPU refuses the other.
    let Some(&other) = allowed.get(1) else {
        return;
    };
    let only = allowed[0];
    let other_text = other.to_string();
    let mut cmd =
        ServeProcess::command(&["--listen", "127.0.0.1:0", "--cpu-affinity", &other_text]);
    // SAFETY: between fork and exec, sched_setaffinity on the child itself
    // is async-signal-safe and touches only `set`, copied into the closure.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(only, &mut set);
            match libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let (code, stderr) = refused(cmd);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "echo-reactor: --cpu-affinity {other}: CPU {other} is not one this process may \
             run on (allowed: {only})"
        )
    );
}

#[test]
fn a_malformed_list_and_too_few_cpus_for_the_workers_are_refused() {
    let (code, stderr) = refused(ServeProcess::command(&[
        "--listen",
        "127.0.0.1:0",
        "--cpu-affinity",
        "0,,1",
    ]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value '0,,1' for '--cpu-affinity")
            && stderr.contains("'' is not a CPU number"),
        "{stderr}"
    );

    let allowed = allowed_cpus().unwrap();
    let (code, stderr) = refused(ServeProcess::command(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "3",
        "--cpu-affinity",
        &allowed[0].to_string(),
    ]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "echo-reactor: --cpu-affinity {} names 1 CPU(s) for 3 workers",
            allowed[0]
        )) && !stderr.contains('\n'),
        "{stderr}"
    );
}

/// Each worker's final `accepted`, by worker index, from the supervisor's
/// `worker N final stats ...` lines. Reads stderr until it closes: call
/// once the server exited.
fn accepted_per_worker(stderr: &Receiver<String>) -> Vec<(usize, u64)> {
    let mut accepted: Vec<(usize, u64)> = stderr
        .iter()
        .filter_map(|line| {
            let at = line.find("worker ")?;
            let (index, rest) = line[at + 7..].split_once(" final stats ")?;
            Some((index.parse().ok()?, stat_value(rest, "accepted")?))
        })
        .collect();
    accepted.sort();
    accepted
}

/// `count` connections echoing a line each, made from a thread pinned to `cpu`.
fn echo_from_cpu(addr: std::net::SocketAddr, cpu: usize, count: usize) {
    thread::spawn(move || {
        pin_to(cpu).unwrap();
        echo_each(addr, count);
    })
    .join()
    .unwrap();
}

#[test]
fn with_incoming_cpu_each_connection_goes_to_the_worker_on_its_clients_cpu() {
    let allowed = allowed_cpus().unwrap();
    let Some(&other) = allowed.get(1) else {
        eprintln!("one CPU allowed: nothing to steer between");
        return;
    };
    let first = allowed[0];
    // Worker 0 on `other`, worker 1 on `first`: not the order of the CPUs.
    let list = format!("{other},{first}");
    let (server, stderr) = spawn_workers(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--cpu-affinity",
        &list,
        "--incoming-cpu",
    ]);
    // Both workers' sockets steered (each logs it before it serves), in
    // whichever order the workers got there.
    let mut steered = Vec::new();
    while steered.len() < 2 {
        let line = wait_for_line(&stderr, "received (--incoming-cpu)");
        steered.push(line.contains(&format!("taking what CPU {first} ")));
    }
    steered.sort();
    assert_eq!(steered, [false, true], "one line per worker's CPU");
    // On loopback the kernel takes a SYN on the connecting thread's CPU.
    echo_from_cpu(server.addr(0), first, 30);
    echo_from_cpu(server.addr(0), other, 10);
    server.signal(libc::SIGTERM);
    let (status, _) = server.wait_exit();
    assert!(status.success(), "{status}");
    // By hash (each connection a coin toss), 10 and 30 would come in
    // fewer than 1 run in 1 000 (C(40,10) / 2^40).
    assert_eq!(accepted_per_worker(&stderr), [(0, 10), (1, 30)]);
}
