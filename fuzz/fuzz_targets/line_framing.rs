//! Line framing: `LineCursor` finds exactly the input's `\n`-terminated
//! lines however the input is cut, and `greet` and `prefix` (line framing)
//! answer alike whatever the cuts.
#![no_main]

use echo_reactor::protocol::framing::{trim_line_end, Flow, LineCursor};
use echo_reactor::protocol::{Framing, Greet, Prefix};
use echo_reactor_fuzz::{assert_split_changes_nothing, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (lengths, input) = decode(data);

    let mut cursor = LineCursor::default();
    let (mut pending, mut lines, mut from) = (Vec::new(), Vec::new(), 0);
    for len in lengths.into_iter().chain([input.len()]) {
        let end = (from + len).min(input.len());
        pending.extend_from_slice(&input[from..end]);
        from = end;
        let used = cursor.split(&pending, |line| {
            lines.push(line.to_vec());
            Flow::Continue
        });
        pending.drain(..used);
    }
    let mut expected: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let unterminated = expected.pop().unwrap_or_default();
    let expected: Vec<Vec<u8>> = expected.iter().map(|l| trim_line_end(l).to_vec()).collect();
    assert_eq!(lines, expected);
    assert_eq!(pending, unterminated);

    let (lengths, input) = decode(data);
    assert_split_changes_nothing(&Greet::new(Framing::Line), input, &lengths);
    assert_split_changes_nothing(&Prefix::new("Echo=>", Framing::Line), input, &lengths);
});
