//! Flooders (`--scenario flood`): connections that send and never read.
//!
//! They stand for a hostile or broken client population beside the
//! measured echo clients. Each writes up to its byte budget
//! (`--flood-bytes`) as fast as the server takes it and never reads a
//! byte of the replies, so whatever the server cannot write back it must
//! hold, stop reading, or close. They live on a thread of their own with
//! their own `mio::Poll`, so a flooder whose write would block never
//! delays a measured client; and that thread runs under `SCHED_IDLE`
//! (Linux), so on a shared core it sends in the measured clients' idle
//! time instead of taking their CPU (which would inflate the latency they
//! measure whatever the server does). Nice 10 was not enough: the
//! scheduler still gave the flood thread whole slices, up to 4 ms, while a
//! measured client had a reply waiting (docs/BENCHMARKS.md, "A turn's
//! bulk copying, steps 3 and 4 together").
//!
//! The flood fills the measured window: flooders connect with everyone
//! else, stay silent through the warm-up, send from the start of the
//! measured window, and are closed at its end (with their unread replies
//! still queued, which makes the kernel reset them: no `TIME_WAIT` piles
//! up).
//!
//! Invariants: a flooder never sends more than its budget; the thread
//! returns at the end of the window whatever state the flooders are in;
//! nothing a flooder meets (a pause, a reset, an eviction) is an error of
//! the run — it is counted in [`Flood`], and only there.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::driver::connect_streams_from;
use super::interrupt;
use super::progress::Counters;
use crate::nonblocking::{try_write, WriteOutcome};

/// What the flooders send, over and over: short lines, so a line-framed
/// server has replies to queue too (rather than one endless line it would
/// close at `--max-line`).
const FLOOD_LINE: &[u8] = b"flood\n";

/// Bytes offered per `write`: as much as a loopback send buffer takes in a
/// few goes, small enough to stay in cache.
const FLOOD_CHUNK_BYTES: usize = 64 * 1024;

/// The flood thread's nice level where `SCHED_IDLE` is refused (Linux
/// only; elsewhere it runs at the default priority).
pub const FLOOD_NICE: i32 = 10;

/// How the flooders should load the server.
#[derive(Debug, Clone)]
pub struct FloodLoad {
    /// Server address.
    pub addr: SocketAddr,
    /// Flooders to open.
    pub connections: usize,
    /// The most any one flooder sends.
    pub bytes_each: u64,
    /// Silence after everyone connected (the measured clients' warm-up).
    pub warmup: Duration,
    /// How long the flood lasts (the measured window).
    pub duration: Duration,
    /// How long the flooders may take to come up (`--connect-timeout`).
    pub connect_deadline: Duration,
    /// Source addresses, round-robin, as for the measured connections
    /// (empty: the kernel's choice).
    pub sources: Vec<std::net::IpAddr>,
}

/// What the flooders did, counted. None of it fails a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flood {
    /// Flooders established.
    pub connections: usize,
    /// Flooders that could not connect.
    pub connect_failed: u64,
    /// Bytes the kernel took from all flooders together.
    pub bytes_sent: u64,
    /// Flooders that sent their whole budget.
    pub finished: usize,
    /// Flooders the server closed: a write failed with `EPIPE` or
    /// `ECONNRESET`, or the socket saw the server's FIN or RST (whether or
    /// not the flooder had finished).
    pub closed_by_server: usize,
    /// Flooders whose write failed any other way.
    pub failed: usize,
    /// The flood thread ran under `SCHED_IDLE`, behind the measured
    /// clients; `false`: the kernel refused it (nice 10, or no change off
    /// Linux), so the flood competed with them for the load core.
    pub sched_idle: bool,
}

/// Where one flooder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Budget left; the next writable edge brings it back.
    Sending,
    /// Budget spent: holds the connection open, silent, until the end.
    Finished,
}

/// One flooding connection.
struct Flooder {
    stream: TcpStream,
    sent: u64,
    state: State,
}

/// How a flooder's turn at writing ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// The send buffer is full (`WouldBlock`), or the budget is spent.
    Stopped,
    /// `EPIPE` / `ECONNRESET` / a zero-byte write: the server closed it.
    ClosedByServer,
    /// Any other write failure.
    Failed,
}

impl Flooder {
    /// Write until the kernel says wait or the budget is spent.
    fn flood(&mut self, chunk: &[u8], budget: u64, tally: &mut Flood) -> Turn {
        while self.sent < budget {
            // Start where the last write stopped inside the line pattern, so
            // the byte stream stays whole lines.
            let offset = (self.sent % FLOOD_LINE.len() as u64) as usize;
            let left = usize::try_from(budget - self.sent).unwrap_or(usize::MAX);
            let offer = &chunk[offset..offset + left.min(FLOOD_CHUNK_BYTES)];
            match try_write(&mut self.stream, offer) {
                WriteOutcome::Wrote(n) => {
                    self.sent += n as u64;
                    tally.bytes_sent += n as u64;
                }
                WriteOutcome::WouldBlock => return Turn::Stopped,
                WriteOutcome::Closed => return Turn::ClosedByServer,
                WriteOutcome::Failed(_) => return Turn::Failed,
            }
        }
        if self.state == State::Sending {
            self.state = State::Finished;
            tally.finished += 1;
        }
        Turn::Stopped
    }
}

/// The repeated line pattern, one line longer than a chunk so that a write
/// can start at any offset inside a line.
fn flood_chunk() -> Vec<u8> {
    FLOOD_LINE
        .iter()
        .copied()
        .cycle()
        .take(FLOOD_CHUNK_BYTES + FLOOD_LINE.len())
        .collect()
}

