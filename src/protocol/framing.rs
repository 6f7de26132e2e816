//! Cutting a byte stream into messages.
//!
//! TCP delivers a stream, not messages: one `recv` may hold half a message
//! or ten of them. `line` framing (each message ends with `\n`; a `\r`
//! before it is dropped) is reliable; `chunk` framing treats whatever one
//! read returned as one message — what the classic `recv(1024)` tutorial
//! servers assume, and wrong whenever TCP splits or merges segments.

/// How a stream protocol finds message boundaries (`--framing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// `\n`-terminated lines (`\r\n` tolerated).
    #[default]
    Line,
    /// Each read is one message (unreliable across TCP segment boundaries).
    Chunk,
}

/// What a per-message callback wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on with the next message.
    Continue,
    /// Stop here; the bytes after this message are left unconsumed.
    Stop,
}

/// `line` without one trailing `\n` or `\r\n`.
pub fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Finds complete lines at the front of a connection's unconsumed input.
///
/// The reactor passes the same unconsumed bytes again, with more appended,
/// until a line completes. Remembering how far we already searched keeps a
/// long line that arrives a byte at a time O(n) to scan, not O(n²).
///
/// A line longer than `max_line` bytes before its `\n` is never handed out:
/// `split` stops in front of it and leaves it unconsumed, exactly as a
/// partial line that long would be left (and the reactor closes the
/// connection for either), so the outcome does not depend on where TCP
/// cut the input.
#[derive(Debug, Clone, Copy)]
pub struct LineCursor {
    /// Leading bytes of the unconsumed input known to hold no `\n`.
    searched: usize,
    /// The longest line handed out (`--max-line`), without its `\n`.
    max_line: usize,
}

impl Default for LineCursor {
    /// No limit on a line's length.
    fn default() -> Self {
        LineCursor::with_max_line(usize::MAX)
    }
}

impl LineCursor {
    /// A cursor that hands out lines of at most `max_line` bytes.
    pub fn with_max_line(max_line: usize) -> Self {
        LineCursor {
            searched: 0,
            max_line,
        }
    }

    /// Call `each` with every complete line at the front of `input` (without
    /// its line ending), until the lines run out, `each` says `Stop`, or a
    /// line is longer than the cursor's `max_line` (left unconsumed).
    /// Returns the bytes consumed: everything up to the last line handed out.
    pub fn split<'a>(&mut self, input: &'a [u8], mut each: impl FnMut(&'a [u8]) -> Flow) -> usize {
        let mut start = 0;
        let mut from = self.searched.min(input.len());
        while let Some(offset) = input[from..].iter().position(|&b| b == b'\n') {
            let end = from + offset;
            // Bytes before the `\n`, `\r` included: what a partial line
            // would hold just before its `\n` arrives.
            if end - start > self.max_line {
                self.searched = 0; // the rest was not searched
                return start;
            }
            let line = trim_line_end(&input[start..end]);
            start = end + 1;
            from = start;
            if each(line) == Flow::Stop {
                self.searched = 0; // the rest was not searched
                return start;
            }
        }
        // The unconsumed rest, input[start..], holds no newline.
        self.searched = input.len() - start;
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(cursor: &mut LineCursor, input: &[u8]) -> (Vec<Vec<u8>>, usize) {
        let mut found = Vec::new();
        let used = cursor.split(input, |line| {
            found.push(line.to_vec());
            Flow::Continue
        });
        (found, used)
    }

    #[test]
    fn lines_are_cut_at_newlines_with_crlf_tolerated() {
        let mut cursor = LineCursor::default();
        let (found, used) = lines(&mut cursor, b"one\ntwo\r\nthr");
        assert_eq!(found, [b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(used, 9);
    }

    #[test]
    fn a_line_arriving_in_pieces_completes_once() {
        let mut cursor = LineCursor::default();
        let mut pending = Vec::new();
        let mut found = Vec::new();
        for &byte in b"hello\nworld\n" {
            pending.push(byte);
            let (mut lines_now, used) = lines(&mut cursor, &pending);
            found.append(&mut lines_now);
            pending.drain(..used);
        }
        assert_eq!(found, [b"hello".to_vec(), b"world".to_vec()]);
        assert!(pending.is_empty());
    }

    #[test]
    fn stop_leaves_the_rest_unconsumed() {
        let mut cursor = LineCursor::default();
        let used = cursor.split(b"a\nexit\nb\n", |line| {
            if line == b"exit" {
                Flow::Stop
            } else {
                Flow::Continue
            }
        });
        assert_eq!(used, 7);
    }

    #[test]
    fn a_line_longer_than_max_line_is_left_unconsumed_with_what_follows() {
        let mut cursor = LineCursor::with_max_line(4);
        let (found, used) = lines(&mut cursor, b"abcd\nab\r\nabcde\nz\n");
        assert_eq!(found, [b"abcd".to_vec(), b"ab".to_vec()]);
        assert_eq!(used, 9, "stops in front of the 5-byte line");
        // `abc\r` is 4 bytes before its `\n`, like a partial `abc\r` would be.
        let (found, _) = lines(&mut LineCursor::with_max_line(3), b"abc\r\n");
        assert!(found.is_empty());
    }

    #[test]
    fn trim_line_end_drops_one_line_ending() {
        assert_eq!(trim_line_end(b"x\r\n"), b"x");
        assert_eq!(trim_line_end(b"x\n"), b"x");
        assert_eq!(trim_line_end(b"x"), b"x");
        assert_eq!(trim_line_end(b"x\n\n"), b"x\n");
    }
}
