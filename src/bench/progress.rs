//! The progress lines: one clock, one source of truth.
//!
//! Each load thread *publishes* cumulative counters ([`Counters`]: plain
//! atomic stores, once per turn of its loop, nothing per message). The main
//! thread alone keeps time: at each of its own ticks it reads the counters
//! and prints the difference since its last tick. So no line can be
//! doubled or lost between two clocks, and the `measuring` lines, with the
//! last one (`measured`), add up to exactly the summary's message count.
//!
//! Phases, each on its own lines: `connecting` (N of M up, once a second
//! while under way, then once when done), `warmup` (replies, not
//! measured), `measuring`, and the final `measured` total.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::interrupt;
use super::latency::new_histogram;

/// How often a load thread merges its latencies into [`Counters::latency`]
/// (a histogram merge: too costly per message, cheap a few times a second).
pub const LATENCY_EVERY: Duration = Duration::from_millis(250);

/// One load thread's running totals, written by it and read by the main thread.
#[derive(Debug)]
pub struct Counters {
    /// Connections established so far.
    pub up: AtomicU64,
    /// Connections that failed to come up so far.
    pub failed: AtomicU64,
    /// Set once this thread is done connecting.
    pub connected: AtomicBool,
    /// Verified replies, warm-up and measured alike.
    pub replies: AtomicU64,
    /// Verified replies inside the measured window (the summary's count).
    pub measured: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Measured latencies, merged in by the thread every [`LATENCY_EVERY`].
    pub latency: Mutex<Histogram<u64>>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            up: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            replies: AtomicU64::new(0),
            measured: AtomicU64::new(0),
            open: AtomicU64::new(0),
            latency: Mutex::new(new_histogram()),
        }
    }
}

impl Counters {
    /// New counters, shared with the thread that fills them.
    pub fn shared() -> Arc<Counters> {
        Arc::new(Counters::default())
    }

    /// Merge a thread's latencies since its last call.
    pub fn add_latency(&self, latency: &Histogram<u64>) {
        if let Ok(mut so_far) = self.latency.lock() {
            let _ = so_far.add(latency);
        }
    }
}

/// When the lines fall, on the main thread's clock: each second of the
/// warm-up and its end, then each second measured and its end.
#[derive(Debug)]
pub struct LineClock {
    measure_from: Instant,
    measure_until: Instant,
    next: Option<Instant>,
}

impl LineClock {
    /// The clock of a run whose load began at `began`.
    pub fn new(began: Instant, warmup: Duration, duration: Duration) -> LineClock {
        let (measure_from, measure_until) = (began + warmup, began + warmup + duration);
        let first = began + Duration::from_secs(1);
        // No warm-up: no warm-up line (it would cover nothing).
        let first = if warmup.is_zero() {
            first.min(measure_until)
        } else {
            first.min(measure_from)
        };
        LineClock {
            measure_from,
            measure_until,
            next: Some(first),
        }
    }

    /// If a line is due at `now`: whether it covers measured time, and the
    /// clock moves on to the next line.
    pub fn due(&mut self, now: Instant) -> Option<bool> {
        let at = self.next.filter(|&at| at <= now)?;
        let second = Duration::from_secs(1);
        self.next = if at < self.measure_from {
            Some((at + second).min(self.measure_from))
        } else if at < self.measure_until {
            Some((at + second).min(self.measure_until))
        } else {
            None
        };
        Some(at > self.measure_from)
    }
}

fn sum(all: &[Arc<Counters>], field: impl Fn(&Counters) -> &AtomicU64) -> u64 {
    all.iter().map(|c| field(c).load(Ordering::Relaxed)).sum()
}

/// Prints progress lines on stderr (or only keeps time, when disabled).
pub struct Printer {
    enabled: bool,
    started: Instant,
    counters: Vec<Arc<Counters>>,
    /// `replies` and `measured` at the last line printed.
    last_replies: u64,
    last_measured: u64,
    last_at: Instant,
    /// Every thread's measured latencies at the last measuring line (the
    /// next line's second is the difference: see [`Interval`]).
    last_latency: Histogram<u64>,
}

/// One measuring line's interval, for the per-second record of the run
/// (`timeline.rs`): the measured replies exactly, and their latencies as
/// merged in by the threads so far (each merges every [`LATENCY_EVERY`],
/// so a sample can land up to that much later than its reply).
#[derive(Debug)]
pub struct Interval {
    /// Measured replies since the last line.
    pub messages: u64,
    /// Their corrected latencies, microseconds.
    pub latency: Histogram<u64>,
}

impl Printer {
    /// A printer over these threads' counters; prints only if `enabled`.
    pub fn new(enabled: bool, counters: Vec<Arc<Counters>>) -> Printer {
        let now = Instant::now();
        Printer {
            enabled,
            started: now,
            counters,
            last_replies: 0,
            last_measured: 0,
            last_at: now,
            last_latency: new_histogram(),
        }
    }

    fn line(&self, text: std::fmt::Arguments<'_>) {
        if self.enabled {
            let secs = self.started.elapsed().as_secs_f64();
            let _ = writeln!(std::io::stderr().lock(), "[{secs:>6.1}s] {text}");
        }
    }

