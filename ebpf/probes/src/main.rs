//! netsonde's eBPF programs: the syscall layer.
//!
//! Entry programs check the process filter, resolve the fd to a TCP socket (cached per fd), and
//! save the arguments by thread; exit programs pair with them, copy the payload prefix and emit
//! one record per syscall. Connection records come from connect/accept exits, from the first
//! data syscall on a socket that predates netsonde, and from close.
//!
//! Every syscall passes the raw `sys_enter` and `sys_exit` tracepoints; their programs hand the
//! syscalls netsonde reads, by tail call on the syscall number, to one program each (the slots
//! of `SYSCALL_ENTRIES` and `SYSCALL_EXITS`), and let every other syscall go at once. Two links
//! instead of one per syscall and direction: detaching a classic tracepoint costs an RCU grace
//! period each, under one kernel mutex, which made stopping take seconds. The arguments are read
//! from the registers the tracepoints pass (`struct pt_regs`, offsets from BTF).

#![no_std]
// The BPF target has no `AtomicU64::fetch_add` (no compare-and-swap), but the kernel's atomic
// add is an instruction of its own: the intrinsic emits it (`filter::decisions_changed`).
#![feature(core_intrinsics)]
#![allow(internal_features)]
#![no_main]

mod arrivals;
mod capture;
mod closing;
mod filter;
mod go_tls;
mod h2;
mod in_flight;
mod kernel;
mod layers;
mod maps;
mod net;
mod regs;
mod socket_layer;
mod tls;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use netsonde_common::{
    ConnOpenEvent, ProcessEvent, ProcessExitEvent, SyscallArgs, counter, data_flags, direction,
    kind, origin, syscall,
};

use crate::{
    capture::{MSGHDR_IOV, MSGHDR_IOVLEN, continue_iovecs, emit_data, mmsg_bytes, read_user},
    filter::{forget, forget_process, inherit, traced},
    in_flight::{save_args, take_args},
    kernel::{
        advance_stream, fill_addresses, left_its_fd, mark_announced, process_comm, tcp_socket,
    },
    maps::{
        EVENTS, IN_FLIGHT, SYSCALL_ENTRIES, SYSCALL_ENTRIES_BTF, SYSCALL_EXITS, SYSCALL_EXITS_BTF,
        config, count, offset, output_flags,
    },
    regs::SyscallCtx,
};

const EINPROGRESS: i64 = 115;

/// Every syscall's entry: on to the program for its number, if there is one.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> u32 {
    let nr: u64 = ctx.arg(1);
    // SAFETY: a tail call; an empty slot or a number past the table comes back here.
    unsafe { SYSCALL_ENTRIES.tail_call(&ctx, nr as u32) };
    0
}

/// Every syscall's exit: on to the program for its number (from the saved registers).
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> u32 {
    // SAFETY: as in `sys_enter`.
    unsafe { SYSCALL_EXITS.tail_call(&ctx, ctx.sys_nr()) };
    0
}

/// `sys_enter` at the BTF-typed tracepoint (see `regs`).
#[btf_tracepoint]
pub fn sys_enter_btf(ctx: BtfTracePointContext) -> u32 {
    let nr: u64 = ctx.arg(1);
    // SAFETY: as in `sys_enter`.
    unsafe { SYSCALL_ENTRIES_BTF.tail_call(&ctx, nr as u32) };
    0
}

/// `sys_exit` at the BTF-typed tracepoint.
#[btf_tracepoint]
pub fn sys_exit_btf(ctx: BtfTracePointContext) -> u32 {
    // SAFETY: as in `sys_enter`.
    unsafe { SYSCALL_EXITS_BTF.tail_call(&ctx, ctx.sys_nr()) };
    0
}

#[inline(always)]
pub(crate) fn now() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub(crate) fn noop() -> bool {
    config!(noop) != 0
}

const MSG_PEEK: u64 = 2;

/// Whether a receive only peeks: its bytes stay queued and will be read again (nginx peeks
/// one byte of every new connection to tell TLS from plaintext).
#[inline(always)]
fn peeks<C: SyscallCtx>(ctx: &C, sc: u16) -> bool {
    match sc {
        syscall::RECVFROM => ctx.sys_arg::<3>() & MSG_PEEK != 0,
        syscall::RECVMSG => ctx.sys_arg::<2>() & MSG_PEEK != 0,
        _ => false,
    }
}

