//! Deadlines (idle, stalled output, protocol timers) without a syscall or an
//! allocation per message.
//!
//! Time is read once per loop turn ([`Clock::now_ms`], a vDSO call, not a
//! syscall) and kept as milliseconds since the reactor started. That
//! reading is the moment the turn began, rounded down; work later in the
//! turn happens after it, up to a whole turn later on a busy machine. For
//! stamps of activity (idle, stalled output) that only makes a timeout
//! start at most one turn early. A deadline a protocol *sets*, though, is a
//! promise — "not before `d` from now" — so it is taken from a fresh reading
//! rounded up ([`Clock::now_ms_ceil`]): a deadline never fires before `d`
//! has passed since it was set, however long the turn ran. Protocols set
//! deadlines per message at most, and echo-like ones never, so the plain
//! per-message path reads no clock.
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
//! Lazy deletion alone lets stale entries pile up: with `--idle-timeout
//! 3600` every short-lived connection leaves an entry that pops an hour
//! later. So once per loop turn the reactor offers the queue a chance to
//! [`compact`](DeadlineQueue::compact_if_needed): when the heap holds more
//! than twice as many entries as could possibly be live (at most one per
//! open connection) plus [`COMPACT_SLACK`], it keeps only the live ones.
//!
//! Invariant (at each compaction check): `len() <= 2 * live_at_most +
//! COMPACT_SLACK`. A compaction scans `n` entries and removes more than
//! `n / 2` of them, each pushed once, so its cost is amortised O(log n) per
//! schedule — the price of the push itself — and nothing on the
//! per-message path changes.
//!
//! Trade-off: a binary heap is O(log n) per schedule; a timing wheel is O(1)
//! but coarser and harder to read. Schedules happen about once per timeout
//! period per connection, not per message, so the heap is cheap enough.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// "No deadline": later than any real one.
pub const NEVER: u64 = u64::MAX;

/// Milliseconds since the reactor started.
///
/// It counts whole milliseconds of `CLOCK_MONOTONIC` since the one it
/// started in: `floor(now / 1 ms) - floor(start / 1 ms)`, not
/// `floor((now - start) / 1 ms)`. Both readings ([`Clock::now_ms`] and
/// [`Clock::now_ms_ceil`]) count from the same whole millisecond, so a
/// deadline still never fires early; and whole seconds times 1 000 plus a
/// 32-bit division of the nanoseconds is about half the instructions of a
/// 64-bit nanosecond count divided down (this is read every loop turn).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// `CLOCK_MONOTONIC` at the start, in nanoseconds (u64 holds 584 years).
    start_ns: u64,
    /// The whole millisecond the start fell in: reading 0.
    start_tick: u64,
}

impl Clock {
    /// A clock reading 0 now.
    pub fn start() -> Self {
        Self::from_start_ns(monotonic().as_ns())
    }

    /// A clock that has already run for `elapsed` (tests inject one, to
    /// stand for a loop turn that began long ago).
    pub fn already_run(elapsed: Duration) -> Self {
        let elapsed_ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        Self::from_start_ns(monotonic().as_ns().saturating_sub(elapsed_ns))
    }

    fn from_start_ns(start_ns: u64) -> Self {
        Clock {
            start_ns,
            start_tick: start_ns / 1_000_000,
        }
    }

    /// Milliseconds since [`Clock::start`], rounded down: the loop turn's
    /// reading, and when to fire (a deadline `due` fires once this is
    /// `>= due`).
    ///
    /// Read once per loop turn, so it is on every message's path: plain
    /// integer arithmetic on `clock_gettime` (a vDSO call, no syscall),
    /// about ten instructions with the call's set-up, where
    /// `Instant::elapsed().as_millis()`'s checked timespec subtraction and
    /// 128-bit millisecond count were ~45 (docs/BENCHMARKS.md, "A turn of
    /// the loop at one connection"). The division by a constant compiles
    /// to a multiply.
    #[inline]
    pub fn now_ms(&self) -> u64 {
        monotonic().whole_ms().wrapping_sub(self.start_tick)
    }

    /// Milliseconds since the start, rounded up: where a deadline set now
    /// counts from. With [`Clock::now_ms`] rounding down on the firing
    /// side, `due_after(now_ms_ceil(), d)` fires no sooner than `d` after
    /// this call.
    pub fn now_ms_ceil(&self) -> u64 {
        let now = monotonic();
        let part = u64::from(!now.nanos.is_multiple_of(1_000_000));
        (now.whole_ms() + part).wrapping_sub(self.start_tick)
    }

    /// Nanoseconds elapsed since the start.
    pub fn elapsed_ns(&self) -> u64 {
        monotonic().as_ns().saturating_sub(self.start_ns)
    }
}

/// A `CLOCK_MONOTONIC` reading: the clock `Instant` reads, without its
/// checked arithmetic.
#[derive(Debug, Clone, Copy)]
struct Monotonic {
    secs: u64,
    /// Below 1 000 000 000: fits 32 bits, so dividing it is cheap.
    nanos: u32,
}

