//! The server-wide memory budget (`--max-memory`): plain numbers
//! and the decisions they lead to. No sockets, no `Poll`: the reactor feeds
//! it the bytes held (`BufferGauge::held_capacity`) and carries out what it
//! says (`reactor/memory.rs`).
//!
//! `--max-buffered` bounds one connection; this bounds them all. Three marks:
//!
//! ```text
//!  0 ──────────── low (½) ──────── high (¾) ──────── budget ──▶ held bytes
//!                  pressure ends     pressure starts:  evict the worst
//!                  (paused reads     connections with  holders down to
//!                  resume)           output waiting    the low mark
//!                                    stop being read
//! ```
//!
//! - Past the **high-water mark**, connections whose replies are waiting
//!   unread stop being read (so they stop growing). A connection with no
//!   output waiting — a client that reads its replies — keeps being read.
//! - At the **budget**, connections are closed (`closed_evicted`) until
//!   the total is under the **low-water mark** (Redis 7 evicts clients
//!   over `maxmemory-clients` the same way): clients never seen reading a
//!   queued reply first, then the others, output stuck longest first and
//!   the largest among equals; connections holding only a partial message
//!   of input (at most `--max-line` each) last ([`worst_first`]).
//! - Below the low-water mark the pressure is over; reads paused by it
//!   resume. The gap between the marks keeps the reactor from flapping
//!   (and from scanning for paused connections) on every byte.
//!
//! Why these marks: the high mark leaves a quarter of the budget for what
//! connections that are still read may queue before they are paused in
//! turn (one read, at most 64 KiB each). An eviction frees down to the low
//! mark, half the budget at least, so an eviction pass (a scan of every
//! connection) runs at most once per half-budget of memory a flood can pin;
//! and a quarter lies between the end of one pressure episode and the start
//! of the next, so the scan for paused reads runs at most once per
//! quarter-budget. docs/ARCHITECTURE.md has the measurements.

/// `--max-memory`'s default: 64 MiB held for all connections together.
pub const DEFAULT_MAX_MEMORY_BYTES: usize = 64 * 1024 * 1024;

/// The three marks, derived from the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marks {
    /// Evict down to below this; pressure ends below it.
    pub low: usize,
    /// Pressure starts here: reads of connections with output waiting pause.
    pub high: usize,
    /// Never hold more than this (after the read that crosses it).
    pub budget: usize,
}

impl Marks {
    /// The marks for `--max-memory BYTES`; `None` for 0 (no budget).
    pub fn for_budget(budget: usize) -> Option<Marks> {
        (budget > 0).then(|| Marks {
            low: budget / 2,
            high: budget / 4 * 3,
            budget,
        })
    }

    /// The high-water mark connections compare against (`usize::MAX`: never).
    pub fn high_water(marks: Option<Marks>) -> usize {
        marks.map_or(usize::MAX, |m| m.high)
    }
}

/// What the reactor should do now about memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetAction {
    /// Nothing changed.
    Nothing,
    /// Held bytes passed the high-water mark: pressure begins (log it).
    PressureStarts,
    /// Held bytes reached the budget: close the worst holders until under
    /// `down_to` (the low-water mark).
    Evict {
        /// Stop evicting once held bytes are below this.
        down_to: usize,
    },
    /// Held bytes fell under the low-water mark: pressure is over (log it,
    /// and resume the reads it paused).
    PressureEnds,
}

/// The budget's state: its marks and whether pressure is on.
#[derive(Debug, Clone, Copy)]
pub struct MemoryBudget {
    marks: Option<Marks>,
    under_pressure: bool,
    /// Held bytes below this need no look ([`MemoryBudget::is_quiet`]):
    /// the high-water mark, or 0 under pressure. Kept with the two fields
    /// it follows from, so the per-turn question is one compare.
    quiet_below: usize,
}

impl MemoryBudget {
    /// A budget of `max_memory` bytes (0: none — nothing is ever done).
    pub fn new(max_memory: usize) -> Self {
        let marks = Marks::for_budget(max_memory);
        MemoryBudget {
            marks,
            under_pressure: false,
            quiet_below: Marks::high_water(marks),
        }
    }

    /// The marks, if there is a budget.
    pub fn marks(&self) -> Option<Marks> {
        self.marks
    }

    /// Whether pressure is on (between crossing the high mark and falling
    /// under the low one).
    pub fn under_pressure(&self) -> bool {
        self.under_pressure
    }

    /// True when `held` needs no look at all: not under pressure and below
    /// the high mark (always, without a budget). The loop asks this every
    /// turn, so it is one compare, inlined; [`MemoryBudget::check`] runs
    /// only when it says no.
    #[inline]
    pub fn is_quiet(&self, held: usize) -> bool {
        held < self.quiet_below
    }

    /// Given the bytes held now, what to do. Call it after anything that
    /// may have grown the total, and once per loop turn.
    pub fn check(&mut self, held: usize) -> BudgetAction {
        let Some(marks) = self.marks else {
            return BudgetAction::Nothing;
        };
        if held >= marks.budget {
            self.set_pressure(true);
            return BudgetAction::Evict { down_to: marks.low };
        }
        if !self.under_pressure && held >= marks.high {
            self.set_pressure(true);
            return BudgetAction::PressureStarts;
        }
        if self.under_pressure && held < marks.low {
            self.set_pressure(false);
            return BudgetAction::PressureEnds;
        }
        BudgetAction::Nothing
    }

