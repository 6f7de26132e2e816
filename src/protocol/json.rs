//! `json`: a stream of JSON values in, each answered with its compact form
//! plus `\n` (SPEC §5.5).
//!
//! Values may come one per line (JSON Lines) or back to back with nothing
//! between them (`json.dumps(x)` sent twice). serde_json's
//! `StreamDeserializer` finds where each value ends; a value cut off by the
//! end of the input so far is simply incomplete, and waits for more bytes.
//!
//! Two edges:
//! - A top-level number is complete only once something follows it: `12`
//!   may yet become `123`. So a number that ends exactly at the end of the
//!   input waits for whitespace.
//! - Invalid JSON cannot be resynchronised (where would the next value
//!   start?), so it gets `{"error":"..."}` and the connection closes.
//!
//! Cost: re-parsing the unconsumed prefix on every read would make a value
//! dribbled one byte at a time O(n²). A value can only *end* at `}`, `]`,
//! `"`, the last letter of `true`/`false`/`null`, or whitespace after a
//! number, so we only try to parse once such a byte has arrived. (The
//! price: garbage with none of those bytes is reported when one arrives, a
//! newline for instance, or when `--max-line` is exceeded.)

use serde_json::Value;

use super::{Protocol, Reply};

/// Re-serializes each JSON value compactly, one per line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

/// Per-connection state: how much of the unconsumed input was already
/// looked at without finding a byte that could end a value.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonCursor {
    seen: usize,
}

fn may_end_a_value(byte: u8) -> bool {
    matches!(byte, b'}' | b']' | b'"' | b'e' | b'l') || byte.is_ascii_whitespace()
}

/// Append `{"error": message}` and a newline.
fn send_error(message: &str, reply: &mut Reply<'_>) {
    let error = serde_json::json!({ "error": message });
    serde_json::to_writer(&mut *reply.buffer(), &error).expect("writing to a Vec cannot fail");
    reply.send(b"\n");
}

impl Protocol for Json {
    type Session = JsonCursor;

    fn on_open(&self, _reply: &mut Reply<'_>) -> JsonCursor {
        JsonCursor::default()
    }

    fn on_bytes(&self, cursor: &mut JsonCursor, input: &[u8], reply: &mut Reply<'_>) -> usize {
        let fresh = &input[cursor.seen.min(input.len())..];
        if !fresh.iter().copied().any(may_end_a_value) {
            cursor.seen = input.len();
            return 0; // no value can have completed since last time
        }
        let mut values = serde_json::Deserializer::from_slice(input).into_iter::<Value>();
        let mut consumed = 0;
        loop {
            match values.next() {
                // Only whitespace is left.
                None => {
                    consumed = input.len();
                    break;
                }
                Some(Ok(value)) => {
                    let end = values.byte_offset();
                    if value.is_number() && end == input.len() {
                        break; // `12` may still become `123`: wait for what follows
                    }
                    serde_json::to_writer(&mut *reply.buffer(), &value)
                        .expect("writing to a Vec cannot fail");
                    reply.send(b"\n");
                    consumed = end;
                }
                Some(Err(e)) if e.is_eof() => break, // cut off: wait for more
                Some(Err(e)) => {
                    send_error(&e.to_string(), reply);
                    reply.close();
                    return input.len();
                }
            }
        }
        // Whitespace after the last value belongs to nobody: drop it, so an
        // idle JSON Lines client leaves nothing buffered.
        while consumed < input.len() && input[consumed].is_ascii_whitespace() {
            consumed += 1;
        }
        cursor.seen = input.len() - consumed;
        consumed
    }

    /// The client closed with a value unfinished: say so.
    fn on_peer_closed(&self, _: &mut JsonCursor, unconsumed: &[u8], reply: &mut Reply<'_>) {
        if unconsumed.iter().any(|b| !b.is_ascii_whitespace()) {
            // A number at the very end is complete after all: EOF follows it.
            match serde_json::from_slice::<Value>(unconsumed) {
                Ok(value) => {
                    serde_json::to_writer(&mut *reply.buffer(), &value)
                        .expect("writing to a Vec cannot fail");
                    reply.send(b"\n");
                }
                Err(e) => send_error(&e.to_string(), reply),
            }
        }
    }

