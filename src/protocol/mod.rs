//! The interface between the reactor and what a server *says*.
//!
//! A [`Protocol`] turns bytes in into bytes out. It never sees a socket,
//! a `Poll` or a token: the reactor tells it that a connection opened, that
//! bytes arrived, that the peer closed its side, or that a deadline it asked
//! for has passed — and it answers through a [`Reply`]: bytes to send,
//! whether to close once they are sent, and whether to arm a deadline.
//! UDP datagrams get their own call, since they have no connection.
//!
//! Ownership of input: the reactor passes every byte received and not yet
//! consumed; `on_bytes` returns how many it consumed (whole messages), and
//! the reactor keeps the rest for the next call. Stream protocols without
//! framing (`echo`, `upper`) consume everything, so their input never
//! touches a per-connection buffer.
//!
//! Dependencies point one way: `reactor` → `protocol`, never back.

use std::time::Duration;

use crate::stats::CloseReason;

mod auth;
mod echo;
pub mod framing;
mod greet;
mod json;
mod name;
mod prefix;
mod proxied;
mod upper;

pub use auth::{AuthKey, AuthSession, Authenticated, CHALLENGE_BYTES, HANDSHAKE_TIMEOUT};
pub use echo::Echo;
pub use framing::Framing;
pub use greet::{Greet, WELCOME};
pub use json::{Json, JsonCursor};
pub use name::{FramingName, ProtocolName};
pub use prefix::Prefix;
pub use proxied::{ProxiedSession, ProxyHeaderFirst, MIN_MAX_LINE_WITH_PROXY_HEADER};
pub use upper::Upper;

/// A protocol served over the reactor. One value serves every connection;
/// per-connection state lives in [`Protocol::Session`].
pub trait Protocol {
    /// State kept per connection (`()` for stateless protocols, which then
    /// cost nothing per connection).
    type Session;

    /// `true` for protocols that answer every byte with exactly one byte,
    /// whatever came before it: no framing, no state, no greeting (`echo`,
    /// `upper`). The reactor then transforms the bytes where they were read
    /// ([`Protocol::transform_in_place`]) and writes them straight back,
    /// skipping `on_bytes`, the reply buffer and its bookkeeping — the
    /// shortest per-message path. Wrappers (such as the handshake) keep the
    /// default, `false`.
    const BYTE_FOR_BYTE: bool = false;

    /// The byte-for-byte transform, applied in place. Called only when
    /// [`Protocol::BYTE_FOR_BYTE`] is `true`, and then it must agree with
    /// `on_bytes`.
    fn transform_in_place(&self, _bytes: &mut [u8]) {}

    /// For a [`Protocol::BYTE_FOR_BYTE`] protocol with an opening phase of
    /// its own (a PROXY header, `proxied.rs`): `true` while this session is
    /// still in it, so input goes through `on_bytes` until the phase ends,
    /// and the shortcut applies from then on. The default, a constant
    /// `false`, folds away: protocols without such a phase pay nothing.
    fn in_preamble(&self, _session: &Self::Session) -> bool {
        false
    }

