//! The protocols and framings by the names the command line spells them
//! (`--protocol echo`, `--framing line`).
//!
//! `serve` and `client` both take these names, so they live here, beside
//! the protocols they name and below both commands, not in either. clap's
//! `ValueEnum` is the only thing this file adds to the protocols: the names
//! are data, and nothing here touches a socket.

use clap::ValueEnum;

use super::Framing;

/// The protocols `serve --protocol` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolName {
    /// Every byte back, unchanged.
    Echo,
    /// ASCII letters upper-cased, everything else unchanged.
    Upper,
    /// Each message answered with `--prefix` + the message.
    Prefix,
    /// `Welcome!` on connect, `Hello, X!` per message, `exit` to leave.
    Greet,
    /// JSON values in, each answered in compact form plus a newline.
    Json,
}

/// `--framing`: how `prefix` and `greet` cut the stream into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FramingName {
    /// `\n`-terminated lines (`\r\n` tolerated).
    Line,
    /// Each read is one message (what `recv(1024)` servers assume; unreliable).
    Chunk,
}

impl From<FramingName> for Framing {
    fn from(name: FramingName) -> Framing {
        match name {
            FramingName::Line => Framing::Line,
            FramingName::Chunk => Framing::Chunk,
        }
    }
}
