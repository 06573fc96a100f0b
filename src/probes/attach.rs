//! The attach ladder: each probe point's candidates tried in order (fentry, then kprobe),
//! the first that loads and attaches kept, and why each other one failed written down.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use aya::{
    Btf, Ebpf,
    maps::ProgramArray,
    programs::{BtfTracePoint, FEntry, FExit, KProbe, ProgramFd, RawTracePoint},
};

use super::{
    ProbeStatus,
    catalog::{Candidate, Hook, ProbePoint, SOCKET_LAYER},
    describe_program_error,
    offsets::VMLINUX_BTF,
};

/// What attaching needs besides the object: the kernel's BTF for fentry (parsed on first use:
/// most points never need it), and whether the syscall dispatchers are attached yet.
pub(super) struct Attacher {
    btf_path: PathBuf,
    btf: Option<Result<Btf, String>>,
    /// The running kernel's own BTF, which BTF-typed tracepoints are checked against, when
    /// `--btf` named another file (which describes the kernel but is not loaded in it);
    /// otherwise `btf` is that BTF.
    kernel_btf: Option<Result<Btf, String>>,
    /// fentry allowed by configuration (`capture.fentry`).
    fentry: bool,
    /// BTF-typed syscall tracepoints allowed by configuration (`capture.tp_btf`).
    tp_btf: bool,
    /// The `sys_exit` and `sys_enter` programs of each hook (raw, typed), attached with the
    /// first syscall point that uses that hook.
    dispatch: [Option<Result<(), String>>; 2],
}

/// One hook's syscall programs: the dispatchers every syscall passes, with the tracepoints they
/// attach to (exit first), their tables (entries, exits), and the iovec continuation with its
/// table. The dispatchers' run-time statistics include the syscall programs they tail-call
/// (which have none of their own).
pub(super) struct SyscallHook {
    pub(super) dispatchers: [(&'static str, &'static str); 2],
    entries: &'static str,
    exits: &'static str,
    continuation: (&'static str, &'static str),
}

const RAW: SyscallHook = SyscallHook {
    dispatchers: [("sys_exit", "sys_exit"), ("sys_enter", "sys_enter")],
    entries: "SYSCALL_ENTRIES",
    exits: "SYSCALL_EXITS",
    continuation: ("iov_continue", "IOV_CONTINUE"),
};

const TYPED: SyscallHook = SyscallHook {
    dispatchers: [("sys_exit_btf", "sys_exit"), ("sys_enter_btf", "sys_enter")],
    entries: "SYSCALL_ENTRIES_BTF",
    exits: "SYSCALL_EXITS_BTF",
    continuation: ("iov_continue_btf", "IOV_CONTINUE_BTF"),
};

/// Both hooks: the BTF-typed tracepoints (used where they load), then the raw ones.
pub(super) const SYSCALL_HOOKS: [&SyscallHook; 2] = [&TYPED, &RAW];

fn syscall_hook(typed: bool) -> &'static SyscallHook {
    if typed { &TYPED } else { &RAW }
}

impl Attacher {
    pub(super) fn new(btf_path: &Path, fentry: bool, tp_btf: bool) -> Self {
        Attacher {
            btf_path: btf_path.to_path_buf(),
            btf: None,
            kernel_btf: None,
            fentry,
            tp_btf,
            dispatch: [None, None],
        }
    }

    /// Attaches one hook's syscall dispatchers once (exit first, so that no entry is left
    /// waiting for an exit that is not hooked); their tables start empty. The hook's iovec
    /// continuation is loaded first: without it, syscalls with more iovecs than one program
    /// copies are cut there (a warning says so).
    fn dispatch(&mut self, ebpf: &mut Ebpf, typed: bool) -> Result<(), String> {
        if let Some(done) = &self.dispatch[usize::from(typed)] {
            return done.clone();
        }
        let done = self.attach_dispatchers(ebpf, typed);
        self.dispatch[usize::from(typed)] = Some(done.clone());
        done
    }

