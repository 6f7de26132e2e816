//! The server-wide memory budget (`--max-memory`, SPEC §9): plain numbers
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
//!   the total is under the **low-water mark**, the largest holders first
//!   the way Redis 7 evicts clients over `maxmemory-clients` — but in
//!   groups ([`worst_first`]): clients that have never read a queued reply
//!   go before any that have, and connections holding only a partial
//!   message of input (at most `--max-line` each) go last.
//! - Below the low-water mark the pressure is over; reads paused by it
//!   resume. The gap between the marks keeps the reactor from flapping
//!   (and from scanning for paused connections) on every byte.
//!
//! Why these marks: the high mark leaves a quarter of the budget for what
//! connections that are still read may queue before they are paused in
//! turn (one read, at most 64 KiB each); the low mark frees a quarter at a
//! time, so an eviction pass (a scan of every connection) runs at most once
//! per quarter-budget of memory a flood can pin. docs/ARCHITECTURE.md has
//! the measurements.

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
}

impl MemoryBudget {
    /// A budget of `max_memory` bytes (0: none — nothing is ever done).
    pub fn new(max_memory: usize) -> Self {
        MemoryBudget {
            marks: Marks::for_budget(max_memory),
            under_pressure: false,
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

    /// Given the bytes held now, what to do. Call it after anything that
    /// may have grown the total, and once per loop turn.
    pub fn check(&mut self, held: usize) -> BudgetAction {
        let Some(marks) = self.marks else {
            return BudgetAction::Nothing;
        };
        if held >= marks.budget {
            self.under_pressure = true;
            return BudgetAction::Evict { down_to: marks.low };
        }
        if !self.under_pressure && held >= marks.high {
            self.under_pressure = true;
            return BudgetAction::PressureStarts;
        }
        if self.under_pressure && held < marks.low {
            self.under_pressure = false;
            return BudgetAction::PressureEnds;
        }
        BudgetAction::Nothing
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

/// Output that has not moved for this long counts as stuck when choosing
/// whom to evict (ms): longer than any round trip a reading client needs.
pub const STUCK_MS: u64 = 200;

/// Which group a holder is evicted in: lower first.
fn tier(holder: &Holder) -> u8 {
    match (holder.output_stuck_ms, holder.has_read_replies) {
        // Never read a queued reply, and its output is stuck: a never-reader.
        (Some(stuck), false) if stuck >= STUCK_MS => 0,
        // Never read one yet, output young (a burst of new never-readers,
        // or a reader whose first large reply is on its way).
        (Some(_), false) => 1,
        // Has read replies before, but has stopped.
        (Some(stuck), true) if stuck >= STUCK_MS => 2,
        // A reader whose output is moving.
        (Some(_), true) => 3,
        // Only a partial message of input (bounded by --max-line).
        (None, _) => 4,
    }
}

/// Order `holders` worst first: by group — never-readers whose output is
/// stuck, then young output that has never drained, then readers that
/// stopped, then readers whose output moves, then input-only holders — and
/// within a group the largest first ("the connections holding the most"),
/// except among young output, where the output waiting longest goes first:
/// there a reader's first large reply may well be the biggest, and it is
/// the one that moves.
/// A client that reads its replies has drained its output before, so it
/// comes after every client that never did; stuck time alone would not
/// do, since a reader the scheduler starved for a while looks stuck too.
pub fn worst_first(holders: &mut [Holder]) {
    holders.sort_unstable_by(|a, b| {
        tier(a).cmp(&tier(b)).then_with(|| match tier(a) {
            // Young output: the one whose output waits longest first (a
            // reader's moves; a never-reader's only ages), then the larger.
            1 | 3 => b
                .output_stuck_ms
                .cmp(&a.output_stuck_ms)
                .then(b.held.cmp(&a.held)),
            _ => b.held.cmp(&a.held),
        })
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
        assert_eq!(order, [3, 2, 6, 5, 1, 4]);
    }
}
