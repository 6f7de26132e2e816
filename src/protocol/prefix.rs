//! `prefix`: each message `M` answered with `PREFIX + M`.
//!
//! The classic tutorial server does `conn.send(b'Echo=>' + data)` after
//! each `recv(1024)`; here the same in `chunk` framing, and a reliable
//! version in `line` framing (`PREFIX + M + "\n"` per line).

use super::framing::{Flow, Framing, LineCursor};
use super::{Protocol, Reply};

/// Answers each message with a fixed prefix followed by the message.
#[derive(Debug, Clone)]
pub struct Prefix {
    prefix: Vec<u8>,
    framing: Framing,
    /// `--max-line`: the longest line answered ([`Protocol::with_max_line`]).
    max_line: usize,
}

impl Prefix {
    /// A prefix protocol (`--prefix`, default `Echo=>`).
    pub fn new(prefix: impl Into<Vec<u8>>, framing: Framing) -> Self {
        Prefix {
            prefix: prefix.into(),
            framing,
            max_line: usize::MAX,
        }
    }

    fn answer_line(&self, line: &[u8], reply: &mut Reply<'_>) {
        reply.send(&self.prefix);
        reply.send(line);
        reply.send(b"\n");
    }
}

impl Protocol for Prefix {
    type Session = LineCursor;

    fn on_open(&self, _reply: &mut Reply<'_>) -> LineCursor {
        LineCursor::with_max_line(self.max_line)
    }

    fn with_max_line(self, max_line: usize) -> Self {
        Prefix { max_line, ..self }
    }

    fn on_bytes(&self, cursor: &mut LineCursor, input: &[u8], reply: &mut Reply<'_>) -> usize {
        match self.framing {
            Framing::Line => cursor.split(input, |line| {
                self.answer_line(line, reply);
                Flow::Continue
            }),
            Framing::Chunk => {
                reply.send(&self.prefix);
                reply.send(input);
                input.len()
            }
        }
    }

    /// A last line without `\n` still gets its answer.
    fn on_peer_closed(&self, _: &mut LineCursor, unconsumed: &[u8], reply: &mut Reply<'_>) {
        if !unconsumed.is_empty() {
            self.answer_line(super::framing::trim_line_end(unconsumed), reply);
        }
    }

    fn on_datagram(&self, datagram: &[u8], reply: &mut Vec<u8>) {
        reply.extend_from_slice(&self.prefix);
        reply.extend_from_slice(datagram);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(protocol: &Prefix, pieces: &[&[u8]]) -> Vec<u8> {
        let mut session = protocol.on_open(&mut Reply::new(&mut Vec::new()));
        let (mut out, mut pending) = (Vec::new(), Vec::new());
        for piece in pieces {
            pending.extend_from_slice(piece);
            let used = protocol.on_bytes(&mut session, &pending, &mut Reply::new(&mut out));
            pending.drain(..used);
        }
        protocol.on_peer_closed(&mut session, &pending, &mut Reply::new(&mut out));
        out
    }

    #[test]
    fn line_framing_prefixes_each_line_however_it_arrives() {
        let p = Prefix::new("Echo=>", Framing::Line);
        assert_eq!(
            run(&p, &[b"a\nb\r\n", b"c"]),
            b"Echo=>a\nEcho=>b\nEcho=>c\n"
        );
        assert_eq!(run(&p, &[b"h", b"i", b"\n"]), b"Echo=>hi\n");
    }

    #[test]
    fn chunk_framing_prefixes_each_read_as_is() {
        let p = Prefix::new(">", Framing::Chunk);
        assert_eq!(run(&p, &[b"ab", b"c\n"]), b">ab>c\n");
    }
}
