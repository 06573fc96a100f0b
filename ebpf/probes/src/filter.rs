//! Which processes are traced. Checked first in every syscall program, entry and exit, so a
//! process netsonde does not watch costs two array lookups and a per-CPU one per program run
//! (nothing at all when every process is watched).
//!
//! Decisions live in `DECISIONS` (a hash map, by tgid); each CPU keeps its last one in
//! `LAST_DECISION`, valid while neither the programs nor user space has changed a decision
//! since (`DECISION_GENERATIONS`). The generations are read before the decision: a change made
//! after that read moves them, and the cached decision is not used again.

use netsonde_common::{CachedDecision, counter, filter_mode, monitored};

use crate::{
    kernel::process_comm,
    maps::{COMM_FILTER, DECISION_GENERATIONS, DECISIONS, LAST_DECISION, MONITORED, config, count},
};

/// [`CachedDecision::decision`] values.
const NOT_TRACED: u32 = 1;
const TRACED: u32 = 2;

/// The programs' decision generation moves: every CPU's cached decision is stale.
#[inline(always)]
fn decisions_changed() {
    if let Some(generation) = DECISION_GENERATIONS.get_ptr_mut(0) {
        // SAFETY: a u64 in an array map value, aligned; the kernel's atomic add.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                generation, 1,
            )
        };
    }
}

/// Both decision generations, the programs' then user space's.
#[inline(always)]
fn generations() -> (u64, u64) {
    let read = |i: u32| DECISION_GENERATIONS.get(i).copied().unwrap_or(0);
    (read(0), read(1))
}

/// Whether the process `tgid` is traced.
#[inline(always)]
pub fn traced(tgid: u32) -> bool {
    if tgid == config!(agent_tgid) {
        return false;
    }
    if config!(filter_mode) == filter_mode::ALL {
        return true;
    }
    let (kernel_generation, user_generation) = generations();
    let cache = LAST_DECISION.get_ptr_mut(0);
    if let Some(cache) = cache {
        // SAFETY: this CPU's slot; a program that interrupts this one and writes it leaves a
        // whole decision, checked against the generations like any other.
        let last = unsafe { *cache };
        if last.tgid == tgid
            && last.decision != 0
            && last.kernel_generation == kernel_generation
            && last.user_generation == user_generation
        {
            return last.decision == TRACED;
        }
    }
    let selected = decide(tgid);
    if let Some(cache) = cache {
        let decision = if selected { TRACED } else { NOT_TRACED };
        // SAFETY: as above.
        unsafe {
            *cache = CachedDecision {
                tgid,
                decision,
                kernel_generation,
                user_generation,
            };
        }
    }
    selected
}

/// The decision for `tgid` from `DECISIONS`, made and kept there when it has none.
#[inline(always)]
fn decide(tgid: u32) -> bool {
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
        decisions_changed();
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
    decisions_changed();
    true
}

/// The process `tgid` is gone: nothing about it may outlive the pid, which will be reused.
#[inline(always)]
pub fn forget_process(tgid: u32) {
    if config!(filter_mode) != filter_mode::ALL {
        let _ = DECISIONS.remove(&tgid);
        let _ = MONITORED.remove(&tgid);
        decisions_changed();
    }
}
