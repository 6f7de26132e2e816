//! Opening a thread's connections: non-blocking connects, at most a wave
//! of them under way at a time (so the server's listen queue is not
//! flooded), each either connected or counted by its OS reason; the work
//! is linear in the connections.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::client::Client;
use super::Load;
use crate::bench::failures::ConnectFailures;
use crate::bench::interrupt;
use crate::bench::progress::Counters;
use crate::bench::sources::{source_for, start_connect};
use crate::proxy_header::{self, HeaderVersion};

/// What opening a thread's connections came to.
#[derive(Debug)]
pub(in crate::bench) struct Opened {
    /// The connected streams, in the order they connected, registered with nothing.
    pub streams: Vec<TcpStream>,
    /// Why the others did not come up.
    pub failures: ConnectFailures,
    /// From the first connect to the last connection up (zero if none came up).
    pub took: Duration,
}

/// Open `count` connections starting at id `first_id` (see
/// [`connect_streams_from`]), register each for reading and writing under
/// its index, and return the clients, the failures and the time they
/// took. `progress` learns how many are up as they come, and when this
/// thread is done.
pub(super) fn connect_all(
    poll: &mut Poll,
    load: &Load,
    (first_id, count): (u32, usize),
    progress: &Counters,
) -> (Vec<Client>, ConnectFailures, Duration) {
    let Opened {
        streams,
        mut failures,
        took,
    } = connect_streams_from(
        poll,
        load.addr,
        (&load.sources, first_id),
        count,
        (load.connect_deadline, progress),
    );
    let mut clients: Vec<Client> = streams
        .into_iter()
        .enumerate()
        .map(|(index, stream)| Client {
            // The header goes out with the first message (flush sends `out`).
            out: proxy_preamble(load.proxy_header, &stream),
            stream,
            id: first_id + index as u32,
            next_seq: 0,
            in_flight: VecDeque::new(),
            sent_on_schedule: 0,
            out_sent: 0,
            reply: Vec::new(),
            open: true,
        })
        .collect();
    // A connection that cannot be registered never carries a message: it
    // counts as not up (and is dropped, so achieved = clients.len()).
    // `retain_mut` keeps the order, so each token is its final index.
    let mut token = 0;
    clients.retain_mut(|client| {
        let interest = Interest::READABLE | Interest::WRITABLE;
        match poll
            .registry()
            .register(&mut client.stream, Token(token), interest)
        {
            Ok(()) => {
                token += 1;
                true
            }
            Err(e) => {
                failures.count(&e);
                false
            }
        }
    });
    progress.up.store(clients.len() as u64, Ordering::Relaxed);
    progress.failed.store(failures.total(), Ordering::Relaxed);
    progress.open.store(clients.len() as u64, Ordering::Relaxed);
    progress.connected.store(true, Ordering::Release);
    (clients, failures, took)
}

/// What a connection sends before its first message: a PROXY header
/// naming this connection's own address as the client and the target as
/// the destination (`--proxy-header`), or nothing.
fn proxy_preamble(version: Option<HeaderVersion>, stream: &TcpStream) -> Vec<u8> {
    match (version, stream.local_addr(), stream.peer_addr()) {
        (Some(version), Ok(local), Ok(peer)) => proxy_header::encode(version, local, peer),
        // Connected streams have both addresses; without them, send no
        // header and let the server's refusal show up as an error.
        _ => Vec::new(),
    }
}

/// Open `count` connections to `addr`, at most a wave of them in progress
/// at a time (so the server's listen queue is not flooded), each with
/// `TCP_NODELAY`; attempt `i` comes from source address `first_id + i`
/// round-robin. Past `deadline` (`--connect-timeout`), what is not up
/// counts as `gave_up`. Returns what [`Opened`]; `progress.up` and
/// `.failed` follow along.
pub(in crate::bench) fn connect_streams_from(
    poll: &mut Poll,
    addr: SocketAddr,
    sources: (&[IpAddr], u32),
    count: usize,
    deadline: (Duration, &Counters),
) -> Opened {
    connect_waves(poll, addr, sources, count, deadline).0
}

/// The connects under way, by token. A slab: starting one, finishing one
/// and counting them are each one step, so the loop's work grows with the
/// connections, not with their square (a list rescanned for each new
/// connection made 20 000 connections 200 million steps).
struct Wave {
    under_way: Slab<TcpStream>,
    /// Entries of `under_way` looked at so far (the loop's work, for a test).
    steps: u64,
}

impl Wave {
    fn len(&mut self) -> usize {
        self.steps += 1;
        self.under_way.len()
    }

    fn start(&mut self, poll: &Poll, mut stream: TcpStream) -> io::Result<()> {
        self.steps += 1;
        let entry = self.under_way.vacant_entry();
        poll.registry()
            .register(&mut stream, Token(entry.key()), Interest::WRITABLE)?;
        entry.insert(stream);
        Ok(())
    }

