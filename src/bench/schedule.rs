//! The open loop's timetable, in integer nanoseconds.
//!
//! `--rate R` over `C` connections gives each connection one message every
//! `C / R` seconds (its *period*); connection `g` (its index in this
//! process) is shifted by `g / C` of a period, so the `C` connections take
//! turns and the total is `R` evenly spaced messages per second. Message
//! `k` of connection `g` is *intended* at
//!
//! ```text
//! intended(g, k) = floor((k * period_ps + floor(g * period_ps / C)) / 1000)  ns after the start
//! ```
//!
//! The period is kept in picoseconds so that rounding it never drifts the
//! schedule (an error of at most 0.5 ps per period, 0.05 % at the shortest
//! period allowed, 1 ns); every deadline is a whole nanosecond.
//!
//! Nothing is stored per message: how many messages of a connection are due
//! by a time is arithmetic ([`Schedule::due_count`]), so a connection that
//! falls behind holds its backlog as two counts (due, sent), whatever the
//! rate — memory does not grow with the rate or the run's length.
//!
//! A thread walks its connections' messages in time order as *slots*: slot
//! `m` is message `m / n` of the thread's connection `m % n`. Slot deadlines
//! never decrease with `m` (the shifts are below one period and increase
//! with the connection), which is what lets the driver keep a single cursor.
//!
//! At the end of the run, what was intended in the measured window but
//! never sent is recorded as a latency of at least (end − intended time)
//! ([`Schedule::record_unsent`]), in bulk: one histogram bucket at a time,
//! never one sample per message.
//!
//! Nothing here knows about sockets or `mio`.

use hdrhistogram::Histogram;

/// Picoseconds per nanosecond and per second.
const PS_PER_NS: u128 = 1_000;
const PS_PER_SEC: f64 = 1e12;

/// The most `--rate` can ask: one message per nanosecond. A nanosecond
/// schedule cannot express more, and no load generator gets near it (see
/// docs/BENCHMARKS.md for what one achieves).
pub const MAX_RATE: f64 = 1e9;

/// Why a rate cannot be scheduled, as the one line the user sees.
pub fn check_rate(rate: f64, connections: usize) -> Result<u64, String> {
    if !(rate.is_finite() && rate > 0.0) {
        return Err(format!(
            "--rate {rate}: must be a positive number of messages per second"
        ));
    }
    if rate > MAX_RATE {
        return Err(format!(
            "--rate {rate}: more than {MAX_RATE:e} msgs/s (one message per nanosecond) cannot be scheduled"
        ));
    }
    let period_ps = PS_PER_SEC * connections as f64 / rate;
    if period_ps < PS_PER_NS as f64 {
        return Err(format!(
            "--rate {rate} over --connections {connections}: each connection would send every {:.3} ns; the schedule's unit is 1 ns",
            period_ps / 1e3
        ));
    }
    // u64 picoseconds hold 213 days; a connection waiting longer than
    // that between messages would never send in any run.
    if period_ps >= u64::MAX as f64 {
        return Err(format!(
            "--rate {rate} over --connections {connections}: each connection would wait {:.0} days between messages",
            period_ps / PS_PER_SEC / 86_400.0
        ));
    }
    Ok(period_ps.round() as u64)
}

/// One thread's share of the open-loop timetable (see the module header).
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Each connection's period, picoseconds.
    period_ps: u128,
    /// Connections of the whole process (the `C` of the shifts).
    total: u128,
    /// This thread's first connection, as an index in the process.
    first: u128,
    /// This thread's connections.
    count: u64,
    /// Messages intended before this (ns after the start) are warm-up.
    window_from_ns: u64,
    /// Messages intended at or after this (ns after the start) are not
    /// part of the run: sending stops here.
    window_until_ns: u64,
}

impl Schedule {
    /// The timetable of connections `[first, first + count)` of `total`,
    /// each sending every `period_ps`; the measured window is
    /// `[window_from_ns, window_until_ns)` after the start.
    pub fn new(
        period_ps: u64,
        (total, first, count): (usize, usize, usize),
        (window_from_ns, window_until_ns): (u64, u64),
    ) -> Schedule {
        Schedule {
            period_ps: u128::from(period_ps.max(PS_PER_NS as u64)),
            total: total.max(1) as u128,
            first: first as u128,
            count: count as u64,
            window_from_ns,
            window_until_ns,
        }
    }

    /// When sending stops, ns after the start.
    pub fn until_ns(&self) -> u64 {
        self.window_until_ns
    }

    /// The run was stopped (by a signal) at `stop_ns`: messages intended
    /// from then on are not part of it. Without this, the messages it never
    /// got to send would count as intended, at a latency up to the planned
    /// end — longer than the time measured.
    pub fn stop_at(&mut self, stop_ns: u64) {
        self.window_until_ns = self.window_until_ns.min(stop_ns);
    }