/// How a syscall passes its bytes, which says which arguments to read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `(fd, buf, len …)`
    Buffer,
    /// `(fd, iov, iovcnt)`, also `(fd, mmsg, vlen …)`
    Iovec,
    /// `(fd, msg, flags)`: the iovecs are read from the msghdr.
    Msghdr,
    /// `(fd, …)`, no payload
    FdOnly,
}

/// Saves the arguments of a syscall when its fd is a TCP socket of a traced process (and,
/// when `only_sk` is not 0, when that socket is `only_sk`: the one a socket-layer call is on).
/// Whether the process is traced is asked first: the registers are only read for processes
/// that are.
#[inline(always)]
pub(crate) fn enter_on_socket<C: SyscallCtx>(ctx: &C, sc: u16, shape: Shape, only_sk: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !traced(tgid) || ctx.compat() || peeks(ctx, sc) {
        return;
    }
    let fd = ctx.sys_arg::<0>() as i32;
    let Some(sock) = tcp_socket(ctx, tgid, fd) else {
        return;
    };
    if only_sk != 0 && sock.sock != only_sk {
        return;
    }
    let (buf, iovcnt) = match shape {
        Shape::Buffer => (ctx.sys_arg::<1>(), 0),
        Shape::Iovec => (ctx.sys_arg::<1>(), ctx.sys_arg::<2>()),
        Shape::Msghdr => {
            let msg = ctx.sys_arg::<1>();
            let iov: u64 = read_user(msg + MSGHDR_IOV).unwrap_or(0);
            let iovcnt: u64 = read_user(msg + MSGHDR_IOVLEN).unwrap_or(0);
            (iov, iovcnt)
        }
        Shape::FdOnly => (0, 0),
    };
    // Inside a TLS library call, or on a socket one was seen using: the bytes are ciphertext.
    let in_tls_call = tls::note_nested_syscall(pid_tgid, fd, sock.sock);
    let flags = if in_tls_call || sock.tls != 0 {
        data_flags::TLS_CIPHERTEXT as u16
    } else {
        0
    };
    let args = SyscallArgs {
        syscall: sc,
        flags,
        fd,
        buf,
        iovcnt,
        sock: sock.sock,
        enter_ns: now(),
    };
    save_args(pid_tgid, &args);
}

/// Announces a connection to user space.
#[inline(always)]
pub(crate) fn emit_open(
    pid_tgid: u64,
    args: &SyscallArgs,
    how: u32,
    fd: i32,
    rc: i64,
    exit_ns: u64,
) {
    let tgid = (pid_tgid >> 32) as u32;
    let mut ev = ConnOpenEvent {
        kind: kind::CONN_OPEN,
        origin: how,
        tgid,
        tid: pid_tgid as u32,
        fd,
        syscall: args.syscall,
        ret: rc as i32,
        sock: args.sock,
        enter_ns: args.enter_ns,
        exit_ns,
        comm: process_comm(),
        // SAFETY: a plain helper call, valid in every program type netsonde uses.
        cgroup_id: unsafe { aya_ebpf::helpers::bpf_get_current_cgroup_id() },
        established_ns: if how == origin::ACCEPT {
            net::take_established(args.sock)
        } else {
            0
        },
        ..ConnOpenEvent::default()
    };
    fill_addresses(&mut ev, args.sock);
    if EVENTS.output::<ConnOpenEvent>(&ev, output_flags()).is_ok() {
        count(counter::CONN_EVENTS, 1);
        mark_announced(tgid, fd);
        net::know_socket(args.sock, tgid, fd);
    } else {
        // Not marked: the next data syscall on this socket announces it instead.
        count(counter::CONN_LOST, 1);
    }
}

