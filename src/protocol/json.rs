//! `json`: a stream of JSON values in, each answered with its compact form
//! plus `\n`.
//!
//! Values may come one per line (JSON Lines) or back to back with nothing
//! between them (`json.dumps(x)` sent twice). A small scanner
//! ([`JsonCursor`]) finds where each top-level value *ends*; only then does
//! serde_json see that value's bytes, exactly once, to validate it and
//! re-serialize it compactly. A value cut off by the end of the input so
//! far is simply incomplete, and waits for more bytes.
//!
//! Edges:
//! - A top-level number is complete only once something follows it: `12`
//!   may yet become `123`. So a number that ends exactly at the end of the
//!   input waits for whitespace (or EOF, in `on_peer_closed`).
//! - `true`, `false` and `null` are answered as soon as their last letter
//!   arrives; the byte after one must then separate it from what follows
//!   (`truex` and `truefalse` are errors, after the `true`).
//! - Invalid JSON cannot be resynchronised (where would the next value
//!   start?), so it gets `{"error":"..."}` and the connection closes.
//! - Nesting deeper than serde_json's limit (127 open brackets) is an error
//!   as soon as the 128th bracket arrives.
//!
//! Cost: linear in the bytes received, however they are split into reads.
//! The reactor passes the unconsumed input again, with more appended, until
//! a value completes; re-parsing it each time would make a large value
//! dribbled in small segments O(n²) (the parser that did so spent 0.15 s
//! of CPU on 9 KB). So the cursor remembers how far it scanned and in what
//! state, and each call scans only the new bytes: every byte is looked at once
//! (the byte that ends a top-level number twice: once to end the number,
//! once as the start of what follows), and handed to serde_json once, inside
//! its complete value. The scanner knows only what it takes to find a
//! value's end — brackets, strings and escapes, top-level numbers and
//! literals — and rejects at once what is cheap to see (a byte that cannot
//! start a value, a closing bracket with nothing open, nesting too deep);
//! serde_json still validates everything inside a value.

use serde_json::Value;

use super::{Protocol, Reply};

/// Re-serializes each JSON value compactly, one per line.
///
/// The value [`Json`](const@Json) is this protocol with no limit of its own;
/// a server tells it `--max-line` ([`Protocol::with_max_line`]).
#[derive(Debug, Clone, Copy)]
pub struct Json {
    /// `--max-line`: the longest value answered, in bytes.
    max_value: usize,
}

/// The `json` protocol, written `Json` as if it were a unit struct (the
/// type keeps the name in the type namespace, this value in the value
/// namespace): no limit on a value's length until a server sets `--max-line`.
#[allow(non_upper_case_globals)]
pub const Json: Json = Json {
    max_value: usize::MAX,
};

impl Default for Json {
    fn default() -> Self {
        Json
    }
}

/// Open brackets a value may hold: serde_json refuses the 128th
/// (`RecursionLimitExceeded`), so the scanner refuses it too, at once,
/// and its `u8` depth counter never goes past this.
const MAX_DEPTH: u8 = 127;

/// Per-connection state: where the scanner stands in the value in progress.
///
/// Offsets are relative to the unconsumed input, which always begins at the
/// value in progress: whitespace between values and every complete value
/// are consumed as soon as they are found, so a consumed prefix never holds
/// bytes this cursor still needs.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonCursor {
    /// Leading bytes of the unconsumed input already scanned (all part of
    /// the value in progress); the next call starts here.
    scanned: usize,
    /// What the scanner was in the middle of after the last scanned byte.
    state: Scan,
    /// `[` and `{` open (outside strings) in the value in progress; at most [`MAX_DEPTH`].
    depth: u8,
    /// Work done, for the tests that prove the scan linear.
    #[cfg(test)]
    work: Work,
}

/// What the tests count: bytes stepped through by the scanner, and bytes
/// handed to serde_json.
#[cfg(test)]
#[derive(Debug, Default, Clone, Copy)]
struct Work {
    stepped: usize,
    parsed: usize,
}

