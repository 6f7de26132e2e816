//! Churn soak: thousands of connections with random behaviours against
//! in-process servers (echo under a tight memory budget, echo with big
//! transfers, greet, json, echo behind the handshake), beside well-behaved
//! clients whose every reply is checked. Afterwards everything must be
//! back where it started: no connection open, no byte held, no descriptor
//! leaked, resident memory within a stated margin.
//!
//! Checked behaviours (every reply compared, and how the stream ended):
//! echo with small messages, and medium ones on the server under memory
//! pressure (paused at worst, never evicted: their output keeps moving);
//! big messages; half-close with replies owed; slow readers; greet with
//! `exit` (also with input still arriving after it, and with the replies
//! read only after the idle timeout passed mid-linger); a line past
//! `--max-line`; good and garbage JSON (the error, then EOF, never RST);
//! the handshake answered right or wrong. Misbehaving: resets mid-send
//! (`SO_LINGER` 0), never-readers (some flooding until the server stops
//! reading them), idle clients, clients that abandon or never answer the
//! handshake. A misbehaving client is parked, still open, until the server
//! closes it on its own (stall, idle, eviction, handshake deadline); the
//! test waits for that, with a deadline.
//!
//! It runs for `ECHO_SOAK_SECS` seconds (default 15) of churn, then ends
//! and checks within a few seconds more. `ECHO_SOAK_SEED` picks the seed
//! (printed with the summary): each client thread plays the same sequence
//! of behaviours for a seed, however the threads interleave. The only test
//! in this binary, so the process's descriptor count is its alone.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use echo_reactor::fdlimit::open_fds;
use echo_reactor::protocol::{AuthKey, Authenticated, Echo, Greet, Json, CHALLENGE_BYTES, WELCOME};
use echo_reactor::reactor::SCRATCH_BYTES;
use echo_reactor::{CloseReason, Config, StatsSnapshot};
use support::*;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// Client threads; mostly blocked in `poll`, so more than the cores.
const CLIENT_THREADS: u64 = 6;
const DEFAULT_SECS: u64 = 15;
const DEFAULT_SEED: u64 = 0x5eed_c4a2_2024;
/// The handshake deadline of the `auth` server.
const HANDSHAKE: Duration = Duration::from_secs(1);
/// Idle timeout of the servers that have one (greet, the budget echo).
const IDLE: Duration = Duration::from_secs(2);
/// How long a parked client may wait for the server to close it: the
/// longest server-side bound (a linger, 5 s) plus room for a loaded machine.
const SERVER_CLOSES_WITHIN: Duration = Duration::from_secs(20);
/// A parked client that has not seen the server close it after this long
/// reads what waits for it (see `server_closed`).
const DRAIN_AFTER: Duration = Duration::from_secs(3);
/// At most one flood this often, of this many never-readers: each pushes
/// several MiB into the kernel's buffers before the server holds any.
const FLOOD_EVERY: Duration = Duration::from_secs(1);
const FLOODERS: usize = 4;
/// Resident memory may end this far above where it began. Connection
/// buffers are all freed (held bytes return to 0, checked exactly), but
/// malloc keeps freed memory in its arenas (one per client thread, one
/// per server), and glibc raises its mmap threshold after large frees, so
/// later large buffers come from those arenas and stay resident. Measured
/// on this test: +3.2 to +3.6 MiB, the same after 15 s (10 000
/// connections) as after 60 s (57 000): retention, not growth. 16 MiB
/// leaves room for a noisier allocator history while catching a leak of
/// a few hundred bytes per connection in a 60 s run.
const RSS_MARGIN: u64 = 16 * MIB as u64;

const AUTH_KEY: &[u8] = b"churn soak key";
/// `--max-memory` of the budget echo server.
const BUDGET: usize = 256 * KIB;

/// The servers, each configured to exercise its own paths.
struct Servers {
    /// Echo with a 256 KiB memory budget and a 32 KiB `--max-buffered`:
    /// a flood of four never-readers pushes it into pressure and eviction.
    budget: TestServer,
    /// Echo with the defaults (64 MiB budget): big transfers, slow readers.
    big: TestServer,
    /// Greet, `--max-line 256`, with an idle timeout.
    greet: TestServer,
    /// JSON.
    json: TestServer,
    /// Echo behind the HMAC handshake.
    auth: TestServer,
}

