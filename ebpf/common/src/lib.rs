#![no_std]
//! The ABI between netsonde's eBPF programs and user space.
//!
//! Every type here is `#[repr(C)]`, 8-byte aligned where it travels through the ring buffer,
//! and laid out by hand with explicit padding fields: a record must mean the same bytes on both
//! sides, and hidden padding would leak uninitialised kernel stack into user space. The const
//! assertions at the bottom pin each size so a change is a compile error, not a silent skew.
//!
//! Nothing in this crate describes a *kernel* struct: the kernel's own layouts are read from BTF
//! at start-up and handed to the programs through [`KernelOffsets`].

/// Largest per-syscall payload prefix the programs can copy. A power of two: the programs mask
/// offsets with `MAX_CAPTURE - 1` to prove bounds to the verifier.
pub const MAX_CAPTURE: usize = 16384;
/// Payload prefix copied per syscall unless configured otherwise.
pub const DEFAULT_CAPTURE: u32 = 4096;
/// The per-CPU scratch buffer is twice [`MAX_CAPTURE`] so that `offset (< MAX) + len (<= MAX)`
/// provably stays inside it while iovecs are copied one after another.
pub const SCRATCH_DATA: usize = 2 * MAX_CAPTURE;
/// How many iovecs one program walks for the payload prefix of a readv/writev/sendmsg/recvmsg;
/// a longer array continues in a tail-called program, `MAX_IOVECS` at a time, up to the
/// kernel's tail-call limit. (More per program: the verifier's state count explodes.)
pub const MAX_IOVECS: u32 = 16;

/// Syscall numbers the dispatch tables hold (x86-64 and arm64 number theirs below 512).
pub const SYSCALL_SLOTS: u32 = 512;
/// How many messages of one sendmmsg/recvmmsg are counted and copied (each message's first
/// iovec, within the payload prefix). Later messages are flagged `BYTES_UNCOUNTED`.
pub const MAX_MMSG: u32 = 8;

pub mod arrivals;

/// Record kinds: the first `u32` of every ring-buffer record.
pub mod kind {
    /// [`super::DataEvent`] followed by `captured` payload bytes.
    pub const DATA: u32 = 1;
    /// [`super::ConnOpenEvent`].
    pub const CONN_OPEN: u32 = 2;
    /// [`super::ConnCloseEvent`].
    pub const CONN_CLOSE: u32 = 3;
    /// [`super::ProcessExitEvent`].
    pub const PROCESS_EXIT: u32 = 4;
    /// [`super::ProcessEvent`]: a child of a monitored process was added to the monitored
    /// set, for user space to confirm or remove.
    pub const PROCESS_FORK: u32 = 5;
    /// [`super::ProcessEvent`]: a traced process started a new program (a moment to look
    /// for the libraries it will map, such as libssl).
    pub const PROCESS_EXEC: u32 = 6;
    /// [`KernelNoteEvent`]: something the kernel did to a traced connection outside its
    /// syscalls (a retransmit, a drop, a handshake).
    pub const KERNEL_NOTE: u32 = 7;
}

/// The syscall a [`DataEvent`] or connection event came from.
pub mod syscall {
    pub const READ: u16 = 0;
    pub const WRITE: u16 = 1;
    pub const READV: u16 = 2;
    pub const WRITEV: u16 = 3;
    pub const RECVFROM: u16 = 4;
    pub const SENDTO: u16 = 5;
    pub const RECVMSG: u16 = 6;
    pub const SENDMSG: u16 = 7;
    pub const RECVMMSG: u16 = 8;
    pub const SENDMMSG: u16 = 9;
    pub const SENDFILE: u16 = 10;
    pub const CONNECT: u16 = 11;
    pub const ACCEPT: u16 = 12;
    pub const ACCEPT4: u16 = 13;
    pub const CLOSE: u16 = 14;
    /// OpenSSL calls seen through uprobes: their [`super::DataEvent`]s carry plaintext.
    pub const SSL_READ: u16 = 15;
    pub const SSL_WRITE: u16 = 16;
    pub const SSL_READ_EX: u16 = 17;
    pub const SSL_WRITE_EX: u16 = 18;

    /// Lower-case syscall name, for logs and self-telemetry.
    pub const fn name(id: u16) -> &'static str {
        match id {
            READ => "read",
            WRITE => "write",
            READV => "readv",
            WRITEV => "writev",
            RECVFROM => "recvfrom",
            SENDTO => "sendto",
            RECVMSG => "recvmsg",
            SENDMSG => "sendmsg",
            RECVMMSG => "recvmmsg",
            SENDMMSG => "sendmmsg",
            SENDFILE => "sendfile",
            CONNECT => "connect",
            ACCEPT => "accept",
            ACCEPT4 => "accept4",
            CLOSE => "close",
            SSL_READ => "SSL_read",
            SSL_WRITE => "SSL_write",
            SSL_READ_EX => "SSL_read_ex",
            SSL_WRITE_EX => "SSL_write_ex",
            _ => "unknown",
        }
    }
}

