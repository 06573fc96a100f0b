//! Where a socket leaves its fd: `close`, and `dup2`/`dup3` putting another file at an fd that
//! held one. Either way the connection ends there for the process, and user space hears of it
//! (a connection record of kind `CONN_CLOSE`) with the stream totals and the kernel's count of
//! retransmits.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use netsonde_common::{ConnCloseEvent, SocketEntry, UNKNOWN_RETRANSMITS, counter, kind};

use crate::{
    kernel::{self, announced_socket, is_announced, socket_key},
    maps::{EVENTS, SOCKETS, count, offset, output_flags},
    net, noop, now,
    regs::SyscallCtx,
};

/// Tells user space that `sock`, announced at `fd` of the current process, ended there, and
/// forgets the socket's per-packet state.
#[inline(always)]
fn emit_close(pid_tgid: u64, fd: i32, sock: &SocketEntry) {
    let ev = ConnCloseEvent {
        kind: kind::CONN_CLOSE,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        fd,
        sock: sock.sock,
        ts_ns: now(),
        egress_bytes: sock.egress_bytes,
        ingress_bytes: sock.ingress_bytes,
        tls_egress_bytes: sock.tls_egress_bytes,
        tls_ingress_bytes: sock.tls_ingress_bytes,
        // Announced sockets are TCP ones: the kernel's count of what it retransmitted, read
        // while the socket is still open.
        total_retransmits: kernel::read::<u32>(sock.sock + offset!(tcp_total_retrans))
            .unwrap_or(UNKNOWN_RETRANSMITS),
        _reserved: 0,
    };
    if EVENTS.output::<ConnCloseEvent>(&ev, output_flags()).is_ok() {
        count(counter::CLOSE_EVENTS, 1);
    } else {
        count(counter::CLOSE_LOST, 1);
    }
    net::forget_socket(sock.sock);
}

/// close() releases the fd even when it fails with EINTR, so the entry is where the socket
/// ends; it only looks at the fd cache, never walks the fd table.
#[inline(always)]
fn close_fd<C: SyscallCtx>(ctx: &C) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let fd = ctx.sys_arg::<0>() as i32;
    let key = socket_key(tgid, fd);
    let announced = announced_socket(tgid, fd);
    // A compat syscall with this number is another syscall (at worst a cached fd forgotten).
    if announced.is_some() && ctx.compat() {
        return;
    }
    if let Some(sock) = announced {
        emit_close(pid_tgid, fd, &sock);
    }
    let _ = SOCKETS.remove(&key);
}

#[raw_tracepoint]
pub fn enter_close(ctx: RawTracePointContext) -> u32 {
    if !noop() {
        close_fd(&ctx);
    }
    0
}

#[btf_tracepoint]
pub fn enter_close_btf(ctx: BtfTracePointContext) -> u32 {
    if !noop() {
        close_fd(&ctx);
    }
    0
}

/// `dup2(old, new)` and `dup3(old, new, flags)` return `new` when they succeed, and close what
/// was there first. Read at the exit, where the outcome is known: `new` holds another file than
/// the one cached for it when a socket left it. `dup2(fd, fd)` leaves the same file and ends
/// nothing. The socket is still open here: the kernel releases the last reference to a file
/// on the way back to user space, after this tracepoint. A cached entry for anything else is
/// dropped too (the next syscall on the fd would find the file changed anyway).
#[inline(always)]
fn fd_replaced<C: SyscallCtx>(ctx: &C) {
    let new_fd = ctx.sys_ret();
    if new_fd < 0 {
        return;
    }
    let fd = new_fd as i32;
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = socket_key((pid_tgid >> 32) as u32, fd);
    // SAFETY: copied out before any other map operation.
    let Some(cached) = (unsafe { SOCKETS.get(&key) }).copied() else {
        return;
    };
    // A compat syscall with this number is another syscall.
    if ctx.fd_file(fd) == Some(cached.file) || ctx.compat() {
        return;
    }
    if is_announced(&cached) {
        emit_close(pid_tgid, fd, &cached);
    }
    let _ = SOCKETS.remove(&key);
}

/// `fd_replaced` at the exits of `dup2` and `dup3` (a program each: a program fills one
/// dispatch slot, and is loaded once).
macro_rules! replacing_programs {
    ($raw:ident, $btf:ident) => {
        #[raw_tracepoint]
        pub fn $raw(ctx: RawTracePointContext) -> u32 {
            if !noop() {
                fd_replaced(&ctx);
            }
            0
        }

        #[btf_tracepoint]
        pub fn $btf(ctx: BtfTracePointContext) -> u32 {
            if !noop() {
                fd_replaced(&ctx);
            }
            0
        }
    };
}

replacing_programs!(exit_dup2, exit_dup2_btf);
replacing_programs!(exit_dup3, exit_dup3_btf);
