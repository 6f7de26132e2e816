//! `--proxy-protocol`: a PROXY header (v1 or v2) in front of any protocol.
//!
//! Behind a load balancer every connection comes from the balancer; with
//! the PROXY protocol it first sends one header naming the real client
//! (`proxy_header.rs` reads it). [`ProxyHeaderFirst`] wraps a protocol the
//! way the HMAC handshake does (`auth.rs`): until a valid header has
//! arrived the inner protocol does not exist for this connection — no
//! greeting, no challenge — and the header's bytes are consumed, never
//! echoed. Bytes after the header, even in the same segment, are the
//! inner protocol's first input.
//!
//! - Waiting costs nothing extra: `on_bytes` consumes nothing while the
//!   header is incomplete, so the connection keeps the partial header in
//!   its input buffer, as it keeps a partial line. `proxy_header::parse`
//!   refuses any input that reaches [`MAX_HEADER_BYTES`] without a header,
//!   so at most that much is held (the CLI makes `--max-line` at least as
//!   long, or the line limit would cut the header first).
//! - The header phase is a session state left once. Afterwards, for a
//!   byte-for-byte inner protocol (`echo`, `upper`) the reactor's shortcut
//!   applies again (read bytes written straight back, `on_bytes` skipped):
//!   [`Protocol::in_preamble`] tells it when the header is in; for the
//!   others each call is one `match` on the session, then the inner protocol.
//! - Refusals end the connection at once with nothing sent (a lingering
//!   close of at most `REFUSAL_LINGER_MS`, so the close is a FIN, not a
//!   reset) and are counted apart from other refusals: a header that
//!   cannot be valid → `proxy_header_invalid`; none complete within the
//!   handshake time (5 s, or `--idle-timeout` if shorter) →
//!   `proxy_header_timeout`. Each logs a rate-limited warning.
//! - The address is logged at `debug` (target
//!   `echo_reactor::protocol::proxied`): the client the header names, or,
//!   for `LOCAL`/`UNKNOWN`, that the socket's peer stands.
//!
//! UDP datagrams carry no header (HAProxy relays streams only): they go to
//! the inner protocol unchanged.

use std::sync::Arc;
use std::time::Duration;

use log::{debug, warn};

use super::{Protocol, Reply};
use crate::proxy_header::{self, HeaderOutcome, MAX_HEADER_BYTES};
use crate::ratelimit::{SharedWarnLimiter, CLIENT_WARN_INTERVAL_MS};
use crate::stats::CloseReason;

/// A connection's state behind [`ProxyHeaderFirst`].
#[derive(Debug)]
pub enum ProxiedSession<S> {
    /// No complete header yet.
    AwaitingHeader,
    /// The header arrived: the inner protocol's session.
    Open(S),
    /// Refused; waiting to be closed.
    Refused,
}

/// Protocol `P`, each stream connection preceded by a PROXY header.
#[derive(Debug, Clone)]
pub struct ProxyHeaderFirst<P> {
    inner: P,
    timeout: Duration,
    /// Bad headers are client-triggered: one warning per interval.
    invalid_warnings: Arc<SharedWarnLimiter>,
    late_warnings: Arc<SharedWarnLimiter>,
}

impl<P> ProxyHeaderFirst<P> {
    /// `inner` behind a PROXY header that must arrive within `timeout`.
    pub fn new(inner: P, timeout: Duration) -> Self {
        ProxyHeaderFirst {
            inner,
            timeout,
            invalid_warnings: Arc::new(SharedWarnLimiter::new(CLIENT_WARN_INTERVAL_MS)),
            late_warnings: Arc::new(SharedWarnLimiter::new(CLIENT_WARN_INTERVAL_MS)),
        }
    }

    /// Refuse a connection whose first bytes cannot be a header.
    fn refuse_invalid(
        &self,
        session: &mut ProxiedSession<impl Sized>,
        why: &str,
        reply: &mut Reply<'_>,
    ) {
        if let Some(held_back) = self.invalid_warnings.allow() {
            warn!(
                "PROXY header invalid: {}; connection closed \
                 ({held_back} similar warnings suppressed; counted as closed_proxy_header_invalid)",
                why.trim_end_matches('.')
            );
        }
        *session = ProxiedSession::Refused;
        reply.refuse_as(CloseReason::ProxyHeaderInvalid);
    }
}

impl<P: Protocol> Protocol for ProxyHeaderFirst<P> {
    type Session = ProxiedSession<P::Session>;

    /// As byte-for-byte as the inner protocol, once the header is in.
    const BYTE_FOR_BYTE: bool = P::BYTE_FOR_BYTE;

    fn transform_in_place(&self, bytes: &mut [u8]) {
        self.inner.transform_in_place(bytes);
    }