    fn on_input_too_long(&self, _: &mut JsonCursor, reply: &mut Reply<'_>) {
        send_error("value longer than --max-line", reply);
    }

    /// UDP: one value per datagram, answered compactly (no newline), or an error object.
    fn on_datagram(&self, datagram: &[u8], reply: &mut Vec<u8>) {
        match serde_json::from_slice::<Value>(datagram) {
            Ok(value) => serde_json::to_writer(&mut *reply, &value),
            Err(e) => {
                serde_json::to_writer(&mut *reply, &serde_json::json!({ "error": e.to_string() }))
            }
        }
        .expect("writing to a Vec cannot fail");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `pieces` as successive reads; returns (output, closed?, leftover).
    fn run(pieces: &[&[u8]]) -> (String, bool, Vec<u8>) {
        let mut cursor = JsonCursor::default();
        let (mut out, mut pending, mut closed) = (Vec::new(), Vec::new(), false);
        for piece in pieces {
            pending.extend_from_slice(piece);
            let mut reply = Reply::new(&mut out);
            let used = Json.on_bytes(&mut cursor, &pending, &mut reply);
            closed |= reply.wants_close();
            pending.drain(..used);
        }
        (String::from_utf8(out).unwrap(), closed, pending)
    }

    #[test]
    fn nested_values_come_back_compact_with_key_order_kept() {
        let (out, closed, _) = run(&[b"{ \"b\": [1, {\"x\": null}],\n  \"a\": \"\\u00e9\" }\n"]);
        assert_eq!(out, "{\"b\":[1,{\"x\":null}],\"a\":\"é\"}\n");
        assert!(!closed);
    }

    #[test]
    fn values_back_to_back_without_separators_are_each_answered() {
        let (out, _, rest) = run(&[b"{\"a\":1}[2]\"s\"true null"]);
        assert_eq!(out, "{\"a\":1}\n[2]\n\"s\"\ntrue\nnull\n");
        assert!(rest.is_empty());
    }

    #[test]
    fn a_value_split_across_reads_is_answered_once_complete() {
        let (out, _, rest) = run(&[b"{\"k\": [1,", b" 2", b"]", b"}", b"\n"]);
        assert_eq!(out, "{\"k\":[1,2]}\n");
        assert!(rest.is_empty(), "trailing whitespace is not kept");
    }

    #[test]
    fn a_number_at_the_end_waits_for_whitespace() {
        let (out, _, rest) = run(&[b"12"]);
        assert_eq!(out, "");
        assert_eq!(rest, b"12");
        let (out, _, _) = run(&[b"12", b"3 "]);
        assert_eq!(out, "123\n");
        // After a value that lets the parser run, a trailing number still waits.
        let (out, _, rest) = run(&[b"[1] 12"]);
        assert_eq!(out, "[1]\n");
        assert_eq!(rest, b"12");
    }

    #[test]
    fn invalid_json_gets_an_error_object_and_a_close() {
        let (out, closed, _) = run(&[b"{\"a\":1}\n{\"a\" 2}\n"]);
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("{\"a\":1}"));
        let error: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert!(error["error"].is_string(), "{error}");
        assert!(closed);
    }

    #[test]
    fn bytes_that_cannot_end_a_value_are_not_parsed_again() {
        let mut cursor = JsonCursor::default();
        let mut out = Vec::new();
        let used = Json.on_bytes(&mut cursor, b"[\"abc", &mut Reply::new(&mut out));
        assert_eq!(
            (used, cursor.seen),
            (0, 5),
            "parsed (a quote could end a value), incomplete"
        );
        // Bytes that cannot end a value: not parsed, so even garbage waits...
        let used = Json.on_bytes(&mut cursor, b"[\"abcdef!", &mut Reply::new(&mut out));
        assert_eq!((used, cursor.seen), (0, 9));
        // ...until a byte that could end one arrives.
        let mut reply = Reply::new(&mut out);
        let used = Json.on_bytes(&mut cursor, b"[\"abcdef!\"]", &mut reply);
        assert_eq!(used, 11);
        assert_eq!(out, b"[\"abcdef!\"]\n");
    }

    #[test]
    fn a_datagram_is_one_value() {
        let mut out = Vec::new();
        Json.on_datagram(b" [1, 2] ", &mut out);
        assert_eq!(out, b"[1,2]");
    }
}
