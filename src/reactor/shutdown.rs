//! Graceful shutdown: SIGINT/SIGTERM (or a [`ServerHandle::stop`](crate::ServerHandle::stop)),
//! then stop accepting, stop reading, and give owed replies the grace period.
//! A second signal exits at once.
//!
//! The drain, on SIGQUIT (what nginx's workers do on QUIT; the supervisor
//! sends it to the old workers once a new generation accepts, `upgrade.rs`):
//! stop accepting — every listener closed, the metrics one too, so new
//! clients and scrapes go to whoever else holds the sockets — and keep
//! serving the connections held, reading and answering, until each closes.
//! `/healthz` on a metrics connection still held answers 503. After the
//! drain timeout the shutdown above closes what remains: owed replies
//! first, then the lingering close for every connection, idle ones too (a
//! half-close, so a request crossing it meets an EOF, not a reset); a
//! SIGINT/SIGTERM starts that shutdown sooner, with the idle shortcut below.
//!
//! A connection we owe nothing closes at once, unless we sent to it within
//! the last second — it may be mid-conversation, its next message on the
//! wire — or it is in the middle of a message, or bytes arrived that the
//! loop has not read yet: only those linger (`connection/linger.rs`). So
//! the grace is spent only on output still to flush and on clients still talking; a
//! server holding thousands of idle clients exits as soon as it has closed
//! them.

use std::sync::atomic::Ordering;

use log::{info, warn};
use mio::Registry;
use signal_hook::consts::{SIGINT, SIGQUIT, SIGUSR2};

use super::clients::Clients;
use super::endpoints::Listening;
use super::tokens::endpoint_index;
use super::{Reactor, REAP_BUDGET};
use crate::protocol::Protocol;
use crate::timers::{due_after, NEVER};

/// The end of a drain or shutdown `after_ms` from `now`: never [`NEVER`]
/// itself, which says "no deadline" in `Reactor::shutdown_deadline_ms`.
fn shutdown_deadline(now: u64, after_ms: u64) -> u64 {
    due_after(now, after_ms).min(NEVER - 1)
}

impl<P: Protocol> Reactor<P> {
    /// SIGINT/SIGTERM/SIGQUIT/SIGUSR2 arrived (read from the self-pipe, inside the loop).
    pub(super) fn on_signals(&mut self) {
        let Some(signals) = self.signals.as_mut() else {
            return;
        };
        let arrived: Vec<i32> = signals.pending().collect();
        for signal in arrived {
            if signal == SIGQUIT {
                self.begin_drain();
                continue;
            }
            if signal == SIGUSR2 {
                // Its default action would end the process: an operator's
                // upgrade attempt must not be a crash.
                warn!(
                    "SIGUSR2 ignored: upgrades need a supervisor \
                     (serve --pid-file, or --workers 2 or more), which this process is not"
                );
                continue;
            }
            let name = if signal == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            if self.draining {
                // Not "again": the drain is a shutdown that waits on the
                // clients; this one waits only on owed replies.
                info!("{name} during the drain: shutting down (a second signal exits at once)");
                self.draining = false;
                self.shutdown_deadline_ms = NEVER; // the shutdown begins right after this (`between_turns`)
                self.stop_requested.store(true, Ordering::Release);
                continue;
            }
            if self.shutdown_deadline_ms != NEVER {
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

    /// SIGQUIT: stop accepting (the metrics listener too) and serve the
    /// connections held until they close, for at most the drain timeout.
    fn begin_drain(&mut self) {
        if self.shutdown_deadline_ms != NEVER || self.stop_requested.load(Ordering::Acquire) {
            info!("SIGQUIT during a drain or shutdown: ignored");
            return;
        }
        let now = self.clients.ws.ctx.now_ms;
        self.draining = true;
        serve_on_if_orphaned();
        self.shutdown_deadline_ms = shutdown_deadline(now, self.settings.drain_timeout_ms);
        let registry = self.poll.registry();
        self.clients.stop_accepting(registry);
        if let Some(metrics) = &mut self.metrics {
            metrics.stop_accepting(registry);
        }
        info!(
            "SIGQUIT: draining: stopped accepting; serving {} connections until they close \
             (at most {} ms)",
            self.clients.open_count(),
            self.settings.drain_timeout_ms
        );
    }

    /// The drain timeout is over: shut down as on SIGTERM, closing what
    /// remains gracefully (called by `run` between turns). Idle
    /// connections too go through the lingering close: the clients still
    /// connected at the drain's end are pooled or keep-alive ones, whose
    /// next request may cross a plain `close()` and draw a reset.
    pub(super) fn end_drain(&mut self) {
        info!(
            "drain timeout: {} connections still open; shutting down",
            self.clients.open_count()
        );
        self.draining = false;
        self.stop_requested.store(true, Ordering::Release);
        self.begin_shutdown(true);
    }

    /// Stop accepting, stop reading, and give pending output the grace
    /// period; with `linger_idle`, idle connections linger too.
    pub(super) fn begin_shutdown(&mut self, linger_idle: bool) {
        let now = self.clients.ws.ctx.now_ms;
        self.shutdown_deadline_ms = shutdown_deadline(now, self.settings.shutdown_grace_ms);
        let waiting = self
            .clients
            .stop_accepting_and_reading(self.poll.registry(), linger_idle);
        // Connections with nothing pending closed just now: free a first
        // batch (the loop does not sleep while more wait to be reaped).
        self.clients.reap_closed(REAP_BUDGET);
        info!(
            "stopped accepting; {} (grace {} ms)",
            waiting_on(waiting),
            self.settings.shutdown_grace_ms
        );
    }
}

/// A worker's supervisor dying sends it SIGTERM (`supervisor.rs`): a
/// worker that accepts must not serve on unsupervised. A draining one
/// accepts nothing, and its drain is bounded by the drain timeout: it
/// finishes that rather than cut the connections it holds short when the
/// old supervisor dies (killed, or its unit stopped) during the drain.
fn serve_on_if_orphaned() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: prctl with PR_SET_PDEATHSIG and 0 only clears a setting.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, 0 as libc::c_ulong);
    }
}

