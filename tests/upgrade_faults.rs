//! Upgrading without downtime when something goes wrong around it: the
//! old supervisor killed mid-upgrade, an operator's repeated signals to a
//! draining old generation, a second server started on the same pid file,
//! a rollback with clients on the new generation. Each test runs the real
//! binary from a scratch copy, as `tests/upgrade.rs` does.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use support::upgrade::*;
use support::workers::*;
use support::*;

/// Wait until the file at `path` holds a pid (written by a wrapper script).
fn wait_for_pid_in(path: &Path) -> i32 {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Ok(pid) = text.trim().parse() {
            return pid;
        }
        assert!(start.elapsed() < DEADLINE, "no pid in {}", path.display());
        thread::sleep(Duration::from_millis(10));
    }
}

/// Put a wrapper at the scratch binary's place: it writes its pid to the
/// returned file, waits for the returned "go" file, then runs the real
/// binary (moved aside) as itself, with every descriptor it was handed.
fn install_gated_binary(scratch: &Scratch) -> (PathBuf, PathBuf) {
    let real = scratch.0.join("real");
    std::fs::rename(scratch.binary(), &real).unwrap();
    let pid = scratch.0.join("new.pid");
    let go = scratch.0.join("go");
    scratch.install_script(&format!(
        "echo $$ > '{}'\nwhile [ ! -e '{}' ]; do sleep 0.02; done\nexec '{}' \"$@\"",
        pid.display(),
        go.display(),
        real.display()
    ));
    (pid, go)
}

/// One line over a new Unix connection to `path`, echoed.
fn echo_unix(path: &Path, line: &str) -> UnixStream {
    let mut stream = UnixStream::connect(path).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(line.as_bytes()).unwrap();
    let mut reply = vec![0u8; line.len()];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(reply, line.as_bytes());
    stream
}

#[test]
fn the_old_supervisor_killed_mid_upgrade_leaves_the_new_generation_serving() {
    let scratch = Scratch::new("upgrade-old-killed");
    let (mut server, stderr) =
        spawn_from(&scratch, &["--listen", "127.0.0.1:0", "--workers", "2"], 1);
    let addr = server.addr(0);
    wait_for_children(server.pid(), 2);
    let (new_pid, go) = install_gated_binary(&scratch);
    server.signal(libc::SIGUSR2);
    expect_line(&stderr, "upgrade: starting");
    let new = Generation(wait_for_pid_in(&new_pid));
    // The old supervisor dies (OOM killer, a crash) while the new
    // generation starts: its pipe's read end is gone.
    server.signal(libc::SIGKILL);
    wait_for_exit(&mut server);
    std::fs::write(&go, "").unwrap();
    expect_line(&stderr, "the old generation is gone");
    // The new generation carries on as the live one, named by the pid file.
    drop(echo_once(addr, "served on\n"));
    assert!(Path::new(&format!("/proc/{}", new.0)).exists());
    assert_eq!(scratch.pid_in_file(), new.0);
}

#[test]
fn a_second_sigterm_to_a_draining_old_worker_leaves_the_unix_socket_file_to_the_new_generation() {
    let scratch = Scratch::new("upgrade-unix-twice");
    let unix = scratch.0.join("echo.sock");
    let unix_arg = unix.display().to_string();
    let (mut server, stderr) = spawn_from(
        &scratch,
        &["--listen", "127.0.0.1:0", "--unix", &unix_arg],
        2,
    );
    let old_worker = wait_for_children(server.pid(), 1)[0];
    let mut held = echo_unix(&unix, "before\n");
    let _new = upgrade(&server, &stderr);
    expect_line(&stderr, "SIGQUIT: draining");
    // In the middle of a message: the old worker lingers on it at shutdown.
    held.write_all(b"partial").unwrap();
    // An operator hurrying the drain: SIGTERM, then SIGTERM again.
    kill(old_worker, libc::SIGTERM);
    expect_line(&stderr, "SIGTERM during the drain: shutting down");
    kill(old_worker, libc::SIGTERM);
    expect_line(&stderr, "SIGTERM again during shutdown: exiting now");
    assert_eq!(wait_for_exit(&mut server).code(), Some(0));
    // The file is the new generation's: it is still there, and new
    // clients reach the new generation through it.
    assert!(unix.exists(), "the old worker removed the Unix socket file");
    drop(echo_unix(&unix, "after\n"));
}