    fn attach_dispatchers(&mut self, ebpf: &mut Ebpf, typed: bool) -> Result<(), String> {
        if typed && !self.tp_btf {
            return Err("BTF-typed tracepoints are switched off (capture.tp_btf: false)".into());
        }
        let kernel_btf = if typed {
            Some(self.kernel_btf()?)
        } else {
            None
        };
        let (continuation, slot) = syscall_hook(typed).continuation;
        let loaded = match kernel_btf {
            Some(btf) => load_typed(ebpf, continuation, "sys_exit", btf),
            None => load_raw(ebpf, continuation),
        };
        if let Err(why) = loaded.and_then(|fd| fill_slot(ebpf, slot, 0, &fd)) {
            tracing::warn!(
                "syscalls with more than {} iovecs are cut there ({why})",
                netsonde_common::MAX_IOVECS
            );
        }
        for (name, tracepoint) in syscall_hook(typed).dispatchers {
            let why = |e| describe_program_error(name, &e);
            match kernel_btf {
                Some(btf) => {
                    let tp: &mut BtfTracePoint = program(ebpf, name)?;
                    tp.load(tracepoint, btf).map_err(why)?;
                    tp.attach().map_err(why)?;
                }
                None => {
                    let tp: &mut RawTracePoint = program(ebpf, name)?;
                    tp.load().map_err(why)?;
                    tp.attach(tracepoint).map_err(why)?;
                }
            }
        }
        Ok(())
    }

