//! One direction of an HTTP/1 connection: finds message heads, then follows the body framing
//! (Content-Length, chunked, until close) across captured bytes and gaps alike.
//!
//! Body bytes are counted, never needed, so a gap inside a body costs nothing. Otherwise the
//! side relies on one observation: a syscall's data starts at a message boundary far more often
//! than not. So
//! * a chunk size hidden in a gap leaves the body *unframed*: it runs until the next segment
//!   that starts with a valid start line (or close);
//! * a head start hidden or cut by a gap counts as one hidden message, and the side skips to the
//!   next segment that starts with a valid start line.
//!
//! A start line may also begin in a short segment of its own (`start`): the side holds such a
//! segment while it looks for a start, and judges the next one after it too.

use super::{
    head::{self, BodyInfo, Head, Parsed},
    start::{self, Start},
};
use crate::protocols::{Direction, Segment};

/// How the body after a head is delimited (decided by the pairing, which knows the request
/// method a response answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

impl Framing {
    /// The framing a head announces on its own.
    pub fn announced(body: BodyInfo, is_response: bool) -> Framing {
        match (body.chunked, body.content_length) {
            (true, _) => Framing::Chunked,
            (false, Some(n)) => Framing::Length(n),
            (false, None) if is_response => Framing::UntilClose,
            (false, None) => Framing::None,
        }
    }
}

/// How a message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Its framing said so.
    Framed,
    /// The connection closed, which is how an until-close body ends.
    Closed,
    /// The connection closed while its body was still owed.
    Cut,
    /// Its framing was lost in a gap.
    Lost,
}

/// What the side tells the pairing.
pub trait Sink {
    /// A head was parsed; returns the body framing to follow.
    fn head(
        &mut self,
        dir: Direction,
        head: Head,
        body: BodyInfo,
        head_bytes: u64,
        first_ns: u64,
    ) -> Framing;
    /// The current message ended.
    fn done(&mut self, dir: Direction, body_bytes: u64, last_ns: u64, end: End);
    /// Bytes that cannot be HTTP/1 (`fatal`: the very first message of a fresh stream, so the
    /// connection is not HTTP/1 at all).
    fn malformed(&mut self, dir: Direction, fatal: bool);
    /// A gap hid the start of one message (or cut its head); the side is resynchronising.
    fn hidden_message(&mut self, dir: Direction);
    /// A head went on past the bytes the kernel copied of its syscall (it is longer than the
    /// captured prefix): it is lost, and said so apart from other hidden messages.
    fn head_cut(&mut self, dir: Direction);
    /// A gap hid a body's framing; the body now runs to the next message start.
    fn unframed(&mut self, dir: Direction);
    /// The connection switched protocols (101, CONNECT): the bytes after the message that did
    /// it are not HTTP/1.
    fn switched(&self) -> bool;
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk-size line.
    Size(Vec<u8>),
    /// Skipping chunk data.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Reading trailer lines until an empty one.
    Trailer(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// The next byte starts a message.
    Idle,
    /// Lost track: waiting for a segment that starts with a message.
    Resync,
    /// Collecting a head.
    Head {
        buf: Vec<u8>,
        first_ns: u64,
    },
    Body {
        remaining: u64,
    },
    Chunked(Chunk),
    UntilClose,
    /// A body whose framing was lost: it ends where a segment starts a new message.
    Unframed,
    /// Not HTTP/1, or switched to another protocol: everything is ignored.
    Dead,
}

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;

#[derive(Debug, Clone)]
pub struct Side {
    dir: Direction,
    state: State,
    /// Body bytes of the current message, and when its last byte was seen.
    body_bytes: u64,
    last_ns: u64,
    /// Whether a message was ever found on this side (a bad first message means "not HTTP").
    seen_message: bool,
    max_head_bytes: usize,
    /// In `Resync` and `Unframed`: the last segment, when it may be the beginning of a message
    /// whose start line goes on in the next one (`start::may_begin`); its first and last time.
    held: Vec<u8>,
    held_ns: (u64, u64),
}

impl Side {
    /// A side that starts at the beginning of a stream.
    pub fn fresh(dir: Direction, max_head_bytes: usize) -> Self {
        Side {
            dir,
            state: State::Idle,
            body_bytes: 0,
            last_ns: 0,
            seen_message: false,
            max_head_bytes,
            held: Vec::new(),
            held_ns: (0, 0),
        }
    }

