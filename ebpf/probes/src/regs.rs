//! How a syscall program reads its syscall, at either of the two hooks every syscall passes:
//!
//! - `tp_btf` (BTF-typed tracepoint, Linux 5.5+, needs the kernel's own BTF): the registers and
//!   the current task are typed pointers, so the verifier lets the program load their fields
//!   directly (one instruction each, faults caught), and the walk from the task to an fd's
//!   `struct file` costs one helper call instead of five. This is the hook used wherever it
//!   loads.
//! - raw tracepoint: every read of kernel memory is a `bpf_probe_read_kernel` call. The
//!   fallback, for kernels whose BTF is only a file given with `--btf`.
//!
//! The offsets come from the running kernel's BTF at start (`NETSONDE_OFFSETS`, read-only), so
//! the verifier sees each one as a constant and checks the typed loads against the kernel's
//! own layout.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_task, bpf_get_current_task_btf},
    maps::ProgramArray,
    programs::{BtfTracePointContext, RawTracePointContext},
};

use crate::{
    kernel::read,
    maps::{IOV_CONTINUE, IOV_CONTINUE_BTF, NETSONDE_OFFSETS, offset},
};

/// A syscall's entry or exit, as its program sees it.
pub trait SyscallCtx: EbpfContext {
    /// Argument `N` (below 4) of the syscall.
    fn sys_arg<const N: usize>(&self) -> u64;
    /// The syscall's return value (at exit).
    fn sys_ret(&self) -> i64;
    /// Whether the current task is in a 32-bit (compat) syscall: those have numbers of their
    /// own, which the dispatch tables would take for other syscalls.
    fn compat(&self) -> bool;
    /// The `struct file *` behind `fd` in the current process, if it is open.
    fn fd_file(&self, fd: i32) -> Option<u64>;
    /// The table of the program that copies the rest of a long iovec array (a tail call must
    /// stay within one hook's programs).
    fn iov_continue(&self) -> &'static ProgramArray;
}

/// Offset of syscall argument `N` in `struct pt_regs`.
#[inline(always)]
fn regs_arg_offset<const N: usize>() -> u64 {
    // SAFETY: a plain read of a static (volatile: see `maps::config`).
    (unsafe { core::ptr::read_volatile(&NETSONDE_OFFSETS.regs_args[N & 3]) }) as u64
}

impl SyscallCtx for RawTracePointContext {
    #[inline(always)]
    fn sys_arg<const N: usize>(&self) -> u64 {
        let regs: u64 = self.arg(0);
        read::<u64>(regs + regs_arg_offset::<N>()).unwrap_or(0)
    }

    #[inline(always)]
    fn sys_ret(&self) -> i64 {
        self.arg::<u64>(1) as i64
    }

    #[inline(always)]
    fn compat(&self) -> bool {
        // SAFETY: the helper only returns the current task's address.
        let task = unsafe { bpf_get_current_task() };
        let word: u32 = read(task + offset!(task_compat)).unwrap_or(0);
        word & offset!(task_compat_mask) as u32 != 0
    }

    #[inline(always)]
    fn fd_file(&self, fd: i32) -> Option<u64> {
        if fd < 0 {
            return None;
        }
        // SAFETY: the helper only returns the current task's address.
        let task = unsafe { bpf_get_current_task() };
        let files: u64 = read(task + offset!(task_files))?;
        if files == 0 {
            return None;
        }
        let fdt: u64 = read(files + offset!(files_fdt))?;
        let max_fds: u32 = read(fdt + offset!(fdtable_max_fds))?;
        if fd as u32 >= max_fds {
            return None;
        }
        let fd_array: u64 = read(fdt + offset!(fdtable_fd))?;
        let file: u64 = read(fd_array + (fd as u64) * 8)?;
        (file != 0).then_some(file)
    }

    #[inline(always)]
    fn iov_continue(&self) -> &'static ProgramArray {
        &IOV_CONTINUE
    }
}

/// Loads a `T` at `base + offset`, where `base` is a typed kernel pointer the verifier knows
/// (a tracepoint argument, the current task, or a pointer loaded from one of their fields).
/// The verifier checks the offset against the kernel's BTF and turns the load into one that
/// cannot fault.
#[inline(always)]
fn load<T: Copy>(base: u64, offset: u64) -> T {
    // SAFETY: see above; the verifier rejects the program if the field is not a `T`.
    unsafe { core::ptr::read_volatile((base + offset) as *const T) }
}

impl SyscallCtx for BtfTracePointContext {
    #[inline(always)]
    fn sys_arg<const N: usize>(&self) -> u64 {
        let regs: u64 = self.arg(0);
        load::<u64>(regs, regs_arg_offset::<N>())
    }

    #[inline(always)]
    fn sys_ret(&self) -> i64 {
        self.arg::<u64>(1) as i64
    }

    #[inline(always)]
    fn compat(&self) -> bool {
        // SAFETY: the helper only returns the current task's (trusted) pointer.
        let task = unsafe { bpf_get_current_task_btf() } as u64;
        let word: u32 = load(task, offset!(task_compat));
        word & offset!(task_compat_mask) as u32 != 0
    }

    #[inline(always)]
    fn fd_file(&self, fd: i32) -> Option<u64> {
        if fd < 0 {
            return None;
        }
        // SAFETY: as in `compat`.
        let task = unsafe { bpf_get_current_task_btf() } as u64;
        let files: u64 = load(task, offset!(task_files));
        if files == 0 {
            return None;
        }
        let fdt: u64 = load(files, offset!(files_fdt));
        if fdt == 0 {
            return None;
        }
        let max_fds: u32 = load(fdt, offset!(fdtable_max_fds));
        if fd as u32 >= max_fds {
            return None;
        }
        // `fd` is an array of pointers, which the verifier does not type: the last step is a
        // probe read.
        let fd_array: u64 = load(fdt, offset!(fdtable_fd));
        let file: u64 = read(fd_array + (fd as u64) * 8)?;
        (file != 0).then_some(file)
    }

    #[inline(always)]
    fn iov_continue(&self) -> &'static ProgramArray {
        &IOV_CONTINUE_BTF
    }
}
