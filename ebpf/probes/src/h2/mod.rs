//! Following HTTP/2 frames past the captured prefix, on every path HTTP/2 bytes take.
//!
//! A syscall on an HTTP/2 stream can carry far more than `capture_bytes`: a large download
//! comes in reads of 16 KiB and more, nginx writes a response's frames with one `writev`, a
//! gRPC peer sends megabytes with one `sendmsg`. User space needs every frame header (to stay
//! aligned), every non-DATA payload (HEADERS carry HPACK state) and, inside DATA, the 5-byte
//! prefix of each gRPC message (to count them), but no other DATA byte. So, for a socket whose
//! stream opened with a connection preface, the kernel keeps each direction's next frame
//! header position in `SOCKETS` and, after each record, walks the frames of the rest of the
//! syscall's bytes: what user space needs past the prefix goes out as `H2_PIECE` records at
//! their stream positions; the gaps between them are DATA it skips by length.
//!
//! The bytes are read in chunks: a plain buffer (read, write, recv, send, TLS library calls),
//! one iovec after another (readv, writev, recvmsg, sendmsg), or none at all (sendfile: a
//! file's bytes, which only fit inside a DATA payload). A syscall the walk cannot follow (an
//! mmsg call, a header inside a sendfile, an implausible header, a fault, too many frames)
//! loses the place: the next record that starts a chain of plausible frames finds it again.
//!
//! The walk is a `bpf_loop` over one small step function, so a syscall of any size is walked
//! by one program (a tail-call chain stops after 33 links).

use core::ffi::c_void;

use netsonde_common::{SocketEntry, counter, h2_frame, h2_stream};

mod piece;
mod step;

use crate::{
    capture::read_user,
    maps::{H2Walk, SOCKETS, Scratch, count, scratch},
};
use piece::{end_marker, flush};
use step::{load_messages, step, store_messages};

/// Where a walked syscall's bytes are ([`H2Walk::source`]).
pub mod source {
    /// One user buffer.
    pub const PLAIN: u64 = 0;
    /// An iovec array.
    pub const IOV: u64 = 1;
    /// None to read: sendfile's bytes come from a file.
    pub const FILE: u64 = 2;
    /// A syscall the walk does not follow (sendmmsg, recvmmsg).
    pub const NONE: u64 = 3;
}

/// [`H2Walk::outcome`].
pub(super) mod outcome {
    pub const RUNNING: u8 = 0;
    pub const DONE: u8 = 1;
    /// The place is lost (or, verifying, the bytes are not a chain of frames).
    pub const LOST: u8 = 2;
}

const PREFACE_LEN: u64 = 24;
/// [`H2Walk::kind`] for the client preface, which is not a frame (and not DATA).
pub(super) const PREFACE: u8 = 0xff;
/// [`H2Walk::kind`] for a padded DATA frame whose pad-length byte comes next.
pub(super) const DATA_PAD: u8 = 0xfe;
/// Steps one walk may take (a step reads a header, a message prefix, an iovec, or skips a
/// payload). A 3 MiB gRPC `sendmsg` takes about a thousand.
const MAX_STEPS: u32 = 16384;
/// Messages one DATA frame may start before its stream's DATA is no longer taken for
/// length-prefixed messages (a payload of zeros would otherwise be a message every 5 bytes).
pub(super) const MAX_MESSAGES_PER_FRAME: u32 = 256;

/// `struct iovec` (UAPI).
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Iovec {
    pub base: u64,
    pub len: u64,
}

#[inline(always)]
pub(super) fn min(a: u64, b: u64) -> u64 {
    if a < b { a } else { b }
}

/// `x & mask`, with the mask kept: LLVM drops a mask (or clamp) it can prove redundant, and the
/// verifier, which cannot follow that proof, then refuses a helper's size argument. The value
/// passes through a volatile read, so LLVM knows nothing of it.
#[inline(always)]
pub(super) fn bounded(x: u64, mask: u64) -> u64 {
    // SAFETY: a read of a local.
    unsafe { core::ptr::read_volatile(&x) & mask }
}

#[inline(always)]
fn position(entry: &SocketEntry, egress: bool, plaintext: bool) -> u64 {
    match (plaintext, egress) {
        (false, true) => entry.egress_bytes,
        (false, false) => entry.ingress_bytes,
        (true, true) => entry.tls_egress_bytes,
        (true, false) => entry.tls_ingress_bytes,
    }
}

