//! Following HTTP/2 frames past the captured prefix.
//!
//! A read of an HTTP/2 stream can carry far more than `capture_bytes`: a large download comes
//! in reads of 16 KiB and more, several frames each. User space needs every frame header (to
//! stay aligned) and every non-DATA payload (HEADERS carry HPACK state), but no DATA payload.
//! So, for a socket whose stream opened with the client preface, the kernel keeps the position
//! of each direction's next frame header and, after each record, walks the frames of the rest
//! of the syscall's buffer: a header or non-DATA payload past the prefix goes out as an
//! `H2_PIECE` record at its stream position; DATA payloads are left as gaps, which user space
//! skips by length. A few frames per program, then a tail call for the next few, so each
//! program stays small for the verifier. Plain buffers only (read, write, recv, send and the
//! TLS library calls); iovec syscalls are not walked.

use netsonde_common::{
    DataEvent, KernelStats, MAX_CAPTURE, SocketEntry, counter, data_flags, h2_stream, kind,
};

use crate::{
    capture::{copy_chunk, read_user},
    kernel::socket_key,
    maps::{EVENTS, H2Walk, SOCKETS, count, output_flags, scratch},
};

const PREFACE_LEN: u64 = 24;
const HEADER: u64 = 9;
const DATA: u8 = 0;
const PADDED: u8 = 0x8;
/// Kind recorded for the preface, which is not a frame (and not DATA).
const PREFACE: u8 = 0xff;
/// Frame headers one program reads before handing over to the next.
const FRAMES_PER_CALL: u32 = 6;

#[inline(always)]
fn position(entry: &SocketEntry, egress: bool, plaintext: bool) -> u64 {
    match (plaintext, egress) {
        (false, true) => entry.egress_bytes,
        (false, false) => entry.ingress_bytes,
        (true, true) => entry.tls_egress_bytes,
        (true, false) => entry.tls_ingress_bytes,
    }
}

/// Called before a data record at `pos` of a plain buffer `buf` is emitted (the position has
/// already advanced past it). A stream starts being followed when a direction opens with the
/// client preface, or with a server's SETTINGS (a server may speak first: nginx does). Returns
/// whether this record's frames are followed (it then carries `H2_WALKED`, and `walk` must
/// run after it).
#[inline(always)]
pub fn followed(tgid: u32, fd: i32, egress: bool, plaintext: bool, pos: u64, buf: u64) -> bool {
    let Some(entry) = SOCKETS.get_ptr_mut(&socket_key(tgid, fd)) else {
        return false;
    };
    let stream = if plaintext {
        h2_stream::PLAINTEXT
    } else {
        h2_stream::WIRE
    };
    let (d, o) = if egress { (0, 1) } else { (1, 0) };
    // SAFETY: a pointer into the map value; only this socket's syscalls touch these fields.
    unsafe {
        if pos == 0 {
            let first = read_user::<[u8; 9]>(buf).unwrap_or([0; 9]);
            let preface = first[..4] == *b"PRI ";
            let len = u32::from(first[0]) << 16 | u32::from(first[1]) << 8 | u32::from(first[2]);
            let settings = first[3] == 4
                && first[4] == 0
                && first[5..9] == [0; 4]
                && len % 6 == 0
                && len <= 16384;
            if (*entry).h2 == h2_stream::NONE && (preface || settings) {
                (*entry).h2 = stream;
                // The other direction can be followed from its start only if nothing went by.
                let other_at = position(&*entry, !egress, plaintext);
                (*entry).h2_next[o] = if other_at == 0 { 0 } else { h2_stream::LOST };
                (*entry).h2_kind[o] = PREFACE;
                (*entry).h2_partial_len[o] = 0;
            }
            if (*entry).h2 == stream {
                // This direction's first bytes: frames from 0, or after the preface.
                (*entry).h2_next[d] = if preface { PREFACE_LEN } else { 0 };
                (*entry).h2_kind[d] = PREFACE;
                (*entry).h2_partial_len[d] = 0;
            }
        }
        (*entry).h2 == stream && (*entry).h2_next[d] != h2_stream::LOST
    }
}

/// Sets up the walk of the record just emitted (its header is still in the scratch record).
#[inline(always)]
pub fn start(buf: u64) {
    let Some(s) = scratch() else { return };
    // SAFETY: the per-CPU scratch record, written by `emit_data` just before.
    unsafe {
        let h = (*s).header;
        (*s).walk = H2Walk {
            key: socket_key(h.tgid, h.fd),
            buf,
            pos: h.stream_pos,
            end: h.stream_pos + h.bytes,
            cap_end: h.stream_pos + h.captured as u64,
            header: h,
            first: 1,
            _pad: [0; 7],
        };
    }
}

/// Marks the walk lost: user space will find the gap and stop decoding that direction.
#[inline(always)]
pub fn lose() {
    let Some(s) = scratch() else { return };
    // SAFETY: as in `start`; a reference, not a copy (the stack is small).
    let w = unsafe { &(*s).walk };
    if let Some(entry) = SOCKETS.get_ptr_mut(&w.key) {
        let d = if w.header.direction == 0 { 0 } else { 1 };
        // SAFETY: a pointer into the map value.
        unsafe { (*entry).h2_next[d] = h2_stream::LOST };
    }
    count(counter::H2_LOST, 1);
}

