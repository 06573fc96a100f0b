//! In-kernel only: received packets waiting for a reader (`RX_ARRIVALS`), and the pure rules
//! of that table, here so that they are tested on the host.
//!
//! Every packet the node receives is stamped at `netif_receive_skb`, before anyone knows whose
//! it is; the reader's copy claims the stamp. A hash map cost an insert (250–300 ns) and a
//! delete per packet, and most stamps (pure ACKs, packets of processes nobody traces) are never
//! claimed. The table is an array instead: set `set_of(skb)` of [`RX_SETS`], [`RX_WAYS`] ways
//! each. A new stamp takes the way its `sk_buff` already has, else the oldest (an empty or a
//! claimed way counts as stamped at 0); unclaimed stamps simply age out. A waiting stamp is
//! lost only when four newer packets land in its set first (with two ways, two did: under 256
//! busy connections about one packet read in 30 000 found its stamp gone).
//!
//! No lock: two CPUs can write one way at the same moment, so each stamp carries a check over
//! its key and values, and a reader takes a stamp only when the check matches what it read. A
//! torn or overwritten stamp is a packet not timed, never a packet timed with another's values.

/// Sets in the table: a power of two (the index is the top bits of a product).
pub const RX_SETS: u32 = 1 << RX_SET_BITS;
/// log2 of [`RX_SETS`].
pub const RX_SET_BITS: u32 = 13;
/// Stamps per set: a power of two (a way's index is masked with `RX_WAYS - 1`).
pub const RX_WAYS: usize = 4;

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

/// One way's stamp.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxStamp {
    /// [`check_of`] the way's key, `received_ns` and `len` as they were written.
    pub check: u64,
    pub rx: RxSkb,
}

/// One entry of `RX_ARRIVALS`. The keys and times sit together in the first 64 bytes:
/// choosing a way and finding one read only those.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxSet {
    /// Each way's `sk_buff` address; 0: empty.
    pub skbs: [u64; RX_WAYS],
    /// Each way's arrival time, as in its stamp; 0: empty or claimed.
    pub times: [u64; RX_WAYS],
    pub stamps: [RxStamp; RX_WAYS],
}

/// What a reader finds of a packet's stamp in its set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// An intact stamp, in this way.
    Stamped(usize, RxSkb),
    /// Claimed by an earlier read of the same packet.
    Claimed,
    /// None: never stamped, or its way taken by newer packets.
    Unknown,
}

/// The set an `sk_buff` address belongs to. Addresses come from a slab: cache-line aligned,
/// close to each other. Without the six bits alignment leaves at zero, consecutive objects are
/// small steps apart, and a multiplication by 2^64 divided by the golden ratio (Fibonacci
/// hashing) spreads such steps evenly; its top bits are the index.
#[inline(always)]
pub fn set_of(skb: u64) -> u32 {
    ((skb >> 6).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - RX_SET_BITS)) as u32
}

/// What a stamp's check must be. A bijection of each input given the others: a stamp whose key,
/// time or length came from another write never matches.
#[inline(always)]
pub fn check_of(skb: u64, received_ns: u64, len: u32) -> u64 {
    let mixed = skb.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ received_ns;
    mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ len as u64
}

/// A fresh stamp of `skb`.
#[inline(always)]
pub fn stamp(skb: u64, received_ns: u64, len: u32) -> RxStamp {
    RxStamp {
        check: check_of(skb, received_ns, len),
        rx: RxSkb {
            received_ns,
            len,
            ..RxSkb::default()
        },
    }
}

/// The way a new stamp of `skb` takes: the one that has this address already (a stamp left by
/// an earlier packet at the same address must not survive beside the new one), else the one
/// with the oldest time (empty and claimed ways have 0).
#[inline(always)]
pub fn way_for(set: &RxSet, skb: u64) -> usize {
    let mut oldest = 0;
    for way in 0..RX_WAYS {
        if set.skbs[way] == skb {
            return way;
        }
        if set.times[way] < set.times[oldest] {
            oldest = way;
        }
    }
    oldest
}

/// Whether `way` holds an intact stamp of `skb` (its stamp copied out first, then checked).
#[inline(always)]
fn intact(set: &RxSet, way: usize, skb: u64) -> Option<RxSkb> {
    let way = way & (RX_WAYS - 1);
    let time = set.times[way];
    let stamp = set.stamps[way];
    let whole = time != 0
        && stamp.rx.received_ns == time
        && stamp.check == check_of(skb, time, stamp.rx.len);
    whole.then_some(stamp.rx)
}

