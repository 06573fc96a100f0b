//! Every map the programs use, and the read-only globals user space fills before load.

use aya_ebpf::{
    helpers::bpf_get_smp_processor_id,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, ProgramArray, RingBuf},
};
use netsonde_common::{
    CachedDecision, CallKey, CallStart, Comm, DataEvent, GoroutineKey, H2MessageKey,
    H2MessageState, Handshake, InFlightKernel, KernelOffsets, NetLayout, ProbeConfig, SCRATCH_DATA,
    SYSCALL_SLOTS, SocketEntry, SslKey, SyscallArgs, TlsArgs, TxSkb, TxSlot,
    arrivals::{RX_SETS, RxSet},
    counter,
};

/// Settings, set by user space before load (read-only at run time, so the verifier sees the
/// real values and prunes what they switch off).
#[unsafe(no_mangle)]
pub static NETSONDE_CONFIG: ProbeConfig = ProbeConfig {
    capture_bytes: 0,
    agent_tgid: 0,
    filter_mode: 0,
    comm_filter: 0,
    noop: 0,
    wakeup_bytes: 0,
    exec_all: 0,
    nr_read: 0,
    nr_write: 0,
    nr_recvfrom: 0,
    nr_sendto: 0,
};

/// Kernel struct field offsets from BTF, set by user space before load.
#[unsafe(no_mangle)]
pub static NETSONDE_OFFSETS: KernelOffsets = KernelOffsets {
    task_files: 0,
    task_group_leader: 0,
    task_comm: 0,
    task_pid: 0,
    files_fdt: 0,
    fdtable_max_fds: 0,
    fdtable_fd: 0,
    file_inode: 0,
    file_private_data: 0,
    inode_mode: 0,
    socket_sk: 0,
    sock_type: 0,
    sock_protocol: 0,
    sock_family: 0,
    sock_num: 0,
    sock_dport: 0,
    sock_rcv_saddr: 0,
    sock_daddr: 0,
    sock_v6_rcv_saddr: 0,
    sock_v6_daddr: 0,
    skb_sk: 0,
    skb_len: 0,
    regs_args: [0; 4],
    regs_syscall_nr: 0,
    task_compat: 0,
    task_compat_mask: 0,
    tcp_total_retrans: 0,
};

/// Tracepoint record layouts of the network-layer programs, from tracefs, set before load.
#[unsafe(no_mangle)]
pub static NETSONDE_NET_LAYOUT: NetLayout = NetLayout {
    free_reason: 0,
    free_rx_sk: 0,
    retransmit_err: 0,
    _pad: 0,
};

/// All records for user space. Its size is set by user space (`map_max_entries`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// The network layer's findings for syscalls in flight, by thread.
#[map]
pub static IN_FLIGHT_KERNEL: LruHashMap<u64, InFlightKernel> =
    LruHashMap::with_max_entries(16384, 0);

/// Packets on their way through the device layer, by `sk_buff` address (only those a traced
/// syscall sent).
#[map]
pub static TX_SKBS: LruHashMap<u64, TxSkb> = LruHashMap::with_max_entries(16384, 0);

/// The packet each CPU is putting through a device now, while it has not left the CPU: a
/// queueless device's packets never do (`TxSlot`). An array slot costs a few nanoseconds where
/// a hash insert and delete cost hundreds.
#[map]
pub static TX_NOW: PerCpuArray<TxSlot> = PerCpuArray::with_max_entries(1, 0);

/// Received packets not yet copied to a reader: a stamp each, in a set-associative array by
/// `sk_buff` address (`netsonde_common::arrivals`). Every packet the node receives passes here:
/// whose it is is known only when a reader copies it.
#[map]
pub static RX_ARRIVALS: Array<RxSet> = Array::with_max_entries(RX_SETS, 0);

/// Announced sockets of traced processes, by `struct sock` address: `tgid << 32 | fd`. Lets
/// softirq-time events (retransmits, drops) find their connection.
#[map]
pub static KNOWN_SOCKS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65536, 0);

/// connect()s of traced processes whose SYN is out, by `struct sock` address.
#[map]
pub static HANDSHAKES: LruHashMap<u64, Handshake> = LruHashMap::with_max_entries(16384, 0);

/// Server-side connections the kernel established and queued for accept(), by `struct sock`
/// address: when. Whose listener it is is known only at accept().
#[map]
pub static ESTABLISHED: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// Kernel function calls in progress (the `layers` programs), by thread and function.
#[map]
pub static CALLS: LruHashMap<CallKey, CallStart> = LruHashMap::with_max_entries(16384, 0);

/// Packets of traced connections waiting for neighbour resolution, by `sk_buff` address: since
/// when.
#[map]
pub static ARP_WAIT: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