    /// Whether a message intended at `intended_ns` is in the measured window.
    pub fn in_window(&self, intended_ns: u64) -> bool {
        (self.window_from_ns..self.window_until_ns).contains(&intended_ns)
    }

    fn shift_ps(&self, index: usize) -> u128 {
        (self.first + index as u128) * self.period_ps / self.total
    }

    /// When message `k` of the thread's connection `index` is intended, ns after the start.
    pub fn intended_ns(&self, index: usize, k: u64) -> u64 {
        let ps = u128::from(k) * self.period_ps + self.shift_ps(index);
        u64::try_from(ps / PS_PER_NS).unwrap_or(u64::MAX)
    }

    /// How many messages of connection `index` are intended at or before
    /// `at_ns`, with no end to the run.
    fn intended_by(&self, index: usize, at_ns: u64) -> u64 {
        // intended(k) <= at  <=>  k * period + shift < (at + 1) * 1000
        let bound = (u128::from(at_ns) + 1) * PS_PER_NS;
        let shift = self.shift_ps(index);
        if bound <= shift {
            return 0;
        }
        let count = (bound - shift).div_ceil(self.period_ps);
        u64::try_from(count).unwrap_or(u64::MAX)
    }

    /// How many messages of connection `index` are due by `now_ns`: intended
    /// at or before it, and before sending stops.
    pub fn due_count(&self, index: usize, now_ns: u64) -> u64 {
        match self.window_until_ns {
            0 => 0,
            until => self.intended_by(index, now_ns.min(until - 1)),
        }
    }

    /// How many messages of connection `index` are intended in the measured window.
    pub fn intended_in_window(&self, index: usize) -> u64 {
        let before = match self.window_from_ns {
            0 => 0,
            from => self.due_count(index, from - 1),
        };
        self.due_count(index, u64::MAX) - before
    }

    /// Slot `m`: (the thread's connection, its message number).
    pub fn slot(&self, m: u64) -> (usize, u64) {
        let n = self.count.max(1);
        ((m % n) as usize, m / n)
    }

    /// When slot `m` is due, ns after the start.
    pub fn slot_due_ns(&self, m: u64) -> u64 {
        let (index, k) = self.slot(m);
        self.intended_ns(index, k)
    }

    /// How many slots are due by `now_ns` (the cursor, once all are visited).
    pub fn slots_due(&self, now_ns: u64) -> u64 {
        // Every slot of the rounds before `rounds` is due (shifts are below
        // one period); of round `rounds`, those whose shift is below the rest.
        let bound = (u128::from(now_ns) + 1) * PS_PER_NS;
        let rounds = bound / self.period_ps;
        let rest = bound % self.period_ps;
        // shift(i) < rest  <=>  (first + i) * period < rest * total  (rest is whole)
        let shifted = (rest * self.total).div_ceil(self.period_ps);
        let in_round = shifted
            .saturating_sub(self.first)
            .min(u128::from(self.count));
        let slots = rounds * u128::from(self.count) + in_round;
        u64::try_from(slots).unwrap_or(u64::MAX)
    }

