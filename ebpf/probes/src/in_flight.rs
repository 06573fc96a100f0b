//! Each thread's syscall in flight (`IN_FLIGHT`): its arguments, saved at entry for the exit
//! and for the network layer's programs that run during it.
//!
//! A thread keeps its slot from its first traced syscall until it exits (`process_exit`
//! removes it), and each syscall writes its arguments into it in place; the exit marks it
//! idle (`enter_ns` 0). Inserting and deleting a hash map element per syscall cost several
//! hundred nanoseconds each on the kernels measured (benchmarks/RESULTS.md); a lookup and a
//! few stores cost a fraction of that.
//!
//! Writes go in an order that leaves the slot idle until it is whole: a program that
//! interrupts this one on the same CPU (a softirq's packet, which looks the slot up) sees
//! either no syscall or the whole new one. Nothing else writes a thread's slot: only the
//! thread's own programs do, and they do not run at once.

use core::ptr::{read_volatile, write_volatile};

use netsonde_common::{SyscallArgs, counter};

use crate::{
    filter::traced,
    maps::{IN_FLIGHT, count},
};

/// Saves the arguments of the syscall the current thread (`pid_tgid`) is entering.
#[inline(always)]
pub fn save_args(pid_tgid: u64, args: &SyscallArgs) {
    let Some(slot) = IN_FLIGHT.get_ptr_mut(&pid_tgid) else {
        if IN_FLIGHT.insert(&pid_tgid, args, 0).is_err() {
            count(counter::IN_FLIGHT_FULL, 1);
        }
        return;
    };
    // SAFETY: a pointer into this thread's own map value (see the module's comment); volatile
    // keeps the stores in this order.
    unsafe {
        write_volatile(&mut (*slot).enter_ns, 0);
        write_volatile(&mut (*slot).syscall, args.syscall);
        write_volatile(&mut (*slot).flags, args.flags);
        write_volatile(&mut (*slot).fd, args.fd);
        write_volatile(&mut (*slot).buf, args.buf);
        write_volatile(&mut (*slot).iovcnt, args.iovcnt);
        write_volatile(&mut (*slot).sock, args.sock);
        write_volatile(&mut (*slot).enter_ns, args.enter_ns);
    }
}

/// The syscall in flight on thread `pid_tgid`, if there is one.
#[inline(always)]
pub fn in_flight(pid_tgid: u64) -> Option<SyscallArgs> {
    let slot = IN_FLIGHT.get_ptr_mut(&pid_tgid)?;
    // SAFETY: a pointer into the map value; `enter_ns` is read first: a slot that was idle
    // then is not used.
    unsafe {
        if read_volatile(&(*slot).enter_ns) == 0 {
            return None;
        }
        Some(*slot)
    }
}

/// Takes the arguments saved by the matching entry program, if any, leaving the slot idle.
#[inline(always)]
pub fn take_args(pid_tgid: u64, sc: u16) -> Option<SyscallArgs> {
    // A process not traced has no slot: asking the decision (cached per CPU) is cheaper than
    // a hash lookup that misses.
    if !traced((pid_tgid >> 32) as u32) {
        return None;
    }
    let slot = IN_FLIGHT.get_ptr_mut(&pid_tgid)?;
    // SAFETY: this thread's own slot (see the module's comment).
    let args = unsafe {
        let args = *slot;
        if args.enter_ns == 0 {
            return None;
        }
        write_volatile(&mut (*slot).enter_ns, 0);
        args
    };
    // A leftover from an exit that never came belongs to another syscall: ignore it.
    (args.syscall == sc).then_some(args)
}
