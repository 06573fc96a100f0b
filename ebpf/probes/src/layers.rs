//! The layers tracepoints cannot see, through kernel functions: TCP (`tcp_sendmsg`), IP
//! (`__ip_queue_xmit`), netfilter (`nf_hook_slow`) and neighbour resolution
//! (`neigh_resolve_output`). Each has an fentry/fexit pair and a kprobe/kretprobe pair with the
//! same logic; user space attaches the first pair the kernel accepts (fentry is cheaper,
//! kprobes more common; locked-down kernels allow neither).
//!
//! Sending runs in the sending thread, so a call joins the traced send syscall in flight on
//! its thread when its socket is that syscall's; the call's duration goes to its layer. The
//! layers nest: `tcp_sendmsg` includes what runs under it synchronously. Netfilter on the way
//! in runs in softirq: its time is kept with the packet's receive record and claimed by the
//! reader with the rest. A packet waiting for ARP leaves later, from softirq: the wait is a
//! note for its connection, sent when the packet reaches the device.

use aya_ebpf::{
    EbpfContext,
    helpers::bpf_get_current_pid_tgid,
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use netsonde_common::{CallKey, CallStart, feature, layer};

use crate::{
    arrivals::arrival_of,
    in_flight::in_flight,
    kernel::read,
    maps::{ARP_WAIT, CALLS, KNOWN_SOCKS, features, offset},
    net::{add_time, sends},
    noop, now,
};

/// Which call a [`CallKey`] is about.
mod func {
    pub const TCP_SENDMSG: u64 = 1;
    pub const IP_QUEUE_XMIT: u64 = 2;
    pub const NF_HOOK_SEND: u64 = 3;
    pub const NF_HOOK_RECEIVE: u64 = 4;
    pub const IP_RCV: u64 = 5;
    pub const TCP_V4_RCV: u64 = 6;
}

/// Remembers that `func` started on this thread, for `tag` (the send syscall's `enter_ns`, or
/// the received packet's `sk_buff` address).
#[inline(always)]
fn start_call(pid_tgid: u64, func: u64, tag: u64) {
    let start = CallStart {
        start_ns: now(),
        tag,
    };
    let _ = CALLS.insert(&CallKey { pid_tgid, func }, &start, 0);
}

/// The call of `func` ending on this thread: its thread, its tag and how long it took.
#[inline(always)]
fn end_call(func: u64) -> Option<(u64, u64, u64)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = CallKey { pid_tgid, func };
    // SAFETY: copied out at once.
    let start = unsafe { CALLS.get(&key) }.copied()?;
    let _ = CALLS.remove(&key);
    Some((pid_tgid, start.tag, now() - start.start_ns))
}

/// Entry of a receiving-side call on packet `skb`, if it is on its way to a reader.
#[inline(always)]
fn enter_receive(func: u64, skb: u64) {
    if arrival_of(skb).is_some() {
        start_call(bpf_get_current_pid_tgid(), func, skb);
    }
}

/// Exit of a receiving-side call: its duration is kept with the packet.
#[inline(always)]
fn exit_receive(func: u64) {
    let Some((_, skb, ns)) = end_call(func) else {
        return;
    };
    if let Some(rx) = arrival_of(skb) {
        // SAFETY: a pointer into the map value; one packet is in one place at a time.
        unsafe {
            match func {
                func::IP_RCV => (*rx).l3_ns += ns,
                func::TCP_V4_RCV => (*rx).l4_ns += ns,
                _ => {
                    (*rx).nf_ns += ns;
                    (*rx).nf_count += 1;
                }
            }
        }
    }
}

/// The traced send syscall in flight on this thread, if `sk` is its socket: its `enter_ns`.
#[inline(always)]
fn sending_on(pid_tgid: u64, sk: u64) -> Option<u64> {
    let args = in_flight(pid_tgid)?;
    (sends(args.syscall) && args.sock == sk && sk != 0).then_some(args.enter_ns)
}

/// Entry of a sending-side call on socket `sk`.
#[inline(always)]
fn enter_send(func: u64, sk: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if let Some(enter_ns) = sending_on(pid_tgid, sk) {
        start_call(pid_tgid, func, enter_ns);
    }
}

/// Exit of a sending-side call: its duration goes to `at` of the syscall.
#[inline(always)]
fn exit_send(func: u64, at: usize) {
    if let Some((pid_tgid, enter_ns, ns)) = end_call(func) {
        add_time(pid_tgid, enter_ns, at, ns);
    }
}

/// Entry of `nf_hook_slow(skb, …)`: a traced send's packet, or a received packet on its way to
/// a reader.
#[inline(always)]
fn enter_netfilter(skb: u64) {
    let sk = read::<u64>(skb + offset!(skb_sk)).unwrap_or(0);
    let pid_tgid = bpf_get_current_pid_tgid();
    match sending_on(pid_tgid, sk) {
        Some(enter_ns) => start_call(pid_tgid, func::NF_HOOK_SEND, enter_ns),
        None => enter_receive(func::NF_HOOK_RECEIVE, skb),
    }
}

#[inline(always)]
fn exit_netfilter() {
    exit_send(func::NF_HOOK_SEND, layer::NETFILTER);
    exit_receive(func::NF_HOOK_RECEIVE);
}