    /// Record messages `[from_k, until_k)` of connection `index` — intended,
    /// never sent — that fall in the measured window, each at its lower
    /// bound: `end_ns − intended`, in microseconds, as the driver records
    /// latencies. In bulk: every run of messages that lands in one
    /// histogram bucket is one `record_n`, so the work is bounded by the
    /// histogram's buckets, not by the number of messages. Returns how many
    /// were recorded.
    pub fn record_unsent(
        &self,
        index: usize,
        (from_k, until_k): (u64, u64),
        end_ns: u64,
        histogram: &mut Histogram<u64>,
    ) -> u64 {
        let first_in_window = match self.window_from_ns {
            0 => 0,
            from => self.intended_by(index, from - 1),
        };
        let until_k = until_k.min(self.due_count(index, u64::MAX));
        let mut k = from_k.max(first_in_window);
        let start = k;
        while k < until_k {
            let lower_bound_ns = end_ns.saturating_sub(self.intended_ns(index, k));
            let micros = (lower_bound_ns / 1_000).max(1);
            // Later messages have smaller bounds: the run in this bucket
            // ends at the first message whose bound falls below its floor.
            let floor = histogram.lowest_equivalent(micros);
            let next = if floor <= 1 {
                until_k // the lowest bucket takes everything below it too
            } else {
                // bound(k) >= floor µs  <=>  intended(k) <= end − floor µs
                self.intended_by(index, end_ns.saturating_sub(floor * 1_000))
            };
            let next = next.clamp(k + 1, until_k);
            histogram.saturating_record_n(micros, next - k);
            k = next;
        }
        until_k.saturating_sub(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::latency::new_histogram;

    fn schedule(period_ps: u64, (total, first, count): (usize, usize, usize)) -> Schedule {
        Schedule::new(period_ps, (total, first, count), (0, u64::MAX))
    }

    #[test]
    fn a_stopped_run_intends_nothing_past_its_stop() {
        // One connection every 1 ms, window [0, 100 ms), stopped at 10 ms.
        let mut s = Schedule::new(1_000_000_000, (1, 0, 1), (0, 100_000_000));
        assert_eq!(s.intended_in_window(0), 100);
        s.stop_at(10_000_000);
        assert_eq!(s.intended_in_window(0), 10);
        let mut h = new_histogram();
        assert_eq!(s.record_unsent(0, (0, u64::MAX), s.until_ns(), &mut h), 10);
        let max = h.lowest_equivalent(h.max());
        assert!(max <= 10_000, "at most the 10 ms run: {max}");
    }

    #[test]
    fn rates_that_cannot_be_scheduled_are_refused_with_the_reason() {
        assert_eq!(check_rate(1000.0, 10), Ok(10_000_000_000)); // 10 ms
        assert!(check_rate(1e30, 50)
            .unwrap_err()
            .contains("cannot be scheduled"));
        assert!(check_rate(f64::INFINITY, 50).is_err());
        assert!(check_rate(0.0, 50).is_err());
        assert!(check_rate(1e-12, 50).unwrap_err().contains("days"));
        // The largest rate is one message per nanosecond, over one connection.
        assert_eq!(check_rate(MAX_RATE, 1), Ok(1_000));
    }

    #[test]
    fn connections_take_turns_and_the_total_rate_is_exact() {
        // 3 connections at 1000 msgs/s: each every 3 ms, shifted by 1 ms.
        let s = schedule(3_000_000_000, (3, 0, 3));
        let due: Vec<u64> = (0..6).map(|m| s.slot_due_ns(m)).collect();
        assert_eq!(
            due,
            [0, 1_000_000, 2_000_000, 3_000_000, 4_000_000, 5_000_000]
        );
        // A period that is not a whole number of ns does not drift: 1e9/3 ns.
        let s = schedule(333_333_333_333, (1, 0, 1));
        assert_eq!(s.intended_ns(0, 3_000), 999_999_999_999);
        assert_eq!(s.due_count(0, 1_000_000_000_000), 3_001);
    }

    #[test]
    fn counts_and_slots_agree_with_the_deadlines() {
        // A second thread's share: connections 3..7 of 10, an awkward period.
        let s = schedule(7_777_777, (10, 3, 4));
        for now in (0..200_000u64).step_by(997) {
            let slots = (0..10_000u64)
                .take_while(|&m| s.slot_due_ns(m) <= now)
                .count();
            assert_eq!(s.slots_due(now), slots as u64, "at {now} ns");
            for index in 0..4 {
                let due = (0..10_000)
                    .take_while(|&k| s.intended_ns(index, k) <= now)
                    .count();
                assert_eq!(
                    s.due_count(index, now),
                    due as u64,
                    "connection {index} at {now}"
                );
            }
        }
        // Deadlines never decrease along the slots: one cursor suffices.
        assert!((1..10_000).all(|m| s.slot_due_ns(m) >= s.slot_due_ns(m - 1)));
    }

    #[test]
    fn sending_stops_at_the_end_of_the_window() {
        let s = Schedule::new(1_000_000_000, (1, 0, 1), (5_000_000, 10_000_000));
        assert_eq!(s.due_count(0, u64::MAX), 10); // 0..9 ms; not the one at 10 ms
        assert_eq!(s.intended_in_window(0), 5); // 5..9 ms
        assert!(s.in_window(5_000_000) && !s.in_window(10_000_000) && !s.in_window(4_999_999));
    }

    #[test]
    fn unsent_messages_are_recorded_in_bulk_exactly_as_one_by_one() {
        // Two million messages at 100 ns apart: the bulk walk must land
        // each one in the bucket a record of its own would.
        let end = 1_000_000_000;
        let s = Schedule::new(100_007, (3, 1, 1), (250_000_000, end));
        let until = s.due_count(0, u64::MAX);
        let mut bulk = new_histogram();
        let recorded = s.record_unsent(0, (17, until), end, &mut bulk);
        let mut single = new_histogram();
        let first = s.intended_by(0, 250_000_000 - 1).max(17);
        for k in first..until {
            single
                .record(((end - s.intended_ns(0, k)) / 1000).max(1))
                .unwrap();
        }
        assert_eq!(recorded, until - first);
        assert_eq!(bulk.len(), single.len());
        let buckets = |h: &Histogram<u64>| {
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect::<Vec<_>>()
        };
        assert_eq!(buckets(&bulk), buckets(&single));
    }
}
