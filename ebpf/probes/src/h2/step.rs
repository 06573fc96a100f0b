//! The step function of a walk, and the gRPC message framing it follows inside DATA.

use core::ffi::c_void;

use netsonde_common::{H2MessageKey, H2MessageState, h2_frame, h2_stream};

use super::{
    DATA_PAD, Iovec, LoopCtx, MAX_MESSAGES_PER_FRAME, bounded, min, outcome,
    piece::{emit, emit_some},
    source,
};
use crate::{
    capture::read_user,
    maps::{H2_MESSAGES, H2Walk, Scratch},
};

/// One step of a walk: reads the next iovec, skips or emits part of a payload, or reads (part
/// of) a frame header or a message prefix. Returns 1 to stop.
#[inline(never)]
pub(super) extern "C" fn step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `run` passes a `LoopCtx` holding this CPU's scratch record.
    let s = unsafe { (*(ctx as *const LoopCtx)).scratch };
    // SAFETY: as above.
    let w = unsafe { &mut (*s).walk };
    if w.outcome != outcome::RUNNING {
        return 1;
    }
    if w.at >= w.end {
        w.outcome = outcome::DONE;
        return 1;
    }
    if w.at >= w.chunk_end {
        next_chunk(w);
        return 0;
    }
    if w.plen == 0 && w.next > w.at {
        payload(s);
    } else {
        header(s);
    }
    0
}

/// Reads the next non-empty iovec as the current chunk.
#[inline(always)]
fn next_chunk(w: &mut H2Walk) {
    if w.source != source::IOV || w.iov_index >= w.iovcnt {
        // More bytes than the buffers hold: the record is not what it seems.
        w.outcome = outcome::LOST;
        return;
    }
    let Some(v) = read_user::<Iovec>(w.buf + w.iov_index * 16) else {
        w.outcome = outcome::LOST;
        return;
    };
    w.iov_index += 1;
    w.chunk_base = v.base;
    w.chunk_pos = w.chunk_end;
    w.chunk_end = w.chunk_pos + min(v.len, w.end - w.chunk_pos);
}

/// Inside a frame's payload: skip it, emit it (past the prefix, when not DATA), or follow the
/// gRPC messages in it.
#[inline(always)]
fn payload(s: *mut Scratch) {
    // SAFETY: the scratch record (see `step`).
    let w = unsafe { &mut (*s).walk };
    let upto = min(w.next, w.chunk_end);
    let kind = w.kind;
    if w.verify != 0 {
        w.at = upto;
    } else if kind == DATA_PAD {
        // The pad-length byte: user space needs it to know where the data ends. Padded DATA
        // carries no message framing the kernel follows.
        if !emit(s, 1) {
            return;
        }
        let w = unsafe { &mut (*s).walk };
        w.at += 1;
        w.kind = h2_frame::DATA;
        if w.tracked != 0 {
            w.message.off = 1;
        }
    } else if kind == h2_frame::DATA {
        if w.tracked != 0 && w.message.off == 0 && w.source == source::FILE {
            // A file's bytes (sendfile) cannot be read for message prefixes: a file served
            // over HTTP/2 is no gRPC stream anyway.
            w.message.off = 1;
        }
        if w.tracked != 0 && w.message.off == 0 {
            message(s, upto);
        } else {
            w.at = upto;
        }
    } else if w.at < w.cap_end {
        w.at = min(upto, w.cap_end);
    } else {
        let n = emit_some(s, upto - w.at);
        let w = unsafe { &mut (*s).walk };
        w.at += n;
    }
    // SAFETY: as above.
    let w = unsafe { &mut (*s).walk };
    if w.at == w.next && w.tracked != 0 {
        // The DATA frame ended.
        store_messages(w);
        w.tracked = 0;
    }
}

/// Inside a DATA payload whose messages are followed, up to `upto`: skip message body, or read
/// (part of) the next message's 5-byte prefix.
#[inline(always)]
fn message(s: *mut Scratch, upto: u64) {
    // SAFETY: the scratch record (see `step`).
    let w = unsafe { &mut (*s).walk };
    if w.message.left > 0 {
        let n = min(w.message.left, upto - w.at);
        w.message.left -= n;
        w.at += n;
        return;
    }
    let have = u64::from(w.message.have) & 7;
    let take = bounded(min(5 - min(have, 4), upto - w.at), 7);
    let addr = w.chunk_base + (w.at - w.chunk_pos);
    // SAFETY: `have` < 8 and `take` < 8 keep the write inside the 16-byte prefix buffer.
    let rc = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            w.message.prefix.as_mut_ptr().add(have as usize).cast(),
            take as u32,
            addr as *const _,
        )
    };
    if rc != 0 {
        w.outcome = outcome::LOST;
        return;
    }
    if !emit(s, take) {
        return;
    }
    // SAFETY: as above.
    let w = unsafe { &mut (*s).walk };
    w.at += take;
    let have = have + take;
    if have < 5 {
        w.message.have = have as u8;
        return;
    }
    let p = w.message.prefix;
    w.message.left = u64::from(u32::from_be_bytes([p[1], p[2], p[3], p[4]]));
    w.message.have = 0;
    w.messages += 1;
    if w.messages > MAX_MESSAGES_PER_FRAME {
        w.message.off = 1;
    }
}

