//! Hooking OpenSSL with uprobes, one file at a time: a shared libssl, or an executable with
//! OpenSSL (or BoringSSL) linked in (Node.js, programs built statically).
//!
//! A uprobe hooks a file (an inode), not a process: once a libssl is hooked, every process
//! that maps it is covered, whenever it starts. So each distinct file is hooked once (keyed by
//! device and inode) and the programs themselves check whether the calling process is traced.

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    },
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

/// What a file is to the TLS hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A libssl: it must define the required functions.
    Library,
    /// A program's executable: hooked when it has OpenSSL's functions inside, else left alone.
    Executable,
}

/// Most executables without TLS functions remembered (then forgotten all at once): a bound on
/// memory for nodes that run many distinct programs.
const MAX_PLAIN_EXECUTABLES: usize = 65_536;

/// The eBPF programs of Go's `crypto/tls` (`go_tls.rs`): `Write` at its body, `Read` at its
/// entry and at each of its RETs.
const GO_PROGRAMS: [&str; 3] = ["go_tls_write", "go_tls_read_enter", "go_tls_read_return"];

/// Whose TLS a hooked file carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsStack {
    /// OpenSSL (or BoringSSL): how many of [`FUNCTIONS`] the file has.
    OpenSsl { functions: usize },
    /// Go's `crypto/tls`, built by this Go release; `returns` uprobes on `Read`'s RETs;
    /// where the struct offsets come from.
    Go {
        version: String,
        returns: usize,
        layout: String,
    },
}

impl TlsStack {
    /// What is hooked, for a log line or `netsonde probes`.
    pub fn describe(&self, kind: ObjectKind) -> String {
        match (self, kind) {
            (TlsStack::OpenSsl { functions }, ObjectKind::Library) => {
                format!("{functions} of {} functions", FUNCTIONS.len())
            }
            (TlsStack::OpenSsl { functions }, ObjectKind::Executable) => format!(
                "{functions} of {} functions, OpenSSL inside the executable",
                FUNCTIONS.len()
            ),
            (
                TlsStack::Go {
                    version,
                    returns,
                    layout,
                },
                _,
            ) => format!(
                "Go crypto/tls of {version}: Write, and Read with its {returns} returns; {layout}"
            ),
        }
    }
}

/// What happened to one library file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibraryOutcome {
    /// Hooked, and whose TLS.
    Hooked(TlsStack),
    /// Could not be hooked, and why (one line).
    Failed(String),
}

/// The TLS programs and every library file tried so far.
#[derive(Debug, Default)]
pub struct TlsHooks {
    /// Why the programs could not be loaded (then nothing is hooked).
    unavailable: Option<String>,
    /// Why the Go programs could not be loaded (then Go programs are not hooked).
    go_unavailable: Option<String>,
    libraries: HashMap<(u64, u64), (PathBuf, ObjectKind, LibraryOutcome)>,
    /// Executables looked at that have no TLS functions to hook.
    plain: HashSet<(u64, u64)>,
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
        for name in GO_PROGRAMS {
            if let Err(why) = load_program(ebpf, name) {
                tracing::warn!(
                    "Go TLS capture is off: the uprobe program {name} cannot be loaded ({why})"
                );
                hooks.go_unavailable = Some(why);
                break;
            }
        }
        hooks
    }

    /// Why TLS capture is off, if it is.
    pub fn unavailable(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    /// Hooks the file at `path` unless that file was tried before. Returns the outcome of a
    /// new attempt, `None` when there was nothing new to do (or an executable has no TLS
    /// functions).
    pub fn hook(
        &mut self,
        ebpf: &mut Ebpf,
        path: &Path,
        kind: ObjectKind,
    ) -> Option<&LibraryOutcome> {
        if self.unavailable.is_some() {
            return None;
        }
        let meta = std::fs::metadata(path).ok()?;
        let key = (meta.dev(), meta.ino());
        if self.libraries.contains_key(&key) || self.plain.contains(&key) {
            return None;
        }
        let path = stable_path(path, key);
        let outcome = match attach_library(ebpf, &path, kind, self.go_unavailable.as_deref()) {
            Ok(stack) => LibraryOutcome::Hooked(stack),
            // The process (and its /proc/PID/root) went away meanwhile: try again next time.
            Err(Attach::Vanished) => return None,
            Err(Attach::NotTls) => {
                if self.plain.len() >= MAX_PLAIN_EXECUTABLES {
                    self.plain.clear();
                }
                self.plain.insert(key);
                return None;
            }
            Err(Attach::Failed(why)) => LibraryOutcome::Failed(why),
        };
        let path = path.as_path();
        match &outcome {
            LibraryOutcome::Hooked(stack) => {
                tracing::info!("TLS: hooked {} ({})", path.display(), stack.describe(kind))
            }
            LibraryOutcome::Failed(why) => {
                tracing::warn!("TLS: cannot hook {}: {why}", path.display())
            }
        }
        self.libraries
            .insert(key, (path.to_path_buf(), kind, outcome));
        self.libraries.get(&key).map(|(_, _, o)| o)
    }

    /// Every file tried (libraries, and executables with TLS functions), with its outcome.
    pub fn libraries(&self) -> impl Iterator<Item = (&Path, ObjectKind, &LibraryOutcome)> {
        self.libraries
            .values()
            .map(|(p, kind, o)| (p.as_path(), *kind, o))
    }
}

