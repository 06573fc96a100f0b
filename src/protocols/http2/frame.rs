//! HTTP/2 framing (RFC 9113 §4, §6): the connection preface, the 9-byte frame header, and the
//! payload layouts netsonde reads (padding and priority around header blocks, GOAWAY).
//!
//! Owned, not borrowed from a crate: no maintained crate parses frames without also owning the
//! connection (h2 keeps its framing private, loona-h2 is tied to its io_uring buffers), and the
//! layout is a few dozen lines (see ../shared/reference/crates.md).

/// What a client sends first on every HTTP/2 connection.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADER_LEN: usize = 9;

/// Frame types netsonde acts on (others are skipped by length): the kernel's walk knows them
/// by the same names.
pub mod kind {
    pub use netsonde_common::h2_frame::{
        CONTINUATION, DATA, GOAWAY, HEADERS, PING, PRIORITY, PUSH_PROMISE, RST_STREAM, SETTINGS,
        WINDOW_UPDATE,
    };
}

pub mod flags {
    pub const END_STREAM: u8 = 0x1;
    /// On SETTINGS and PING.
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    /// The reserved bit of the stream word (senders must clear it; receivers ignore it).
    pub reserved: bool,
}

impl FrameHeader {
    /// Parses the first 9 bytes of `bytes`; `None` if there are fewer.
    pub fn parse(bytes: &[u8]) -> Option<FrameHeader> {
        let h: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
        Some(FrameHeader {
            len: u32::from_be_bytes([0, h[0], h[1], h[2]]),
            kind: h[3],
            flags: h[4],
            // The top bit is reserved and ignored on receipt.
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
            reserved: h[5] & 0x80 != 0,
        })
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Whether this header could start a frame of a conforming peer: a known type's stream
    /// rules and fixed lengths hold, within the largest frame size HTTP/2 allows, and the
    /// reserved bit is clear. Used to find frame boundaries again after lost bytes: the kernel's
    /// walk applies the same rule (`netsonde_common::h2_frame::plausible`).
    pub fn plausible(&self) -> bool {
        let word = self.stream | if self.reserved { 0x8000_0000 } else { 0 };
        netsonde_common::h2_frame::plausible(self.len, self.kind, word)
    }
}

/// Whether a segment (`data` captured of `len` bytes) starts at a frame boundary: its frame
/// headers, as far as they were captured, are plausible and chain into each other, and either
/// end exactly with the segment or number at least two. How a connection joined mid-stream is
/// recognised as HTTP/2, and finds its place.
pub fn chains(data: &[u8], len: u64) -> bool {
    let mut pos: u64 = 0;
    let mut frames = 0;
    while let Some(header) = data
        .get(pos as usize..)
        .and_then(FrameHeader::parse)
        .filter(|_| pos < len)
    {
        if !header.plausible() {
            return false;
        }
        pos += HEADER_LEN as u64 + u64::from(header.len);
        frames += 1;
    }
    frames > 0 && (pos == len || (frames >= 2 && pos >= data.len() as u64))
}

/// Why a frame's payload is not what its header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("padding longer than the frame")]
    Padding,
    #[error("frame too short for its fields")]
    Short,
}

/// The header-block fragment of a HEADERS or PUSH_PROMISE payload: padding and the priority
/// fields (or the promised stream id) removed.
pub fn header_block<'a>(header: &FrameHeader, payload: &'a [u8]) -> Result<&'a [u8], FrameError> {
    let mut body = unpad(header, payload)?;
    let skip = match header.kind {
        kind::HEADERS if header.has(flags::PRIORITY) => 5,
        kind::PUSH_PROMISE => 4,
        _ => 0,
    };
    if body.len() < skip {
        return Err(FrameError::Short);
    }
    body = &body[skip..];
    Ok(body)
}

fn unpad<'a>(header: &FrameHeader, payload: &'a [u8]) -> Result<&'a [u8], FrameError> {
    if !header.has(flags::PADDED) {
        return Ok(payload);
    }
    let (&pad, rest) = payload.split_first().ok_or(FrameError::Short)?;
    let keep = rest
        .len()
        .checked_sub(usize::from(pad))
        .ok_or(FrameError::Padding)?;
    Ok(&rest[..keep])
}

/// The last stream id a GOAWAY says the sender processed.
pub fn goaway_last_stream(payload: &[u8]) -> Option<u32> {
    let b = payload.get(..4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
}

/// Encodes a frame header (for tests and fixtures).
pub fn encode_header(len: u32, kind: u8, flags: u8, stream: u32) -> [u8; HEADER_LEN] {
    let l = len.to_be_bytes();
    let s = stream.to_be_bytes();
    [l[1], l[2], l[3], kind, flags, s[0], s[1], s[2], s[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_ignore_the_reserved_bit() {
        let bytes = encode_header(0x01_0203, kind::HEADERS, flags::END_HEADERS, 0x8000_0005);
        let h = FrameHeader::parse(&bytes).unwrap();
        assert_eq!(
            h,
            FrameHeader {
                len: 0x01_0203,
                kind: kind::HEADERS,
                flags: flags::END_HEADERS,
                stream: 5,
                reserved: true,
            }
        );
        // Ignored on receipt, but no conforming sender sets it: not where a frame starts.
        assert!(!h.plausible());
        assert_eq!(FrameHeader::parse(&bytes[..8]), None);
    }

    #[test]
    fn padding_and_priority_are_stripped() {
        let h = FrameHeader {
            len: 0,
            kind: kind::HEADERS,
            flags: flags::PADDED | flags::PRIORITY | flags::END_HEADERS,
            stream: 1,
            reserved: false,
        };
        // pad length 2, 5 bytes of priority, block "abc", 2 bytes of padding.
        let payload = [2, 0, 0, 0, 3, 16, b'a', b'b', b'c', 0, 0];
        assert_eq!(header_block(&h, &payload), Ok(&b"abc"[..]));
        assert_eq!(header_block(&h, &[9, 1, 2]), Err(FrameError::Padding));
        assert_eq!(header_block(&h, &[0, 1, 2]), Err(FrameError::Short));
    }

    #[test]
    fn plausibility_follows_the_frame_rules() {
        let h = |len, kind, stream| FrameHeader {
            len,
            kind,
            flags: 0,
            stream,
            reserved: false,
        };
        assert!(h(12, kind::SETTINGS, 0).plausible());
        assert!(!h(12, kind::SETTINGS, 1).plausible());
        assert!(!h(7, kind::SETTINGS, 0).plausible());
        assert!(h(100, kind::DATA, 3).plausible());
        assert!(!h(100, kind::DATA, 0).plausible());
        assert!(!h(4, 0x42, 1).plausible());
        assert!(h(4, kind::WINDOW_UPDATE, 0).plausible());
        assert!(!h(5, kind::RST_STREAM, 1).plausible());
    }

    #[test]
    fn goaway_reads_its_last_stream() {
        assert_eq!(goaway_last_stream(&[0x80, 0, 0, 7]), Some(7));
        assert_eq!(goaway_last_stream(&[0, 0, 7]), None);
    }
}
