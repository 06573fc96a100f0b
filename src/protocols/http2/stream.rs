//! One HTTP/2 stream: its request and response halves as they arrive, and the exchange it
//! becomes.

use std::borrow::Cow;

use super::partial::UNKNOWN;
use crate::protocols::{Completeness, Exchange, Header, Request, Response, grpc::MessageCounter};

#[derive(Debug, Default)]
pub(super) struct Half {
    /// The head (request or response), once decoded.
    pub head: Option<Vec<(String, String)>>,
    pub trailers: Vec<(String, String)>,
    pub start_ns: u64,
    pub end_ns: u64,
    pub body: u64,
    /// gRPC messages in the DATA bytes.
    pub messages: MessageCounter,
    pub ended: bool,
    /// Bytes of this half went missing (its direction lost its place while it was open): its
    /// body is what was seen, its messages are unknown.
    pub gap: bool,
    /// Its head went missing (lost with the bytes, or undecodable): the stream cannot be
    /// reported.
    pub head_lost: bool,
}

impl Half {
    /// Whether the half began and has not ended: bytes lost now may be its own.
    pub fn open(&self) -> bool {
        !self.ended
    }
}

#[derive(Debug, Default)]
pub(super) struct Stream {
    pub request: Half,
    pub response: Half,
    pub informational: u8,
}

impl Stream {
    /// Whether bytes of it went missing.
    pub fn gap(&self) -> bool {
        self.request.gap || self.response.gap
    }

    /// Whether it is over: its response ended, and its request ended too, or can no longer be
    /// followed to its end (its head or bytes went missing).
    pub fn done(&self) -> bool {
        let request = &self.request;
        self.response.ended
            && (request.ended || request.gap || request.head_lost || request.head.is_none())
    }

    /// Whether it can be reported: both heads are known.
    pub fn reportable(&self) -> bool {
        self.request.head.is_some()
            && self.response.head.is_some()
            && !self.request.head_lost
            && !self.response.head_lost
    }
}

pub(super) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Request headers later stages use, as HTTP/1 keeps them (`:authority` as `host`).
const KEPT: [&str; 5] = [
    "user-agent",
    "traceparent",
    "tracestate",
    "content-type",
    "x-forwarded-for",
];

/// The exchange a stream became; bytes lost on the way make it [`Completeness::BytesLost`].
pub(super) fn exchange(stream: Stream, completeness: Completeness) -> Exchange {
    let completeness = if stream.gap() {
        Completeness::BytesLost
    } else {
        completeness
    };
    let messages = |half: &Half| {
        if half.gap {
            None
        } else {
            half.messages.count()
        }
    };
    let (request_messages, response_messages) =
        (messages(&stream.request), messages(&stream.response));
    let req = stream.request.head.unwrap_or_default();
    let resp = stream.response.head.unwrap_or_default();
    let mut kept: Vec<Header> = Vec::new();
    if let Some(authority) = header(&req, ":authority") {
        kept.push((Cow::Borrowed("host"), authority.into()));
    }
    for (n, v) in &req {
        if let Some(&name) = KEPT.iter().find(|k| **k == n) {
            kept.push((Cow::Borrowed(name), v.clone()));
        }
    }
    // A trailers-only response (a gRPC error) carries grpc-status in its head.
    let mut response_headers: Vec<Header> = resp
        .iter()
        .filter(|(n, _)| n.starts_with("grpc-"))
        .map(|(n, v)| (Cow::Owned(n.clone()), v.clone()))
        .collect();
    // Trailers matter to gRPC (grpc-status, grpc-message): keep them with the response.
    response_headers.extend(
        stream
            .response
            .trailers
            .iter()
            .filter(|(n, _)| n.starts_with("grpc-"))
            .map(|(n, v)| (Cow::Owned(n.clone()), v.clone())),
    );
    // On a joined connection a pseudo-header behind an unknown table entry is missing: it is
    // reported as unknown rather than guessed.
    Exchange {
        request: Request {
            method: Request::method_name(header(&req, ":method").unwrap_or(UNKNOWN)),
            target: header(&req, ":path").unwrap_or(UNKNOWN).to_string(),
            version_minor: 0,
            major: 2,
            headers: kept,
        },
        response: Response {
            status: header(&resp, ":status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            version_minor: 0,
            major: 2,
            headers: response_headers,
        },
        request_start_ns: stream.request.start_ns,
        request_end_ns: stream.request.end_ns.max(stream.request.start_ns),
        response_start_ns: stream.response.start_ns,
        response_end_ns: stream.response.end_ns.max(stream.response.start_ns),
        request_head_bytes: 0,
        request_body_bytes: stream.request.body,
        response_head_bytes: 0,
        response_body_bytes: stream.response.body,
        request_messages,
        response_messages,
        informational: stream.informational,
        completeness,
    }
}

/// The failed exchange of a stream whose request got no response head before the connection
/// closed at `at_ns` (status 0, [`Completeness::NoResponse`]), ending at the close.
pub(super) fn unanswered(stream: Stream, at_ns: u64) -> Exchange {
    let mut e = exchange(stream, Completeness::NoResponse);
    let end_ns = at_ns.max(e.request_end_ns);
    e.response_start_ns = end_ns;
    e.response_end_ns = end_ns;
    e
}
