//! Property tests of the stream parsers: any input, cut into reads at any
//! points, is answered exactly as if it had come in one read, and nothing
//! panics — line framing (and `greet`/`prefix` through it), the JSON
//! stream, and the HMAC handshake in front of a protocol.
//!
//! Each property drives a protocol the way the reactor does (see
//! `Connection::on_input`): keep the unconsumed rest, append the next read,
//! call `on_bytes` again, drop what it consumed; stop feeding once it asks
//! to close (later input is ignored) or refuses (and then drop that reply's
//! bytes); at the end, EOF (`on_peer_closed`) with what is left.

use echo_reactor::protocol::framing::{trim_line_end, Flow, LineCursor};
use echo_reactor::protocol::{
    AuthKey, Authenticated, Echo, Framing, Greet, Json, Prefix, Protocol, Reply, CHALLENGE_BYTES,
    HANDSHAKE_TIMEOUT,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_json::{Map, Value};

/// Everything a client would see from one connection.
#[derive(Debug, PartialEq, Eq)]
struct Transcript {
    /// Bytes sent, greeting included.
    sent: Vec<u8>,
    /// The protocol asked to close (after sending).
    closed: bool,
    /// The protocol refused the client (nothing more sent).
    refused: bool,
}

/// Serve one connection whose client sends `input(greeting)` — the input
/// may depend on what the server said first (the handshake's challenge) —
/// cut into reads at `cuts` (indices into the input, any order, repeats
/// allowed: an empty read is harmless too).
fn serve<P: Protocol>(
    protocol: &P,
    input: impl FnOnce(&[u8]) -> Vec<u8>,
    cuts: &[Index],
) -> Transcript {
    let mut sent = Vec::new();
    let mut session = protocol.on_open(&mut Reply::new(&mut sent));
    let input = input(&sent);
    let mut ends: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
    ends.push(input.len());
    ends.sort_unstable();

    let (mut pending, mut from) = (Vec::new(), 0);
    let mut buf = Vec::new();
    for end in ends {
        pending.extend_from_slice(&input[from..end]);
        from = end;
        buf.clear();
        let mut reply = Reply::new(&mut buf);
        let consumed = protocol.on_bytes(&mut session, &pending, &mut reply);
        let requests = reply.requests();
        assert!(consumed <= pending.len(), "consumed more than it was given");
        if requests.refuse.is_some() {
            return Transcript {
                sent,
                closed: false,
                refused: true,
            };
        }
        sent.extend_from_slice(&buf);
        pending.drain(..consumed);
        if requests.close {
            return Transcript {
                sent,
                closed: true,
                refused: false,
            };
        }
    }
    buf.clear();
    let mut reply = Reply::new(&mut buf);
    protocol.on_peer_closed(&mut session, &pending, &mut reply);
    let refused = reply.refused();
    if !refused {
        sent.extend_from_slice(&buf);
    }
    Transcript {
        sent,
        closed: false,
        refused,
    }
}

/// `serve` with an input that does not depend on the greeting.
fn serve_bytes<P: Protocol>(protocol: &P, input: &[u8], cuts: &[Index]) -> Transcript {
    serve(protocol, |_| input.to_vec(), cuts)
}

/// Cut points for an input: up to 24 reads.
fn cuts() -> impl Strategy<Value = Vec<Index>> {
    vec(any::<Index>(), 0..24)
}

/// Bytes from `alphabet`, so that the interesting bytes are frequent.
fn bytes_from(alphabet: &'static [u8], max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(select(alphabet), 0..max_len)
}

/// Line-protocol input: names, `exit`, line endings (`\r\n`, a lone `\r`),
/// a multi-byte UTF-8 letter, and any byte at all.
fn line_input() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"Ann".to_vec()),
        Just(b"exit".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just("é".as_bytes().to_vec()),
        any::<u8>().prop_map(|b| vec![b]),
    ];
    vec(token, 0..40).prop_map(|tokens| tokens.concat())
}

/// JSON's own alphabet (plus a byte no value may hold), for inputs that
/// are sometimes values, sometimes garbage, and often cut off.
const JSON_ISH: &[u8] = b"{}[]\",:\\ \n\t0123456789-+.eEtrufalsn x\x0c";

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(512)
}

// ---- line framing ----

