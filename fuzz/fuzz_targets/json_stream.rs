//! The JSON stream: any bytes, cut into reads anywhere, are answered as if
//! they came in one read, and nothing panics. Datagrams too.
#![no_main]

use echo_reactor::protocol::{Json, Protocol};
use echo_reactor_fuzz::{assert_split_changes_nothing, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (lengths, input) = decode(data);
    assert_split_changes_nothing(&Json, input, &lengths);
    Json.on_datagram(input, &mut Vec::new());
});
