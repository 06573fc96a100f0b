//! Sans-IO application protocol parsers. They consume one connection's byte streams as
//! [`Segment`]s and produce [`Exchange`]s; they do no I/O, keep no global state and import no
//! other stage.

pub mod exchange;
pub mod grpc;
pub mod http1;
pub mod http2;

pub use exchange::{Completeness, Exchange, Header, Request, Response};

/// Which way bytes went, seen from the traced process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sent by the process.
    Egress,
    /// Received by the process.
    Ingress,
}

impl Direction {
    pub fn opposite(self) -> Direction {
        match self {
            Direction::Egress => Direction::Ingress,
            Direction::Ingress => Direction::Egress,
        }
    }

    /// 0 for egress, 1 for ingress: an index for per-direction arrays.
    pub fn index(self) -> usize {
        match self {
            Direction::Egress => 0,
            Direction::Ingress => 1,
        }
    }
}

/// The HTTP role of the traced process in an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// It sent the request.
    Client,
    /// It received the request.
    Server,
}

impl Role {
    /// Lower-case name, as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }
}

/// A piece of one direction's byte stream: what one syscall moved.
///
/// `data` is the captured prefix; the stream continues for `len` bytes in all, so
/// `len - data.len()` bytes after `data` are a gap whose size is known and content is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    pub data: &'a [u8],
    pub len: u64,
    /// When the first and the last byte of the segment were seen (kernel monotonic ns).
    pub first_ns: u64,
    pub last_ns: u64,
    /// Where in `data` (0 to `data.len()`) an HTTP/2 frame header is known to start: the
    /// kernel's walk of the frames says so. How a parser that lost its place finds it again.
    pub boundary: Option<u64>,
}

impl<'a> Segment<'a> {
    /// A fully captured segment.
    pub fn full(data: &'a [u8], first_ns: u64, last_ns: u64) -> Self {
        Segment {
            data,
            len: data.len() as u64,
            first_ns,
            last_ns,
            boundary: None,
        }
    }

    /// Bytes that went by unseen.
    pub fn gap(len: u64, at_ns: u64) -> Segment<'static> {
        Segment {
            data: &[],
            len,
            first_ns: at_ns,
            last_ns: at_ns,
            boundary: None,
        }
    }
}
