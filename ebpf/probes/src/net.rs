//! The network layer, through raw tracepoints: what the kernel did with a traced syscall's
//! packets.
//!
//! Sending runs in the sending thread from the syscall down to the device, so a packet joins
//! the syscall in flight on its thread (`IN_FLIGHT`) when the device layer first sees it. Its
//! record stays in its CPU's slot (`TX_NOW`) while the device takes it there and then, as a
//! queueless one does; a packet a qdisc holds, or a driver hands back, may leave later from
//! another CPU: its record moves to a per-`sk_buff` map (`TX_SKBS`). Receiving runs in
//! softirq, where the owner is unknown: every received packet gets a per-`sk_buff` stamp
//! (`RX_ARRIVALS`) that the reading syscall claims when it copies the packet. Retransmits, drops
//! and handshakes happen outside any syscall: they become notes for the connection, found by
//! `struct sock` (`KNOWN_SOCKS`, `HANDSHAKES`, `ESTABLISHED`).
//!
//! The programs read the tracepoints' own arguments (`TP_PROTO`), not their records: no record
//! is built for them, and their links detach without an RCU grace period. Arguments that came
//! in later releases are read only where tracefs shows them (`NETSONDE_NET_LAYOUT`).

use aya_ebpf::{
    EbpfContext, helpers::bpf_get_current_pid_tgid, macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use netsonde_common::{
    Handshake, InFlightKernel, KernelNoteEvent, KernelStats, TxSkb, TxSlot, UNKNOWN_DROP_REASON,
    arrivals::Found, counter, feature, kind, layer, note, syscall,
};

use crate::{
    arrivals::{claim_arrival, stamp_arrival},
    filter::traced,
    in_flight::in_flight,
    kernel::read,
    maps::{
        ARP_WAIT, DROP_REASONS, ESTABLISHED, EVENTS, HANDSHAKES, IN_FLIGHT_KERNEL, KNOWN_SOCKS,
        TX_NOW, TX_SKBS, count, features, offset, output_flags,
    },
    noop, now,
};

/// Reads one flag of the layout global (see `maps::config` for why volatile).
macro_rules! layout {
    ($field:ident) => {
        // SAFETY: a plain read of a static.
        (unsafe { core::ptr::read_volatile(&$crate::maps::NETSONDE_NET_LAYOUT.$field) } != 0)
    };
}

/// Argument `n` of the tracepoint, every release has it.
#[inline(always)]
fn arg(ctx: &RawTracePointContext, n: usize) -> u64 {
    ctx.arg(n)
}

/// Argument `n`, which only some releases pass (`present`, from tracefs). Read through a helper
/// rather than from the context: the verifier refuses to attach a program whose context reads
/// go past the tracepoint's arguments on this kernel, even reads never made.
#[inline(always)]
fn later_arg(ctx: &RawTracePointContext, n: u64, present: bool) -> Option<u64> {
    if !present {
        return None;
    }
    read::<u64>(ctx.as_ptr() as u64 + 8 * n)
}

/// `skb->len`.
#[inline(always)]
fn skb_len(skb: u64) -> u32 {
    read::<u32>(skb + offset!(skb_len)).unwrap_or(0)
}

const IPPROTO_TCP: u16 = 6;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;

#[inline(always)]
pub(crate) fn sends(sc: u16) -> bool {
    matches!(
        sc,
        syscall::WRITE
            | syscall::WRITEV
            | syscall::SENDTO
            | syscall::SENDMSG
            | syscall::SENDMMSG
            | syscall::SENDFILE
    )
}

#[inline(always)]
pub(crate) fn receives(sc: u16) -> bool {
    matches!(
        sc,
        syscall::READ | syscall::READV | syscall::RECVFROM | syscall::RECVMSG | syscall::RECVMMSG
    )
}

/// The findings of the syscall that started at `enter_ns` on `pid_tgid`, created empty when
/// `create` and there are none yet. Like `IN_FLIGHT`, each thread keeps its slot and reuses it
/// in place for its next syscall (an insert per syscall costs far more than a lookup).
#[inline(always)]
fn stats_of(pid_tgid: u64, enter_ns: u64, create: bool) -> Option<*mut KernelStats> {
    if let Some(found) = IN_FLIGHT_KERNEL.get_ptr_mut(&pid_tgid) {
        // SAFETY: a pointer into the map value, only touched by programs of this thread's
        // syscall and of its packets; a race costs one sample. The slot is idle while it is
        // cleared (`enter_ns` 0, written first and last).
        unsafe {
            if (*found).enter_ns == enter_ns {
                return Some(&mut (*found).stats);
            }
            if !create {
                return None;
            }
            core::ptr::write_volatile(&mut (*found).enter_ns, 0);
            (*found).stats = KernelStats::default();
            core::ptr::write_volatile(&mut (*found).enter_ns, enter_ns);
            return Some(&mut (*found).stats);
        }
    }
    if !create {
        return None;
    }
    let fresh = InFlightKernel {
        enter_ns,
        stats: KernelStats::default(),
    };
    IN_FLIGHT_KERNEL.insert(&pid_tgid, &fresh, 0).ok()?;
    let found = IN_FLIGHT_KERNEL.get_ptr_mut(&pid_tgid)?;
    // SAFETY: as above.
    Some(unsafe { &mut (*found).stats })
}

/// Whether the syscall that started at `enter_ns` on `pid_tgid` is still running.
#[inline(always)]
fn still_running(pid_tgid: u64, enter_ns: u64) -> bool {
    matches!(in_flight(pid_tgid), Some(args) if args.enter_ns == enter_ns)
}

/// Adds `ns` to `at` of the syscall that started at `enter_ns` on `pid_tgid`, if it is still
/// running. Returns whether it was.
#[inline(always)]
pub(crate) fn add_time(pid_tgid: u64, enter_ns: u64, at: usize, ns: u64) -> bool {
    if !still_running(pid_tgid, enter_ns) {
        return false;
    }
    // The first finding of a syscall may be a time (its packet waits for ARP, say).
    match stats_of(pid_tgid, enter_ns, true) {
        // SAFETY: a pointer into the map value (see `stats_of`).
        Some(stats) => unsafe { add_layer(&mut *stats, at, ns) },
        None => return false,
    }
    true
}

#[inline(always)]
fn add_layer(stats: &mut KernelStats, at: usize, ns: u64) {
    if at < layer::COUNT {
        stats.ns[at] += ns;
        stats.timed[at] = stats.timed[at].saturating_add(1);
    }
}

/// Moves the findings of the syscall that started at `enter_ns` on `pid_tgid` into its record,
/// leaving the thread's slot idle.
#[inline(always)]
pub fn take_stats(pid_tgid: u64, enter_ns: u64, into: &mut KernelStats) {
    if let Some(found) = IN_FLIGHT_KERNEL.get_ptr_mut(&pid_tgid) {
        // SAFETY: a pointer into the map value; this thread's syscall is ending.
        unsafe {
            if (*found).enter_ns == enter_ns {
                *into = (*found).stats;
                core::ptr::write_volatile(&mut (*found).enter_ns, 0);
            }
        }
    }
}

/// The thread `pid_tgid` exits: its slot goes with it.
#[inline(always)]
pub fn forget_thread(pid_tgid: u64) {
    let _ = IN_FLIGHT_KERNEL.remove(&pid_tgid);
}

// ---- sending -------------------------------------------------------------------------------

/// This CPU's slot, if it holds the record of packet `skb`.
#[inline(always)]
fn slot_holding(skb: u64) -> Option<*mut TxSlot> {
    let slot = TX_NOW.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot; the programs that touch it run with softirqs off.
    (unsafe { (*slot).skb } == skb && skb != 0).then_some(slot)
}

/// Moves the packet in this CPU's slot, if any, to the shared map: it may leave from another
/// CPU, or another packet needs the slot.
#[inline(always)]
fn spill(slot: *mut TxSlot) {
    // SAFETY: as in `slot_holding`.
    unsafe {
        let skb = (*slot).skb;
        if skb != 0 {
            let _ = TX_SKBS.insert(&skb, &(*slot).tx, 0);
            (*slot).skb = 0;
        }
    }
}

/// The device layer takes a packet (`__dev_queue_xmit`, softirqs off until it is queued or
/// sent). In the sending thread: a packet of the traced send syscall in flight on it, if its
/// socket is that syscall's.
#[raw_tracepoint(tracepoint = "net_dev_queue")]
pub fn net_dev_queue(ctx: RawTracePointContext) -> u32 {
    if noop() {
        return 0;
    }
    // TP_PROTO(struct sk_buff *skb)
    let skb = arg(&ctx, 0);
    let features = features();
    if features & feature::ARP != 0 {
        arp_done(skb);
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = in_flight(pid_tgid) else {
        return 0;
    };
    let (sc, sock, enter_ns) = (args.syscall, args.sock, args.enter_ns);
    if !sends(sc) {
        return 0;
    }
    // A softirq on this thread may send another socket's packets (a loopback peer's ACKs).
    if read::<u64>(skb + offset!(skb_sk)) != Some(sock) {
        return 0;
    }
    let Some(stats) = stats_of(pid_tgid, enter_ns, true) else {
        return 0;
    };
    let len = skb_len(skb);
    // SAFETY: a pointer into the map value (see `stats_of`).
    unsafe {
        (*stats).packets += 1;
        (*stats).bytes += len as u64;
    }
    let tx = TxSkb {
        pid_tgid,
        enter_ns,
        queued_ns: now(),
        started_ns: 0,
    };
    // The slot only when `qdisc_enqueue` is there to move the packets a qdisc keeps.
    if features & feature::TX_SLOT != 0
        && let Some(slot) = TX_NOW.get_ptr_mut(0)
    {
        // SAFETY: this CPU's slot (see `slot_holding`). A packet still in it never reached a
        // driver here (dropped, or split into segments): it goes to the map as it would have.
        unsafe {
            if (*slot).skb != skb {
                spill(slot);
            }
            (*slot).tx = tx;
            (*slot).skb = skb;
        }
        return 0;
    }
    let _ = TX_SKBS.insert(&skb, &tx, 0);
    0
}

/// A qdisc keeps a packet: it may leave later, from another CPU, so its record moves to the
/// shared map. (Not called when the qdisc is empty and lets the packet through at once.)
#[raw_tracepoint(tracepoint = "qdisc_enqueue")]
pub fn qdisc_enqueue(ctx: RawTracePointContext) -> u32 {
    if noop() {
        return 0;
    }
    // TP_PROTO(struct Qdisc *qdisc, const struct netdev_queue *txq, struct sk_buff *skb)
    if let Some(slot) = slot_holding(arg(&ctx, 2)) {
        spill(slot);
    }
    0
}

/// A packet that waited for neighbour resolution reaches the device: the wait is a note for
/// its connection.
#[inline(always)]
fn arp_done(skb: u64) {
    // SAFETY: copied out at once.
    let Some(since) = (unsafe { ARP_WAIT.get(&skb) }).copied() else {
        return;
    };
    let _ = ARP_WAIT.remove(&skb);
    if let Some(sock) = read::<u64>(skb + offset!(skb_sk)) {
        emit_note(note::ARP, sock, None, now() - since);
    }
}

/// The driver starts sending a packet: the end of its time in the device queue.
#[raw_tracepoint(tracepoint = "net_dev_start_xmit")]
pub fn net_dev_start_xmit(ctx: RawTracePointContext) -> u32 {
    if noop() {
        return 0;
    }
    // TP_PROTO(const struct sk_buff *skb, const struct net_device *dev)
    let skb = arg(&ctx, 0);
    let tx = match slot_holding(skb) {
        // SAFETY: this CPU's slot (see `slot_holding`).
        Some(slot) => unsafe { &mut (*slot).tx as *mut TxSkb },
        None => match TX_SKBS.get_ptr_mut(&skb) {
            Some(tx) => tx,
            None => return 0,
        },
    };
    let t = now();
    // SAFETY: a pointer into the slot or the map value; one packet is in one place at a time.
    let tx = unsafe { &mut *tx };
    if tx.started_ns == 0
        && !add_time(
            tx.pid_tgid,
            tx.enter_ns,
            layer::DEVICE_QUEUE,
            t - tx.queued_ns,
        )
    {
        count(counter::DEVICE_LATE, 1);
    }
    tx.started_ns = t;
    0
}

/// The driver is done with a packet: the end of its sending, and of its record.
#[raw_tracepoint(tracepoint = "net_dev_xmit")]
pub fn net_dev_xmit(ctx: RawTracePointContext) -> u32 {
    if noop() {
        return 0;
    }
    // TP_PROTO(struct sk_buff *skb, int rc, struct net_device *dev, unsigned int skb_len)
    let skb = arg(&ctx, 0);
    // NETDEV_TX_BUSY: the packet goes back to the queue and is started again later, maybe
    // from another CPU.
    let busy = arg(&ctx, 1) as i32 != 0;
    let tx = match slot_holding(skb) {
        Some(slot) if busy => {
            spill(slot);
            return 0;
        }
        // SAFETY: this CPU's slot (see `slot_holding`); copied out, then freed.
        Some(slot) => unsafe {
            (*slot).skb = 0;
            (*slot).tx
        },
        None => {
            // SAFETY: copied out at once.
            let Some(tx) = (unsafe { TX_SKBS.get(&skb) }).copied() else {
                return 0;
            };
            if busy {
                return 0;
            }
            let _ = TX_SKBS.remove(&skb);
            tx
        }
    };
    if tx.started_ns != 0
        && !add_time(
            tx.pid_tgid,
            tx.enter_ns,
            layer::DEVICE_SEND,
            now() - tx.started_ns,
        )
    {
        count(counter::DEVICE_LATE, 1);
    }
    0
}

// ---- receiving -----------------------------------------------------------------------------

/// The device layer receives a packet. Whose it is shows only when a reader copies it.
#[raw_tracepoint(tracepoint = "netif_receive_skb")]
pub fn netif_receive_skb(ctx: RawTracePointContext) -> u32 {
    if noop() {
        return 0;
    }
    // TP_PROTO(struct sk_buff *skb)
    let skb = arg(&ctx, 0);
    stamp_arrival(skb, now(), skb_len(skb));
    0
}

/// A reader copies a packet's payload: in the reading thread, the packet joins the traced
/// receive syscall in flight.
#[raw_tracepoint(tracepoint = "skb_copy_datagram_iovec")]
pub fn skb_copy_datagram_iovec(ctx: RawTracePointContext) -> u32 {
    if noop() {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = in_flight(pid_tgid) else {
        return 0;
    };
    let (sc, enter_ns) = (args.syscall, args.enter_ns);
    if !receives(sc) {
        return 0;
    }
    // TP_PROTO(const struct sk_buff *skb, int len)
    let skb = arg(&ctx, 0);
    let rx = match claim_arrival(skb) {
        Found::Stamped(_, rx) => rx,
        // Counted by the read that claimed it.
        Found::Claimed => return 0,
        // Never seen arriving (before the agent started, or its program skipped), or its way
        // taken by newer packets.
        Found::Unknown => {
            count(counter::RECEIVE_UNTIMED, 1);
            return 0;
        }
    };
    let Some(stats) = stats_of(pid_tgid, enter_ns, true) else {
        return 0;
    };
    // SAFETY: a pointer into the map value (see `stats_of`).
    unsafe {
        (*stats).packets += 1;
        (*stats).bytes += rx.len as u64;
        add_layer(&mut *stats, layer::RECEIVE, now() - rx.received_ns);
        if rx.l3_ns > 0 {
            add_layer(&mut *stats, layer::L3, rx.l3_ns);
        }
        if rx.l4_ns > 0 {
            add_layer(&mut *stats, layer::L4, rx.l4_ns);
        }
        if rx.nf_count > 0 {
            (*stats).ns[layer::NETFILTER] += rx.nf_ns;
            (*stats).timed[layer::NETFILTER] =
                (*stats).timed[layer::NETFILTER].saturating_add(rx.nf_count as u16);
        }
    }
    0
}

// ---- outside the syscalls ------------------------------------------------------------------

/// Writes a note about the connection behind `sock`, if it is a traced one (or `owner` says
/// whose it is).
#[inline(always)]
fn emit_note(what: u32, sock: u64, owner: Option<(u32, i32)>, value: u64) {
    let (tgid, fd) = match owner {
        Some(owner) => owner,
        None => {
            // SAFETY: copied out at once.
            let Some(key) = (unsafe { KNOWN_SOCKS.get(&sock) }).copied() else {
                return;
            };
            ((key >> 32) as u32, key as u32 as i32)
        }
    };
    let ev = KernelNoteEvent {
        kind: kind::KERNEL_NOTE,
        note: what,
        tgid,
        fd,
        sock,
        ts_ns: now(),
        value,
    };
    if EVENTS
        .output::<KernelNoteEvent>(&ev, output_flags())
        .is_ok()
    {
        count(counter::NOTES, 1);
    } else {
        count(counter::NOTES_LOST, 1);
    }
}

/// TCP retransmits a segment (from a timer, an ACK, or a sender).
#[raw_tracepoint(tracepoint = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: RawTracePointContext) -> u32 {
    if noop() {
        return 0;
    }
    // Kernels that trace failed attempts too say so in `err`; TcpRetransSegs counts successes.
    // TP_PROTO(const struct sock *sk, const struct sk_buff *skb, int err): err in later releases.
    if later_arg(&ctx, 2, layout!(retransmit_err)).is_some_and(|err| err as i32 != 0) {
        return 0;
    }
    count(counter::NODE_RETRANSMITS, 1);
    let sock = arg(&ctx, 0);
    if sock != 0 {
        emit_note(note::RETRANSMIT, sock, None, 0);
    }
    0
}

/// The kernel drops a packet, with a reason (5.17 and later).
#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn kfree_skb(ctx: RawTracePointContext) -> u32 {
    if noop() {
        return 0;
    }
    // TP_PROTO(struct sk_buff *skb, void *location, enum skb_drop_reason reason,
    //          struct sock *rx_sk): reason since 5.17, rx_sk since 6.11.
    let reason = later_arg(&ctx, 2, layout!(free_reason)).map_or(UNKNOWN_DROP_REASON, |r| r as u32);
    count(counter::NODE_DROPS, 1);
    match DROP_REASONS.get_ptr_mut(&reason) {
        // SAFETY: this CPU's slot.
        Some(n) => unsafe { *n += 1 },
        None => {
            if DROP_REASONS.insert(&reason, &1, 0).is_err() {
                count(counter::DROP_REASONS_FULL, 1);
            }
        }
    }
    let skb = arg(&ctx, 0);
    if crate::layers::arp_attached() {
        let _ = ARP_WAIT.remove(&skb);
    }
    // A packet being sent carries its socket; one being received may only name it in rx_sk.
    let mut sock = read::<u64>(skb + offset!(skb_sk)).unwrap_or(0);
    if sock == 0 {
        sock = later_arg(&ctx, 3, layout!(free_rx_sk)).unwrap_or(0);
    }
    if sock != 0 {
        emit_note(note::DROP, sock, None, reason as u64);
    }
    0
}

/// TCP state changes: the handshakes of connect() and of connections waiting for accept().
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: RawTracePointContext) -> u32 {
    if noop() {
        return 0;
    }
    // TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)
    let sock = arg(&ctx, 0);
    if read::<u16>(sock + offset!(sock_protocol)) != Some(IPPROTO_TCP) {
        return 0;
    }
    let (old, new) = (arg(&ctx, 1) as i32, arg(&ctx, 2) as i32);
    if new == TCP_SYN_SENT {
        // Inside connect(), in the connecting thread.
        let pid_tgid = bpf_get_current_pid_tgid();
        let tgid = (pid_tgid >> 32) as u32;
        if !traced(tgid) {
            return 0;
        }
        let fd = match in_flight(pid_tgid) {
            Some(args) if args.syscall == syscall::CONNECT => args.fd,
            _ => -1,
        };
        let handshake = Handshake {
            syn_ns: now(),
            tgid,
            fd,
        };
        let _ = HANDSHAKES.insert(&sock, &handshake, 0);
    } else if old == TCP_SYN_SENT {
        // SAFETY: copied out at once.
        let Some(handshake) = (unsafe { HANDSHAKES.get(&sock) }).copied() else {
            return 0;
        };
        let _ = HANDSHAKES.remove(&sock);
        let what = if new == TCP_ESTABLISHED {
            note::CONNECTED
        } else {
            note::CONNECT_FAILED
        };
        emit_note(
            what,
            sock,
            Some((handshake.tgid, handshake.fd)),
            now() - handshake.syn_ns,
        );
    } else if old == TCP_SYN_RECV && new == TCP_ESTABLISHED {
        let _ = ESTABLISHED.insert(&sock, &now(), 0);
    }
    0
}

/// When the kernel queued the accepted connection `sock` (0 if not seen), forgetting it.
#[inline(always)]
pub fn take_established(sock: u64) -> u64 {
    // SAFETY: copied out at once.
    let at = unsafe { ESTABLISHED.get(&sock) }.copied().unwrap_or(0);
    if at != 0 {
        let _ = ESTABLISHED.remove(&sock);
    }
    at
}

/// Remembers an announced socket for the notes, or forgets a closed one.
#[inline(always)]
pub fn know_socket(sock: u64, tgid: u32, fd: i32) {
    let _ = KNOWN_SOCKS.insert(&sock, &(((tgid as u64) << 32) | fd as u32 as u64), 0);
}

#[inline(always)]
pub fn forget_socket(sock: u64) {
    let _ = KNOWN_SOCKS.remove(&sock);
}
