//! Parses a request or response head with httparse and extracts what framing needs.

use std::{borrow::Cow, mem::MaybeUninit};

use crate::protocols::{Header, Request, Response};

/// Header slots given to httparse; a head with more is malformed for netsonde's purposes.
const MAX_HEADERS: usize = 128;
/// Longest request-target kept (longer ones are cut, marked with a trailing "…").
pub const MAX_TARGET: usize = 8192;
/// Longest header value kept.
const MAX_VALUE: usize = 512;
/// Request headers later stages use (tracing context, semantic-convention attributes). Nothing
/// else is kept: no cookies, no credentials.
const KEPT_REQUEST_HEADERS: [&str; 6] = [
    "host",
    "user-agent",
    "traceparent",
    "tracestate",
    "content-type",
    "x-forwarded-for",
];
/// Response headers later stages use: an HTTP/1 connection upgrading to h2c says so here.
const KEPT_RESPONSE_HEADERS: [&str; 1] = ["upgrade"];

/// A parsed head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    Request(Request),
    Response(Response),
}

/// What the head says about the body that follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BodyInfo {
    pub content_length: Option<u64>,
    pub chunked: bool,
}

/// The outcome of parsing the bytes collected so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole head of `len` bytes.
    Complete {
        head: Head,
        body: BodyInfo,
        len: usize,
    },
    /// More bytes are needed. `start_line` tells whether the first line was already complete
    /// and valid (evidence that this really is HTTP/1).
    Partial { start_line: bool },
    /// Not an HTTP/1.x head.
    Invalid(HeadError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("not an HTTP/1.x head: {0}")]
    Syntax(String),
    #[error("conflicting or invalid Content-Length")]
    ContentLength,
}

/// Parses `buf`, which starts where a message should start.
pub fn parse(buf: &[u8]) -> Parsed {
    const RESPONSE_PREFIX: &[u8] = b"HTTP/";
    if buf.len() < RESPONSE_PREFIX.len() && RESPONSE_PREFIX.starts_with(buf) {
        return Parsed::Partial { start_line: false };
    }
    if buf.starts_with(RESPONSE_PREFIX) {
        parse_response(buf)
    } else {
        parse_request(buf)
    }
}

fn config() -> httparse::ParserConfig {
    let mut config = httparse::ParserConfig::default();
    // Captured traffic comes from all kinds of servers and clients: skip a malformed header
    // line rather than lose the whole exchange.
    config.ignore_invalid_headers_in_requests(true);
    config.ignore_invalid_headers_in_responses(true);
    config.allow_spaces_after_header_name_in_responses(true);
    config
}

// Header slots are left uninitialised: zeroing 128 of them cost more than parsing a typical head.
fn parse_request(buf: &[u8]) -> Parsed {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match config().parse_request_with_uninit_headers(&mut req, buf, &mut slots) {
        Ok(httparse::Status::Partial) => Parsed::Partial {
            start_line: req.version.is_some(),
        },
        Ok(httparse::Status::Complete(len)) => {
            let body = match body_info(req.headers) {
                Ok(body) => body,
                Err(e) => return Parsed::Invalid(e),
            };
            let request = Request {
                method: Request::method_name(req.method.unwrap_or_default()),
                target: bounded_target(req.path.unwrap_or_default()),
                version_minor: req.version.unwrap_or(1),
                major: 1,
                headers: kept(req.headers, &KEPT_REQUEST_HEADERS),
            };
            Parsed::Complete {
                head: Head::Request(request),
                body,
                len,
            }
        }
        Err(e) => Parsed::Invalid(HeadError::Syntax(e.to_string())),
    }
}

fn parse_response(buf: &[u8]) -> Parsed {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    match config().parse_response_with_uninit_headers(&mut resp, buf, &mut slots) {
        Ok(httparse::Status::Partial) => Parsed::Partial {
            start_line: resp.code.is_some(),
        },
        Ok(httparse::Status::Complete(len)) => {
            let body = match body_info(resp.headers) {
                Ok(body) => body,
                Err(e) => return Parsed::Invalid(e),
            };
            let response = Response {
                status: resp.code.unwrap_or_default(),
                version_minor: resp.version.unwrap_or(1),
                major: 1,
                headers: kept(resp.headers, &KEPT_RESPONSE_HEADERS),
            };
            Parsed::Complete {
                head: Head::Response(response),
                body,
                len,
            }
        }
        Err(e) => Parsed::Invalid(HeadError::Syntax(e.to_string())),
    }
}

fn body_info(headers: &[httparse::Header<'_>]) -> Result<BodyInfo, HeadError> {
    let mut info = BodyInfo::default();
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(HeadError::ContentLength)?;
            if info
                .content_length
                .is_some_and(|previous| previous != value)
            {
                return Err(HeadError::ContentLength);
            }
            info.content_length = Some(value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked framing applies when chunked is the last coding.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            info.chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        }
    }
    Ok(info)
}

