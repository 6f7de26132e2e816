//! Deadlines (idle, stalled output, protocol timers) without a syscall or an
//! allocation per message.
//!
//! Time is read once per loop turn ([`Clock::now_ms`], a vDSO call, not a
//! syscall) and kept as milliseconds since the reactor started.
//!
//! Each connection keeps plain timestamps (last activity, last output
//! progress, the protocol's deadline) and at most one *live* entry in a
//! [`DeadlineQueue`]: the earliest moment one of them could expire.
//! Activity just overwrites a timestamp — the heap is not touched per
//! message. When an entry comes due, the reactor recomputes the real
//! deadline from the timestamps: expired → act; later → schedule again.
//! That is lazy deletion: stale entries (for a connection since closed, or
//! superseded by an earlier one) are recognised and dropped when popped.
//!
//! Trade-off: a binary heap is O(log n) per schedule; a timing wheel is O(1)
//! but coarser and harder to read. Schedules happen about once per timeout
//! period per connection, not per message, so the heap is cheap enough.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// "No deadline": later than any real one.
pub const NEVER: u64 = u64::MAX;

/// Milliseconds since the reactor started.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock reading 0 now.
    pub fn start() -> Self {
        Clock {
            start: Instant::now(),
        }
    }

    /// Milliseconds elapsed since [`Clock::start`].
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

/// A duration in whole milliseconds, rounded up so a deadline never fires early.
pub fn millis(duration: Duration) -> u64 {
    let ms = duration.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(NEVER)
}

/// `now + after`, saturating at [`NEVER`].
pub fn due_after(now_ms: u64, after_ms: u64) -> u64 {
    now_ms.saturating_add(after_ms)
}

/// One scheduled check: at `due_ms`, look at connection `key` — if it is
/// still the one with this `serial` (keys are reused, serials are not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// When to look (ms since start).
    pub due_ms: u64,
    /// The connection's slab key.
    pub key: usize,
    /// The connection's serial number.
    pub serial: u32,
}

/// A min-heap of [`Entry`]s, earliest first.
#[derive(Debug, Default)]
pub struct DeadlineQueue {
    heap: BinaryHeap<Reverse<Entry>>,
}

impl DeadlineQueue {
    /// Schedule a check.
    pub fn schedule(&mut self, entry: Entry) {
        self.heap.push(Reverse(entry));
    }

    /// When the earliest check is due, if any.
    pub fn next_due(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse(entry)| entry.due_ms)
    }

    /// Take the earliest entry if it is due at `now_ms`.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<Entry> {
        match self.heap.peek() {
            Some(Reverse(entry)) if entry.due_ms <= now_ms => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Entries held (live and stale).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// No entries held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(due_ms: u64, key: usize) -> Entry {
        Entry {
            due_ms,
            key,
            serial: 0,
        }
    }

    #[test]
    fn entries_come_out_earliest_first_and_only_when_due() {
        let mut queue = DeadlineQueue::default();
        queue.schedule(entry(300, 1));
        queue.schedule(entry(100, 2));
        queue.schedule(entry(200, 3));
        assert_eq!(queue.next_due(), Some(100));
        assert_eq!(queue.pop_due(99), None);
        assert_eq!(queue.pop_due(250).map(|e| e.key), Some(2));
        assert_eq!(queue.pop_due(250).map(|e| e.key), Some(3));
        assert_eq!(queue.pop_due(250), None);
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn durations_round_up_to_whole_milliseconds_and_saturate() {
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_secs(2)), 2000);
        assert_eq!(millis(Duration::MAX), NEVER);
        assert_eq!(due_after(5, NEVER), NEVER);
    }
}
