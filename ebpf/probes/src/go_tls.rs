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
//!
//! Go's register ABI (Go 1.17 and later, x86-64): the receiver `*Conn` in RAX, the byte
//! slice's pointer and length in RBX and RCX, the result `n` in RAX, the current goroutine's
//! `g` in R14 (entry and returns are paired by goroutine, which may change threads in between).
//!
//! The socket is read from the `Conn` itself, not from syscalls (Go's netpoller reads ahead):
//! `tls.Conn.conn` (a `net.Conn` interface, first field: type word, then data pointer) →
//! `*net.TCPConn`, whose first word is its `*netFD` → `netFD.pfd` (`poll.FD`, first field) →
//! `Sysfd`, after `fdmu` (a `fdMutex`: uint64 + 2 × uint32). The same since Go 1.9 in Go's
//! sources; `tests/go_tls.rs` checks them on Go 1.26 and 1.27.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::uprobe, programs::ProbeContext};
use netsonde_common::{GoroutineKey, TlsArgs, counter, syscall};

use crate::{
    capture::read_user,
    filter::traced,
    maps::{GO_TLS_CALLS, count},
    noop, now,
    tls::emit_plaintext,
};

/// `tls.Conn.conn`'s data word: the interface's second word.
const CONN_DATA: u64 = 8;
/// `poll.FD.Sysfd`: after `fdmu` (16 bytes).
const SYSFD: u64 = 16;

/// The fd of the connection under the `*tls.Conn` at `conn`.
#[inline(always)]
fn conn_fd(conn: u64) -> Option<i32> {
    let tcp_conn: u64 = read_user(conn + CONN_DATA)?;
    let net_fd: u64 = read_user(tcp_conn)?;
    let sysfd: i64 = read_user(net_fd + SYSFD)?;
    (0..=i32::MAX as i64)
        .contains(&sysfd)
        .then_some(sysfd as i32)
}

/// A call on the `*tls.Conn` at `conn` with the buffer at `buf`, starting now; `None` when the
/// connection is closed (its fd reads -1: the call fails, nothing moves).
#[inline(always)]
fn call_on(call: u16, conn: u64, buf: u64) -> Option<TlsArgs> {
    Some(TlsArgs {
        call,
        returned: 0,
        fd: conn_fd(conn)?,
        ssl: conn,
        buf,
        len_ptr: 0,
        enter_ns: now(),
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
    let Some(call) = call_on(syscall::SSL_WRITE, conn, buf) else {
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
    let Some(call) = call_on(syscall::SSL_READ, conn, buf) else {
        return 0;
    };
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
        return 0;
    };
    let _ = GO_TLS_CALLS.remove(&key);
    if n > 0 {
        emit_plaintext(pid_tgid, &call, call.fd, n as u64, false);
    }
    0
}