proptest! {
    #![proptest_config(config())]

    /// `LineCursor` hands out the same lines however the input is cut, and
    /// they are exactly the input's `\n`-terminated lines, `\r\n` trimmed.
    #[test]
    fn line_cursor_finds_the_same_lines_however_the_input_is_split(
        input in bytes_from(b"ab\r\n\n", 200),
        cuts in cuts(),
    ) {
        let mut ends: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        ends.push(input.len());
        ends.sort_unstable();
        let mut cursor = LineCursor::default();
        let (mut pending, mut lines, mut from) = (Vec::new(), Vec::new(), 0);
        for end in ends {
            pending.extend_from_slice(&input[from..end]);
            from = end;
            let used = cursor.split(&pending, |line| {
                lines.push(line.to_vec());
                Flow::Continue
            });
            pending.drain(..used);
        }
        let mut expected: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        let unterminated = expected.pop().unwrap(); // the bytes after the last `\n`
        let expected: Vec<Vec<u8>> = expected.iter().map(|l| trim_line_end(l).to_vec()).collect();
        prop_assert_eq!(lines, expected);
        prop_assert_eq!(pending, unterminated.to_vec());
    }

    #[test]
    fn greet_answers_alike_however_the_input_is_split(input in line_input(), cuts in cuts()) {
        let greet = Greet::new(Framing::Line);
        prop_assert_eq!(serve_bytes(&greet, &input, &cuts), serve_bytes(&greet, &input, &[]));
    }

    #[test]
    fn prefix_answers_alike_however_the_input_is_split(input in line_input(), cuts in cuts()) {
        let prefix = Prefix::new("Echo=>", Framing::Line);
        let whole = serve_bytes(&prefix, &input, &[]);
        prop_assert_eq!(serve_bytes(&prefix, &input, &cuts), whole);
    }
}

// ---- the JSON stream ----

/// Strings with quotes, backslashes, brackets, control and non-ASCII
/// characters: everything the scanner must step over correctly.
fn json_string() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            select(vec![
                '"', '\\', '[', ']', '{', '}', '\n', '\u{1}', 'é', '😀', 'a', ' '
            ]),
            any::<char>(),
        ],
        0..8,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

/// Any JSON value, nested a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN and infinities become null
        json_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((json_string(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// JSON whitespace, possibly none.
fn json_space() -> impl Strategy<Value = String> {
    vec(select(vec![' ', '\t', '\n', '\r']), 0..3).prop_map(|s| s.into_iter().collect())
}

/// Whitespace to put between tokens, taken in turn.
struct Spacer<'a> {
    spaces: &'a [String],
    next: usize,
}

impl Spacer<'_> {
    fn put(&mut self, out: &mut String) {
        if !self.spaces.is_empty() {
            out.push_str(&self.spaces[self.next % self.spaces.len()]);
            self.next += 1;
        }
    }
}

/// `value` as text with whitespace wherever JSON allows it.
fn write_spaced(value: &Value, spacer: &mut Spacer<'_>, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                spacer.put(out);
                if i > 0 {
                    out.push(',');
                    spacer.put(out);
                }
                write_spaced(item, spacer, out);
            }
            spacer.put(out);
            out.push(']');
        }
        Value::Object(entries) => {
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                spacer.put(out);
                if i > 0 {
                    out.push(',');
                    spacer.put(out);
                }
                out.push_str(&Value::String(key.clone()).to_string());
                spacer.put(out);
                out.push(':');
                spacer.put(out);
                write_spaced(item, spacer, out);
            }
            spacer.put(out);
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The old framing (serde_json's `StreamDeserializer` over the whole
/// input), kept here as the reference for what a stream read in one piece
/// is answered: the scanner must agree with it.
fn answered_by_the_old_parser(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut values = serde_json::Deserializer::from_slice(input).into_iter::<Value>();
    let mut consumed = 0;
    loop {
        match values.next() {
            None => {
                consumed = input.len();
                break;
            }
            Some(Ok(value)) => {
                let end = values.byte_offset();
                if value.is_number() && end == input.len() {
                    break;
                }
                out.extend_from_slice(format!("{value}\n").as_bytes());
                consumed = end;
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(_)) => {
                out.extend_from_slice(b"{\"error\":\"\"}\n");
                return out;
            }
        }
    }
    // EOF with the rest.
    let rest = &input[consumed..];
    if rest.iter().any(|b| !b.is_ascii_whitespace()) {
        match serde_json::from_slice::<Value>(rest) {
            Ok(value) => out.extend_from_slice(format!("{value}\n").as_bytes()),
            Err(_) => out.extend_from_slice(b"{\"error\":\"\"}\n"),
        }
    }
    out
}

/// Answer lines with every error message blanked: messages may differ (the
/// scanner reports some errors before serde_json sees them).
fn blank_errors(sent: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(sent)
        .lines()
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(o)) if o.len() == 1 && o["error"].is_string() => {
                "{\"error\":\"\"}".to_string()
            }
            _ => line.to_string(),
        })
        .collect()
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary bytes: no panic, and the same answers however they are cut.
    #[test]
    fn json_answers_any_bytes_alike_however_they_are_split(
        input in vec(any::<u8>(), 0..64),
        cuts in cuts(),
    ) {
        prop_assert_eq!(serve_bytes(&Json, &input, &cuts), serve_bytes(&Json, &input, &[]));
    }

    #[test]
    fn json_answers_json_ish_bytes_alike_however_they_are_split(
        input in bytes_from(JSON_ISH, 200),
        cuts in cuts(),
    ) {
        prop_assert_eq!(serve_bytes(&Json, &input, &cuts), serve_bytes(&Json, &input, &[]));
    }

    /// Read in one piece, a stream gets the answers the old parser gave,
    /// up to error texts — but for one deliberate change: a literal is
    /// answered at its last letter, so in `truex` the `true` is answered
    /// before the error (the old parser answered it too, when `x` came in a
    /// later read).
    #[test]
    fn json_in_one_read_is_answered_as_the_old_parser_did(input in bytes_from(JSON_ISH, 120)) {
        let now = blank_errors(&serve_bytes(&Json, &input, &[]).sent);
        let before = blank_errors(&answered_by_the_old_parser(&input));
        let literal_before_error = now.len() == before.len() + 1
            && now.last() == before.last()
            && now.last().is_some_and(|l| l.starts_with("{\"error\""))
            && ["true", "false", "null"].contains(&now[now.len() - 2].as_str())
            && now[..before.len() - 1] == before[..before.len() - 1];
        prop_assert!(now == before || literal_before_error, "now {:?}\nbefore {:?}", now, before);
    }

    /// Valid values with whitespace anywhere JSON allows it, back to back:
    /// each comes back compact, in order, with its key order kept.
    #[test]
    fn json_values_come_back_compact_and_in_order_however_split(
        values in vec(json_value(), 1..5),
        spaces in vec(json_space(), 0..16),
        cuts in cuts(),
    ) {
        let (mut input, mut expected) = (String::new(), String::new());
        let mut spacer = Spacer { spaces: &spaces, next: 0 };
        for value in &values {
            write_spaced(value, &mut spacer, &mut input);
            // A number or literal needs a separator before the next value.
            input.push(' ');
            // What serde_json makes of the value's own text: numbers like
            // 1e300 or -0.0 print back their own way.
            let reparsed: Value = serde_json::from_str(&value.to_string()).unwrap();
            expected.push_str(&format!("{reparsed}\n"));
        }
        let got = serve_bytes(&Json, input.as_bytes(), &cuts);
        prop_assert!(!got.closed, "{}", String::from_utf8_lossy(&got.sent));
        prop_assert_eq!(String::from_utf8(got.sent).unwrap(), expected);
    }
}

