//! The application protocol of a connection: HTTP/1 until a direction opens with the HTTP/2
//! client preface, then HTTP/2.

use crate::protocols::{
    Direction, Exchange, Role, Segment,
    http1::{self, Http1},
    http2::{self, Http2},
};

#[allow(
    clippy::large_enum_variant,
    reason = "HTTP/1 is the common case and lives inline in its connection; the rarer, larger \
              HTTP/2 state is boxed"
)]
pub enum Parser {
    Http1(Http1),
    Http2(Box<Http2>),
}

/// What a parser noticed, in the connection stage's terms.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ParserNotes {
    pub http1: http1::Notes,
    pub http2: http2::Notes,
}

impl Parser {
    /// Switches to HTTP/2 when `seg` is the first of its direction (stream position 0) and
    /// opens with the client preface, or the server's SETTINGS (a server may speak first). A
    /// connection joined mid-stream switches when, before any HTTP/1 message was found, a
    /// segment is a chain of HTTP/2 frames; its header blocks then decode partially. `role` is
    /// the traced process's TCP role, when known.
    pub fn detect(
        &mut self,
        from_start: bool,
        stream_pos: u64,
        seg: &Segment<'_>,
        role: Option<Role>,
    ) {
        let Parser::Http1(h1) = self else { return };
        if from_start {
            if stream_pos == 0
                && seg.data.len() >= 4
                && (Http2::starts_with_preface(seg.data)
                    || Http2::starts_with_server_preface(seg.data))
            {
                *self = Parser::Http2(Box::new(Http2::new(http2::Limits::default())));
            }
        } else if !h1.found_message() && http2::frame::chains(seg.data, seg.len) {
            let client_dir = role.map(|r| match r {
                Role::Client => Direction::Egress,
                Role::Server => Direction::Ingress,
            });
            *self = Parser::Http2(Box::new(Http2::midstream(
                http2::Limits::default(),
                client_dir,
            )));
        }
    }

    pub fn feed(&mut self, dir: Direction, seg: &Segment<'_>, out: &mut Vec<Exchange>) {
        match self {
            Parser::Http1(p) => {
                p.feed(dir, seg, out);
                // `Upgrade: h2c` answered with 101: HTTP/2 from the byte after the 101's head,
                // with the upgraded request as stream 1.
                if let Some(upgrade) = p.take_h2c_upgrade() {
                    let mut h2 = Http2::upgraded(http2::Limits::default(), &upgrade);
                    let at = upgrade.resume_at.min(seg.data.len() as u64);
                    let rest = Segment {
                        data: &seg.data[at as usize..],
                        len: seg.len.saturating_sub(at),
                        first_ns: seg.first_ns,
                        last_ns: seg.last_ns,
                        boundary: seg.boundary.and_then(|b| b.checked_sub(at)),
                    };
                    if rest.len > 0 {
                        h2.feed(dir, &rest, out);
                    }
                    *self = Parser::Http2(Box::new(h2));
                }
            }
            Parser::Http2(p) => p.feed(dir, seg, out),
        }
    }

    /// Bytes went missing in a way that breaks positions.
    pub fn desync(&mut self, dir: Direction, out: &mut Vec<Exchange>) {
        match self {
            Parser::Http1(p) => p.desync(dir, out),
            Parser::Http2(p) => p.desync(dir),
        }
    }

    /// The connection closed at `at_ns`; `seen_to_the_end` when no byte of it went unseen at
    /// its end (then a request left unanswered is reported as such).
    pub fn close(&mut self, at_ns: u64, seen_to_the_end: bool, out: &mut Vec<Exchange>) {
        match self {
            Parser::Http1(p) => p.close(at_ns, seen_to_the_end, out),
            Parser::Http2(p) => p.close(at_ns, seen_to_the_end, out),
        }
    }

    /// The connection is forgotten while open (idle, evicted, agent exit): what waited is
    /// counted.
    pub fn abandon(&mut self, out: &mut Vec<Exchange>) {
        match self {
            Parser::Http1(p) => p.abandon(out),
            Parser::Http2(p) => p.abandon(out),
        }
    }

    pub fn role(&self) -> Option<Role> {
        match self {
            Parser::Http1(p) => p.role(),
            Parser::Http2(p) => p.role(),
        }
    }

    /// In HTTP/1 terms, for the connection's not-HTTP / switched counters.
    pub fn status(&self) -> http1::Status {
        match self {
            Parser::Http1(p) => p.status(),
            Parser::Http2(p) => match p.status() {
                http2::Status::NotHttp2 => http1::Status::NotHttp,
                _ => http1::Status::Active,
            },
        }
    }

    pub fn take_notes(&mut self) -> ParserNotes {
        match self {
            Parser::Http1(p) => ParserNotes {
                http1: p.take_notes(),
                ..ParserNotes::default()
            },
            Parser::Http2(p) => ParserNotes {
                http2: p.take_notes(),
                ..ParserNotes::default()
            },
        }
    }
}
