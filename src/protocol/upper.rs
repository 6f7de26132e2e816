//! `upper`: ASCII `a-z` upper-cased, every other byte unchanged.
//!
//! Works byte by byte with no framing, so a message split across reads is
//! still transformed correctly. Bytes >= 0x80 (every byte of a multi-byte
//! UTF-8 sequence) are left alone, so UTF-8 text passes through intact.

use super::{Protocol, Reply};

/// Upper-cases ASCII letters and echoes everything else.
#[derive(Debug, Default, Clone, Copy)]
pub struct Upper;

fn append_upper(out: &mut Vec<u8>, input: &[u8]) {
    let start = out.len();
    out.extend_from_slice(input);
    out[start..].make_ascii_uppercase(); // in place: no allocation per message
}

impl Protocol for Upper {
    type Session = ();

    const BYTE_FOR_BYTE: bool = true;

    /// Upper-case ASCII `a-z` where the bytes lie; every other byte (UTF-8
    /// included) is left as it is.
    fn transform_in_place(&self, bytes: &mut [u8]) {
        bytes.make_ascii_uppercase();
    }

    fn on_open(&self, _reply: &mut Reply<'_>) {}

    fn on_bytes(&self, _session: &mut (), input: &[u8], reply: &mut Reply<'_>) -> usize {
        append_upper(reply.buffer(), input);
        input.len()
    }

    fn on_datagram(&self, datagram: &[u8], reply: &mut Vec<u8>) {
        append_upper(reply, datagram);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_changes_only_ascii_lowercase_letters() {
        let mut out = b"kept:".to_vec();
        let mut reply = Reply::new(&mut out);
        let input = "hello, Wörld ß 123 {z}".as_bytes();
        assert_eq!(Upper.on_bytes(&mut (), input, &mut reply), input.len());
        assert_eq!(out, "kept:HELLO, WöRLD ß 123 {Z}".as_bytes());
    }

    #[test]
    fn the_in_place_transform_agrees_with_on_bytes() {
        let input = "mixed Case ß é 42".as_bytes();
        let mut via_reply = Vec::new();
        Upper.on_bytes(&mut (), input, &mut Reply::new(&mut via_reply));
        let mut in_place = input.to_vec();
        Upper.transform_in_place(&mut in_place);
        assert_eq!(in_place, via_reply);
    }

    #[test]
    fn upper_over_udp_transforms_the_datagram() {
        let mut out = Vec::new();
        Upper.on_datagram(b"abc", &mut out);
        assert_eq!(out, b"ABC");
    }
}
