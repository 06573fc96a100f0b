//! Reads of kernel structs. Every field offset comes from `NETSONDE_OFFSETS` (BTF, at start),
//! never from bindings compiled into this object.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel_buf};
use netsonde_common::{Comm, ConnOpenEvent, SocketEntry, socket_kind};

use crate::{
    maps::{SOCKETS, offset},
    regs::SyscallCtx,
};

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: u16 = 1;
const IPPROTO_TCP: u16 = 6;

/// Reads a `T` at a kernel address; `None` when the read faults. Zero-initialised for the same
/// reason as `capture::read_user`.
#[inline(always)]
pub fn read<T: Copy>(addr: u64) -> Option<T> {
    // SAFETY: only used with integer and integer-array types, for which all-zero is valid.
    let mut value: T = unsafe { core::mem::zeroed() };
    // SAFETY: the helper writes at most size_of::<T>() bytes into `value` and tolerates any
    // source address.
    let rc = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            (&mut value as *mut T).cast(),
            core::mem::size_of::<T>() as u32,
            addr as *const _,
        )
    };
    (rc == 0).then_some(value)
}

/// Works out what `file` is: a TCP socket over IPv4/IPv6 (with its `struct sock *`), or
/// something netsonde does not trace.
#[inline(always)]
fn classify(file: u64) -> SocketEntry {
    let mut entry = SocketEntry {
        file,
        kind: socket_kind::OTHER,
        ..SocketEntry::default()
    };
    let Some(inode) = read::<u64>(file + offset!(file_inode)) else {
        return entry;
    };
    let Some(mode) = read::<u16>(inode + offset!(inode_mode)) else {
        return entry;
    };
    if mode & S_IFMT != S_IFSOCK {
        return entry;
    }
    let Some(socket) = read::<u64>(file + offset!(file_private_data)) else {
        return entry;
    };
    let Some(sk) = read::<u64>(socket + offset!(socket_sk)) else {
        return entry;
    };
    if sk == 0 {
        return entry;
    }
    let family: u16 = read(sk + offset!(sock_family)).unwrap_or(0);
    let ty: u16 = read(sk + offset!(sock_type)).unwrap_or(0);
    let protocol: u16 = read(sk + offset!(sock_protocol)).unwrap_or(0);
    if (family == AF_INET || family == AF_INET6) && ty == SOCK_STREAM && protocol == IPPROTO_TCP {
        entry.kind = socket_kind::TCP;
        entry.sock = sk;
    }
    entry
}

/// Whether a syscall that began on socket `sock` at `fd` finds another thread closed the fd
/// while it ran (the call kept its file, so it could still read or write): the fd is empty, or
/// holds another socket. Asked only when the socket cache has no entry for `fd` with `sock`,
/// which an eviction alone can also explain; this walk of the fd table tells them apart.
#[inline(always)]
pub fn left_its_fd<C: SyscallCtx>(ctx: &C, fd: i32, sock: u64) -> bool {
    match ctx.fd_file(fd) {
        None => true,
        Some(file) => classify(file).sock != sock,
    }
}

/// Key of [`SOCKETS`] for an fd of a process.
#[inline(always)]
pub fn socket_key(tgid: u32, fd: i32) -> u64 {
    ((tgid as u64) << 32) | (fd as u32 as u64)
}

/// The TCP socket behind `fd` of the current process, or `None` if `fd` is anything else.
/// The answer is cached per fd and revalidated by the `struct file` pointer, so a reused fd
/// number is never mistaken for the socket it used to be.
#[inline(always)]
pub fn tcp_socket<C: SyscallCtx>(ctx: &C, tgid: u32, fd: i32) -> Option<SocketEntry> {
    let file = ctx.fd_file(fd)?;
    let key = socket_key(tgid, fd);
    // SAFETY: the value is copied out before any other map operation.
    if let Some(cached) = unsafe { SOCKETS.get(&key) }.copied()
        && cached.file == file
    {
        return (cached.kind == socket_kind::TCP).then_some(cached);
    }
    let entry = classify(file);
    let _ = SOCKETS.insert(&key, &entry, 0);
    (entry.kind == socket_kind::TCP).then_some(entry)
}

/// Marks the socket at `fd` as announced to user space.
#[inline(always)]
pub fn mark_announced(tgid: u32, fd: i32) {
    if let Some(entry) = SOCKETS.get_ptr_mut(&socket_key(tgid, fd)) {
        // SAFETY: a pointer into the map value; a racing update only repeats an announcement.
        unsafe { (*entry).announced = 1 };
    }
}