/// Which way the bytes of a [`DataEvent`] went, seen from the traced process.
pub mod direction {
    /// The process sent them (write, send…).
    pub const EGRESS: u8 = 0;
    /// The process received them (read, recv…).
    pub const INGRESS: u8 = 1;
}

/// How a connection became known to the programs ([`ConnOpenEvent::origin`]).
pub mod origin {
    /// The process called connect(): it is the client.
    pub const CONNECT: u32 = 1;
    /// The process accepted it from a listening socket: it is the server.
    pub const ACCEPT: u32 = 2;
    /// First seen on a read or write: it predates netsonde (or its open event was lost), so the
    /// role is worked out in user space.
    pub const EXISTING: u32 = 3;
}

/// Flags on a [`DataEvent`].
pub mod data_flags {
    /// Copying the payload from user memory failed; `captured` is 0 although bytes moved.
    pub const READ_FAILED: u8 = 1;
    /// The buffer had more iovecs (or mmsg messages) than the programs walk; bytes beyond them
    /// were counted but not copied.
    pub const IOV_TRUNCATED: u8 = 2;
    /// More bytes moved than `bytes` says (a sendmmsg/recvmmsg of more than `MAX_MMSG`
    /// messages): the stream has a gap of unknown length after this record.
    pub const BYTES_UNCOUNTED: u8 = 4;
    /// Plaintext of a TLS library call (uprobe): `stream_pos` counts plaintext bytes, and the
    /// bytes are not wire bytes (the syscalls under it report those).
    pub const TLS_PLAINTEXT: u8 = 8;
    /// Ciphertext on a socket a TLS library was seen using: counted, never copied or parsed.
    pub const TLS_CIPHERTEXT: u8 = 16;
    /// An HTTP/2 stream whose frames the kernel follows: the record's uncaptured tail comes as
    /// [`H2_PIECE`] records (frame headers and non-DATA payloads) at their stream positions; the
    /// bytes between them are DATA payloads.
    pub const H2_WALKED: u8 = 32;
    /// A piece of an [`H2_WALKED`] record beyond its captured prefix: `stream_pos` says where;
    /// its bytes were already counted by that record.
    pub const H2_PIECE: u8 = 64;
}

/// [`SocketEntry::h2`]: which stream of the socket carries HTTP/2 frames the kernel follows.
pub mod h2_stream {
    pub const NONE: u8 = 0;
    pub const WIRE: u8 = 1;
    pub const PLAINTEXT: u8 = 2;
    /// [`super::SocketEntry::h2_next`] when the frame boundary is lost, and
    /// [`super::DataEvent::h2_frame`] when a record holds no frame start the kernel knows.
    pub const LOST: u64 = u64::MAX;
}

/// HTTP/2 frame types the kernel and user space act on (RFC 9113 §6).
pub mod h2_frame {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
    pub const HEADER_LEN: u64 = 9;
    pub const END_STREAM: u8 = 0x1;
    pub const PADDED: u8 = 0x8;

    /// Whether a frame header could have been sent by a conforming peer: a known type, its
    /// stream rules and fixed lengths hold, and the reserved bit of the stream word (`stream`,
    /// as on the wire) is clear, as RFC 9113 §4.1 requires of senders. How the kernel and user
    /// space find a frame boundary again after lost bytes: one rule for both.
    pub const fn plausible(len: u32, kind: u8, stream: u32) -> bool {
        let id = stream & 0x7fff_ffff;
        let stream_ok = match kind {
            SETTINGS | PING | GOAWAY => id == 0,
            DATA | HEADERS | PRIORITY | RST_STREAM | PUSH_PROMISE | CONTINUATION => id != 0,
            WINDOW_UPDATE => true,
            _ => false,
        };
        let len_ok = match kind {
            PRIORITY => len == 5,
            RST_STREAM | WINDOW_UPDATE => len == 4,
            PING => len == 8,
            SETTINGS => len.is_multiple_of(6),
            GOAWAY => len >= 8,
            _ => true,
        };
        stream & 0x8000_0000 == 0 && len < 1 << 24 && stream_ok && len_ok
    }
}