/// Exit of a read- or write-like syscall.
#[inline(always)]
pub(crate) fn exit_data<C: SyscallCtx>(ctx: &C, sc: u16, dir: u8) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = take_args(pid_tgid, sc) else {
        return;
    };
    let rc = ctx.sys_ret();
    if rc <= 0 {
        return;
    }
    let exit_ns = now();
    let tgid = (pid_tgid >> 32) as u32;
    // For sendmmsg/recvmmsg the return value counts messages; the bytes are in each msg_len.
    let (bytes, messages) = match sc {
        syscall::SENDMMSG | syscall::RECVMMSG => (mmsg_bytes(args.buf, rc as u64), rc as u64),
        _ => (rc as u64, 0),
    };
    let egress = dir == direction::EGRESS;
    let advanced = advance_stream(tgid, args.fd, egress, false, bytes, args.sock);
    if advanced.is_none() && left_its_fd(ctx, args.fd, args.sock) {
        // Another thread closed the fd during the call (that close was reported), and another
        // socket may hold the number by now: these bytes belong to no connection user space
        // still has, and must not move the new socket's stream position.
        count(counter::AFTER_CLOSE, 1);
        return;
    }
    let pos = advanced.as_ref().map_or(0, |a| a.pos);
    if !advanced.as_ref().is_some_and(|a| a.announced) {
        emit_open(pid_tgid, &args, origin::EXISTING, args.fd, 0, exit_ns);
    }
    // HTTP/2 frames past the prefix are followed on every path (see `h2`); TLS ciphertext is
    // followed as plaintext, through the library calls.
    let mut args = args;
    if let Some(a) = advanced
        && args.flags & data_flags::TLS_CIPHERTEXT as u16 == 0
    {
        let (source, iovcnt) = match sc {
            syscall::READ | syscall::WRITE | syscall::RECVFROM | syscall::SENDTO => {
                (h2::source::PLAIN, 0)
            }
            syscall::READV | syscall::WRITEV | syscall::RECVMSG | syscall::SENDMSG => {
                (h2::source::IOV, args.iovcnt)
            }
            syscall::SENDFILE => (h2::source::FILE, 0),
            _ => (h2::source::NONE, 0),
        };
        if h2::followed(
            a.entry, a.key, egress, false, pos, bytes, source, args.buf, iovcnt,
        ) {
            args.flags |= data_flags::H2_WALKED as u16;
        }
    }
    emit_data(
        Some(ctx),
        pid_tgid,
        &args,
        bytes,
        messages,
        pos,
        dir,
        exit_ns,
    );
}

/// The rest of a long iovec array (see `capture::emit_data`): reached by tail call only.
#[raw_tracepoint]
pub fn iov_continue(ctx: RawTracePointContext) -> u32 {
    continue_iovecs(&ctx);
    0
}

/// `iov_continue` for the `tp_btf` exit programs.
#[btf_tracepoint]
pub fn iov_continue_btf(ctx: BtfTracePointContext) -> u32 {
    continue_iovecs(&ctx);
    0
}

/// A syscall's entry and exit programs, once per hook: `$raw_*` for the raw tracepoints,
/// `$btf_*` for the BTF-typed ones (see `regs`); both run `$enter_body`/`$exit_body` on their
/// context.
macro_rules! syscall_programs {
    (
        $raw_enter:ident, $raw_exit:ident, $btf_enter:ident, $btf_exit:ident,
        |$ctx:ident| enter: $enter_body:expr, exit: $exit_body:expr $(,)?
    ) => {
        #[raw_tracepoint]
        pub fn $raw_enter($ctx: RawTracePointContext) -> u32 {
            if !noop() {
                $enter_body;
            }
            0
        }

        #[raw_tracepoint]
        pub fn $raw_exit($ctx: RawTracePointContext) -> u32 {
            if !noop() {
                $exit_body;
            }
            0
        }

        #[btf_tracepoint]
        pub fn $btf_enter($ctx: BtfTracePointContext) -> u32 {
            if !noop() {
                $enter_body;
            }
            0
        }

        #[btf_tracepoint]
        pub fn $btf_exit($ctx: BtfTracePointContext) -> u32 {
            if !noop() {
                $exit_body;
            }
            0
        }
    };
}

/// A read- or write-like syscall: its entry saves the arguments `$shape` says, its exit emits
/// the record.
macro_rules! data_syscall {
    ([$($name:ident),+], $sc:expr, $dir:expr, $shape:expr) => {
        syscall_programs!(
            $($name),+,
            |ctx| enter: enter_on_socket(&ctx, $sc, $shape, 0),
            exit: exit_data(&ctx, $sc, $dir),
        );
    };
}

// ---- read/write-like syscalls: (fd, buf, len …) ------------------------------------------

