//! Rate-limiting log lines a client can trigger.
//!
//! A reactor that logs once per client event can be made to spend its time
//! writing to stderr — or to block on it, if stderr is a slow pipe. Every
//! warning a client (or the kernel, under pressure) can cause goes through a
//! [`WarnLimiter`]: at most one line per interval, and that line says how
//! many were held back since the last one.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::timers::due_after;

/// One client-triggered warning of a kind per this many milliseconds.
pub const CLIENT_WARN_INTERVAL_MS: u64 = 10_000;

/// Rate-limits a warning to one per interval, counting what it held back.
#[derive(Debug, Default)]
pub struct WarnLimiter {
    next_ms: u64,
    suppressed: u64,
}

impl WarnLimiter {
    /// `Some(suppressed since the last one)` if a warning may be logged now.
    pub fn allow(&mut self, now_ms: u64, interval_ms: u64) -> Option<u64> {
        if now_ms < self.next_ms {
            self.suppressed += 1;
            return None;
        }
        self.next_ms = due_after(now_ms, interval_ms);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// A [`WarnLimiter`] for code that holds only `&self` and has no loop clock
/// (a protocol value shared by every connection): it reads the clock only
/// when a warning is about to be logged, never per message.
#[derive(Debug)]
pub struct SharedWarnLimiter {
    start: Instant,
    interval_ms: u64,
    // Atomics only so the owner can be `Send + Sync`; one thread uses it.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl SharedWarnLimiter {
    /// At most one warning per `interval_ms`.
    pub fn new(interval_ms: u64) -> Self {
        SharedWarnLimiter {
            start: Instant::now(),
            interval_ms,
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed since the last one)` if a warning may be logged now.
    pub fn allow(&self) -> Option<u64> {
        let now_ms = self.start.elapsed().as_millis() as u64;
        if now_ms < self.next_ms.load(Relaxed) {
            self.suppressed.fetch_add(1, Relaxed);
            return None;
        }
        self.next_ms
            .store(due_after(now_ms, self.interval_ms), Relaxed);
        Some(self.suppressed.swap(0, Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_limited_to_one_per_interval_and_count_the_rest() {
        let mut limiter = WarnLimiter::default();
        assert_eq!(limiter.allow(0, 1000), Some(0));
        assert_eq!(limiter.allow(10, 1000), None);
        assert_eq!(limiter.allow(999, 1000), None);
        assert_eq!(limiter.allow(1000, 1000), Some(2));
    }

    #[test]
    fn a_shared_limiter_lets_one_warning_through_per_interval() {
        let limiter = SharedWarnLimiter::new(60_000);
        assert_eq!(limiter.allow(), Some(0));
        assert_eq!(limiter.allow(), None);
        assert_eq!(limiter.allow(), None);
        let unlimited = SharedWarnLimiter::new(0);
        assert_eq!(unlimited.allow(), Some(0));
        assert_eq!(unlimited.allow(), Some(0));
    }
}
