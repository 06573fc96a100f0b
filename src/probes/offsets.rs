//! Kernel struct field offsets, read from the running kernel's BTF.
//!
//! Rust-compiled eBPF has no CO-RE relocations, so the programs cannot carry field offsets of
//! their own: every offset they use is looked up here at start and handed to them through the
//! `NETSONDE_OFFSETS` global. A field this kernel lacks, or whose type changed size, is a startup
//! error that names it.

use std::path::Path;

use btf_rs::{Btf, Type};
use netsonde_common::KernelOffsets;

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    #[error(
        "kernel BTF is not available at {path} (the kernel needs CONFIG_DEBUG_INFO_BTF=y, or pass a BTF file for this kernel with --btf)"
    )]
    NoBtf {
        path: String,
        #[source]
        source: btf_rs::Error,
    },
    #[error(
        "cannot read {path} (given with --btf) as BTF: it must be the BTF of the running kernel, a raw .btf file such as `pahole --btf_encode_detached` writes"
    )]
    BadBtfFile {
        path: String,
        #[source]
        source: btf_rs::Error,
    },
    #[error("kernel BTF has no `struct {name}`")]
    MissingStruct { name: String },
    #[error("kernel BTF has no field `{field}` in `struct {container}` (needed for {purpose})")]
    MissingField {
        container: String,
        field: String,
        purpose: &'static str,
    },
    #[error(
        "`{path}` is a bit-field in this kernel; netsonde cannot read it (needed for {purpose})"
    )]
    Bitfield { path: String, purpose: &'static str },
    #[error(
        "`{path}` is {actual} bytes in this kernel, netsonde expects {expected} (needed for {purpose})"
    )]
    UnexpectedSize {
        path: String,
        actual: usize,
        expected: usize,
        purpose: &'static str,
    },
    #[error("reading kernel BTF for `{path}` failed")]
    Btf {
        path: String,
        #[source]
        source: btf_rs::Error,
    },
}

/// One field the programs read: `struct` name, member path (anonymous structs and unions are
/// searched through), the size the programs read, and why it is needed.
struct FieldSpec {
    container: &'static str,
    path: &'static [&'static str],
    size: usize,
    purpose: &'static str,
}

const fn field(
    container: &'static str,
    path: &'static [&'static str],
    size: usize,
    purpose: &'static str,
) -> FieldSpec {
    FieldSpec {
        container,
        path,
        size,
        purpose,
    }
}

const FD_TABLE: &str = "finding the socket behind an fd";
const SOCKET_KIND: &str = "recognising TCP sockets";
const ADDRESSES: &str = "connection addresses";
const COMM: &str = "process names";
const CHILDREN: &str = "following the children of traced processes";
const PACKETS: &str = "joining packets to the syscalls that sent them";
const SYSCALL_ARGS: &str = "reading syscall arguments from the raw syscall tracepoints";
const COMPAT: &str = "leaving out 32-bit syscalls, which are numbered differently";
const RETRANSMITS: &str = "counting retransmits from each socket's own total at its close";

/// Looks up every offset the programs need.
pub fn load_offsets(btf_path: &Path) -> Result<KernelOffsets, OffsetError> {
    // Mapped, not parsed whole: about twenty lookups do not justify holding all of vmlinux's
    // types in the heap. Kernels before 6.16 cannot mmap /sys/kernel/btf/vmlinux (ENODEV):
    // there it is read and parsed.
    let btf = Btf::from_file_with_backend(btf_path, btf_rs::Backend::Mmap)
        .or_else(|_| Btf::from_file_with_backend(btf_path, btf_rs::Backend::Cache))
        .map_err(|source| {
            let path = btf_path.display().to_string();
            // The hint to pass --btf only fits when the kernel's own BTF was what failed.
            if btf_path == Path::new(VMLINUX_BTF) {
                OffsetError::NoBtf { path, source }
            } else {
                OffsetError::BadBtfFile { path, source }
            }
        })?;
    resolve_offsets(&btf)
}