data_syscall!(
    [enter_read, exit_read, enter_read_btf, exit_read_btf],
    syscall::READ,
    direction::INGRESS,
    Shape::Buffer
);
data_syscall!(
    [enter_write, exit_write, enter_write_btf, exit_write_btf],
    syscall::WRITE,
    direction::EGRESS,
    Shape::Buffer
);
data_syscall!(
    [
        enter_recvfrom,
        exit_recvfrom,
        enter_recvfrom_btf,
        exit_recvfrom_btf
    ],
    syscall::RECVFROM,
    direction::INGRESS,
    Shape::Buffer
);
data_syscall!(
    [enter_sendto, exit_sendto, enter_sendto_btf, exit_sendto_btf],
    syscall::SENDTO,
    direction::EGRESS,
    Shape::Buffer
);
data_syscall!(
    [
        enter_sendfile,
        exit_sendfile,
        enter_sendfile_btf,
        exit_sendfile_btf
    ],
    syscall::SENDFILE,
    direction::EGRESS,
    Shape::Buffer
);

// ---- iovec syscalls: (fd, iov, iovcnt) --------------------------------------------------

data_syscall!(
    [enter_readv, exit_readv, enter_readv_btf, exit_readv_btf],
    syscall::READV,
    direction::INGRESS,
    Shape::Iovec
);
data_syscall!(
    [enter_writev, exit_writev, enter_writev_btf, exit_writev_btf],
    syscall::WRITEV,
    direction::EGRESS,
    Shape::Iovec
);

// ---- msghdr syscalls: (fd, msg, flags); the iovecs are read from the msghdr at entry ------

data_syscall!(
    [
        enter_recvmsg,
        exit_recvmsg,
        enter_recvmsg_btf,
        exit_recvmsg_btf
    ],
    syscall::RECVMSG,
    direction::INGRESS,
    Shape::Msghdr
);
data_syscall!(
    [
        enter_sendmsg,
        exit_sendmsg,
        enter_sendmsg_btf,
        exit_sendmsg_btf
    ],
    syscall::SENDMSG,
    direction::EGRESS,
    Shape::Msghdr
);

// ---- mmsghdr syscalls: (fd, mmsg, vlen …); the return value counts messages ---------------

data_syscall!(
    [
        enter_recvmmsg,
        exit_recvmmsg,
        enter_recvmmsg_btf,
        exit_recvmmsg_btf
    ],
    syscall::RECVMMSG,
    direction::INGRESS,
    Shape::Iovec
);
data_syscall!(
    [
        enter_sendmmsg,
        exit_sendmmsg,
        enter_sendmmsg_btf,
        exit_sendmmsg_btf
    ],
    syscall::SENDMMSG,
    direction::EGRESS,
    Shape::Iovec
);

// ---- connection lifecycle ------------------------------------------------------------------

/// Exit of connect(): announces the connection, also when a non-blocking connect returns
/// -EINPROGRESS with the addresses already chosen.
#[inline(always)]
fn finish_connect<C: SyscallCtx>(ctx: &C) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = take_args(pid_tgid, syscall::CONNECT) else {
        return;
    };
    let rc = ctx.sys_ret();
    if rc == 0 || rc == -EINPROGRESS {
        emit_open(pid_tgid, &args, origin::CONNECT, args.fd, rc, now());
    }
}

syscall_programs!(
    enter_connect,
    exit_connect,
    enter_connect_btf,
    exit_connect_btf,
    |ctx| enter: enter_on_socket(&ctx, syscall::CONNECT, Shape::FdOnly, 0),
    exit: finish_connect(&ctx),
);

/// Entry of accept/accept4: remembers the time; the socket only exists at exit.
#[inline(always)]
fn accept_start<C: SyscallCtx>(ctx: &C, sc: u16) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !traced((pid_tgid >> 32) as u32) || ctx.compat() {
        return;
    }
    let args = SyscallArgs {
        syscall: sc,
        fd: ctx.sys_arg::<0>() as i32,
        enter_ns: now(),
        ..SyscallArgs::default()
    };
    save_args(pid_tgid, &args);
}

