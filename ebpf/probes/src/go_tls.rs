//! TLS plaintext of Go programs: uprobes on `crypto/tls.(*Conn).Write` and `.Read`.
//!
//! Go does not use a C library, and return probes are unsafe there (a uretprobe rewrites the
//! return address on the stack, and Go moves goroutine stacks as they grow).
//!
//! - `Write`'s plaintext is all there when it is called: `go_tls_write` emits it then, from a
//!   uprobe placed after the function's stack check (which runs once per call; the entry runs
//!   again when the stack grows). Emitted at the return instead, a request could reach the ring
//!   after its response: another goroutine, on another thread, reads the response as soon as
//!   the bytes are on the wire, while the writing thread has not reached its `RET` yet.
//! - `Read`'s plaintext exists once it returns: the entry program saves the call by goroutine,
//!   and user space puts an ordinary uprobe on each `RET` instruction (`go_tls_read_return`).
//!   Another goroutine may close the connection while the read decrypts what it received: the
//!   entry notes the socket, and a return whose fd no longer holds it counts its bytes as
//!   `TLS_AFTER_CLOSE` instead of emitting them on a connection already reported closed.
//!
//! Go's register ABI (Go 1.17 and later, x86-64): the receiver `*Conn` in RAX, the byte
//! slice's pointer and length in RBX and RCX, the result `n` in RAX, the current goroutine's
//! `g` in R14 (entry and returns are paired by goroutine, which may change threads in between).
//!
//! The socket is read from the `Conn` itself, not from syscalls (Go's netpoller reads ahead):
//! `tls.Conn.conn` (a `net.Conn` interface: type word, then data pointer) → `*net.TCPConn`,
//! whose `conn.fd` is its `*netFD` → `netFD.pfd.Sysfd`. Where each field is comes with the
//! uprobe, as its attach cookie ([`GoConnLayout`]): user space reads it from the program's
//! DWARF, or takes Go's known layout when the program has none (`src/probes/go_layout.rs`).

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_attach_cookie, bpf_get_current_pid_tgid},
    macros::uprobe,
    programs::ProbeContext,
};
use netsonde_common::{GoConnLayout, GoroutineKey, TlsArgs, counter, syscall};

use crate::{
    capture::read_user,
    filter::traced,
    kernel::socket_key,
    maps::{GO_TLS_CALLS, SOCKETS, count},
    noop, now,
    tls::emit_plaintext,
};

/// The fd of the connection under the `*tls.Conn` at `conn`.
#[inline(always)]
fn conn_fd(layout: &GoConnLayout, conn: u64) -> Option<i32> {
    let tcp_conn: u64 = read_user(conn + layout.conn_data as u64)?;
    let net_fd: u64 = read_user(tcp_conn + layout.net_fd as u64)?;
    let sysfd: i64 = read_user(net_fd + layout.sysfd as u64)?;
    (0..=i32::MAX as i64)
        .contains(&sysfd)
        .then_some(sysfd as i32)
}

/// A call on the `*tls.Conn` at `conn` with the buffer at `buf`, starting now; `None` when the
/// connection is closed (its fd reads -1: the call fails, nothing moves) or the uprobe came
/// without a layout (user space always gives one).
#[inline(always)]
fn call_on(ctx: &ProbeContext, call: u16, conn: u64, buf: u64) -> Option<TlsArgs> {
    // SAFETY: the helper reads the cookie of the link that ran this program.
    let layout = GoConnLayout::from_cookie(unsafe { bpf_get_attach_cookie(ctx.as_ptr()) })?;
    Some(TlsArgs {
        call,
        returned: 0,
        fd: conn_fd(&layout, conn)?,
        ssl: conn,
        buf,
        len_ptr: 0,
        enter_ns: now(),
        sock_in_call: 0,
    })
}

/// `func (c *Conn) Write(b []byte) (int, error)`, after its stack check: the plaintext is
/// emitted now, all of `b` (a `Write` returns fewer bytes only with an error that ends the
/// connection).
#[uprobe]
pub fn go_tls_write(ctx: ProbeContext) -> u32 {
    if noop() {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if !traced((pid_tgid >> 32) as u32) {
        return 0;
    }
    // SAFETY: the probe's register frame, valid for the program's run.
    let (conn, buf, len) = unsafe { ((*ctx.regs).rax, (*ctx.regs).rbx, (*ctx.regs).rcx) };
    if len == 0 {
        return 0;
    }
    let Some(call) = call_on(&ctx, syscall::SSL_WRITE, conn, buf) else {
        return 0;
    };
    emit_plaintext(pid_tgid, &call, call.fd, len, true);
    0
}

/// Entry of `func (c *Conn) Read(b []byte) (int, error)`: the call is saved by goroutine.
#[uprobe]
pub fn go_tls_read_enter(ctx: ProbeContext) -> u32 {
    if noop() {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !traced(tgid) {
        return 0;
    }
    // SAFETY: the probe's register frame, valid for the program's run.
    let (conn, buf, g) = unsafe { ((*ctx.regs).rax, (*ctx.regs).rbx, (*ctx.regs).r14) };
    let Some(mut call) = call_on(&ctx, syscall::SSL_READ, conn, buf) else {
        return 0;
    };
    // Another goroutine may close the connection while this one decrypts what it received
    // (Go's close(2) waits for the read's own syscall, not for `Read` to return): the socket
    // noted now tells the return whether the fd still holds it (`emit_plaintext`).
    // SAFETY: copied out at once.
    if let Some(entry) = unsafe { SOCKETS.get(&socket_key(tgid, call.fd)) } {
        call.sock_in_call = entry.sock;
    }
    // The function's stack check may grow the stack and run the entry again: same goroutine,
    // same arguments, so the second save replaces the first.
    if GO_TLS_CALLS
        .insert(&GoroutineKey { g, tgid, _pad: 0 }, &call, 0)
        .is_err()
    {
        count(counter::IN_FLIGHT_FULL, 1);
    }
    0
}

/// Each `RET` of `Read`: the goroutine's call ends with `n` bytes read.
#[uprobe]
pub fn go_tls_read_return(ctx: ProbeContext) -> u32 {
    if noop() {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the probe's register frame, valid for the program's run.
    let (n, g) = unsafe { ((*ctx.regs).rax as i64, (*ctx.regs).r14) };
    let key = GoroutineKey {
        g,
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
    };
    // SAFETY: copied out at once.
    let Some(call) = (unsafe { GO_TLS_CALLS.get(&key) }).copied() else {
        // A `Read` that began before the program was hooked (its buffer is known only at
        // entry): what it read is lost, and counted.
        if n > 0 && traced(key.tgid) {
            count(counter::TLS_READ_UNSEEN, 1);
        }
        return 0;
    };
    let _ = GO_TLS_CALLS.remove(&key);
    if n <= 0 {
        return 0;
    }
    emit_plaintext(pid_tgid, &call, call.fd, n as u64, false);
    0
}
