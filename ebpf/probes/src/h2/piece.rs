//! Pieces: the bytes of a walked syscall user space needs past the captured prefix, gathered
//! in the scratch record and output at their stream positions.

use netsonde_common::{DataEvent, KernelStats, MAX_CAPTURE, counter, data_flags, h2_stream};

use super::{min, outcome};
use crate::{
    capture::{at_most, copy_chunk},
    maps::{EVENTS, Scratch, count, output_flags},
};

/// Emits the `n` bytes at the walk's position (inside the current chunk) if they are past the
/// captured prefix, whole (the piece is flushed first if they do not fit). Returns false when
/// the place is lost.
#[inline(always)]
pub(super) fn emit(s: *mut Scratch, n: u64) -> bool {
    // SAFETY: the scratch record (see `step`).
    let w = unsafe { &mut (*s).walk };
    if w.at + n <= w.cap_end {
        return true;
    }
    let skip = if w.at < w.cap_end {
        w.cap_end - w.at
    } else {
        0
    };
    let from = w.at + skip;
    let n = n - skip;
    if w.piece_len > 0
        && (w.piece_from + w.piece_len != from || w.piece_len + n > MAX_CAPTURE as u64)
    {
        flush(s);
    }
    copy(s, from, n)
}

/// Emits as many as it can of the `n` bytes at the walk's position (past the captured
/// prefix): what fits in the piece. Returns how many it consumed (0 when the place is lost).
#[inline(always)]
pub(super) fn emit_some(s: *mut Scratch, n: u64) -> u64 {
    // SAFETY: the scratch record (see `step`).
    let w = unsafe { &mut (*s).walk };
    if w.piece_len > 0 && (w.piece_from + w.piece_len != w.at || w.piece_len >= MAX_CAPTURE as u64)
    {
        flush(s);
    }
    let w = unsafe { &mut (*s).walk };
    let room = MAX_CAPTURE as u64 - min(w.piece_len, MAX_CAPTURE as u64);
    let n = min(n, room);
    if copy(s, w.at, n) { n } else { 0 }
}

/// Appends the `n` bytes at stream position `from` (in the current chunk) to the piece.
#[inline(always)]
fn copy(s: *mut Scratch, from: u64, n: u64) -> bool {
    // SAFETY: the scratch record (see `step`); the walked record was already output, so the
    // data buffer is free.
    let (w, data) = unsafe { (&mut (*s).walk, (*s).data.as_mut_ptr()) };
    if n == 0 {
        return true;
    }
    if w.piece_len == 0 {
        w.piece_from = from;
    }
    let addr = w.chunk_base + (from - w.chunk_pos);
    if copy_chunk(data, w.piece_len, addr, n).is_none() {
        w.outcome = outcome::LOST;
        return false;
    }
    w.piece_len += min(n, MAX_CAPTURE as u64);
    w.emitted_to = from + n;
    true
}

/// Outputs the piece gathered so far.
#[inline(always)]
pub(super) fn flush(s: *mut Scratch) {
    // SAFETY: the scratch record (see `step`).
    let w = unsafe { &mut (*s).walk };
    let len = at_most(w.piece_len, MAX_CAPTURE as u64);
    if len == 0 {
        return;
    }
    let frame = w.piece_frame;
    let from = w.piece_from;
    w.piece_len = 0;
    w.piece_frame = h2_stream::LOST;
    // SAFETY: as above; the header is built in place (the stack is too small for one).
    unsafe {
        (*s).header = DataEvent {
            captured: len as u32,
            flags: data_flags::H2_PIECE | (w.header.flags & data_flags::TLS_PLAINTEXT),
            bytes: len,
            stream_pos: from,
            // The walked record carries the packets' kernel times.
            kernel: KernelStats::default(),
            h2_frame: frame,
            ..w.header
        };
    }
    let size = core::mem::size_of::<DataEvent>() + len as usize;
    // SAFETY: `size` is at most header + MAX_CAPTURE, inside the scratch record.
    let record = unsafe { core::slice::from_raw_parts(s.cast::<u8>(), size) };
    if EVENTS.output::<[u8]>(record, output_flags()).is_ok() {
        count(counter::H2_PIECES, 1);
    } else {
        count(counter::DATA_LOST, 1);
    }
}

/// An empty piece at the end of the walked syscall.
#[inline(always)]
pub(super) fn end_marker(s: *mut Scratch) {
    // SAFETY: the scratch record; built in place, as the stack is too small for a header.
    unsafe {
        let w = &(*s).walk;
        (*s).header = DataEvent {
            captured: 0,
            flags: data_flags::H2_PIECE | (w.header.flags & data_flags::TLS_PLAINTEXT),
            bytes: 0,
            stream_pos: w.end,
            kernel: KernelStats::default(),
            h2_frame: h2_stream::LOST,
            ..w.header
        };
        if EVENTS
            .output::<DataEvent>(&(*s).header, output_flags())
            .is_ok()
        {
            count(counter::H2_PIECES, 1);
        } else {
            count(counter::DATA_LOST, 1);
        }
    }
}