/// The socket at `fd` if it was announced to user space (a cache lookup, no fd walk).
#[inline(always)]
pub fn announced_socket(tgid: u32, fd: i32) -> Option<SocketEntry> {
    // SAFETY: copied out at once.
    let entry = unsafe { SOCKETS.get(&socket_key(tgid, fd)) }.copied()?;
    is_announced(&entry).then_some(entry)
}

/// Whether a cache entry is a TCP socket announced to user space.
#[inline(always)]
pub fn is_announced(entry: &SocketEntry) -> bool {
    entry.kind == socket_kind::TCP && entry.announced != 0
}

/// Where a syscall's bytes sit in a socket's stream, as [`advance_stream`] found it.
pub struct Advanced {
    /// The stream position of its first byte.
    pub pos: u64,
    /// Whether the socket was already announced to user space.
    pub announced: bool,
    /// Its `struct sock`.
    pub sock: u64,
    /// The socket's cache entry (its HTTP/2 walk state lives there).
    pub entry: *mut SocketEntry,
    /// Its `SOCKETS` key.
    pub key: u64,
}

/// Advances the stream position of `direction` on the socket at `fd` by `bytes`: the wire
/// stream, or (`plaintext`) the TLS library's. `None` if the cache entry is gone (evicted), in
/// which case the socket is announced afresh from position 0, or if `expected_sock` (when not
/// 0) is no longer the socket at `fd`: nothing is advanced then.
#[inline(always)]
pub fn advance_stream(
    tgid: u32,
    fd: i32,
    egress: bool,
    plaintext: bool,
    bytes: u64,
    expected_sock: u64,
) -> Option<Advanced> {
    let key = socket_key(tgid, fd);
    let entry = SOCKETS.get_ptr_mut(&key)?;
    // SAFETY: a pointer into the map value. Two threads on one socket may race here; the
    // positions are then approximate, which user space tolerates as a gap.
    unsafe {
        if expected_sock != 0 && (*entry).sock != expected_sock {
            return None;
        }
        let counter = match (plaintext, egress) {
            (false, true) => &mut (*entry).egress_bytes,
            (false, false) => &mut (*entry).ingress_bytes,
            (true, true) => &mut (*entry).tls_egress_bytes,
            (true, false) => &mut (*entry).tls_ingress_bytes,
        };
        let pos = *counter;
        *counter = pos + bytes;
        Some(Advanced {
            pos,
            announced: (*entry).announced != 0,
            sock: (*entry).sock,
            entry,
            key,
        })
    }
}

/// Fills the address fields of `ev` from the `struct sock`.
#[inline(always)]
pub fn fill_addresses(ev: &mut ConnOpenEvent, sk: u64) {
    ev.family = read(sk + offset!(sock_family)).unwrap_or(0);
    ev.local_port = read(sk + offset!(sock_num)).unwrap_or(0);
    ev.remote_port = u16::from_be(read(sk + offset!(sock_dport)).unwrap_or(0));
    if ev.family == AF_INET6 {
        let (local, remote) = (sk + offset!(sock_v6_rcv_saddr), sk + offset!(sock_v6_daddr));
        // SAFETY: destination slices are the event's own arrays; the helper bounds the read.
        unsafe {
            let _ = bpf_probe_read_kernel_buf(local as *const u8, &mut ev.local_addr);
            let _ = bpf_probe_read_kernel_buf(remote as *const u8, &mut ev.remote_addr);
        }
    } else {
        let local: [u8; 4] = read(sk + offset!(sock_rcv_saddr)).unwrap_or([0; 4]);
        let remote: [u8; 4] = read(sk + offset!(sock_daddr)).unwrap_or([0; 4]);
        ev.local_addr[..4].copy_from_slice(&local);
        ev.remote_addr[..4].copy_from_slice(&remote);
    }
}

/// The process name: the thread-group leader's comm (a thread may have renamed itself).
#[inline(always)]
pub fn process_comm() -> Comm {
    let mut comm: Comm = [0; 16];
    // SAFETY: the helper only returns the current task's address.
    let task = unsafe { bpf_get_current_task() };
    if let Some(leader) = read::<u64>(task + offset!(task_group_leader)) {
        let src = leader + offset!(task_comm);
        // SAFETY: reads into a local array; the helper bounds the read.
        let _ = unsafe { bpf_probe_read_kernel_buf(src as *const u8, &mut comm) };
    }
    comm
}
