//! The hold scenario's memory per connection, checked against a server
//! whose cost per connection is known: one that holds exactly K bytes for
//! each connection, over several worker processes
//! (`tests/support/known_cost_server.py`).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use support::{bench, required_tool};

/// The fixture's own bytes per connection.
const PER_CONNECTION: u64 = 32 * 1024;

/// What each of its workers maps of a shared file on its first connection.
const SHARED_BYTES: usize = 8 * 1024 * 1024;

/// The fixture server, stopped (with its workers) when dropped.
struct KnownCostServer {
    child: Child,
    addr: String,
    shared_file: std::path::PathBuf,
}

impl KnownCostServer {
    fn start(python: &std::path::Path, workers: u32) -> KnownCostServer {
        let shared_file =
            std::env::temp_dir().join(format!("known-cost-shared-{}", std::process::id()));
        std::fs::write(&shared_file, vec![7u8; SHARED_BYTES]).unwrap();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/known_cost_server.py"
        );
        let mut child = Command::new(python)
            .arg(script)
            .arg(workers.to_string())
            .arg(PER_CONNECTION.to_string())
            .arg(&shared_file)
            .arg(SHARED_BYTES.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3");
        // Printed once every worker is forked.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on tcp ")
            .unwrap_or_else(|| panic!("not a listening line: {line:?}"))
            .to_string();
        KnownCostServer {
            child,
            addr,
            shared_file,
        }
    }
}

impl Drop for KnownCostServer {
    fn drop(&mut self) {
        // SAFETY: signals only the child we started and have not waited for;
        // on SIGTERM it stops its workers, then exits.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.shared_file);
    }
}

#[test]
fn hold_reports_what_a_server_of_several_workers_holds_per_connection() {
    let Some(python) = required_tool("python3", "python3") else {
        return;
    };
    let server = KnownCostServer::start(&python, 3);
    let pid = server.child.id().to_string();
    let out = bench(&[
        "--json",
        "--addr",
        &server.addr,
        "--server-pid",
        &pid,
        "--server-fresh",
        "--scenario",
        "hold",
        "--connections",
        "300",
        "--processes",
        "2",
        "--duration",
        "0.3",
    ]);
    let r: Value = serde_json::from_slice(&out.stdout).expect("one JSON report");
    assert!(out.status.success(), "{r}");
    let hold = &r["hold"];
    assert_eq!(hold["server_processes_before"], 4, "{r}");
    assert_eq!(hold["server_processes_idle"], 4, "{r}");
    // Read once every connection has answered, so every one has been
    // accepted (the "idle" reading comes when the bench's connects are up,
    // which can be before a slow server has accepted them all).
    let per_conn = hold["rss_per_conn_after_echo_bytes"]
        .as_f64()
        .unwrap_or_else(|| panic!("a figure: {r}"));
    // K, plus what Python itself keeps per connection (a socket object
    // and a few table entries: well under 10 % of 32 KiB). The 3 × 8 MiB
    // of shared pages the workers mapped are no connection's: counted,
    // they would add 80 KiB to each of the 300.
    let k = PER_CONNECTION as f64;
    assert!(
        (k..k * 1.1).contains(&per_conn),
        "{per_conn} B per connection, known to be {k} B: {r}"
    );
}