/// The uprobe program `name` of the eBPF object; why not, in one line.
fn uprobe_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut UProbe, String> {
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} is not in the eBPF object"))?
        .try_into()
        .map_err(|e| format!("{e}"))
}

fn load_program(ebpf: &mut Ebpf, name: &str) -> Result<(), String> {
    uprobe_program(ebpf, name)?
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
    /// An executable without OpenSSL's functions: nothing to hook, nothing wrong.
    NotTls,
    Failed(String),
}

/// What a file that cannot be read is to the hooks: gone (its process went away: tried again
/// later), or a failure to say.
fn unreadable(e: super::libs::LibsError) -> Attach {
    match &e {
        super::libs::LibsError::Read { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Attach::Vanished
        }
        _ => Attach::Failed(e.to_string()),
    }
}

/// Attaches the uprobe program `name` at `offset` in the file at `path`, with `cookie` for the
/// program to read; why not, in one line.
fn attach_at(
    ebpf: &mut Ebpf,
    name: &str,
    offset: u64,
    cookie: Option<u64>,
    path: &Path,
) -> Result<(), String> {
    uprobe_program(ebpf, name)?
        .attach(
            UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(offset),
                cookie,
            },
            path,
            UProbeScope::AllProcesses,
        )
        .map(drop)
        .map_err(|e| super::describe_program_error(name, &e))
}

/// Attaches every function the file has; the return probe first, so no entry is saved for a
/// return that is not hooked yet. An executable without OpenSSL may be a Go program.
fn attach_library(
    ebpf: &mut Ebpf,
    path: &Path,
    kind: ObjectKind,
    go_unavailable: Option<&str>,
) -> Result<TlsStack, Attach> {
    let names = FUNCTIONS.map(|(symbol, ..)| symbol);
    let offsets = super::libs::symbol_offsets(path, &names).map_err(unreadable)?;
    let required_found = FUNCTIONS
        .iter()
        .zip(&offsets)
        .filter(|((.., required), offset)| *required && offset.is_some())
        .count();
    if kind == ObjectKind::Executable && required_found == 0 {
        return attach_go(ebpf, path, go_unavailable);
    }
    let mut hooked = 0;
    for ((symbol, enter, exit, required), offset) in FUNCTIONS.into_iter().zip(offsets) {
        let Some(offset) = offset else {
            if required {
                return Err(Attach::Failed(format!("it does not define {symbol}")));
            }
            continue;
        };
        let result = [enter, exit]
            .into_iter()
            .try_for_each(|name| attach_at(ebpf, name, offset, None, path))
            .map_err(|why| format!("{symbol}: {why}"));
        match result {
            Ok(()) => hooked += 1,
            Err(why) if required => return Err(Attach::Failed(why)),
            Err(why) => tracing::debug!("TLS: {}: optional {why}", path.display()),
        }
    }
    Ok(TlsStack::OpenSsl { functions: hooked })
}

/// Attaches the Go programs to a Go executable's `crypto/tls`, when it has one: each return
/// program first, so no call is saved whose end is not hooked yet.
fn attach_go(ebpf: &mut Ebpf, path: &Path, unavailable: Option<&str>) -> Result<TlsStack, Attach> {
    let found = super::go::find(path).map_err(unreadable)?;
    let go = match found {
        super::go::GoTlsFinding::NotGo => {
            // OpenSSL linked in, with its symbols stripped: said, since it cannot be read.
            return match super::libs::links_openssl_statically(path) {
                Ok(true) => Err(Attach::Failed(
                    "OpenSSL or BoringSSL is linked in (its source file names are there), but \
                     no symbol names SSL_read or SSL_write: a stripped program, not read"
                        .into(),
                )),
                _ => Err(Attach::NotTls),
            };
        }
        super::go::GoTlsFinding::NoTls => return Err(Attach::NotTls),
        super::go::GoTlsFinding::Unsupported(why) => return Err(Attach::Failed(why)),
        super::go::GoTlsFinding::Found(go) => go,
    };
    if let Some(why) = unavailable {
        return Err(Attach::Failed(format!(
            "a Go program ({}), but the Go TLS programs are not loaded: {why}",
            go.version
        )));
    }
    let points = go
        .read
        .returns
        .iter()
        .map(|&offset| ("go_tls_read_return", offset))
        .chain([
            ("go_tls_read_enter", go.read.entry),
            ("go_tls_write", go.write.body),
        ]);
    // The programs that find the socket read the layout from the cookie.
    let cookie = Some(go.layout.offsets.to_cookie());
    for (name, offset) in points {
        attach_at(ebpf, name, offset, cookie, path).map_err(Attach::Failed)?;
    }
    Ok(TlsStack::Go {
        returns: go.read.returns.len(),
        version: go.version,
        layout: go.layout.describe(),
    })
}
