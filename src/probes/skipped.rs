//! Runs the kernel skipped. A tracepoint or kprobe program does not run when it would nest in
//! another BPF program on the same CPU (a packet's softirq interrupting a syscall's program):
//! the kernel counts those runs per program as `recursion_misses` (Linux 5.12 and later). A
//! retransmit or drop that happened during one is missing from netsonde's counts; this says how
//! many, so the counts never quietly come up short.

use std::{
    io,
    os::fd::{AsRawFd as _, OwnedFd},
};

/// A loaded program's descriptor, kept to read its counts.
#[derive(Debug)]
pub struct WatchedProgram {
    pub name: String,
    fd: OwnedFd,
}

impl WatchedProgram {
    pub fn new(name: String, fd: OwnedFd) -> Self {
        WatchedProgram { name, fd }
    }

    /// Runs skipped since the program was loaded.
    pub fn misses(&self) -> io::Result<u64> {
        recursion_misses(&self.fd)
    }
}

/// `bpf_prog_info.recursion_misses` of the program `fd`. aya 0.14 reads the same record but
/// does not expose this field, so the record is asked for here (BPF_OBJ_GET_INFO_BY_FD).
fn recursion_misses(fd: &OwnedFd) -> io::Result<u64> {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    /// The `info` member of `union bpf_attr`.
    #[repr(C)]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    // SAFETY: a plain C struct of integers; all zeroes is a valid value.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    let attr = InfoByFd {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: &raw mut info as u64,
    };
    // SAFETY: `attr` and `info` outlive the call, and `info_len` is `info`'s size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw const attr,
            std::mem::size_of::<InfoByFd>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.recursion_misses)
}