impl Servers {
    fn start() -> Servers {
        let stall = Some(Duration::from_secs(2));
        let budget = Config {
            max_memory: BUDGET,
            max_buffered: 32 * KIB,
            stall_timeout: Some(Duration::from_secs(1)),
            idle_timeout: Some(IDLE),
            ..Config::default()
        };
        let big = Config {
            stall_timeout: stall,
            ..Config::default()
        };
        let greet = Config {
            max_line: 256,
            idle_timeout: Some(IDLE),
            stall_timeout: stall,
            ..Config::default()
        };
        let json = Config {
            max_line: 4 * KIB,
            stall_timeout: stall,
            ..Config::default()
        };
        let auth = Config {
            stall_timeout: stall,
            ..Config::default()
        };
        let key = AuthKey::new(AUTH_KEY).unwrap();
        Servers {
            budget: TestServer::start(budget, Echo),
            big: TestServer::start(big, Echo),
            greet: TestServer::start(greet, Greet::default()),
            json: TestServer::start(json, Json),
            auth: TestServer::start(auth, Authenticated::new(Echo, key, HANDSHAKE)),
        }
    }

    fn all(&self) -> [(&'static str, &TestServer); 5] {
        [
            ("budget echo", &self.budget),
            ("big echo", &self.big),
            ("greet", &self.greet),
            ("json", &self.json),
            ("auth echo", &self.auth),
        ]
    }
}

/// The addresses client threads need (a `TestServer` stays on the main thread).
#[derive(Clone, Copy)]
struct Addrs {
    budget: SocketAddr,
    big: SocketAddr,
    greet: SocketAddr,
    json: SocketAddr,
    auth: SocketAddr,
}

// ---- a tiny seeded generator (no rand crate needed) ----

/// xorshift64* (Vigna): small, fast, and reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `low..=high`.
    fn between(&mut self, low: usize, high: usize) -> usize {
        low + (self.next() % (high - low + 1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
    /// Random bytes, `low..=high` of them.
    fn bytes_between(&mut self, low: usize, high: usize) -> Vec<u8> {
        let len = self.between(low, high);
        self.bytes(len)
    }
    fn word(&mut self) -> String {
        let len = self.between(1, 12);
        (0..len)
            .map(|_| (b'a' + (self.next() % 26) as u8) as char)
            .collect()
    }
    /// A name for greet: a word with a capital, as names have. Never
    /// `exit`, which greet takes as the client asking to leave: a lowercase
    /// word is `exit` once in 12 x 26^4 (5.5 million), about once in a dozen
    /// soaks of this length, and the answers after it never come.
    fn name(&mut self) -> String {
        let word = self.word();
        word[..1].to_uppercase() + &word[1..]
    }
}

// ---- talking to a server ----

/// How a conversation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The bytes wanted arrived.
    Enough,
    /// The server closed its side (read returned 0).
    Eof,
    /// `ECONNRESET`.
    Reset,
    /// Anything else, or the deadline passed.
    Failed(ErrorKind),
}

#[derive(Debug, Clone, Copy)]
enum Want {
    Bytes(usize),
    Eof,
}

/// Write `payload` (then shut down our side, if `shutdown`), reading all
/// the while, until `want` is met or the stream ends. Non-blocking with
/// `poll`, so a reply larger than the socket buffers cannot deadlock
/// against our own writes. A write error only stops the writing: how the
/// reading side ends tells what happened. A `slow` reader takes 4 KiB at
/// a time and dawdles a millisecond after each read.
fn converse(
    stream: &TcpStream,
    payload: &[u8],
    shutdown: bool,
    want: Want,
    slow: bool,
) -> (Vec<u8>, Ended) {
    stream.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    let mut sent = 0;
    let mut writing = !payload.is_empty();
    if !writing && shutdown {
        let _ = stream.shutdown(Shutdown::Write);
    }
    let mut buf = vec![0u8; 64 * KIB];
    let limit = if slow { 4 * KIB } else { buf.len() };
    loop {
        if let Want::Bytes(n) = want {
            if got.len() >= n {
                return (got, Ended::Enough);
            }
        }
        let mut moved = false;
        if writing {
            match (&*stream).write(&payload[sent..]) {
                Ok(n) => {
                    sent += n;
                    moved = true;
                    if sent == payload.len() {
                        writing = false;
                        if shutdown {
                            let _ = stream.shutdown(Shutdown::Write);
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => moved = true,
                Err(_) => writing = false,
            }
        }
        match (&*stream).read(&mut buf[..limit]) {
            Ok(0) => return (got, Ended::Eof),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                moved = true;
                if slow {
                    thread::sleep(Duration::from_millis(1)); // the behaviour, not a wait
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => moved = true,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, Ended::Reset),
            Err(e) => return (got, Ended::Failed(e.kind())),
        }
        if !moved {
            let now = Instant::now();
            if now >= deadline {
                return (got, Ended::Failed(ErrorKind::TimedOut));
            }
            let events = libc::POLLIN | if writing { libc::POLLOUT } else { 0 };
            poll_socket(stream, events, deadline - now);
        }
    }
}

/// `converse` and compare: the reply must be `expected`, ended as `how`.
fn expect(
    stream: &TcpStream,
    payload: &[u8],
    shutdown: bool,
    expected: &[u8],
    how: Ended,
) -> Result<(), String> {
    let want = match how {
        Ended::Enough => Want::Bytes(expected.len()),
        _ => Want::Eof,
    };
    let (got, ended) = converse(stream, payload, shutdown, want, false);
    check_reply(&got, ended, expected, how)
}

fn check_reply(got: &[u8], ended: Ended, expected: &[u8], how: Ended) -> Result<(), String> {
    if ended != how {
        return Err(format!(
            "ended {ended:?}, not {how:?}, after {} of {} bytes",
            got.len(),
            expected.len()
        ));
    }
    if got != expected {
        let at = got.iter().zip(expected).take_while(|(a, b)| a == b).count();
        return Err(format!(
            "got {} bytes, expected {}, first difference at {at}",
            got.len(),
            expected.len()
        ));
    }
    Ok(())
}

/// Write up to `total` bytes without ever reading, stopping early once
/// the server has stopped reading us (no room for 100 ms) or closed.
fn write_without_reading(stream: &TcpStream, total: usize) {
    stream.set_nonblocking(true).unwrap();
    let block = vec![b'f'; 64 * KIB];
    let mut sent = 0;
    while sent < total {
        match (&*stream).write(&block[..block.len().min(total - sent)]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let room = poll_socket(stream, libc::POLLOUT, Duration::from_millis(100));
                if room & libc::POLLOUT == 0 {
                    return; // paused by the server (or slow): either way, park it
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return, // evicted or stalled out already
        }
    }
}

// ---- what the clients do ----

/// A client left open, and what must happen to it.
struct Parked {
    stream: TcpStream,
    since: Instant,
    what: &'static str,
    then: Then,
}

enum Then {
    /// The server must close it on its own by `by` (stall, idle,
    /// eviction, handshake deadline, linger).
    ServerCloses { by: Instant },
    /// At `at` the client reads everything: exactly `expected`, then EOF.
    ReadAllAt { at: Instant, expected: Vec<u8> },
}

/// What one client thread saw.
#[derive(Default)]
struct Report {
    connections: u64,
    behaviours: u64,
    /// Per behaviour (in `BEHAVIOURS` order): how often, and time spent.
    played: Vec<(u64, Duration)>,
    errors: Vec<String>,
}

struct Client {
    rng: Rng,
    addrs: Addrs,
    parked: Vec<Parked>,
    report: Report,
}

/// One behaviour: its name, its weight, and the function that plays it.
/// Checked behaviours return `Err` when a reply is wrong.
type Play = fn(&mut Client) -> Result<(), String>;

const BEHAVIOURS: &[(&str, u64, Play)] = &[
    (
        "echo small messages (budget server)",
        14,
        Client::echo_small,
    ),
    (
        "echo medium messages (budget server)",
        4,
        Client::echo_medium,
    ),
    ("echo big messages", 5, Client::echo_big),
    (
        "echo half-close with replies owed",
        5,
        Client::echo_half_close,
    ),
    ("echo slow reader", 3, Client::slow_reader),
    (
        "greet lines then exit or half-close",
        10,
        Client::greet_lines,
    ),
    (
        "greet exit with input still arriving",
        4,
        Client::greet_exit_then_more,
    ),
    ("greet line past --max-line", 3, Client::greet_too_long),
    (
        "greet exit, replies read seconds later",
        1,
        Client::greet_reads_later,
    ),
    ("json values then half-close", 8, Client::json_good),
    ("json garbage", 5, Client::json_garbage),
    ("handshake answered, then echo", 6, Client::auth_good),
    ("handshake answered wrong", 3, Client::auth_wrong),
    ("reset mid-send", 8, Client::reset_mid_send),
    ("never-reader", 3, Client::never_reader),
    ("never-readers flooding the budget", 1, Client::flood),
    ("idle greet client", 2, Client::idle_greet),
    ("handshake abandoned", 6, Client::auth_abandon),
    ("handshake never answered", 2, Client::auth_silent),
];

impl Client {
    fn connect(&mut self, addr: SocketAddr) -> TcpStream {
        self.report.connections += 1;
        connect(addr)
    }

    fn park(&mut self, stream: TcpStream, what: &'static str) {
        let by = Instant::now() + SERVER_CLOSES_WITHIN;
        self.park_until(stream, what, Then::ServerCloses { by });
    }

    fn park_until(&mut self, stream: TcpStream, what: &'static str, then: Then) {
        self.parked.push(Parked {
            stream,
            since: Instant::now(),
            what,
            then,
        });
    }

    fn echo_small(&mut self) -> Result<(), String> {
        let stream = self.connect(self.addrs.budget);
        for _ in 0..self.rng.between(1, 20) {
            let message = self.rng.bytes_between(1, 2 * KIB);
            expect(&stream, &message, false, &message, Ended::Enough)?;
        }
        expect(&stream, b"", true, b"", Ended::Eof)
    }

    /// A reader whose replies may wait in the server for a moment while
    /// never-readers push the same server into pressure and eviction: it
    /// may be paused, never evicted (its output keeps moving).
    fn echo_medium(&mut self) -> Result<(), String> {
        let stream = self.connect(self.addrs.budget);
        for _ in 0..self.rng.between(1, 8) {
            let message = self.rng.bytes_between(2 * KIB, 64 * KIB);
            expect(&stream, &message, false, &message, Ended::Enough)?;
        }
        expect(&stream, b"", true, b"", Ended::Eof)
    }

    fn echo_big(&mut self) -> Result<(), String> {
        let stream = self.connect(self.addrs.big);
        for _ in 0..self.rng.between(1, 3) {
            let message = self.rng.bytes_between(16 * KIB, 128 * KIB);
            expect(&stream, &message, false, &message, Ended::Enough)?;
        }
        expect(&stream, b"", true, b"", Ended::Eof)
    }

    fn echo_half_close(&mut self) -> Result<(), String> {
        let stream = self.connect(self.addrs.big);
        let message = self.rng.bytes_between(1, 256 * KIB);
        expect(&stream, &message, true, &message, Ended::Eof)
    }

    fn slow_reader(&mut self) -> Result<(), String> {
        let stream = self.connect(self.addrs.big);
        let message = self.rng.bytes_between(32 * KIB, 128 * KIB);
        let (got, ended) = converse(&stream, &message, true, Want::Eof, true);
        check_reply(&got, ended, &message, Ended::Eof)
    }

    /// `count` lines of names, and greet's answers to them.
    fn names(&mut self, count: usize) -> (Vec<u8>, Vec<u8>) {
        let (mut lines, mut answers) = (String::new(), String::new());
        for _ in 0..count {
            let name = self.rng.name();
            lines.push_str(&name);
            lines.push_str(if self.rng.chance(20) { "\r\n" } else { "\n" });
            answers.push_str(&format!("Hello, {name}!\n"));
        }
        (lines.into_bytes(), answers.into_bytes())
    }

    fn greet_lines(&mut self) -> Result<(), String> {
        let stream = self.connect(self.addrs.greet);
        let count = self.rng.between(1, 200);
        let (mut lines, answers) = self.names(count);
        let mut expected = WELCOME.to_vec();
        expected.extend_from_slice(&answers);
        let half_close = self.rng.chance(50);
        if half_close {
            if self.rng.chance(50) {
                // A last line without `\n` is still answered at EOF.
                let end = if lines.ends_with(b"\r\n") { 2 } else { 1 };
                lines.truncate(lines.len() - end);
            }
        } else {
            lines.extend_from_slice(b"exit\n");
        }
        expect(&stream, &lines, half_close, &expected, Ended::Eof)
    }

    fn greet_exit_then_more(&mut self) -> Result<(), String> {
        let stream = self.connect(self.addrs.greet);
        let count = self.rng.between(0, 100);
        let (mut lines, answers) = self.names(count);
        let mut expected = WELCOME.to_vec();
        expected.extend_from_slice(&answers);
        lines.extend_from_slice(b"exit\n");
        let more = self.rng.between(1, 20_000);
        lines.extend_from_slice("late\n".repeat(more).as_bytes());
        expect(&stream, &lines, false, &expected, Ended::Eof)
    }

    fn greet_too_long(&mut self) -> Result<(), String> {
        let stream = self.connect(self.addrs.greet);
        let count = self.rng.between(0, 50);
        let (mut lines, answers) = self.names(count);
        let mut expected = WELCOME.to_vec();
        expected.extend_from_slice(&answers);
        // Its end never comes, so the partial line is buffered past
        // --max-line however the reads fall. (A whole long line is refused
        // too: `a_line_past_max_line_is_refused_even_when_one_read_holds_it_whole`.)
        let long = self.rng.between(300, 4 * KIB);
        lines.extend_from_slice(&vec![b'x'; long]);
        expect(&stream, &lines, false, &expected, Ended::Eof)
    }

    /// A client that cannot take its replies yet (a 4 KiB receive buffer,
    /// not read): `exit` makes the server linger with replies
    /// unacknowledged, and the idle timeout passes mid-linger (which once
    /// spun the reactor forever: see `Connection::next_deadline`). Seconds
    /// later the client reads: every reply, then EOF.
    fn greet_reads_later(&mut self) -> Result<(), String> {
        self.report.connections += 1;
        let mut stream = connect_with_receive_buffer(self.addrs.greet, 4 * KIB);
        let mut lines = "a\n".repeat(1000).into_bytes();
        lines.extend_from_slice(b"exit\n");
        stream
            .write_all(&lines)
            .map_err(|e| format!("write: {e}"))?;
        let mut expected = WELCOME.to_vec();
        expected.extend_from_slice("Hello, a!\n".repeat(1000).as_bytes());
        let at = Instant::now() + IDLE + Duration::from_millis(500);
        let then = Then::ReadAllAt { at, expected };
        self.park_until(stream, "greet exit, replies read seconds later", then);
        Ok(())
    }

    fn json_good(&mut self) -> Result<(), String> {
        let stream = self.connect(self.addrs.json);
        let (mut input, mut expected) = (String::new(), String::new());
        for _ in 0..self.rng.between(1, 30) {
            let (spaced, compact) = json_value(&mut self.rng, 0);
            input.push_str(&spaced);
            input.push_str(["\n", " ", "\t", "\r\n"][self.rng.between(0, 3)]);
            expected.push_str(&compact);
            expected.push('\n');
        }
        expect(
            &stream,
            input.as_bytes(),
            true,
            expected.as_bytes(),
            Ended::Eof,
        )
    }

    fn json_garbage(&mut self) -> Result<(), String> {
        let stream = self.connect(self.addrs.json);
        let (mut input, mut expected) = (String::new(), String::new());
        for _ in 0..self.rng.between(0, 10) {
            let (spaced, compact) = json_value(&mut self.rng, 0);
            input.push_str(&spaced);
            input.push('\n');
            expected.push_str(&compact);
            expected.push('\n');
        }
        let garbage = ["]", "}", "{\"a\" 1}", "[1,,2]", "nope", "@", "{\"k\": tru}"];
        input.push_str(garbage[self.rng.between(0, garbage.len() - 1)]);
        input.push('\n');
        if self.rng.chance(50) {
            // More still arriving after the error: the server must not
            // reset the connection and lose its error reply.
            input.push_str(&"1 ".repeat(self.rng.between(1, 30_000)));
        }
        let (got, ended) = converse(&stream, input.as_bytes(), false, Want::Eof, false);
        let error = got
            .strip_prefix(expected.as_bytes())
            .ok_or_else(|| format!("the good values were not answered first: {got:?}"))?;
        let line_ok = error.starts_with(b"{\"error\":")
            && error.ends_with(b"}\n")
            && error.iter().filter(|&&b| b == b'\n').count() == 1;
        if !line_ok || ended != Ended::Eof {
            return Err(format!(
                "after garbage: {:?}, ended {ended:?}",
                String::from_utf8_lossy(error)
            ));
        }
        Ok(())
    }

    fn challenge(&mut self, stream: &TcpStream) -> Result<Vec<u8>, String> {
        let (challenge, ended) = converse(stream, b"", false, Want::Bytes(CHALLENGE_BYTES), false);
        if ended != Ended::Enough || challenge.len() != CHALLENGE_BYTES {
            return Err(format!("challenge: {} bytes, {ended:?}", challenge.len()));
        }
        Ok(challenge)
    }

    fn auth_good(&mut self) -> Result<(), String> {
        let stream = self.connect(self.addrs.auth);
        let challenge = self.challenge(&stream)?;
        let answer = AuthKey::new(AUTH_KEY).unwrap().answer(&challenge);
        let message = self.rng.bytes_between(1, 64 * KIB);
        // Bytes right behind the answer, in the same write, belong to the protocol.
        let mut first = answer.to_vec();
        first.extend_from_slice(&message);
        expect(&stream, &first, false, &message, Ended::Enough)?;
        let message = self.rng.bytes_between(1, 64 * KIB);
        expect(&stream, &message, true, &message, Ended::Eof)
    }

    fn auth_wrong(&mut self) -> Result<(), String> {
        let stream = self.connect(self.addrs.auth);
        self.challenge(&stream)?;
        let wrong = self.rng.bytes(CHALLENGE_BYTES);
        // Refused: closed with nothing more sent.
        expect(&stream, &wrong, false, b"", Ended::Eof)
    }

    fn reset_mid_send(&mut self) -> Result<(), String> {
        let (addr, unit): (SocketAddr, &[u8]) = match self.rng.between(0, 3) {
            0 => (self.addrs.budget, b"echo"),
            1 => (self.addrs.big, b"echo"),
            2 => (self.addrs.greet, b"name\n"),
            _ => (self.addrs.json, b"[1, {\"a\": \"b\"}] "),
        };
        let stream = self.connect(addr);
        let payload = unit.repeat(self.rng.between(1, 256 * KIB) / unit.len() + 1);
        stream.set_nonblocking(true).unwrap();
        let _ = (&stream).write(&payload[..self.rng.between(1, payload.len())]);
        if self.rng.chance(50) {
            let mut some = [0u8; 1024];
            let _ = (&stream).read(&mut some);
        }
        reset_on_close(&stream);
        Ok(()) // dropped: RST, with the server mid-read or mid-reply
    }

    fn never_reader(&mut self) -> Result<(), String> {
        let stream = self.connect(self.addrs.budget);
        write_without_reading(&stream, self.rng.between(16 * KIB, 256 * KIB));
        self.park(stream, "never-reader");
        Ok(())
    }

    /// Several never-readers at once, each writing until the server stops
    /// reading it (up to 6 MiB: more than the kernel's buffers hold, so
    /// the server holds the rest, up to 32 KiB and a read each): memory
    /// pressure, then eviction.
    fn flood(&mut self) -> Result<(), String> {
        // Each flooder fills the kernel's buffers (megabytes) before the
        // server holds anything: one flood at a time, across all threads,
        // keeps the test's share of the machine's TCP memory small.
        static LAST_FLOOD: Mutex<Option<Instant>> = Mutex::new(None);
        {
            let mut last = LAST_FLOOD.lock().unwrap();
            if last.is_some_and(|at| at.elapsed() < FLOOD_EVERY) {
                drop(last);
                return self.never_reader();
            }
            *last = Some(Instant::now());
        }
        for _ in 0..FLOODERS {
            let stream = self.connect(self.addrs.budget);
            write_without_reading(&stream, 6 * MIB);
            self.park(stream, "flooding never-reader");
        }
        Ok(())
    }

    fn idle_greet(&mut self) -> Result<(), String> {
        let stream = self.connect(self.addrs.greet);
        expect(&stream, b"", false, WELCOME, Ended::Enough)?;
        self.park(stream, "idle greet client");
        Ok(())
    }

    fn auth_abandon(&mut self) -> Result<(), String> {
        let stream = self.connect(self.addrs.auth);
        match self.rng.between(0, 2) {
            0 => {} // gone before the challenge
            1 => {
                let mut part = vec![0u8; self.rng.between(1, CHALLENGE_BYTES)];
                let _ = (&stream).read(&mut part);
            }
            _ => {
                self.challenge(&stream)?;
                let part = self.rng.bytes_between(1, CHALLENGE_BYTES - 1);
                let _ = (&stream).write(&part);
            }
        }
        if self.rng.chance(50) {
            reset_on_close(&stream);
        }
        Ok(())
    }

    fn auth_silent(&mut self) -> Result<(), String> {
        let stream = self.connect(self.addrs.auth);
        self.challenge(&stream)?;
        self.park(stream, "handshake never answered");
        Ok(())
    }

    /// Settle parked clients whose time has come (all of them, waiting
    /// as long as each may take, when `finish`).
    fn tend_parked(&mut self, finish: bool) {
        for parked in std::mem::take(&mut self.parked) {
            match &parked.then {
                Then::ServerCloses { by } => loop {
                    if server_closed(&parked) {
                        break; // dropping ours now
                    }
                    if Instant::now() >= *by {
                        self.report.errors.push(format!(
                            "{}: the server did not close it within {SERVER_CLOSES_WITHIN:?}",
                            parked.what
                        ));
                        break;
                    }
                    if !finish {
                        self.parked.push(parked);
                        break;
                    }
                    // A hang-up wakes us at once; a FIN held back by our
                    // full receive buffer shows once we drain it.
                    peer_hung_up(&parked.stream, Duration::from_millis(50));
                },
                Then::ReadAllAt { at, expected } => {
                    let now = Instant::now();
                    if now < *at {
                        if !finish {
                            self.parked.push(parked);
                            continue;
                        }
                        thread::sleep(*at - now); // the client's own schedule
                    }
                    let (got, ended) = converse(&parked.stream, b"", false, Want::Eof, false);
                    if let Err(e) = check_reply(&got, ended, expected, Ended::Eof) {
                        self.report.errors.push(format!("{}: {e}", parked.what));
                    }
                }
            }
        }
    }
}

/// Whether the server has closed its end of a parked connection (its FIN
/// or RST reached us).
///
/// A never-reader's receive buffer may be full of replies, and then a FIN
/// (the server closes without RST when it had read all our input) waits
/// behind them and never shows. So once a client has been parked longer
/// than any server bound that could close it (stall 1 s, idle 2 s,
/// handshake 1 s), it reads and drops what waits: that lets such a FIN
/// through. Had the server not closed it yet, its output now moves, and
/// the idle timeout closes it soon after — still the server's doing.
fn server_closed(parked: &Parked) -> bool {
    if peer_hung_up(&parked.stream, Duration::ZERO) {
        return true;
    }
    if parked.since.elapsed() < DRAIN_AFTER {
        return false;
    }
    parked.stream.set_nonblocking(true).unwrap();
    let mut sink = [0u8; 64 * KIB];
    loop {
        match (&parked.stream).read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return e.kind() != ErrorKind::WouldBlock, // reset: closed
        }
    }
}

/// A random JSON value, as a client might space it and as the server
/// answers it (compact; keys in order, distinct; integers only, since
/// floats may be re-printed differently).
fn json_value(rng: &mut Rng, depth: usize) -> (String, String) {
    let kinds = if depth >= 3 { 3 } else { 5 };
    match rng.between(0, kinds - 1) {
        0 => {
            let n = (rng.next() as i32 as i64).to_string();
            (n.clone(), n)
        }
        1 => {
            let s = format!("\"{}\"", rng.word());
            (s.clone(), s)
        }
        2 => {
            let lit = ["true", "false", "null"][rng.between(0, 2)].to_string();
            (lit.clone(), lit)
        }
        3 => {
            let items: Vec<(String, String)> = (0..rng.between(0, 4))
                .map(|_| json_value(rng, depth + 1))
                .collect();
            let spaced: Vec<&str> = items.iter().map(|i| i.0.as_str()).collect();
            let compact: Vec<&str> = items.iter().map(|i| i.1.as_str()).collect();
            (
                format!("[ {} ]", spaced.join(" ,\n ")),
                format!("[{}]", compact.join(",")),
            )
        }
        _ => {
            let fields: Vec<(String, String)> = (0..rng.between(0, 4))
                .map(|i| {
                    let (spaced, compact) = json_value(rng, depth + 1);
                    (
                        format!("\"k{i}\" : {spaced}"),
                        format!("\"k{i}\":{compact}"),
                    )
                })
                .collect();
            let spaced: Vec<&str> = fields.iter().map(|f| f.0.as_str()).collect();
            let compact: Vec<&str> = fields.iter().map(|f| f.1.as_str()).collect();
            (
                format!("{{ {} }}", spaced.join(", ")),
                format!("{{{}}}", compact.join(",")),
            )
        }
    }
}

/// One client thread: behaviours chosen by weight until `until`, then
/// every parked client settled.
fn client_thread(seed: u64, addrs: Addrs, until: Instant) -> Report {
    let mut client = Client {
        rng: Rng::new(seed),
        addrs,
        parked: Vec::new(),
        report: Report::default(),
    };
    client.report.played = vec![(0, Duration::ZERO); BEHAVIOURS.len()];
    let total: u64 = BEHAVIOURS.iter().map(|b| b.1).sum();
    while Instant::now() < until {
        let mut pick = client.rng.next() % total;
        let index = BEHAVIOURS
            .iter()
            .position(|b| {
                let hit = pick < b.1;
                pick = pick.saturating_sub(b.1);
                hit
            })
            .unwrap();
        let (name, _, play) = BEHAVIOURS[index];
        client.report.behaviours += 1;
        let start = Instant::now();
        if let Err(e) = play(&mut client) {
            let n = client.report.behaviours;
            client.report.errors.push(format!("{name} (#{n}): {e}"));
        }
        let played = &mut client.report.played[index];
        played.0 += 1;
        played.1 += start.elapsed();
        client.tend_parked(false);
    }
    client.tend_parked(true);
    client.report
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `TcpExt: TCPAbortOnMemory` from /proc/net/netstat: connections the
/// kernel reset because the machine's TCP memory (`tcp_mem`) ran out —
/// other processes' sockets count too. When it grows during the soak,
/// resets seen by well-behaved clients may be the kernel's, not the
/// server's; the failure message says so.
fn kernel_memory_aborts() -> u64 {
    let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut rows = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "TCPAbortOnMemory")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

fn settled(stats: &StatsSnapshot) -> bool {
    stats.active == 0 && stats.held_bytes == 0 && stats.held_capacity == 0
}

#[test]
fn churn_of_well_and_badly_behaved_clients_leaves_nothing_behind() {
    raise_limit_for_children();
    let servers = Servers::start();
    // A server that stops turning (a hung loop) could not be joined: on
    // failure, leave its thread behind so the test fails instead of hanging.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| soak(&servers)));
    match outcome {
        Ok(()) => drop(servers),
        Err(panic) => {
            std::mem::forget(servers);
            std::panic::resume_unwind(panic);
        }
    }
}

fn soak(servers: &Servers) {
    let secs = env_u64("ECHO_SOAK_SECS", DEFAULT_SECS);
    let seed = env_u64("ECHO_SOAK_SEED", DEFAULT_SEED);
    let addrs = Addrs {
        budget: servers.budget.addr,
        big: servers.big.addr,
        greet: servers.greet.addr,
        json: servers.json.addr,
        auth: servers.auth.addr,
    };
    let fds_before = open_fds().expect("count open descriptors");
    let rss_before = resident_bytes();
    let aborts_before = kernel_memory_aborts();

    let until = Instant::now() + Duration::from_secs(secs);
    let reports: Vec<Report> = (0..CLIENT_THREADS)
        .map(|i| {
            let thread_seed = seed ^ (i + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
            thread::spawn(move || client_thread(thread_seed, addrs, until))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("client thread panicked"))
        .collect();

    // Every client socket is closed now; the servers must let go of
    // every connection, byte and descriptor.
    for (name, server) in servers.all() {
        server.wait_for(&format!("{name}: no connection, nothing held"), settled);
    }
    let start = Instant::now();
    let fds_after = loop {
        let fds = open_fds().expect("count open descriptors");
        if fds <= fds_before || start.elapsed() > DEADLINE {
            break fds;
        }
        thread::sleep(Duration::from_millis(10)); // descriptors close as the loops turn
    };
    let rss_after = resident_bytes();
    let kernel_aborts = kernel_memory_aborts().saturating_sub(aborts_before);

    let connections: u64 = reports.iter().map(|r| r.connections).sum();
    let behaviours: u64 = reports.iter().map(|r| r.behaviours).sum();
    let errors: Vec<&String> = reports.iter().flat_map(|r| &r.errors).collect();
    let played: String = BEHAVIOURS
        .iter()
        .enumerate()
        .map(|(i, (name, _, _))| {
            let (count, time) = reports
                .iter()
                .map(|r| r.played[i])
                .fold((0, Duration::ZERO), |a, b| (a.0 + b.0, a.1 + b.1));
            let mean = time.as_millis() as u64 / count.max(1);
            format!("  {count:5} x {name} ({mean} ms each)\n")
        })
        .collect();
    let stats: Vec<(&str, StatsSnapshot)> =
        servers.all().map(|(name, s)| (name, s.stats())).to_vec();
    let summary = format!(
        "seed {seed:#x}, {secs} s: {behaviours} behaviours, {connections} connections; \
         descriptors {fds_before} -> {fds_after}; RSS {} -> {} KiB; \
         connections the kernel reset for lack of TCP memory: {kernel_aborts}\n{played}{}",
        rss_before / 1024,
        rss_after / 1024,
        stats
            .iter()
            .map(|(name, s)| format!("  {name}: {s}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("{summary}");

    let blame = if kernel_aborts > 0 {
        "\nNOTE: the kernel reset connections for lack of TCP memory during the run \
         (tcp_mem exhausted, e.g. by another process's flood): resets above may be its doing"
    } else {
        ""
    };
    assert!(
        errors.is_empty(),
        "{} errors, first: {:#?}\n{summary}{blame}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    assert_eq!(fds_after, fds_before, "descriptors leaked\n{summary}");
    assert!(
        rss_after <= rss_before + RSS_MARGIN,
        "RSS grew by {} KiB, past the {} KiB margin\n{summary}",
        rss_after.saturating_sub(rss_before) / 1024,
        RSS_MARGIN / 1024
    );
    assert!(
        connections >= 1000,
        "too few connections to call it churn\n{summary}"
    );

    // The paths the behaviours are there to exercise were taken.
    let by = |name: &str| &stats.iter().find(|(n, _)| *n == name).unwrap().1;
    let budget = by("budget echo");
    assert!(
        budget.closed_by(CloseReason::Stalled) + budget.closed_by(CloseReason::Evicted) > 0,
        "no never-reader was stalled out or evicted\n{summary}"
    );
    assert!(budget.read_pauses > 0, "nothing was paused\n{summary}");
    assert!(
        budget.memory_pressure_episodes > 0,
        "no memory pressure\n{summary}"
    );
    assert!(
        budget.peak_held_bytes as usize <= BUDGET + SCRATCH_BYTES,
        "held past the budget and one read\n{summary}"
    );
    let greet = by("greet");
    for reason in [
        CloseReason::Idle,
        CloseReason::LineTooLong,
        CloseReason::ProtocolClosed,
    ] {
        assert!(
            greet.closed_by(reason) > 0,
            "greet: no {reason:?}\n{summary}"
        );
    }
    assert!(
        greet.lingers > 0 && greet.bytes_discarded > 0,
        "greet never lingered\n{summary}"
    );
    assert!(
        by("json").closed_by(CloseReason::ProtocolClosed) > 0,
        "{summary}"
    );
    assert!(
        by("auth echo").closed_by(CloseReason::Refused) > 0,
        "{summary}"
    );
    let resets: u64 = stats
        .iter()
        .map(|(_, s)| s.closed_by(CloseReason::Reset))
        .sum();
    assert!(resets > 0, "no reset reached a server\n{summary}");
    for (name, s) in &stats {
        assert_eq!(
            s.closed_by(CloseReason::Error),
            0,
            "{name}: closed for errors\n{summary}"
        );
        assert_eq!(
            s.accepted,
            s.closed_total(),
            "{name}: accepted != closed\n{summary}"
        );
    }
}