/// Header of a data record: one successful read- or write-like syscall on a TCP socket.
/// `captured` payload bytes follow it in the same record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataEvent {
    pub kind: u32,
    /// Payload bytes that follow this header (a prefix of the `bytes` transferred).
    pub captured: u32,
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    pub syscall: u16,
    pub direction: u8,
    pub flags: u8,
    /// Kernel address of the `struct sock`: an identity only, never dereferenced in user space.
    pub sock: u64,
    /// Bytes the syscall transferred (its return value).
    pub bytes: u64,
    /// Position of this syscall's first byte in the socket's stream for `direction`, counted
    /// from when netsonde first saw the socket. A jump tells user space bytes went missing.
    pub stream_pos: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at syscall entry and exit.
    pub enter_ns: u64,
    pub exit_ns: u64,
    /// What the kernel did with this syscall's packets (all zero for TLS plaintext records,
    /// whose packets belong to the syscalls under them).
    pub kernel: KernelStats,
    /// For an HTTP/2 stream the kernel follows: the stream position of a frame header that
    /// starts within the bytes this record carries (or right after them), as the kernel's own
    /// walk of the frames proves it; [`h2_stream::LOST`] when there is none it knows. How user
    /// space finds its place again after a gap.
    pub h2_frame: u64,
}

/// Kernel layers a syscall's packets are timed in: indexes of [`KernelStats::ns`].
pub mod layer {
    /// TCP: `tcp_sendmsg` on the way out, `tcp_v4_rcv` on the way in.
    pub const L4: usize = 0;
    /// IP: `__ip_queue_xmit` out, `ip_rcv` in.
    pub const L3: usize = 1;
    /// Netfilter hooks (`nf_hook_slow`), both ways.
    pub const NETFILTER: usize = 2;
    /// Neighbour (ARP/NDP) resolution before a packet can leave (`neigh_resolve_output`).
    pub const ARP: usize = 3;
    /// From the device layer taking a packet to the driver starting to send it
    /// (`net_dev_queue` to `net_dev_start_xmit`): the qdisc.
    pub const DEVICE_QUEUE: usize = 4;
    /// The driver sending it (`net_dev_start_xmit` to `net_dev_xmit`).
    pub const DEVICE_SEND: usize = 5;
    /// From the device layer receiving a packet to its copy into the reader's buffer
    /// (`netif_receive_skb` to `skb_copy_datagram_iovec`): the whole receive path, including
    /// the wait in the socket's queue for the application to read.
    pub const RECEIVE: usize = 6;
    pub const COUNT: usize = 7;
}

/// What the kernel did with the packets of one syscall, summed over them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Nanoseconds spent in each [`layer`].
    pub ns: [u64; layer::COUNT],
    /// Bytes of those packets as the device layer saw them (headers included).
    pub bytes: u64,
    /// Packets (`sk_buff`s) the device layer sent for it, or received and the syscall copied.
    pub packets: u32,
    /// How many packets each layer timed (for `NETFILTER` and `ARP`: how many hook runs).
    pub timed: [u16; layer::COUNT],
    pub _pad: [u8; 6],
}

/// [`KernelNoteEvent::note`].
pub mod note {
    /// TCP retransmitted a segment of the connection (`value` 0).
    pub const RETRANSMIT: u32 = 1;
    /// The kernel dropped one of its packets; `value` is the drop reason
    /// (`enum skb_drop_reason`, or [`super::UNKNOWN_DROP_REASON`]).
    pub const DROP: u32 = 2;
    /// A connect()'s handshake finished; `value` is the nanoseconds from SYN to ESTABLISHED.
    pub const CONNECTED: u32 = 3;
    /// A connect()'s handshake failed; `value` is the nanoseconds from SYN to giving up.
    pub const CONNECT_FAILED: u32 = 4;
    /// One of its packets waited for neighbour (ARP/NDP) resolution; `value` is how long, from
    /// `neigh_resolve_output` to the device.
    pub const ARP: u32 = 5;
}

/// Bits of the `FEATURES` map: optional programs user space attached.
pub mod feature {
    /// The neighbour-resolution programs (`neigh_resolve_output`).
    pub const ARP: u32 = 1;
    /// The program on `qdisc/qdisc_enqueue`, which moves a packet a qdisc holds from its
    /// CPU's slot to the shared map: without it every sent packet's record goes to the map.
    pub const TX_SLOT: u32 = 2;
    /// The socket-layer programs (`inet_recvmsg`, `inet6_recvmsg`, `inet_sendmsg`,
    /// `inet6_sendmsg`) all attached: they read `read`, `write`, `recvfrom` and `sendto` on
    /// sockets, and those syscalls have no tracepoint programs. Until all four are there, the
    /// attached ones do nothing.
    pub const SOCKET_CAPTURE: u32 = 4;
}

/// In-kernel only: a kernel function call in progress on a thread (`CALLS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallKey {
    pub pid_tgid: u64,
    /// Which function (private numbering of the programs).
    pub func: u64,
}

/// In-kernel only: when the call started, and what it is for (the send syscall's `enter_ns`,
/// or the received packet's `sk_buff` address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallStart {
    pub start_ns: u64,
    pub tag: u64,
}

/// The drop reason of kernels whose `skb/kfree_skb` record has none (before 5.17).
pub const UNKNOWN_DROP_REASON: u32 = u32::MAX;