/// At a frame header (or the rest of one cut by the end of a chunk): read what this chunk has
/// of it, emit it past the prefix, and once whole, check it and move to its payload.
#[inline(always)]
fn header(s: *mut Scratch) {
    // SAFETY: the scratch record (see `step`).
    let w = unsafe { &mut (*s).walk };
    let plen = u64::from(w.plen) & 15;
    let want = h2_frame::HEADER_LEN - min(plen, h2_frame::HEADER_LEN);
    let take = bounded(min(want, w.chunk_end - w.at), 15);
    let addr = w.chunk_base + (w.at - w.chunk_pos);
    // SAFETY: `plen` < 16 and `take` < 16 keep the write inside the 32-byte header buffer.
    let rc = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            w.hdr.as_mut_ptr().add(plen as usize).cast(),
            take as u32,
            addr as *const _,
        )
    };
    if rc != 0 {
        w.outcome = outcome::LOST;
        return;
    }
    if w.verify == 0 && !emit(s, take) {
        return;
    }
    // SAFETY: as above.
    let w = unsafe { &mut (*s).walk };
    if w.verify == 0 && plen == 0 && w.at >= w.cap_end && w.piece_frame == h2_stream::LOST {
        // The piece holds this frame's start.
        w.piece_frame = w.at;
    }
    w.at += take;
    let plen = plen + take;
    if plen < h2_frame::HEADER_LEN {
        w.plen = plen as u8;
        return;
    }
    w.plen = 0;
    let h = w.hdr;
    let len = u32::from(h[0]) << 16 | u32::from(h[1]) << 8 | u32::from(h[2]);
    let (kind, flags) = (h[3], h[4]);
    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]);
    // Unknown (extension) frame types are skipped by length, as receivers must; only a search
    // for the place insists on known ones.
    let known = kind <= h2_frame::CONTINUATION;
    if (known || w.verify != 0) && !h2_frame::plausible(len, kind, stream) {
        w.outcome = outcome::LOST;
        return;
    }
    w.frames += 1;
    w.next += h2_frame::HEADER_LEN + u64::from(len);
    w.kind = kind;
    if w.verify != 0 {
        return;
    }
    if kind == h2_frame::DATA {
        if flags & h2_frame::PADDED != 0 && len > 0 {
            w.kind = DATA_PAD;
        }
        w.frame_flags = flags;
        w.data_stream = stream;
        w.messages = 0;
        load_messages(w);
        if w.at == w.next && w.tracked != 0 {
            // An empty DATA frame (END_STREAM alone).
            store_messages(w);
            w.tracked = 0;
        }
    } else if kind == h2_frame::HEADERS && flags & h2_frame::END_STREAM != 0 {
        // Trailers (or a body-less message): this direction of the stream is over.
        let key = message_key(w, stream);
        let _ = H2_MESSAGES.remove(&key);
    }
}

#[inline(always)]
fn message_key(w: &H2Walk, stream: u32) -> H2MessageKey {
    H2MessageKey {
        socket: w.key,
        stream: stream & 0x7fff_ffff,
        direction: u32::from(w.direction),
    }
}

/// Takes up the message framing of the DATA frame's stream: where it left off, or a first
/// message starting now. Framing from before the place was lost is not trusted.
#[inline(always)]
pub(super) fn load_messages(w: &mut H2Walk) {
    let key = message_key(w, w.data_stream);
    // SAFETY: copied out at once.
    w.message = match unsafe { H2_MESSAGES.get(&key) } {
        Some(m) if m.epoch == w.epoch => *m,
        Some(_) => H2MessageState {
            off: 1,
            epoch: w.epoch,
            ..H2MessageState::default()
        },
        None => H2MessageState {
            epoch: w.epoch,
            ..H2MessageState::default()
        },
    };
    w.tracked = 1;
}

/// Keeps the stream's message framing for its next DATA frame (forgotten when the frame
/// ended the stream).
#[inline(always)]
pub(super) fn store_messages(w: &mut H2Walk) {
    let key = message_key(w, w.data_stream);
    if w.at == w.next && w.frame_flags & h2_frame::END_STREAM != 0 {
        let _ = H2_MESSAGES.remove(&key);
    } else {
        let _ = H2_MESSAGES.insert(&key, &w.message, 0);
    }
}