// ---- the HMAC handshake ----

/// A client's bytes: the right answer to the challenge or a wrong one (or
/// only part of one), then `tail`.
fn handshake_input(
    key: &AuthKey,
    challenge: &[u8],
    right: bool,
    cut: usize,
    tail: &[u8],
) -> Vec<u8> {
    let mut answer = key.answer(challenge).to_vec();
    if !right {
        answer[cut % CHALLENGE_BYTES] ^= 1;
    }
    if cut >= CHALLENGE_BYTES {
        answer.extend_from_slice(tail);
    } else if !right {
        answer.truncate(cut); // a client that sends part of an answer, then EOF
    }
    answer
}

proptest! {
    #![proptest_config(config())]

    /// The handshake, then echo: the same transcript (after the random
    /// challenge) however the answer and what follows it are cut.
    #[test]
    fn the_handshake_answers_alike_however_the_input_is_split(
        right in any::<bool>(),
        cut in 0..2 * CHALLENGE_BYTES,
        tail in vec(any::<u8>(), 0..64),
        cuts in cuts(),
    ) {
        let key = AuthKey::new(b"sesame").unwrap();
        let auth = Authenticated::new(Echo, key.clone(), HANDSHAKE_TIMEOUT);
        let client = |challenge: &[u8]| handshake_input(&key, challenge, right, cut, &tail);
        let mut split = serve(&auth, client, &cuts);
        let mut whole = serve(&auth, client, &[]);
        // Each run has its own random challenge: compare what follows it.
        split.sent.drain(..CHALLENGE_BYTES);
        whole.sent.drain(..CHALLENGE_BYTES);
        prop_assert_eq!(&split, &whole);
        let wrong = !right && cut >= CHALLENGE_BYTES;
        prop_assert_eq!(whole.refused, wrong);
        if right && cut >= CHALLENGE_BYTES {
            prop_assert_eq!(&whole.sent, &tail, "echo of everything after the answer");
        }
    }

    /// The same with a protocol that keeps the unconsumed input (json): the
    /// bytes that came with the answer and those after them line up.
    #[test]
    fn json_behind_the_handshake_answers_alike_however_split(
        tail in bytes_from(JSON_ISH, 120),
        cuts in cuts(),
    ) {
        let key = AuthKey::new(b"sesame").unwrap();
        let auth = Authenticated::new(Json, key.clone(), HANDSHAKE_TIMEOUT);
        let client = |challenge: &[u8]| handshake_input(&key, challenge, true, CHALLENGE_BYTES, &tail);
        let mut split = serve(&auth, client, &cuts);
        split.sent.drain(..CHALLENGE_BYTES);
        prop_assert_eq!(split, serve_bytes(&Json, &tail, &[]));
    }
}
