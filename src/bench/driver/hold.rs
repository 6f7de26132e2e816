//! The hold scenario's thread loop: connect, stay idle while the main
//! thread measures the server's memory, then have every connection
//! answer once, a window of them at a time.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use super::client::{unanswered, Client, Tally};
use super::connecting::connect_all;
use super::{Load, Measured};
use crate::bench::interrupt;
use crate::bench::progress::Counters;

/// Connections of one thread asked to answer at the same time. A message
/// in flight holds about a page of the kernel's TCP memory until it is
/// read (docs/BENCHMARKS.md: 193 280 pages while 200 000 connections all
/// echoed at once). A million at once is 4 GB, past `tcp_mem`'s hard limit
/// on a 24 GiB machine (575 778 pages), where the kernel drops segments
/// of every socket on it; 4 096 per thread keeps 56 load generators under
/// 230 000 pages, and one thread's answers still overlap.
pub(super) const ANSWERS_IN_FLIGHT: usize = 4096;

/// Hold scenario: connect, meet the main thread (which measures memory),
/// stay idle until it says so, then have every connection answer once.
/// Barrier meetings: connected, hold over, answered (the main thread
/// measures memory again), released. After a signal, nobody is asked
/// to answer.
pub fn run_hold(
    load: &Load,
    (first_id, count): (u32, usize),
    meet: &Barrier,
    progress: &Counters,
) -> Measured {
    let mut poll = Poll::new().expect("epoll_create");
    let (mut clients, failures, took) = connect_all(&mut poll, load, (first_id, count), progress);
    let mut measured = Measured::new(clients.len(), failures);
    measured.connect_time = took;
    meet.wait(); // 1: all connected
    meet.wait(); // 2: the hold is over
    let began = Instant::now();
    let mut tally = Tally::new(load.size, (began, began + load.drain), false, measured);
    let mut answers = Answers::new(ANSWERS_IN_FLIGHT);
    let mut events = Events::with_capacity(1024);
    while !interrupt::requested() && began.elapsed() < load.drain {
        answers.ask_more(&mut clients, load.size, &mut tally);
        if answers.all_in(&clients) {
            break;
        }
        let _ = poll.poll(&mut events, Some(Duration::from_millis(100)));
        for event in events.iter() {
            let client = &mut clients[event.token().0];
            let was_waiting = waiting(client);
            if event.is_writable() {
                client.flush(&mut tally.measured.errors);
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                let hung_up = event.is_read_closed() || event.is_error();
                client.on_readable(load.size, hung_up, &mut tally);
            }
            if was_waiting && !waiting(client) {
                answers.in_flight -= 1;
            }
        }
    }
    measured = tally.measured;
    measured.errors.timeout += unanswered(&clients) + answers.never_asked(&clients);
    meet.wait(); // 3: every connection answered (or not)
    meet.wait(); // 4: memory measured; now close
    measured
}

/// A connection whose message is out and not yet answered.
fn waiting(client: &Client) -> bool {
    client.open && !client.in_flight.is_empty()
}

/// The connections asked so far (in order), and how many of them wait.
struct Answers {
    window: usize,
    asked: usize,
    in_flight: usize,
}

impl Answers {
    fn new(window: usize) -> Answers {
        Answers {
            window,
            asked: 0,
            in_flight: 0,
        }
    }

    /// Ask the next connections for their message, up to the window.
    fn ask_more(&mut self, clients: &mut [Client], size: usize, tally: &mut Tally) {
        while self.in_flight < self.window && self.asked < clients.len() {
            let client = &mut clients[self.asked];
            self.asked += 1;
            if client.open {
                client.send_next(size, None, &mut tally.measured.errors);
                if waiting(client) {
                    self.in_flight += 1;
                }
            }
        }
    }

    /// Every connection asked, and none waits.
    fn all_in(&self, clients: &[Client]) -> bool {
        self.asked == clients.len() && self.in_flight == 0
    }

    /// Open connections the deadline left unasked: unanswered too (none
    /// after a signal, as for [`unanswered`]).
    fn never_asked(&self, clients: &[Client]) -> u64 {
        if interrupt::requested() {
            return 0;
        }
        clients[self.asked..].iter().filter(|c| c.open).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::driver::{Load, Measured};

    #[test]
    fn answers_are_asked_for_a_window_at_a_time_and_the_unasked_are_counted() {
        // A listener that accepts nothing: its backlog completes the
        // handshakes, and nothing is ever answered.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let load = Load {
            addr: listener.local_addr().unwrap(),
            size: 64,
            pipeline: 1,
            pacing: None,
            warmup: Duration::ZERO,
            duration: Duration::ZERO,
            drain: Duration::from_secs(5),
            connect_deadline: Duration::from_secs(30),
            sources: Vec::new(),
            proxy_header: None,
        };
        let mut poll = Poll::new().unwrap();
        let (mut clients, _, _) = connect_all(&mut poll, &load, (0, 10), &Counters::default());
        assert_eq!(clients.len(), 10);
        let now = Instant::now();
        let measured = Measured::new(10, Default::default());
        let mut tally = Tally::new(64, (now, now + load.drain), false, measured);
        let mut answers = Answers::new(4);
        answers.ask_more(&mut clients, 64, &mut tally);
        let asked: Vec<bool> = clients.iter().map(waiting).collect();
        let first_four: Vec<bool> = (0..10).map(|i| i < 4).collect();
        assert_eq!(asked, first_four);
        assert_eq!((answers.asked, answers.in_flight), (4, 4));
        // One answer comes back: one more connection is asked, no more.
        clients[0].in_flight.clear();
        answers.in_flight -= 1;
        answers.ask_more(&mut clients, 64, &mut tally);
        assert_eq!((answers.asked, answers.in_flight), (5, 4));
        assert!(waiting(&clients[4]) && !waiting(&clients[5]));
        assert!(!answers.all_in(&clients));
        // Were the deadline now, the 5 never asked are unanswered too.
        assert_eq!(answers.never_asked(&clients), 5);
        drop(listener);
    }
}
