//! The PROXY protocol header (HAProxy's, v1 text and v2 binary): reading
//! one at the start of a stream, and writing one for a client.
//!
//! A load balancer that relays TCP connections (HAProxy, IPVS with a
//! helper, a cloud load balancer) opens its own connection to the server,
//! so the server sees the *proxy's* address. With the PROXY protocol the
//! proxy first sends one header naming the real client's address; then the
//! client's bytes follow, possibly in the same segment. The format is
//! HAProxy's `proxy-protocol.txt`; parsing and encoding are the `ppp`
//! crate's — this module only decides what a partial input means.
//!
//! [`parse`] is a pure function of the bytes received so far: it answers
//! [`HeaderOutcome::Incomplete`] (wait for more; the caller keeps the
//! bytes), [`HeaderOutcome::Done`] (the address, and how many bytes the
//! header took: everything after them is the client's), or
//! [`HeaderOutcome::Invalid`]. It never looks past [`MAX_HEADER_BYTES`],
//! and answers `Invalid` once that many bytes hold no complete header, so
//! a caller that waits on `Incomplete` holds at most that much.
//!
//! Nothing here knows of sockets or mio; `protocol::ProxyHeaderFirst` puts
//! it in front of a protocol, and `client`/`bench` use [`encode`].

use std::fmt;
use std::net::SocketAddr;

use ppp::{v1, v2};

/// The longest v1 header, `\r\n` included (the PROXY protocol specification's bound,
/// reached by a `TCP6` line with the longest addresses and ports).
pub const MAX_V1_HEADER_BYTES: usize = 107;

/// The longest header accepted, either version. A v2 header is 16 bytes
/// plus a declared length of up to 65 535 bytes (addresses, then TLVs);
/// 536 is the size the PROXY protocol specification says a receiver may rely on getting
/// in one segment (the IPv4 minimum MSS), which is room for IPv6 addresses
/// (36 bytes) and 484 bytes of TLVs — HAProxy sends far fewer unless told
/// to add SSL details. A longer declared length is refused at once.
pub const MAX_HEADER_BYTES: usize = 536;

/// The first byte of a v2 header (its 12-byte signature begins `\r\n\r\n`);
/// a v1 header begins with `P` (`PROXY `). One byte tells the versions apart.
const V2_FIRST_BYTE: u8 = b'\r';

/// A v2 header's fixed part (signature, version and command, family,
/// length); its length field counts the bytes after these.
const V2_FIXED_BYTES: usize = 16;

/// Which version of the header was sent, or is to be sent (also the
/// value of `--proxy-header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HeaderVersion {
    /// The text header: `PROXY TCP4 src dst sport dport\r\n`.
    V1,
    /// The binary header (what HAProxy's `send-proxy-v2` sends).
    V2,
}

impl fmt::Display for HeaderVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeaderVersion::V1 => "v1",
            HeaderVersion::V2 => "v2",
        })
    }
}

/// Whom a header says the connection is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddr {
    /// Relayed for a client at `source`, which connected to `destination`
    /// (the proxy's listening address, as the client saw it).
    Proxied {
        /// The real client's address: what logs show.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// v2 `LOCAL`: the proxy's own connection (a health check, say), not
    /// relayed for anyone; the socket's peer is the client.
    Local,
    /// v1 `UNKNOWN`, or v2 with no address or Unix addresses: relayed, but
    /// the proxy did not say from where; the socket's peer stands.
    Unknown,
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAddr::Proxied { source, .. } => write!(f, "{source}"),
            ClientAddr::Local => f.write_str("LOCAL (the proxy itself)"),
            ClientAddr::Unknown => f.write_str("UNKNOWN (no address given)"),
        }
    }
}

/// What the bytes received so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOutcome {
    /// A valid beginning: wait for more bytes (and keep these).
    Incomplete,
    /// A complete header of `consumed` bytes; any bytes after it belong to
    /// the client's protocol.
    Done {
        /// Whom the connection is for.
        client: ClientAddr,
        /// Bytes the header took (never echoed).
        consumed: usize,
        /// Which version it was.
        version: HeaderVersion,
    },
    /// Not a PROXY header, and no more bytes can make it one: why.
    Invalid(String),
}

/// Read a header from the start of `input` (every byte received so far).
pub fn parse(input: &[u8]) -> HeaderOutcome {
    // Bounded: a long first segment (header + data) is not scanned past the cap.
    let window = &input[..input.len().min(MAX_HEADER_BYTES)];
    match window.first() {
        None => HeaderOutcome::Incomplete,
        Some(&V2_FIRST_BYTE) => parse_v2(window),
        Some(_) => parse_v1(window),
    }
}

