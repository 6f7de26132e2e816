//! # echo-reactor
//!
//! A single-threaded, non-blocking TCP/UDP/Unix server built directly on
//! [mio](https://docs.rs/mio): one `Poll`, every client in a `Slab`, partial
//! writes kept in order, edge-triggered reads drained until the kernel says
//! *would block*. It serves echo-style protocols to as many clients as the
//! open-file limit allows, and it is written to be read.
//!
//! ## Map of the modules
//!
//! Dependencies point downwards: a module uses only those below it.
//!
//! | module | owns |
//! |---|---|
//! | [`cli`] | the command line (`serve`, `client`, `bench`) and what it prints |
//! | [`bench`](mod@bench) | the load generator: mio threads, verified replies, HdrHistogram latency, the JSON report |
//! | [`client`] | the blocking tutorial-style client (`echo-reactor client`) |
//! | [`server`] | the public API: [`Config`], [`Server`] (bind, run), [`ServerHandle`] (stop, stats) |
//! | [`reactor`] | the loop: `Poll`, tokens, accept (caps, EMFILE), UDP, dispatch, the ready queue, timers, signals, shutdown, reaping — a file each |
//! | [`ratelimit`] | one warning per interval for log lines a client can trigger |
//! | [`connection`] | one connection's readiness flags and timestamps, and the fill/flush drain loops |
//! | [`protocol`] | what the server says: the [`Protocol`](protocol::Protocol) trait, `echo`, `upper`, `prefix`, `greet`, `json`, the HMAC handshake, framing |
//! | [`proxy_header`] | the PROXY protocol header (v1/v2, via `ppp`): reading one from a stream's first bytes, writing one for a client |
//! | [`timers`] | the once-per-turn clock and the lazy deadline queue |
//! | [`budget`] | `--max-memory`: the server-wide marks, and who is evicted first |
//! | [`buffer`] | byte queues that hold memory only while holding bytes |
//! | [`stream`] | a TCP or Unix stream behind one type |
//! | [`nonblocking`] | one socket call → one named outcome (`Data`, `WouldBlock`, `Reset`, `OutOfFiles`, ...) |
//! | [`stats`] | counters, published once per loop turn |
//! | [`supervisor`] | `--workers N`: starts, restarts and stops worker processes, sums their stats |
//! | [`worker_sockets`] | `--workers N`: the listening sockets the supervisor binds, hands to each worker, closes and reopens |
//! | [`inherit`] | sockets handed over by a parent: systemd's `LISTEN_FDS`, and the supervisor's workers |
//! | [`sockets`], [`fdlimit`] | binding (backlog, `SO_REUSEADDR`, stale Unix sockets), UDP replies from the address asked, and `RLIMIT_NOFILE` |
//! | [`units`] | the values flags are made of: addresses, sizes, durations (one parser each, below `cli`, `client` and `bench`) |
//! | [`udp_budget`] | a per-source budget on UDP reply bytes (no reflection) |
//! | [`http`], [`metrics`] | `--metrics`: an HTTP request head framed by `httparse`, routed, answered; the Prometheus exposition (`prometheus-client`) |
//! | [`worker_stats`] | `--workers`: each worker's numbers in a shared memory slot, summed by a scrape and the final stats |
//!
//! `protocol` knows nothing of mio or sockets; `connection` knows sockets
//! only as `Read + Write`; only `reactor` (and `bench`) touch `Poll`.
//!
//! A learner should start with `examples/minimal_echo.rs`, then read
//! `docs/TOUR.md` alongside [`nonblocking`], [`connection`] and [`reactor`]
//! in that order; `docs/PYTHON.md` maps the Python socket calls onto them.
#![warn(missing_docs)]

pub mod bench;
pub mod budget;
pub mod buffer;
pub mod cli;
pub mod client;
pub mod connection;
pub mod fdlimit;
pub mod http;
pub mod inherit;
pub mod metrics;
pub mod nonblocking;
pub mod protocol;
pub mod proxy_header;
pub mod ratelimit;
pub mod reactor;
pub mod server;
pub mod sockets;
pub mod stats;
pub mod stream;
pub mod supervisor;
pub mod timers;
pub mod udp_budget;
pub mod units;
pub mod worker_sockets;
pub mod worker_stats;

#[cfg(test)]
mod testing;

pub use server::{Config, Server, ServerHandle};
pub use stats::{CloseReason, StatsSnapshot};