    /// The connect of `token`, if still under way (an event may come twice).
    fn finish(&mut self, token: Token) -> Option<TcpStream> {
        self.steps += 1;
        self.under_way.try_remove(token.0)
    }
}

/// The loop of [`connect_streams_from`]; also returns its work (see [`Wave`]).
fn connect_waves(
    poll: &mut Poll,
    addr: SocketAddr,
    (sources, first_id): (&[IpAddr], u32),
    count: usize,
    (deadline, progress): (Duration, &Counters),
) -> (Opened, u64) {
    const WAVE: usize = 256;
    let mut connected: Vec<TcpStream> = Vec::with_capacity(count);
    let mut failures = ConnectFailures::default();
    let mut events = Events::with_capacity(1024);
    let start = Instant::now();
    let mut took = Duration::ZERO;
    let mut wave = Wave {
        under_way: Slab::with_capacity(WAVE),
        steps: 0,
    };
    let mut next = 0;
    while next < count || wave.len() > 0 {
        while next < count && wave.len() < WAVE {
            let source = source_for(sources, first_id as usize + next);
            if let Err(e) = start_connect(addr, source).and_then(|s| wave.start(poll, s)) {
                failures.count(&e);
            }
            next += 1;
        }
        let stopped = interrupt::requested();
        if start.elapsed() > deadline || stopped {
            // Those under way and those never started alike: every
            // connection asked for is either connected or counted.
            let left = wave.len() + (count - next);
            if stopped {
                failures.stopped += left as u64;
            } else {
                failures.gave_up += left as u64;
            }
            break;
        }
        if poll
            .poll(&mut events, Some(Duration::from_millis(100)))
            .is_err()
        {
            continue;
        }
        for event in events.iter() {
            let Some(mut stream) = wave.finish(event.token()) else {
                continue;
            };
            // Writable after a non-blocking connect: connected, or failed.
            let _ = poll.registry().deregister(&mut stream);
            match connect_outcome(&stream) {
                Ok(()) => {
                    let _ = stream.set_nodelay(true);
                    connected.push(stream);
                    took = start.elapsed();
                }
                Err(e) => failures.count(&e),
            }
        }
        progress.up.store(connected.len() as u64, Ordering::Relaxed);
        progress.failed.store(failures.total(), Ordering::Relaxed);
    }
    progress.up.store(connected.len() as u64, Ordering::Relaxed);
    progress.failed.store(failures.total(), Ordering::Relaxed);
    let opened = Opened {
        streams: connected,
        failures,
        took,
    };
    (opened, wave.steps)
}

/// How a non-blocking connect ended, once its socket reported writable:
/// `SO_ERROR` holds the reason it failed (`ECONNREFUSED`, `ETIMEDOUT`, ...);
/// without one, a peer address means it is up.
pub(super) fn connect_outcome(stream: &TcpStream) -> io::Result<()> {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => Err(e),
        Ok(None) => stream.peer_addr().map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_never_started_before_the_deadline_count_as_failed() {
        // A listener that accepts nothing; its backlog completes a few
        // handshakes. With no time at all, one wave is under way and the
        // rest never start: all of them must be counted.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut poll = Poll::new().unwrap();
        let progress = Counters::default();
        let Opened {
            streams: connected,
            failures: failed,
            ..
        } = connect_streams_from(&mut poll, addr, (&[], 0), 1000, (Duration::ZERO, &progress));
        assert_eq!(connected.len() as u64 + failed.total(), 1000);
        // ... and each of them as given up on, the reason the summary names.
        assert_eq!(failed.gave_up, failed.total());
        assert_eq!(progress.failed.load(Ordering::Relaxed), failed.total());
    }

    #[test]
    fn the_connect_loop_does_work_in_proportion_to_the_connections() {
        // Each connection is started, counted and finished a few times
        // over; a loop that rescans what is under way for each new
        // connection takes ~count * WAVE steps instead.
        const COUNT: usize = 1500;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = std::thread::spawn(move || {
            (0..COUNT)
                .map_while(|_| listener.accept().ok())
                .collect::<Vec<_>>()
        });
        let mut poll = Poll::new().unwrap();
        let progress = Counters::default();
        let deadline = Duration::from_secs(30);
        let (opened, steps) =
            connect_waves(&mut poll, addr, (&[], 0), COUNT, (deadline, &progress));
        let connected = opened.streams;
        assert_eq!((connected.len(), opened.failures.total()), (COUNT, 0));
        // Timed from the first connect to the last one up, within the deadline.
        assert!(opened.took > Duration::ZERO && opened.took <= deadline);
        assert!(
            steps <= 6 * COUNT as u64,
            "{steps} steps for {COUNT} connections"
        );
        drop(connected);
        assert_eq!(acceptor.join().unwrap().len(), COUNT);
    }
}
