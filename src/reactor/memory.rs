//! Carrying out the memory budget (`--max-memory`; the policy and its marks
//! are in `src/budget.rs`, which knows nothing of sockets).
//!
//! Checked once per loop turn, and at once whenever queued output takes the
//! held total past the high-water mark (the connection raises
//! `NEEDS_REACTOR`, so [`Clients::act_on`] looks before anyone else is
//! served). Eviction scans every connection, so it runs only at the budget,
//! and frees down to the low-water mark (half the budget) each time.

use log::{info, warn};

use super::clients::Clients;
use crate::budget::{worst_first, BudgetAction, Holder};
use crate::protocol::Protocol;
use crate::stats::CloseReason;

/// At most one memory-pressure log line per this many milliseconds.
pub const MEMORY_WARN_INTERVAL_MS: u64 = 10_000;

impl<P: Protocol> Clients<P> {
    /// Compare the bytes held with the budget and act: log pressure, evict,
    /// or resume reads that pressure paused.
    #[inline]
    pub(super) fn enforce_budget(&mut self) {
        // The common case, every turn: nothing to do. Kept apart and inline
        // so a turn that holds little pays one compare, not a call.
        if self.budget.is_quiet(self.ws.ctx.gauge.held_capacity) {
            return;
        }
        self.enforce_budget_under_watch();
    }

    /// [`Self::enforce_budget`] past the quick look: start, keep or end
    /// pressure, evict at the budget.
    #[inline(never)]
    fn enforce_budget_under_watch(&mut self) {
        let held = self.ws.ctx.gauge.held_capacity;
        let now = self.ws.ctx.now_ms;
        let was_under_pressure = self.budget.under_pressure();
        let action = self.budget.check(held);
        if !was_under_pressure && self.budget.under_pressure() {
            // Starts with a plain crossing of the high mark, or straight
            // with an eviction when one burst went past the budget.
            self.ws.ctx.counters.memory_pressure_episodes += 1;
            if let Some(held_back) = self.memory_warnings[0].allow(now, MEMORY_WARN_INTERVAL_MS) {
                warn!(
                    "memory pressure: connections hold {held} bytes of a {} byte budget; \
                     not reading connections whose replies wait unread \
                     ({held_back} similar messages suppressed)",
                    self.budget.marks().map_or(0, |m| m.budget)
                );
            }
        }
        match action {
            BudgetAction::Nothing | BudgetAction::PressureStarts => {}
            BudgetAction::Evict { down_to } => self.evict(down_to),
            BudgetAction::PressureEnds => {
                if let Some(held_back) = self.memory_warnings[2].allow(now, MEMORY_WARN_INTERVAL_MS)
                {
                    info!(
                        "memory pressure over: connections hold {held} bytes \
                         ({held_back} similar messages suppressed)"
                    );
                }
                self.resume_reads_paused_for_memory();
            }
        }
        self.ws.ctx.counters.memory_pressure = u64::from(self.budget.under_pressure());
    }

    /// Close the worst holders until fewer than `down_to` bytes are held.
    fn evict(&mut self, down_to: usize) {
        let now = self.ws.ctx.now_ms;
        let before = self.ws.ctx.gauge.held_capacity;
        let mut holders: Vec<Holder> = self
            .conns
            .iter()
            .filter(|(_, conn)| !conn.is_closed() && conn.held_capacity() > 0)
            .map(|(key, conn)| Holder {
                key,
                held: conn.held_capacity(),
                has_read_replies: conn.has_drained_output(),
                output_stuck_ms: conn
                    .has_unsent_output()
                    .then(|| now.saturating_sub(conn.output_stuck_since_ms())),
            })
            .collect();
        worst_first(&mut holders);
        let mut evicted = 0;
        for holder in holders {
            if self.ws.ctx.gauge.held_capacity < down_to {
                break;
            }
            // `close` drops the connection's buffers at once, so the
            // total falls as we go.
            self.close(holder.key, CloseReason::Evicted);
            evicted += 1;
        }
        if let Some(held_back) = self.memory_warnings[1].allow(now, MEMORY_WARN_INTERVAL_MS) {
            warn!(
                "memory budget reached: closed {evicted} connections holding the most memory, \
                 never-readers first ({before} -> {} bytes held) ({held_back} similar messages \
                 suppressed)",
                self.ws.ctx.gauge.held_capacity
            );
        }
    }

    /// Pressure is over: connections whose reads it paused have bytes
    /// waiting that no edge will announce, so queue them.
    fn resume_reads_paused_for_memory(&mut self) {
        let limits = self.ws.ctx.limits;
        for (key, conn) in self.conns.iter_mut() {
            if !conn.is_closed() && !conn.is_queued() && conn.read_paused_for_memory(&limits) {
                conn.set_queued(true);
                self.ready.push_back(mio::Token(key));
            }
        }
    }
}