/// What `set` holds of `skb`'s stamp.
#[inline(always)]
pub fn find(set: &RxSet, skb: u64) -> Found {
    if skb == 0 {
        return Found::Unknown;
    }
    let mut claimed = false;
    for way in 0..RX_WAYS {
        if set.skbs[way] != skb {
            continue;
        }
        if let Some(rx) = intact(set, way, skb) {
            return Found::Stamped(way, rx);
        }
        claimed |= set.times[way] == 0;
    }
    if claimed {
        Found::Claimed
    } else {
        Found::Unknown
    }
}

const _: () = assert!(core::mem::size_of::<RxSkb>() == 40);
const _: () = assert!(core::mem::size_of::<RxStamp>() == 48);
const _: () = assert!(core::mem::size_of::<RxSet>() == 64 + 4 * 48);
const _: () = assert!(RX_WAYS.is_power_of_two());

#[cfg(test)]
mod tests {
    use super::*;

    const A: u64 = 0xffff_8880_1234_5600;
    const B: u64 = 0xffff_8880_1234_5700;
    const C: u64 = 0xffff_8880_1234_5800;
    const D: u64 = 0xffff_8880_1234_5900;
    const E: u64 = 0xffff_8880_1234_5a00;

    /// A set from (address, time) per way: address 0 is empty, time 0 claimed.
    fn set(ways: [(u64, u64); RX_WAYS]) -> RxSet {
        let mut set = RxSet::default();
        for (way, (skb, time)) in ways.into_iter().enumerate() {
            if skb == 0 {
                continue;
            }
            set.skbs[way] = skb;
            set.stamps[way] = stamp(skb, time.max(1), 60);
            set.times[way] = time;
        }
        set
    }

    #[test]
    fn a_new_stamp_takes_its_own_way_else_the_oldest() {
        let cases = [
            // (ways as (skb, received_ns), new skb, way taken)
            ([(0, 0); 4], A, 0),
            ([(B, 5), (0, 0), (C, 7), (D, 8)], A, 1),
            ([(B, 5), (C, 9), (D, 3), (E, 4)], A, 2),
            ([(B, 5), (C, 9), (D, 3), (E, 0)], A, 3), // a claimed stamp is the oldest
            ([(B, 5), (C, 9), (D, 3), (A, 8)], A, 3), // its own address, though not the oldest
            ([(A, 9), (C, 5), (D, 3), (E, 4)], A, 0),
            ([(B, 5), (C, 5), (D, 5), (E, 5)], A, 0), // ties: the first
        ];
        for (ways, skb, want) in cases {
            assert_eq!(way_for(&set(ways), skb), want, "{ways:x?} <- {skb:x}");
        }
    }

    #[test]
    fn a_stamp_is_found_only_where_it_is_intact() {
        let s = set([(B, 5), (A, 7), (C, 9), (0, 0)]);
        assert_eq!(find(&s, A), Found::Stamped(1, s.stamps[1].rx));
        assert_eq!(find(&s, C), Found::Stamped(2, s.stamps[2].rx));
        assert_eq!(find(&s, D), Found::Unknown);
        assert_eq!(
            find(&RxSet::default(), 0),
            Found::Unknown,
            "an empty way is nobody's"
        );

        // Each of the key, the time and the length written by another write: not found.
        let mut torn = s;
        torn.stamps[1].rx.received_ns = 5;
        assert_eq!(find(&torn, A), Found::Unknown);
        let mut torn = s;
        torn.times[1] = 5;
        assert_eq!(find(&torn, A), Found::Unknown);
        let mut torn = s;
        torn.stamps[1].rx.len = 1448;
        assert_eq!(find(&torn, A), Found::Unknown);
        let mut torn = s;
        torn.skbs[1] = D;
        assert_eq!(find(&torn, D), Found::Unknown);
        // The layer times added on the way in are not covered: they change after the stamp.
        let mut timed = s;
        timed.stamps[1].rx.l3_ns = 300;
        assert_eq!(find(&timed, A), Found::Stamped(1, timed.stamps[1].rx));

        // A claimed stamp is no longer found, but known as claimed (its reader counted it).
        let mut read = s;
        read.times[1] = 0;
        assert_eq!(find(&read, A), Found::Claimed);
        assert_eq!(find(&read, D), Found::Unknown);
    }

    #[test]
    fn neighbouring_slab_addresses_spread_over_the_sets() {
        // sk_buffs are 256-byte slab objects (their clones' pairs 512): 4096 neighbours should
        // land in nearly as many of the 8192 sets, not pile up in a few (random choice would
        // leave them in about 3 200).
        for size in [64, 256, 512] {
            let mut used = [false; RX_SETS as usize];
            for i in 0..4096u64 {
                used[set_of(A + i * size) as usize] = true;
            }
            let distinct = used.iter().filter(|&&u| u).count();
            assert!(
                distinct > 3900,
                "{distinct} sets for 4096 neighbours {size} bytes apart"
            );
        }
        assert!(set_of(u64::MAX) < RX_SETS);
    }
}
