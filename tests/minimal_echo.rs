//! examples/minimal_echo.rs — the learner's first read — and its Python twin
//! examples/minimal_echo.py really are correct, and alike: the same client
//! script against both (100 clients; replies larger than the socket buffers
//! through slow readers, so writes come up short; half-close with replies
//! still owed) gets every byte back, in order. Out of descriptors, every
//! queued client is answered or refused, none left hanging.

mod support;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::{assert_same_bytes, connect_with_receive_buffer, pattern, DEADLINE};

/// `cargo test` builds the examples next to the test binaries:
/// target/<profile>/deps/<this test> -> target/<profile>/examples/minimal_echo.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("minimal_echo")
}

fn rust_twin() -> Command {
    Command::new(example_binary())
}

/// `python3 examples/minimal_echo.py`, or `None` (with a message) when
/// python3 is missing — a failure under CI, where it must be installed.
fn python_twin() -> Option<Command> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/minimal_echo.py");
    if Command::new("python3").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 is missing under CI"
        );
        eprintln!("skipped: python3 not found, so examples/minimal_echo.py was not run");
        return None;
    }
    let mut cmd = Command::new("python3");
    cmd.arg(script);
    Some(cmd)
}

/// A running twin, killed (by the handle we started it with) on drop.
struct Twin {
    child: Child,
    addr: SocketAddr,
}

impl Twin {
    fn start(mut cmd: Command) -> Twin {
        let mut child = cmd
            .arg("127.0.0.1:0")
            .stdout(Stdio::piped())
            .spawn()
            .expect("run the minimal echo example");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on tcp ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Twin { child, addr }
    }
}

impl Drop for Twin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One client: send `payload` whole (on a thread), half-close, and read the
/// echo — slowly when `slow`, through a 4 KiB receive window — until EOF.
fn echo_through_half_close(addr: SocketAddr, payload: Vec<u8>, slow: bool) -> Vec<u8> {
    let mut stream = connect_with_receive_buffer(addr, 4096);
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        writer.write_all(&payload).unwrap(); // the twins read everything: no block
        writer.shutdown(Shutdown::Write).unwrap(); // replies still owed
    });
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read: {e} after {} bytes", received.len()),
        }
        if slow {
            thread::sleep(Duration::from_micros(200)); // a slow reader
        }
    }
    sender.join().unwrap();
    received
}

/// The client script both twins face.
fn run_client_script(addr: SocketAddr) {
    const CLIENTS: usize = 100;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            // Four slow readers of 8 MiB (more than the server's send buffer
            // and our receive window hold: its writes come up short); the
            // rest 128 KiB each.
            let slow = id % 25 == 0;
            let size = if slow { 8 << 20 } else { 128 << 10 };
            let payload = pattern(size, id as u64);
            thread::spawn(move || {
                (
                    echo_through_half_close(addr, payload.clone(), slow),
                    payload,
                )
            })
        })
        .collect();
    for (id, client) in clients.into_iter().enumerate() {
        let (received, payload) = client.join().unwrap();
        assert_eq!(received.len(), payload.len(), "client {id}: length");
        assert_same_bytes(&received, &payload);
    }
}

#[test]
fn the_rust_minimal_echo_returns_every_byte_to_every_client() {
    let twin = Twin::start(rust_twin());
    run_client_script(twin.addr);
}

#[test]
fn the_python_minimal_echo_returns_every_byte_to_every_client() {
    let Some(cmd) = python_twin() else { return };
    let twin = Twin::start(cmd);
    run_client_script(twin.addr);
}

/// Start `cmd` with its open-file limit at `limit` (set in the child).
fn with_open_file_limit(mut cmd: Command, limit: u64) -> Command {
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in pre_exec.
    unsafe {
        cmd.pre_exec(move || {
            let rl = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// 40 clients connect at once to a twin that can hold about a dozen: each
/// is answered (its line comes back) or refused (EOF or reset, no reply) —
/// none waits past the deadline, which is what a queued client did when
/// the accept loop ended on EMFILE (edge-triggered: no new event came).
fn every_queued_client_is_answered_or_refused(cmd: Command) {
    let twin = Twin::start(with_open_file_limit(cmd, 24));
    let mut streams: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(twin.addr).expect("connect (the backlog holds them)"))
        .collect();
    let (mut answered, mut refused) = (0, 0);
    for (id, stream) in streams.iter_mut().enumerate() {
        let message = format!("client {id}\n");
        let _ = stream.write_all(message.as_bytes()); // a refused one may reset
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let start = Instant::now();
        let mut reply = vec![0u8; message.len()];
        match stream.read_exact(&mut reply) {
            Ok(()) => {
                assert_eq!(reply, message.as_bytes(), "client {id}");
                answered += 1;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
                ) =>
            {
                refused += 1
            }
            Err(e) => panic!("client {id} left hanging ({e}) after {:?}", start.elapsed()),
        }
    }
    assert!(answered > 0, "nobody answered");
    assert!(refused > 0, "nobody refused: was the limit applied?");
}

#[test]
fn out_of_descriptors_the_rust_minimal_echo_answers_or_refuses_every_client() {
    every_queued_client_is_answered_or_refused(rust_twin());
}

#[test]
fn out_of_descriptors_the_python_minimal_echo_answers_or_refuses_every_client() {
    let Some(cmd) = python_twin() else { return };
    every_queued_client_is_answered_or_refused(cmd);
}
