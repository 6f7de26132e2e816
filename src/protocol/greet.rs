//! `greet`: `Welcome!` on connect, `Hello, X!` per message, `exit` to leave.
//!
//! `exit` closes the connection only after every message before it has
//! been answered: the reactor sends what is queued, then closes, and
//! ignores whatever the client sent after `exit`.

use super::framing::{trim_line_end, Flow, Framing, LineCursor};
use super::{Protocol, Reply};

/// The greeting sent when a stream connection opens.
pub const WELCOME: &[u8] = b"Welcome!\n";

/// The greeting server of the socket tutorials.
#[derive(Debug, Clone, Copy)]
pub struct Greet {
    framing: Framing,
    /// `--max-line`: the longest line answered ([`Protocol::with_max_line`]).
    max_line: usize,
}

impl Greet {
    /// A greeting protocol with the given framing.
    pub fn new(framing: Framing) -> Self {
        Greet {
            framing,
            max_line: usize::MAX,
        }
    }
}

impl Default for Greet {
    /// Line framing, no limit on a line's length.
    fn default() -> Self {
        Greet::new(Framing::Line)
    }
}

/// Answer one message; `exit` asks to close instead.
fn answer(message: &[u8], reply: &mut Reply<'_>) -> Flow {
    if message == b"exit" {
        reply.close();
        return Flow::Stop;
    }
    reply.send(b"Hello, ");
    reply.send(message);
    reply.send(b"!\n");
    Flow::Continue
}

impl Protocol for Greet {
    type Session = LineCursor;

    fn on_open(&self, reply: &mut Reply<'_>) -> LineCursor {
        reply.send(WELCOME);
        LineCursor::with_max_line(self.max_line)
    }

    fn with_max_line(self, max_line: usize) -> Self {
        Greet { max_line, ..self }
    }

    fn on_bytes(&self, cursor: &mut LineCursor, input: &[u8], reply: &mut Reply<'_>) -> usize {
        match self.framing {
            Framing::Line => cursor.split(input, |line| answer(line, reply)),
            Framing::Chunk => {
                // One read, one message; its line ending (if any) is not part of the name.
                answer(trim_line_end(input), reply);
                input.len()
            }
        }
    }

    /// A last message without `\n` is still answered.
    fn on_peer_closed(&self, _: &mut LineCursor, unconsumed: &[u8], reply: &mut Reply<'_>) {
        if !unconsumed.is_empty() {
            answer(trim_line_end(unconsumed), reply);
        }
    }

    /// UDP: `Hello, X!` (no welcome: there is no connection to open).
    fn on_datagram(&self, datagram: &[u8], reply: &mut Vec<u8>) {
        reply.extend_from_slice(b"Hello, ");
        reply.extend_from_slice(trim_line_end(datagram));
        reply.extend_from_slice(b"!");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greet_welcomes_answers_and_closes_on_exit_after_earlier_messages() {
        let mut out = Vec::new();
        let mut cursor = Greet::new(Framing::Line).on_open(&mut Reply::new(&mut out));
        let mut reply = Reply::new(&mut out);
        let input = b"Ann\nBob\r\nexit\nignored\n";
        let used = Greet::new(Framing::Line).on_bytes(&mut cursor, input, &mut reply);
        assert!(reply.wants_close());
        assert_eq!(used, 14, "up to and including exit\\n");
        assert_eq!(out, b"Welcome!\nHello, Ann!\nHello, Bob!\n");
    }

    #[test]
    fn chunk_framing_takes_each_read_as_one_name() {
        let greet = Greet::new(Framing::Chunk);
        let mut out = Vec::new();
        let mut cursor = LineCursor::default();
        greet.on_bytes(&mut cursor, b"Ann\n", &mut Reply::new(&mut out));
        greet.on_bytes(&mut cursor, b"exit", &mut Reply::new(&mut out));
        assert_eq!(out, b"Hello, Ann!\n");
    }

    #[test]
    fn a_datagram_gets_hello_without_a_newline() {
        let mut out = Vec::new();
        Greet::default().on_datagram(b"Zoe\n", &mut out);
        assert_eq!(out, b"Hello, Zoe!");
    }
}