/// Something the kernel did to a traced connection outside the syscalls on it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelNoteEvent {
    pub kind: u32,
    /// One of [`note`].
    pub note: u32,
    pub tgid: u32,
    pub fd: i32,
    pub sock: u64,
    pub ts_ns: u64,
    pub value: u64,
}

/// Which of the network layer's raw tracepoints pass their later arguments on this kernel
/// (the arguments grew over the releases; tracefs says which are there: a record field of the
/// same name). 1 when present. An absent argument is never read: it is not there to read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetLayout {
    /// `skb/kfree_skb(skb, location, reason, rx_sk)`: the drop reason (argument 2, Linux
    /// 5.17 and later) and the receiving socket (argument 3, 6.11 and later).
    pub free_reason: u32,
    pub free_rx_sk: u32,
    /// `tcp/tcp_retransmit_skb(sk, skb, err)`: the send's error (argument 2).
    pub retransmit_err: u32,
    pub _pad: u32,
}

/// In-kernel only: a packet on its way through the device layer (`TX_SKBS`, keyed by the
/// `sk_buff` address), and the syscall that sent it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxSkb {
    pub pid_tgid: u64,
    /// The sending syscall's `enter_ns`: tells it from a later syscall of the same thread.
    pub enter_ns: u64,
    pub queued_ns: u64,
    pub started_ns: u64,
}

/// In-kernel only: the packet this CPU is putting through a device now (`TX_NOW`). A device
/// without a queue (loopback, veth, most virtual ones) takes a packet from `net_dev_queue` to
/// `net_dev_xmit` on the same CPU, with softirqs off: its record needs no shared map. One that
/// a qdisc holds, or that the driver hands back, moves to `TX_SKBS` (`skb` 0: the slot is free).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxSlot {
    pub skb: u64,
    pub tx: TxSkb,
}

/// In-kernel only: a connect() whose SYN went out (`HANDSHAKES`, keyed by `struct sock`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handshake {
    pub syn_ns: u64,
    pub tgid: u32,
    pub fd: i32,
}

/// A TCP connection of a traced process became known: connect(), accept(), or first sight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnOpenEvent {
    pub kind: u32,
    /// One of [`origin`].
    pub origin: u32,
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    /// AF_INET (2) or AF_INET6 (10).
    pub family: u16,
    /// Local and remote port, host byte order.
    pub local_port: u16,
    pub remote_port: u16,
    pub syscall: u16,
    /// Return value of connect(): 0, or -EINPROGRESS for a non-blocking connect.
    pub ret: i32,
    pub sock: u64,
    /// IPv4 addresses use the first 4 bytes; network byte order as in the kernel.
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    /// Entry and exit of the connect/accept syscall; both are the first data syscall's for
    /// [`origin::EXISTING`].
    pub enter_ns: u64,
    pub exit_ns: u64,
    /// The process's name (its thread-group leader's comm), NUL-padded.
    pub comm: [u8; 16],
    /// For an accept: when the kernel finished the handshake and queued the connection for
    /// accept() (0 when it was not seen).
    pub established_ns: u64,
    /// The process's cgroup (v2) id: its container, even after the process is gone from
    /// /proc.
    pub cgroup_id: u64,
}

/// A traced process closed a TCP socket it had used.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnCloseEvent {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    pub sock: u64,
    pub ts_ns: u64,
    /// The socket's final stream positions: bytes sent and received through the syscalls, and
    /// plaintext through a TLS library (see [`SocketEntry`]). User space compares them with
    /// what it was given, so bytes whose records were lost at the very end are a gap it knows
    /// of, not a silence it would take for an unanswered request.
    pub egress_bytes: u64,
    pub ingress_bytes: u64,
    pub tls_egress_bytes: u64,
    pub tls_ingress_bytes: u64,
    /// The kernel's own count of the segments this TCP socket retransmitted
    /// (`tcp_sock.total_retrans`) at the close, [`UNKNOWN_RETRANSMITS`] when not read. User
    /// space compares it with the retransmit notes it got: a note the kernel did not deliver
    /// is still counted.
    pub total_retransmits: u32,
    pub _reserved: u32,
}

/// [`ConnCloseEvent::total_retransmits`] when the socket's count was not read.
pub const UNKNOWN_RETRANSMITS: u32 = u32::MAX;

/// A traced process's main thread exited; its remaining connections are gone with it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessExitEvent {
    pub kind: u32,
    pub tgid: u32,
    pub ts_ns: u64,
}

/// A process-lifecycle record ([`kind::PROCESS_FORK`], [`kind::PROCESS_EXEC`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessEvent {
    pub kind: u32,
    pub tgid: u32,
    /// The monitored parent for a fork; 0 for an exec.
    pub parent_tgid: u32,
    /// 1 when the process is traced; an exec of an untraced process is only reported when
    /// [`ProbeConfig::exec_all`] is set (user space then decides whether to trace it).
    pub traced: u32,
    pub ts_ns: u64,
}