/// Resolves every offset in an already parsed BTF.
pub fn resolve_offsets(btf: &Btf) -> Result<KernelOffsets, OffsetError> {
    let get = |spec: FieldSpec| -> Result<u32, OffsetError> { field_offset(btf, &spec) };
    Ok(KernelOffsets {
        task_files: get(field("task_struct", &["files"], 8, FD_TABLE))?,
        task_group_leader: get(field("task_struct", &["group_leader"], 8, COMM))?,
        task_comm: get(field("task_struct", &["comm"], 16, COMM))?,
        task_pid: get(field("task_struct", &["pid"], 4, CHILDREN))?,
        files_fdt: get(field("files_struct", &["fdt"], 8, FD_TABLE))?,
        fdtable_max_fds: get(field("fdtable", &["max_fds"], 4, FD_TABLE))?,
        fdtable_fd: get(field("fdtable", &["fd"], 8, FD_TABLE))?,
        file_inode: get(field("file", &["f_inode"], 8, FD_TABLE))?,
        file_private_data: get(field("file", &["private_data"], 8, FD_TABLE))?,
        inode_mode: get(field("inode", &["i_mode"], 2, FD_TABLE))?,
        socket_sk: get(field("socket", &["sk"], 8, FD_TABLE))?,
        sock_type: get(field("sock", &["sk_type"], 2, SOCKET_KIND))?,
        sock_protocol: get(field("sock", &["sk_protocol"], 2, SOCKET_KIND))?,
        sock_family: get(field(
            "sock",
            &["__sk_common", "skc_family"],
            2,
            SOCKET_KIND,
        ))?,
        sock_num: get(field("sock", &["__sk_common", "skc_num"], 2, ADDRESSES))?,
        sock_dport: get(field("sock", &["__sk_common", "skc_dport"], 2, ADDRESSES))?,
        sock_rcv_saddr: get(field(
            "sock",
            &["__sk_common", "skc_rcv_saddr"],
            4,
            ADDRESSES,
        ))?,
        sock_daddr: get(field("sock", &["__sk_common", "skc_daddr"], 4, ADDRESSES))?,
        sock_v6_rcv_saddr: get(field(
            "sock",
            &["__sk_common", "skc_v6_rcv_saddr"],
            16,
            ADDRESSES,
        ))?,
        sock_v6_daddr: get(field(
            "sock",
            &["__sk_common", "skc_v6_daddr"],
            16,
            ADDRESSES,
        ))?,
        skb_sk: get(field("sk_buff", &["sk"], 8, PACKETS))?,
        skb_len: get(field("sk_buff", &["len"], 4, PACKETS))?,
        regs_args: [
            get(field("pt_regs", &[arch::REGS_ARGS[0]], 8, SYSCALL_ARGS))?,
            get(field("pt_regs", &[arch::REGS_ARGS[1]], 8, SYSCALL_ARGS))?,
            get(field("pt_regs", &[arch::REGS_ARGS[2]], 8, SYSCALL_ARGS))?,
            get(field("pt_regs", &[arch::REGS_ARGS[3]], 8, SYSCALL_ARGS))?,
        ],
        regs_syscall_nr: get(field("pt_regs", &[arch::REGS_SYSCALL_NR], 8, SYSCALL_ARGS))?,
        task_compat: get(field("task_struct", arch::TASK_COMPAT, 4, COMPAT))?,
        task_compat_mask: arch::TASK_COMPAT_MASK,
        tcp_total_retrans: get(field("tcp_sock", &["total_retrans"], 4, RETRANSMITS))?,
    })
}

/// Where this architecture keeps a syscall's arguments and number in `struct pt_regs`, and how
/// a task says it is in a 32-bit syscall.
#[cfg(target_arch = "x86_64")]
mod arch {
    /// The syscall ABI's first four argument registers.
    pub const REGS_ARGS: [&str; 4] = ["di", "si", "dx", "r10"];
    /// `ax` holds the return value at exit; the number stays in `orig_ax`.
    pub const REGS_SYSCALL_NR: &str = "orig_ax";
    /// `thread_info.status`, bit `TS_COMPAT`: set for ia32 syscalls (also `int $0x80` from
    /// a 64-bit program).
    pub const TASK_COMPAT: &[&str] = &["thread_info", "status"];
    pub const TASK_COMPAT_MASK: u32 = 0x0002;
}

#[cfg(not(target_arch = "x86_64"))]
compile_error!(
    "netsonde reads syscall registers on x86-64 only so far (see src/probes/offsets.rs, mod arch)"
);

fn field_offset(btf: &Btf, spec: &FieldSpec) -> Result<u32, OffsetError> {
    let full_path = format!("{}.{}", spec.container, spec.path.join("."));
    let btf_err = |source| OffsetError::Btf {
        path: full_path.clone(),
        source,
    };
    let mut ty = find_struct(btf, spec.container)?;
    let mut container = spec.container.to_string();
    let mut bits: u32 = 0;
    for (i, name) in spec.path.iter().enumerate() {
        let Some((offset, bitfield, member_ty)) = find_member(btf, &ty, name).map_err(btf_err)?
        else {
            return Err(OffsetError::MissingField {
                container,
                field: (*name).to_string(),
                purpose: spec.purpose,
            });
        };
        if bitfield {
            return Err(OffsetError::Bitfield {
                path: full_path,
                purpose: spec.purpose,
            });
        }
        bits += offset;
        ty = member_ty;
        if i + 1 < spec.path.len() {
            container = (*name).to_string();
        }
    }
    let actual = type_size(btf, &ty).map_err(btf_err)?;
    if actual != spec.size {
        return Err(OffsetError::UnexpectedSize {
            path: full_path,
            actual,
            expected: spec.size,
            purpose: spec.purpose,
        });
    }
    if !bits.is_multiple_of(8) {
        return Err(OffsetError::Bitfield {
            path: full_path,
            purpose: spec.purpose,
        });
    }
    Ok(bits / 8)
}

fn find_struct(btf: &Btf, name: &str) -> Result<Type, OffsetError> {
    let types = btf
        .resolve_types_by_name(name)
        .map_err(|_| OffsetError::MissingStruct {
            name: name.to_string(),
        })?;
    types
        .into_iter()
        .find(|t| matches!(t, Type::Struct(_)))
        .ok_or_else(|| OffsetError::MissingStruct {
            name: name.to_string(),
        })
}

