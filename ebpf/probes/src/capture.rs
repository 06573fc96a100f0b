//! Copies the payload prefix of a syscall into a data record and hands it to user space.

use netsonde_common::{
    DataEvent, MAX_CAPTURE, MAX_IOVECS, MAX_MMSG, SyscallArgs, counter, data_flags, kind, syscall,
};

use crate::maps::{EVENTS, Scratch, config, count, output_flags, scratch};

/// `struct iovec` (UAPI: stable across kernels).
#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

/// Offsets in the UAPI `struct user_msghdr` / `struct mmsghdr` (stable across kernels).
pub const MSGHDR_IOV: u64 = 16;
pub const MSGHDR_IOVLEN: u64 = 24;
const MMSGHDR_LEN: u64 = 56;
const MMSGHDR_SIZE: u64 = 64;

/// Reads a `T` from user memory; `None` when the read faults. The value goes into a
/// zero-initialised local (the kernel zeroes it on failure too): reading through
/// `MaybeUninit` let LLVM fill the failure path with an unrelated register, which the
/// verifier rejected.
#[inline(always)]
pub fn read_user<T: Copy>(addr: u64) -> Option<T> {
    // SAFETY: only used with integer and integer-array types, for which all-zero is valid.
    let mut value: T = unsafe { core::mem::zeroed() };
    // SAFETY: the helper writes at most size_of::<T>() bytes into `value` and tolerates any
    // source address.
    let rc = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            (&mut value as *mut T).cast(),
            core::mem::size_of::<T>() as u32,
            addr as *const _,
        )
    };
    (rc == 0).then_some(value)
}

/// Reads a `T` from user memory, zero when the read faults (the kernel zeroes the destination
/// on failure). No `Option`: LLVM lowered `read_user(..).unwrap_or(0)` in a loop to code the
/// verifier rejects ("pointer arithmetic with <<= operator prohibited").
#[inline(always)]
fn read_user_or_zero<T: Copy>(addr: u64) -> T {
    // SAFETY: only used with integer types, for which all-zero is valid.
    let mut value: T = unsafe { core::mem::zeroed() };
    // SAFETY: the helper writes at most size_of::<T>() bytes into `value` and tolerates any
    // source address.
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            (&mut value as *mut T).cast(),
            core::mem::size_of::<T>() as u32,
            addr as *const _,
        );
    }
    value
}

/// Copies up to `want` bytes from user address `src` to `data[off..]`. Returns the bytes copied
/// (0 on a fault). The masks and clamps are what lets the verifier prove the write stays in the
/// scratch buffer: `off < MAX_CAPTURE` and `n <= MAX_CAPTURE`, and the buffer is twice that.
#[inline(always)]
fn copy_chunk(data: *mut u8, off: u64, src: u64, want: u64) -> Option<u64> {
    let off = off & (MAX_CAPTURE as u64 - 1);
    let n = if want > MAX_CAPTURE as u64 {
        MAX_CAPTURE as u64
    } else {
        want
    };
    // SAFETY: `data` is the per-CPU scratch buffer of 2 * MAX_CAPTURE bytes; see above.
    let rc = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            data.add(off as usize).cast(),
            n as u32,
            src as *const _,
        )
    };
    (rc == 0).then_some(n)
}

/// Copies the bytes spread over `iovcnt` iovecs at `iov` into `data[start..end]` (as far as
/// they reach). Returns the offset reached, whether a copy failed, and whether iovecs were left
/// unwalked.
#[inline(always)]
fn copy_iovecs(data: *mut u8, iov: u64, iovcnt: u64, start: u64, end: u64) -> (u64, bool, bool) {
    let mut copied = start;
    let mut i: u32 = 0;
    while i < MAX_IOVECS {
        if (i as u64) >= iovcnt || copied >= end {
            return (copied, false, false);
        }
        let Some(v) = read_user::<Iovec>(iov + (i as u64) * 16) else {
            return (copied, true, false);
        };
        let want = if v.len < end - copied {
            v.len
        } else {
            end - copied
        };
        if want > 0 {
            match copy_chunk(data, copied, v.base, want) {
                Some(n) => copied += n,
                None => return (copied, true, false),
            }
        }
        i += 1;
    }
    (copied, false, (MAX_IOVECS as u64) < iovcnt && copied < end)
}