/// Values of the `MONITORED` map: why a process is in the monitored set.
pub mod monitored {
    /// Selected by user space (`--pid`).
    pub const SELECTED: u8 = 1;
    /// A child of a monitored process, added by the kernel at fork; not yet confirmed.
    pub const INHERITED: u8 = 2;
    /// A child user space has confirmed.
    pub const CONFIRMED: u8 = 3;
}

/// Which processes the programs trace ([`ProbeConfig::filter_mode`]).
pub mod filter_mode {
    /// Every process except netsonde itself.
    pub const ALL: u32 = 0;
    /// Only processes in `MONITORED` (selected pids and their descendants) or whose name is in
    /// `COMM_FILTER`.
    pub const SELECTED: u32 = 1;
}

/// Settings the programs read as a read-only global (`NETSONDE_CONFIG`), set before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Payload prefix copied per syscall, at most [`MAX_CAPTURE`].
    pub capture_bytes: u32,
    /// netsonde's own tgid: never traced.
    pub agent_tgid: u32,
    /// One of [`filter_mode`].
    pub filter_mode: u32,
    /// 1 when `COMM_FILTER` holds names to match; saves a comm read when it is empty.
    pub comm_filter: u32,
    /// 1 turns every program into a no-op after its first instruction: the benchmark floor,
    /// the cost of merely hooking the same tracepoints.
    pub noop: u32,
    /// Records are written without waking user space until the ring buffer holds this many
    /// bytes (user space also reads on a timer): one wake-up per batch, not per record.
    pub wakeup_bytes: u32,
    /// 1 reports every exec, traced or not: user space decides on rules the kernel cannot
    /// apply (pods, exclusions) and adds what it selects to `MONITORED`.
    pub exec_all: u32,
    /// This architecture's numbers of the syscalls the socket layer reads (`read`, `write`,
    /// `recvfrom`, `sendto`): its programs see the syscall in the task's saved registers.
    pub nr_read: u32,
    pub nr_write: u32,
    pub nr_recvfrom: u32,
    pub nr_sendto: u32,
}

/// Byte offsets of the kernel struct fields the programs read, taken from
/// `/sys/kernel/btf/vmlinux` at start and set as the read-only global `NETSONDE_OFFSETS`.
/// Rust eBPF has no CO-RE relocations: these are how one object runs on many kernels.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.files`, `.group_leader`, `.comm`, `.pid`.
    pub task_files: u32,
    pub task_group_leader: u32,
    pub task_comm: u32,
    pub task_pid: u32,
    /// `files_struct.fdt`.
    pub files_fdt: u32,
    /// `fdtable.max_fds`, `.fd`.
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    /// `file.f_inode`, `.private_data`.
    pub file_inode: u32,
    pub file_private_data: u32,
    /// `inode.i_mode`.
    pub inode_mode: u32,
    /// `socket.sk`.
    pub socket_sk: u32,
    /// `sock.sk_type`, `.sk_protocol`.
    pub sock_type: u32,
    pub sock_protocol: u32,
    /// `sock.__sk_common` + `sock_common.skc_family`, `.skc_num`, `.skc_dport`,
    /// `.skc_rcv_saddr`, `.skc_daddr`, `.skc_v6_rcv_saddr`, `.skc_v6_daddr`.
    pub sock_family: u32,
    pub sock_num: u32,
    pub sock_dport: u32,
    pub sock_rcv_saddr: u32,
    pub sock_daddr: u32,
    pub sock_v6_rcv_saddr: u32,
    pub sock_v6_daddr: u32,
    /// `sk_buff.sk`, `.len`.
    pub skb_sk: u32,
    pub skb_len: u32,
    /// Where the syscall's first four arguments and its number are in `struct pt_regs` (the
    /// raw `sys_enter`/`sys_exit` tracepoints pass the registers, not a record).
    pub regs_args: [u32; 4],
    pub regs_syscall_nr: u32,
    /// The word of `task_struct` that says a task is in a 32-bit (compat) syscall, and the
    /// bit: compat syscalls are numbered differently and are not read.
    pub task_compat: u32,
    pub task_compat_mask: u32,
    /// `tcp_sock.total_retrans`.
    pub tcp_total_retrans: u32,
}