    /// Still waiting for the header (or refused): the reactor must not
    /// take its byte-for-byte shortcut and echo the header's bytes.
    #[inline(always)] // once per read, on the reactor's shortest path
    fn in_preamble(&self, session: &Self::Session) -> bool {
        !matches!(session, ProxiedSession::Open(_))
    }

    /// Nothing is said yet (the inner protocol does not exist until the
    /// header is in); the header's deadline is armed.
    fn on_open(&self, reply: &mut Reply<'_>) -> Self::Session {
        reply.set_deadline(self.timeout);
        ProxiedSession::AwaitingHeader
    }

    /// The inner protocol's messages are what `--max-line` limits.
    fn with_max_line(self, max_line: usize) -> Self {
        ProxyHeaderFirst {
            inner: self.inner.with_max_line(max_line),
            ..self
        }
    }

    /// Until the header is in: read it (`proxy_header::parse`), consuming
    /// nothing while it is incomplete, refusing input that cannot be one;
    /// once it is, open the inner protocol and give it the bytes behind
    /// the header. Afterwards, the inner protocol's.
    fn on_bytes(&self, session: &mut Self::Session, input: &[u8], reply: &mut Reply<'_>) -> usize {
        match session {
            ProxiedSession::Open(inner) => return self.inner.on_bytes(inner, input, reply),
            ProxiedSession::Refused => return input.len(),
            ProxiedSession::AwaitingHeader => {}
        }
        let (client, consumed, version) = match proxy_header::parse(input) {
            HeaderOutcome::Incomplete => return 0, // keep the bytes; more will come
            HeaderOutcome::Invalid(why) => {
                self.refuse_invalid(session, &why, reply);
                return input.len();
            }
            HeaderOutcome::Done {
                client,
                consumed,
                version,
            } => (client, consumed, version),
        };
        debug!("PROXY {version} header: client {client}");
        // The deadline was the header's; the inner protocol may set its own.
        reply.cancel_deadline();
        let mut inner = self.inner.on_open(reply);
        let rest = &input[consumed..];
        let taken = if rest.is_empty() || reply.refused() {
            0
        } else {
            // Bytes that came with the header are the protocol's first input.
            self.inner.on_bytes(&mut inner, rest, reply)
        };
        *session = ProxiedSession::Open(inner);
        consumed + taken
    }

    /// The client's EOF: the inner protocol's to answer once open; before
    /// that, a header cut short by it can never complete, so it is refused.
    fn on_peer_closed(
        &self,
        session: &mut Self::Session,
        unconsumed: &[u8],
        reply: &mut Reply<'_>,
    ) {
        match session {
            ProxiedSession::Open(inner) => self.inner.on_peer_closed(inner, unconsumed, reply),
            // A header cut short by the client's FIN will never complete.
            ProxiedSession::AwaitingHeader if !unconsumed.is_empty() => {
                self.refuse_invalid(session, "the client closed in the middle of it", reply)
            }
            _ => {}
        }
    }

    /// Still no complete header when its deadline passed: refuse
    /// (`closed_proxy_header_timeout`). Once open, the inner protocol's.
    fn on_deadline(&self, session: &mut Self::Session, reply: &mut Reply<'_>) {
        match session {
            ProxiedSession::Open(inner) => self.inner.on_deadline(inner, reply),
            _ => {
                if let Some(held_back) = self.late_warnings.allow() {
                    warn!(
                        "PROXY header: none within {:?}; connection closed ({held_back} similar \
                         warnings suppressed; counted as closed_proxy_header_timeout)",
                        self.timeout
                    );
                }
                *session = ProxiedSession::Refused;
                reply.refuse_as(CloseReason::ProxyHeaderTimeout);
            }
        }
    }

    fn on_input_too_long(&self, session: &mut Self::Session, reply: &mut Reply<'_>) {
        if let ProxiedSession::Open(inner) = session {
            self.inner.on_input_too_long(inner, reply);
        }
    }

    /// Datagrams carry no PROXY header: the inner protocol answers them.
    fn on_datagram(&self, datagram: &[u8], reply: &mut Vec<u8>) {
        self.inner.on_datagram(datagram, reply);
    }
}

