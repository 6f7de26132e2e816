//! The echo scenario's thread loop, closed or open loop: keep messages
//! in flight (or send each when its time comes), verify the replies, and
//! account for every message intended in the measured window.

use std::io::ErrorKind;
use std::sync::atomic::Ordering;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::client::{unanswered, Plan, Tally};
use super::connecting::connect_all;
use super::{Load, Measured};
use crate::bench::deadline::DeadlineTimer;
use crate::bench::interrupt;
use crate::bench::progress::{Counters, LATENCY_EVERY};
use crate::bench::schedule::Schedule;

/// The poll's wake-up token for the schedule's [`DeadlineTimer`] (client
/// tokens are indices into the thread's connections).
const SCHEDULE_TIMER: Token = Token(usize::MAX);

fn nanos_since(began: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(began).as_nanos()).unwrap_or(u64::MAX)
}

/// Run the echo scenario on this thread's connections `[first_id, first_id + count)`.
/// All threads and the main thread meet at `connected` once connected;
/// then at `start` (with the flood thread, if any), when the main thread
/// says the run begins (after the other processes are connected too).
/// The running totals go to `progress`; a stop asked for by a signal ends
/// the run early (what is in flight then is neither measured nor an error).
pub fn run_echo(
    load: &Load,
    first_id: u32,
    count: usize,
    (connected, start): (&Barrier, &Barrier),
    progress: &Counters,
) -> Measured {
    let mut poll = Poll::new().expect("epoll_create");
    let (mut clients, failures, took) = connect_all(&mut poll, load, (first_id, count), progress);
    let mut timer = None;
    if load.pacing.is_some() {
        let made = DeadlineTimer::new().and_then(|t| {
            poll.registry()
                .register(&mut SourceFd(&t.fd()), SCHEDULE_TIMER, Interest::READABLE)
                .map(|()| t)
        });
        timer = Some(made.expect("timerfd_create"));
    }
    connected.wait();
    start.wait();
    let began = Instant::now();
    let window = (began + load.warmup, began + load.warmup + load.duration);
    let open_loop = load.pacing.is_some();
    let mut measured = Measured::new(clients.len(), failures);
    measured.connect_time = took;
    let mut tally = Tally::new(load.size, window, open_loop, measured);
    let stop_sending = tally.measure_until;
    let give_up = stop_sending + load.drain;
    let mut next_tick = began + LATENCY_EVERY;
    let mut events = Events::with_capacity(1024);
    let mut plan = load.pacing.map(|pacing| Plan {
        schedule: Schedule::new(
            pacing.period_ps,
            (
                pacing.connections,
                first_id.saturating_sub(pacing.first_id) as usize,
                clients.len(),
            ),
            (
                nanos_since(began, tally.measure_from),
                nanos_since(began, stop_sending),
            ),
        ),
        began,
        pipeline: load.pipeline,
        size: load.size,
    });
    // Open loop: the next slot (see `Schedule`) not yet visited, the
    // deadline the timer is armed for, and how many connections have a
    // free pipeline slot (none: nothing to wake up for but replies).
    let mut cursor: u64 = 0;
    let mut armed_ns: Option<u64> = None;
    let mut free = clients.len();

    if plan.is_none() {
        for client in &mut clients {
            for _ in 0..load.pipeline {
                client.send_next(load.size, None, &mut tally.measured.errors);
            }
        }
    }

    loop {
        let now = Instant::now();
        let sending = now < stop_sending;
        // (The scan over all clients only runs once sending has stopped.)
        let drained = || !clients.iter().any(|c| c.open && !c.in_flight.is_empty());
        if (!sending && drained()) || now >= give_up || clients.is_empty() {
            break;
        }
        if interrupt::requested() {
            // Cut short: what was intended after now is not part of the run.
            if let Some(plan) = &mut plan {
                plan.schedule.stop_at(nanos_since(began, now));
            }
            break;
        }
        // Open loop: visit every slot whose time has come. At most one
        // round of slots one by one; further behind than that, every
        // connection is due anyway: offer each one its backlog and jump the
        // cursor — the work per wake-up is bounded whatever the rate.
        if let (Some(plan), true) = (&plan, sending) {
            let now_ns = nanos_since(began, now);
            let mut visited = 0;
            while plan.schedule.slot_due_ns(cursor) <= now_ns && visited < clients.len() {
                let (index, _) = plan.schedule.slot(cursor);
                let client = &mut clients[index];
                let could = client.can_send(plan.pipeline);
                client.send_due((index, now_ns), plan, true, &mut tally);
                free -= usize::from(could && !client.can_send(plan.pipeline));
                cursor += 1;
                visited += 1;
            }
            if plan.schedule.slot_due_ns(cursor) <= now_ns {
                for (index, client) in clients.iter_mut().enumerate() {
                    let could = client.can_send(plan.pipeline);
                    client.send_due((index, now_ns), plan, true, &mut tally);
                    free -= usize::from(could && !client.can_send(plan.pipeline));
                }
                cursor = cursor.max(plan.schedule.slots_due(now_ns));
            }
        }
        tally.publish(progress);
        if now >= next_tick {
            let open = clients.iter().filter(|c| c.open).count();
            progress.open.store(open as u64, Ordering::Relaxed);
            progress.add_latency(&tally.latency_since_tick);
            tally.latency_since_tick.reset();
            next_tick += LATENCY_EVERY;
        }
        let wake = next_tick.min(if sending { stop_sending } else { give_up });
        let mut timeout = wake.saturating_duration_since(Instant::now());
        // The schedule's own deadline, to the nanosecond, by the timer
        // (poll's timeout is in whole milliseconds, rounded up). Only
        // while some connection could send: one whose pipeline is full
        // sends when a reply frees it, and a reply wakes the poll anyway.
        if let (Some(plan), Some(timer), true) = (&plan, &mut timer, sending && free > 0) {
            let due_ns = plan.schedule.slot_due_ns(cursor);
            let now_ns = nanos_since(began, Instant::now());
            if due_ns <= now_ns {
                timeout = Duration::ZERO;
            } else if armed_ns != Some(due_ns) {
                timer
                    .arm_after(Duration::from_nanos(due_ns - now_ns))
                    .expect("timerfd_settime");
                armed_ns = Some(due_ns);
            }
        }
        let timeout = timeout.min(interrupt::CHECK_EVERY);
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            panic!("epoll_wait: {e}");
        }
        let polled = Instant::now();
        let sending = polled < stop_sending;
        for event in events.iter() {
            if event.token() == SCHEDULE_TIMER {
                continue; // the slots are visited at the top of the loop
            }
            let client = &mut clients[event.token().0];
            if !client.open {
                continue;
            }
            let could = client.can_send(load.pipeline);
            if event.is_writable() {
                client.flush(&mut tally.measured.errors);
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                let hung_up = event.is_read_closed() || event.is_error();
                let completed = client.on_readable(load.size, hung_up, &mut tally);
                if sending && client.open {
                    match &plan {
                        None => {
                            for _ in 0..completed {
                                client.send_next(load.size, None, &mut tally.measured.errors);
                            }
                        }
                        // Messages that waited for this slot: their wait
                        // is the server's, not the generator's lateness.
                        Some(plan) => client.send_due(
                            (event.token().0, nanos_since(began, Instant::now())),
                            plan,
                            false,
                            &mut tally,
                        ),
                    }
                }
            }
            match (could, client.can_send(load.pipeline)) {
                (false, true) => free += 1,
                (true, false) => free -= 1,
                _ => {}
            }
        }
    }
    if let Some(plan) = &plan {
        // Every message intended in the window and never sent is
        // accounted at its lower bound: sending stopped at the window's
        // end (or the stop), and it had not gone out by then.
        let end_ns = plan.schedule.until_ns();
        for (index, client) in clients.iter().enumerate() {
            tally.measured.intended += plan.schedule.intended_in_window(index);
            tally.measured.unsent += plan.schedule.record_unsent(
                index,
                (client.sent_on_schedule, u64::MAX),
                end_ns,
                &mut tally.measured.latency,
            );
        }
    }
    tally.measured.errors.timeout += unanswered(&clients);
    tally.publish(progress);
    progress.add_latency(&tally.latency_since_tick);
    tally.measured
}