    fn kernel_btf(&mut self) -> Result<&Btf, String> {
        // Without --btf it is the same file as `btf`'s: parsed once (it is megabytes).
        if self.btf_path == Path::new(VMLINUX_BTF) {
            return self.btf();
        }
        self.kernel_btf
            .get_or_insert_with(|| {
                Btf::from_sys_fs()
                    .map_err(|e| format!("the kernel has no BTF of its own ({VMLINUX_BTF}): {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn btf(&mut self) -> Result<&Btf, String> {
        let path = self.btf_path.clone();
        self.btf
            .get_or_insert_with(|| {
                Btf::parse_file(&path, aya::Endianness::default())
                    .map_err(|e| format!("reading kernel BTF {}: {e}", path.display()))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// Attaches the socket layer's points (`catalog::SOCKET_LAYER`). Returns their statuses and
/// whether the layer is in use: only when every point attached (a missing family would lose
/// its sockets' bytes, the tracepoints would not read them). Otherwise the attached ones are
/// unloaded again, and each point's status says why it is not used.
pub(super) fn attach_socket_layer(
    ebpf: &mut Ebpf,
    attacher: &mut Attacher,
) -> (Vec<ProbeStatus>, bool) {
    let mut statuses: Vec<ProbeStatus> = SOCKET_LAYER
        .iter()
        .map(|&point| attach_point(ebpf, attacher, point, &HashMap::new()))
        .collect();
    let Some(failed) = statuses.iter().find(|s| s.attached.is_none()) else {
        return (statuses, true);
    };
    let why = match failed.failures.last() {
        Some((_, why)) => format!("unloaded: {} did not attach ({why})", failed.point.name),
        None => format!("unloaded: {} did not attach", failed.point.name),
    };
    for status in &mut statuses {
        if let Some(candidate) = status.attached.take() {
            if let Ok(entry) = program::<FEntry>(ebpf, candidate.program) {
                let _ = entry.unload();
            }
            if let Some(Ok(exit)) = candidate.exit.map(|name| program::<FExit>(ebpf, name)) {
                let _ = exit.unload();
            }
            status.failures.push((candidate, why.clone()));
        }
    }
    (statuses, false)
}

/// Tries a point's candidates in order; `unusable` names programs that cannot run here (their
/// record lacks what they read) and why.
pub(super) fn attach_point(
    ebpf: &mut Ebpf,
    attacher: &mut Attacher,
    point: ProbePoint,
    unusable: &HashMap<&'static str, String>,
) -> ProbeStatus {
    let mut status = ProbeStatus {
        point,
        attached: None,
        failures: Vec::new(),
    };
    for candidate in point.candidates {
        let outcome = match unusable.get(candidate.program) {
            Some(why) => Err(why.clone()),
            None => attach_candidate(ebpf, attacher, candidate),
        };
        match outcome {
            Ok(()) => {
                status.attached = Some(*candidate);
                break;
            }
            Err(why) => status.failures.push((*candidate, why)),
        }
    }
    status
}

fn attach_candidate(
    ebpf: &mut Ebpf,
    attacher: &mut Attacher,
    candidate: &Candidate,
) -> Result<(), String> {
    match candidate.hook {
        Hook::Syscall {
            nr, exit, typed, ..
        } => {
            attacher.dispatch(ebpf, typed)?;
            let name = candidate.program;
            let fd = if typed {
                let tracepoint = if exit { "sys_exit" } else { "sys_enter" };
                load_typed(ebpf, name, tracepoint, attacher.kernel_btf()?)?
            } else {
                load_raw(ebpf, name)?
            };
            let hook = syscall_hook(typed);
            let table = if exit { hook.exits } else { hook.entries };
            fill_slot(ebpf, table, nr, &fd)
        }
        Hook::RawTracepoint { name } => {
            let why = |e| describe_program_error(candidate.program, &e);
            let tp: &mut RawTracePoint = program(ebpf, candidate.program)?;
            tp.load().map_err(why)?;
            tp.attach(name).map_err(why)?;
            Ok(())
        }
        Hook::FEntry { function } => {
            if !attacher.fentry {
                return Err("fentry is switched off (capture.fentry: false)".into());
            }
            let btf = attacher.btf()?;
            timed_pair(
                ebpf,
                candidate,
                |ebpf, exit| {
                    let fexit: &mut FExit = program(ebpf, exit)?;
                    let why = |e| describe_program_error(exit, &e);
                    fexit.load(function, btf).map_err(why)?;
                    fexit.attach().map_err(why)
                },
                |ebpf, entry| {
                    let fentry: &mut FEntry = program(ebpf, entry)?;
                    let why = |e| describe_program_error(entry, &e);
                    fentry.load(function, btf).map_err(why)?;
                    fentry.attach().map(drop).map_err(why)
                },
                |ebpf, exit, link| {
                    if let Ok(fexit) = program::<FExit>(ebpf, exit) {
                        let _ = fexit.detach(link);
                    }
                },
            )
        }
        Hook::SocketLayer { functions } => Err(format!(
            "read by the socket layer's programs on {functions}, not attached on its own"
        )),
        Hook::KProbe { function } => timed_pair(
            ebpf,
            candidate,
            |ebpf, exit| {
                let ret: &mut KProbe = program(ebpf, exit)?;
                let why = |e| describe_program_error(exit, &e);
                ret.load().map_err(why)?;
                ret.attach(function, 0).map_err(why)
            },
            |ebpf, entry| {
                let probe: &mut KProbe = program(ebpf, entry)?;
                let why = |e| describe_program_error(entry, &e);
                probe.load().map_err(why)?;
                probe.attach(function, 0).map(drop).map_err(why)
            },
            |ebpf, exit, link| {
                if let Ok(ret) = program::<KProbe>(ebpf, exit) {
                    let _ = ret.detach(link);
                }
            },
        ),
    }
}

/// Attaches a candidate's exit program (if it has one), then its entry program; if the entry
/// fails, the exit is detached again. The exit comes first so that no entry is left waiting
/// for an exit that was never hooked.
fn timed_pair<L>(
    ebpf: &mut Ebpf,
    candidate: &Candidate,
    attach_exit: impl FnOnce(&mut Ebpf, &'static str) -> Result<L, String>,
    attach_entry: impl FnOnce(&mut Ebpf, &'static str) -> Result<(), String>,
    detach_exit: impl FnOnce(&mut Ebpf, &'static str, L),
) -> Result<(), String> {
    let exit = match candidate.exit {
        Some(name) => Some((name, attach_exit(ebpf, name)?)),
        None => None,
    };
    let entry = attach_entry(ebpf, candidate.program);
    if let (Err(_), Some((name, link))) = (&entry, exit) {
        detach_exit(ebpf, name, link);
    }
    entry
}

/// Loads the raw tracepoint program `name` (for a dispatch table: not attached).
fn load_raw(ebpf: &mut Ebpf, name: &str) -> Result<ProgramFd, String> {
    let why = |e| describe_program_error(name, &e);
    let tp: &mut RawTracePoint = program(ebpf, name)?;
    tp.load().map_err(why)?;
    tp.fd().map_err(why)?.try_clone().map_err(|e| e.to_string())
}

/// Loads the BTF-typed tracepoint program `name` for `tracepoint` (for a dispatch table: not
/// attached; a tail call only reaches programs of the same tracepoint's type).
fn load_typed(
    ebpf: &mut Ebpf,
    name: &str,
    tracepoint: &str,
    btf: &Btf,
) -> Result<ProgramFd, String> {
    let why = |e| describe_program_error(name, &e);
    let tp: &mut BtfTracePoint = program(ebpf, name)?;
    tp.load(tracepoint, btf).map_err(why)?;
    tp.fd().map_err(why)?.try_clone().map_err(|e| e.to_string())
}

/// Puts a loaded program in slot `index` of the program array `table`.
fn fill_slot(ebpf: &mut Ebpf, table: &str, index: u32, fd: &ProgramFd) -> Result<(), String> {
    let map = ebpf
        .map_mut(table)
        .ok_or_else(|| format!("the eBPF object has no map {table}"))?;
    let mut slots = ProgramArray::try_from(map).map_err(|e| e.to_string())?;
    slots
        .set(index, fd, 0)
        .map_err(|e| format!("{table}[{index}]: {e}"))
}

/// Program `name` of the object, as a `P`.
fn program<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P, String>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} is not in the eBPF object"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| format!("{e}"))
}
