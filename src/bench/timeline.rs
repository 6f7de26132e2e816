//! A run second by second: messages and latency per second of the
//! measured window, for the `--plot` chart ("msgs/s and p99 per second")
//! and the `--histogram-log` file (HdrHistogram's interval log, one
//! interval per second).
//!
//! The main thread's progress clock ([`progress`](super::progress)) ends
//! an [`Interval`] at every whole second after the start (and at the end
//! of the warm-up and of the measured window); an interval that ends at
//! second `k` covers `[k-1, k)` and is filed by its end rounded to the
//! nearest second. Message counts are exact per second; latencies are
//! those the load threads had merged in by then (every
//! [`LATENCY_EVERY`](super::progress::LATENCY_EVERY)), so a sample may
//! land in the second after its reply — every sample is kept.
//!
//! Memory stays bounded however long the run: only the two newest seconds
//! keep a live histogram; older ones are kept compressed (HdrHistogram's
//! V2 deflate, a few hundred bytes) and decoded again only if a very late
//! tick arrives for them.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

use super::latency::new_histogram;
use super::latency::{decode, encode};
use super::progress::Interval;
use super::schema::Second;

/// One second of the run, as filed so far.
struct Slot {
    messages: u64,
    live: Option<Histogram<u64>>,
    /// The histogram compressed, when `live` is `None`.
    sealed: String,
}

impl Slot {
    fn histogram(&mut self) -> &mut Histogram<u64> {
        let sealed = &self.sealed;
        self.live
            .get_or_insert_with(|| decode(sealed).unwrap_or_else(|_| new_histogram()))
    }

    fn seal(&mut self) {
        if let Some(h) = self.live.take() {
            self.sealed = encode(&h);
        }
    }
}

/// The per-second record of one run (or one step of a sweep).
pub struct Timeline {
    began: Instant,
    /// Seconds from `began` to the start of the measured window.
    warmup_s: f64,
    /// Length of the measured window.
    duration_s: f64,
    /// Wall-clock time of the measured window's start (the log's time base).
    measured_from: SystemTime,
    slots: Vec<Slot>,
}

impl Timeline {
    /// A run that began at `began` and measures from `warmup` on, for `duration`.
    pub fn new(began: Instant, warmup: Duration, duration: Duration) -> Timeline {
        Timeline {
            began,
            warmup_s: warmup.as_secs_f64(),
            duration_s: duration.as_secs_f64(),
            measured_from: SystemTime::now() + warmup,
            slots: Vec::new(),
        }
    }

    /// File an interval that ended at `ended`.
    pub fn add(&mut self, ended: Instant, tick: &Interval) {
        if tick.messages == 0 && tick.latency.is_empty() {
            return; // an idle second: nothing to file
        }
        let at = ended.saturating_duration_since(self.began).as_secs_f64();
        // An interval ending at second k covers [k-1, k).
        let index = (at.round() as usize).saturating_sub(1);
        while self.slots.len() <= index {
            self.slots.push(Slot {
                messages: 0,
                live: None,
                sealed: encode(&new_histogram()),
            });
        }
        let slot = &mut self.slots[index];
        slot.messages += tick.messages;
        let _ = slot.histogram().add(&tick.latency);
        // Only the two newest seconds stay live.
        for old in self.slots.iter_mut().rev().skip(2) {
            if old.live.is_none() {
                break;
            }
            old.seal();
        }
    }

    /// The seconds that overlap the measured window, as (start within the
    /// window, negative for the first if the warmup is not whole seconds;
    /// messages; histogram of that second).
    fn seconds(&mut self) -> Vec<(f64, u64, Histogram<u64>)> {
        let (warmup, duration) = (self.warmup_s, self.duration_s);
        let mut out = Vec::new();
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let start = index as f64 - warmup;
            // A second wholly outside the window holds nothing measured
            // (its messages were filed late: keep them all the same).
            let outside = start + 1.0 <= 0.0 || start >= duration;
            if outside && slot.messages == 0 {
                continue;
            }
            let h = slot.histogram().clone();
            slot.seal();
            out.push((start, slot.messages, h));
        }
        out
    }

    /// The seconds as the report carries them (key `seconds`): when each
    /// ends within the measured window, its msgs/s and corrected p99.
    pub fn seconds_measured(&mut self) -> Vec<Second> {
        let duration = self.duration_s;
        self.seconds()
            .iter()
            .map(|(start, messages, h)| {
                // The part of this second inside the measured window.
                let (from, to) = (start.max(0.0), (start + 1.0).min(duration));
                let len = to - from;
                Second {
                    t_s: to,
                    messages: *messages,
                    msgs_per_sec: if len > 0.0 {
                        *messages as f64 / len
                    } else {
                        0.0
                    },
                    p99_us: (!h.is_empty()).then(|| h.value_at_quantile(0.99)),
                    max_us: (!h.is_empty()).then(|| h.max()),
                }
            })
            .collect()
    }

    /// Write the intervals into `log` (HdrHistogram's interval log format),
    /// timestamped from `base`, each tagged `tag` if given.
    pub fn write_intervals<W: Write>(
        &mut self,
        log: &mut LogFile<W>,
        tag: Option<&str>,
    ) -> io::Result<()> {
        let offset = self
            .measured_from
            .duration_since(log.base)
            .unwrap_or_default();
        let seconds = self.seconds();
        log.intervals
            .extend(seconds.into_iter().map(|(start, _, h)| {
                let start = offset + Duration::from_secs_f64(start.max(0.0));
                (start, tag.map(str::to_string), encode(&h))
            }));
        Ok(())
    }
}

