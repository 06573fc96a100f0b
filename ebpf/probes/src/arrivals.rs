//! Received packets' stamps, from arrival to the reader's copy (`RX_ARRIVALS`; the table's
//! rules and why it is not a hash map are in `netsonde_common::arrivals`).

use netsonde_common::arrivals::{RxSet, RxSkb, claimed, holds, set_of, stamp, way_for, way_of};

use crate::maps::RX_ARRIVALS;

#[inline(always)]
fn set(skb: u64) -> Option<*mut RxSet> {
    RX_ARRIVALS.get_ptr_mut(set_of(skb))
}

/// Stamps a packet's arrival, in place of the stamp its way held.
#[inline(always)]
pub(crate) fn stamp_arrival(skb: u64, received_ns: u64, len: u32) {
    let Some(set) = set(skb) else {
        return;
    };
    // SAFETY: a pointer into the array's value. Another CPU may write the same way at the same
    // time: the stamp's check makes a torn one unreadable (`holds`).
    unsafe {
        let way = way_for(&*set, skb);
        if let Some(slot) = (*set).ways.get_mut(way) {
            *slot = stamp(skb, received_ns, len);
        }
    }
}

/// What a reader's copy found of a packet's stamp.
pub(crate) enum Arrival {
    /// Intact, and now claimed.
    Stamped(RxSkb),
    /// Claimed by an earlier read of the same packet.
    Claimed,
    /// None: never seen arriving (before the agent started, or its program skipped), or its way
    /// taken by later packets.
    Unknown,
}

/// Takes a packet's stamp (an intact one: copied, then checked). The claim zeroes its time in
/// place; a stamp written into the way in the nanoseconds between would be taken for claimed.
#[inline(always)]
pub(crate) fn claim_arrival(skb: u64) -> Arrival {
    let Some(set) = set(skb) else {
        return Arrival::Unknown;
    };
    // SAFETY: as in `stamp_arrival`; each way is copied out before it is checked.
    unsafe {
        let first = (*set).ways[0];
        if holds(&first, skb) {
            (*set).ways[0].rx.received_ns = 0;
            return Arrival::Stamped(first.rx);
        }
        let second = (*set).ways[1];
        if holds(&second, skb) {
            (*set).ways[1].rx.received_ns = 0;
            return Arrival::Stamped(second.rx);
        }
        if claimed(&first, skb) || claimed(&second, skb) {
            return Arrival::Claimed;
        }
    }
    Arrival::Unknown
}

/// A packet's stamp in place, for the receive path's layer times to be added to.
#[inline(always)]
pub(crate) fn arrival_of(skb: u64) -> Option<*mut RxSkb> {
    let set = set(skb)?;
    // SAFETY: as in `stamp_arrival`.
    unsafe {
        let way = way_of(&*set, skb)?;
        (*set)
            .ways
            .get_mut(way)
            .map(|slot| &mut slot.rx as *mut RxSkb)
    }
}
