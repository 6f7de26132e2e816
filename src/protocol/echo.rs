//! `echo`: every byte back, unchanged, in order.
//!
//! The simplest protocol, and the one the reactor's fast path is tuned for:
//! it consumes all input at once, so nothing is ever kept per connection,
//! and it copies into the reactor's reused reply buffer, so nothing is
//! allocated per message.

use super::{Protocol, Reply};

/// Sends back exactly what it receives.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Protocol for Echo {
    type Session = ();

    const BYTE_FOR_BYTE: bool = true;

    fn transform_in_place(&self, _bytes: &mut [u8]) {} // the identity

    fn on_open(&self, _reply: &mut Reply<'_>) {}

    fn on_bytes(&self, _session: &mut (), input: &[u8], reply: &mut Reply<'_>) -> usize {
        reply.send(input);
        input.len()
    }

    fn on_datagram(&self, datagram: &[u8], reply: &mut Vec<u8>) {
        reply.extend_from_slice(datagram);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_returns_every_byte_and_consumes_all_input() {
        let mut out = Vec::new();
        let mut reply = Reply::new(&mut out);
        let consumed = Echo.on_bytes(&mut (), b"ab\0\xff", &mut reply);
        assert_eq!(consumed, 4);
        assert!(!reply.wants_close());
        assert_eq!(out, b"ab\0\xff");
    }

    #[test]
    fn the_in_place_transform_agrees_with_on_bytes() {
        let mut bytes = *b"any\0bytes\xff";
        Echo.transform_in_place(&mut bytes);
        assert_eq!(&bytes, b"any\0bytes\xff");
    }

    #[test]
    fn echo_answers_an_empty_datagram_with_an_empty_one() {
        let mut out = Vec::new();
        Echo.on_datagram(b"", &mut out);
        assert!(out.is_empty());
        Echo.on_datagram(b"ping", &mut out);
        assert_eq!(out, b"ping");
    }
}
