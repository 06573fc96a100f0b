//! gRPC over HTTP/2: which exchanges are calls, what they called, how they ended, and how many
//! messages each way.
//!
//! A call is one HTTP/2 stream (unary and streaming alike): `POST /package.Service/Method` with
//! `content-type: application/grpc[+proto|+json…]`. Its status is the `grpc-status` trailer, or
//! the same header in a trailers-only response (an error with no messages). Messages are
//! length-prefixed in the DATA bytes: one flag byte and a 4-byte big-endian length each
//! (gRPC over HTTP/2, "Length-Prefixed-Message").

use super::Exchange;

/// A call, as read from its exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `package.Service/Method`: the path without its leading slash.
    pub method: String,
    /// `grpc-status`, if the call ended with one (not when it was reset or cut).
    pub status: Option<u8>,
    /// Messages each way, when every message header was seen.
    pub request_messages: Option<u64>,
    pub response_messages: Option<u64>,
}

/// The gRPC call an exchange carried, if it is one.
pub fn call(exchange: &Exchange) -> Option<Call> {
    if exchange.request.major != 2
        || !is_grpc_content_type(exchange.request.header("content-type")?)
    {
        return None;
    }
    let path = exchange.request.target.strip_prefix('/')?;
    let (service, method) = path.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    let status = exchange
        .response
        .headers
        .iter()
        .rev()
        .find(|(n, _)| n == "grpc-status")
        .and_then(|(_, v)| v.parse::<u8>().ok())
        .filter(|&code| code <= 16);
    Some(Call {
        method: path.to_string(),
        status,
        request_messages: exchange.request_messages,
        response_messages: exchange.response_messages,
    })
}

/// `application/grpc`, optionally with a `+format` suffix or parameters.
pub fn is_grpc_content_type(value: &str) -> bool {
    let value = value.trim();
    value
        .get(..16)
        .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
        && matches!(value.as_bytes().get(16), None | Some(b'+' | b';'))
}

/// The name of a status code, as `rpc.response.status_code` and `error.type` carry it.
pub fn status_name(code: u8) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "_OTHER",
    }
}

/// Whether a status is an error for the server: semconv counts only the statuses that point at
/// the server (a NOT_FOUND is the caller's problem); for the client every status but OK is.
pub fn is_error(server: bool, code: u8) -> bool {
    if server {
        matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
    } else {
        code != 0
    }
}

/// Counts length-prefixed messages in one direction of a stream's DATA bytes, including bytes
/// it is told were never seen (a capture gap): a gap inside a message costs nothing, a gap
/// over a message header makes the count unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageCounter {
    header: [u8; 5],
    have: usize,
    /// Bytes of the current message's body still to come.
    left: u64,
    count: u64,
    lost: bool,
}

