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
//! Dependencies point downwards: a module uses only those in its own layer
//! or below, never one above (`tests/docs_references.rs` checks every
//! `crate::` path against this map; `docs/ARCHITECTURE.md` draws it).
//! Nothing but `main.rs` uses [`cli`].
//!
//! **Command line.** Parsing and dispatch, nothing else.
//!
//! | module | owns |
//! |---|---|
//! | [`cli`] | the command line (`serve`, `client`, `bench`) as clap parses it, which subcommand runs, and the completion scripts and man page generated from it |
//!
//! **Subcommands.** Each owns its flags and runs on the library below.
//!
//! | module | owns |
//! |---|---|
//! | [`serve`] | `echo-reactor serve`: its flags, the limits a command line must respect, starting the server, its supervisor or a worker |
//! | [`client`] | the blocking tutorial-style client (`echo-reactor client`) |
//! | [`bench`](mod@bench) | the load generator: mio threads, verified replies, HdrHistogram latency, the JSON report |
//!
//! **Processes.** What serving needs from the process around it.
//!
//! | module | owns |
//! |---|---|
//! | [`supervisor`] | `--workers N`: starts, restarts and stops worker processes, sums their stats |
//! | [`worker_sockets`] | `--workers N`: the listening sockets the supervisor binds once, hands to each worker, closes and reopens |
//! | [`affinity`] | `--cpu-affinity`: which CPU each worker runs on, and pinning a process there |
//! | [`inherit`] | sockets handed over by a parent: systemd's `LISTEN_FDS`, and the supervisor's workers |
//! | [`upgrade`] | `SIGUSR2`: a new generation handed every socket, its readiness, the rollback |
//! | [`pidfile`], [`notify`] | `--pid-file` (replaced whole), and systemd's `sd_notify` (`READY=1`, `MAINPID`) |
//! | [`auth_key`] | where the handshake key comes from: `--auth-key-file` or `ECHO_REACTOR_AUTH_KEY` |
//! | [`stdout`] | report lines on stdout, flushed at once; a closed pipe is an error to log, not a panic |
//! | [`machine`] | the machine's physical memory |
//! | [`units`] | the values flags are made of: addresses, sizes, durations (one parser each) |
//!
//! **The server.** The public API and the loop.
//!
//! | module | owns |
//! |---|---|
//! | [`server`] | the public API: [`Config`], [`Server`] (bind, run), [`ServerHandle`] (stop, stats) |
//! | [`reactor`] | the loop: `Poll`, tokens, accept (caps, EMFILE), UDP, dispatch, the ready queue, timers, signals, shutdown, reaping — a file each |
//!
//! **What the loop drives.** One connection, and the metrics endpoint.
//!
//! | module | owns |
//! |---|---|
//! | [`connection`] | one connection's readiness flags and timestamps, and the fill/flush drain loops |
//! | [`http`], [`metrics`] | `--metrics`: an HTTP request head framed by `httparse`, routed, answered; the Prometheus exposition (`prometheus`) |
//! | [`worker_stats`] | `--workers`: each worker's numbers in a shared memory slot, summed by a scrape and the final stats |
//!
//! **What is said, and how much.** Pure logic: no mio, no sockets.
//!
//! | module | owns |
//! |---|---|
//! | [`protocol`] | what the server says: the [`Protocol`](protocol::Protocol) trait, `echo`, `upper`, `prefix`, `greet`, `json`, the HMAC handshake, framing, the names `--protocol` takes |
//! | [`proxy_header`] | the PROXY protocol header (v1/v2, via `ppp`): reading one from a stream's first bytes, writing one for a client |
//! | [`budget`] | `--max-memory`: the server-wide marks, and who is evicted first |
//! | [`udp_budget`] | a per-source budget on UDP reply bytes (no reflection) |
//!
//! **Foundations.** Used from anywhere above; they use only each other.
//!
//! | module | owns |
//! |---|---|
//! | [`ratelimit`] | one warning per interval for log lines a client can trigger |
//! | [`timers`] | the once-per-turn clock and the lazy deadline queue |
//! | [`stats`] | counters, copied out for other threads at most every 10 ms |
//! | [`buffer`] | byte queues that hold memory only while holding bytes |
//! | [`stream`] | a TCP or Unix stream behind one type |
//! | [`nonblocking`] | one socket call → one named outcome (`Data`, `WouldBlock`, `Reset`, `OutOfFiles`, ...) |
//! | [`sockets`], [`fdlimit`] | binding (backlog, `SO_REUSEADDR`, stale Unix sockets), UDP replies from the address asked, and `RLIMIT_NOFILE` |
//! | [`signal_mask`] | `SIGQUIT` and `SIGUSR2` held back in a starting child until its handlers are in place |
//!
//! `protocol` knows nothing of mio or sockets; `connection` knows sockets
//! only as `Read + Write`; only `reactor` (and `bench`) touch `Poll`.
//!
//! A learner should start with `examples/minimal_echo.rs`, then read
//! `docs/TOUR.md` alongside [`nonblocking`], [`connection`] and [`reactor`]
//! in that order; `docs/PYTHON.md` maps the Python socket calls onto them.
#![warn(missing_docs)]

pub mod affinity;
pub mod auth_key;
pub mod bench;
pub mod budget;
pub mod buffer;
pub mod cli;
pub mod client;
pub mod connection;
pub mod fdlimit;
pub mod http;
pub mod inherit;
pub mod machine;
pub mod metrics;
pub mod nonblocking;
pub mod notify;
pub mod pidfile;
pub mod protocol;
pub mod proxy_header;
pub mod ratelimit;
pub mod reactor;
pub mod serve;
pub mod server;
pub mod signal_mask;
pub mod sockets;
pub mod stats;
pub mod stdout;
pub mod stream;
pub mod supervisor;
pub mod timers;
pub mod udp_budget;
pub mod units;
pub mod upgrade;
pub mod worker_sockets;
pub mod worker_stats;

#[cfg(test)]
mod testing;

pub use server::{Config, Server, ServerHandle};
pub use stats::{CloseReason, StatsSnapshot};
