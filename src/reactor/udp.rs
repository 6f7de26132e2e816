//! UDP: each datagram is one message, answered to its sender at once.
//!
//! There is no connection and nothing is buffered: a reply the socket
//! cannot take right now is dropped and counted, since UDP promises
//! nothing and the loop never blocks.

use log::debug;

use super::clients::Clients;
use super::endpoints::Listening;
use crate::nonblocking::{try_recv_from, try_send_to, RecvOutcome, WriteOutcome};
use crate::protocol::Protocol;

/// Datagrams one UDP socket may receive per loop turn.
pub const DATAGRAM_BUDGET: usize = 256;

impl<P: Protocol> Clients<P> {
    /// Receive datagrams and answer each; a reply that would block is dropped.
    pub(super) fn serve_datagrams(&mut self, index: usize) {
        let Listening::Udp(socket) = &self.endpoints[index].socket else {
            return;
        };
        let (scratch, reply, ctx) = self.ws.full_scratch();
        let (counters, now_ms) = (&mut ctx.counters, ctx.now_ms);
        for _ in 0..DATAGRAM_BUDGET {
            counters.read_calls += 1;
            match try_recv_from(socket, scratch) {
                RecvOutcome::Received(n, from, arrived_at) => {
                    counters.datagrams_in += 1;
                    counters.bytes_in += n as u64;
                    reply.clear();
                    self.protocol.on_datagram(&scratch[..n], reply);
                    if let Some(budget) = self.udp_reply_budget.as_mut() {
                        if !budget.allow(from.ip(), reply.len(), now_ms) {
                            // Over this source network's reply budget: a
                            // spoofed flood must not make us a reflector.
                            counters.datagrams_limited += 1;
                            continue;
                        }
                    }
                    counters.write_calls += 1;
                    match try_send_to(socket, reply, from, arrived_at) {
                        WriteOutcome::Wrote(sent) => {
                            counters.datagrams_out += 1;
                            counters.bytes_out += sent as u64;
                        }
                        // UDP promises nothing, and the loop never blocks:
                        // a reply the socket cannot take now is dropped, counted.
                        outcome => {
                            counters.datagrams_dropped += 1;
                            debug!("udp reply to {from} dropped: {outcome:?}");
                        }
                    }
                }
                RecvOutcome::WouldBlock => return,
                // e.g. ECONNREFUSED for an earlier reply: the socket is fine.
                RecvOutcome::Failed(kind) => debug!("udp recv failed: {kind:?}"),
            }
        }
        self.queue_endpoint(index);
    }
}