impl MessageCounter {
    /// DATA body bytes, in order.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.lost {
            if self.left > 0 {
                let n = self.left.min(data.len() as u64);
                self.left -= n;
                data = &data[n as usize..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                self.have = 0;
                self.count += 1;
                let [_, a, b, c, d] = self.header;
                self.left = u64::from(u32::from_be_bytes([a, b, c, d]));
            }
        }
    }

    /// `n` DATA body bytes that were not captured.
    pub fn skip(&mut self, n: u64) {
        if n == 0 || self.lost {
            return;
        }
        if self.have == 0 && n <= self.left {
            self.left -= n;
        } else {
            self.lost = true;
        }
    }

    /// Messages whose header was seen, unless one may have been missed (or one is cut short).
    pub fn count(&self) -> Option<u64> {
        (!self.lost && self.have == 0 && self.left == 0).then_some(self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::{Completeness, Request, Response};

    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend(std::iter::repeat_n(b'm', len as usize));
        m
    }

    #[test]
    fn messages_are_counted_whole_split_and_across_gaps() {
        let stream: Vec<u8> = [message(3), message(0), message(300)].concat();
        let mut whole = MessageCounter::default();
        whole.feed(&stream);
        assert_eq!(whole.count(), Some(3));
        let mut bytewise = MessageCounter::default();
        stream.chunks(1).for_each(|b| bytewise.feed(b));
        assert_eq!(bytewise, whole);
        // A gap inside the 300-byte body: still exact.
        let mut gap = MessageCounter::default();
        gap.feed(&stream[..20]);
        gap.skip(200);
        gap.feed(&stream[220..]);
        assert_eq!(gap.count(), Some(3));
        // A gap over a header: unknown, not a guess.
        let mut lost = MessageCounter::default();
        lost.feed(&stream[..5]);
        lost.skip(10);
        lost.feed(&stream[15..]);
        assert_eq!(lost.count(), None);
        // A message cut short is not counted as whole.
        let mut cut = MessageCounter::default();
        cut.feed(&stream[..7]);
        assert_eq!(cut.count(), None);
    }

    #[test]
    fn content_types() {
        for ok in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC+json",
            "application/grpc; charset=utf-8",
        ] {
            assert!(is_grpc_content_type(ok), "{ok}");
        }
        for no in [
            "application/grpc-web",
            "application/json",
            "application/gr",
            "",
        ] {
            assert!(!is_grpc_content_type(no), "{no}");
        }
    }

    fn exchange(path: &str, content_type: &str, response_headers: &[(&str, &str)]) -> Exchange {
        Exchange {
            request: Request {
                method: "POST".into(),
                target: path.into(),
                version_minor: 0,
                major: 2,
                headers: vec![("content-type".into(), content_type.into())],
            },
            response: Response {
                status: 200,
                version_minor: 0,
                major: 2,
                headers: response_headers
                    .iter()
                    .map(|(n, v)| (n.to_string().into(), v.to_string()))
                    .collect(),
            },
            request_start_ns: 0,
            request_end_ns: 0,
            response_start_ns: 0,
            response_end_ns: 0,
            request_head_bytes: 0,
            request_body_bytes: 0,
            response_head_bytes: 0,
            response_body_bytes: 0,
            request_messages: Some(1),
            response_messages: Some(2),
            informational: 0,
            completeness: Completeness::Complete,
        }
    }

    #[test]
    fn calls_are_read_from_path_content_type_and_trailers() {
        let c = call(&exchange(
            "/helloworld.Greeter/SayHello",
            "application/grpc",
            &[("content-type", "application/grpc"), ("grpc-status", "0")],
        ))
        .unwrap();
        assert_eq!(c.method, "helloworld.Greeter/SayHello");
        assert_eq!(c.status, Some(0));
        assert_eq!(
            (c.request_messages, c.response_messages),
            (Some(1), Some(2))
        );
        // Trailers-only (an error before any message): the status is in the head.
        let c = call(&exchange(
            "/a.B/C",
            "application/grpc+proto",
            &[("grpc-status", "12")],
        ))
        .unwrap();
        assert_eq!((c.status, status_name(12)), (Some(12), "UNIMPLEMENTED"));
        // No status (reset or cut), or a nonsense one: unknown.
        assert_eq!(
            call(&exchange("/a.B/C", "application/grpc", &[]))
                .unwrap()
                .status,
            None
        );
        assert_eq!(
            call(&exchange(
                "/a.B/C",
                "application/grpc",
                &[("grpc-status", "99")]
            ))
            .unwrap()
            .status,
            None
        );
        // Not gRPC.
        assert!(call(&exchange("/a.B/C", "application/json", &[])).is_none());
        assert!(call(&exchange("/just-a-path", "application/grpc", &[])).is_none());
        let mut http1 = exchange("/a.B/C", "application/grpc", &[]);
        http1.request.major = 1;
        assert!(call(&http1).is_none());
    }

    #[test]
    fn errors_depend_on_the_side() {
        assert!(!is_error(true, 0) && !is_error(false, 0));
        assert!(!is_error(true, 5) && is_error(false, 5));
        assert!(is_error(true, 13) && is_error(false, 13));
        assert_eq!(status_name(16), "UNAUTHENTICATED");
        assert_eq!(status_name(17), "_OTHER");
    }
}