    fn set_pressure(&mut self, on: bool) {
        self.under_pressure = on;
        self.quiet_below = if on { 0 } else { Marks::high_water(self.marks) };
    }
}

/// One connection as eviction sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// The connection's slab key.
    pub key: usize,
    /// Heap bytes it holds.
    pub held: usize,
    /// Its queued output has drained completely at least once: it reads.
    pub has_read_replies: bool,
    /// How long its waiting output has not moved (ms); `None` when it has
    /// no output waiting (it holds only a partial message of input).
    pub output_stuck_ms: Option<u64>,
}

/// Which group a holder is evicted in: lower first.
fn group(holder: &Holder) -> u8 {
    match (holder.output_stuck_ms, holder.has_read_replies) {
        // Output waiting, and none ever drained: never seen reading.
        (Some(_), false) => 0,
        // Output waiting, but some drained before.
        (Some(_), true) => 1,
        // Only a partial message of input (at most --max-line).
        (None, _) => 2,
    }
}

/// Order `holders` worst first: connections never seen reading a queued
/// reply, then the others with output waiting, then input-only holders; in
/// each group the output stuck longest first, then the largest. Both
/// signals are needed: stuck time alone picks a reader that the scheduler
/// starved for a moment over a never-reader that just filled its socket
/// buffers, and "drained before" alone is fooled by a never-reader whose
/// kernel buffers grew (autotuning) and took what we had queued. Size comes
/// last: a reader's one large reply in flight is often the biggest holder,
/// and it is the one that moves.
pub fn worst_first(holders: &mut [Holder]) {
    holders.sort_unstable_by(|a, b| {
        group(a)
            .cmp(&group(b))
            .then(b.output_stuck_ms.cmp(&a.output_stuck_ms))
            .then(b.held.cmp(&a.held))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn no_budget_never_acts() {
        let mut budget = MemoryBudget::new(0);
        assert_eq!(budget.check(usize::MAX), BudgetAction::Nothing);
        assert_eq!(Marks::high_water(budget.marks()), usize::MAX);
    }

    #[test]
    fn pressure_starts_at_the_high_mark_and_ends_only_under_the_low_one() {
        let mut budget = MemoryBudget::new(64 * MIB);
        assert_eq!(budget.check(40 * MIB), BudgetAction::Nothing);
        assert_eq!(budget.check(48 * MIB), BudgetAction::PressureStarts);
        assert_eq!(budget.check(50 * MIB), BudgetAction::Nothing);
        assert_eq!(budget.check(40 * MIB), BudgetAction::Nothing, "hysteresis");
        assert!(budget.under_pressure());
        assert_eq!(budget.check(31 * MIB), BudgetAction::PressureEnds);
        assert!(!budget.under_pressure());
    }

    #[test]
    fn the_quick_look_follows_the_high_mark_and_pressure() {
        let mut budget = MemoryBudget::new(64 * MIB);
        assert!(budget.is_quiet(47 * MIB));
        assert!(!budget.is_quiet(48 * MIB), "at the high mark");
        assert_eq!(budget.check(48 * MIB), BudgetAction::PressureStarts);
        assert!(!budget.is_quiet(0), "under pressure every turn looks");
        assert_eq!(budget.check(31 * MIB), BudgetAction::PressureEnds);
        assert!(budget.is_quiet(31 * MIB), "pressure over: quiet again");
        assert!(MemoryBudget::new(0).is_quiet(usize::MAX - 1), "no budget");
    }

    #[test]
    fn reaching_the_budget_evicts_down_to_the_low_mark() {
        let mut budget = MemoryBudget::new(64 * MIB);
        assert_eq!(
            budget.check(64 * MIB),
            BudgetAction::Evict { down_to: 32 * MIB }
        );
        assert!(budget.under_pressure());
    }

    #[test]
    fn stuck_output_is_evicted_before_moving_output_and_input_only_holders() {
        let reader = Holder {
            key: 1,
            held: 8 * MIB, // the biggest, but its output moved just now
            has_read_replies: true,
            output_stuck_ms: Some(0),
        };
        let small_never_reader = Holder {
            key: 2,
            held: MIB,
            has_read_replies: false,
            output_stuck_ms: Some(900),
        };
        let big_never_reader = Holder {
            key: 3,
            held: 2 * MIB,
            has_read_replies: false,
            output_stuck_ms: Some(900),
        };
        let partial_line = Holder {
            key: 4,
            held: 9 * MIB,
            has_read_replies: false,
            output_stuck_ms: None,
        };
        // A reader the scheduler starved: stuck longer than anyone, yet it
        // has read before, so it goes after every never-reader.
        let starved_reader = Holder {
            key: 5,
            held: MIB,
            has_read_replies: true,
            output_stuck_ms: Some(5_000),
        };
        let fresh_never_reader = Holder {
            key: 6,
            held: MIB,
            has_read_replies: false,
            output_stuck_ms: Some(1),
        };
        let mut holders = [
            partial_line,
            reader,
            small_never_reader,
            starved_reader,
            big_never_reader,
            fresh_never_reader,
        ];
        worst_first(&mut holders);
        let order: Vec<usize> = holders.iter().map(|h| h.key).collect();
        assert_eq!(order, [3, 2, 6, 5, 1, 4]); // 5, starved, still after every never-reader
    }
}
