//! One HTTP/2 connection: both directions' frames, one HPACK decoder each, and streams turned
//! into exchanges (a request's HEADERS, DATA and END_STREAM, then the response's).
//!
//! Memory is bounded: only header-carrying frames are buffered (up to a limit), DATA is counted
//! and skipped, and at most `max_streams` streams are open.
//!
//! Nothing makes a connection undecodable for good. Lost bytes outside a DATA payload, a
//! malformed frame or a restarted stream make that direction *lose its place*: it waits for a
//! frame boundary it can prove (the kernel's walk of the frames, or a chain of plausible frames)
//! and decodes on from there with a partial HPACK decoder, since header blocks may have gone by
//! unseen. An undecodable header block only costs the compression table. Streams in flight when
//! bytes went missing are reported as [`Completeness::BytesLost`], unless the half the bytes
//! would belong to had not begun (its head is the first of it seen); a stream whose head went
//! missing is left out. All of it is counted.

use std::collections::VecDeque;

use foldhash::HashMap;

use super::{
    frame::{self, FrameHeader, PREFACE, flags, kind},
    hpack::{HeaderDecoder, HpackLimits},
    stream::{Half, Stream, exchange},
};
use crate::protocols::{Completeness, Direction, Exchange, Role, Segment, http1::H2cUpgrade};

mod ending;
mod heads;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub hpack: HpackLimits,
    /// Streams open at once; further new streams are not followed (counted).
    pub max_streams: usize,
    /// Largest header block (HEADERS + CONTINUATION) or control frame buffered.
    pub max_block: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            hpack: HpackLimits::default(),
            max_streams: 1024,
            max_block: 256 * 1024,
        }
    }
}

/// What the parser noticed besides exchanges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notes {
    /// Streams reset (RST_STREAM) before their response ended.
    pub resets: u64,
    /// Requests whose response never came (reset before any response, GOAWAY, close).
    pub unanswered_requests: u64,
    /// New streams not followed because `max_streams` were open.
    pub streams_refused: u64,
    /// Times a direction stopped decoding exactly: it lost its place in the frames, or its
    /// header compression table.
    pub broken: u64,
    /// Times a direction that lost its place found a frame boundary again (a lost table is
    /// taken up again at once, with a partial decoder).
    pub resyncs: u64,
    /// Streams left out because their start (a request or response head) went missing: lost
    /// with bytes, undecodable, or from before netsonde joined the connection.
    pub lost_streams: u64,
    /// Header fields a joined connection could not decode (behind HPACK table entries set
    /// before netsonde joined).
    pub unknown_fields: u64,
    /// Segments of a joined connection skipped while looking for a frame boundary.
    pub unaligned_segments: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Active,
    /// The first bytes were not HTTP/2.
    NotHttp2,
}

/// A header block being assembled from HEADERS and CONTINUATION.
#[derive(Debug)]
struct Block {
    stream: u32,
    bytes: Vec<u8>,
    end_stream: bool,
    at_ns: u64,
    /// Over the size limit: its fragments are skipped, and the table is lost with it.
    discard: bool,
}

struct Side {
    /// Whether this direction's first byte was seen.
    started: bool,
    /// At a frame boundary (false while a joined connection, or one that lost its place,
    /// looks for one).
    aligned: bool,
    /// Lost its place and not yet found it again.
    lost: bool,
    /// Never out of place: seen from its first byte and never lost. Only then does the lack of
    /// a response head at close mean that none was sent.
    gapless: bool,
    /// Bytes of the client preface still expected.
    preface_left: usize,
    /// The frame being assembled: its 9-byte header, then (for kept frames) its payload.
    buf: Vec<u8>,
    /// Payload bytes still to skip, of which `body_left` are DATA body of `data_stream`.
    skip: u64,
    body_left: u64,
    /// The DATA frame being skipped: its stream and whether it ends it.
    data_stream: Option<(u32, bool)>,
    /// A padded DATA frame whose pad-length byte is next.
    await_pad: bool,
    block: Option<Block>,
    decoder: HeaderDecoder,
}