/// Run the flooders: connect, meet the measured threads at `start`, wait
/// out the warm-up, flood for the duration, close everything and return
/// what happened.
pub fn run_flood(load: &FloodLoad, start: &Barrier) -> Flood {
    let sched_idle = lower_this_thread();
    let mut poll = Poll::new().expect("epoll_create");
    let opened = connect_streams_from(
        &mut poll,
        load.addr,
        (&load.sources, 0),
        load.connections,
        (load.connect_deadline, &Counters::default()),
    );
    let streams = opened.streams;
    let mut tally = Flood {
        connect_failed: opened.failures.total(),
        sched_idle,
        ..Flood::default()
    };
    let mut flooders: Vec<Option<Flooder>> = Vec::with_capacity(streams.len());
    for mut stream in streams {
        // Readable interest only so that the server's FIN shows up as an
        // event (`is_read_closed`); the data itself is never read. An RST
        // needs no interest: epoll always reports EPOLLERR and EPOLLHUP.
        let token = Token(flooders.len());
        let interest = Interest::READABLE | Interest::WRITABLE;
        if poll
            .registry()
            .register(&mut stream, token, interest)
            .is_ok()
        {
            flooders.push(Some(Flooder {
                stream,
                sent: 0,
                state: State::Sending,
            }));
        } else {
            tally.connect_failed += 1;
        }
    }
    tally.connections = flooders.len();
    start.wait();
    let flood_from = Instant::now() + load.warmup;
    let flood_until = flood_from + load.duration;
    // Silent through the warm-up: the measured clients warm up undisturbed
    // and the flood lands in their measured window.
    thread::sleep(flood_from.saturating_duration_since(Instant::now()));

    let chunk = flood_chunk();
    // Every flooder is writable now (a new connection's send buffer is
    // empty), so each gets a first turn without waiting for an event; the
    // writable edges it had meanwhile are still queued and harmless.
    for slot in &mut flooders {
        take_turn(slot, &chunk, load.bytes_each, &mut tally);
    }
    let mut events = Events::with_capacity(1024);
    loop {
        let now = Instant::now();
        if now >= flood_until || flooders.iter().all(Option::is_none) || interrupt::requested() {
            break;
        }
        let timeout = (flood_until - now).min(interrupt::CHECK_EVERY);
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            panic!("epoll_wait: {e}");
        }
        for event in events.iter() {
            let Some(slot) = flooders.get_mut(event.token().0) else {
                continue;
            };
            if slot.is_none() {
                continue;
            }
            // The server's FIN (read closed) or RST (error, hang-up): this
            // flooder is over, whether it had finished or not.
            if event.is_read_closed() || event.is_write_closed() || event.is_error() {
                tally.closed_by_server += 1;
                *slot = None;
                continue;
            }
            // A readable-only edge is a reply arriving: ignored, by design.
            if event.is_writable() {
                take_turn(slot, &chunk, load.bytes_each, &mut tally);
            }
        }
    }
    // Dropping the flooders closes them; their unread replies make the
    // kernel send RST instead of FIN.
    drop(flooders);
    tally
}

/// Put the calling thread behind every ordinary thread: `SCHED_IDLE` on
/// Linux (a waking ordinary thread always preempts it, and it gets a
/// core only while nothing else wants it), else nice [`FLOOD_NICE`];
/// elsewhere nothing changes. Whether `SCHED_IDLE` applied: if not, the
/// flood competes for the measured clients' CPU, which the report says
/// (`flood.sched_idle`) rather than fail the run.
fn lower_this_thread() -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: both calls act on the calling thread only (pid 0 / its own
    // id) and read nothing but the `sched_param` passed by reference.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0 {
            return true;
        }
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, FLOOD_NICE);
    }
    false
}

/// One flooder's turn at writing, if it still has budget; a flooder the
/// server closed, or whose write failed, is dropped (closing its socket).
fn take_turn(slot: &mut Option<Flooder>, chunk: &[u8], budget: u64, tally: &mut Flood) {
    let Some(flooder) = slot else { return };
    if flooder.state != State::Sending {
        return;
    }
    match flooder.flood(chunk, budget, tally) {
        Turn::Stopped => {}
        Turn::ClosedByServer => {
            tally.closed_by_server += 1;
            *slot = None;
        }
        Turn::Failed => {
            tally.failed += 1;
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_flood_thread_yields_to_every_ordinary_thread_and_only_it_does() {
        let policy_of_this_thread = || {
            // SAFETY: reads the calling thread's own policy.
            unsafe { libc::sched_getscheduler(0) }
        };
        let (applied, flood) =
            thread::spawn(move || (lower_this_thread(), policy_of_this_thread()))
                .join()
                .unwrap();
        // Where the kernel refuses SCHED_IDLE (a seccomp filter, say) the
        // thread falls back to nice 10, and says so.
        assert_eq!(applied, flood == libc::SCHED_IDLE, "what it says it got");
        assert_eq!(flood, libc::SCHED_IDLE, "the flood thread's policy");
        // The threads that spawned it (the measured clients') keep theirs.
        assert_eq!(policy_of_this_thread(), libc::SCHED_OTHER);
    }

    #[test]
    fn the_chunk_is_whole_lines_from_any_offset_inside_a_line() {
        let chunk = flood_chunk();
        for offset in 0..FLOOD_LINE.len() {
            let sent_so_far = FLOOD_LINE.len() * 1000 + offset;
            let start = sent_so_far % FLOOD_LINE.len();
            // What was sent, then what is offered next: one unbroken pattern.
            let offered = &chunk[start..start + FLOOD_CHUNK_BYTES];
            let expected: Vec<u8> = FLOOD_LINE
                .iter()
                .copied()
                .cycle()
                .skip(sent_so_far)
                .take(FLOOD_CHUNK_BYTES)
                .collect();
            assert_eq!(offered, &expected[..], "offset {offset}");
        }
    }
}