/// Optional programs user space attached ([`netsonde_common::feature`] bits, slot 0).
#[map]
pub static FEATURES: Array<u32> = Array::with_max_entries(1, 0);

/// The bits of `FEATURES` (`feature::*`): which optional programs user space attached.
#[inline(always)]
pub fn features() -> u32 {
    FEATURES.get(0).copied().unwrap_or(0)
}

/// Dropped packets on the node by drop reason (per CPU).
#[map]
pub static DROP_REASONS: PerCpuHashMap<u32, u64> = PerCpuHashMap::with_max_entries(1024, 0);

/// Per-CPU counters, slots in [`netsonde_common::counter`].
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// A data record under construction: kept off the 512-byte stack, one per CPU.
#[repr(C)]
pub struct Scratch {
    pub header: DataEvent,
    pub data: [u8; SCRATCH_DATA],
    /// Where a long iovec walk continues after a tail call.
    pub cursor: IovCursor,
    /// The HTTP/2 frame walk of the record being emitted (see `h2`).
    pub walk: H2Walk,
}

/// An HTTP/2 frame walk over one syscall's bytes, set up before its record is emitted and run
/// after. The bytes are read in chunks: the whole buffer, one iovec at a time, or none (a
/// file's bytes under sendfile).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct H2Walk {
    /// The walked record's header: pieces copy its identity.
    pub header: DataEvent,
    /// The socket's `SOCKETS` key.
    pub key: u64,
    /// One of `h2::source`, and the buffer, or iovec array and its length.
    pub source: u64,
    pub buf: u64,
    pub iovcnt: u64,
    /// The next iovec to read.
    pub iov_index: u64,
    /// The current chunk: its user address, and the stream positions of its first byte and of
    /// its end.
    pub chunk_base: u64,
    pub chunk_pos: u64,
    pub chunk_end: u64,
    /// Stream positions: walked so far, the record's start and end, and the end of its
    /// captured prefix.
    pub at: u64,
    pub pos: u64,
    pub end: u64,
    pub cap_end: u64,
    /// The direction's frame state from `SOCKETS` (worked on here, written back at the end):
    /// the next frame header's position, and the first bytes of a header in progress.
    pub next: u64,
    pub hdr: [u8; 32],
    pub data_stream: u32,
    pub epoch: u32,
    pub kind: u8,
    pub plen: u8,
    pub direction: u8,
    /// 1 while only checking that the record starts a chain of frames (finding the place
    /// again), without emitting anything.
    pub verify: u8,
    /// One of `h2::outcome`.
    pub outcome: u8,
    /// The DATA frame in progress: its flags, whether its messages are followed, and how many
    /// started in it.
    pub frame_flags: u8,
    pub tracked: u8,
    pub _pad: u8,
    pub messages: u32,
    /// Frame headers read (how a verification decides).
    pub frames: u32,
    pub message: H2MessageState,
    /// The piece being gathered at the start of the scratch data: its stream position and
    /// length, and the first frame header in it.
    pub piece_from: u64,
    pub piece_len: u64,
    pub piece_frame: u64,
    /// Where the last piece ended (the end marker is needed only if before `end`).
    pub emitted_to: u64,
}

/// An iovec walk in progress: the array, how far it got, where the copy stops.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IovCursor {
    pub iov: u64,
    pub iovcnt: u64,
    pub next: u64,
    pub copied: u64,
    pub end: u64,
}

/// Slot 0: `iov_continue` (raw tracepoint) or `iov_continue_btf` (`tp_btf`), set by user space
/// before the exit programs attach. A tail call stays within one program type and hook, so each
/// hook has its own tables.
#[map]
pub static IOV_CONTINUE: ProgramArray = ProgramArray::with_max_entries(1, 0);
#[map]
pub static IOV_CONTINUE_BTF: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Slots for syscall numbers: the program that reads that syscall's entry (`SYSCALL_ENTRIES`)
/// or exit (`SYSCALL_EXITS`), set by user space. Every syscall passes the `sys_enter` and
/// `sys_exit` tracepoints; an empty slot ends it there. The `_BTF` tables are those of the
/// `tp_btf` dispatchers (see `regs`).
#[map]
pub static SYSCALL_ENTRIES: ProgramArray = ProgramArray::with_max_entries(SYSCALL_SLOTS, 0);
#[map]
pub static SYSCALL_EXITS: ProgramArray = ProgramArray::with_max_entries(SYSCALL_SLOTS, 0);
#[map]
pub static SYSCALL_ENTRIES_BTF: ProgramArray = ProgramArray::with_max_entries(SYSCALL_SLOTS, 0);
#[map]
pub static SYSCALL_EXITS_BTF: ProgramArray = ProgramArray::with_max_entries(SYSCALL_SLOTS, 0);

