//! The attach ladder: each probe point's candidates tried in order (fentry, then kprobe),
//! the first that loads and attaches kept, and why each other one failed written down.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use aya::{
    Btf, Ebpf,
    maps::ProgramArray,
    programs::{FEntry, FExit, KProbe, RawTracePoint},
};

use super::{
    ProbeStatus,
    catalog::{Candidate, Hook, ProbePoint},
    describe_program_error,
};

/// What attaching needs besides the object: the kernel's BTF for fentry (parsed on first use:
/// most points never need it), and whether the syscall dispatchers are attached yet.
pub(super) struct Attacher {
    btf_path: PathBuf,
    btf: Option<Result<Btf, String>>,
    /// fentry allowed by configuration (`capture.fentry`).
    fentry: bool,
    /// The raw `sys_exit` and `sys_enter` programs, attached with the first syscall point.
    dispatch: Option<Result<(), String>>,
}

/// The programs every syscall passes, and the tracepoints they attach to. Their run-time
/// statistics include the syscall programs they tail-call (which have none of their own).
pub(super) const DISPATCHERS: [(&str, &str); 2] =
    [("sys_exit", "sys_exit"), ("sys_enter", "sys_enter")];

impl Attacher {
    pub(super) fn new(btf_path: &Path, fentry: bool) -> Self {
        Attacher {
            btf_path: btf_path.to_path_buf(),
            btf: None,
            fentry,
            dispatch: None,
        }
    }

    /// Attaches the raw syscall tracepoints' programs once (exit first, so that no entry is
    /// left waiting for an exit that is not hooked); their tables start empty.
    fn dispatch(&mut self, ebpf: &mut Ebpf) -> Result<(), String> {
        self.dispatch
            .get_or_insert_with(|| {
                for (name, tracepoint) in DISPATCHERS {
                    let why = |e| describe_program_error(name, &e);
                    let tp: &mut RawTracePoint = program(ebpf, name)?;
                    tp.load().map_err(why)?;
                    tp.attach(tracepoint).map_err(why)?;
                }
                Ok(())
            })
            .clone()
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
        Hook::Syscall { nr, exit, .. } => {
            attacher.dispatch(ebpf)?;
            let name = candidate.program;
            let why = |e| describe_program_error(name, &e);
            let handler: &mut RawTracePoint = program(ebpf, name)?;
            handler.load().map_err(why)?;
            let fd = handler
                .fd()
                .map_err(why)?
                .try_clone()
                .map_err(|e| e.to_string())?;
            let table = if exit {
                "SYSCALL_EXITS"
            } else {
                "SYSCALL_ENTRIES"
            };
            let map = ebpf
                .map_mut(table)
                .ok_or_else(|| format!("the eBPF object has no map {table}"))?;
            let mut slots = ProgramArray::try_from(map).map_err(|e| e.to_string())?;
            slots
                .set(nr, &fd, 0)
                .map_err(|e| format!("{table}[{nr}]: {e}"))
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
