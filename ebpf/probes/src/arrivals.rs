//! Received packets' stamps, from arrival to the reader's copy (`RX_ARRIVALS`; the table's
//! rules and why it is not a hash map are in `netsonde_common::arrivals`).

use netsonde_common::arrivals::{Found, RX_WAYS, RxSet, RxSkb, find, set_of, stamp, way_for};

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
    // time: the stamp's check makes a torn one unreadable (`find`).
    unsafe {
        let way = way_for(&*set, skb) & (RX_WAYS - 1);
        (*set).skbs[way] = skb;
        (*set).times[way] = received_ns;
        (*set).stamps[way] = stamp(skb, received_ns, len);
    }
}

/// Takes a packet's stamp: what the reader's copy found of it, an intact one now claimed. The
/// claim zeroes its way's time; a stamp written into the way in the nanoseconds between would
/// be taken for claimed.
#[inline(always)]
pub(crate) fn claim_arrival(skb: u64) -> Found {
    let Some(set) = set(skb) else {
        return Found::Unknown;
    };
    // SAFETY: as in `stamp_arrival`.
    unsafe {
        let found = find(&*set, skb);
        if let Found::Stamped(way, _) = found {
            (*set).times[way & (RX_WAYS - 1)] = 0;
        }
        found
    }
}

/// A packet's stamp in place, for the receive path's layer times to be added to.
#[inline(always)]
pub(crate) fn arrival_of(skb: u64) -> Option<*mut RxSkb> {
    let set = set(skb)?;
    // SAFETY: as in `stamp_arrival`.
    unsafe {
        match find(&*set, skb) {
            Found::Stamped(way, _) => {
                Some(&mut (*set).stamps[way & (RX_WAYS - 1)].rx as *mut RxSkb)
            }
            _ => None,
        }
    }
}