/// Per-CPU counters (`COUNTERS` array slots). What the programs could not deliver is counted
/// here, never dropped silently.
pub mod counter {
    /// Records written to the ring buffer, by kind.
    pub const DATA_EVENTS: u32 = 0;
    pub const CONN_EVENTS: u32 = 1;
    pub const CLOSE_EVENTS: u32 = 2;
    pub const EXIT_EVENTS: u32 = 3;
    /// Records lost because the ring buffer was full, by kind.
    pub const DATA_LOST: u32 = 4;
    pub const CONN_LOST: u32 = 5;
    pub const CLOSE_LOST: u32 = 6;
    pub const EXIT_LOST: u32 = 7;
    /// Bytes moved by traced socket syscalls, and the part beyond the captured prefix.
    pub const BYTES_TOTAL: u32 = 8;
    pub const BYTES_NOT_CAPTURED: u32 = 9;
    /// Payload copies from user memory that failed.
    pub const READ_FAILED: u32 = 10;
    /// Syscalls whose in-flight arguments could not be stored (map full).
    pub const IN_FLIGHT_FULL: u32 = 11;
    /// Syscalls with more iovecs or messages than the programs walk.
    pub const IOV_TRUNCATED: u32 = 12;
    /// Process-lifecycle records written and lost.
    pub const PROCESS_EVENTS: u32 = 13;
    pub const PROCESS_LOST: u32 = 14;
    /// Children of monitored processes that could not be added (the map is full).
    pub const MONITORED_FULL: u32 = 15;
    /// TLS plaintext records written, and TLS calls whose socket was never found.
    pub const TLS_EVENTS: u32 = 16;
    pub const TLS_NO_SOCKET: u32 = 17;
    /// HTTP/2 pieces written (frame headers and payloads past the captured prefix), and streams
    /// whose frames the kernel stopped following (too many frames in one syscall, or a header
    /// cut in a way it cannot rejoin).
    pub const H2_PIECES: u32 = 18;
    pub const H2_LOST: u32 = 19;
    /// Kernel notes (retransmits, drops, handshakes of traced connections) written and lost.
    pub const NOTES: u32 = 20;
    pub const NOTES_LOST: u32 = 21;
    /// Device-layer times of packets whose syscall had already returned (not added to it).
    pub const DEVICE_LATE: u32 = 22;
    /// TCP retransmits and dropped packets on the whole node, traced or not.
    pub const NODE_RETRANSMITS: u32 = 23;
    pub const NODE_DROPS: u32 = 24;
    /// Drop reasons that did not fit the per-reason map (counted in `NODE_DROPS` only).
    pub const DROP_REASONS_FULL: u32 = 25;
    /// HTTP/2 walks that found a frame boundary again after losing it.
    pub const H2_RESYNCS: u32 = 26;
    /// Packets a traced syscall read that had no intact arrival stamp (`arrivals`): not
    /// counted in its packets, not timed.
    pub const RECEIVE_UNTIMED: u32 = 27;
    /// TLS plaintext a call returned after its socket had been closed: another thread or
    /// goroutine closed it while the call decrypted what it had received (the connection had
    /// already ended for user space, its fd maybe reused; not reported).
    pub const TLS_AFTER_CLOSE: u32 = 28;
    /// Go `Read`s that returned plaintext but began before netsonde hooked the program (a
    /// `Read` already waiting on a connection older than netsonde): its buffer is known only at
    /// entry, so what it read is lost.
    pub const TLS_READ_UNSEEN: u32 = 29;
    /// Reads and writes on a socket that returned after another thread closed their fd (the
    /// call kept the socket open meanwhile; the connection had already ended for user space,
    /// its fd maybe another socket's by then): their bytes are not reported.
    pub const AFTER_CLOSE: u32 = 30;
    pub const COUNT: u32 = 31;
}

/// In-kernel only: arguments of a syscall in flight, saved at entry for its exit (keyed by
/// `pid_tgid`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallArgs {
    pub syscall: u16,
    /// [`data_flags`] decided at entry ([`data_flags::TLS_CIPHERTEXT`]).
    pub flags: u16,
    pub fd: i32,
    /// The user buffer, iovec array, msghdr or mmsghdr array, by syscall.
    pub buf: u64,
    /// iovec count (readv/writev, sendmsg/recvmsg, taken from the msghdr at entry).
    pub iovcnt: u64,
    pub sock: u64,
    pub enter_ns: u64,
}

/// In-kernel only: the network layer's findings for a syscall in flight (`IN_FLIGHT_KERNEL`,
/// keyed by `pid_tgid`), apart from [`SyscallArgs`] so exit programs need not copy them through
/// their small stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InFlightKernel {
    /// The syscall's `enter_ns`: tells it from an earlier syscall of the same thread.
    pub enter_ns: u64,
    pub stats: KernelStats,
}

