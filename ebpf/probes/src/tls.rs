//! TLS plaintext through uprobes on OpenSSL (1.1.x and 3.x): `SSL_read`, `SSL_write`,
//! `SSL_read_ex`, `SSL_write_ex`, in a shared libssl or inside an executable (Node.js, programs
//! linked statically).
//!
//! The entry program saves the call's arguments by thread. The syscalls OpenSSL makes inside
//! the call name the socket (`note_nested_syscall`), and mark it as carrying TLS so its
//! ciphertext is counted but never copied or parsed. The return program emits the plaintext as
//! a data record on that socket, with its own (plaintext) stream position. A read served from
//! OpenSSL's buffer makes no syscall: the socket then comes from the `SSL *` → fd cache.
//! Another thread may close the socket between a call's syscall and its return, and the fd
//! number be another socket's by then: the syscall notes its socket in the call, and a return
//! whose fd no longer holds it counts the bytes as `TLS_AFTER_CLOSE` instead of emitting them.
//!
//! Programs that give OpenSSL memory buffers instead of the socket (Node.js, Python's asyncio)
//! make their syscalls outside the calls. The socket of such an `SSL *` is learnt around the
//! call instead: a call that returns without one stays in `TLS_IN_FLIGHT`, and the thread's
//! next syscall on a TCP socket names it (the handshake's first flight, written right after
//! the call that produced it); a read that returns plaintext takes the socket the thread
//! received from last (the ciphertext it was decrypted from, read just before).

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use netsonde_common::{
    SslKey, SyscallArgs, TlsArgs, counter, data_flags, direction, origin, syscall,
};

use crate::{
    capture::{emit_data, read_user},
    emit_open,
    filter::traced,
    h2,
    kernel::{advance_stream, socket_key},
    maps::{IN_FLIGHT, SOCKETS, SSL_FDS, TLS_IN_FLIGHT, count},
    net::receives,
    noop, now,
};

/// Called by every syscall entry on a TCP socket of a traced process: when a TLS call is in
/// flight on this thread, or returned without knowing its socket, it is using `fd`, whose
/// socket is `sock`. Returns whether one was.
#[inline(always)]
pub fn note_nested_syscall(pid_tgid: u64, fd: i32, sock: u64) -> bool {
    let Some(call) = TLS_IN_FLIGHT.get_ptr_mut(&pid_tgid) else {
        return false;
    };
    // SAFETY: a pointer into this thread's own map value.
    let (ssl, known, returned) = unsafe {
        let known = (*call).fd;
        (*call).fd = fd;
        // Another thread may close the fd before the call returns (and the fd be another
        // socket's by then): the return checks the fd still holds this socket.
        (*call).sock_in_call = sock;
        ((*call).ssl, known, (*call).returned != 0)
    };
    // A call makes several syscalls on its socket: it is named once.
    if known != fd {
        bind(pid_tgid, ssl, fd);
    }
    if returned {
        let _ = TLS_IN_FLIGHT.remove(&pid_tgid);
    }
    true
}

/// Remembers that `ssl` of the current process uses `fd`, and marks the socket as TLS.
#[inline(always)]
fn bind(pid_tgid: u64, ssl: u64, fd: i32) {
    let tgid = (pid_tgid >> 32) as u32;
    let key = SslKey { ssl, tgid, _pad: 0 };
    let _ = SSL_FDS.insert(&key, &fd, 0);
    if let Some(entry) = SOCKETS.get_ptr_mut(&socket_key(tgid, fd)) {
        // SAFETY: a pointer into the map value; setting a flag races harmlessly.
        unsafe { (*entry).tls = 1 };
    }
}

/// The TCP socket this thread last received from, if its last syscall on a socket was a
/// receive (the slot keeps its arguments when idle).
#[inline(always)]
fn last_receive(pid_tgid: u64) -> Option<i32> {
    let slot = IN_FLIGHT.get_ptr_mut(&pid_tgid)?;
    // SAFETY: this thread's own slot, read by this thread.
    let last = unsafe { *slot };
    (last.enter_ns == 0 && receives(last.syscall) && last.sock != 0).then_some(last.fd)
}

