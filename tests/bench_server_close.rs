//! A server that closes the bench's connections cleanly mid-run (it is
//! draining, as in a rolling restart) is reported as `server_closed`: not
//! as a reset, a mismatch, or messages timed out.

mod support;

use std::process::{Command, Stdio};

use echo_reactor::protocol::Echo;
use echo_reactor::Config;
use support::TestServer;

#[test]
fn a_draining_server_closing_the_bench_connections_is_reported_as_server_closed() {
    const CONNECTIONS: u64 = 8;
    let server = TestServer::start(Config::default(), Echo);
    let bench = Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
        .args(["bench", "--addr", &server.addr.to_string()])
        .args(["--connections", &CONNECTIONS.to_string()])
        // Long enough to be still running when the server drains; the
        // test does not wait for it (the connections end the run's work).
        .args(["--duration", "3", "--warmup", "0", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Every connection is up and has been answered at least once.
    server.wait_for("the bench to connect and exchange messages", |s| {
        s.accepted == CONNECTIONS && s.bytes_out > 64 * CONNECTIONS
    });
    // The graceful shutdown: stop reading, send the owed replies, close.
    let stats = server.stop();
    let out = bench.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let errors = &report["errors"];
    assert_eq!(errors["server_closed"], CONNECTIONS, "{report}\n{stats}");
    assert_eq!(errors["mismatch"], 0, "{report}");
    assert_eq!(errors["reset"], 0, "{report}");
    assert_eq!(errors["timeout"], 0, "{report}");
    // Still a failed run: the bench did not get the load it was asked for.
    assert!(!out.status.success());
}
