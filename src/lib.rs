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
//! | [`cli`] | the command line (`echo-reactor serve ...`) and what it prints |
//! | [`server`] | the public API: [`Config`], [`Server`] (bind, run), [`ServerHandle`] (stop, stats) |
//! | [`reactor`] | the loop: `Poll`, tokens, accept (caps, EMFILE), UDP, dispatch, the ready queue, timers, signals, shutdown, reaping |
//! | [`connection`] | one connection's readiness flags and timestamps, and the fill/flush drain loops |
//! | [`timers`] | the once-per-turn clock and the lazy deadline queue |
//! | [`stream`] | a TCP or Unix stream behind one type |
//! | [`protocol`] | what the server says: the [`Protocol`](protocol::Protocol) trait, `echo`, `upper` |
//! | [`buffer`] | byte queues that hold memory only while holding bytes |
//! | [`nonblocking`] | one socket call → one named outcome (`Data`, `WouldBlock`, `Reset`, ...) |
//! | [`stats`] | counters, published once per loop turn |
//! | [`sockets`], [`fdlimit`] | binding (backlog, `SO_REUSEADDR`, stale Unix sockets) and `RLIMIT_NOFILE` |
//!
//! A learner should start with `examples/minimal_echo.rs`, then read
//! [`nonblocking`], [`connection`] and [`reactor`] in that order.
#![warn(missing_docs)]

pub mod bench;
pub mod buffer;
pub mod cli;
pub mod client;
pub mod connection;
pub mod fdlimit;
pub mod nonblocking;
pub mod protocol;
pub mod reactor;
pub mod server;
pub mod sockets;
pub mod stats;
pub mod stream;
pub mod timers;

#[cfg(test)]
mod testing;

pub use server::{Config, Server, ServerHandle};
pub use stats::{CloseReason, StatsSnapshot};