    /// A stream connection opened. May queue a greeting or arm a deadline.
    fn on_open(&self, reply: &mut Reply<'_>) -> Self::Session;

    /// Bytes arrived on a stream connection. `input` is every byte received
    /// and not yet consumed, oldest first. Answer each complete message in
    /// `reply` and return how many bytes of `input` were consumed; the
    /// reactor keeps the rest and passes it again, with more, next time.
    fn on_bytes(&self, session: &mut Self::Session, input: &[u8], reply: &mut Reply<'_>) -> usize;

    /// The peer shut down its sending side (EOF). `unconsumed` holds any
    /// trailing partial message. Replies queued here are still delivered
    /// before the connection closes.
    fn on_peer_closed(
        &self,
        _session: &mut Self::Session,
        _unconsumed: &[u8],
        _reply: &mut Reply<'_>,
    ) {
    }

    /// A deadline set through [`Reply::set_deadline`] has passed.
    /// The default closes the connection.
    fn on_deadline(&self, _session: &mut Self::Session, reply: &mut Reply<'_>) {
        reply.close();
    }

    /// The protocol, told `--max-line` (the server calls this once, before
    /// serving). A protocol that cuts the stream into messages must not
    /// consume a *complete* message longer than `max_line` bytes: it stops
    /// before it and leaves it unconsumed, so the reactor closes the
    /// connection as it does for a partial one that long
    /// ([`Protocol::on_input_too_long`]). Then the limit means the same
    /// however TCP cut the input. The default (no messages) ignores it.
    fn with_max_line(self, _max_line: usize) -> Self
    where
        Self: Sized,
    {
        self
    }

    /// The unconsumed input grew past `--max-line`: a partial message, or a
    /// complete one the protocol left unconsumed for being too long
    /// ([`Protocol::with_max_line`]). The connection will close after
    /// whatever is queued here is sent; the default sends nothing.
    fn on_input_too_long(&self, _session: &mut Self::Session, _reply: &mut Reply<'_>) {}

    /// One UDP datagram arrived; write the reply datagram into `reply`
    /// (an empty reply is still sent: an empty datagram gets an empty answer).
    fn on_datagram(&self, datagram: &[u8], reply: &mut Vec<u8>);
}

/// What a protocol asks of its deadline when it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineRequest {
    /// Leave any armed deadline as it is.
    Unchanged,
    /// Fire `on_deadline` this long from now (replacing any armed one).
    Set(Duration),
    /// Disarm the deadline.
    Cancel,
}

/// The protocol's answer to one event: output bytes, plus two requests.
///
/// The bytes go into a buffer the reactor reuses across events, so a
/// protocol that writes its reply here allocates nothing per message.
#[derive(Debug)]
pub struct Reply<'a> {
    bytes: &'a mut Vec<u8>,
    close: bool,
    refuse: Option<CloseReason>,
    deadline: DeadlineRequest,
}

impl<'a> Reply<'a> {
    /// A reply that appends to `bytes` (the reactor clears it beforehand).
    pub fn new(bytes: &'a mut Vec<u8>) -> Self {
        Reply {
            bytes,
            close: false,
            refuse: None,
            deadline: DeadlineRequest::Unchanged,
        }
    }

    /// Queue `bytes` to send, after anything queued earlier.
    pub fn send(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// The output buffer itself, for protocols that serialize into it.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        self.bytes
    }

    /// Close the connection once everything queued so far has been sent.
    /// Input that arrives afterwards is ignored.
    pub fn close(&mut self) {
        self.close = true;
    }

    /// Close the connection at once, sending nothing more (bytes queued in
    /// this reply are dropped): the peer failed a check, e.g. the handshake.
    /// Counted as `closed_refused`.
    pub fn refuse(&mut self) {
        self.refuse_as(CloseReason::Refused);
    }

    /// [`Reply::refuse`], counted as `reason` (e.g. a bad PROXY header,
    /// which an operator wants told apart from a failed handshake).
    pub fn refuse_as(&mut self, reason: CloseReason) {
        self.refuse = Some(reason);
    }

    /// Whether [`Reply::refuse`] (or [`Reply::refuse_as`]) was called.
    pub fn refused(&self) -> bool {
        self.refuse.is_some()
    }

    /// Call [`Protocol::on_deadline`] `after` from now unless re-armed or cancelled.
    pub fn set_deadline(&mut self, after: Duration) {
        self.deadline = DeadlineRequest::Set(after);
    }

    /// Disarm the deadline.
    pub fn cancel_deadline(&mut self) {
        self.deadline = DeadlineRequest::Cancel;
    }

    /// The bytes queued so far.
    pub fn bytes(&self) -> &[u8] {
        self.bytes
    }

    /// Whether [`Reply::close`] was called.
    pub fn wants_close(&self) -> bool {
        self.close
    }

    /// What the protocol asked of its deadline.
    pub fn deadline(&self) -> DeadlineRequest {
        self.deadline
    }

    /// Everything this reply asks for besides its bytes.
    pub fn requests(&self) -> Requests {
        Requests {
            close: self.close,
            refuse: self.refuse,
            deadline: self.deadline,
        }
    }
}

/// What a protocol asked for in one [`Reply`], besides bytes to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requests {
    /// Close once everything queued is sent ([`Reply::close`]).
    pub close: bool,
    /// Close at once, sending nothing, counted as this reason ([`Reply::refuse`]).
    pub refuse: Option<CloseReason>,
    /// Arm, cancel or keep the deadline.
    pub deadline: DeadlineRequest,
}