/// Entry of `neigh_resolve_output(neigh, skb)`: the packet of a traced connection may wait for
/// the neighbour; the wait ends when it reaches the device (`net::net_dev_queue`).
#[inline(always)]
fn enter_neigh(skb: u64) {
    let Some(sk) = read::<u64>(skb + offset!(skb_sk)) else {
        return;
    };
    if sk != 0 && KNOWN_SOCKS.get_ptr(&sk).is_some() {
        // Ethernet-like devices resolve through here again when the reply flushes the queue:
        // the first call is when the wait began. (A packet dropped while waiting leaves
        // through `kfree_skb`, which forgets it.)
        const BPF_NOEXIST: u64 = 1;
        let _ = ARP_WAIT.insert(&skb, &now(), BPF_NOEXIST);
    }
}

/// Whether the neighbour programs are attached (else `net_dev_queue` skips their lookup).
#[inline(always)]
pub fn arp_attached() -> bool {
    features() & feature::ARP != 0
}

/// Pointer argument `n` of an fentry/fexit context.
#[inline(always)]
pub(crate) fn btf_arg<C: EbpfContext>(ctx: &C, n: usize) -> u64 {
    // SAFETY: BTF-typed programs get their arguments as an array of u64 at the context.
    unsafe { *(ctx.as_ptr() as *const u64).add(n) }
}

/// Argument `n` of an fentry/fexit context as a plain number. Loaded from the context, a
/// pointer argument is typed by BTF as a kernel pointer, and the verifier refuses any arithmetic
/// on it but adding offsets; a packet's receive stamp is found by hashing its address
/// (`arrivals`). Read through a helper, it is a number like a kprobe's.
#[inline(always)]
fn btf_arg_value<C: EbpfContext>(ctx: &C, n: usize) -> u64 {
    read::<u64>(ctx.as_ptr() as u64 + 8 * n as u64).unwrap_or(0)
}

macro_rules! send_layer {
    ($function:literal, $fentry:ident, $fexit:ident, $kprobe:ident, $kretprobe:ident, $func:expr, $layer:expr) => {
        #[fentry(function = $function)]
        pub fn $fentry(ctx: FEntryContext) -> i32 {
            if !noop() {
                enter_send($func, btf_arg(&ctx, 0));
            }
            0
        }

        #[fexit(function = $function)]
        pub fn $fexit(_ctx: FExitContext) -> i32 {
            if !noop() {
                exit_send($func, $layer);
            }
            0
        }

        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            if !noop() {
                enter_send($func, ctx.arg::<u64>(0).unwrap_or(0));
            }
            0
        }

        #[kretprobe]
        pub fn $kretprobe(_ctx: RetProbeContext) -> u32 {
            if !noop() {
                exit_send($func, $layer);
            }
            0
        }
    };
}

send_layer!(
    "tcp_sendmsg",
    tcp_sendmsg_fentry,
    tcp_sendmsg_fexit,
    tcp_sendmsg_kprobe,
    tcp_sendmsg_kretprobe,
    func::TCP_SENDMSG,
    layer::L4
);

send_layer!(
    "__ip_queue_xmit",
    ip_queue_xmit_fentry,
    ip_queue_xmit_fexit,
    ip_queue_xmit_kprobe,
    ip_queue_xmit_kretprobe,
    func::IP_QUEUE_XMIT,
    layer::L3
);

#[fentry(function = "nf_hook_slow")]
pub fn nf_hook_slow_fentry(ctx: FEntryContext) -> i32 {
    if !noop() {
        enter_netfilter(btf_arg_value(&ctx, 0));
    }
    0
}

#[fexit(function = "nf_hook_slow")]
pub fn nf_hook_slow_fexit(_ctx: FExitContext) -> i32 {
    if !noop() {
        exit_netfilter();
    }
    0
}

#[kprobe]
pub fn nf_hook_slow_kprobe(ctx: ProbeContext) -> u32 {
    if !noop() {
        enter_netfilter(ctx.arg::<u64>(0).unwrap_or(0));
    }
    0
}

#[kretprobe]
pub fn nf_hook_slow_kretprobe(_ctx: RetProbeContext) -> u32 {
    if !noop() {
        exit_netfilter();
    }
    0
}

#[fentry(function = "neigh_resolve_output")]
pub fn neigh_resolve_output_fentry(ctx: FEntryContext) -> i32 {
    if !noop() {
        enter_neigh(btf_arg(&ctx, 1));
    }
    0
}

#[kprobe]
pub fn neigh_resolve_output_kprobe(ctx: ProbeContext) -> u32 {
    if !noop() {
        enter_neigh(ctx.arg::<u64>(1).unwrap_or(0));
    }
    0
}

macro_rules! receive_layer {
    ($function:literal, $fentry:ident, $fexit:ident, $kprobe:ident, $kretprobe:ident, $func:expr) => {
        #[fentry(function = $function)]
        pub fn $fentry(ctx: FEntryContext) -> i32 {
            if !noop() {
                enter_receive($func, btf_arg_value(&ctx, 0));
            }
            0
        }

        #[fexit(function = $function)]
        pub fn $fexit(_ctx: FExitContext) -> i32 {
            if !noop() {
                exit_receive($func);
            }
            0
        }

        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            if !noop() {
                enter_receive($func, ctx.arg::<u64>(0).unwrap_or(0));
            }
            0
        }

        #[kretprobe]
        pub fn $kretprobe(_ctx: RetProbeContext) -> u32 {
            if !noop() {
                exit_receive($func);
            }
            0
        }
    };
}

receive_layer!(
    "ip_rcv",
    ip_rcv_fentry,
    ip_rcv_fexit,
    ip_rcv_kprobe,
    ip_rcv_kretprobe,
    func::IP_RCV
);

receive_layer!(
    "tcp_v4_rcv",
    tcp_v4_rcv_fentry,
    tcp_v4_rcv_fexit,
    tcp_v4_rcv_kprobe,
    tcp_v4_rcv_kretprobe,
    func::TCP_V4_RCV
);
