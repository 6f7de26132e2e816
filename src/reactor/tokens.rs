//! Tokens: how an event names its source.
//!
//! A client's token is its slab key. Every other source takes a reserved
//! token counted down from `usize::MAX` ([`WAKER`], [`SIGNALS`], [`PUBLISH_TIMER`], the
//! listening sockets by index, then the `--metrics` listener and its
//! connections), far above any key a slab can reach, so one
//! comparison tells a client event from the rest.

use mio::Token;

/// The token of the `mio::Waker` that another thread uses to stop the loop.
pub const WAKER: Token = Token(usize::MAX);
/// The token of the signal self-pipe: SIGINT/SIGTERM (shut down), SIGQUIT
/// (drain, as an upgrade's old worker), SIGUSR2 (logged and ignored without
/// a supervisor).
pub const SIGNALS: Token = Token(usize::MAX - 1);
/// The token of the timer that wakes the loop for an owed stats copy
/// (`publish_timer.rs`).
pub(super) const PUBLISH_TIMER: Token = Token(usize::MAX - 2);
/// Listening socket `i` has token `FIRST_ENDPOINT - i`.
pub(super) const FIRST_ENDPOINT: usize = usize::MAX - 3;
/// At most this many listening sockets (their tokens must stay reserved).
pub const MAX_ENDPOINTS: usize = 256;
/// The `--metrics` listener, just below the listening sockets' range.
pub(super) const METRICS_LISTENER: Token = Token(FIRST_ENDPOINT - MAX_ENDPOINTS);
/// Metrics connection `i` has token `FIRST_METRICS_CONN - i`.
const FIRST_METRICS_CONN: usize = FIRST_ENDPOINT - MAX_ENDPOINTS - 1;
/// At most this many metrics requests served at once (more are answered
/// 503 and closed); connections lingering after their answer aside.
pub const MAX_METRICS_CONNECTIONS: usize = 16;
/// Metrics connections open at once, lingering ones included: room for
/// the lingering closes of as many again (`metrics_listener.rs`).
pub const METRICS_SLOTS: usize = 2 * MAX_METRICS_CONNECTIONS;
/// Tokens from here up are reserved; below are client slab keys.
pub(super) const FIRST_RESERVED: usize = FIRST_METRICS_CONN - METRICS_SLOTS + 1;

/// The reserved token of listening socket `index` (counted down from
/// `usize::MAX`, below [`WAKER`], [`SIGNALS`] and [`PUBLISH_TIMER`]).
pub(super) fn endpoint_token(index: usize) -> Token {
    Token(FIRST_ENDPOINT - index)
}

/// The listening socket a reserved token names, if it names one: how step
/// 3 tells a listener's event from the waker's, the signals' and the
/// metrics endpoint's.
pub(super) fn endpoint_index(token: Token) -> Option<usize> {
    let index = FIRST_ENDPOINT.checked_sub(token.0)?;
    (index < MAX_ENDPOINTS).then_some(index)
}

/// The reserved token of metrics connection `index` (its slab key in the
/// metrics endpoint), counted down below the metrics listener.
pub(super) fn metrics_conn_token(index: usize) -> Token {
    Token(FIRST_METRICS_CONN - index)
}

/// The metrics connection a token names, if it names one: how the
/// metrics endpoint finds the connection an event is for.
pub(super) fn metrics_conn_index(token: Token) -> Option<usize> {
    let index = FIRST_METRICS_CONN.checked_sub(token.0)?;
    (index < METRICS_SLOTS).then_some(index)
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
        // Below the last listening socket: the metrics listener, then its
        // connections, the last of which is the lowest reserved token.
        assert_eq!(endpoint_index(METRICS_LISTENER), None);
        assert_eq!(METRICS_LISTENER.0 + 1, endpoint_token(MAX_ENDPOINTS - 1).0);
        assert_eq!(endpoint_index(Token(FIRST_RESERVED)), None);
        assert_eq!(metrics_conn_index(METRICS_LISTENER), None);
        let last = metrics_conn_token(METRICS_SLOTS - 1);
        assert_eq!(metrics_conn_index(last), Some(METRICS_SLOTS - 1));
        assert_eq!(last, Token(FIRST_RESERVED));
        assert_eq!(metrics_conn_index(Token(FIRST_RESERVED - 1)), None);
        assert_eq!(metrics_conn_index(endpoint_token(0)), None);
    }
}
