//! What a request/response protocol produces: one exchange per request and its response.

use std::borrow::Cow;

/// A kept header: its lower-case name (one of the parsers' fixed lists, so usually borrowed
/// rather than copied for every message) and its value.
pub type Header = (Cow<'static, str>, String);

/// A request head, with the headers later stages use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Borrowed for the common methods, which are a fixed list.
    pub method: Cow<'static, str>,
    /// The request-target as sent (path and query), at most a bounded length.
    pub target: String,
    /// Minor version of HTTP/1.x.
    pub version_minor: u8,
    /// HTTP major version: 1 or 2.
    pub major: u8,
    /// Selected headers (lower-case names), in order.
    pub headers: Vec<Header>,
}

/// A response head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub version_minor: u8,
    pub major: u8,
    /// Selected headers (lower-case names), in order.
    pub headers: Vec<Header>,
}

/// The methods of RFC 9110 and PATCH: a request's method is borrowed from here when it is one
/// of them (nearly always), not copied.
const COMMON_METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

impl Request {
    /// A method as the parsers keep it: borrowed when it is a common one, else copied.
    pub fn method_name(method: &str) -> Cow<'static, str> {
        match COMMON_METHODS.iter().find(|m| **m == method) {
            Some(&common) => Cow::Borrowed(common),
            None => Cow::Owned(method.to_string()),
        }
    }

    /// Whether `method` is one of HTTP's common methods (RFC 9110's and PATCH).
    pub fn is_common_method(method: &[u8]) -> bool {
        COMMON_METHODS.iter().any(|m| m.as_bytes() == method)
    }

    /// First value of a kept header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Whether every byte of the exchange was accounted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completeness {
    /// Request and response framed exactly.
    Complete,
    /// The connection ended before the response body did.
    BodyCut,
    /// Bytes went missing where a body's framing (a chunk size) was: the response's end is the
    /// last byte seen before that.
    FramingLost,
    /// Bytes of the exchange went missing (HTTP/2: its connection lost its place while it was
    /// in flight): its body sizes are what was seen, its message counts unknown.
    BytesLost,
    /// The connection closed before any response came: the response is empty (status 0) and
    /// the exchange ends at the close. A failed exchange.
    NoResponse,
    /// The response came before the request's body ended, and the connection ended (or was
    /// forgotten) before the body did: the request body size is what was seen.
    RequestCut,
}

/// One request and its response, with when and how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub request: Request,
    pub response: Response,
    /// Kernel monotonic ns: first and last byte of the request, first and last of the response.
    pub request_start_ns: u64,
    pub request_end_ns: u64,
    pub response_start_ns: u64,
    pub response_end_ns: u64,
    /// Bytes of the heads, and of the bodies as transferred (chunk framing included).
    pub request_head_bytes: u64,
    pub request_body_bytes: u64,
    pub response_head_bytes: u64,
    pub response_body_bytes: u64,
    /// Length-prefixed messages each way (gRPC), when every message header was seen.
    pub request_messages: Option<u64>,
    pub response_messages: Option<u64>,
    /// 1xx responses that came before the final one.
    pub informational: u8,
    pub completeness: Completeness,
}

impl Exchange {
    /// First request byte to last response byte.
    pub fn duration_ns(&self) -> u64 {
        self.response_end_ns.saturating_sub(self.request_start_ns)
    }
}
