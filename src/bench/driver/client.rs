//! One connection of the load generator: it sends stamped messages
//! (closed loop, or on its open-loop timetable), reads the replies and
//! checks each byte for byte against the message it answers, and counts
//! its one error; [`Tally`] is what a thread's connections measure
//! together.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;

use super::{micros, Errors, Measured};
use crate::bench::interrupt;
use crate::bench::latency::new_histogram;
use crate::bench::message::push_message;
use crate::bench::progress::Counters;
use crate::bench::schedule::Schedule;
use crate::nonblocking::{try_read, try_write, ReadOutcome, WriteOutcome};

/// One message sent and not yet answered.
#[derive(Debug, Clone, Copy)]
pub(super) struct InFlight {
    pub(super) seq: u64,
    pub(super) intended: Instant,
    pub(super) sent: Instant,
}

/// One connection's state in the load generator.
pub(super) struct Client {
    pub(super) stream: TcpStream,
    pub(super) id: u32,
    pub(super) next_seq: u64,
    pub(super) in_flight: VecDeque<InFlight>,
    /// Open loop: how many of its scheduled messages were sent; those due
    /// beyond it are its backlog (a count: see [`Schedule`]).
    pub(super) sent_on_schedule: u64,
    /// Bytes not yet taken by the kernel.
    pub(super) out: Vec<u8>,
    pub(super) out_sent: usize,
    /// The reply being assembled.
    pub(super) reply: Vec<u8>,
    pub(super) open: bool,
}

/// Per-thread buffers and tallies used while handling events.
pub(super) struct Tally {
    pub(super) scratch: Vec<u8>,
    pub(super) expected: Vec<u8>,
    pub(super) measure_from: Instant,
    pub(super) measure_until: Instant,
    /// Open loop: latencies are those of the messages intended in the
    /// window, whenever answered; closed loop: of those sent and answered in it.
    pub(super) open_loop: bool,
    pub(super) measured: Measured,
    /// Verified replies, warm-up and drain included (for the progress lines).
    pub(super) replies: u64,
    /// Measured latencies since the last merge into the progress counters.
    pub(super) latency_since_tick: Histogram<u64>,
}

impl Tally {
    pub(super) fn new(
        size: usize,
        (measure_from, measure_until): (Instant, Instant),
        open_loop: bool,
        measured: Measured,
    ) -> Tally {
        Tally {
            scratch: vec![0; 64 * 1024],
            expected: Vec::with_capacity(size),
            measure_from,
            measure_until,
            open_loop,
            measured,
            replies: 0,
            latency_since_tick: new_histogram(),
        }
    }

    /// Publish the running totals for the main thread's progress lines.
    pub(super) fn publish(&self, progress: &Counters) {
        progress.replies.store(self.replies, Ordering::Relaxed);
        progress
            .measured
            .store(self.measured.messages, Ordering::Relaxed);
    }
}

/// The open loop's plan for one thread: its timetable and what a send needs.
pub(super) struct Plan {
    pub(super) schedule: Schedule,
    pub(super) began: Instant,
    pub(super) pipeline: usize,
    pub(super) size: usize,
}

impl Client {
    /// Queue message `next_seq` and try to send it, stamped with the clock
    /// read now (closed loop: also its intended time). Returns the stamp.
    pub(super) fn send_next(
        &mut self,
        size: usize,
        intended: Option<Instant>,
        errors: &mut Errors,
    ) -> Instant {
        // One clock read per send (a vDSO call, about 20 ns): a stamp
        // shared by a whole batch of events would charge the time spent on
        // the earlier events to the later messages' latency.
        let sent = Instant::now();
        let seq = self.next_seq;
        self.next_seq += 1;
        push_message(&mut self.out, self.id, seq, size);
        self.in_flight.push_back(InFlight {
            seq,
            intended: intended.unwrap_or(sent),
            sent,
        });
        self.flush(errors);
        sent
    }

    /// Open loop: send what is due on this connection (the thread's
    /// connection `index`) by `now_ns`, as far as its pipeline allows.
    /// `on_time` says the sends happen because their time came (the
    /// schedule's wake-up), not because a reply freed a slot: only those
    /// measure the generator's own lateness.
    pub(super) fn send_due(
        &mut self,
        (index, now_ns): (usize, u64),
        plan: &Plan,
        on_time: bool,
        tally: &mut Tally,
    ) {
        let due = plan.schedule.due_count(index, now_ns);
        while self.open && self.in_flight.len() < plan.pipeline && self.sent_on_schedule < due {
            let intended_ns = plan.schedule.intended_ns(index, self.sent_on_schedule);
            self.sent_on_schedule += 1;
            let intended = plan.began + Duration::from_nanos(intended_ns);
            let sent = self.send_next(plan.size, Some(intended), &mut tally.measured.errors);
            if on_time && plan.schedule.in_window(intended_ns) {
                let late = u64::try_from((sent - intended).as_nanos()).unwrap_or(u64::MAX);
                tally.measured.send_lateness.saturating_record(late.max(1));
            }
        }
    }

    /// Whether a due message could be sent now (a free pipeline slot).
    pub(super) fn can_send(&self, pipeline: usize) -> bool {
        self.open && self.in_flight.len() < pipeline
    }