    /// A side that joins a stream in the middle (a connection older than netsonde).
    pub fn midstream(dir: Direction, max_head_bytes: usize) -> Self {
        Side {
            state: State::Resync,
            seen_message: true,
            ..Side::fresh(dir, max_head_bytes)
        }
    }

    /// Whether the side stopped inside a message: a head begun and not finished, or a body
    /// still owed by its framing.
    pub fn mid_message(&self) -> bool {
        match &self.state {
            State::Head { buf, .. } => !buf.is_empty(),
            State::Body { .. } | State::Chunked(_) => true,
            _ => false,
        }
    }

    /// Whether the side knows where it is in its stream: every byte it got was parsed into
    /// messages (not skipped while it looked for a message start after a gap).
    pub fn in_place(&self) -> bool {
        !matches!(self.state, State::Resync | State::Unframed | State::Dead)
    }

    /// Body bytes of the message in progress so far.
    pub fn body_so_far(&self) -> (u64, u64) {
        (self.body_bytes, self.last_ns)
    }

    /// Stops parsing this side for good.
    pub fn kill(&mut self) {
        self.state = State::Dead;
    }

    /// Forgets the current position (the stream restarted from an unknown point): a body in
    /// progress becomes unframed, and a message being started counts as hidden.
    pub fn resync(&mut self, sink: &mut impl Sink) {
        // What the gap follows cannot begin a message after it.
        self.release_held();
        match self.state {
            State::Body { .. } | State::Chunked(_) | State::UntilClose => {
                sink.unframed(self.dir);
                self.state = State::Unframed;
            }
            State::Head { .. } => {
                sink.hidden_message(self.dir);
                self.state = State::Resync;
            }
            State::Idle => self.state = State::Resync,
            State::Resync | State::Unframed | State::Dead => {}
        }
    }