fn kept(headers: &[httparse::Header<'_>], names: &[&'static str]) -> Vec<Header> {
    let mut kept = Vec::new();
    for h in headers {
        let Some(&name) = names.iter().find(|n| h.name.eq_ignore_ascii_case(n)) else {
            continue;
        };
        let value = &h.value[..h.value.len().min(MAX_VALUE)];
        // Checked as UTF-8 first: the lossy conversion walks the bytes more slowly, and header
        // values are almost always ASCII.
        let value = match std::str::from_utf8(value) {
            Ok(text) => text.to_owned(),
            Err(_) => String::from_utf8_lossy(value).into_owned(),
        };
        kept.push((Cow::Borrowed(name), value));
    }
    kept
}

fn bounded_target(target: &str) -> String {
    if target.len() <= MAX_TARGET {
        return target.to_string();
    }
    let mut end = MAX_TARGET;
    while !target.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &target[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_request_head_and_keeps_only_listed_headers() {
        let buf =
            b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nCookie: secret\r\nContent-Length: 3\r\n\r\nabc";
        let Parsed::Complete {
            head: Head::Request(r),
            body,
            len,
        } = parse(buf)
        else {
            panic!("{:?}", parse(buf))
        };
        assert_eq!(
            (&*r.method, r.target.as_str(), r.version_minor),
            ("POST", "/a?b=1", 1)
        );
        assert_eq!(r.headers, [("host".into(), "x".to_string())]);
        assert_eq!(
            body,
            BodyInfo {
                content_length: Some(3),
                chunked: false
            }
        );
        assert_eq!(len, buf.len() - 3);
    }

    #[test]
    fn methods_and_kept_headers_come_through_as_sent() {
        // Method, kept names and what is kept of a response, borrowed or not.
        type Kept<'a> = &'a [(&'a str, &'a str)];
        let cases: [(&[u8], &str, Kept); 5] = [
            (
                b"GET / HTTP/1.1\r\nHOST: a\r\nUser-Agent: u\r\n\r\n",
                "GET",
                &[("host", "a"), ("user-agent", "u")],
            ),
            // A value that is not UTF-8 (obs-text) is kept with its bad bytes replaced.
            (
                b"GET / HTTP/1.1\r\nUser-Agent: caf\xe9 \xc3\xa9\r\n\r\n",
                "GET",
                &[("user-agent", "caf\u{fffd} \u{e9}")],
            ),
            (
                b"PURGE /x HTTP/1.1\r\nTraceparent: t\r\n\r\n",
                "PURGE",
                &[("traceparent", "t")],
            ),
            (b"get / HTTP/1.1\r\n\r\n", "get", &[]),
            (
                b"HTTP/1.1 101 Switching\r\nUpgrade: h2c\r\nContent-Type: text/html\r\n\r\n",
                "",
                &[("upgrade", "h2c")],
            ),
        ];
        for (bytes, method, headers) in cases {
            let (got_method, got_headers) = match parse(bytes) {
                Parsed::Complete {
                    head: Head::Request(r),
                    ..
                } => (r.method, r.headers),
                Parsed::Complete {
                    head: Head::Response(r),
                    ..
                } => ("".into(), r.headers),
                other => panic!("{other:?}"),
            };
            assert_eq!(got_method, method);
            let got: Vec<_> = got_headers
                .iter()
                .map(|(n, v)| (&**n, v.as_str()))
                .collect();
            assert_eq!(got, headers, "{method}");
        }
    }

    #[test]
    fn recognises_partial_heads() {
        assert_eq!(parse(b"HT"), Parsed::Partial { start_line: false });
        assert_eq!(parse(b"GET /x HT"), Parsed::Partial { start_line: false });
        assert_eq!(
            parse(b"GET /x HTTP/1.1\r\nHost"),
            Parsed::Partial { start_line: true }
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\n"),
            Parsed::Partial { start_line: true }
        );
    }

    #[test]
    fn rejects_what_is_not_http1() {
        for not_http in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"\x16\x03\x01\x02\x00\x01",
            b"*1\r\n$4\r\nPING\r\n",
            b"SSH-2.0-OpenSSH_9.2\r\n",
        ] {
            assert!(
                matches!(parse(not_http), Parsed::Invalid(_)),
                "{not_http:?}"
            );
        }
    }

    #[test]
    fn reads_body_framing() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert!(matches!(
            parse(chunked),
            Parsed::Complete {
                body: BodyInfo { chunked: true, .. },
                ..
            }
        ));
        let conflict = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(parse(conflict), Parsed::Invalid(HeadError::ContentLength));
        let same = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n";
        assert!(matches!(
            parse(same),
            Parsed::Complete {
                body: BodyInfo {
                    content_length: Some(3),
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn bounds_long_targets() {
        let buf = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET + 10));
        let Parsed::Complete {
            head: Head::Request(r),
            ..
        } = parse(buf.as_bytes())
        else {
            panic!("long target")
        };
        assert_eq!(r.target, format!("/{}…", "a".repeat(MAX_TARGET - 1)));
    }
}
