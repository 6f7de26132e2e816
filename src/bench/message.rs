//! What the load generator sends: fixed-size messages that say who sent
//! them and in what order, so every reply can be verified.
//!
//! Layout (all printable, upper-case ASCII, so it survives the `upper`
//! protocol unchanged): 8 hex digits of connection id, 16 hex digits of
//! sequence number, then filler letters that depend on both. A reply is
//! correct only if it is byte-for-byte the message sent with that
//! connection's oldest unanswered sequence number.

/// The smallest message: the header (connection id + sequence number).
pub const HEADER_BYTES: usize = 24;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The alphabet twice, so that every rotation of it is one slice.
const LETTERS_TWICE: &[u8; 52] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJKLMNOPQRSTUVWXYZ";

fn hex_digits<const N: usize>(value: u64) -> [u8; N] {
    let mut digits = [0; N];
    for (i, digit) in digits.iter_mut().enumerate() {
        let shift = 4 * (N - 1 - i);
        *digit = HEX[((value >> shift) & 0xF) as usize];
    }
    digits
}

/// Append message `seq` of connection `conn`, `size` bytes (at least [`HEADER_BYTES`]).
///
/// The filler at byte `i` is letter `(conn + seq + i) mod 26`: the alphabet
/// from a starting letter, over and over, so it is copied 26 bytes at a
/// time rather than computed per byte (the load generator builds every
/// message twice: to send it, and to check the reply).
pub fn push_message(out: &mut Vec<u8>, conn: u32, seq: u64, size: usize) {
    debug_assert!(size >= HEADER_BYTES);
    out.reserve(size);
    out.extend_from_slice(&hex_digits::<8>(u64::from(conn)));
    out.extend_from_slice(&hex_digits::<16>(seq));
    let salt = (seq as usize).wrapping_add(conn as usize);
    let first = salt.wrapping_add(HEADER_BYTES) % 26;
    let cycle = &LETTERS_TWICE[first..first + 26];
    let mut left = size - HEADER_BYTES;
    while left >= 26 {
        out.extend_from_slice(cycle);
        left -= 26;
    }
    out.extend_from_slice(&cycle[..left]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_their_id_and_sequence_and_survive_upper_casing() {
        let mut out = Vec::new();
        push_message(&mut out, 0xBEEF, 42, 40);
        assert_eq!(out.len(), 40);
        assert_eq!(&out[..24], b"0000BEEF000000000000002A");
        let mut upper = out.clone();
        upper.make_ascii_uppercase();
        assert_eq!(upper, out);
    }

    #[test]
    fn the_filler_is_the_letter_of_conn_plus_seq_plus_position_mod_26() {
        for (conn, seq, size) in [(0, 0, 24), (7, 3, 25), (0xBEEF, 42, 64), (3, 1 << 40, 4096)] {
            let mut out = Vec::new();
            push_message(&mut out, conn, seq, size);
            assert_eq!(out.len(), size);
            let salt = (seq as usize).wrapping_add(conn as usize);
            for (i, &byte) in out.iter().enumerate().skip(HEADER_BYTES) {
                assert_eq!(byte, b'A' + (salt.wrapping_add(i) % 26) as u8, "byte {i}");
            }
        }
    }

    #[test]
    fn different_sequences_or_connections_give_different_messages() {
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        push_message(&mut a, 1, 1, 64);
        push_message(&mut b, 1, 2, 64);
        push_message(&mut c, 2, 1, 64);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }
}
