//! The HMAC handshake in front of any protocol.
//!
//! On connect the server sends 32 random bytes (the challenge). The client
//! must answer `HMAC-SHA256(key, challenge)` — 32 bytes — before the
//! deadline (5 s, or the idle timeout if smaller). In Python:
//! `hmac.new(key, challenge, 'sha256').digest()`.
//!
//! - The comparison is constant-time (`hmac`'s `verify_slice`), so timing
//!   reveals nothing about how many bytes matched.
//! - A wrong answer or a missed deadline ends the connection with nothing
//!   more sent ([`Reply::refuse`]: a lingering close, so a client that
//!   sent its first message right behind its answer reads EOF, not a
//!   reset), logs a warning, and is counted (`closed_refused`).
//! - The answer may arrive in any number of pieces; bytes after it, even in
//!   the same segment, belong to the inner protocol and are passed on.
//!
//! [`Authenticated`] wraps a protocol: until the handshake succeeds the inner
//! protocol does not exist for this connection (not even its greeting).

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use log::warn;
use sha2::Sha256;

use super::{Protocol, Reply};
use crate::ratelimit::{SharedWarnLimiter, CLIENT_WARN_INTERVAL_MS};

/// Bytes in the challenge, and in the answer (an HMAC-SHA256 tag).
pub const CHALLENGE_BYTES: usize = 32;
/// How long a client has to answer, unless the idle timeout is shorter.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

type HmacSha256 = Hmac<Sha256>;

/// A shared secret for the handshake.
#[derive(Clone)]
pub struct AuthKey {
    /// HMAC state with the key already absorbed: cloned per connection, so
    /// the key schedule is computed once.
    keyed: HmacSha256,
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthKey(..)") // never print the secret
    }
}

impl AuthKey {
    /// A key from its bytes. An empty key is refused: it would authenticate anyone who knows the scheme.
    pub fn new(key: &[u8]) -> Result<Self, String> {
        if key.is_empty() {
            return Err("the auth key is empty".to_string());
        }
        let keyed = HmacSha256::new_from_slice(key).map_err(|e| format!("auth key: {e}"))?;
        Ok(AuthKey { keyed })
    }

    /// `HMAC-SHA256(key, challenge)`: what a client must answer.
    pub fn answer(&self, challenge: &[u8]) -> [u8; CHALLENGE_BYTES] {
        let mut mac = self.keyed.clone();
        mac.update(challenge);
        mac.finalize().into_bytes().into()
    }

    /// Whether `answer` is the right one for `challenge`, compared in constant time.
    pub fn verify(&self, challenge: &[u8], answer: &[u8]) -> bool {
        let mut mac = self.keyed.clone();
        mac.update(challenge);
        mac.verify_slice(answer).is_ok()
    }
}

/// A connection's handshake state.
#[derive(Debug)]
pub enum AuthSession<S> {
    /// Waiting for the answer to this challenge (boxed: 8 bytes per
    /// connection instead of 32, and freed once the handshake is over).
    Challenged(Box<[u8; CHALLENGE_BYTES]>),
    /// Authenticated: the inner protocol's session.
    Open(S),
    /// Refused; waiting to be closed.
    Refused,
}

/// Protocol `P` behind the HMAC handshake.
#[derive(Debug, Clone)]
pub struct Authenticated<P> {
    inner: P,
    key: Arc<AuthKey>,
    timeout: Duration,
    /// Failed handshakes are client-triggered: one warning per interval,
    /// so a flood of bad answers cannot keep the loop busy logging.
    warnings: Arc<SharedWarnLimiter>,
}

impl<P> Authenticated<P> {
    /// `inner` behind a handshake with `key`; clients get `timeout` to answer.
    pub fn new(inner: P, key: AuthKey, timeout: Duration) -> Self {
        Authenticated {
            inner,
            key: Arc::new(key),
            timeout,
            warnings: Arc::new(SharedWarnLimiter::new(CLIENT_WARN_INTERVAL_MS)),
        }
    }
}

impl<P: Protocol> Protocol for Authenticated<P> {
    type Session = AuthSession<P::Session>;

    fn on_open(&self, reply: &mut Reply<'_>) -> Self::Session {
        let mut challenge = Box::new([0u8; CHALLENGE_BYTES]);
        if let Err(e) = getrandom::fill(&mut challenge[..]) {
            if let Some(held_back) = self.warnings.allow() {
                warn!(
                    "handshake: no randomness for a challenge ({e}); refusing the connection \
                     ({held_back} similar warnings suppressed)"
                );
            }
            reply.refuse();
            return AuthSession::Refused;
        }
        reply.send(&challenge[..]);
        reply.set_deadline(self.timeout);
        AuthSession::Challenged(challenge)
    }

    /// The inner protocol's messages are what `--max-line` limits.
    fn with_max_line(self, max_line: usize) -> Self {
        Authenticated {
            inner: self.inner.with_max_line(max_line),
            ..self
        }
    }

