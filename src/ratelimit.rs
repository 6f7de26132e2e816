//! Rate-limiting log lines a client can trigger.
//!
//! A reactor that logs once per client event can be made to spend its time
//! writing to stderr — or to block on it, if stderr is a slow pipe. Every
//! warning a client (or the kernel, under pressure) can cause goes through a
//! [`WarnLimiter`]: at most one line per interval, and that line says how
//! many were held back since the last one.

use crate::timers::due_after;

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
}