/// Walks up to `FRAMES_PER_CALL` frame headers; returns whether more remain in this syscall.
#[inline(always)]
pub fn walk() -> bool {
    let Some(s) = scratch() else { return false };
    // SAFETY: as in `start`. `first` is cleared before `w` borrows the walk; `w` is a
    // reference, not a copy (the stack is small).
    let first = unsafe {
        let first = (*s).walk.first != 0;
        (*s).walk.first = 0;
        first
    };
    // SAFETY: as above.
    let w = unsafe { &(*s).walk };
    let Some(entry) = SOCKETS.get_ptr_mut(&w.key) else {
        return false;
    };
    let d: usize = if w.header.direction == 0 { 0 } else { 1 };
    // SAFETY: pointers into the map value and the scratch record, as above.
    unsafe {
        let mut next = (*entry).h2_next[d];
        if next == h2_stream::LOST {
            return false;
        }
        if first {
            let mut payload_from = w.pos;
            // A frame header cut by the end of the previous syscall.
            let plen = (*entry).h2_partial_len[d] as u64;
            if plen > 0 {
                let need = HEADER - plen;
                let Some(fresh) = read_user::<u64>(w.buf).filter(|_| w.end >= w.pos + 8) else {
                    lose();
                    return false;
                };
                let fresh = u64::from_le(fresh);
                let partial = (*entry).h2_partial[d];
                // Byte i of the header: from the kept bytes, then from this buffer. Shifts, not
                // indexing: the verifier refuses variable offsets into the stack.
                let byte = |i: u64| -> u64 {
                    if i < plen {
                        (partial >> ((8 * i) & 63)) & 0xff
                    } else {
                        (fresh >> ((8 * (i - plen)) & 63)) & 0xff
                    }
                };
                let len = byte(0) << 16 | byte(1) << 8 | byte(2);
                (*entry).h2_kind[d] = byte(3) as u8;
                (*entry).h2_partial_len[d] = 0;
                next += HEADER + len;
                payload_from = w.pos + need;
            }
            // The rest of the frame in progress: [payload_from, next).
            let upto = if next < w.end { next } else { w.end };
            let from = if payload_from > w.cap_end {
                payload_from
            } else {
                w.cap_end
            };
            if (*entry).h2_kind[d] != DATA && from < upto {
                piece(w, from, upto);
            }
        }
        let mut n = 0;
        while n < FRAMES_PER_CALL {
            if next + HEADER > w.end {
                break;
            }
            let Some(h) = read_user::<[u8; 10]>(w.buf + (next - w.pos)) else {
                lose();
                return false;
            };
            let len = u64::from(h[0]) << 16 | u64::from(h[1]) << 8 | u64::from(h[2]);
            let frame_end = next + HEADER + len;
            // The header (and a padded DATA frame's pad length), or the whole of another frame.
            let to = if h[3] == DATA {
                next + HEADER + u64::from(h[4] & PADDED != 0)
            } else if frame_end < w.end {
                frame_end
            } else {
                w.end
            };
            let to = if to < w.end { to } else { w.end };
            let from = if next > w.cap_end { next } else { w.cap_end };
            if from < to {
                piece(w, from, to);
            }
            (*entry).h2_kind[d] = h[3];
            next = frame_end;
            n += 1;
        }
        (*entry).h2_next[d] = next;
        if next + HEADER <= w.end {
            return true;
        }
        if next < w.end {
            // A header cut by the end of this syscall: keep its first bytes for the next one.
            let plen = w.end - next;
            let Some(bytes) = read_user::<u64>(w.buf + (next - w.pos)) else {
                lose();
                return false;
            };
            (*entry).h2_partial[d] = bytes;
            (*entry).h2_partial_len[d] = plen as u8;
        }
        if w.end > w.cap_end {
            // Say where the syscall ended, so a DATA payload that ends with it ends now, not
            // when the next record shows the gap.
            end_marker(w);
        }
        false
    }
}

/// An empty piece at the end of the walked syscall.
#[inline(always)]
fn end_marker(w: &H2Walk) {
    let Some(s) = scratch() else { return };
    // SAFETY: the per-CPU scratch record (the walked record was already output); built in
    // place, as the stack is too small for a header.
    let header = unsafe { &mut (*s).header };
    *header = w.header;
    header.flags = data_flags::H2_PIECE | (w.header.flags & data_flags::TLS_PLAINTEXT);
    header.captured = 0;
    header.bytes = 0;
    header.stream_pos = w.end;
    // The walked record carries the packets' kernel times.
    header.kernel = KernelStats::default();
    if EVENTS.output::<DataEvent>(header, output_flags()).is_ok() {
        count(counter::H2_PIECES, 1);
    } else {
        count(counter::DATA_LOST, 1);
    }
}

/// Emits the stream bytes `[from, to)` of the walked record as a piece.
#[inline(always)]
fn piece(w: &H2Walk, from: u64, to: u64) {
    let Some(s) = scratch() else { return };
    let len = to - from;
    let len = if len > MAX_CAPTURE as u64 {
        MAX_CAPTURE as u64
    } else {
        len
    };
    // SAFETY: the per-CPU scratch record; the walked record was already output.
    let data = unsafe { (*s).data.as_mut_ptr() };
    let Some(copied) = copy_chunk(data, 0, w.buf + (from - w.pos), len) else {
        lose();
        return;
    };
    // SAFETY: as above.
    unsafe {
        (*s).header = DataEvent {
            kind: kind::DATA,
            captured: copied as u32,
            flags: data_flags::H2_PIECE | (w.header.flags & data_flags::TLS_PLAINTEXT),
            bytes: copied,
            stream_pos: from,
            // The walked record carries the packets' kernel times.
            kernel: KernelStats::default(),
            ..w.header
        };
    }
    let size = core::mem::size_of::<DataEvent>() + copied as usize;
    // SAFETY: `size` is at most header + MAX_CAPTURE, inside the scratch record.
    let record = unsafe { core::slice::from_raw_parts(s.cast::<u8>(), size) };
    if EVENTS.output::<[u8]>(record, output_flags()).is_ok() {
        count(counter::H2_PIECES, 1);
    } else {
        count(counter::DATA_LOST, 1);
    }
}
