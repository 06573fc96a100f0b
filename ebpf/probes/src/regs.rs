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

/// A syscall's entry or exit, as its program sees it. Each hook says how it reaches the task,
/// the registers and a kernel field; what is read is written once, in the provided methods.
pub trait SyscallCtx: EbpfContext {
    /// The current task's address.
    fn task(&self) -> u64;
    /// The registers the tracepoint passes (`struct pt_regs *`).
    fn regs(&self) -> u64;
    /// The field of type `T` at `offset` in the kernel struct at `base`, where `base` is the
    /// task, the registers, or a pointer read from one of their fields; `None` if it faults.
    fn field<T: Copy>(&self, base: u64, offset: u64) -> Option<T>;
    /// The syscall's return value (at exit).
    fn sys_ret(&self) -> i64;
    /// The table of the program that copies the rest of a long iovec array (a tail call must
    /// stay within one hook's programs), if the hook has one.
    fn iov_continue(&self) -> Option<&'static ProgramArray>;

    /// Argument `N` (below 4) of the syscall.
    #[inline(always)]
    fn sys_arg<const N: usize>(&self) -> u64 {
        // SAFETY: a plain read of a static (volatile: see `maps::config`).
        let at = unsafe { core::ptr::read_volatile(&NETSONDE_OFFSETS.regs_args[N & 3]) };
        self.field(self.regs(), at as u64).unwrap_or(0)
    }

    /// The syscall's number. It is an int to the kernel (arm64 keeps 32 bits): its low half is
    /// what counts.
    #[inline(always)]
    fn sys_nr(&self) -> u32 {
        self.field::<u64>(self.regs(), offset!(regs_syscall_nr))
            .unwrap_or(u64::MAX) as u32
    }

    /// Whether the current task is in a 32-bit (compat) syscall: those have numbers of their
    /// own, which the dispatch tables would take for other syscalls.
    #[inline(always)]
    fn compat(&self) -> bool {
        let word: u32 = self.field(self.task(), offset!(task_compat)).unwrap_or(0);
        word & offset!(task_compat_mask) as u32 != 0
    }

    /// The `struct file *` behind `fd` in the current process, if it is open.
    #[inline(always)]
    fn fd_file(&self, fd: i32) -> Option<u64> {
        if fd < 0 {
            return None;
        }
        let files: u64 = self.field(self.task(), offset!(task_files))?;
        if files == 0 {
            return None;
        }
        let fdt: u64 = self.field(files, offset!(files_fdt))?;
        if fdt == 0 {
            return None;
        }
        let max_fds: u32 = self.field(fdt, offset!(fdtable_max_fds))?;
        if fd as u32 >= max_fds {
            return None;
        }
        // `fd` is an array of pointers, which the verifier does not type: the last step is a
        // probe read on either hook.
        let fd_array: u64 = self.field(fdt, offset!(fdtable_fd))?;
        let file: u64 = read(fd_array + (fd as u64) * 8)?;
        (file != 0).then_some(file)
    }
}

impl SyscallCtx for RawTracePointContext {
    #[inline(always)]
    fn task(&self) -> u64 {
        // SAFETY: the helper only returns the current task's address.
        unsafe { bpf_get_current_task() }
    }

    #[inline(always)]
    fn regs(&self) -> u64 {
        self.arg(0)
    }

    #[inline(always)]
    fn field<T: Copy>(&self, base: u64, offset: u64) -> Option<T> {
        read(base + offset)
    }

    #[inline(always)]
    fn sys_ret(&self) -> i64 {
        self.arg::<u64>(1) as i64
    }

    #[inline(always)]
    fn iov_continue(&self) -> Option<&'static ProgramArray> {
        Some(&IOV_CONTINUE)
    }
}

/// The current task as a typed pointer (for hooks whose programs the verifier types by BTF).
#[inline(always)]
pub fn current_task_btf() -> u64 {
    // SAFETY: the helper only returns the current task's (trusted) pointer.
    unsafe { bpf_get_current_task_btf() as u64 }
}

/// The field of type `T` at `offset` in the struct at the typed kernel pointer `base`: a plain
/// load, which the verifier checks against the kernel's BTF and turns into one that cannot
/// fault.
#[inline(always)]
pub fn typed_field<T: Copy>(base: u64, offset: u64) -> Option<T> {
    // SAFETY: see above; the verifier rejects the program if the field is not a `T`.
    Some(unsafe { core::ptr::read_volatile((base + offset) as *const T) })
}

impl SyscallCtx for BtfTracePointContext {
    #[inline(always)]
    fn task(&self) -> u64 {
        current_task_btf()
    }

    #[inline(always)]
    fn regs(&self) -> u64 {
        self.arg(0)
    }

    #[inline(always)]
    fn field<T: Copy>(&self, base: u64, offset: u64) -> Option<T> {
        typed_field(base, offset)
    }

    #[inline(always)]
    fn sys_ret(&self) -> i64 {
        self.arg::<u64>(1) as i64
    }

    #[inline(always)]
    fn iov_continue(&self) -> Option<&'static ProgramArray> {
        Some(&IOV_CONTINUE_BTF)
    }
}