/// The scanner's states. Each exists because without it some value's end
/// would be found in the wrong place.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Between top-level values: whitespace is skipped (and consumed), any
    /// other byte must start a value.
    #[default]
    Between,
    /// Inside an array or object, outside strings: only brackets matter, and
    /// the one that brings `depth` back to 0 ends the value.
    Container,
    /// Inside a string, top-level or nested: brackets here are text, and only
    /// an unescaped `"` ends it. `escaped`: the previous byte was a
    /// backslash, so this byte (even `"`) is text; the flag must survive the
    /// end of a read, since a read may end right after the backslash.
    Str { escaped: bool },
    /// A top-level number: it has no closing byte, so it ends at the first
    /// byte that cannot continue it — which is why one at the end of the
    /// input must wait.
    Number,
    /// A top-level `true`, `false` or `null`, `matched` letters in: a wrong
    /// letter is an error at once, and the last one ends the value.
    Literal { word: Word, matched: u8 },
    /// Just after a top-level literal: the next byte must separate it from
    /// what follows (`truefalse` is not two values). A state of its own
    /// because that byte may arrive in a later read.
    AfterLiteral,
    /// The stream was invalid or too long, and the connection is closing:
    /// whatever else arrives is consumed and ignored.
    Failed,
}

/// The three JSON literals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    True,
    False,
    Null,
}

impl Word {
    fn text(self) -> &'static [u8] {
        match self {
            Word::True => b"true",
            Word::False => b"false",
            Word::Null => b"null",
        }
    }
}

/// What one byte meant for the value in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Part of the value in progress.
    Inside,
    /// Whitespace between values: it belongs to none.
    Gap,
    /// The value ends with this byte.
    EndsHere,
    /// The value (a top-level number) ended just before this byte, which is
    /// to be stepped again as the start of what follows.
    EndedBefore,
    /// No valid stream continues like this; the text says why, in case
    /// serde_json cannot (see [`explain`]).
    Invalid(&'static str),
}

/// JSON's whitespace: exactly these four (not form feed, unlike `u8::is_ascii_whitespace`).
fn is_json_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

/// Bytes that may follow a number or literal: serde_json's own rule for a
/// value without a closing byte (`StreamDeserializer::peek_end_of_value`).
fn ends_a_scalar(byte: u8) -> bool {
    is_json_space(byte) || matches!(byte, b'"' | b'[' | b']' | b'{' | b'}' | b',' | b':')
}