/// A v2 (binary) header: `ppp` reads it; a declared length past
/// [`MAX_HEADER_BYTES`] is refused as soon as it is known, before waiting
/// for bytes we would not hold.
fn parse_v2(window: &[u8]) -> HeaderOutcome {
    match v2::Header::try_from(window) {
        Ok(header) => HeaderOutcome::Done {
            client: client_of_v2(&header),
            consumed: header.len(),
            version: HeaderVersion::V2,
        },
        // The 16 fixed bytes are in and declare the rest's length: refuse
        // a header we would not hold, before waiting for it.
        Err(v2::ParseError::Partial(_, declared))
            if V2_FIXED_BYTES + declared > MAX_HEADER_BYTES =>
        {
            HeaderOutcome::Invalid(format!(
                "v2 header of {} bytes, more than the {MAX_HEADER_BYTES} accepted",
                V2_FIXED_BYTES + declared
            ))
        }
        Err(v2::ParseError::Incomplete(_) | v2::ParseError::Partial(..)) => {
            HeaderOutcome::Incomplete
        }
        Err(e) => HeaderOutcome::Invalid(format!("v2 header: {e}")),
    }
}

/// A v1 (text) header: `ppp` reads it, and a cut the parser cannot yet
/// judge waits for the line's end (see the comment inside).
fn parse_v1(window: &[u8]) -> HeaderOutcome {
    use ppp::PartialResult;
    // A v1 header ends at its `\r\n`. `ppp` judges a *prefix* of a valid
    // header as partial at every cut but one: cut right after the space
    // before the last port (`... 5.6.7.8 10 `) it reports a bad port, which
    // more bytes would fix. So before the line's end only the errors no
    // prefix of a valid header can produce are final (the fixed words,
    // non-UTF-8); the rest wait for the `\n` — at most 107 bytes.
    // Pinned by `every_split_of_a_v1_header_waits_then_completes`.
    let line_ended = window.contains(&b'\n');
    match v1::Header::try_from(window) {
        Ok(header) => HeaderOutcome::Done {
            client: client_of_v1(&header.addresses),
            consumed: header.header.len(),
            version: HeaderVersion::V1,
        },
        Err(e) if line_ended || window.len() >= MAX_V1_HEADER_BYTES => {
            if e.is_incomplete() {
                // The line ended (or the bound passed) and still no header.
                HeaderOutcome::Invalid(format!("v1 header: incomplete line ({e})"))
            } else {
                HeaderOutcome::Invalid(format!("v1 header: {e}"))
            }
        }
        Err(
            e @ (v1::BinaryParseError::InvalidUtf8(_)
            | v1::BinaryParseError::Parse(
                v1::ParseError::InvalidPrefix | v1::ParseError::InvalidProtocol,
            )),
        ) => HeaderOutcome::Invalid(format!("v1 header: {e}")),
        Err(_) => HeaderOutcome::Incomplete,
    }
}

fn client_of_v1(addresses: &v1::Addresses) -> ClientAddr {
    match *addresses {
        v1::Addresses::Tcp4(a) => ClientAddr::Proxied {
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        },
        v1::Addresses::Tcp6(a) => ClientAddr::Proxied {
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        },
        v1::Addresses::Unknown => ClientAddr::Unknown,
    }
}

fn client_of_v2(header: &v2::Header<'_>) -> ClientAddr {
    if header.command == v2::Command::Local {
        // The PROXY protocol specification: for LOCAL the receiver ignores the addresses.
        return ClientAddr::Local;
    }
    match header.addresses {
        v2::Addresses::IPv4(a) => ClientAddr::Proxied {
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        },
        v2::Addresses::IPv6(a) => ClientAddr::Proxied {
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        },
        v2::Addresses::Unix(_) | v2::Addresses::Unspecified => ClientAddr::Unknown,
    }
}

/// The header a proxy would send for a client at `source` that connected
/// to `destination`. Mixed families (an IPv4 source, an IPv6 destination)
/// cannot be expressed: `ppp` then writes v1 `UNKNOWN`, or a v2 header
/// with no address, and the server keeps the socket's peer.
pub fn encode(version: HeaderVersion, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    match version {
        HeaderVersion::V1 => v1::Addresses::from((source, destination))
            .to_string()
            .into_bytes(),
        HeaderVersion::V2 => v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (source, destination),
        )
        .build()
        // Writes into a Vec, its length computed from the addresses: this
        // cannot fail (an error would be a bug in `ppp`).
        .expect("a v2 header with addresses and no TLVs always builds"),
    }
}

