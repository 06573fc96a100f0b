//! Hooking OpenSSL's libssl with uprobes, one library file at a time.
//!
//! A uprobe hooks a file (an inode), not a process: once a libssl is hooked, every process
//! that maps it is covered, whenever it starts. So each distinct file is hooked once (keyed by
//! device and inode) and the programs themselves check whether the calling process is traced.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{UProbe, uprobe::UProbeScope},
};

/// The functions hooked: (symbol, entry program, return program, required). OpenSSL 1.1.1
/// and 3.x have all four; a library without the `_ex` pair is still hooked.
pub const FUNCTIONS: [(&str, &str, &str, bool); 4] = [
    ("SSL_write", "ssl_write_enter", "ssl_write_exit", true),
    ("SSL_read", "ssl_read_enter", "ssl_read_exit", true),
    (
        "SSL_write_ex",
        "ssl_write_ex_enter",
        "ssl_write_ex_exit",
        false,
    ),
    (
        "SSL_read_ex",
        "ssl_read_ex_enter",
        "ssl_read_ex_exit",
        false,
    ),
];

/// What happened to one library file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibraryOutcome {
    /// Hooked: how many of [`FUNCTIONS`] it has.
    Hooked { functions: usize },
    /// Could not be hooked, and why (one line).
    Failed(String),
}

/// The TLS programs and every library file tried so far.
#[derive(Debug, Default)]
pub struct TlsHooks {
    /// Why the programs could not be loaded (then nothing is hooked).
    unavailable: Option<String>,
    libraries: HashMap<(u64, u64), (PathBuf, LibraryOutcome)>,
}

impl TlsHooks {
    /// Loads the uprobe programs (attached later, per library).
    pub fn load(ebpf: &mut Ebpf) -> TlsHooks {
        let mut hooks = TlsHooks::default();
        for (_, enter, exit, _) in FUNCTIONS {
            for name in [exit, enter] {
                if let Err(why) = load_program(ebpf, name) {
                    tracing::warn!(
                        "TLS capture is off: the uprobe program {name} cannot be loaded ({why})"
                    );
                    hooks.unavailable = Some(why);
                    return hooks;
                }
            }
        }
        hooks
    }

    /// Why TLS capture is off, if it is.
    pub fn unavailable(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    /// Hooks the library at `path` unless that file was tried before. Returns the outcome of
    /// a new attempt, `None` when there was nothing new to do.
    pub fn hook(&mut self, ebpf: &mut Ebpf, path: &Path) -> Option<&LibraryOutcome> {
        if self.unavailable.is_some() {
            return None;
        }
        let meta = std::fs::metadata(path).ok()?;
        let key = (meta.dev(), meta.ino());
        if self.libraries.contains_key(&key) {
            return None;
        }
        let path = stable_path(path, key);
        let outcome = match attach_library(ebpf, &path) {
            Ok(functions) => LibraryOutcome::Hooked { functions },
            // The process (and its /proc/PID/root) went away meanwhile: try again next time.
            Err(Attach::Vanished) => return None,
            Err(Attach::Failed(why)) => LibraryOutcome::Failed(why),
        };
        let path = path.as_path();
        match &outcome {
            LibraryOutcome::Hooked { functions } => tracing::info!(
                "TLS: hooked {} ({functions} of {} functions)",
                path.display(),
                FUNCTIONS.len()
            ),
            LibraryOutcome::Failed(why) => {
                tracing::warn!("TLS: cannot hook {}: {why}", path.display())
            }
        }
        self.libraries.insert(key, (path.to_path_buf(), outcome));
        self.libraries.get(&key).map(|(_, o)| o)
    }

    /// Every library tried, with its outcome.
    pub fn libraries(&self) -> impl Iterator<Item = (&Path, &LibraryOutcome)> {
        self.libraries.values().map(|(p, o)| (p.as_path(), o))
    }
}

fn load_program(ebpf: &mut Ebpf, name: &str) -> Result<(), String> {
    let program: &mut UProbe = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} is not in the eBPF object"))?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    program
        .load()
        .map_err(|e| super::describe_program_error(name, &e))
}

/// A path to the same file that does not depend on a process staying alive: a library in a
/// process's /proc/PID/root that is the very file (same device and inode) at the same path
/// here is hooked by that path.
fn stable_path(path: &Path, key: (u64, u64)) -> PathBuf {
    let text = path.to_string_lossy();
    let inner = text
        .strip_prefix("/proc/")
        .and_then(|rest| rest.split_once("/root/"))
        .map(|(_, inner)| PathBuf::from(format!("/{inner}")));
    match inner {
        Some(inner)
            if std::fs::metadata(&inner)
                .map(|m| (m.dev(), m.ino()) == key)
                .unwrap_or(false) =>
        {
            inner
        }
        _ => path.to_path_buf(),
    }
}

enum Attach {
    Vanished,
    Failed(String),
}

/// Attaches every function the library has; the return probe first, so no entry is saved for
/// a return that is not hooked yet.
fn attach_library(ebpf: &mut Ebpf, path: &Path) -> Result<usize, Attach> {
    let names = FUNCTIONS.map(|(symbol, ..)| symbol);
    let offsets = super::libs::symbol_offsets(path, &names).map_err(|e| match &e {
        super::libs::LibsError::Read { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Attach::Vanished
        }
        _ => Attach::Failed(e.to_string()),
    })?;
    let mut hooked = 0;
    for ((symbol, enter, exit, required), offset) in FUNCTIONS.into_iter().zip(offsets) {
        let Some(offset) = offset else {
            if required {
                return Err(Attach::Failed(format!("it does not define {symbol}")));
            }
            continue;
        };
        let mut result = Ok(());
        for name in [enter, exit] {
            let program: &mut UProbe = ebpf
                .program_mut(name)
                .ok_or_else(|| Attach::Failed(format!("program {name} is not in the eBPF object")))?
                .try_into()
                .map_err(|e| Attach::Failed(format!("{e}")))?;
            if let Err(e) = program.attach(offset, path, UProbeScope::AllProcesses) {
                result = Err(format!(
                    "{symbol}: {}",
                    super::describe_program_error(name, &e)
                ));
                break;
            }
        }
        match result {
            Ok(()) => hooked += 1,
            Err(why) if required => return Err(Attach::Failed(why)),
            Err(why) => tracing::debug!("TLS: {}: optional {why}", path.display()),
        }
    }
    Ok(hooked)
}