impl JsonCursor {
    /// Advance the scanner over one byte of the value in progress.
    fn step(&mut self, byte: u8) -> Step {
        match self.state {
            Scan::Between => match byte {
                b if is_json_space(b) => Step::Gap,
                b'{' | b'[' => {
                    self.depth = 1;
                    self.state = Scan::Container;
                    Step::Inside
                }
                b'"' => {
                    self.state = Scan::Str { escaped: false };
                    Step::Inside
                }
                b'-' | b'0'..=b'9' => {
                    self.state = Scan::Number;
                    Step::Inside
                }
                b't' | b'f' | b'n' => {
                    let word = match byte {
                        b't' => Word::True,
                        b'f' => Word::False,
                        _ => Word::Null,
                    };
                    self.state = Scan::Literal { word, matched: 1 };
                    Step::Inside
                }
                // `]` or `}` with nothing open, `,`, `:`, or plain garbage.
                _ => Step::Invalid("expected a JSON value"),
            },
            Scan::Container => match byte {
                b'"' => {
                    self.state = Scan::Str { escaped: false };
                    Step::Inside
                }
                b'{' | b'[' if self.depth == MAX_DEPTH => Step::Invalid("recursion limit exceeded"),
                b'{' | b'[' => {
                    self.depth += 1;
                    Step::Inside
                }
                // Whether the bracket matches its opener is serde_json's to check.
                b'}' | b']' => {
                    self.depth -= 1; // >= 1 here: Container means a bracket is open
                    if self.depth == 0 {
                        self.state = Scan::Between;
                        Step::EndsHere
                    } else {
                        Step::Inside
                    }
                }
                _ => Step::Inside,
            },
            Scan::Str { escaped: true } => {
                self.state = Scan::Str { escaped: false };
                Step::Inside
            }
            Scan::Str { escaped: false } => match byte {
                b'\\' => {
                    self.state = Scan::Str { escaped: true };
                    Step::Inside
                }
                b'"' if self.depth == 0 => {
                    self.state = Scan::Between;
                    Step::EndsHere
                }
                b'"' => {
                    self.state = Scan::Container;
                    Step::Inside
                }
                _ => Step::Inside,
            },
            Scan::Number => match byte {
                // Every byte a number may hold; serde_json checks their order.
                b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E' => Step::Inside,
                b if ends_a_scalar(b) => {
                    self.state = Scan::Between;
                    Step::EndedBefore
                }
                _ => Step::Invalid("invalid number"),
            },
            Scan::Literal { word, matched } => {
                let text = word.text();
                if byte != text[usize::from(matched)] {
                    return Step::Invalid("expected true, false or null");
                }
                let matched = matched + 1;
                if usize::from(matched) == text.len() {
                    self.state = Scan::AfterLiteral;
                    Step::EndsHere
                } else {
                    self.state = Scan::Literal { word, matched };
                    Step::Inside
                }
            }
            Scan::AfterLiteral if ends_a_scalar(byte) => {
                // A separator: it belongs to what follows (at most one
                // level of recursion: Between never recurses).
                self.state = Scan::Between;
                self.step(byte)
            }
            Scan::AfterLiteral => Step::Invalid("trailing characters after a literal"),
            Scan::Failed => Step::Invalid("the stream already failed"),
        }
    }

    /// Forget the value in progress: from now on every byte is discarded.
    fn fail(&mut self) {
        self.state = Scan::Failed;
        self.scanned = 0;
        self.depth = 0;
    }

    /// serde_json's verdict on one complete value's bytes.
    fn parse(&mut self, bytes: &[u8]) -> serde_json::Result<Value> {
        #[cfg(test)]
        {
            self.work.parsed += bytes.len();
        }
        serde_json::from_slice(bytes)
    }
}

/// Why `bytes` (the value in progress, up to and including the byte the
/// scanner refused) is invalid: serde_json's message when it finds the
/// error too, so every error reads alike ("... at line 1 column 5");
/// otherwise the scanner's own `reason`. Called once per connection, at
/// most, since the connection then closes.
fn explain(bytes: &[u8], reason: &str) -> String {
    match serde_json::from_slice::<Value>(bytes) {
        Err(e) if !e.is_eof() => e.to_string(),
        _ => reason.to_string(),
    }
}

/// Append `value` compactly and a newline.
fn send_value(value: &Value, reply: &mut Reply<'_>) {
    serde_json::to_writer(&mut *reply.buffer(), value).expect("writing to a Vec cannot fail");
    reply.send(b"\n");
}

/// Append `{"error": message}` and a newline.
fn send_error(message: &str, reply: &mut Reply<'_>) {
    send_value(&serde_json::json!({ "error": message }), reply);
}

impl Protocol for Json {
    type Session = JsonCursor;

    fn on_open(&self, _reply: &mut Reply<'_>) -> JsonCursor {
        JsonCursor::default()
    }