/// The thread exits: a TLS call it had in flight will not return.
#[inline(always)]
pub fn forget_thread(pid_tgid: u64) {
    let _ = TLS_IN_FLIGHT.remove(&pid_tgid);
}

#[inline(always)]
fn enter(call: u16, ssl: u64, buf: u64, len_ptr: u64) {
    if noop() {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if !traced((pid_tgid >> 32) as u32) {
        return;
    }
    let args = TlsArgs {
        call,
        returned: 0,
        fd: -1,
        ssl,
        buf,
        len_ptr,
        enter_ns: now(),
        sock_in_call: 0,
    };
    if TLS_IN_FLIGHT.insert(&pid_tgid, &args, 0).is_err() {
        count(counter::IN_FLIGHT_FULL, 1);
    }
}

#[inline(always)]
fn exit(call: u16, rc: i64) {
    if noop() {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(slot) = TLS_IN_FLIGHT.get_ptr_mut(&pid_tgid) else {
        return;
    };
    // SAFETY: this thread's own map value, copied out.
    let args = unsafe { *slot };
    if args.returned != 0 {
        // An earlier call's, waiting for its socket: this return has no entry of its own.
        return;
    }
    if args.call != call {
        let _ = TLS_IN_FLIGHT.remove(&pid_tgid);
        return;
    }
    // SSL_read/SSL_write return the byte count; the _ex calls return 1 and write the count.
    let bytes = match call {
        syscall::SSL_READ_EX | syscall::SSL_WRITE_EX if rc == 1 => {
            read_user::<u64>(args.len_ptr).unwrap_or(0)
        }
        syscall::SSL_READ | syscall::SSL_WRITE if rc > 0 => rc as u64,
        _ => 0,
    };
    let tgid = (pid_tgid >> 32) as u32;
    let egress = matches!(call, syscall::SSL_WRITE | syscall::SSL_WRITE_EX);
    let key = SslKey {
        ssl: args.ssl,
        tgid,
        _pad: 0,
    };
    let fd = if args.fd >= 0 {
        Some(args.fd)
    } else {
        // SAFETY: copied out at once.
        unsafe { SSL_FDS.get(&key) }.copied()
    };
    let fd = match fd {
        Some(fd) => fd,
        None => match (!egress && bytes > 0)
            .then(|| last_receive(pid_tgid))
            .flatten()
        {
            Some(fd) => {
                bind(pid_tgid, args.ssl, fd);
                fd
            }
            None => {
                // No socket yet: the thread's next syscall on one names it (see the module's
                // comment).
                // SAFETY: this thread's own map value.
                unsafe { (*slot).returned = 1 };
                if bytes > 0 {
                    count(counter::TLS_NO_SOCKET, 1);
                }
                return;
            }
        },
    };
    let _ = TLS_IN_FLIGHT.remove(&pid_tgid);
    if bytes == 0 {
        return;
    }
    emit_plaintext(pid_tgid, &args, fd, bytes, egress);
}

/// Emits `bytes` of plaintext the call `args` read or wrote through socket `fd`, on that
/// socket's plaintext stream.
#[inline(always)]
pub(crate) fn emit_plaintext(pid_tgid: u64, args: &TlsArgs, fd: i32, bytes: u64, egress: bool) {
    let tgid = (pid_tgid >> 32) as u32;
    let Some(advanced) = advance_stream(tgid, fd, egress, true, bytes, args.sock_in_call) else {
        // A socket seen during the call and gone from its fd by the return was closed
        // meanwhile (its close already reported): these bytes belong to no connection.
        let counter = if args.sock_in_call != 0 {
            counter::TLS_AFTER_CLOSE
        } else {
            counter::TLS_NO_SOCKET
        };
        count(counter, 1);
        return;
    };
    let (pos, sock) = (advanced.pos, advanced.sock);
    // Its ciphertext is counted, never copied (Go's calls name the socket only here).
    // SAFETY: a pointer into the map value; setting a flag races harmlessly.
    unsafe { (*advanced.entry).tls = 1 };
    if sock == 0 {
        count(counter::TLS_NO_SOCKET, 1);
        return;
    }
    let walked = h2::followed(
        advanced.entry,
        advanced.key,
        egress,
        true,
        pos,
        bytes,
        h2::source::PLAIN,
        args.buf,
        0,
    );
    let mut flags = data_flags::TLS_PLAINTEXT;
    if walked {
        flags |= data_flags::H2_WALKED;
    }
    let data = SyscallArgs {
        syscall: args.call,
        flags: flags as u16,
        fd,
        buf: args.buf,
        iovcnt: 0,
        sock,
        enter_ns: args.enter_ns,
    };
    let exit_ns = now();
    if !advanced.announced {
        emit_open(pid_tgid, &data, origin::EXISTING, fd, 0, exit_ns);
    }
    let dir = if egress {
        direction::EGRESS
    } else {
        direction::INGRESS
    };
    count(counter::TLS_EVENTS, 1);
    // A plain buffer: no iovecs, so no continuation (and no tail call from a uprobe); the
    // context type only names the continuation's table, never used here.
    emit_data::<aya_ebpf::programs::RawTracePointContext>(
        None, pid_tgid, &data, bytes, 0, pos, dir, exit_ns,
    );
}

/// `int SSL_read(SSL *ssl, void *buf, int num)`
#[uprobe]
pub fn ssl_read_enter(ctx: ProbeContext) -> u32 {
    let (ssl, buf) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1));
    enter(syscall::SSL_READ, ssl.unwrap_or(0), buf.unwrap_or(0), 0);
    0
}