#[test]
fn at_the_drain_timeout_an_idle_connection_is_half_closed_and_a_request_crossing_it_draws_no_reset()
{
    let scratch = Scratch::new("upgrade-drain-idle");
    let (server, stderr) = spawn_from(
        &scratch,
        &["--listen", "127.0.0.1:0", "--drain-timeout", "2"],
        1,
    );
    let addr = server.addr(0);
    wait_for_children(server.pid(), 1);
    // A pooled client: one request, then idle (far longer than the
    // second after which a shutdown on a signal would call it idle).
    let mut pooled = echo_once(addr, "before\n");
    let _new = upgrade(&server, &stderr);
    expect_line(&stderr, "SIGQUIT: draining");
    let line = expect_line(&stderr, "stopped accepting;");
    assert!(line.contains("1 connection lingering"), "{line}");
    // The server's end: a FIN (half-close), our reads see the end.
    pooled.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(pooled.read(&mut byte).unwrap(), 0, "an EOF");
    // The pool's next request crosses it: read and dropped by the
    // lingering server, not answered with a reset.
    pooled.write_all(b"crossing\n").unwrap();
    pooled.write_all(b"crossing again\n").unwrap();
    match pooled.read(&mut byte) {
        Ok(0) => {}
        other => panic!("after the crossing request: {other:?}, not the EOF again"),
    }
}

#[test]
fn a_second_server_started_on_the_same_pid_file_is_refused_before_it_binds() {
    let scratch = Scratch::new("upgrade-pid-twice");
    let (server, _stderr) = spawn_from(&scratch, &["--listen", "127.0.0.1:0"], 1);
    let addr = server.addr(0).to_string();
    // The same unit started twice, a script run again: same file, the same
    // address or another. The file is held (locked): refused in one line
    // naming the holder, nothing bound, the file untouched.
    for listen in [addr.as_str(), "127.0.0.1:0"] {
        let mut again = std::process::Command::new(scratch.binary());
        again
            .args(["serve", "--listen", listen, "--pid-file"])
            .arg(scratch.pid_file());
        let (code, stderr) = run_briefly(again);
        assert_eq!(code, Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        let holder = format!("held by a running server (pid {})", server.pid());
        assert!(stderr.contains(&holder), "{stderr}");
        assert_eq!(
            scratch.pid_in_file(),
            server.pid(),
            "the file names the first"
        );
    }
}

#[test]
fn the_pid_file_lock_passes_to_the_new_generation_and_outlives_the_old_one() {
    let scratch = Scratch::new("upgrade-pid-lock");
    let (mut server, stderr) = spawn_from(&scratch, &["--listen", "127.0.0.1:0"], 1);
    wait_for_children(server.pid(), 1);
    let new = upgrade(&server, &stderr);
    assert_eq!(wait_for_exit(&mut server).code(), Some(0));
    assert_eq!(scratch.pid_in_file(), new.0);
    let mut again = std::process::Command::new(scratch.binary());
    again
        .args(["serve", "--listen", "127.0.0.1:0", "--pid-file"])
        .arg(scratch.pid_file());
    let (code, stderr) = run_briefly(again);
    assert_eq!(code, Some(1), "{stderr}");
    let holder = format!("held by a running server (pid {})", new.0);
    assert!(stderr.contains(&holder), "{stderr}");
}

#[test]
fn a_supervisor_stopped_by_a_second_signal_removes_its_pid_file() {
    let scratch = Scratch::new("upgrade-pid-exit-now");
    let (mut server, stderr) = spawn_from(&scratch, &["--listen", "127.0.0.1:0"], 1);
    let addr = server.addr(0);
    wait_for_children(server.pid(), 1);
    // In the middle of a message: the worker lingers on it at shutdown.
    let mut held = echo_once(addr, "before\n");
    held.write_all(b"partial").unwrap();
    server.signal(libc::SIGTERM);
    expect_line(&stderr, "shutting down 1 workers");
    server.signal(libc::SIGTERM);
    expect_line(&stderr, "again during shutdown");
    wait_for_exit(&mut server);
    assert!(!scratch.pid_file().exists(), "the pid file was left behind");
}

#[test]
fn a_rollback_tells_the_new_generation_to_drain_instead_of_killing_it() {
    let scratch = Scratch::new("upgrade-rollback-drains");
    let (server, stderr) = spawn_from(&scratch, &["--listen", "127.0.0.1:0"], 1);
    let addr = server.addr(0);
    wait_for_children(server.pid(), 1);
    // A new generation that never says it accepts, and notes how it is
    // told to go (a SIGKILL leaves no note).
    let told = scratch.0.join("told");
    scratch.install_script(&format!(
        "trap 'echo QUIT > \"{}\"; exit 0' QUIT\nwhile :; do sleep 0.05; done",
        told.display()
    ));
    server.signal(libc::SIGUSR2);
    // After the readiness timeout (10 s).
    let line = expect_line(&stderr, "upgrade: rolled back");
    assert!(
        line.contains("not accepting within") && line.contains("drains the connections"),
        "{line}"
    );
    let line = expect_line(&stderr, "rolled-back generation pid");
    assert!(line.contains("exited (exit status: 0)"), "{line}");
    assert_eq!(std::fs::read_to_string(&told).unwrap(), "QUIT\n");
    assert_eq!(scratch.pid_in_file(), server.pid());
    drop(echo_once(addr, "served on\n"));
}

#[test]
fn sigquit_to_the_supervisor_drains_every_worker_then_exits() {
    let scratch = Scratch::new("upgrade-sigquit");
    let (mut server, stderr) =
        spawn_from(&scratch, &["--listen", "127.0.0.1:0", "--workers", "2"], 1);
    let addr = server.addr(0);
    wait_for_children(server.pid(), 2);
    let mut held = echo_once(addr, "before\n");
    server.signal(libc::SIGQUIT);
    expect_line(&stderr, "SIGQUIT: draining 2 workers, then exiting");
    expect_line(&stderr, "SIGQUIT: draining: stopped accepting");
    expect_line(&stderr, "SIGQUIT: draining: stopped accepting");
    // What is held is served on; nobody accepts any more.
    held.write_all(b"during\n").unwrap();
    assert_eq!(read_exact(&mut held, 7), b"during\n");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting"
    );
    drop(held);
    assert_eq!(wait_for_exit(&mut server).code(), Some(0));
    assert!(!scratch.pid_file().exists());
}