/// The first 9 bytes a syscall moved, when they can be read (zeros otherwise).
#[inline(always)]
fn first_bytes(src: u64, buf: u64, iovcnt: u64) -> [u8; 9] {
    match src {
        source::PLAIN => read_user::<[u8; 9]>(buf).unwrap_or([0; 9]),
        source::IOV if iovcnt > 0 => match read_user::<Iovec>(buf) {
            Some(v) if v.len >= 9 => read_user::<[u8; 9]>(v.base).unwrap_or([0; 9]),
            _ => [0; 9],
        },
        _ => [0; 9],
    }
}

/// Decides, before the record of a syscall that moved `bytes` at stream position `pos` is
/// emitted, whether its frames are followed, and sets up the walk. A stream starts being
/// followed when a direction opens with the client preface, or with a server's SETTINGS (a
/// server may speak first: nginx does). A direction that lost its place is followed again from
/// a syscall whose bytes are a chain of plausible frames. Returns whether the record carries
/// `H2_WALKED` (then [`walk`] runs after it is emitted).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn followed(
    entry: *mut SocketEntry,
    key: u64,
    egress: bool,
    plaintext: bool,
    pos: u64,
    bytes: u64,
    src: u64,
    buf: u64,
    iovcnt: u64,
) -> bool {
    let stream = if plaintext {
        h2_stream::PLAINTEXT
    } else {
        h2_stream::WIRE
    };
    let (d, o) = if egress { (0, 1) } else { (1, 0) };
    // SAFETY: a pointer into the map value; only this socket's syscalls touch these fields.
    unsafe {
        if pos == 0 {
            let first = first_bytes(src, buf, iovcnt);
            let preface = first[..4] == *b"PRI ";
            let len = u32::from(first[0]) << 16 | u32::from(first[1]) << 8 | u32::from(first[2]);
            let settings = first[3] == h2_frame::SETTINGS
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
        if (*entry).h2 != stream {
            return false;
        }
    }
    let Some(s) = scratch() else { return false };
    // SAFETY: the per-CPU scratch record; only this program uses it on this CPU right now.
    let w = unsafe { &mut (*s).walk };
    // SAFETY: as above.
    let lost = unsafe { (*entry).h2_next[d] } == h2_stream::LOST;
    if src == source::NONE {
        if !lost {
            // SAFETY: as above.
            unsafe { lose_place(entry, d) };
        }
        return false;
    }
    w.key = key;
    w.source = src;
    w.buf = buf;
    w.iovcnt = iovcnt;
    w.pos = pos;
    w.end = pos + bytes;
    w.direction = d as u8;
    // SAFETY: as above.
    unsafe {
        w.hdr[..8].copy_from_slice(&(*entry).h2_partial[d].to_le_bytes());
        w.plen = (*entry).h2_partial_len[d];
        w.kind = (*entry).h2_kind[d];
        w.data_stream = (*entry).h2_data_stream[d];
        w.frame_flags = (*entry).h2_flags[d];
        w.epoch = (*entry).h2_epoch[d];
        w.next = (*entry).h2_next[d];
    }
    rewind(w);
    if !lost {
        w.verify = 0;
        return true;
    }
    // Lost: does this syscall start at a frame boundary? Only memory can tell.
    if src == source::FILE {
        return false;
    }
    w.verify = 1;
    w.next = pos;
    w.plen = 0;
    w.kind = PREFACE;
    run(s);
    let w = unsafe { &mut (*s).walk };
    let chain = w.outcome != outcome::LOST
        && ((w.at == w.end && w.plen == 0 && w.frames >= 1) || w.frames >= 3);
    if !chain {
        return false;
    }
    count(counter::H2_RESYNCS, 1);
    w.verify = 0;
    w.next = pos;
    w.plen = 0;
    w.kind = PREFACE;
    w.data_stream = 0;
    rewind(w);
    true
}

/// Puts the walk's cursor back at the record's first byte.
#[inline(always)]
fn rewind(w: &mut H2Walk) {
    w.at = w.pos;
    w.iov_index = 0;
    w.chunk_pos = w.pos;
    w.outcome = outcome::RUNNING;
    w.frames = 0;
    if w.source == source::IOV {
        // Empty: the first step reads the first iovec.
        w.chunk_base = 0;
        w.chunk_end = w.pos;
    } else {
        // A plain buffer, or (sendfile) a range with nothing to read.
        w.chunk_base = if w.source == source::PLAIN { w.buf } else { 0 };
        w.chunk_end = w.end;
    }
}

/// The stream position of the first frame header within the `captured` bytes of the record
/// about to be emitted (or right after them), if the walk knows one.
#[inline(always)]
pub fn first_frame(captured: u64) -> u64 {
    let Some(s) = scratch() else {
        return h2_stream::LOST;
    };
    // SAFETY: the per-CPU scratch record, set up by `followed`.
    let w = unsafe { &(*s).walk };
    if w.plen == 0 && w.next >= w.pos && w.next <= w.pos + captured {
        w.next
    } else {
        h2_stream::LOST
    }
}

/// The direction lost its place: frames are looked for again from the next syscall, and
/// message framing learnt so far is no longer trusted.
///
/// # Safety
/// `entry` points into `SOCKETS`.
#[inline(always)]
unsafe fn lose_place(entry: *mut SocketEntry, d: usize) {
    // SAFETY: the caller's promise.
    unsafe {
        (*entry).h2_next[d] = h2_stream::LOST;
        (*entry).h2_partial_len[d] = 0;
        (*entry).h2_epoch[d] = (*entry).h2_epoch[d].wrapping_add(1);
    }
    count(counter::H2_LOST, 1);
}

/// Walks the frames of the record just emitted with `captured` bytes (its header is still in
/// the scratch record), emits the pieces, and keeps the direction's state for the next
/// syscall.
#[inline(always)]
pub fn walk(captured: u64) {
    let Some(s) = scratch() else { return };
    // SAFETY: the per-CPU scratch record; its header is the record just output.
    let w = unsafe { &mut (*s).walk };
    // SAFETY: as above.
    w.header = unsafe { (*s).header };
    w.cap_end = w.pos + captured;
    w.piece_len = 0;
    w.piece_frame = h2_stream::LOST;
    w.emitted_to = w.cap_end;
    w.tracked = 0;
    w.messages = 0;
    if (w.kind == h2_frame::DATA || w.kind == DATA_PAD) && w.plen == 0 && w.next > w.at {
        // A DATA frame that began in an earlier syscall.
        load_messages(w);
    }
    run(s);
    // SAFETY: as above.
    let w = unsafe { &mut (*s).walk };
    flush(s);
    // 0 or 1 in a way the compiler sees (no bounds check, which the verifier would refuse).
    let d = if w.direction == 0 { 0 } else { 1 };
    let Some(entry) = SOCKETS.get_ptr_mut(&w.key) else {
        return;
    };
    if w.outcome == outcome::LOST || w.at < w.end {
        // SAFETY: a pointer into the map value.
        unsafe { lose_place(entry, d) };
        return;
    }
    if w.tracked != 0 {
        store_messages(w);
    }
    // SAFETY: a pointer into the map value; only this socket's syscalls touch these fields.
    unsafe {
        (*entry).h2_next[d] = w.next;
        (*entry).h2_kind[d] = w.kind;
        (*entry).h2_partial_len[d] = w.plen;
        let mut partial = [0u8; 8];
        partial.copy_from_slice(&w.hdr[..8]);
        (*entry).h2_partial[d] = u64::from_le_bytes(partial);
        (*entry).h2_data_stream[d] = w.data_stream;
        (*entry).h2_flags[d] = w.frame_flags;
    }
    if w.emitted_to < w.end {
        // Say where the syscall ended, so a DATA payload that ends with it ends now, not
        // when the next record shows the gap.
        end_marker(s);
    }
}

/// Context of the `bpf_loop` callback.
#[repr(C)]
pub(super) struct LoopCtx {
    pub scratch: *mut Scratch,
}

/// Runs the walk's steps until it is done, lost, or out of steps.
#[inline(always)]
fn run(s: *mut Scratch) {
    let mut ctx = LoopCtx { scratch: s };
    // SAFETY: `step` is a static function of the right signature; the context is on this
    // stack for the duration of the call.
    unsafe {
        aya_ebpf::helpers::generated::bpf_loop(
            MAX_STEPS,
            step as *mut c_void,
            (&mut ctx as *mut LoopCtx).cast(),
            0,
        );
    }
}
