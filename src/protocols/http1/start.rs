//! Where the next message starts when a side has lost its place (joined mid-stream, after a
//! gap, or in a body whose framing was lost): at the start of a segment whose whole start line
//! is there and valid, so a body chunk is not mistaken for one.
//!
//! A message's first bytes may also come alone in a syscall of their own: Go's HTTP server,
//! waiting for the next request while it answers one, reads a single byte (`P`), and the next
//! read returns the rest (`OST /submit HTTP/1.1`), which is itself a valid request line for a
//! method `OST`. So a short segment that may begin a start line is held, and the next one is
//! judged both alone and after it.

use super::head::{self, Parsed};
use crate::protocols::Request;

/// The longest segment held as the possible beginning of a message: a method name and more.
pub const HELD_MAX: usize = 16;

/// Where a segment, after a held one, starts a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Nowhere.
    None,
    /// At its own first byte.
    Alone,
    /// At the held segment's first byte: the two are one start line.
    Joined,
}

/// Whether `data`, a whole segment, may be the first bytes of a start line that goes on in the
/// next one (worth holding while the side looks for a message start).
pub fn may_begin(data: &[u8]) -> bool {
    !data.is_empty()
        && data.len() <= HELD_MAX
        && matches!(head::parse(data), Parsed::Partial { start_line: false })
}

/// Where the segment `data` starts a message, `held` (possibly empty) being the segment right
/// before it. When both readings give a start line, the one naming a response or a common
/// method wins (`POST` over `OST`), and the segment alone when both or neither do: a short
/// body tail (`ab`) before `GET /` must not make a method `abGET`.
pub fn find(held: &[u8], data: &[u8]) -> Start {
    let alone = start_line(data);
    if held.is_empty() {
        return if alone.is_some() {
            Start::Alone
        } else {
            Start::None
        };
    }
    let joined = start_line(&[held, data].concat());
    match (alone, joined) {
        (None, None) => Start::None,
        (None, Some(_)) => Start::Joined,
        (Some(alone_common), Some(joined_common)) if joined_common && !alone_common => {
            Start::Joined
        }
        (Some(_), _) => Start::Alone,
    }
}

/// Whether `data` starts with a whole, valid start line; if so, whether it names a response or
/// a common method.
fn start_line(data: &[u8]) -> Option<bool> {
    let starts = match head::parse(data) {
        Parsed::Complete { .. } => true,
        Parsed::Partial { start_line } => start_line,
        Parsed::Invalid(_) => false,
    };
    starts.then(|| {
        let method = data.split(|&b| b == b' ').next().unwrap_or_default();
        data.starts_with(b"HTTP/") || Request::is_common_method(method)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_may_begin_a_message() {
        let cases: [(&[u8], bool); 8] = [
            (b"P", true),
            (b"POST /sub", true),
            (b"HTTP/1.", true),
            (b"", false),
            (b"\x00\x01", false),
            // A whole start line is no beginning: it starts a message by itself.
            (b"GET / HTTP/1.1\r\n", false),
            (b"a longer tail of an earlier body", false),
            (b"{\"a\":1}", false),
        ];
        for (data, expected) in cases {
            assert_eq!(
                may_begin(data),
                expected,
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn where_a_segment_starts_a_message() {
        let cases: [(&[u8], &[u8], Start); 10] = [
            (b"", b"GET / HTTP/1.1\r\n", Start::Alone),
            (b"", b"OST /submit HTTP/1.1\r\n", Start::Alone),
            (b"", b"ok", Start::None),
            // Go's one-byte read before the rest of the request.
            (
                b"P",
                b"OST /submit HTTP/1.1\r\nHost: h\r\n\r\n",
                Start::Joined,
            ),
            (b"POST /sub", b"mit HTTP/1.1\r\n", Start::Joined),
            (b"HTTP/1.", b"1 200 OK\r\n\r\n", Start::Joined),
            // A body's tail before a request: the request alone.
            (b"ab", b"GET / HTTP/1.1\r\n", Start::Alone),
            (b"P", b"GET / HTTP/1.1\r\n", Start::Alone),
            // Neither reading names a common method: the segment as it came.
            (b"X", b"FOO / HTTP/1.1\r\n", Start::Alone),
            (b"P", b"\x00\x01binary", Start::None),
        ];
        for (held, data, expected) in cases {
            assert_eq!(
                find(held, data),
                expected,
                "{:?} then {:?}",
                String::from_utf8_lossy(held),
                String::from_utf8_lossy(data)
            );
        }
    }
}