#[test]
fn sigusr2_to_a_supervisor_running_as_pid_1_is_refused_in_one_line() {
    let Some(unshare) = required_tool("unshare", "util-linux") else {
        return;
    };
    // PID 1 of a new pid namespace, as in a container without an init.
    let namespaced = ["--pid", "--fork", "--kill-child", "--mount-proc"];
    let permitted = std::process::Command::new(&unshare)
        .args(namespaced)
        .arg("true")
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !permitted {
        eprintln!("SKIPPED: unshare --pid is not permitted here (it needs CAP_SYS_ADMIN)");
        return;
    }
    let scratch = Scratch::new("upgrade-pid-1");
    scratch.install_real_binary();
    let mut cmd = std::process::Command::new(&unshare);
    cmd.args(namespaced)
        .arg(scratch.binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--pid-file"])
        .arg(scratch.pid_file())
        .stdout(std::process::Stdio::piped())
        .env("RUST_LOG", "info");
    let (server, stderr) = spawn_workers_with(cmd, 1);
    expect_line(&stderr, "workers accepting");
    let supervisor = wait_for_children(server.pid(), 1)[0];
    kill(supervisor, libc::SIGUSR2);
    let line = expect_line(&stderr, "SIGUSR2 ignored");
    assert!(line.contains("PID 1"), "{line}");
    drop(echo_once(server.addr(0), "served on\n"));
}

#[test]
fn a_draining_old_worker_whose_supervisor_dies_serves_its_connections_on() {
    let scratch = Scratch::new("upgrade-orphaned-drain");
    let (mut server, stderr) = spawn_from(&scratch, &["--listen", "127.0.0.1:0"], 1);
    let addr = server.addr(0);
    wait_for_children(server.pid(), 1);
    let mut held = echo_once(addr, "before\n");
    let _new = upgrade(&server, &stderr);
    expect_line(&stderr, "SIGQUIT: draining");
    // The old supervisor dies during the drain.
    server.signal(libc::SIGKILL);
    wait_for_exit(&mut server);
    // Its worker finishes the drain: the held connection is still served.
    for i in 0..3 {
        let line = format!("after the supervisor {i}\n");
        held.write_all(line.as_bytes()).unwrap();
        assert_eq!(read_exact(&mut held, line.len()), line.as_bytes());
    }
}

#[test]
fn an_upgrade_to_the_file_already_running_says_so() {
    let scratch = Scratch::new("upgrade-same-file");
    let (server, stderr) = spawn_from(&scratch, &["--listen", "127.0.0.1:0"], 1);
    wait_for_children(server.pid(), 1);
    // No new release installed: the file on disk is the running image.
    server.signal(libc::SIGUSR2);
    expect_line(&stderr, "the new generation runs the same release");
    let _new = accepting(&stderr);
}

#[test]
fn a_sigquit_sent_before_the_supervisor_handles_it_is_handled_once_it_does() {
    use std::os::unix::process::CommandExt;
    let scratch = Scratch::new("upgrade-early-quit");
    scratch.install_real_binary();
    let mut cmd = std::process::Command::new(scratch.binary());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--pid-file"])
        .arg(scratch.pid_file())
        .stdout(std::process::Stdio::piped())
        .env("RUST_LOG", "info");
    // As an old supervisor starts a new one: SIGQUIT held back, and here
    // already sent (a rollback's, before the handlers are in place).
    // SAFETY: between fork and exec, only async-signal-safe calls.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGQUIT);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), libc::SIGQUIT);
            Ok(())
        });
    }
    let (mut server, stderr) = spawn_workers_with(cmd, 1);
    expect_line(&stderr, "SIGQUIT: draining 1 workers, then exiting");
    assert_eq!(wait_for_exit(&mut server).code(), Some(0));
}