/// What shutdown still waits on, once the idle connections are closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Waiting {
    /// Connections with every reply sent, waiting for the client to close
    /// (we sent to them within the last second).
    pub lingering: usize,
    /// Connections with replies still to send (they linger after).
    pub with_output: usize,
}

/// "2 connections lingering, 1 with output to flush".
fn waiting_on(waiting: Waiting) -> String {
    let plural = if waiting.lingering == 1 { "" } else { "s" };
    format!(
        "{} connection{plural} lingering, {} with output to flush",
        waiting.lingering, waiting.with_output
    )
}

impl<P: Protocol> Clients<P> {
    /// Close every listening socket (new clients go to whoever else holds
    /// them, or are refused).
    pub(super) fn stop_accepting(&mut self, registry: &Registry) {
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
    }

    /// Close every listening socket and stop reading every connection;
    /// idle ones close now, unless `linger_idle`. Returns what is left to
    /// wait on.
    pub(super) fn stop_accepting_and_reading(
        &mut self,
        registry: &Registry,
        linger_idle: bool,
    ) -> Waiting {
        self.stop_accepting(registry);
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for &key in &keys {
            let conn = &mut self.conns[key];
            if !conn.is_closed() {
                let next = if linger_idle {
                    conn.stop_reading_lingering(&mut self.ws)
                } else {
                    conn.stop_reading(&mut self.ws)
                };
                self.after(key, next);
            }
        }
        let open = self.conns.iter().filter(|(_, c)| !c.is_closed());
        let with_output = open.clone().filter(|(_, c)| c.has_unsent_output()).count();
        Waiting {
            lingering: open.count() - with_output,
            with_output,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{waiting_on, Waiting};

    #[test]
    fn the_shutdown_line_agrees_in_number() {
        let line = |lingering, with_output| {
            waiting_on(Waiting {
                lingering,
                with_output,
            })
        };
        assert_eq!(
            line(0, 0),
            "0 connections lingering, 0 with output to flush"
        );
        assert_eq!(line(1, 0), "1 connection lingering, 0 with output to flush");
        assert_eq!(
            line(2, 1),
            "2 connections lingering, 1 with output to flush"
        );
        assert_eq!(
            line(0, 1),
            "0 connections lingering, 1 with output to flush"
        );
    }
}