/// In-kernel only: what an fd of a traced process is (keyed by `tgid << 32 | fd`). `file`
/// validates the entry: a different `struct file` at the same fd means it was reused.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketEntry {
    pub file: u64,
    pub sock: u64,
    /// One of [`socket_kind`].
    pub kind: u32,
    /// 1 once a [`ConnOpenEvent`] went out for it.
    pub announced: u32,
    /// Bytes sent and received on it so far (the next [`DataEvent::stream_pos`]).
    pub egress_bytes: u64,
    pub ingress_bytes: u64,
    /// 1 once a TLS library call was seen reading or writing it.
    pub tls: u32,
    pub _pad: u32,
    /// Plaintext bytes sent and received through the TLS library so far.
    pub tls_egress_bytes: u64,
    pub tls_ingress_bytes: u64,
    /// HTTP/2 frame following (one of [`h2_stream`]), by direction (egress, ingress): the kind of
    /// the frame whose payload ends at `h2_next`, and how many bytes of a frame header cut by
    /// the end of the last syscall are in `h2_partial`.
    pub h2: u8,
    pub h2_kind: [u8; 2],
    pub h2_partial_len: [u8; 2],
    /// The flags of the frame whose payload ends at `h2_next` (a DATA frame's END_STREAM).
    pub h2_flags: [u8; 2],
    pub _pad2: u8,
    /// Stream position of each direction's next frame header ([`h2_stream::LOST`]: unknown).
    pub h2_next: [u64; 2],
    pub h2_partial: [u64; 2],
    /// The stream of the DATA frame whose payload ends at `h2_next`, by direction (its gRPC
    /// message framing is in `H2_MESSAGES`).
    pub h2_data_stream: [u32; 2],
    /// Bumped each time a direction's walk loses its place: message framing learnt in an
    /// earlier epoch may have missed bytes, and is not trusted.
    pub h2_epoch: [u32; 2],
}

/// In-kernel only: key of the gRPC message framing of one HTTP/2 stream, one direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2MessageKey {
    /// The socket's `SOCKETS` key.
    pub socket: u64,
    pub stream: u32,
    pub direction: u32,
}

/// In-kernel only: where a stream's next length-prefixed message (gRPC) starts in its DATA
/// bytes, so the 5-byte prefix can be sent to user space even far past the captured prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2MessageState {
    /// Body bytes of the current message still to come.
    pub left: u64,
    /// [`SocketEntry::h2_epoch`] when learnt.
    pub epoch: u32,
    /// Bytes of the next message's prefix seen so far (0 to 4), and those bytes.
    pub have: u8,
    /// 1 once this stream's DATA stopped looking like length-prefixed messages (more than a
    /// frame's worth of tiny ones, or padding): no longer followed.
    pub off: u8,
    pub _pad: [u8; 2],
    /// Room for the 5-byte prefix read piecemeal (the verifier needs the slack).
    pub prefix: [u8; 16],
}

/// In-kernel only: a TLS library call in flight (keyed by `pid_tgid`). The syscalls it makes
/// on the way fill in `fd`. A call on an `SSL *` whose socket nothing has named yet
/// stays after it returns (`returned` 1): the thread's next syscall on a TCP socket names it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsArgs {
    /// One of the `syscall::SSL_*` ids.
    pub call: u16,
    /// 1 once the call returned without knowing its socket.
    pub returned: u16,
    /// The socket's fd, once a nested syscall or the SSL-to-fd cache told; else -1.
    pub fd: i32,
    /// The `SSL *`, the buffer, and (for the `_ex` calls) where the byte count is written.
    pub ssl: u64,
    pub buf: u64,
    pub len_ptr: u64,
    pub enter_ns: u64,
    /// The `struct sock` the call was seen using while in flight: a Go `Read`'s socket when
    /// it began, an OpenSSL call's at a syscall inside it (0 when netsonde had not seen it).
    /// At the return, an fd that no longer holds it was closed during the call: that tells a
    /// socket closed (and its fd perhaps reused) from one never seen.
    pub sock_in_call: u64,
}

/// In-kernel only: a Go `crypto/tls` call in flight, keyed by goroutine (a goroutine may
/// resume on another thread before the call returns).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoroutineKey {
    /// The goroutine's `g` (register R14 in Go's register ABI on x86-64).
    pub g: u64,
    pub tgid: u32,
    pub _pad: u32,
}

/// Where a Go program keeps a TLS connection's socket fd, from its `*tls.Conn`: the attach
/// cookie of the Go TLS uprobes (`bpf_get_attach_cookie`), so each executable can have its own
/// layout (read from its DWARF, or Go's known layout when it has none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoConnLayout {
    /// From the `*tls.Conn` to the data word of its `conn` (a `net.Conn` interface): the
    /// address of the `*net.TCPConn`.
    pub conn_data: u16,
    /// From the `*net.TCPConn` to its `*netFD` (`TCPConn.conn.fd`).
    pub net_fd: u16,
    /// From the `*netFD` to the fd (`netFD.pfd.Sysfd`, an `int`).
    pub sysfd: u16,
}

impl GoConnLayout {
    /// Set in every cookie user space gives, so an attachment without one (0) is told apart.
    const PRESENT: u64 = 1 << 63;

