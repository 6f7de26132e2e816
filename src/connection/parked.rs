//! Where the reactor has put a connection — on its ready queue, closed and
//! waiting for the end of the turn — kept apart from what the connection
//! knows of itself (`State`): the reactor's marks, one byte, with the
//! accessors the reactor uses.

use bitflags::bitflags;

use super::Connection;

bitflags! {
    /// Where the reactor has put a connection, outside the connection's
    /// own state. One byte, so an event asks "queued or closed?" in one
    /// test (`Clients::on_connection_event`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Parked: u8 {
        /// On the reactor's ready queue (so it is queued at most once).
        const QUEUED = 1;
        /// Closed and waiting for the end of the loop turn to leave the slab.
        const CLOSED = 1 << 1;
    }
}

/// The reactor's marks, for any socket type.
impl<S, Session> Connection<S, Session> {
    /// On the reactor's ready queue.
    pub fn is_queued(&self) -> bool {
        self.parked.contains(Parked::QUEUED)
    }

    /// Put on, or taken off, the reactor's ready queue.
    pub fn set_queued(&mut self, queued: bool) {
        self.parked.set(Parked::QUEUED, queued);
    }

    /// Closed by the reactor, waiting for the end of the turn.
    pub fn is_closed(&self) -> bool {
        self.parked.contains(Parked::CLOSED)
    }

    /// The reactor closed it: it leaves the slab at the end of the turn.
    pub fn mark_closed(&mut self) {
        self.parked.insert(Parked::CLOSED);
    }

    /// Queued or closed: an event only records what it says (or, closed,
    /// not even that). One test of one byte, once per event.
    #[inline(always)]
    pub fn is_parked(&self) -> bool {
        !self.parked.is_empty()
    }
}
