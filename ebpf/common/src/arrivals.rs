//! In-kernel only: received packets waiting for a reader (`RX_ARRIVALS`), and the pure rules
//! of that table, here so that they are tested on the host.
//!
//! Every packet the node receives is stamped at `netif_receive_skb`, before anyone knows whose
//! it is; the reader's copy claims the stamp. A hash map cost an insert (250–300 ns) and a
//! delete per packet, and most stamps (pure ACKs, packets of processes nobody traces) are never
//! claimed. The table is an array instead: set `set_of(skb)` of [`RX_SETS`], [`RX_WAYS`] ways
//! each. A new stamp takes the way its `sk_buff` already has, else an empty one, else the older
//! one; unclaimed stamps simply age out. No lock: two CPUs can write one way at the same
//! moment, so each stamp carries a check over its key and values, and a reader takes a stamp
//! only when the check matches what it read. A torn or overwritten stamp is a packet not timed,
//! never a packet timed with another's values.

/// Sets in the table: a power of two (the index is the top bits of a product).
pub const RX_SETS: u32 = 1 << RX_SET_BITS;
/// log2 of [`RX_SETS`].
pub const RX_SET_BITS: u32 = 14;
/// Stamps per set.
pub const RX_WAYS: usize = 2;

/// A received packet waiting to be copied to a reader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxSkb {
    pub received_ns: u64,
    /// Time in netfilter hooks, in `ip_rcv` and in `tcp_v4_rcv` on the way in (kernels with
    /// kprobes or fentry).
    pub nf_ns: u64,
    pub l3_ns: u64,
    pub l4_ns: u64,
    pub len: u32,
    pub nf_count: u32,
}

/// One way of a set: `skb` 0 is empty; `rx.received_ns` 0 is claimed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxStamp {
    pub skb: u64,
    /// [`check_of`] the key, `received_ns` and `len` as they were written.
    pub check: u64,
    pub rx: RxSkb,
}

/// One entry of `RX_ARRIVALS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxSet {
    pub ways: [RxStamp; RX_WAYS],
}

/// The set an `sk_buff` address belongs to. Addresses come from a slab (aligned, close to each
/// other): a multiplication spreads them, and its top bits are the index.
#[inline(always)]
pub fn set_of(skb: u64) -> u32 {
    (skb.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - RX_SET_BITS)) as u32
}

/// What a stamp's check must be. A bijection of each input given the others: a stamp whose key,
/// time or length came from another write never matches.
#[inline(always)]
pub fn check_of(skb: u64, received_ns: u64, len: u32) -> u64 {
    let mixed = skb.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ received_ns;
    mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ len as u64
}

/// Whether `stamp` is an intact stamp of `skb`.
#[inline(always)]
pub fn holds(stamp: &RxStamp, skb: u64) -> bool {
    skb != 0 && stamp.skb == skb && stamp.check == check_of(skb, stamp.rx.received_ns, stamp.rx.len)
}

/// Whether `stamp` is one of `skb`'s that a reader claimed: its time is zeroed (no arrival is
/// at 0 ns, and a torn write mixes two real times), so a second read of the same packet knows
/// it was counted, and the way is the first to be taken again (`way_for`: the oldest).
#[inline(always)]
pub fn claimed(stamp: &RxStamp, skb: u64) -> bool {
    skb != 0 && stamp.skb == skb && stamp.rx.received_ns == 0
}

/// The way a new stamp of `skb` takes: the one that has this address already (a stamp left by
/// an earlier packet at the same address must not survive beside the new one), else an empty
/// one, else the one stamped earlier (a claimed one counts as stamped at 0).
#[inline(always)]
pub fn way_for(set: &RxSet, skb: u64) -> usize {
    let [a, b] = &set.ways;
    if a.skb == skb {
        0
    } else if b.skb == skb {
        1
    } else if a.skb == 0 {
        0
    } else if b.skb == 0 || b.rx.received_ns < a.rx.received_ns {
        1
    } else {
        0
    }
}

/// The way holding an intact stamp of `skb`, if one does.
#[inline(always)]
pub fn way_of(set: &RxSet, skb: u64) -> Option<usize> {
    let [a, b] = &set.ways;
    if holds(a, skb) {
        Some(0)
    } else if holds(b, skb) {
        Some(1)
    } else {
        None
    }
}

