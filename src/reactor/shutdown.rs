//! Graceful shutdown: SIGINT/SIGTERM (or a [`ServerHandle::stop`](crate::ServerHandle::stop)),
//! then stop accepting, stop reading, and give owed replies the grace period.
//! A second signal exits at once.

use std::sync::atomic::Ordering;

use log::{info, warn};
use mio::Registry;
use signal_hook::consts::SIGINT;

use super::clients::Clients;
use super::endpoints::Listening;
use super::tokens::endpoint_index;
use super::Reactor;
use crate::protocol::Protocol;
use crate::timers::due_after;

impl<P: Protocol> Reactor<P> {
    /// SIGINT/SIGTERM arrived (read from the self-pipe, inside the loop).
    pub(super) fn on_signals(&mut self) {
        let Some(signals) = self.signals.as_mut() else {
            return;
        };
        for signal in signals.pending() {
            let name = if signal == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            if self.shutdown_deadline_ms.is_some() {
                // The operator insists: no more waiting for slow clients.
                warn!("{name} again during shutdown: exiting now");
                for path in &self.unix_paths {
                    let _ = std::fs::remove_file(path); // exit() runs no destructors
                }
                std::process::exit(128 + signal);
            }
            info!("{name}: shutting down (a second signal exits at once)");
            self.stop_requested.store(true, Ordering::Release);
        }
    }

    /// Stop accepting, stop reading, and give pending output the grace period.
    pub(super) fn begin_shutdown(&mut self) {
        let now = self.clients.ws.ctx.now_ms;
        self.shutdown_deadline_ms = Some(due_after(now, self.settings.shutdown_grace_ms));
        let pending = self
            .clients
            .stop_accepting_and_reading(self.poll.registry());
        // Connections with nothing pending closed just now: free them before
        // the next poll, or the loop would sleep until the grace ends.
        self.clients.reap_closed();
        info!(
            "stopped accepting; {} (grace {} ms)",
            output_to_flush(pending),
            self.settings.shutdown_grace_ms
        );
    }
}

/// "1 connection has output to flush", "2 connections have ...".
fn output_to_flush(pending: usize) -> String {
    match pending {
        1 => "1 connection has output to flush".to_string(),
        n => format!("{n} connections have output to flush"),
    }
}

impl<P: Protocol> Clients<P> {
    /// Close every listening socket and stop reading every connection.
    /// Returns how many connections still have output to flush.
    pub(super) fn stop_accepting_and_reading(&mut self, registry: &Registry) -> usize {
        self.accepting = false;
        for endpoint in &mut self.endpoints {
            let _ = match &mut endpoint.socket {
                Listening::Tcp(s) => registry.deregister(s),
                Listening::Unix(s) => registry.deregister(s),
                Listening::Udp(s) => registry.deregister(s),
            };
        }
        self.endpoints.clear(); // closes them; later events for their tokens are ignored
        self.ready.retain(|t| endpoint_index(*t).is_none());
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for &key in &keys {
            let conn = &mut self.conns[key];
            if !conn.closed {
                let next = conn.stop_reading(&mut self.ws);
                self.after(key, next);
            }
        }
        self.conns.iter().filter(|(_, c)| !c.closed).count()
    }
}

#[cfg(test)]
mod tests {
    use super::output_to_flush;

    #[test]
    fn the_shutdown_line_agrees_in_number() {
        assert_eq!(output_to_flush(0), "0 connections have output to flush");
        assert_eq!(output_to_flush(1), "1 connection has output to flush");
        assert_eq!(output_to_flush(2), "2 connections have output to flush");
    }
}