/// The shortest `--max-line` that lets a whole header wait in the input
/// buffer (a partial header is held there like a partial line).
pub const MIN_MAX_LINE_WITH_PROXY_HEADER: usize = MAX_HEADER_BYTES;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{DeadlineRequest, Echo, Greet};
    use crate::proxy_header::{encode, HeaderVersion};

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn header(version: HeaderVersion) -> Vec<u8> {
        encode(
            version,
            "203.0.113.7:51234".parse().unwrap(),
            "192.0.2.1:8888".parse().unwrap(),
        )
    }

    /// Feed `input` in pieces as a connection would (keeping what was not
    /// consumed); returns the bytes sent and whether it was refused.
    fn feed<P: Protocol>(proto: &P, pieces: &[&[u8]]) -> (Vec<u8>, Option<CloseReason>) {
        let mut out = Vec::new();
        let mut session = proto.on_open(&mut Reply::new(&mut out));
        let mut pending = Vec::new();
        for piece in pieces {
            pending.extend_from_slice(piece);
            let mut reply = Reply::new(&mut out);
            let consumed = proto.on_bytes(&mut session, &pending, &mut reply);
            let refused = reply.requests().refuse;
            pending.drain(..consumed);
            if refused.is_some() {
                return (out, refused);
            }
        }
        (out, None)
    }

    #[test]
    fn the_header_is_consumed_and_the_data_after_it_is_answered() {
        let proto = ProxyHeaderFirst::new(Echo, TIMEOUT);
        for version in [HeaderVersion::V1, HeaderVersion::V2] {
            let mut input = header(version);
            input.extend_from_slice(b"hello");
            // Every split of header + data into two segments.
            for cut in 0..=input.len() {
                let (out, refused) = feed(&proto, &[&input[..cut], &input[cut..]]);
                assert_eq!(refused, None, "{version} cut at {cut}");
                assert_eq!(out, b"hello", "{version} cut at {cut}");
            }
        }
    }

    #[test]
    fn the_inner_protocol_opens_only_after_the_header() {
        let proto = ProxyHeaderFirst::new(Greet::default(), TIMEOUT);
        let mut out = Vec::new();
        let mut reply = Reply::new(&mut out);
        let mut session = proto.on_open(&mut reply);
        assert_eq!(reply.deadline(), DeadlineRequest::Set(TIMEOUT));
        assert!(out.is_empty(), "no greeting before the header");
        let mut input = header(HeaderVersion::V2);
        input.extend_from_slice(b"Ann\n");
        let mut reply = Reply::new(&mut out);
        assert_eq!(
            proto.on_bytes(&mut session, &input, &mut reply),
            input.len()
        );
        assert_eq!(reply.deadline(), DeadlineRequest::Cancel);
        assert_eq!(out, b"Welcome!\nHello, Ann!\n");
    }

    #[test]
    fn the_byte_for_byte_shortcut_waits_for_the_header() {
        const _: () = assert!(<ProxyHeaderFirst<Echo> as Protocol>::BYTE_FOR_BYTE);
        const _: () = assert!(!<ProxyHeaderFirst<Greet> as Protocol>::BYTE_FOR_BYTE);
        let proto = ProxyHeaderFirst::new(Echo, TIMEOUT);
        let mut out = Vec::new();
        let mut session = proto.on_open(&mut Reply::new(&mut out));
        assert!(proto.in_preamble(&session));
        let header = header(HeaderVersion::V1);
        proto.on_bytes(&mut session, &header[..5], &mut Reply::new(&mut out));
        assert!(proto.in_preamble(&session), "a partial header");
        proto.on_bytes(&mut session, &header, &mut Reply::new(&mut out));
        assert!(!proto.in_preamble(&session));
    }

    #[test]
    fn garbage_is_refused_and_counted_as_an_invalid_header() {
        let proto = ProxyHeaderFirst::new(Echo, TIMEOUT);
        let (out, refused) = feed(&proto, &[b"GET / HTTP/1.1\r\n"]);
        assert!(out.is_empty());
        assert_eq!(refused, Some(CloseReason::ProxyHeaderInvalid));
    }

    #[test]
    fn a_late_header_is_refused_and_counted_as_a_timeout() {
        let proto = ProxyHeaderFirst::new(Echo, TIMEOUT);
        let mut out = Vec::new();
        let mut session = proto.on_open(&mut Reply::new(&mut out));
        let mut reply = Reply::new(&mut out);
        proto.on_deadline(&mut session, &mut reply);
        assert_eq!(
            reply.requests().refuse,
            Some(CloseReason::ProxyHeaderTimeout)
        );
    }

    #[test]
    fn a_header_cut_short_by_eof_is_invalid() {
        let proto = ProxyHeaderFirst::new(Echo, TIMEOUT);
        let mut out = Vec::new();
        let mut session = proto.on_open(&mut Reply::new(&mut out));
        let mut reply = Reply::new(&mut out);
        proto.on_peer_closed(&mut session, b"PROXY TCP4", &mut reply);
        assert_eq!(
            reply.requests().refuse,
            Some(CloseReason::ProxyHeaderInvalid)
        );
    }
}
