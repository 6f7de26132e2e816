//! The hold scenario's thread loop: connect, stay idle while the main
//! thread measures the server's memory, then have every connection
//! answer once.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use super::client::{unanswered, Tally};
use super::connecting::connect_all;
use super::{Load, Measured};
use crate::bench::interrupt;
use crate::bench::progress::Counters;

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
    let (mut clients, failures) = connect_all(&mut poll, load, (first_id, count), progress);
    let mut measured = Measured::new(clients.len(), failures);
    meet.wait(); // 1: all connected
    meet.wait(); // 2: the hold is over
    let began = Instant::now();
    let mut tally = Tally::new(load.size, (began, began + load.drain), false, measured);
    if !interrupt::requested() {
        for client in &mut clients {
            client.send_next(load.size, None, &mut tally.measured.errors);
        }
    }
    let mut events = Events::with_capacity(1024);
    while clients.iter().any(|c| c.open && !c.in_flight.is_empty())
        && began.elapsed() < load.drain
        && !interrupt::requested()
    {
        let _ = poll.poll(&mut events, Some(Duration::from_millis(100)));
        for event in events.iter() {
            let client = &mut clients[event.token().0];
            if event.is_writable() {
                client.flush(&mut tally.measured.errors);
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                let hung_up = event.is_read_closed() || event.is_error();
                client.on_readable(load.size, hung_up, &mut tally);
            }
        }
    }
    measured = tally.measured;
    measured.errors.timeout += unanswered(&clients);
    meet.wait(); // 3: every connection answered (or not)
    meet.wait(); // 4: memory measured; now close
    measured
}