#[test]
fn a_new_generation_dying_during_the_drain_is_logged_as_an_error_naming_the_outage() {
    let scratch = Scratch::new("upgrade-successor-dies");
    let (server, stderr) = spawn_from(&scratch, &["--listen", "127.0.0.1:0"], 1);
    let addr = server.addr(0);
    wait_for_children(server.pid(), 1);
    let mut held = echo_once(addr, "before\n");
    let new = upgrade(&server, &stderr);
    expect_line(&stderr, "SIGQUIT: draining");
    kill(new.0, libc::SIGKILL);
    let line = expect_line(&stderr, &format!("the new generation (pid {})", new.0));
    assert!(
        line.contains("ERROR") && line.contains("nobody accepts new connections"),
        "{line}"
    );
    // The old worker finishes its drain all the same.
    held.write_all(b"still held\n").unwrap();
    assert_eq!(read_exact(&mut held, 11), b"still held\n");
}

#[test]
fn a_stop_during_the_drain_shuts_the_old_generation_down_gracefully_too() {
    let scratch = Scratch::new("upgrade-stop-in-drain");
    let (mut server, stderr) = spawn_from(&scratch, &["--listen", "127.0.0.1:0"], 1);
    let addr = server.addr(0);
    wait_for_children(server.pid(), 1);
    let mut held = echo_once(addr, "before\n");
    let new = upgrade(&server, &stderr);
    expect_line(&stderr, "SIGQUIT: draining");
    // A service manager's stop: SIGTERM to the main process, the new one.
    kill(new.0, libc::SIGTERM);
    expect_line(&stderr, "passed on to the old generation");
    // The old worker shuts down as on SIGTERM: the held connection, owed
    // nothing, gets its end of stream (not a reset), and the old exits.
    expect_line(&stderr, "SIGTERM during the drain: shutting down");
    held.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(held.read(&mut byte).unwrap(), 0, "an end of stream");
    drop(held);
    assert_eq!(wait_for_exit(&mut server).code(), Some(0));
}