    fn on_bytes(&self, cursor: &mut JsonCursor, input: &[u8], reply: &mut Reply<'_>) -> usize {
        if cursor.state == Scan::Failed {
            return input.len(); // closing: nothing more is answered
        }
        // Where the value in progress begins: everything before is consumed.
        let mut start = 0;
        // The reactor gives back at least what it kept last time (the
        // value in progress), so `scanned` fits; `min` only guards the contract.
        debug_assert!(
            cursor.scanned <= input.len(),
            "input shrank under the cursor"
        );
        let mut pos = cursor.scanned.min(input.len());
        while pos < input.len() {
            #[cfg(test)]
            {
                cursor.work.stepped += 1;
            }
            match cursor.step(input[pos]) {
                Step::Inside => pos += 1,
                Step::Gap => {
                    pos += 1;
                    start = pos; // dropped: an idle JSON Lines client leaves nothing buffered
                }
                step @ (Step::EndsHere | Step::EndedBefore) => {
                    if step == Step::EndsHere {
                        pos += 1;
                    } // else: the byte at `pos` is stepped again, as what follows the value
                    if pos - start > self.max_value {
                        // Too long, though complete: left unconsumed, as a
                        // partial value this long would be, so the reactor
                        // ends the connection the same way whatever the
                        // segmentation (`on_input_too_long`).
                        cursor.scanned = 0;
                        return start;
                    }
                    match cursor.parse(&input[start..pos]) {
                        Ok(value) => send_value(&value, reply),
                        Err(e) => {
                            send_error(&e.to_string(), reply);
                            return close_failed(cursor, input, reply);
                        }
                    }
                    start = pos;
                }
                Step::Invalid(reason) => {
                    #[cfg(test)]
                    {
                        cursor.work.parsed += pos + 1 - start;
                    }
                    send_error(&explain(&input[start..=pos], reason), reply);
                    return close_failed(cursor, input, reply);
                }
            }
        }
        cursor.scanned = pos - start;
        start
    }

    /// The client closed with a value unfinished: answer it if it is
    /// complete after all (a number: EOF follows it), else say what is wrong.
    fn on_peer_closed(&self, cursor: &mut JsonCursor, unconsumed: &[u8], reply: &mut Reply<'_>) {
        if cursor.state == Scan::Failed || unconsumed.iter().all(|&b| is_json_space(b)) {
            return;
        }
        match cursor.parse(unconsumed) {
            Ok(value) => send_value(&value, reply),
            Err(e) => send_error(&e.to_string(), reply),
        }
        cursor.fail();
    }

    fn with_max_line(self, max_line: usize) -> Self {
        Json {
            max_value: max_line,
        }
    }

