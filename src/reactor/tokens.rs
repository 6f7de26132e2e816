//! Tokens: how an event names its source.
//!
//! A client's token is its slab key. Every other source takes a reserved
//! token counted down from `usize::MAX` ([`WAKER`], [`SIGNALS`], then the
//! listening sockets by index), far above any key a slab can reach, so one
//! comparison tells a client event from the rest.

use mio::Token;

/// The token of the `mio::Waker` that another thread uses to stop the loop.
pub const WAKER: Token = Token(usize::MAX);
/// The token of the SIGINT/SIGTERM self-pipe.
pub const SIGNALS: Token = Token(usize::MAX - 1);
/// Listening socket `i` has token `FIRST_ENDPOINT - i`.
pub(super) const FIRST_ENDPOINT: usize = usize::MAX - 2;
/// At most this many listening sockets (their tokens must stay reserved).
pub const MAX_ENDPOINTS: usize = 256;
/// Tokens from here up are reserved; below are client slab keys.
pub(super) const FIRST_RESERVED: usize = FIRST_ENDPOINT - MAX_ENDPOINTS + 1;

/// The reserved token of listening socket `index` (counted down from
/// `usize::MAX`, below [`WAKER`] and [`SIGNALS`]).
pub(super) fn endpoint_token(index: usize) -> Token {
    Token(FIRST_ENDPOINT - index)
}

pub(super) fn endpoint_index(token: Token) -> Option<usize> {
    let index = FIRST_ENDPOINT.checked_sub(token.0)?;
    (index < MAX_ENDPOINTS).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_tokens_never_meet_slab_keys_or_each_other() {
        assert_eq!(endpoint_index(endpoint_token(0)), Some(0));
        assert_eq!(
            endpoint_index(endpoint_token(MAX_ENDPOINTS - 1)),
            Some(MAX_ENDPOINTS - 1)
        );
        assert_eq!(endpoint_index(WAKER), None);
        assert_eq!(endpoint_index(SIGNALS), None);
        assert_eq!(endpoint_index(Token(0)), None);
        assert_eq!(endpoint_index(Token(1_000_000)), None);
        assert_eq!(
            endpoint_index(Token(FIRST_RESERVED)),
            Some(MAX_ENDPOINTS - 1)
        );
        assert_eq!(endpoint_index(Token(FIRST_RESERVED - 1)), None);
    }
}