/// A fresh stamp of `skb`.
#[inline(always)]
pub fn stamp(skb: u64, received_ns: u64, len: u32) -> RxStamp {
    RxStamp {
        skb,
        check: check_of(skb, received_ns, len),
        rx: RxSkb {
            received_ns,
            len,
            ..RxSkb::default()
        },
    }
}

const _: () = assert!(core::mem::size_of::<RxSkb>() == 40);
const _: () = assert!(core::mem::size_of::<RxStamp>() == 56);
const _: () = assert!(core::mem::size_of::<RxSet>() == 112);
const _: () = assert!(RX_WAYS == 2, "way_for and way_of name two ways");

#[cfg(test)]
mod tests {
    use super::*;

    const A: u64 = 0xffff_8880_1234_5600;
    const B: u64 = 0xffff_8880_1234_5700;
    const C: u64 = 0xffff_8880_1234_5800;

    fn set(ways: [(u64, u64); 2]) -> RxSet {
        RxSet {
            ways: ways.map(|(skb, t)| {
                if skb == 0 {
                    RxStamp::default()
                } else {
                    stamp(skb, t, 60)
                }
            }),
        }
    }

    #[test]
    fn a_new_stamp_takes_its_own_way_then_an_empty_one_then_the_older_one() {
        let cases = [
            // (ways as (skb, received_ns), new skb, way taken)
            ([(0, 0), (0, 0)], A, 0),
            ([(B, 5), (0, 0)], A, 1),
            ([(0, 0), (B, 5)], A, 0),
            ([(B, 5), (C, 9)], A, 0),
            ([(B, 9), (C, 5)], A, 1),
            ([(B, 5), (A, 1)], A, 1), // its own address, though the older way is elsewhere
            ([(A, 9), (C, 5)], A, 0),
            ([(B, 5), (C, 0)], A, 1), // a claimed stamp is the oldest
        ];
        for (ways, skb, want) in cases {
            assert_eq!(way_for(&set(ways), skb), want, "{ways:x?} <- {skb:x}");
        }
    }

    #[test]
    fn a_stamp_is_found_only_where_it_is_intact() {
        let s = set([(B, 5), (A, 7)]);
        assert_eq!(way_of(&s, A), Some(1));
        assert_eq!(way_of(&s, B), Some(0));
        assert_eq!(way_of(&s, C), None);
        assert_eq!(
            way_of(&RxSet::default(), 0),
            None,
            "an empty way is nobody's"
        );

        // Each of the key, the time and the length written by another write: not found.
        let mut torn = s;
        torn.ways[1].rx.received_ns = 5;
        assert_eq!(way_of(&torn, A), None);
        let mut torn = s;
        torn.ways[1].rx.len = 1448;
        assert_eq!(way_of(&torn, A), None);
        let mut torn = s;
        torn.ways[1].skb = C;
        assert_eq!(way_of(&torn, C), None);
        // The layer times added on the way in are not covered: they change after the stamp.
        let mut timed = s;
        timed.ways[1].rx.l3_ns = 300;
        assert_eq!(way_of(&timed, A), Some(1));

        // A claimed stamp is no longer found, but known as claimed (its reader counted it).
        let mut read = s;
        read.ways[1].rx.received_ns = 0;
        assert_eq!(way_of(&read, A), None);
        assert!(claimed(&read.ways[1], A));
        assert!(!claimed(&read.ways[1], C) && !claimed(&s.ways[1], A));
        assert!(!claimed(&RxStamp::default(), 0), "an empty way is nobody's");
    }

    #[test]
    fn neighbouring_slab_addresses_spread_over_the_sets() {
        // sk_buffs are 256-byte slab objects: 4096 neighbours should fill most of 16384 sets'
        // worth of a quarter, not pile up in a few.
        let mut used = [false; RX_SETS as usize];
        for i in 0..4096u64 {
            used[set_of(A + i * 256) as usize] = true;
        }
        let distinct = used.iter().filter(|&&u| u).count();
        assert!(distinct > 3500, "{distinct} sets for 4096 neighbours");
        assert!(set_of(u64::MAX) < RX_SETS);
    }
}
