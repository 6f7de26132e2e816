//! The HMAC handshake in front of `json`: the right answer (or, when the
//! first input byte is odd, a wrong one) followed by any bytes, cut into
//! reads anywhere, gives the same transcript after the random challenge.
#![no_main]

use echo_reactor::protocol::{AuthKey, Authenticated, Json, CHALLENGE_BYTES, HANDSHAKE_TIMEOUT};
use echo_reactor_fuzz::{decode, serve};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (lengths, input) = decode(data);
    let Some((&flags, tail)) = input.split_first() else {
        return;
    };
    let key = AuthKey::new(b"sesame").expect("a non-empty key");
    let auth = Authenticated::new(Json, key.clone(), HANDSHAKE_TIMEOUT);
    let client = |challenge: &[u8]| {
        let mut bytes = key.answer(challenge).to_vec();
        if flags % 2 == 1 {
            bytes[usize::from(flags / 2) % CHALLENGE_BYTES] ^= 1;
        }
        bytes.extend_from_slice(tail);
        bytes
    };
    let mut split = serve(&auth, client, &lengths);
    let mut whole = serve(&auth, client, &[]);
    // Each run draws its own challenge: compare what follows it.
    split.sent.drain(..CHALLENGE_BYTES);
    whole.sent.drain(..CHALLENGE_BYTES);
    assert_eq!(split, whole, "tail {tail:?} in reads of {lengths:?}");
    assert_eq!(whole.refused, flags % 2 == 1);
});