    fn on_input_too_long(&self, cursor: &mut JsonCursor, reply: &mut Reply<'_>) {
        send_error("value longer than --max-line", reply);
        cursor.fail(); // the reactor drops the input: our offsets mean nothing now
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

/// After an error object: close once it is sent, and consume everything
/// (the stream cannot be resynchronised).
fn close_failed(cursor: &mut JsonCursor, input: &[u8], reply: &mut Reply<'_>) -> usize {
    cursor.fail();
    reply.close();
    input.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feed `pieces` as successive reads, as the reactor does (keep the
    /// unconsumed rest, append the next piece); returns (output, closed?,
    /// leftover) and the cursor, for its work counters.
    fn feed(pieces: &[&[u8]]) -> (String, bool, Vec<u8>, JsonCursor) {
        let mut cursor = JsonCursor::default();
        let (mut out, mut pending, mut closed) = (Vec::new(), Vec::new(), false);
        for piece in pieces {
            pending.extend_from_slice(piece);
            let mut reply = Reply::new(&mut out);
            let used = Json.on_bytes(&mut cursor, &pending, &mut reply);
            closed |= reply.wants_close();
            pending.drain(..used);
        }
        (String::from_utf8(out).unwrap(), closed, pending, cursor)
    }

    fn run(pieces: &[&[u8]]) -> (String, bool, Vec<u8>) {
        let (out, closed, rest, _) = feed(pieces);
        (out, closed, rest)
    }

    /// `out` is some values, then one error object.
    fn ends_in_error(out: &str) -> bool {
        let last = out.lines().last().unwrap_or("");
        serde_json::from_str::<Value>(last).is_ok_and(|v| v["error"].is_string())
    }

    // ---- values and their framing ----

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
    fn brackets_and_escaped_quotes_inside_strings_are_text_even_across_reads() {
        let (out, closed, rest) = run(&[b"[\"]\\", b"\"}\"", b", \"{\"]"]);
        assert_eq!(out, "[\"]\\\"}\",\"{\"]\n");
        assert!(!closed && rest.is_empty());
        let (out, _, _) = run(&[b"\"a\\", b"\\\"\""]);
        assert_eq!(
            out, "\"a\\\\\"\n",
            "an escaped backslash does not escape the quote"
        );
    }

    #[test]
    fn a_number_at_the_end_waits_for_whitespace() {
        let (out, _, rest) = run(&[b"12"]);
        assert_eq!(out, "");
        assert_eq!(rest, b"12");
        let (out, _, _) = run(&[b"12", b"3 "]);
        assert_eq!(out, "123\n");
        // After a complete value, a trailing number still waits.
        let (out, _, rest) = run(&[b"[1] 12"]);
        assert_eq!(out, "[1]\n");
        assert_eq!(rest, b"12");
    }

    #[test]
    fn a_number_ends_at_a_bracket_or_quote_as_serde_json_allows() {
        let (out, closed, _) = run(&[b"1[2]-3\"x\"4.5e1{}"]);
        assert_eq!(out, "1\n[2]\n-3\n\"x\"\n45.0\n{}\n");
        assert!(!closed);
    }

    #[test]
    fn a_number_at_eof_is_complete() {
        let mut cursor = JsonCursor::default();
        let mut out = Vec::new();
        assert_eq!(
            Json.on_bytes(&mut cursor, b"-0.5", &mut Reply::new(&mut out)),
            0
        );
        Json.on_peer_closed(&mut cursor, b"-0.5", &mut Reply::new(&mut out));
        assert_eq!(out, b"-0.5\n");
    }

    #[test]
    fn a_value_cut_off_by_eof_gets_an_error() {
        let mut cursor = JsonCursor::default();
        let mut out = Vec::new();
        assert_eq!(
            Json.on_bytes(&mut cursor, b"[1, ", &mut Reply::new(&mut out)),
            0
        );
        Json.on_peer_closed(&mut cursor, b"[1, ", &mut Reply::new(&mut out));
        assert!(ends_in_error(std::str::from_utf8(&out).unwrap()));
    }

    #[test]
    fn literals_are_answered_at_their_last_letter() {
        let (out, _, rest) = run(&[b"tr"]);
        assert_eq!((out.as_str(), rest.as_slice()), ("", &b"tr"[..]));
        let (out, closed, rest) = run(&[b"tr", b"ue"]);
        assert_eq!(out, "true\n");
        assert!(!closed && rest.is_empty());
        let (out, _, _) = run(&[b"null,"]);
        assert!(out.starts_with("null\n") && ends_in_error(&out), "{out}");
    }

    #[test]
    fn a_literal_must_be_followed_by_a_separator() {
        for pieces in [&[&b"truex"[..]][..], &[b"true", b"x"], &[b"truefalse"]] {
            let (out, closed, _) = run(pieces);
            assert!(out.starts_with("true\n") && ends_in_error(&out), "{out}");
            assert!(closed);
        }
    }

    // ---- invalid input: an error object, then close ----

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
    fn a_byte_that_cannot_start_a_value_is_an_error_at_once() {
        // No closing byte needed: the old parser waited for one ("x" then
        // more x's was buffered until --max-line).
        for garbage in [
            &b"x"[..],
            b"]",
            b"}",
            b",",
            b":",
            b"\x0c",
            b"[1]]",
            b"12x",
            b"tx",
        ] {
            let (out, closed, rest) = run(&[garbage]);
            assert!(ends_in_error(&out), "{garbage:?}: {out}");
            assert!(closed && rest.is_empty(), "{garbage:?}");
        }
        let (out, _, _) = run(&[b"]"]);
        assert_eq!(out, "{\"error\":\"expected value at line 1 column 1\"}\n");
    }

    #[test]
    fn after_an_error_everything_is_consumed_and_ignored() {
        let (out, _, rest) = run(&[b"x", b"[1]\n", b"2 "]);
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(rest.is_empty());
    }

    #[test]
    fn input_too_long_sends_an_error_and_ignores_what_follows() {
        let mut cursor = JsonCursor::default();
        let mut out = Vec::new();
        Json.on_bytes(&mut cursor, b"[\"long", &mut Reply::new(&mut out));
        Json.on_input_too_long(&mut cursor, &mut Reply::new(&mut out));
        // The reactor dropped the input; the cursor must not resume in it.
        assert_eq!(
            Json.on_bytes(&mut cursor, b"]", &mut Reply::new(&mut out)),
            1
        );
        assert_eq!(
            out,
            b"{\"error\":\"value longer than --max-line\"}\n".to_vec()
        );
    }

    #[test]
    fn nesting_up_to_serde_jsons_limit_is_served_and_deeper_is_refused_at_once() {
        let depth = usize::from(MAX_DEPTH);
        let deepest = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let (out, closed, _) = run(&[deepest.as_bytes()]);
        assert_eq!(out, format!("{deepest}\n"));
        assert!(!closed);
        // One more bracket, never closed: refused as it arrives.
        let (out, closed, _) = run(&[b"{\"a\":".as_slice(), "[".repeat(depth).as_bytes()]);
        assert!(out.contains("recursion limit exceeded"), "{out}");
        assert!(closed);
        // Far deeper (a stack overflow if anything recursed): still just an error.
        let (out, closed, _) = run(&["[".repeat(1_000_000).as_bytes()]);
        assert!(ends_in_error(&out) && closed);
    }

    // ---- cost: linear in the bytes received ----

    /// A dribble that was quadratic before the scanner: `[`, 12 000 ×
    /// `0, ` in one read (36 KB), then 3 000 × `0, ` one read each (a
    /// reply-less 45 KB open array), then the closing `0]`. The parser that
    /// ran serde_json over the whole unconsumed input on every segment
    /// (each ends in a space, which may end a value) did about 120 MB of
    /// parsing here; the scanner steps through each byte once, and
    /// serde_json sees the array once.
    #[test]
    fn a_value_dribbled_in_small_segments_costs_linear_work() {
        let head = [b"[".to_vec(), b"0, ".repeat(12_000)].concat();
        let mut pieces: Vec<&[u8]> = vec![&head];
        pieces.extend(std::iter::repeat_n(&b"0, "[..], 3_000));
        pieces.push(b"0]");
        let total: usize = pieces.iter().map(|p| p.len()).sum();

        let (out, closed, rest, cursor) = feed(&pieces);

        assert_eq!(out, format!("[{}0]\n", "0,".repeat(15_000)));
        assert!(!closed && rest.is_empty());
        assert_eq!(cursor.work.stepped, total, "each byte scanned exactly once");
        assert_eq!(cursor.work.parsed, total, "serde_json saw the value once");
    }

    /// Bytes from JSON's own alphabet (so values, errors and cut-offs all
    /// happen), and the points at which to cut them into reads.
    fn json_ish_bytes() -> impl Strategy<Value = Vec<u8>> {
        let alphabet = b"{}[]\",:\\ \n0123456789-+.eEtrufalsn x";
        proptest::collection::vec(proptest::sample::select(&alphabet[..]), 0..200)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// However the input is cut into reads, the scanner steps through
        /// at most two bytes per byte received (the byte after a top-level
        /// number is stepped twice), and serde_json sees each byte at most
        /// once.
        #[test]
        fn work_is_linear_however_the_input_is_split(
            input in json_ish_bytes(),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..20),
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([input.len()]) {
                pieces.push(&input[from..cut]);
                from = cut;
            }
            let (_, _, _, cursor) = feed(&pieces);
            prop_assert!(cursor.work.stepped <= 2 * input.len());
            prop_assert!(cursor.work.parsed <= input.len());
        }
    }

    #[test]
    fn a_datagram_is_one_value() {
        let mut out = Vec::new();
        Json.on_datagram(b" [1, 2] ", &mut out);
        assert_eq!(out, b"[1,2]");
    }
}