    /// Feeds one segment. When the connection switched protocols in it, returns where in the
    /// segment the other protocol's bytes begin.
    pub fn feed(&mut self, seg: &Segment<'_>, sink: &mut impl Sink) -> Option<u64> {
        let captured = seg.data.len() as u64;
        let mut pos: u64 = 0;
        while pos < seg.len {
            if sink.switched() {
                self.state = State::Dead;
                return Some(pos);
            }
            match &mut self.state {
                State::Dead => return None,
                State::Resync => match self.find_start(seg, pos) {
                    Start::Alone => {
                        self.release_held();
                        self.state = State::Idle;
                    }
                    Start::Joined => self.state = self.held_head(),
                    Start::None => {
                        self.hold(seg, pos);
                        return None;
                    }
                },
                State::Unframed => match self.find_start(seg, pos) {
                    Start::Alone => {
                        self.release_held();
                        self.finish(sink, End::Lost);
                    }
                    Start::Joined => {
                        let head = self.held_head();
                        self.finish(sink, End::Lost);
                        self.state = head;
                    }
                    Start::None => {
                        self.release_held();
                        if !self.hold(seg, pos) {
                            self.body_bytes += seg.len - pos;
                            self.last_ns = seg.last_ns;
                        }
                        return None;
                    }
                },
                State::Idle => {
                    if pos >= captured {
                        // A message started where we could not see it.
                        sink.hidden_message(self.dir);
                        self.state = State::Resync;
                        return None;
                    }
                    // Stray CRLFs between messages are allowed (RFC 9112 §2.2).
                    let rest = &seg.data[pos as usize..];
                    let skip = rest
                        .iter()
                        .take_while(|&&b| b == b'\r' || b == b'\n')
                        .count();
                    pos += skip as u64;
                    if pos < captured {
                        self.state = State::Head {
                            buf: Vec::new(),
                            first_ns: seg.first_ns,
                        };
                    }
                }
                State::Head { buf, first_ns } => {
                    if pos >= captured {
                        // The rest of this syscall was not copied, and the head goes on in it.
                        sink.head_cut(self.dir);
                        sink.hidden_message(self.dir);
                        self.state = State::Resync;
                        return None;
                    }
                    let available = &seg.data[pos as usize..captured as usize];
                    let before = buf.len();
                    // Parse in place when nothing is buffered (a whole head in one syscall, the
                    // common case); only a head split across segments is copied.
                    let parsed = if before == 0 {
                        head::parse(&available[..available.len().min(self.max_head_bytes)])
                    } else {
                        let take = available
                            .len()
                            .min(self.max_head_bytes.saturating_sub(before));
                        buf.extend_from_slice(&available[..take]);
                        head::parse(buf)
                    };
                    match parsed {
                        Parsed::Complete { head, body, len } => {
                            let first_ns = *first_ns;
                            pos += (len - before) as u64;
                            self.seen_message = true;
                            self.body_bytes = 0;
                            self.last_ns = seg.last_ns;
                            let framing = sink.head(self.dir, head, body, len as u64, first_ns);
                            self.start_body(framing, sink);
                        }
                        Parsed::Partial { .. }
                            if before.max(available.len()) >= self.max_head_bytes
                                || buf.len() >= self.max_head_bytes =>
                        {
                            // A head larger than allowed: count it as malformed and hidden.
                            sink.malformed(self.dir, false);
                            sink.hidden_message(self.dir);
                            self.state = State::Resync;
                            return None;
                        }
                        Parsed::Partial { .. } => {
                            if before == 0 {
                                buf.extend_from_slice(available);
                            }
                            pos = captured;
                        }
                        Parsed::Invalid(_) => {
                            let fatal = !self.seen_message;
                            sink.malformed(self.dir, fatal);
                            if fatal {
                                self.state = State::Dead;
                            } else {
                                sink.hidden_message(self.dir);
                                self.state = State::Resync;
                            }
                            return None;
                        }
                    }
                }
                State::Body { remaining } => {
                    let n = (*remaining).min(seg.len - pos);
                    *remaining -= n;
                    pos += n;
                    self.body_bytes += n;
                    self.last_ns = seg.last_ns;
                    if *remaining == 0 {
                        self.finish(sink, End::Framed);
                    }
                }
                State::UntilClose => {
                    self.body_bytes += seg.len - pos;
                    self.last_ns = seg.last_ns;
                    return None;
                }
                State::Chunked(chunk) => {
                    let step = step_chunked(chunk, seg, pos, captured);
                    self.body_bytes += step.consumed;
                    self.last_ns = seg.last_ns;
                    pos += step.consumed;
                    match step.outcome {
                        ChunkOutcome::Continue => {}
                        ChunkOutcome::Finished => self.finish(sink, End::Framed),
                        ChunkOutcome::Lost | ChunkOutcome::Malformed => {
                            if matches!(step.outcome, ChunkOutcome::Malformed) {
                                sink.malformed(self.dir, false);
                            }
                            sink.unframed(self.dir);
                            self.state = State::Unframed;
                        }
                    }
                }
            }
        }
        if sink.switched() {
            self.state = State::Dead;
            return Some(pos.min(seg.len));
        }
        None
    }

    /// The connection closed.
    pub fn close(&mut self, sink: &mut impl Sink) {
        self.release_held();
        match self.state {
            State::UntilClose => self.finish(sink, End::Closed),
            State::Body { .. } | State::Chunked(_) => self.finish(sink, End::Cut),
            State::Unframed => self.finish(sink, End::Lost),
            _ => {}
        }
        self.state = State::Dead;
    }

    /// Where the segment, read from `pos`, starts a message while the side has lost its place:
    /// only at a segment's start, alone or after the held segment.
    fn find_start(&self, seg: &Segment<'_>, pos: u64) -> Start {
        if pos != 0 {
            return Start::None;
        }
        start::find(&self.held, seg.data)
    }

    /// Holds the segment if it may begin a message (whole, from its start, and short); whether
    /// it did. Whatever was held before is gone.
    fn hold(&mut self, seg: &Segment<'_>, pos: u64) -> bool {
        self.held.clear();
        let whole = pos == 0 && seg.len == seg.data.len() as u64;
        if whole && start::may_begin(seg.data) {
            self.held.extend_from_slice(seg.data);
            self.held_ns = (seg.first_ns, seg.last_ns);
            return true;
        }
        false
    }