/// An interval log being gathered: the histograms of each second of one run
/// or of every step of a sweep, written at the end.
pub struct LogFile<W: Write> {
    out: W,
    base: SystemTime,
    comment: String,
    intervals: Vec<(Duration, Option<String>, String)>,
}

impl LogFile<BufWriter<File>> {
    /// Create `path` now (so a bad path is refused before the run).
    pub fn create(path: &Path, comment: String) -> io::Result<Self> {
        let file = File::create(path).map_err(|e| {
            io::Error::new(e.kind(), format!("--histogram-log {}: {e}", path.display()))
        })?;
        Ok(LogFile::new(BufWriter::new(file), comment))
    }
}

impl<W: Write> LogFile<W> {
    /// A log written into `out`, its time base now.
    pub fn new(out: W, comment: String) -> Self {
        LogFile {
            out,
            base: SystemTime::now(),
            comment,
            intervals: Vec::new(),
        }
    }

    /// Write the header and every interval, in time order; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        let mut serializer = V2DeflateSerializer::new();
        let mut builder = IntervalLogWriterBuilder::new();
        builder
            .add_comment(&self.comment)
            .add_comment(
                "latency in microseconds, corrected (from the intended send time in open loop)",
            )
            .with_start_time(self.base)
            .with_base_time(self.base);
        let mut writer = builder.begin_log_with(&mut self.out, &mut serializer)?;
        self.intervals.sort_by_key(|(start, _, _)| *start);
        for (start, tag, encoded) in &self.intervals {
            let h = decode(encoded).map_err(io::Error::other)?;
            writer
                .write_histogram(
                    &h,
                    *start,
                    Duration::from_secs(1),
                    tag.as_deref().and_then(Tag::new),
                )
                .map_err(|e| io::Error::other(format!("histogram log: {e:?}")))?;
        }
        drop(writer);
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;

    fn tick(samples: &[u64]) -> Interval {
        let mut latency = new_histogram();
        for &s in samples {
            latency.record(s).unwrap();
        }
        Interval {
            messages: samples.len() as u64,
            latency,
        }
    }

    #[test]
    fn the_interval_log_reads_back_with_every_sample() {
        let mut timeline = Timeline::new(Instant::now(), Duration::ZERO, Duration::from_secs(3));
        let second = |k| timeline.began + Duration::from_secs(k);
        let (one, two) = (second(1), second(2));
        timeline.add(one, &tick(&[10, 20, 30]));
        timeline.add(one, &tick(&[40]));
        timeline.add(two, &tick(&[5000, 6000]));
        let filed: u64 = timeline.seconds_measured().iter().map(|s| s.messages).sum();
        assert_eq!(filed, 6);
        let mut log = LogFile::new(Vec::new(), "test".into());
        timeline.write_intervals(&mut log, Some("step-1")).unwrap();
        let bytes = log.finish().unwrap();
        let mut total = 0;
        let mut intervals = 0;
        for entry in IntervalLogIterator::new(&bytes) {
            if let LogEntry::Interval(interval) = entry.unwrap() {
                intervals += 1;
                assert_eq!(interval.tag().map(|t| t.as_str()), Some("step-1"));
                let raw = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    interval.encoded_histogram(),
                )
                .unwrap();
                let h: Histogram<u64> = Deserializer::new().deserialize(&mut &raw[..]).unwrap();
                total += h.len();
            }
        }
        assert_eq!((intervals, total), (2, 6));
    }

    #[test]
    fn old_seconds_are_kept_compressed() {
        let mut timeline = Timeline::new(Instant::now(), Duration::ZERO, Duration::from_secs(9));
        for k in 1..=5 {
            // Interval k ends at second k.
            let ended = timeline.began + Duration::from_secs(k);
            timeline.add(ended, &tick(&[7]));
        }
        let live = timeline.slots.iter().filter(|s| s.live.is_some()).count();
        assert!(live <= 2, "{live} live histograms");
        assert_eq!(timeline.seconds_measured().len(), 5);
    }
}
