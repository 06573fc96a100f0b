//! Which processes are traced. Checked first in every entry program, so a process netsonde does
//! not watch costs one map lookup per syscall (none at all when every process is watched).

use netsonde_common::filter_mode;

use crate::{
    kernel::process_comm,
    maps::{COMM_FILTER, DECISIONS, PID_FILTER, config},
};

/// Whether the process `tgid` is traced.
#[inline(always)]
pub fn traced(tgid: u32) -> bool {
    if tgid == config!(agent_tgid) {
        return false;
    }
    if config!(filter_mode) == filter_mode::ALL {
        return true;
    }
    // SAFETY: copied out at once.
    if let Some(decision) = unsafe { DECISIONS.get(&tgid) }.copied() {
        return decision != 0;
    }
    let selected = PID_FILTER.get_ptr(&tgid).is_some()
        || (config!(comm_filter) != 0 && COMM_FILTER.get_ptr(&process_comm()).is_some());
    let _ = DECISIONS.insert(&tgid, &u8::from(selected), 0);
    selected
}

/// Forgets the decision for `tgid`: its name changed (exec) or it is gone (exit).
#[inline(always)]
pub fn forget(tgid: u32) {
    if config!(filter_mode) != filter_mode::ALL {
        let _ = DECISIONS.remove(&tgid);
    }
}
