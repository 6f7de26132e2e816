//! The HTTP/1.1 of `--metrics`: framing a request head, routing it, and
//! writing the response — no sockets, no mio (`reactor/metrics_listener.rs`
//! moves the bytes).
//!
//! Deliberately small: one request per connection. Every response carries
//! `Connection: close` and the server closes after sending it, so a client
//! that pipelines a second request gets the first answer and then the end
//! of the stream (Prometheus, curl and load-balancer health checks send one
//! request and read to the end). Bodies are never read: `GET` and `HEAD` have
//! none, and any other method is answered 405 at once.
//!
//! The request head is parsed by `httparse` (the parser `hyper` uses), never
//! by hand. What a client can do wrong has a named outcome:
//! a head longer than [`MAX_REQUEST_HEAD_BYTES`] is [`RequestHead::TooLarge`]
//! (431), bytes that are not HTTP are [`RequestHead::Invalid`] (400).

use std::fmt::Write as _;

/// The longest request head accepted (request line and headers); past it
/// the answer is 431 and the connection closes. Prometheus and curl send a
/// few hundred bytes.
pub const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
/// Headers a request may carry; more is answered as [`RequestHead::TooLarge`].
pub const MAX_REQUEST_HEADERS: usize = 32;

/// What the bytes received so far make of a request head.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestHead {
    /// Not complete yet (no blank line), and still within the cap: read more.
    Partial,
    /// A complete head: its method and path (the query string stripped).
    Complete {
        /// `GET`, `HEAD`, `POST`, ...
        method: String,
        /// `/metrics`, `/healthz`, ...
        path: String,
    },
    /// Longer than [`MAX_REQUEST_HEAD_BYTES`], or more than
    /// [`MAX_REQUEST_HEADERS`] headers: 431.
    TooLarge,
    /// Not an HTTP/1.x request: 400.
    Invalid,
}

/// Frame the request head at the start of `received`.
pub fn parse_request_head(received: &[u8]) -> RequestHead {
    let mut headers = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(received) {
        Ok(httparse::Status::Complete(_)) => RequestHead::Complete {
            method: request.method.unwrap_or_default().to_string(),
            path: request
                .path
                .unwrap_or_default()
                .split('?')
                .next()
                .unwrap_or_default()
                .to_string(),
        },
        // Checked after parsing, so a complete head of exactly the cap is
        // served; a partial one at the cap can only grow past it.
        Ok(httparse::Status::Partial) if received.len() >= MAX_REQUEST_HEAD_BYTES => {
            RequestHead::TooLarge
        }
        Ok(httparse::Status::Partial) => RequestHead::Partial,
        Err(httparse::Error::TooManyHeaders) => RequestHead::TooLarge,
        Err(_) => RequestHead::Invalid,
    }
}

/// Whether the server still takes new clients: what `/healthz` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Accepting: 200 `ok`.
    Accepting,
    /// Shutdown began (draining): 503, so a load balancer stops sending new clients.
    ShuttingDown,
}

/// A response, ready to be written with [`Response::to_bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code (200, 404, ...).
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

/// The Prometheus text exposition format's content type, version 0.0.4.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

impl Response {
    /// A plain-text response.
    pub fn text(status: u16, body: &str) -> Self {
        Response {
            status,
            content_type: TEXT,
            body: body.to_string(),
        }
    }

    /// The response for a refused or malformed request head, if it is one.
    pub fn for_refused(head: &RequestHead) -> Option<Self> {
        match head {
            RequestHead::TooLarge => Some(Response::text(431, "request header too large\n")),
            RequestHead::Invalid => Some(Response::text(400, "bad request\n")),
            RequestHead::Partial | RequestHead::Complete { .. } => None,
        }
    }

    /// Status line, headers (`Content-Length`, `Connection: close`) and body.
    /// With `head_only` (a `HEAD` request) the body is left out, its length kept.
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = String::with_capacity(self.body.len() + 128);
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len()
        );
        if self.status == 405 {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        if !head_only {
            out.push_str(&self.body);
        }
        out.into_bytes()
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Answer a complete request: `GET /metrics` with `metrics()`'s text,
/// `GET /healthz` with `health`, anything else 404 (405 for a method other
/// than `GET` or `HEAD`). `metrics` runs only for `/metrics`.
pub fn route(
    method: &str,
    path: &str,
    health: Health,
    metrics: impl FnOnce() -> String,
) -> Response {
    if method != "GET" && method != "HEAD" {
        return Response::text(405, "method not allowed\n");
    }
    match path {
        "/metrics" => Response {
            status: 200,
            content_type: PROMETHEUS_CONTENT_TYPE,
            body: metrics(),
        },
        "/healthz" => match health {
            Health::Accepting => Response::text(200, "ok\n"),
            Health::ShuttingDown => Response::text(503, "shutting down\n"),
        },
        _ => Response::text(404, "not found: try /metrics or /healthz\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(method: &str, path: &str) -> RequestHead {
        RequestHead::Complete {
            method: method.into(),
            path: path.into(),
        }
    }

    // ---- framing ----

    #[test]
    fn a_head_is_complete_only_at_its_blank_line() {
        let request = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 0..request.len() {
            assert_eq!(
                parse_request_head(&request[..cut]),
                RequestHead::Partial,
                "cut {cut}"
            );
        }
        assert_eq!(parse_request_head(request), complete("GET", "/metrics"));
    }

    #[test]
    fn a_head_past_the_cap_is_too_large_and_garbage_is_invalid() {
        let mut long = b"GET /".to_vec();
        long.resize(MAX_REQUEST_HEAD_BYTES, b'a');
        assert_eq!(parse_request_head(&long), RequestHead::TooLarge);
        assert_eq!(
            parse_request_head(&long[..MAX_REQUEST_HEAD_BYTES - 1]),
            RequestHead::Partial
        );
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_REQUEST_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_request_head(&many), RequestHead::TooLarge);
        assert_eq!(
            parse_request_head(b"\x16\x03\x01 hello"),
            RequestHead::Invalid
        );
    }

    // ---- routing ----

    #[test]
    fn routes_answer_metrics_health_and_nothing_else() {
        let metrics = || "m 1\n".to_string();
        let r = route("GET", "/metrics", Health::Accepting, metrics);
        assert_eq!(
            (r.status, r.body.as_str(), r.content_type),
            (200, "m 1\n", PROMETHEUS_CONTENT_TYPE)
        );
        assert_eq!(
            route("GET", "/healthz", Health::Accepting, metrics).status,
            200
        );
        assert_eq!(
            route("GET", "/healthz", Health::ShuttingDown, metrics).status,
            503
        );
        assert_eq!(route("GET", "/", Health::Accepting, metrics).status, 404);
        assert_eq!(
            route("POST", "/metrics", Health::Accepting, metrics).status,
            405
        );
    }

    #[test]
    fn a_response_says_its_length_and_that_the_connection_closes() {
        let bytes = Response::text(200, "ok\n").to_bytes(false);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Length: 3\r\n"), "{text}");
        assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nok\n"), "{text}");
        let head = String::from_utf8(Response::text(200, "ok\n").to_bytes(true)).unwrap();
        assert!(
            head.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\n"),
            "{head}"
        );
    }
}