/// Stream ids not followed because too many were open, remembered (boundedly) so their
/// responses are not taken for streams whose start was lost.
const REFUSED_REMEMBERED: usize = 1024;

pub struct Http2 {
    sides: [Side; 2],
    streams: HashMap<u32, Stream>,
    refused: VecDeque<u32>,
    /// The direction requests travel in: the one that sent the preface.
    client_dir: Option<Direction>,
    limits: Limits,
    notes: Notes,
    status: Status,
}

impl Http2 {
    /// For a connection seen from its first byte.
    pub fn new(limits: Limits) -> Self {
        let side = || Side {
            started: false,
            aligned: true,
            lost: false,
            gapless: true,
            preface_left: 0,
            buf: Vec::new(),
            skip: 0,
            body_left: 0,
            data_stream: None,
            await_pad: false,
            block: None,
            decoder: HeaderDecoder::new(limits.hpack),
        };
        Http2 {
            sides: [side(), side()],
            streams: HashMap::default(),
            refused: VecDeque::new(),
            client_dir: None,
            limits,
            notes: Notes::default(),
            status: Status::Active,
        }
    }

    /// For a connection joined mid-stream (older than netsonde): no preface, each direction
    /// waits for a segment that starts at a frame boundary, and header blocks decode as far as
    /// the static table, literals and entries inserted since joining allow (`partial`).
    /// `client_dir` is the direction requests travel in, when the TCP role tells.
    pub fn midstream(limits: Limits, client_dir: Option<Direction>) -> Self {
        let mut h2 = Http2::new(limits);
        for side in &mut h2.sides {
            side.started = true;
            side.aligned = false;
            side.gapless = false;
            side.decoder = HeaderDecoder::new(limits.hpack);
        }
        h2.client_dir = client_dir;
        h2
    }

    /// For a connection an HTTP/1.1 `Upgrade: h2c` switched: the upgraded request is stream 1,
    /// already sent; the client's preface and the server's frames come next.
    pub fn upgraded(limits: Limits, upgrade: &H2cUpgrade) -> Self {
        let mut h2 = Http2::new(limits);
        h2.client_dir = Some(upgrade.request_dir);
        let r = &upgrade.request;
        let mut head = vec![
            (":method".to_string(), r.method.to_string()),
            (":path".to_string(), r.target.clone()),
        ];
        for (name, value) in &r.headers {
            let name = if name == "host" { ":authority" } else { name };
            head.push((name.to_string(), value.clone()));
        }
        let request = Half {
            head: Some(head),
            start_ns: upgrade.start_ns,
            end_ns: upgrade.end_ns,
            body: upgrade.body_bytes,
            ended: true,
            ..Half::default()
        };
        h2.streams.insert(
            1,
            Stream {
                request,
                ..Stream::default()
            },
        );
        h2
    }

    /// Whether `bytes`, the first a direction sent, begin the HTTP/2 client preface.
    pub fn starts_with_preface(bytes: &[u8]) -> bool {
        let n = bytes.len().min(PREFACE.len());
        n > 0 && bytes[..n] == PREFACE[..n]
    }