/// gRPC message framing of the HTTP/2 streams whose DATA the kernel walks (see `h2`). LRU: a
/// stream that ends without the kernel seeing its end is forgotten in time.
#[map]
pub static H2_MESSAGES: LruHashMap<H2MessageKey, H2MessageState> =
    LruHashMap::with_max_entries(16384, 0);

/// One [`Scratch`] per possible CPU, indexed by CPU id: a per-CPU array would be simpler but
/// caps values at 32 KiB, and a record needs up to `DataEvent` + 2 × MAX_CAPTURE bytes. User
/// space sets `max_entries` to the number of possible CPUs.
#[map]
pub static SCRATCH: Array<Scratch> = Array::with_max_entries(1, 0);

/// This CPU's scratch record.
#[inline(always)]
pub fn scratch() -> Option<*mut Scratch> {
    // SAFETY: no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    SCRATCH.get_ptr_mut(cpu)
}

/// Syscall arguments saved at entry for the exit, keyed by pid_tgid: one slot per thread that
/// made a traced syscall, reused in place (`in_flight`), removed when the thread exits. LRU: a
/// thread whose exit was not seen cannot leak its slot. Sized for that many threads, so that
/// idle slots of other threads do not push out one that waits in a long syscall.
#[map]
pub static IN_FLIGHT: LruHashMap<u64, SyscallArgs> = LruHashMap::with_max_entries(32768, 0);

/// What each fd of a traced process is, keyed by `tgid << 32 | fd`; validated by `file`.
#[map]
pub static SOCKETS: LruHashMap<u64, SocketEntry> = LruHashMap::with_max_entries(65536, 0);

/// Per-tgid trace decision (1 traced, 0 not) when filters are set; cleared on exec and exit.
#[map]
pub static DECISIONS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(16384, 0);

/// Generations of the trace decisions: [0] moved by the programs when they change one (exec,
/// exit, a fork into the monitored set), [1] by user space when it changes the monitored set.
/// A decision cached under other generations is not used (`LAST_DECISION`).
#[map]
pub static DECISION_GENERATIONS: Array<u64> = Array::with_max_entries(2, 0);

/// Each CPU's last trace decision: a process's syscalls on one CPU look it up in an array
/// instead of `DECISIONS`, a hash map.
#[map]
pub static LAST_DECISION: PerCpuArray<CachedDecision> = PerCpuArray::with_max_entries(1, 0);

/// The monitored process set: tgids selected with `--pid` (written by user space) and their
/// descendants (added by the kernel at fork, then confirmed or removed by user space). Values
/// in [`netsonde_common::monitored`]. Removed at exit.
#[map]
pub static MONITORED: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// TLS library calls in flight, keyed by pid_tgid (LRU for the same reason as `IN_FLIGHT`).
#[map]
pub static TLS_IN_FLIGHT: LruHashMap<u64, TlsArgs> = LruHashMap::with_max_entries(16384, 0);

/// Which fd each `SSL *` of a process was last seen using: a read served from OpenSSL's own
/// buffer makes no syscall to tell.
#[map]
pub static SSL_FDS: LruHashMap<SslKey, i32> = LruHashMap::with_max_entries(65536, 0);

/// Go `crypto/tls` calls in flight, by goroutine (`go_tls`). LRU: a goroutine that never
/// returns (its program crashed) leaves its entry behind.
#[map]
pub static GO_TLS_CALLS: LruHashMap<GoroutineKey, TlsArgs> = LruHashMap::with_max_entries(16384, 0);

/// Process names selected with `--comm`, written by user space.
#[map]
pub static COMM_FILTER: HashMap<Comm, u8> = HashMap::with_max_entries(256, 0);

/// Flags for writing a record: wake user space only once enough has piled up (see
/// `ProbeConfig::wakeup_bytes`); below that, user space's timer collects it.
#[inline(always)]
pub fn output_flags() -> u64 {
    use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= config!(wakeup_bytes) as u64 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Adds `n` to a per-CPU counter.
#[inline(always)]
pub fn count(slot: u32, n: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot; programs do not nest on one CPU, so no concurrent writer.
        unsafe { *p += n };
    }
}

/// Reads one field of the settings global. Volatile, so the compiler cannot fold the zero it
/// was compiled with; the verifier still sees the real (read-only) value.
macro_rules! config {
    ($field:ident) => {
        // SAFETY: a plain read of a static.
        unsafe { core::ptr::read_volatile(&$crate::maps::NETSONDE_CONFIG.$field) }
    };
}
pub(crate) use config;

/// Reads one kernel offset (see [`config`] for why volatile), widened for pointer arithmetic.
macro_rules! offset {
    ($field:ident) => {
        // SAFETY: a plain read of a static.
        (unsafe { core::ptr::read_volatile(&$crate::maps::NETSONDE_OFFSETS.$field) } as u64)
    };
}
pub(crate) use offset;
