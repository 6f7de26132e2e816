//! The connect scenario's thread loop: keep a number of connects in
//! progress, close each one as soon as it is established, and time them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::connecting::connect_outcome;
use super::micros;
use crate::bench::failures::ConnectFailures;
use crate::bench::interrupt;
use crate::bench::latency::new_histogram;
use crate::bench::sources::{source_for, start_connect};

/// What one thread of the connect scenario measured.
#[derive(Debug)]
pub struct Connects {
    /// Connections completed (established, then closed).
    pub completed: u64,
    /// Time from `connect` to established, microseconds.
    pub latency: Histogram<u64>,
    /// Attempts that failed, by class.
    pub failed: ConnectFailures,
    /// Slots (of `concurrency`) that completed at least one connection:
    /// the concurrency actually achieved.
    pub slots_up: usize,
}

/// Connect scenario: keep `concurrency` connects in progress; close each
/// one as soon as it is established (with an RST, so no `TIME_WAIT` piles
/// up and exhausts the ephemeral ports), for `duration`. Slot `i` connects
/// from source address `first_slot + i` round-robin.
pub fn run_connect(
    addr: SocketAddr,
    (sources, first_slot): (&[IpAddr], u32),
    concurrency: usize,
    duration: Duration,
    start: &Barrier,
) -> Connects {
    let mut poll = Poll::new().expect("epoll_create");
    let mut slots: Vec<Option<(TcpStream, Instant)>> = (0..concurrency).map(|_| None).collect();
    let mut result = Connects {
        completed: 0,
        latency: new_histogram(),
        failed: ConnectFailures::default(),
        slots_up: 0,
    };
    let mut ever_up = vec![false; concurrency];
    let mut events = Events::with_capacity(1024);
    start.wait();
    let end = Instant::now() + duration;
    while Instant::now() < end && !interrupt::requested() {
        for (index, slot) in slots.iter_mut().enumerate() {
            if slot.is_none() {
                let source = source_for(sources, first_slot as usize + index);
                match start_connect(addr, source) {
                    Ok(mut stream) => {
                        let registered =
                            poll.registry()
                                .register(&mut stream, Token(index), Interest::WRITABLE);
                        match registered {
                            Ok(()) => *slot = Some((stream, Instant::now())),
                            Err(e) => result.failed.count(&e),
                        }
                    }
                    Err(e) => result.failed.count(&e),
                }
            }
        }
        let timeout = end.saturating_duration_since(Instant::now());
        let timeout = timeout.min(interrupt::CHECK_EVERY);
        if poll.poll(&mut events, Some(timeout)).is_err() {
            continue;
        }
        for event in events.iter() {
            let Some((stream, began)) = slots.get_mut(event.token().0).and_then(Option::take)
            else {
                continue;
            };
            let index = event.token().0;
            if let Err(e) = connect_outcome(&stream) {
                result.failed.count(&e);
            } else {
                result.completed += 1;
                result.latency.saturating_record(micros(began.elapsed()));
                if !ever_up[index] {
                    ever_up[index] = true;
                    result.slots_up += 1;
                }
            }
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            drop(stream);
        }
    }
    result
}
