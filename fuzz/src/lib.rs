//! What the fuzz targets share: drive a protocol the way the reactor does
//! (keep the unconsumed rest, append the next read, call `on_bytes` again,
//! drop what it consumed; stop once it closes or refuses; EOF at the end),
//! so a target can check that cutting the input into reads changes nothing.
//!
//! A fuzz input is `[n, len_1, ..., len_n, input...]`: `n % 16` reads of
//! the given lengths (what is left over is the last read), so the fuzzer
//! mutates the cut points and the bytes alike.

use echo_reactor::protocol::{Protocol, Reply};

/// Everything a client would see from one connection.
#[derive(Debug, PartialEq, Eq)]
pub struct Transcript {
    /// Bytes sent, greeting included.
    pub sent: Vec<u8>,
    /// The protocol asked to close (after sending).
    pub closed: bool,
    /// The protocol refused the client (nothing more sent).
    pub refused: bool,
}

/// Split a fuzz input into read lengths and the bytes to send.
pub fn decode(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&count, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let count = usize::from(count % 16).min(rest.len());
    let (lengths, input) = rest.split_at(count);
    (lengths.iter().map(|&l| usize::from(l)).collect(), input)
}

/// Serve one connection whose client sends `input(greeting)` in reads of
/// `lengths` (then the rest in one read). The input may depend on what the
/// server said first (the handshake's challenge).
pub fn serve<P: Protocol>(
    protocol: &P,
    input: impl FnOnce(&[u8]) -> Vec<u8>,
    lengths: &[usize],
) -> Transcript {
    let mut sent = Vec::new();
    let mut session = protocol.on_open(&mut Reply::new(&mut sent));
    let input = input(&sent);
    let mut ends: Vec<usize> = lengths
        .iter()
        .scan(0, |end, &len| {
            *end = (*end + len).min(input.len());
            Some(*end)
        })
        .collect();
    ends.push(input.len());

    let (mut pending, mut from, mut buf) = (Vec::new(), 0, Vec::new());
    for end in ends {
        pending.extend_from_slice(&input[from..end]);
        from = end;
        buf.clear();
        let mut reply = Reply::new(&mut buf);
        let consumed = protocol.on_bytes(&mut session, &pending, &mut reply);
        let requests = reply.requests();
        assert!(consumed <= pending.len(), "consumed more than it was given");
        if requests.refuse {
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

/// Serve `input` split as `lengths` and in one read, and insist that the
/// client sees the same either way.
pub fn assert_split_changes_nothing<P: Protocol>(protocol: &P, input: &[u8], lengths: &[usize]) {
    let split = serve(protocol, |_| input.to_vec(), lengths);
    let whole = serve(protocol, |_| input.to_vec(), &[]);
    assert_eq!(split, whole, "input {input:?} in reads of {lengths:?}");
}