/// Strips typedefs and qualifiers.
fn resolve(btf: &Btf, mut ty: Type) -> Result<Type, btf_rs::Error> {
    loop {
        ty = match &ty {
            Type::Typedef(t) => btf.resolve_chained_type(t)?,
            Type::Const(t) => btf.resolve_chained_type(t)?,
            Type::Volatile(t) => btf.resolve_chained_type(t)?,
            Type::Restrict(t) => btf.resolve_chained_type(t)?,
            Type::TypeTag(t) => btf.resolve_chained_type(t)?,
            _ => return Ok(ty),
        };
    }
}

/// Finds member `name` of a struct or union, searching anonymous members too. Returns its bit
/// offset from the start of `ty`, whether it is a bit-field, and its (resolved) type.
fn find_member(
    btf: &Btf,
    ty: &Type,
    name: &str,
) -> Result<Option<(u32, bool, Type)>, btf_rs::Error> {
    let (Type::Struct(s) | Type::Union(s)) = ty else {
        return Ok(None);
    };
    for member in &s.members {
        let member_name = btf.resolve_name(member).unwrap_or_default();
        let member_ty = resolve(btf, btf.resolve_chained_type(member)?)?;
        let bitfield = member.bitfield_size().is_some_and(|n| n != 0);
        if member_name == name {
            return Ok(Some((member.bit_offset(), bitfield, member_ty)));
        }
        if member_name.is_empty()
            && let Some((inner, inner_bitfield, inner_ty)) = find_member(btf, &member_ty, name)?
        {
            return Ok(Some((
                member.bit_offset() + inner,
                inner_bitfield,
                inner_ty,
            )));
        }
    }
    Ok(None)
}

fn type_size(btf: &Btf, ty: &Type) -> Result<usize, btf_rs::Error> {
    Ok(match resolve(btf, ty.clone())? {
        Type::Int(i) => i.size(),
        Type::Ptr(_) => 8,
        Type::Enum(e) => e.size(),
        Type::Enum64(e) => e.size(),
        Type::Struct(s) | Type::Union(s) => s.size(),
        Type::Array(a) => {
            let elem = resolve(btf, btf.resolve_chained_type(&a)?)?;
            a.len() * type_size(btf, &elem)?
        }
        _ => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against this machine's kernel: every field must resolve, and the long-stable ones
    /// must sit where every kernel since 4.x puts them.
    #[test]
    fn resolves_every_field_on_this_kernel() {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: {VMLINUX_BTF} is missing (kernel without CONFIG_DEBUG_INFO_BTF)");
            return;
        }
        let o = load_offsets(Path::new(VMLINUX_BTF)).expect("offsets");
        // struct sock starts with struct sock_common, whose layout has been stable for years.
        assert_eq!(o.sock_daddr, 0, "skc_daddr opens sock_common");
        assert_eq!(o.sock_rcv_saddr, 4);
        assert_eq!(o.sock_dport, 12);
        assert_eq!(o.sock_num, 14);
        assert_eq!(o.sock_family, 16);
        assert!(o.sock_v6_daddr > o.sock_family && o.sock_v6_rcv_saddr > o.sock_v6_daddr);
        assert!(o.task_files > 0 && o.task_comm > 0 && o.task_group_leader > 0);
        assert!(
            o.sock_protocol > o.sock_v6_rcv_saddr,
            "sk_protocol lives past sock_common"
        );
        // x86-64's struct pt_regs is the syscall entry frame, fixed since the architecture's
        // start (and what ptrace's user_regs_struct mirrors): r10 56, dx 96, si 104, di 112,
        // orig_ax 120.
        assert_eq!(o.regs_args, [112, 104, 96, 56]);
        assert_eq!(o.regs_syscall_nr, 120);
        // thread_info opens task_struct; its status follows the flags (and, since 5.11, the
        // syscall work flags).
        assert!(
            o.task_compat == 8 || o.task_compat == 16,
            "{}",
            o.task_compat
        );
    }

    #[test]
    fn names_a_missing_field() {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: {VMLINUX_BTF} is missing (kernel without CONFIG_DEBUG_INFO_BTF)");
            return;
        }
        let btf = Btf::from_file(VMLINUX_BTF).expect("btf");
        let err = field_offset(&btf, &field("sock", &["sk_no_such_field"], 2, SOCKET_KIND))
            .expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "kernel BTF has no field `sk_no_such_field` in `struct sock` (needed for recognising TCP sockets)"
        );
        let err = field_offset(&btf, &field("sock", &["sk_type"], 4, SOCKET_KIND))
            .expect_err("must fail");
        assert!(
            err.to_string()
                .contains("is 2 bytes in this kernel, netsonde expects 4"),
            "{err}"
        );
        let err = field_offset(&btf, &field("no_such_struct_xyz", &["a"], 4, SOCKET_KIND))
            .expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "kernel BTF has no `struct no_such_struct_xyz`"
        );
    }
}
