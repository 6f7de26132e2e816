//! The servers under test and the processes around them: the peer servers
//! (this bench binary re-executed with `--peer NAME`), starting each server
//! pinned to its core (optionally under `valgrind` or `strace`), stopping it
//! by its pid, and running the load generator against it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SERVER_CORE: usize = 0;
pub const LOAD_CORE: usize = 1;

// ---- peers ----

pub fn tokio_peer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("listening on tcp {}", listener.local_addr().unwrap());
        std::io::stdout().flush().unwrap();
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                continue;
            };
            let _ = socket.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if socket.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

pub fn threads_peer() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("listening on tcp {}", listener.local_addr().unwrap());
    std::io::stdout().flush().unwrap();
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        });
    }
}

// ---- process plumbing ----

/// Pin the child to `core` and give it all the descriptors it may have.
fn confine(cmd: &mut Command, core: Option<usize>) {
    // SAFETY: only async-signal-safe calls, in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
            if let Some(core) = core {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(core, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
            Ok(())
        });
    }
}

/// Whether the machine has two cores for server and load. Asked once, at
/// the first call: the answer must not change when this process later pins
/// itself to one core (which `available_parallelism` would then report).
pub fn two_cores() -> bool {
    static TWO_CORES: OnceLock<bool> = OnceLock::new();
    *TWO_CORES.get_or_init(|| {
        thread::available_parallelism()
            .map(|n| n.get() >= 2)
            .unwrap_or(false)
    })
}

/// Run `work` with this process pinned to `core` (for the in-process
/// client), then give the process back the cores it had.
pub fn pinned_to<T>(core: usize, work: impl FnOnce() -> T) -> T {
    if !two_cores() {
        return work();
    }
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: sched_{get,set}affinity on this process with masks we own.
    let saved = unsafe {
        let mut saved: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, size, &mut saved);
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut one);
        libc::sched_setaffinity(0, size, &one);
        saved
    };
    let result = work();
    // SAFETY: as above.
    unsafe { libc::sched_setaffinity(0, size, &saved) };
    result
}

/// A tool the server runs under, to count its work.
#[derive(Clone, Copy)]
pub enum Under<'a> {
    /// Nothing: the server alone.
    Plain,
    /// `valgrind --tool=callgrind`, writing its counts to this file.
    Callgrind(&'a Path),
    /// `strace -f -c`, writing its syscall summary to this file.
    Strace(&'a Path),
}

/// A running server; killed (by pid) on drop if not stopped before.
pub struct Server {
    pub name: &'static str,
    /// The server, or the tool it runs under.
    child: Child,
    /// Set under `strace`: the traced server is the tool's child.
    traced: bool,
    /// What the server prints after its startup line (echo-reactor's final stats).
    stdout: Option<BufReader<ChildStdout>>,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The server process's pid (not the tool's).
    pub fn pid(&self) -> u32 {
        let tool = self.child.id();
        if !self.traced {
            return tool; // valgrind runs the program in its own process
        }
        let children = format!("/proc/{tool}/task/{tool}/children");
        std::fs::read_to_string(children)
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(tool)
    }

    /// SIGTERM the server and wait for it (and its tool) to exit, so that
    /// echo-reactor prints its final stats and the tools write their
    /// reports; returns what the server printed after its startup line.
    pub fn stop(mut self) -> String {
        // SAFETY: signals only a process this bench started, by its pid.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let mut rest = String::new();
        if let Some(stdout) = self.stdout.as_mut() {
            let _ = stdout.read_to_string(&mut rest);
        }
        rest
    }
}

