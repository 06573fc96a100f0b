//! The attach ladder: each probe point's candidates tried in order (fentry, kprobe, tracepoint),
//! the first that loads and attaches kept, and why each other one failed written down.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use aya::{
    Btf, Ebpf,
    programs::{FEntry, FExit, KProbe, TracePoint},
};

use super::{
    ProbeStatus,
    catalog::{Candidate, Hook, ProbePoint},
    describe_program_error, tracefs,
};

/// What attaching needs besides the object: tracefs, and the kernel's BTF for fentry (parsed
/// on first use: most points never need it).
pub(super) struct Attacher {
    tracefs: PathBuf,
    btf_path: PathBuf,
    btf: Option<Result<Btf, String>>,
    /// fentry allowed by configuration (`capture.fentry`).
    fentry: bool,
}

impl Attacher {
    pub(super) fn new(tracefs: &Path, btf_path: &Path, fentry: bool) -> Self {
        Attacher {
            tracefs: tracefs.to_path_buf(),
            btf_path: btf_path.to_path_buf(),
            btf: None,
            fentry,
        }
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
        Hook::Tracepoint {
            category,
            name,
            args,
        } => {
            if let Some(args) = args {
                tracefs::check_syscall_layout(&attacher.tracefs, category, name, args)
                    .map_err(|e| e.to_string())?;
            }
            let tp: &mut TracePoint = program(ebpf, candidate.program)?;
            tp.load()
                .map_err(|e| describe_program_error(candidate.program, &e))?;
            tp.attach(category, name)
                .map_err(|e| describe_program_error(candidate.program, &e))?;
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