    /// The held segment turned out not to begin a message: in an unframed body it was body.
    fn release_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        if self.state == State::Unframed {
            self.body_bytes += self.held.len() as u64;
            self.last_ns = self.held_ns.1;
        }
        self.held.clear();
    }

    /// A head that begins with the held segment.
    fn held_head(&mut self) -> State {
        State::Head {
            buf: std::mem::take(&mut self.held),
            first_ns: self.held_ns.0,
        }
    }

    fn start_body(&mut self, framing: Framing, sink: &mut impl Sink) {
        match framing {
            Framing::None | Framing::Length(0) => self.finish(sink, End::Framed),
            Framing::Length(n) => self.state = State::Body { remaining: n },
            Framing::Chunked => self.state = State::Chunked(Chunk::Size(Vec::new())),
            Framing::UntilClose => self.state = State::UntilClose,
        }
    }

    fn finish(&mut self, sink: &mut impl Sink, end: End) {
        sink.done(self.dir, self.body_bytes, self.last_ns, end);
        self.body_bytes = 0;
        if !matches!(self.state, State::Dead) {
            self.state = State::Idle;
        }
    }
}

enum ChunkOutcome {
    Continue,
    Finished,
    Lost,
    Malformed,
}

struct ChunkStep {
    consumed: u64,
    outcome: ChunkOutcome,
}

/// Advances the chunked decoder by one step from `pos`.
fn step_chunked(chunk: &mut Chunk, seg: &Segment<'_>, pos: u64, captured: u64) -> ChunkStep {
    let lost = ChunkStep {
        consumed: 0,
        outcome: ChunkOutcome::Lost,
    };
    match chunk {
        Chunk::Data(remaining) => {
            let n = (*remaining).min(seg.len - pos);
            *remaining -= n;
            if *remaining == 0 {
                *chunk = Chunk::DataEnd;
            }
            ChunkStep {
                consumed: n,
                outcome: ChunkOutcome::Continue,
            }
        }
        Chunk::DataEnd => {
            if pos >= captured {
                return lost;
            }
            let b = seg.data[pos as usize];
            match b {
                b'\r' => ChunkStep {
                    consumed: 1,
                    outcome: ChunkOutcome::Continue,
                },
                b'\n' => {
                    *chunk = Chunk::Size(Vec::new());
                    ChunkStep {
                        consumed: 1,
                        outcome: ChunkOutcome::Continue,
                    }
                }
                _ => ChunkStep {
                    consumed: 0,
                    outcome: ChunkOutcome::Malformed,
                },
            }
        }
        Chunk::Size(line) | Chunk::Trailer(line) => {
            if pos >= captured {
                return lost;
            }
            let rest = &seg.data[pos as usize..];
            let Some(newline) = rest.iter().position(|&b| b == b'\n') else {
                if line.len() + rest.len() > MAX_LINE {
                    return ChunkStep {
                        consumed: 0,
                        outcome: ChunkOutcome::Malformed,
                    };
                }
                line.extend_from_slice(rest);
                return ChunkStep {
                    consumed: rest.len() as u64,
                    outcome: ChunkOutcome::Continue,
                };
            };
            line.extend_from_slice(&rest[..=newline]);
            let consumed = newline as u64 + 1;
            let outcome = if matches!(chunk, Chunk::Size(_)) {
                let Chunk::Size(line) = chunk else {
                    unreachable!()
                };
                match httparse::parse_chunk_size(line) {
                    Ok(httparse::Status::Complete((_, 0))) => {
                        *chunk = Chunk::Trailer(Vec::new());
                        ChunkOutcome::Continue
                    }
                    Ok(httparse::Status::Complete((_, size))) => {
                        *chunk = Chunk::Data(size);
                        ChunkOutcome::Continue
                    }
                    _ => ChunkOutcome::Malformed,
                }
            } else {
                let Chunk::Trailer(line) = chunk else {
                    unreachable!()
                };
                let empty = line.iter().all(|&b| b == b'\r' || b == b'\n');
                line.clear();
                if empty {
                    ChunkOutcome::Finished
                } else {
                    ChunkOutcome::Continue
                }
            };
            ChunkStep { consumed, outcome }
        }
    }
}