    fn on_bytes(&self, session: &mut Self::Session, input: &[u8], reply: &mut Reply<'_>) -> usize {
        let challenge = match session {
            AuthSession::Open(inner) => return self.inner.on_bytes(inner, input, reply),
            AuthSession::Refused => return input.len(),
            AuthSession::Challenged(challenge) => challenge,
        };
        if input.len() < CHALLENGE_BYTES {
            return 0; // the answer is still arriving; keep what we have
        }
        let (answer, rest) = input.split_at(CHALLENGE_BYTES);
        if !self.key.verify(&challenge[..], answer) {
            if let Some(held_back) = self.warnings.allow() {
                warn!(
                    "handshake failed: wrong answer to the challenge \
                     ({held_back} similar warnings suppressed)"
                );
            }
            *session = AuthSession::Refused;
            reply.refuse();
            return input.len();
        }
        // In: the deadline was the handshake's; the inner protocol may set its own.
        reply.cancel_deadline();
        let mut inner = self.inner.on_open(reply);
        let consumed = if rest.is_empty() {
            0
        } else {
            // Bytes that came with the answer are the protocol's first input.
            self.inner.on_bytes(&mut inner, rest, reply)
        };
        *session = AuthSession::Open(inner);
        CHALLENGE_BYTES + consumed
    }

    fn on_peer_closed(
        &self,
        session: &mut Self::Session,
        unconsumed: &[u8],
        reply: &mut Reply<'_>,
    ) {
        if let AuthSession::Open(inner) = session {
            self.inner.on_peer_closed(inner, unconsumed, reply);
        }
    }

    fn on_deadline(&self, session: &mut Self::Session, reply: &mut Reply<'_>) {
        match session {
            AuthSession::Open(inner) => self.inner.on_deadline(inner, reply),
            _ => {
                if let Some(held_back) = self.warnings.allow() {
                    warn!(
                        "handshake failed: no answer within {:?} ({held_back} similar warnings suppressed)",
                        self.timeout
                    );
                }
                *session = AuthSession::Refused;
                reply.refuse();
            }
        }
    }

    fn on_input_too_long(&self, session: &mut Self::Session, reply: &mut Reply<'_>) {
        if let AuthSession::Open(inner) = session {
            self.inner.on_input_too_long(inner, reply);
        }
    }

    /// Datagrams cannot do the handshake; the CLI refuses `--udp` with a key.
    fn on_datagram(&self, _datagram: &[u8], _reply: &mut Vec<u8>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Echo, Greet};

    fn key() -> AuthKey {
        AuthKey::new(b"sesame").unwrap()
    }

    /// Open a session; returns it and the challenge sent.
    fn open<P: Protocol>(auth: &Authenticated<P>) -> (AuthSession<P::Session>, Vec<u8>) {
        let mut out = Vec::new();
        let session = auth.on_open(&mut Reply::new(&mut out));
        (session, out)
    }

    #[test]
    fn the_answer_is_the_rfc_2104_hmac_sha256_of_the_challenge() {
        // RFC 4231 test case 2.
        let key = AuthKey::new(b"Jefe").unwrap();
        let tag = key.answer(b"what do ya want for nothing?");
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_right_answer_opens_the_inner_protocol_and_keeps_bytes_sent_with_it() {
        let auth = Authenticated::new(Greet::default(), key(), HANDSHAKE_TIMEOUT);
        let (mut session, challenge) = open(&auth);
        assert_eq!(challenge.len(), CHALLENGE_BYTES);
        let mut input = key().answer(&challenge).to_vec();
        input.extend_from_slice(b"Ann\n");
        let mut out = Vec::new();
        let mut reply = Reply::new(&mut out);
        assert_eq!(auth.on_bytes(&mut session, &input, &mut reply), input.len());
        assert!(!reply.refused());
        assert_eq!(reply.deadline(), crate::protocol::DeadlineRequest::Cancel);
        assert_eq!(out, b"Welcome!\nHello, Ann!\n");
    }

    #[test]
    fn a_partial_answer_waits_and_a_wrong_one_is_refused() {
        let auth = Authenticated::new(Echo, key(), HANDSHAKE_TIMEOUT);
        let (mut session, challenge) = open(&auth);
        let answer = AuthKey::new(b"not sesame").unwrap().answer(&challenge);
        let mut out = Vec::new();
        assert_eq!(
            auth.on_bytes(&mut session, &answer[..31], &mut Reply::new(&mut out)),
            0
        );
        let mut reply = Reply::new(&mut out);
        auth.on_bytes(&mut session, &answer, &mut reply);
        assert!(reply.refused());
        assert!(out.is_empty(), "nothing is sent to a failed client");
    }

    #[test]
    fn the_deadline_refuses_a_silent_client() {
        let auth = Authenticated::new(Echo, key(), HANDSHAKE_TIMEOUT);
        let (mut session, _) = open(&auth);
        let mut out = Vec::new();
        let mut reply = Reply::new(&mut out);
        auth.on_deadline(&mut session, &mut reply);
        assert!(reply.refused());
    }
}