/// Copies the messages of a sendmmsg/recvmmsg (`mmsg`, `messages` of them) one after another:
/// on a stream socket they are consecutive bytes of the stream. Only each message's first
/// iovec is copied, and copying stops at the first message it does not cover, so what was
/// copied stays a prefix of the stream (the rest is a gap of known length). Walking every
/// iovec of every message, nested or flattened, exceeded the verifier's instruction budget.
/// Returns the bytes copied, whether a copy failed, and whether bytes were left uncopied.
#[inline(always)]
fn copy_mmsg(data: *mut u8, mmsg: u64, messages: u64, limit: u64) -> (u64, bool, bool) {
    let mut copied: u64 = 0;
    let mut i: u32 = 0;
    while i < MAX_MMSG {
        if (i as u64) >= messages || copied >= limit {
            return (copied, false, false);
        }
        let header = mmsg + (i as u64) * MMSGHDR_SIZE;
        let iov: u64 = read_user_or_zero(header + MSGHDR_IOV);
        let len: u32 = read_user_or_zero(header + MMSGHDR_LEN);
        let first: Iovec = read_user_or_zero(iov);
        let room = limit - copied;
        let want = if (len as u64) < room {
            len as u64
        } else {
            room
        };
        let want = if first.len < want { first.len } else { want };
        if want > 0 {
            match copy_chunk(data, copied, first.base, want) {
                Some(n) => copied += n,
                None => return (copied, true, false),
            }
        }
        if first.len < len as u64 {
            // The message goes on in iovecs not copied: stop here, keep a clean prefix.
            return (copied, false, copied < limit);
        }
        i += 1;
    }
    (copied, false, messages > MAX_MMSG as u64 && copied < limit)
}

/// Bytes moved by the first `MAX_MMSG` messages of a sendmmsg/recvmmsg that handled
/// `messages` (later ones are flagged `BYTES_UNCOUNTED` by `emit_data`).
#[inline(always)]
pub fn mmsg_bytes(mmsg: u64, messages: u64) -> u64 {
    let mut total: u64 = 0;
    let mut i: u32 = 0;
    while i < MAX_MMSG {
        if (i as u64) >= messages {
            break;
        }
        let len: u32 = read_user_or_zero(mmsg + (i as u64) * MMSGHDR_SIZE + MMSGHDR_LEN);
        total += len as u64;
        i += 1;
    }
    total
}

/// Emits the data record of a finished syscall that moved `bytes` bytes.
#[inline(always)]
pub fn emit_data(
    pid_tgid: u64,
    args: &SyscallArgs,
    bytes: u64,
    messages: u64,
    stream_pos: u64,
    direction: u8,
    exit_ns: u64,
) {
    let Some(scratch) = scratch() else { return };
    let scratch: *mut Scratch = scratch;
    // SAFETY: the per-CPU scratch value; only this program uses it on this CPU right now.
    let data = unsafe { (*scratch).data.as_mut_ptr() };

    let capture = config!(capture_bytes) as u64;
    let mut flags: u8 = 0;
    let (captured, failed, truncated) = match args.syscall {
        syscall::SENDFILE => (0, false, false),
        syscall::READV | syscall::WRITEV | syscall::RECVMSG | syscall::SENDMSG => {
            let limit = if bytes < capture { bytes } else { capture };
            copy_iovecs(data, args.buf, args.iovcnt, 0, limit)
        }
        syscall::RECVMMSG | syscall::SENDMMSG => {
            let limit = if bytes < capture { bytes } else { capture };
            copy_mmsg(data, args.buf, messages, limit)
        }
        _ => {
            let limit = if bytes < capture { bytes } else { capture };
            if limit == 0 {
                (0, false, false)
            } else {
                match copy_chunk(data, 0, args.buf, limit) {
                    Some(n) => (n, false, false),
                    None => (0, true, false),
                }
            }
        }
    };
    if failed {
        flags |= data_flags::READ_FAILED;
        count(counter::READ_FAILED, 1);
    }
    if truncated {
        flags |= data_flags::IOV_TRUNCATED;
        count(counter::IOV_TRUNCATED, 1);
    }
    if messages > MAX_MMSG as u64 {
        flags |= data_flags::BYTES_UNCOUNTED;
    }
    let captured = if captured > MAX_CAPTURE as u64 {
        MAX_CAPTURE as u64
    } else {
        captured
    };
    count(counter::BYTES_TOTAL, bytes);
    count(counter::BYTES_NOT_CAPTURED, bytes.saturating_sub(captured));

    // SAFETY: as above; the header is plain integers.
    unsafe {
        (*scratch).header = DataEvent {
            kind: kind::DATA,
            captured: captured as u32,
            tgid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            fd: args.fd,
            syscall: args.syscall,
            direction,
            flags,
            sock: args.sock,
            bytes,
            stream_pos,
            enter_ns: args.enter_ns,
            exit_ns,
        };
    }
    let size = core::mem::size_of::<DataEvent>() + captured as usize;
    // SAFETY: `size` is at most header + MAX_CAPTURE, inside the scratch value.
    let record = unsafe { core::slice::from_raw_parts(scratch.cast::<u8>(), size) };
    let rc = EVENTS.output::<[u8]>(record, output_flags());
    if rc.is_ok() {
        count(counter::DATA_EVENTS, 1);
    } else {
        count(counter::DATA_LOST, 1);
    }
}