impl Monotonic {
    #[inline]
    fn whole_ms(self) -> u64 {
        // No overflow for 584 million years of uptime.
        self.secs * 1_000 + u64::from(self.nanos / 1_000_000)
    }

    fn as_ns(self) -> u64 {
        self.secs
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(self.nanos))
    }
}

#[inline]
fn monotonic() -> Monotonic {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec. CLOCK_MONOTONIC exists
    // on every supported system; were the call refused (a seccomp filter),
    // it would leave the zeros, not garbage.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Monotonic {
        secs: ts.tv_sec as u64,
        nanos: ts.tv_nsec as u32,
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

/// Entries a queue may hold beyond twice the live bound before it compacts:
/// small queues never pay for a rebuild.
pub const COMPACT_SLACK: usize = 64;

/// A min-heap of [`Entry`]s, earliest first.
#[derive(Debug, Default)]
pub struct DeadlineQueue {
    heap: BinaryHeap<Reverse<Entry>>,
    /// Entries the last compaction kept *beyond* the caller's bound (0 when
    /// the caller kept its promise). Raises the next threshold, so a wrong
    /// bound costs memory, never a rebuild on every turn.
    excess_kept: usize,
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

    /// Whether [`Self::compact_if_needed`] could rebuild the heap: the
    /// quick look a loop turn takes before calling it.
    #[inline]
    pub fn may_need_compaction(&self, live_at_most: usize) -> bool {
        self.heap.len() > COMPACT_SLACK
            && self.heap.len()
                > live_at_most
                    .saturating_add(self.excess_kept)
                    .saturating_mul(2)
    }

    /// Drop stale entries if they may outnumber live ones.
    ///
    /// `live_at_most` bounds how many entries can be live — for the reactor,
    /// the number of open connections, since each has at most one live
    /// entry. `is_live` tells a live entry from a stale one. Nothing happens
    /// (one comparison) while `len() <= 2 * live_at_most + COMPACT_SLACK`;
    /// past that, the heap is rebuilt from its live entries (duplicates of
    /// one entry counted once) and the number removed is returned.
    ///
    /// Call it at a point where `is_live` is cheap and exact, e.g. once per
    /// loop turn after closed connections are reaped.
    #[inline]
    pub fn compact_if_needed(
        &mut self,
        live_at_most: usize,
        is_live: impl FnMut(&Entry) -> bool,
    ) -> usize {
        // Asked once per loop turn: the common answer (no) is inlined; a
        // heap that small never needs a rebuild, whatever else holds.
        if self.heap.len() <= COMPACT_SLACK {
            return 0;
        }
        let bound = live_at_most.saturating_add(self.excess_kept);
        let threshold = bound.saturating_mul(2).saturating_add(COMPACT_SLACK);
        if self.heap.len() <= threshold {
            return 0;
        }
        self.compact(live_at_most, is_live)
    }

    /// Rebuild the heap from its live entries (see `compact_if_needed`).
    #[cold]
    fn compact(&mut self, live_at_most: usize, mut is_live: impl FnMut(&Entry) -> bool) -> usize {
        let before = self.heap.len();
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        entries.retain(|Reverse(entry)| is_live(entry));
        // A connection can leave two identical entries (an entry superseded,
        // then the same moment scheduled again): keep one. Sorting is
        // O(n log n), still amortised per push (see the module docs).
        entries.sort_unstable();
        entries.dedup();
        self.excess_kept = entries.len().saturating_sub(live_at_most);
        self.heap = BinaryHeap::from(entries);
        before - self.heap.len()
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

    // ---- compaction ----

    /// A stand-in for the reactor's connections: key -> (serial, scheduled_ms),
    /// `None` once closed. Live means what the reactor checks when an entry pops.
    struct FakeConns {
        slots: Vec<Option<(u32, u64)>>,
    }

    impl FakeConns {
        fn is_live(&self, entry: &Entry) -> bool {
            matches!(self.slots.get(entry.key), Some(Some((serial, due)))
                if *serial == entry.serial && *due == entry.due_ms)
        }
        fn open(&self) -> usize {
            self.slots.iter().flatten().count()
        }
    }

    #[test]
    fn churn_with_a_long_timeout_keeps_the_heap_within_twice_the_live_entries() {
        // 100 connections at a time; each lives a few "turns", is scheduled
        // an hour ahead, often moves its deadline earlier (superseding its
        // entry), then closes. Without compaction every entry would stay an hour.
        const OPEN: usize = 100;
        let mut conns = FakeConns {
            slots: vec![None; OPEN],
        };
        let mut queue = DeadlineQueue::default();
        let (mut serial, mut pushes, mut scanned) = (0u32, 0usize, 0usize);
        for turn in 0..100_000u64 {
            let key = (turn as usize * 7) % OPEN;
            let now = turn;
            match conns.slots[key] {
                // Close it: its entry becomes stale.
                Some(_) if turn % 3 == 0 => conns.slots[key] = None,
                // Its deadline moved earlier: a new entry supersedes the old.
                Some((s, due)) => {
                    let earlier = due - 1;
                    conns.slots[key] = Some((s, earlier));
                    queue.schedule(Entry {
                        due_ms: earlier,
                        key,
                        serial: s,
                    });
                    pushes += 1;
                }
                None => {
                    serial += 1;
                    let due = now + 3_600_000;
                    conns.slots[key] = Some((serial, due));
                    queue.schedule(Entry {
                        due_ms: due,
                        key,
                        serial,
                    });
                    pushes += 1;
                }
            }
            let len_before = queue.len();
            if queue.compact_if_needed(conns.open(), |e| conns.is_live(e)) > 0 {
                scanned += len_before;
            }
            let live = queue
                .heap
                .iter()
                .filter(|Reverse(e)| conns.is_live(e))
                .count();
            assert!(
                queue.len() <= 2 * live + COMPACT_SLACK,
                "turn {turn}: {} entries, {live} live",
                queue.len()
            );
            assert_eq!(live, conns.open(), "turn {turn}: a live entry was dropped");
        }
        // Amortised: compactions scanned at most a few entries per push.
        assert!(
            scanned <= 3 * pushes,
            "scanned {scanned} for {pushes} pushes"
        );
    }

    #[test]
    fn compaction_keeps_every_live_entry_in_order() {
        let mut queue = DeadlineQueue::default();
        for key in 0..1000 {
            queue.schedule(entry(10_000 - key as u64, key));
        }
        let live = |e: &Entry| e.key.is_multiple_of(10); // 100 live, 900 stale
        assert_eq!(queue.compact_if_needed(100, live), 900);
        assert_eq!(queue.len(), 100);
        let mut last = 0;
        while let Some(e) = queue.pop_due(u64::MAX) {
            assert!(live(&e) && e.due_ms >= last);
            last = e.due_ms;
        }
    }

    #[test]
    fn a_small_or_mostly_live_queue_is_left_alone() {
        let mut queue = DeadlineQueue::default();
        for key in 0..COMPACT_SLACK {
            queue.schedule(entry(1, key));
        }
        assert_eq!(queue.compact_if_needed(0, |_| false), 0, "within the slack");
        assert_eq!(queue.len(), COMPACT_SLACK);
        for key in 0..500 {
            queue.schedule(entry(2, key));
        }
        assert_eq!(queue.compact_if_needed(500, |_| true), 0, "all live");
    }

    #[test]
    fn duplicate_entries_are_kept_once_and_a_wrong_bound_does_not_rebuild_every_turn() {
        let mut queue = DeadlineQueue::default();
        for _ in 0..200 {
            queue.schedule(entry(5, 1)); // the same entry again and again
        }
        assert_eq!(queue.compact_if_needed(1, |_| true), 199);
        assert_eq!(queue.len(), 1);

        // The caller claims at most 10 live entries but 300 are: the first
        // compaction finds out, the next turns leave the queue alone.
        let mut queue = DeadlineQueue::default();
        for key in 0..300 {
            queue.schedule(entry(5, key));
        }
        assert_eq!(queue.compact_if_needed(10, |_| true), 0);
        assert_eq!(queue.len(), 300);
        assert_eq!(queue.compact_if_needed(10, |_| panic!("rebuilt again")), 0);
    }

    #[test]
    fn a_deadline_counted_from_the_rounded_up_reading_fires_no_sooner_than_asked() {
        // Clocks 10.0–10.999 ms into their run, started anywhere within a
        // millisecond: a floor reading would fire up to 1 ms early.
        for micros in [10_000, 10_001, 10_500, 10_900, 10_999] {
            let clock = Clock::already_run(Duration::from_micros(micros));
            let set_at = clock.elapsed_ns();
            let due = due_after(clock.now_ms_ceil(), 200);
            // It fires at the first moment `now_ms()` (the floor) reaches
            // `due`: the start of that whole millisecond of the clock.
            let fires_at = (due + clock.start_tick) * 1_000_000 - clock.start_ns;
            assert!(
                fires_at >= set_at + 200_000_000,
                "fires at {fires_at} ns, set at {set_at} ns"
            );
        }
    }

    #[test]
    fn the_floor_and_ceiling_readings_count_from_the_same_millisecond() {
        let clock = Clock::start();
        let floor = clock.now_ms();
        let ceil = clock.now_ms_ceil();
        let floor_after = clock.now_ms();
        assert!(
            floor <= ceil && ceil <= floor_after + 1,
            "{floor} {ceil} {floor_after}"
        );
        let run = Clock::already_run(Duration::from_secs(3));
        assert!((3_000..3_100).contains(&run.now_ms()), "{}", run.now_ms());
    }

    #[test]
    fn durations_round_up_to_whole_milliseconds_and_saturate() {
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_secs(2)), 2000);
        assert_eq!(millis(Duration::MAX), NEVER);
        assert_eq!(due_after(5, NEVER), NEVER);
    }
}