    pub const fn to_cookie(self) -> u64 {
        Self::PRESENT
            | (self.conn_data as u64)
            | ((self.net_fd as u64) << 16)
            | ((self.sysfd as u64) << 32)
    }

    /// The layout in `cookie`; `None` for an attachment without one.
    pub const fn from_cookie(cookie: u64) -> Option<Self> {
        if cookie & Self::PRESENT == 0 {
            return None;
        }
        Some(GoConnLayout {
            conn_data: cookie as u16,
            net_fd: (cookie >> 16) as u16,
            sysfd: (cookie >> 32) as u16,
        })
    }
}

/// In-kernel only: a CPU's last trace decision (`LAST_DECISION`), valid while both decision
/// generations are the ones it was made under.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CachedDecision {
    pub tgid: u32,
    /// 0 empty, 1 not traced, 2 traced.
    pub decision: u32,
    /// `DECISION_GENERATIONS` [0] (the programs') and [1] (user space's) when it was made.
    pub kernel_generation: u64,
    pub user_generation: u64,
}

/// In-kernel only: key of the SSL-to-fd cache.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SslKey {
    pub ssl: u64,
    pub tgid: u32,
    pub _pad: u32,
}

/// [`SocketEntry::kind`].
pub mod socket_kind {
    /// Not something netsonde traces (a file, a pipe, a UDP or Unix socket…).
    pub const OTHER: u32 = 0;
    /// A TCP socket over IPv4 or IPv6.
    pub const TCP: u32 = 1;
}

/// Key of `COMM_FILTER`: a process name as the kernel stores it (15 bytes + NUL).
pub type Comm = [u8; 16];

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], Copy, made only of integers and integer arrays, and
    // have no implicit padding (see the size assertions below).
    unsafe impl aya::Pod for super::DataEvent {}
    unsafe impl aya::Pod for super::ConnOpenEvent {}
    unsafe impl aya::Pod for super::ConnCloseEvent {}
    unsafe impl aya::Pod for super::ProcessExitEvent {}
    unsafe impl aya::Pod for super::ProcessEvent {}
    unsafe impl aya::Pod for super::TlsArgs {}
    unsafe impl aya::Pod for super::SslKey {}
    unsafe impl aya::Pod for super::ProbeConfig {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::SyscallArgs {}
    unsafe impl aya::Pod for super::SocketEntry {}
    unsafe impl aya::Pod for super::KernelStats {}
    unsafe impl aya::Pod for super::KernelNoteEvent {}
    unsafe impl aya::Pod for super::NetLayout {}
    unsafe impl aya::Pod for super::TxSkb {}
    unsafe impl aya::Pod for super::Handshake {}
    unsafe impl aya::Pod for super::InFlightKernel {}
    unsafe impl aya::Pod for super::CallKey {}
    unsafe impl aya::Pod for super::CallStart {}
    unsafe impl aya::Pod for super::H2MessageKey {}
    unsafe impl aya::Pod for super::H2MessageState {}
}

// Sizes equal the sum of the fields: no hidden padding anywhere.
const _: () = assert!(core::mem::size_of::<DataEvent>() == 64 + 88 + 8);
const _: () = assert!(core::mem::size_of::<KernelStats>() == 88);
const _: () = assert!(core::mem::size_of::<KernelNoteEvent>() == 40);
const _: () = assert!(core::mem::size_of::<NetLayout>() == 16);
const _: () = assert!(core::mem::size_of::<TxSkb>() == 32);
const _: () = assert!(core::mem::size_of::<TxSlot>() == 40);
const _: () = assert!(core::mem::size_of::<CallKey>() == 16);
const _: () = assert!(core::mem::size_of::<CallStart>() == 16);
const _: () = assert!(core::mem::size_of::<Handshake>() == 16);
const _: () = assert!(core::mem::size_of::<ConnOpenEvent>() == 120);
const _: () = assert!(core::mem::size_of::<ConnCloseEvent>() == 72);
const _: () = assert!(core::mem::size_of::<ProcessExitEvent>() == 16);
const _: () = assert!(core::mem::size_of::<ProcessEvent>() == 24);
const _: () = assert!(core::mem::size_of::<ProbeConfig>() == 44);
const _: () = assert!(core::mem::size_of::<TlsArgs>() == 48);
const _: () = assert!(core::mem::size_of::<SslKey>() == 16);
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 120);
const _: () = assert!(core::mem::size_of::<SyscallArgs>() == 40);
const _: () = assert!(core::mem::size_of::<InFlightKernel>() == 96);
const _: () = assert!(core::mem::size_of::<SocketEntry>() == 120);
const _: () = assert!(core::mem::size_of::<H2MessageKey>() == 16);
const _: () = assert!(core::mem::size_of::<H2MessageState>() == 32);
const _: () = assert!(MAX_CAPTURE.is_power_of_two());
const _: () = assert!(DEFAULT_CAPTURE as usize <= MAX_CAPTURE);