/// A header that names no address (v1 `UNKNOWN`, v2 with no address
/// family): for a client on a Unix socket, which has no IP address to give.
pub fn encode_unknown(version: HeaderVersion) -> Vec<u8> {
    match version {
        HeaderVersion::V1 => v1::Addresses::Unknown.to_string().into_bytes(),
        HeaderVersion::V2 => v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            v2::Addresses::Unspecified,
        )
        .build()
        .expect("a v2 header without addresses always builds"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> (SocketAddr, SocketAddr) {
        (
            "203.0.113.7:51234".parse().unwrap(),
            "192.0.2.1:8888".parse().unwrap(),
        )
    }

    fn proxied() -> ClientAddr {
        let (source, destination) = addrs();
        ClientAddr::Proxied {
            source,
            destination,
        }
    }

    // ---- v1 ----

    #[test]
    fn a_v1_header_names_the_client_and_leaves_the_data_after_it() {
        let mut input = b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 8888\r\n".to_vec();
        let header_len = input.len();
        input.extend_from_slice(b"hello\n");
        assert_eq!(
            parse(&input),
            HeaderOutcome::Done {
                client: proxied(),
                consumed: header_len,
                version: HeaderVersion::V1
            }
        );
    }

    #[test]
    fn every_split_of_a_v1_header_waits_then_completes() {
        for (source, destination) in [
            addrs(),
            (
                "[2001:db8::7]:51234".parse().unwrap(),
                "[2001:db8::1]:8888".parse().unwrap(),
            ),
        ] {
            let header = encode(HeaderVersion::V1, source, destination);
            for cut in 0..header.len() {
                assert_eq!(
                    parse(&header[..cut]),
                    HeaderOutcome::Incomplete,
                    "cut at {cut} of {:?}",
                    String::from_utf8_lossy(&header)
                );
            }
            assert!(matches!(
                parse(&header),
                HeaderOutcome::Done { client: ClientAddr::Proxied { source: s, .. }, .. } if s == source
            ));
        }
    }

    #[test]
    fn v1_unknown_keeps_the_socket_peer() {
        let outcome = parse(b"PROXY UNKNOWN\r\nrest");
        assert_eq!(
            outcome,
            HeaderOutcome::Done {
                client: ClientAddr::Unknown,
                consumed: 15,
                version: HeaderVersion::V1
            }
        );
    }

    #[test]
    fn garbage_is_invalid_as_soon_as_it_cannot_become_a_header() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\n"),
            HeaderOutcome::Invalid(_)
        ));
        assert!(matches!(parse(b"hello"), HeaderOutcome::Invalid(_)));
        assert!(matches!(parse(b"PROXY TCP5 "), HeaderOutcome::Invalid(_)));
        // A line that ends before the header does.
        assert!(matches!(
            parse(b"PROXY TCP4 1.2.3.4\n"),
            HeaderOutcome::Invalid(_)
        ));
        assert!(matches!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n"),
            HeaderOutcome::Invalid(_)
        ));
    }

    #[test]
    fn a_v1_line_that_never_ends_is_invalid_at_the_bound() {
        let mut input = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 ".to_vec();
        input.resize(MAX_V1_HEADER_BYTES - 1, b'1');
        assert_eq!(parse(&input), HeaderOutcome::Incomplete);
        input.push(b'1');
        assert!(matches!(parse(&input), HeaderOutcome::Invalid(_)));
    }

    // ---- v2 ----

    #[test]
    fn every_split_of_a_v2_header_waits_then_completes_with_data_after_it() {
        let (source, destination) = addrs();
        let header = encode(HeaderVersion::V2, source, destination);
        assert_eq!(header.len(), 16 + 12);
        for cut in 0..header.len() {
            assert_eq!(
                parse(&header[..cut]),
                HeaderOutcome::Incomplete,
                "cut at {cut}"
            );
        }
        let mut input = header.clone();
        input.extend_from_slice(b"data");
        assert_eq!(
            parse(&input),
            HeaderOutcome::Done {
                client: proxied(),
                consumed: header.len(),
                version: HeaderVersion::V2
            }
        );
    }

    #[test]
    fn v2_local_is_the_proxys_own_connection() {
        let header = v2::Builder::new(
            v2::Version::Two | v2::Command::Local,
            v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
        )
        .build()
        .unwrap();
        assert!(matches!(
            parse(&header),
            HeaderOutcome::Done {
                client: ClientAddr::Local,
                ..
            }
        ));
    }

    #[test]
    fn a_v2_header_longer_than_the_cap_is_refused_from_its_fixed_part() {
        let (source, destination) = addrs();
        let mut header = encode(HeaderVersion::V2, source, destination);
        let declared = (MAX_HEADER_BYTES - 16 + 1) as u16;
        header[14..16].copy_from_slice(&declared.to_be_bytes());
        assert!(matches!(parse(&header[..16]), HeaderOutcome::Invalid(_)));
        // One byte less is allowed, and waits for the rest.
        header[14..16].copy_from_slice(&(declared - 1).to_be_bytes());
        assert_eq!(parse(&header), HeaderOutcome::Incomplete);
    }

    #[test]
    fn headers_without_an_address_keep_the_socket_peer() {
        for version in [HeaderVersion::V1, HeaderVersion::V2] {
            let header = encode_unknown(version);
            assert!(
                matches!(parse(&header), HeaderOutcome::Done { client: ClientAddr::Unknown, consumed, .. } if consumed == header.len()),
                "{version}"
            );
        }
    }

    #[test]
    fn a_bad_v2_signature_is_invalid() {
        let mut header = encode(HeaderVersion::V2, addrs().0, addrs().1);
        header[5] = b'X';
        assert!(matches!(parse(&header), HeaderOutcome::Invalid(_)));
        assert!(matches!(parse(b"\r\n\r\nX"), HeaderOutcome::Invalid(_)));
    }
}
