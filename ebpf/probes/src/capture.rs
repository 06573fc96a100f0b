//! Copies the payload prefix of a syscall into a data record and hands it to user space.

use netsonde_common::{
    DataEvent, KernelStats, MAX_CAPTURE, MAX_IOVECS, MAX_MMSG, SyscallArgs, counter, data_flags,
    h2_stream, kind, layer, syscall,
};

use crate::{
    maps::{EVENTS, IovCursor, Scratch, config, count, output_flags, scratch},
    regs::SyscallCtx,
};

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

/// The smaller of `x` and `max`, as the verifier sees it. Through a volatile read: where LLVM
/// can prove `x` is small already (it was the smaller of two values) it drops the clamp, and
/// verifiers before about 6.8, which do not carry one register's bound over to another, then
/// refuse the value as a size.
#[inline(always)]
pub fn at_most(x: u64, max: u64) -> u64 {
    // SAFETY: a read of a local.
    let x = unsafe { core::ptr::read_volatile(&x) };
    if x > max { max } else { x }
}

/// Copies up to `want` bytes from user address `src` to `data[off..]`. Returns the bytes copied
/// (0 on a fault). The masks and clamps are what lets the verifier prove the write stays in the
/// scratch buffer: `off < MAX_CAPTURE` and `n <= MAX_CAPTURE`, and the buffer is twice that.
#[inline(always)]
pub fn copy_chunk(data: *mut u8, off: u64, src: u64, want: u64) -> Option<u64> {
    let off = off & (MAX_CAPTURE as u64 - 1);
    let n = at_most(want, MAX_CAPTURE as u64);
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

/// Copies the bytes spread over iovecs `first..` of the `iovcnt` at `iov` into
/// `data[start..end]` (as far as they reach), walking at most `MAX_IOVECS` of them. Returns the
/// offset reached, whether a copy failed, and the next iovec to walk if some are left with room
/// to fill (the caller continues through a tail call).
#[inline(always)]
fn copy_iovecs(
    data: *mut u8,
    iov: u64,
    iovcnt: u64,
    first: u64,
    start: u64,
    end: u64,
) -> (u64, bool, Option<u64>) {
    let mut copied = start;
    let mut i: u32 = 0;
    while i < MAX_IOVECS {
        let index = first + i as u64;
        if index >= iovcnt || copied >= end {
            return (copied, false, None);
        }
        let Some(v) = read_user::<Iovec>(iov + index * 16) else {
            return (copied, true, None);
        };
        let want = if v.len < end - copied {
            v.len
        } else {
            end - copied
        };
        if want > 0 {
            match copy_chunk(data, copied, v.base, want) {
                Some(n) => copied += n,
                None => return (copied, true, None),
            }
        }
        i += 1;
    }
    let next = first + MAX_IOVECS as u64;
    (
        copied,
        false,
        (next < iovcnt && copied < end).then_some(next),
    )
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

/// Emits the data record of a finished syscall (or TLS call) that moved `bytes` bytes. Long
/// iovec arrays (gRPC writes hundreds) are walked `MAX_IOVECS` at a time: the rest continues in
/// `iov_continue` through a tail call, each piece verified on its own, so one record can cover
/// up to `MAX_IOVECS` × 33 iovecs (the kernel allows 33 tail calls in a row, and the syscall's
/// own program was reached by one).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn emit_data<C: SyscallCtx>(
    ctx: Option<&C>,
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
    let limit = if bytes < capture { bytes } else { capture };
    let mut flags = args.flags as u8;
    if messages > MAX_MMSG as u64 {
        flags |= data_flags::BYTES_UNCOUNTED;
    }
    // SAFETY: as above; the header is plain integers.
    unsafe {
        (*scratch).header = DataEvent {
            kind: kind::DATA,
            captured: 0,
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
            kernel: KernelStats {
                ns: [0; layer::COUNT],
                bytes: 0,
                packets: 0,
                timed: [0; layer::COUNT],
                _pad: [0; 6],
            },
            h2_frame: h2_stream::LOST,
        };
        crate::net::take_stats(pid_tgid, args.enter_ns, &mut (*scratch).header.kernel);
    }
    let ciphertext = flags & data_flags::TLS_CIPHERTEXT != 0;
    let (captured, failed, truncated) = match args.syscall {
        _ if ciphertext => (0, false, false),
        syscall::SENDFILE => (0, false, false),
        syscall::READV | syscall::WRITEV | syscall::RECVMSG | syscall::SENDMSG => {
            let (copied, failed, next) = copy_iovecs(data, args.buf, args.iovcnt, 0, 0, limit);
            // A hook without a continuation (the socket layer copies no iovecs) cuts here.
            let continuation = ctx.and_then(|c| c.iov_continue().map(|table| (c, table)));
            match (next, continuation) {
                (Some(next), Some((ctx, table))) => {
                    // SAFETY: as above.
                    unsafe {
                        (*scratch).cursor = IovCursor {
                            iov: args.buf,
                            iovcnt: args.iovcnt,
                            next,
                            copied,
                            end: limit,
                        };
                    }
                    // SAFETY: the continuation is a tracepoint program like the caller.
                    let _ = unsafe { table.tail_call(ctx, 0) };
                    // Only reached when the tail call failed (not loaded, or too deep).
                    (copied, failed, true)
                }
                (next, _) => (copied, failed, next.is_some()),
            }
        }
        syscall::RECVMMSG | syscall::SENDMMSG => copy_mmsg(data, args.buf, messages, limit),
        _ => {
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
    finish_record(scratch, captured, failed, truncated);
}

/// The rest of a long iovec array: `MAX_IOVECS` more, then another tail call, until done or
/// the kernel's tail-call limit (33) is reached.
#[inline(always)]
pub fn continue_iovecs<C: SyscallCtx>(ctx: &C) {
    let Some(scratch) = scratch() else { return };
    let scratch: *mut Scratch = scratch;
    // SAFETY: the per-CPU scratch value, left by the program that tail-called this one on this
    // CPU (tail calls do not migrate).
    let (cursor, data) = unsafe { ((*scratch).cursor, (*scratch).data.as_mut_ptr()) };
    let (copied, failed, next) = copy_iovecs(
        data,
        cursor.iov,
        cursor.iovcnt,
        cursor.next,
        cursor.copied,
        cursor.end,
    );
    let truncated = match (next, ctx.iov_continue()) {
        (Some(next), Some(table)) => {
            // SAFETY: as above.
            unsafe {
                (*scratch).cursor.next = next;
                (*scratch).cursor.copied = copied;
            }
            // SAFETY: a tail call into this same program.
            let _ = unsafe { table.tail_call(ctx, 0) };
            true
        }
        (next, None) => next.is_some(),
        (None, _) => false,
    };
    finish_record(scratch, copied, failed, truncated);
}

/// Sets the record's captured length and flags, counts, and outputs it.
#[inline(always)]
fn finish_record(scratch: *mut Scratch, captured: u64, failed: bool, truncated: bool) {
    // SAFETY: the per-CPU scratch value, header filled by `emit_data`.
    let header = unsafe { &mut (*scratch).header };
    if failed {
        header.flags |= data_flags::READ_FAILED;
        count(counter::READ_FAILED, 1);
    }
    if truncated {
        header.flags |= data_flags::IOV_TRUNCATED;
        count(counter::IOV_TRUNCATED, 1);
    }
    let captured = if captured > MAX_CAPTURE as u64 {
        MAX_CAPTURE as u64
    } else {
        captured
    };
    header.captured = captured as u32;
    let walked = header.flags & data_flags::H2_WALKED != 0;
    if walked {
        header.h2_frame = crate::h2::first_frame(captured);
    }
    let bytes = header.bytes;
    // Plaintext was counted as ciphertext by the syscalls under it.
    if header.flags & data_flags::TLS_PLAINTEXT == 0 {
        count(counter::BYTES_TOTAL, bytes);
        if header.flags & data_flags::TLS_CIPHERTEXT == 0 {
            count(counter::BYTES_NOT_CAPTURED, bytes.saturating_sub(captured));
        }
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
    if walked {
        // Even when the record was lost: the walk keeps the frame positions for the next one.
        crate::h2::walk(captured);
    }
}