#[uretprobe]
pub fn ssl_read_exit(ctx: RetProbeContext) -> u32 {
    exit(syscall::SSL_READ, ctx.ret::<i32>() as i64);
    0
}

/// `int SSL_write(SSL *ssl, const void *buf, int num)`
#[uprobe]
pub fn ssl_write_enter(ctx: ProbeContext) -> u32 {
    let (ssl, buf) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1));
    enter(syscall::SSL_WRITE, ssl.unwrap_or(0), buf.unwrap_or(0), 0);
    0
}

#[uretprobe]
pub fn ssl_write_exit(ctx: RetProbeContext) -> u32 {
    exit(syscall::SSL_WRITE, ctx.ret::<i32>() as i64);
    0
}

/// `int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes)`
#[uprobe]
pub fn ssl_read_ex_enter(ctx: ProbeContext) -> u32 {
    let (ssl, buf, len) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1), ctx.arg::<u64>(3));
    enter(
        syscall::SSL_READ_EX,
        ssl.unwrap_or(0),
        buf.unwrap_or(0),
        len.unwrap_or(0),
    );
    0
}

#[uretprobe]
pub fn ssl_read_ex_exit(ctx: RetProbeContext) -> u32 {
    exit(syscall::SSL_READ_EX, ctx.ret::<i32>() as i64);
    0
}

/// `int SSL_write_ex(SSL *ssl, const void *buf, size_t num, size_t *written)`
#[uprobe]
pub fn ssl_write_ex_enter(ctx: ProbeContext) -> u32 {
    let (ssl, buf, len) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1), ctx.arg::<u64>(3));
    enter(
        syscall::SSL_WRITE_EX,
        ssl.unwrap_or(0),
        buf.unwrap_or(0),
        len.unwrap_or(0),
    );
    0
}

#[uretprobe]
pub fn ssl_write_ex_exit(ctx: RetProbeContext) -> u32 {
    exit(syscall::SSL_WRITE_EX, ctx.ret::<i32>() as i64);
    0
}