    /// Write pending bytes until done or the kernel says wait.
    pub(super) fn flush(&mut self, errors: &mut Errors) {
        while self.open && self.out_sent < self.out.len() {
            match try_write(&mut self.stream, &self.out[self.out_sent..]) {
                WriteOutcome::Wrote(n) => self.out_sent += n,
                WriteOutcome::WouldBlock => return,
                WriteOutcome::Closed | WriteOutcome::Failed(_) => {
                    errors.reset += 1;
                    self.open = false;
                }
            }
        }
        if self.out_sent == self.out.len() {
            self.out.clear();
            self.out_sent = 0;
        }
    }

    /// Read everything available; verify and count each complete reply.
    /// Returns how many replies completed (each frees a pipeline slot).
    pub(super) fn on_readable(&mut self, size: usize, hung_up: bool, tally: &mut Tally) -> usize {
        let mut completed = 0;
        // Borrow the thread's scratch buffer apart from the tallies it feeds.
        let mut scratch = std::mem::take(&mut tally.scratch);
        while self.open {
            match try_read(&mut self.stream, &mut scratch) {
                ReadOutcome::Data(n) => {
                    let mut data = &scratch[..n];
                    while !data.is_empty() {
                        let take = (size - self.reply.len()).min(data.len());
                        self.reply.extend_from_slice(&data[..take]);
                        data = &data[take..];
                        if self.reply.len() == size {
                            self.check_reply(size, tally);
                            self.reply.clear();
                            completed += 1;
                            if !self.open {
                                break; // a mismatch: the rest cannot be verified
                            }
                        }
                    }
                    // The server's short-read rule, here too: a short read
                    // means the queue is empty and new bytes bring a new
                    // edge, so the read that would say WouldBlock is skipped
                    // (one syscall per reply saved; see the reactor's `fill`).
                    if n < scratch.len() && !hung_up {
                        break;
                    }
                }
                ReadOutcome::WouldBlock => break,
                ReadOutcome::Closed => {
                    // The server ended the connection after its last reply
                    // (e.g. it is draining): not a reset, not a mismatch.
                    // Close our side too, so its lingering close ends now.
                    tally.measured.errors.server_closed += 1;
                    self.in_flight.clear();
                    self.open = false;
                    let _ = self.stream.shutdown(std::net::Shutdown::Both);
                }
                ReadOutcome::Reset | ReadOutcome::Failed(_) => {
                    tally.measured.errors.reset += 1;
                    self.open = false;
                }
            }
        }
        tally.scratch = scratch;
        completed
    }

    pub(super) fn check_reply(&mut self, size: usize, tally: &mut Tally) {
        let now = Instant::now();
        let Some(sent) = self.in_flight.pop_front() else {
            // A reply nobody asked for: the stream is out of step, so
            // nothing more from it can be verified.
            tally.measured.errors.mismatch += 1;
            self.open = false;
            return;
        };
        tally.expected.clear();
        push_message(&mut tally.expected, self.id, sent.seq, size);
        if self.reply != tally.expected {
            tally.measured.errors.mismatch += 1;
            self.open = false; // counted once; see `Errors`
            return;
        }
        tally.replies += 1;
        let corrected = micros(now - sent.intended);
        let in_window = sent.sent >= tally.measure_from && now <= tally.measure_until;
        if in_window {
            tally.latency_since_tick.saturating_record(corrected);
            tally.measured.messages += 1;
        }
        // Open loop: every message intended in the window has its latency
        // recorded, even when its reply comes in the drain after it —
        // otherwise past saturation only the early window would count.
        let accounted = if tally.open_loop {
            sent.intended >= tally.measure_from && sent.intended < tally.measure_until
        } else {
            in_window
        };
        if accounted {
            tally.measured.latency.saturating_record(corrected);
            tally
                .measured
                .latency_uncorrected
                .saturating_record(micros(now - sent.sent));
        }
    }
}

/// Connections still open with messages unanswered: the `timeout` errors.
/// One that closed already was counted as a reset or mismatch; after a
/// signal, nothing in flight is an error (the run was cut short).
pub(super) fn unanswered(clients: &[Client]) -> u64 {
    if interrupt::requested() {
        return 0;
    }
    clients
        .iter()
        .filter(|c| c.open && !c.in_flight.is_empty())
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn a_closed_loop_send_is_stamped_when_it_is_made_not_when_poll_returned() {
        // The batch's clock reading, then time spent on earlier events of
        // the batch (a bounded spin on the monotonic clock), then the send:
        // its stamp, sent and intended alike, must be the send's own.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut client = Client {
            stream: TcpStream::from_std(stream),
            id: 0,
            next_seq: 0,
            in_flight: VecDeque::new(),
            sent_on_schedule: 0,
            out: Vec::new(),
            out_sent: 0,
            reply: Vec::new(),
            open: true,
        };
        let polled = Instant::now();
        while polled.elapsed() < Duration::from_millis(2) {}
        let mut errors = Errors::default();
        client.send_next(64, None, &mut errors);
        let sent = client.in_flight.back().copied().unwrap();
        assert!(sent.sent - polled >= Duration::from_millis(2), "{sent:?}");
        assert_eq!(sent.intended, sent.sent);
        assert_eq!(errors, Errors::default());
    }
}
