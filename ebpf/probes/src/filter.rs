//! Which processes are traced. Checked first in every entry program, so a process netsonde does
//! not watch costs one map lookup per syscall (none at all when every process is watched).

use netsonde_common::{counter, filter_mode, monitored};

use crate::{
    kernel::process_comm,
    maps::{COMM_FILTER, DECISIONS, MONITORED, config, count},
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
    let selected = MONITORED.get_ptr(&tgid).is_some()
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

/// A process forked a child (`child` is a new tgid). When the parent is in the monitored set,
/// the child joins it at once, before it can run, so its first syscall is already traced;
/// returns whether it did (user space then confirms or removes it).
#[inline(always)]
pub fn inherit(parent: u32, child: u32) -> bool {
    if config!(filter_mode) == filter_mode::ALL || MONITORED.get_ptr(&parent).is_none() {
        return false;
    }
    if MONITORED.insert(&child, &monitored::INHERITED, 0).is_err() {
        count(counter::MONITORED_FULL, 1);
        return false;
    }
    let _ = DECISIONS.insert(&child, &1u8, 0);
    true
}

/// The process `tgid` is gone: nothing about it may outlive the pid, which will be reused.
#[inline(always)]
pub fn forget_process(tgid: u32) {
    if config!(filter_mode) != filter_mode::ALL {
        let _ = DECISIONS.remove(&tgid);
        let _ = MONITORED.remove(&tgid);
    }
}