    /// Whether `bytes`, the first a direction sent, are a server's connection preface: a
    /// SETTINGS frame (not an ACK) on stream 0 whose length is a whole number of settings. A
    /// server may send it before it reads the client's preface (nginx does). No HTTP/1 message
    /// can start this way: its first byte is a printable character, this one is 0.
    pub fn starts_with_server_preface(bytes: &[u8]) -> bool {
        const SETTINGS: u8 = 4;
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3, ..] = *bytes else {
            return false;
        };
        let len = u32::from_be_bytes([0, l0, l1, l2]);
        let stream = u32::from_be_bytes([s0, s1, s2, s3]) & 0x7fff_ffff;
        kind == SETTINGS && flags == 0 && stream == 0 && len.is_multiple_of(6) && len <= 16384
    }

    /// The ids of the streams being followed, in order (for tests).
    #[cfg(test)]
    pub(super) fn open_streams(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    /// The traced process's role, once the preface said which side is the client.
    pub fn role(&self) -> Option<Role> {
        self.client_dir.map(|d| match d {
            Direction::Egress => Role::Client,
            Direction::Ingress => Role::Server,
        })
    }

    pub fn take_notes(&mut self) -> Notes {
        std::mem::take(&mut self.notes)
    }

    /// Bytes of `dir` went missing where frame boundaries were, or the frames stopped making
    /// sense: the direction waits for a boundary it can prove, and its compression table is
    /// lost with whatever header blocks went by. Streams open in that direction may have lost
    /// bytes; a header block in progress is lost.
    fn lose_place(&mut self, dir: Direction, why: impl std::fmt::Display) {
        let side = &mut self.sides[dir.index()];
        if !side.aligned {
            return;
        }
        tracing::debug!("an HTTP/2 connection lost its place in its {dir:?} frames: {why}");
        side.aligned = false;
        side.lost = true;
        side.gapless = false;
        side.buf.clear();
        side.skip = 0;
        side.body_left = 0;
        side.data_stream = None;
        side.await_pad = false;
        side.preface_left = 0;
        let block = side.block.take();
        self.lose_table(dir);
        if let Some(block) = block {
            self.head_lost(dir, block.stream);
        }
        let requests = Some(dir) == self.client_dir;
        for stream in self.streams.values_mut() {
            let half = if requests {
                &mut stream.request
            } else {
                &mut stream.response
            };
            if half.open() {
                half.gap = true;
            }
        }
    }

    /// The compression table of `dir` is no longer known: header blocks from now on decode as
    /// far as the entries they insert allow (`partial`).
    fn lose_table(&mut self, dir: Direction) {
        self.notes.broken += 1;
        self.sides[dir.index()].decoder = HeaderDecoder::new(self.limits.hpack);
        if self.sides[dir.index()].aligned {
            // Nothing to look for: decoding goes on at once.
            self.notes.resyncs += 1;
        }
    }

    /// The head `dir` was sending on `stream` went missing: the stream cannot be reported.
    fn head_lost(&mut self, dir: Direction, stream: u32) {
        if let Some(half) = self.half(dir, stream)
            && half.head.is_none()
        {
            half.head_lost = true;
        }
    }

    /// `dir` is at a frame boundary again.
    fn found_place(&mut self, dir: Direction) {
        let side = &mut self.sides[dir.index()];
        side.aligned = true;
        side.started = true;
        if side.lost {
            side.lost = false;
            self.notes.resyncs += 1;
        }
    }

    /// Whether `dir` is between two frames (not inside a header, a payload or the preface).
    fn between_frames(&self, dir: Direction) -> bool {
        let side = &self.sides[dir.index()];
        side.aligned
            && side.buf.is_empty()
            && side.skip == 0
            && !side.await_pad
            && side.preface_left == 0
    }

    /// Bytes went missing where their position is not known (the stream's numbering
    /// restarted): `dir` loses its place.
    pub fn desync(&mut self, dir: Direction) {
        self.lose_place(dir, "the byte stream lost its place");
    }

    /// Feeds one segment of one direction; finished exchanges go to `out`.
    pub fn feed(&mut self, dir: Direction, seg: &Segment<'_>, out: &mut Vec<Exchange>) {
        if self.status != Status::Active {
            return;
        }
        let data = seg.data;
        // Where the kernel's walk says a frame starts, if it does within the captured bytes.
        let mut boundary = seg
            .boundary
            .filter(|&b| b <= data.len() as u64)
            .map(|b| b as usize);
        let mut at = 0;
        loop {
            if !self.sides[dir.index()].aligned {
                match boundary.take() {
                    Some(b) if b >= at => at = b,
                    _ if at == 0 && frame::chains(data, seg.len) => {}
                    _ => {
                        if at == 0 {
                            self.notes.unaligned_segments += 1;
                        }
                        return;
                    }
                }
                self.found_place(dir);
            }
            // Up to the kernel's boundary, where this parser must be between two frames too.
            let until = match boundary {
                Some(b) if b >= at => b,
                _ => data.len(),
            };
            while at < until && self.status == Status::Active && self.sides[dir.index()].aligned {
                at += self.step(dir, &data[at..until], seg, out);
            }
            if self.status != Status::Active {
                return;
            }
            if !self.sides[dir.index()].aligned {
                // Lost on the way: the kernel's boundary, if ahead, is where to pick up.
                continue;
            }
            if boundary.take().is_some() {
                if !self.between_frames(dir) {
                    // The kernel's walk is right (bytes went missing that no position showed):
                    // frames start here.
                    self.lose_place(dir, "its frames and the kernel's walk of them disagree");
                    self.found_place(dir);
                }
                continue;
            }
            break;
        }
        let lost = seg.len.saturating_sub(data.len() as u64);
        if lost > 0 {
            let side = &mut self.sides[dir.index()];
            if side.await_pad || side.skip < lost {
                self.lose_place(dir, format!("{lost} bytes lost outside a DATA payload"));
                return;
            }
            self.skip_bytes(dir, lost, None, seg.last_ns, out);
        }
    }

    /// Consumes bytes from the front of `data`; returns how many.
    fn step(
        &mut self,
        dir: Direction,
        data: &[u8],
        seg: &Segment<'_>,
        out: &mut Vec<Exchange>,
    ) -> usize {
        let side = &mut self.sides[dir.index()];
        if !side.started {
            side.started = true;
            if data[0] == PREFACE[0] {
                side.preface_left = PREFACE.len();
                self.client_dir.get_or_insert(dir);
            }
        }
        if side.preface_left > 0 {
            let at = PREFACE.len() - side.preface_left;
            let n = side.preface_left.min(data.len());
            if data[..n] != PREFACE[at..at + n] {
                self.status = Status::NotHttp2;
                return data.len();
            }
            side.preface_left -= n;
            return n;
        }
        if side.await_pad {
            side.await_pad = false;
            let pad = u64::from(data[0]);
            side.skip -= 1;
            if pad > side.skip {
                self.lose_place(dir, "DATA padding longer than its frame");
                return 1;
            }
            side.body_left = side.skip - pad;
            if side.skip == 0 {
                self.end_data(dir, seg.last_ns, out);
            }
            return 1;
        }
        if side.skip > 0 {
            let n = side.skip.min(data.len() as u64);
            self.skip_bytes(dir, n, Some(&data[..n as usize]), seg.last_ns, out);
            return n as usize;
        }
        // A frame header, then a kept frame's payload, accumulate in `buf`.
        let side = &mut self.sides[dir.index()];
        if side.buf.len() < frame::HEADER_LEN {
            let n = (frame::HEADER_LEN - side.buf.len()).min(data.len());
            side.buf.extend_from_slice(&data[..n]);
            if side.buf.len() == frame::HEADER_LEN {
                let header = FrameHeader::parse(&side.buf).expect("nine bytes");
                self.start_frame(dir, header, seg, out);
            }
            return n;
        }
        let header = FrameHeader::parse(&side.buf).expect("nine bytes");
        let want = frame::HEADER_LEN + header.len as usize - side.buf.len();
        let n = want.min(data.len());
        side.buf.extend_from_slice(&data[..n]);
        if n == want {
            self.finish_kept(dir, header, seg, out);
        }
        n
    }

    /// Skips `n` payload bytes (`data`, when they were captured), counting those that are
    /// DATA body, and the gRPC messages in them.
    fn skip_bytes(
        &mut self,
        dir: Direction,
        n: u64,
        data: Option<&[u8]>,
        at_ns: u64,
        out: &mut Vec<Exchange>,
    ) {
        let side = &mut self.sides[dir.index()];
        side.skip -= n;
        let body = n.min(side.body_left);
        side.body_left -= body;
        if let Some((stream, _)) = side.data_stream
            && body > 0
            && let Some(half) = self.half(dir, stream)
        {
            half.body += body;
            // The body comes first in a DATA frame, any padding after it.
            match data {
                Some(bytes) => half.messages.feed(&bytes[..body as usize]),
                None => half.messages.skip(body),
            }
        }
        if self.sides[dir.index()].skip == 0 {
            self.end_data(dir, at_ns, out);
        }
    }

    fn start_frame(
        &mut self,
        dir: Direction,
        header: FrameHeader,
        seg: &Segment<'_>,
        out: &mut Vec<Exchange>,
    ) {
        // Unknown (extension) frame types are skipped by length, as receivers must.
        if header.kind <= kind::CONTINUATION && !header.plausible() {
            self.lose_place(dir, format!("malformed frame header {header:?}"));
            return;
        }
        let side = &mut self.sides[dir.index()];
        // A header block continues with CONTINUATION frames of its stream, nothing else.
        let continuing = side.block.as_ref().map(|b| b.stream);
        if (header.kind == kind::CONTINUATION) != continuing.is_some()
            || continuing.is_some_and(|s| s != header.stream)
        {
            self.lose_place(dir, "header block interrupted or CONTINUATION out of place");
            return;
        }
        match header.kind {
            kind::HEADERS
            | kind::CONTINUATION
            | kind::SETTINGS
            | kind::RST_STREAM
            | kind::GOAWAY
            | kind::PUSH_PROMISE => {
                if header.len as usize > self.limits.max_block {
                    self.skip_oversized(dir, header);
                } else if header.len == 0 {
                    self.finish_kept(dir, header, seg, out);
                }
                // Otherwise the payload accumulates behind the header in `buf`.
            }
            _ => {
                side.buf.clear();
                side.skip = u64::from(header.len);
                if header.kind == kind::DATA {
                    side.data_stream = Some((header.stream, header.has(flags::END_STREAM)));
                    side.await_pad = header.has(flags::PADDED);
                    side.body_left = if side.await_pad { 0 } else { side.skip };
                    if header.has(flags::PADDED) && header.len == 0 {
                        self.lose_place(dir, "padded DATA frame without a pad length");
                        return;
                    }
                } else {
                    side.data_stream = None;
                    side.body_left = 0;
                }
                if self.sides[dir.index()].skip == 0 {
                    self.end_data(dir, seg.last_ns, out);
                }
            }
        }
    }

    /// A frame too large to keep is skipped by length: the frame boundaries stay known, but a
    /// header block in it (and the table entries it inserts) is lost.
    fn skip_oversized(&mut self, dir: Direction, header: FrameHeader) {
        tracing::debug!(
            "an HTTP/2 {}-byte frame over the limit is skipped",
            header.len
        );
        let side = &mut self.sides[dir.index()];
        side.buf.clear();
        side.skip = u64::from(header.len);
        side.data_stream = None;
        side.body_left = 0;
        if matches!(
            header.kind,
            kind::HEADERS | kind::CONTINUATION | kind::PUSH_PROMISE
        ) {
            let discarding = side.block.as_ref().is_some_and(|b| b.discard);
            side.block = (!header.has(flags::END_HEADERS)).then(|| Block {
                stream: header.stream,
                bytes: Vec::new(),
                end_stream: false,
                at_ns: 0,
                discard: true,
            });
            if !discarding {
                self.lose_table(dir);
                if header.kind != kind::PUSH_PROMISE {
                    self.head_lost(dir, header.stream);
                }
            }
        }
    }

    /// A skipped frame's last byte went by: a DATA frame may end its stream.
    fn end_data(&mut self, dir: Direction, at_ns: u64, out: &mut Vec<Exchange>) {
        let side = &mut self.sides[dir.index()];
        if let Some((stream, end)) = side.data_stream.take() {
            if let Some(h) = self.half(dir, stream) {
                h.end_ns = at_ns;
                if end {
                    h.ended = true;
                }
            }
            if end {
                self.settle(stream, out);
            }
        }
    }

    /// The request half (in the client's direction) or the response half of a stream.
    fn half(&mut self, dir: Direction, stream: u32) -> Option<&mut Half> {
        let requests = Some(dir) == self.client_dir;
        self.streams.get_mut(&stream).map(|s| {
            if requests {
                &mut s.request
            } else {
                &mut s.response
            }
        })
    }

    fn finish_kept(
        &mut self,
        dir: Direction,
        header: FrameHeader,
        seg: &Segment<'_>,
        out: &mut Vec<Exchange>,
    ) {
        let buf = std::mem::take(&mut self.sides[dir.index()].buf);
        let payload = &buf[frame::HEADER_LEN.min(buf.len())..];
        self.on_frame(dir, header, payload, seg, out);
        let side = &mut self.sides[dir.index()];
        if side.buf.is_empty() {
            side.buf = buf;
            side.buf.clear();
        }
    }

    fn on_frame(
        &mut self,
        dir: Direction,
        header: FrameHeader,
        payload: &[u8],
        seg: &Segment<'_>,
        out: &mut Vec<Exchange>,
    ) {
        match header.kind {
            kind::HEADERS | kind::PUSH_PROMISE => {
                let fragment = match frame::header_block(&header, payload) {
                    Ok(f) => f,
                    Err(e) => {
                        // Framed, so still aligned; but its header block is lost.
                        tracing::debug!("an HTTP/2 HEADERS frame is malformed: {e}");
                        self.lose_table(dir);
                        if header.kind == kind::HEADERS {
                            self.head_lost(dir, header.stream);
                        }
                        if !header.has(flags::END_HEADERS) {
                            self.sides[dir.index()].block = Some(Block {
                                stream: header.stream,
                                bytes: Vec::new(),
                                end_stream: false,
                                at_ns: 0,
                                discard: true,
                            });
                        }
                        return;
                    }
                };
                let block = Block {
                    stream: header.stream,
                    bytes: fragment.to_vec(),
                    end_stream: header.kind == kind::HEADERS && header.has(flags::END_STREAM),
                    at_ns: seg.first_ns,
                    discard: false,
                };
                if header.has(flags::END_HEADERS) {
                    self.on_block(dir, header.kind, block, out);
                } else {
                    self.sides[dir.index()].block = Some(block);
                }
            }
            kind::CONTINUATION => {
                let side = &mut self.sides[dir.index()];
                let Some(block) = side.block.as_mut() else {
                    return self.lose_place(dir, "CONTINUATION without HEADERS");
                };
                if !block.discard && block.bytes.len() + payload.len() > self.limits.max_block {
                    // A CONTINUATION flood: the block is skipped, its stream and table lost.
                    block.discard = true;
                    block.bytes = Vec::new();
                    let stream = block.stream;
                    self.lose_table(dir);
                    self.head_lost(dir, stream);
                }
                let side = &mut self.sides[dir.index()];
                let block = side.block.as_mut().expect("checked");
                if !block.discard {
                    block.bytes.extend_from_slice(payload);
                }
                if header.has(flags::END_HEADERS) {
                    let block = side.block.take().expect("checked");
                    if !block.discard {
                        self.on_block(dir, kind::HEADERS, block, out);
                    }
                }
            }
            kind::RST_STREAM => {
                if self
                    .streams
                    .get(&header.stream)
                    .is_some_and(|s| s.response.ended)
                {
                    // Held for its request's end: answered whole, and the reset (by a client
                    // that stops sending, or a server that asks it to) ends the request.
                    self.report_answered_whole(header.stream, Completeness::Complete, out);
                } else if let Some(stream) = self.streams.remove(&header.stream) {
                    self.notes.resets += 1;
                    match stream.response.head {
                        Some(_) => out.push(exchange(stream, Completeness::BodyCut)),
                        None if stream.request.head.is_some() => {
                            self.notes.unanswered_requests += 1;
                        }
                        None => {}
                    }
                }
            }
            kind::GOAWAY => {
                // Streams above the last one the server processed will not be answered. A
                // client's GOAWAY names the last stream the server started (push), never the
                // client's own: it leaves the requests alone.
                let from_server = self.client_dir.is_some_and(|c| c != dir);
                if let Some(last) = frame::goaway_last_stream(payload).filter(|_| from_server) {
                    let before = self.streams.len();
                    self.streams.retain(|&id, _| id <= last);
                    self.notes.unanswered_requests += (before - self.streams.len()) as u64;
                }
            }
            _ => {}
        }
    }
}
