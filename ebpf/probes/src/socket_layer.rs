//! Socket-layer capture, where the kernel allows fentry: `read`, `write`, `recvfrom` and
//! `sendto` on sockets are read at `inet_recvmsg`/`inet6_recvmsg` and
//! `inet_sendmsg`/`inet6_sendmsg` instead of at the syscall tracepoints, so a process that
//! does these syscalls on files, pipes or terminals (a database on its disk, `dd`) pays
//! nothing for them: their slots in the dispatch tables stay empty.
//!
//! The programs run inside the syscall, on its thread, and take what they need from the
//! registers the task saved when it entered the kernel (`bpf_task_pt_regs`): the syscall's
//! number and its arguments, exactly as the tracepoint programs read them. So the entry saves
//! the same arguments (`enter_on_socket`) and the exit emits the same record (`exit_data`);
//! the fd, its socket cache and the stream positions are shared with the other syscalls on the
//! socket. The entry keeps a call only when the call's socket is the one behind the syscall's
//! fd. The `inet*` functions rather than `tcp_sendmsg`/`tcp_recvmsg`: a socket whose protocol
//! was replaced (kernel TLS) still passes them.
//!
//! The other syscalls that move bytes (iovecs, message headers, `sendfile`, several messages
//! per call) stay at the tracepoints: some call the socket layer more than once per syscall,
//! and long iovec arrays need the tracepoints' tail-call continuation, which a program here
//! cannot reach.

use aya_ebpf::{
    EbpfContext,
    bindings::task_struct,
    helpers::generated::bpf_task_pt_regs,
    macros::{fentry, fexit},
    maps::ProgramArray,
    programs::{FEntryContext, FExitContext},
};
use netsonde_common::{direction, feature, syscall};

use crate::{
    Shape, enter_on_socket, exit_data,
    layers::btf_arg,
    maps::{config, features, offset},
    noop,
    regs::{SyscallCtx, current_task_btf, typed_field},
};

/// An fentry or fexit program on a socket-layer function, seen as the syscall it runs in.
/// `RET`: where the return value is in an fexit's context (after the function's arguments).
struct SocketCall<C, const RET: usize>(C);

impl<C: EbpfContext, const RET: usize> EbpfContext for SocketCall<C, RET> {
    fn as_ptr(&self) -> *mut core::ffi::c_void {
        self.0.as_ptr()
    }
}

impl<C: EbpfContext, const RET: usize> SyscallCtx for SocketCall<C, RET> {
    #[inline(always)]
    fn task(&self) -> u64 {
        current_task_btf()
    }

    /// The user registers the task saved at the syscall's entry: a typed pointer, like the
    /// BTF-typed tracepoint's.
    #[inline(always)]
    fn regs(&self) -> u64 {
        // SAFETY: the helper takes the current task's typed pointer and returns a typed one.
        unsafe { bpf_task_pt_regs(current_task_btf() as *mut task_struct) as u64 }
    }

    /// A plain load, checked by the verifier against the kernel's BTF (as at `tp_btf`).
    #[inline(always)]
    fn field<T: Copy>(&self, base: u64, offset: u64) -> Option<T> {
        typed_field(base, offset)
    }

    /// The function's return value, after its arguments in an fexit's context (an `int`: the
    /// upper half of the register is not its).
    #[inline(always)]
    fn sys_ret(&self) -> i64 {
        btf_arg(&self.0, RET) as i32 as i64
    }

    /// None: the programs here read only single buffers (see the module's comment).
    #[inline(always)]
    fn iov_continue(&self) -> Option<&'static ProgramArray> {
        None
    }
}

/// The syscall a socket-layer call runs in, if it is one the socket layer reads:
/// `read`/`recvfrom` when `receive`, `write`/`sendto` otherwise.
#[inline(always)]
fn syscall_of<C: SyscallCtx>(ctx: &C, receive: bool) -> Option<u16> {
    if features() & feature::SOCKET_CAPTURE == 0 {
        return None;
    }
    let nr = ctx.sys_nr();
    match receive {
        true if nr == config!(nr_read) => Some(syscall::READ),
        true if nr == config!(nr_recvfrom) => Some(syscall::RECVFROM),
        false if nr == config!(nr_write) => Some(syscall::WRITE),
        false if nr == config!(nr_sendto) => Some(syscall::SENDTO),
        _ => None,
    }
}

/// Entry of `inet*_recvmsg`/`inet*_sendmsg(socket, …)`.
#[inline(always)]
fn enter_call<C: SyscallCtx>(ctx: &C, socket: u64, receive: bool) {
    let Some(sc) = syscall_of(ctx, receive) else {
        return;
    };
    let Some(sk) = ctx.field::<u64>(socket, offset!(socket_sk)) else {
        return;
    };
    if sk != 0 {
        enter_on_socket(ctx, sc, Shape::Buffer, sk);
    }
}

/// Exit of `inet*_recvmsg`/`inet*_sendmsg`: the record of the syscall's bytes.
#[inline(always)]
fn exit_call<C: SyscallCtx>(ctx: &C, receive: bool) {
    let Some(sc) = syscall_of(ctx, receive) else {
        return;
    };
    let dir = if receive {
        direction::INGRESS
    } else {
        direction::EGRESS
    };
    exit_data(ctx, sc, dir);
}

/// The fentry/fexit pair of one socket-layer function; `$args`: how many arguments it takes.
macro_rules! socket_call {
    ($function:literal, $fentry:ident, $fexit:ident, $receive:expr, $args:literal) => {
        #[fentry(function = $function)]
        pub fn $fentry(ctx: FEntryContext) -> i32 {
            if !noop() {
                let socket = btf_arg(&ctx, 0);
                enter_call(&SocketCall::<_, $args>(ctx), socket, $receive);
            }
            0
        }

        #[fexit(function = $function)]
        pub fn $fexit(ctx: FExitContext) -> i32 {
            if !noop() {
                exit_call(&SocketCall::<_, $args>(ctx), $receive);
            }
            0
        }
    };
}

// int inet_recvmsg(struct socket *sock, struct msghdr *msg, size_t size, int flags)
socket_call!(
    "inet_recvmsg",
    inet_recvmsg_fentry,
    inet_recvmsg_fexit,
    true,
    4
);
socket_call!(
    "inet6_recvmsg",
    inet6_recvmsg_fentry,
    inet6_recvmsg_fexit,
    true,
    4
);
// int inet_sendmsg(struct socket *sock, struct msghdr *msg, size_t size)
socket_call!(
    "inet_sendmsg",
    inet_sendmsg_fentry,
    inet_sendmsg_fexit,
    false,
    3
);
socket_call!(
    "inet6_sendmsg",
    inet6_sendmsg_fentry,
    inet6_sendmsg_fexit,
    false,
    3
);
