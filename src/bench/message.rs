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

fn push_hex(out: &mut Vec<u8>, value: u64, digits: u32) {
    for shift in (0..digits).rev() {
        out.push(HEX[((value >> (shift * 4)) & 0xF) as usize]);
    }
}

/// Append message `seq` of connection `conn`, `size` bytes (at least [`HEADER_BYTES`]).
pub fn push_message(out: &mut Vec<u8>, conn: u32, seq: u64, size: usize) {
    debug_assert!(size >= HEADER_BYTES);
    push_hex(out, u64::from(conn), 8);
    push_hex(out, seq, 16);
    let salt = (seq as usize).wrapping_add(conn as usize);
    out.extend((HEADER_BYTES..size).map(|i| b'A' + (salt.wrapping_add(i) % 26) as u8));
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
    fn different_sequences_or_connections_give_different_messages() {
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        push_message(&mut a, 1, 1, 64);
        push_message(&mut b, 1, 2, 64);
        push_message(&mut c, 2, 1, 64);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }
}