fn wait_until_accepting(addr: SocketAddr) {
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "server at {addr} never accepted"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Build the C peer from the repository (benches/c_epoll_echo.c) with
/// `cc -O2`; `None`, after one line on stderr saying why, when it cannot
/// be (no `cc`, or the build failed): the bench then runs without it.
pub fn c_peer_binary() -> Option<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/c_epoll_echo.c");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c_epoll_echo");
    let _ = std::fs::create_dir_all(out.parent()?);
    let built = Command::new("cc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(&source)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match built {
        Ok(output) if output.status.success() => Some(out),
        Ok(output) => {
            let why = String::from_utf8_lossy(&output.stderr);
            let first = why.lines().next().unwrap_or("no message");
            eprintln!(
                "c-epoll: skipped: `cc -O2 {}` failed ({}): {first}",
                source.display(),
                output.status
            );
            None
        }
        Err(e) => {
            eprintln!("c-epoll: skipped: no C compiler (`cc`: {e}); install one (e.g. gcc) to compare against the C floor");
            None
        }
    }
}

/// Start server `name` on an ephemeral port, pinned to the server core.
pub fn start(name: &'static str, c_binary: Option<&Path>) -> Server {
    start_under(name, c_binary, Under::Plain)
}

/// Start server `name` as `start` does, under `tool`.
pub fn start_under(name: &'static str, c_binary: Option<&Path>, tool: Under<'_>) -> Server {
    // The C peer takes a port and prints nothing; the others print
    // `listening on tcp ADDR` once they accept.
    let c_port = (name == "c-epoll").then(|| {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    });
    let (program, args): (PathBuf, Vec<String>) = match name {
        "echo-reactor" => (
            env!("CARGO_BIN_EXE_echo-reactor").into(),
            vec!["serve".into(), "--listen".into(), "127.0.0.1:0".into()],
        ),
        "tokio" | "threads" => (
            std::env::current_exe().unwrap(),
            vec!["--peer".into(), name.into()],
        ),
        "c-epoll" => (
            c_binary.expect("built").into(),
            vec![c_port.unwrap().to_string()],
        ),
        other => panic!("unknown server {other}"),
    };
    let mut cmd = match tool {
        Under::Plain => Command::new(&program),
        Under::Callgrind(out) => {
            let mut cmd = Command::new("valgrind");
            cmd.arg("--tool=callgrind")
                .arg(format!("--callgrind-out-file={}", out.display()))
                .arg(&program);
            cmd
        }
        Under::Strace(out) => {
            let mut cmd = Command::new("strace");
            cmd.args(["-f", "-c", "-o"]).arg(out).arg(&program);
            cmd
        }
    };
    cmd.args(&args);
    confine(&mut cmd, two_cores().then_some(SERVER_CORE));
    let mut child = cmd
        .stdout(if c_port.is_some() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stderr(Stdio::null())
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let traced = matches!(tool, Under::Strace(_));
    if let Some(port) = c_port {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_until_accepting(addr);
        return Server {
            name,
            child,
            traced,
            stdout: None,
            addr,
        };
    }
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on tcp ")
        .unwrap_or_else(|| panic!("{name}: no startup line"))
        .parse()
        .unwrap();
    Server {
        name,
        child,
        traced,
        stdout: Some(stdout),
        addr,
    }
}

/// `echo-reactor bench ... --json` against `server`, pinned to the load core.
pub fn load(server: &Server, args: &[String]) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_echo-reactor"));
    cmd.arg("bench")
        .args([
            "--addr",
            &server.addr.to_string(),
            "--server-pid",
            &server.pid().to_string(),
            "--json",
        ])
        .args(args)
        .env("RUST_LOG", "off");
    confine(&mut cmd, two_cores().then_some(LOAD_CORE));
    let out = cmd.output().expect("run echo-reactor bench");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{}: bench printed no report: {}",
            server.name,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // A peer's errors are findings to report; ours fail the bench.
    if server.name == "echo-reactor" {
        assert!(
            out.status.success(),
            "echo-reactor: errors in the run: {}",
            report["errors"]
        );
    }
    report
}

/// `echo-reactor bench` arguments for the closed-loop echo scenario.
pub fn echo_args(connections: usize, size: usize, duration: &str, warmup: &str) -> Vec<String> {
    let (connections, size) = (connections.to_string(), size.to_string());
    strings(&[
        "--connections",
        &connections,
        "--size",
        &size,
        "--duration",
        duration,
        "--warmup",
        warmup,
    ])
}

/// Owned command-line arguments from string slices.
pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}