    /// Until every thread is connected (or a stop is asked for): a
    /// `connecting` line each second, then one `connected` line.
    pub fn connecting(&mut self, requested: usize) {
        let done = |c: &Vec<Arc<Counters>>| c.iter().all(|c| c.connected.load(Ordering::Acquire));
        let mut next = Instant::now() + Duration::from_secs(1);
        while !done(&self.counters) {
            thread::sleep(interrupt::CHECK_EVERY.min(Duration::from_millis(20)));
            if Instant::now() >= next {
                next += Duration::from_secs(1);
                let (up, failed) = (
                    sum(&self.counters, |c| &c.up),
                    sum(&self.counters, |c| &c.failed),
                );
                self.line(format_args!(
                    "connecting  {up} of {requested} up, {failed} failed so far"
                ));
            }
        }
        let (up, failed) = (
            sum(&self.counters, |c| &c.up),
            sum(&self.counters, |c| &c.failed),
        );
        self.line(format_args!(
            "connected   {up} of {requested} up, {failed} failed"
        ));
    }

    /// The load starts now: lines count from here.
    pub fn load_starts(&mut self) {
        self.last_at = Instant::now();
        self.last_replies = sum(&self.counters, |c| &c.replies);
        self.last_measured = sum(&self.counters, |c| &c.measured);
    }

    /// A line for the interval since the last one: `warmup` (replies, not
    /// measured) or `measuring` (the measured replies, also returned as
    /// an [`Interval`]).
    pub fn tick(&mut self, measuring: bool) -> Option<Interval> {
        let now = Instant::now();
        let secs = (now - self.last_at).as_secs_f64().max(1e-9);
        self.last_at = now;
        let replies = sum(&self.counters, |c| &c.replies);
        let measured = sum(&self.counters, |c| &c.measured);
        let open = sum(&self.counters, |c| &c.open);
        let up = sum(&self.counters, |c| &c.up);
        let n = replies - self.last_replies;
        self.last_replies = replies;
        if !measuring {
            self.line(format_args!(
                "warmup      {n} msgs in {secs:.2} s = {:.0} msgs/s (not measured)  open {open} of {up}",
                n as f64 / secs
            ));
            // A warm-up line leaves the measured count alone: replies a load
            // thread counted as measured a moment before this clock's warm-up
            // ended (each thread keeps its own start) go on the first
            // measuring line, so the measuring lines still add up.
            return None;
        }
        let interval = self.interval_to(measured);
        let p99 = self.p99_so_far();
        self.line(format_args!(
            "measuring   {} msgs in {secs:.2} s = {:.0} msgs/s  p99 so far {p99}  open {open} of {up}",
            interval.messages,
            interval.messages as f64 / secs
        ));
        Some(interval)
    }

    /// After the threads are done: the measured replies not yet on a line
    /// (returned as the last [`Interval`]), and the total, which is the
    /// summary's.
    pub fn finish(&mut self) -> (u64, Interval) {
        let measured = sum(&self.counters, |c| &c.measured);
        let interval = self.interval_to(measured);
        self.line(format_args!(
            "measured    {measured} msgs in all, the summary's count ({} since the last line)",
            interval.messages
        ));
        (measured, interval)
    }

    /// The measured replies and latencies since the last measuring line,
    /// which this one becomes.
    fn interval_to(&mut self, measured: u64) -> Interval {
        let messages = measured - self.last_measured;
        self.last_measured = measured;
        let all = self.latency_so_far();
        let mut latency = all.clone();
        // Counts only ever grow, so the difference is exact.
        let _ = latency.subtract(&self.last_latency);
        self.last_latency = all;
        Interval { messages, latency }
    }

    fn latency_so_far(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for c in &self.counters {
            if let Ok(h) = c.latency.lock() {
                let _ = all.add(&*h);
            }
        }
        all
    }

    /// The p99 of every measured reply so far (as of the last measuring line).
    fn p99_so_far(&self) -> String {
        let all = &self.last_latency;
        if all.is_empty() {
            "n/a (no reply yet)".into()
        } else {
            format!("{} us", all.value_at_quantile(0.99))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line of a run, as (seconds after the start, measuring).
    fn lines(warmup_ms: u64, duration_ms: u64) -> Vec<(u64, bool)> {
        let began = Instant::now();
        let mut clock = LineClock::new(
            began,
            Duration::from_millis(warmup_ms),
            Duration::from_millis(duration_ms),
        );
        let mut out = Vec::new();
        let mut now = began;
        while now < began + Duration::from_secs(100) {
            if let Some(measuring) = clock.due(now) {
                out.push(((now - began).as_millis() as u64, measuring));
            }
            now += Duration::from_millis(1);
        }
        out
    }

    #[test]
    fn a_line_each_second_of_each_phase_and_one_at_its_end() {
        assert_eq!(
            lines(1500, 2500),
            [
                (1000, false),
                (1500, false),
                (2500, true),
                (3500, true),
                (4000, true)
            ]
        );
        // No warm-up line when there is no warm-up; no doubled line at the end.
        assert_eq!(lines(0, 2000), [(1000, true), (2000, true)]);
        assert_eq!(lines(0, 300), [(300, true)]);
    }
}