#[inline(always)]
fn accept_end<C: SyscallCtx>(ctx: &C, sc: u16) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(mut args) = take_args(pid_tgid, sc) else {
        return;
    };
    let fd = ctx.sys_ret();
    if fd < 0 {
        return;
    }
    let fd = fd as i32;
    let Some(sock) = tcp_socket(ctx, (pid_tgid >> 32) as u32, fd) else {
        return;
    };
    args.sock = sock.sock;
    args.fd = fd;
    emit_open(pid_tgid, &args, origin::ACCEPT, fd, 0, now());
}

syscall_programs!(
    enter_accept,
    exit_accept,
    enter_accept_btf,
    exit_accept_btf,
    |ctx| enter: accept_start(&ctx, syscall::ACCEPT),
    exit: accept_end(&ctx, syscall::ACCEPT),
);
syscall_programs!(
    enter_accept4,
    exit_accept4,
    enter_accept4_btf,
    exit_accept4_btf,
    |ctx| enter: accept_start(&ctx, syscall::ACCEPT4),
    exit: accept_end(&ctx, syscall::ACCEPT4),
);

// ---- process lifecycle ---------------------------------------------------------------------

/// Writes a process-lifecycle record.
#[inline(always)]
fn emit_process(kind: u32, tgid: u32, parent_tgid: u32, traced: bool) {
    let ev = ProcessEvent {
        kind,
        tgid,
        parent_tgid,
        traced: u32::from(traced),
        ts_ns: now(),
    };
    // Woken at once: a new program may load a TLS library user space must hook before the
    // program's first request.
    let wake = aya_ebpf::bindings::BPF_RB_FORCE_WAKEUP as u64;
    if EVENTS.output::<ProcessEvent>(&ev, wake).is_ok() {
        count(counter::PROCESS_EVENTS, 1);
    } else {
        count(counter::PROCESS_LOST, 1);
    }
}

const CLONE_THREAD: u64 = 0x0001_0000;

/// A task is being created (in its parent's context, before it first runs). A new process
/// whose parent is monitored joins the monitored set here, so nothing it does is missed; user
/// space hears of it to confirm or remove it. Threads share their process's decision.
#[raw_tracepoint(tracepoint = "task_newtask")]
pub fn task_newtask(ctx: RawTracePointContext) -> u32 {
    if noop() {
        return 0;
    }
    // TP_PROTO(struct task_struct *task, u64 clone_flags)
    let (task, flags): (u64, u64) = (ctx.arg(0), ctx.arg(1));
    if flags & CLONE_THREAD != 0 {
        return 0;
    }
    let Some(child) = kernel::read::<i32>(task + offset!(task_pid)) else {
        return 0;
    };
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    if child > 0 && inherit(parent, child as u32) {
        emit_process(kind::PROCESS_FORK, child as u32, parent, true);
    }
    0
}

/// A new program image has a new name: decide again whether to trace it, and tell user space
/// about a traced one, which is when it looks for TLS libraries to hook (about every one when
/// user space decides on pods and exclusions the kernel cannot see).
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn process_exec(_ctx: RawTracePointContext) -> u32 {
    if noop() {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    forget(tgid);
    let is_traced = traced(tgid);
    if is_traced || config!(exec_all) != 0 {
        emit_process(kind::PROCESS_EXEC, tgid, 0, is_traced);
    }
    0
}

/// A thread exits: nothing it had in flight will finish. When it is the main thread of a
/// traced process, the process's connections end without close().
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn process_exit(_ctx: RawTracePointContext) -> u32 {
    if noop() {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    // Per-thread state goes with the thread (the LRU would evict it eventually; this is now).
    let _ = IN_FLIGHT.remove(&pid_tgid);
    net::forget_thread(pid_tgid);
    tls::forget_thread(pid_tgid);
    let tgid = (pid_tgid >> 32) as u32;
    if pid_tgid as u32 != tgid {
        return 0;
    }
    let was_traced = traced(tgid);
    // Always forget: a cached "not traced" must not outlive the pid, which will be reused.
    forget_process(tgid);
    if !was_traced {
        return 0;
    }
    let ev = ProcessExitEvent {
        kind: kind::PROCESS_EXIT,
        tgid,
        ts_ns: now(),
    };
    if EVENTS
        .output::<ProcessExitEvent>(&ev, output_flags())
        .is_ok()
    {
        count(counter::EXIT_EVENTS, 1);
    } else {
        count(counter::EXIT_LOST, 1);
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
