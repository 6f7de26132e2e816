//! The server and every worker run with transparent huge pages off for
//! themselves, whatever the machine's setting: an idle connection costs
//! tens of bytes, and a 2 MiB page per touched byte would dwarf it.

mod support;

use support::workers::{spawn_workers, wait_for_children};

/// `THP_enabled` of `/proc/PID/status`: 0 once the process opted out
/// (`prctl(PR_SET_THP_DISABLE)`), 1 otherwise.
fn thp_enabled(pid: i32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("THP_enabled:"))
        .map(|v| v.trim().to_string())
        .expect("THP_enabled in /proc/PID/status (Linux 5.0+)")
}

#[test]
fn the_supervisor_and_its_workers_opt_out_of_transparent_huge_pages() {
    // Started by a process that opted out already, the server would
    // inherit it: nothing to tell apart then.
    if thp_enabled(std::process::id() as i32) == "0" {
        eprintln!("SKIPPED: this test runs with transparent huge pages off already");
        return;
    }
    let (server, _stderr) = spawn_workers(&["--listen", "127.0.0.1:0", "--workers", "2"]);
    let supervisor = server.pid();
    let workers = wait_for_children(supervisor, 2);
    for pid in std::iter::once(supervisor).chain(workers) {
        assert_eq!(thp_enabled(pid), "0", "process {pid}");
    }
}
