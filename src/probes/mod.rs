//! The kernel side: loads netsonde's eBPF object, fills its settings and filter maps, attaches
//! every probe point it can, and hands out the ring buffer and counters.
//!
//! Owns: the `aya::Ebpf` object (dropping it detaches everything), the attach report, and the
//! handles of the maps user space reads.

mod attach;
pub mod catalog;
pub mod counters;
pub mod go;
pub mod go_layout;
pub mod libs;
pub mod lifecycle;
pub mod netlayer;
pub mod offsets;
pub mod ring;
pub mod skipped;
pub mod stats;
pub mod tls;
pub mod tracefs;

use std::{collections::HashSet, path::PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
};
use netsonde_common::{
    Comm, KernelOffsets, NetLayout, ProbeConfig, SslKey, filter_mode, monitored,
};

pub use catalog::{Candidate, Hook, ProbePoint};
pub use counters::KernelCounters;

/// The eBPF object built into this binary (see build.rs).
pub const EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netsonde.bpf.o"));
/// Where the object came from: built from source or the committed prebuilt copy.
pub const EBPF_SOURCE: &str = env!("NETSONDE_EBPF_SOURCE");

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "loading eBPF programs needs the capabilities CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN before Linux 5.8), which root holds unless its container dropped them; this process has {has}"
    )]
    Privileges { has: String },
    #[error(transparent)]
    Offsets(#[from] offsets::OffsetError),
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("loading the eBPF object failed")]
    Load {
        #[source]
        source: aya::EbpfError,
    },
    #[error("the eBPF object has no map `{0}` (a build mismatch)")]
    MissingMap(&'static str),
    #[error("eBPF map `{name}` cannot be used")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot count the possible CPUs")]
    Cpus {
        #[source]
        source: std::io::Error,
    },
    #[error("no probe could be attached; netsonde has nothing to observe")]
    NothingAttached,
    #[error("required probe {point} could not be attached ({method} {target}): {why}")]
    Required {
        point: &'static str,
        method: &'static str,
        target: String,
        why: String,
    },
}

/// What the programs should do: everything user space decides before load.
#[derive(Debug, Clone, Default)]
pub struct ProbeSettings {
    /// Payload prefix copied per syscall.
    pub capture_bytes: u32,
    /// Ring buffer size in bytes (a power of two, at least a page).
    pub ring_buffer_bytes: u32,
    /// Trace only these processes (with `comms`); both empty means every process.
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    /// User space decides which processes to trace (pod rules, exclusions): every exec is
    /// reported, `comms` are not matched in the kernel, and the monitored set is all there is.
    pub user_decides: bool,
    /// Attach no-op programs to the same hooks (benchmark floor).
    pub noop: bool,
    /// BTF to read kernel offsets from (normally [`offsets::VMLINUX_BTF`]).
    pub btf_path: PathBuf,
    /// Attach the network layer under the syscalls (packets, device and receive times,
    /// retransmits, drops, handshakes).
    pub kernel_layer: bool,
    /// Try fentry before kprobes for kernel functions.
    pub fentry: bool,
    /// Try the BTF-typed syscall tracepoints before the raw ones.
    pub tp_btf: bool,
    /// Read `read`, `write`, `recvfrom` and `sendto` at the socket layer where fentry works
    /// (`capture.socket_layer`), instead of at the syscall tracepoints.
    pub socket_layer: bool,
}

/// The outcome for one probe point.
#[derive(Debug, Clone)]
pub struct ProbeStatus {
    pub point: ProbePoint,
    /// The candidate that attached, if any.
    pub attached: Option<Candidate>,
    /// Candidates that failed, with a one-line reason each.
    pub failures: Vec<(Candidate, String)>,
}

/// Loaded and attached programs. Dropping it detaches them all.
pub struct Probes {
    ebpf: Ebpf,
    report: Vec<ProbeStatus>,
    tls: tls::TlsHooks,
    /// Processes are filtered (`--pid`/`--comm`), so the monitored set matters.
    selective: bool,
    /// The kernel's names of its packet drop reasons.
    drop_reasons: std::collections::BTreeMap<u32, String>,
}

impl Probes {
    /// Checks privileges, reads kernel offsets, loads the object and attaches every probe point
    /// it can. A point that fails is reported (one line, with the reason) and the rest go on.
    pub fn load(settings: &ProbeSettings) -> Result<Probes, ProbeError> {
        check_privileges()?;
        raise_memlock_limit();
        let offsets = offsets::load_offsets(&settings.btf_path)?;
        let tracefs = tracefs::ensure_mounted()?;
        // Programs whose tracepoint record lacks what they read, and why.
        let (net_layout, unusable) = if settings.kernel_layer {
            netlayer::read_layout(&tracefs)
        } else {
            Default::default()
        };
        let mut ebpf = load_object(settings, &offsets, &net_layout)?;
        fill_filters(&mut ebpf, settings)?;

        let mut attach =
            attach::Attacher::new(&settings.btf_path, settings.fentry, settings.tp_btf);
        let mut points = catalog::syscall_layer();
        if settings.kernel_layer {
            points.extend(catalog::kernel_layer());
        }
        points.sort_by_key(|p| p.phase);
        let mut report = Vec::with_capacity(points.len() + catalog::SOCKET_LAYER.len());
        // The socket layer first: where it is in use, the syscalls it reads get no tracepoint
        // programs, so the same syscalls on files, pipes and terminals are not hooked at all.
        let socket_layer = settings.socket_layer && {
            let (statuses, in_use) = attach::attach_socket_layer(&mut ebpf, &mut attach);
            if let Some((point, (_, why))) = statuses
                .iter()
                .find_map(|s| s.failures.last().map(|f| (s.point.name, f)))
            {
                tracing::info!(
                    "socket-layer capture not used ({point}: {why}); read, write, recvfrom and \
                     sendto are read at the syscall tracepoints"
                );
            }
            report.extend(statuses);
            in_use
        };
        // Kernel-function points are missing on many kernels (no kprobes, fentry refused):
        // one line says so. Any other point that fails is worth a warning each.
        let mut functions_missing = Vec::new();
        for point in points {
            if let Some(receive) = catalog::covered_by_socket_layer(point.name)
                && socket_layer
            {
                report.push(ProbeStatus {
                    point,
                    attached: Some(catalog::socket_layer_cover(receive)),
                    failures: Vec::new(),
                });
                continue;
            }
            let status = attach::attach_point(&mut ebpf, &mut attach, point, &unusable);
            let function_only = point
                .candidates
                .iter()
                .all(|c| matches!(c.hook, Hook::FEntry { .. } | Hook::KProbe { .. }));
            match (&status.attached, status.failures.last()) {
                (Some(_), _) => {}
                (None, Some(_)) if function_only => functions_missing.push(point.name),
                (None, Some((candidate, why))) => tracing::warn!(
                    "probe {} not attached ({}: {why}); lost: {}",
                    point.name,
                    candidate.hook.target(),
                    point.purpose
                ),
                (None, None) => {}
            }
            report.push(status);
        }
        if !functions_missing.is_empty() {
            tracing::info!(
                "this kernel allows neither fentry nor kprobes here: no {} (`netsonde probes` says why)",
                functions_missing.join(", ")
            );
        }
        if report.iter().all(|s| s.attached.is_none()) {
            return Err(ProbeError::NothingAttached);
        }
        if let Some(status) = report
            .iter()
            .find(|s| s.point.required() && s.attached.is_none())
        {
            let (candidate, why) = status
                .failures
                .last()
                .cloned()
                .unwrap_or((status.point.candidates[0], "no way to attach it".into()));
            return Err(ProbeError::Required {
                point: status.point.name,
                method: candidate.hook.method(),
                target: candidate.hook.target(),
                why,
            });
        }
        // Switches for programs that work differently when another is attached.
        let attached = |name: &str| {
            report
                .iter()
                .any(|s| s.point.name == name && s.attached.is_some())
        };
        let mut features = [
            ("net.arp", netsonde_common::feature::ARP),
            ("net.device.enqueue", netsonde_common::feature::TX_SLOT),
        ]
        .into_iter()
        .filter(|(point, _)| attached(point))
        .fold(0, |bits, (_, bit)| bits | bit);
        if socket_layer {
            features |= netsonde_common::feature::SOCKET_CAPTURE;
        }
        if features != 0 {
            let mut map: aya::maps::Array<_, u32> = aya::maps::Array::try_from(
                ebpf.map_mut("FEATURES")
                    .ok_or(ProbeError::MissingMap("FEATURES"))?,
            )
            .map_err(|source| ProbeError::Map {
                name: "FEATURES",
                source,
            })?;
            map.set(0, features, 0).map_err(|source| ProbeError::Map {
                name: "FEATURES",
                source,
            })?;
        }
        let tls = tls::TlsHooks::load(&mut ebpf);
        Ok(Probes {
            ebpf,
            report,
            tls,
            selective: !(settings.pids.is_empty()
                && settings.comms.is_empty()
                && !settings.user_decides),
            drop_reasons: netlayer::drop_reason_names(&tracefs),
        })
    }

    /// Hooks every OpenSSL library `pid` maps, or (`on_exec`) is about to load, and its
    /// executable when OpenSSL is linked into it. Returns how many files were hooked and
    /// failed anew.
    pub fn hook_tls_of(&mut self, pid: u32, cache: Option<&mut libs::DynamicCache>) -> (u64, u64) {
        let libraries = libs::openssl_libraries(pid, cache)
            .into_iter()
            .map(|path| (path, tls::ObjectKind::Library));
        let executable = libs::ProcessFiles::new(pid)
            .executable()
            .map(|path| (path, tls::ObjectKind::Executable));
        self.hook_tls_files(libraries.chain(executable))
    }

    /// Hooks the OpenSSL libraries in the host's standard library directories, so a program
    /// started later that uses them is covered from its first call: hooking a file the kernel
    /// has not probed before costs about one RCU grace period (15 ms here), longer than a
    /// fresh `curl` takes to send its first request.
    pub fn hook_system_tls(&mut self) -> (u64, u64) {
        self.hook_tls_files(
            libs::system_openssl_libraries()
                .into_iter()
                .map(|path| (path, tls::ObjectKind::Library)),
        )
    }

    /// Hooks what every running process uses (its libssl files, its executable when OpenSSL
    /// is inside), for `netsonde probes` to show what a start here would hook.
    pub fn hook_running_tls(&mut self) -> (u64, u64) {
        let me = std::process::id();
        let (mut hooked, mut failed) = (0, 0);
        for pid in lifecycle::running_pids().into_iter().filter(|&p| p != me) {
            let (h, f) = self.hook_tls_of(pid, None);
            (hooked, failed) = (hooked + h, failed + f);
        }
        (hooked, failed)
    }

    /// Hooks each file not tried before; returns how many were hooked and failed.
    fn hook_tls_files(
        &mut self,
        files: impl Iterator<Item = (PathBuf, tls::ObjectKind)>,
    ) -> (u64, u64) {
        let (mut hooked, mut failed) = (0, 0);
        for (path, kind) in files {
            match self.tls.hook(&mut self.ebpf, &path, kind) {
                Some(tls::LibraryOutcome::Hooked { .. }) => hooked += 1,
                Some(tls::LibraryOutcome::Failed(_)) => failed += 1,
                None => {}
            }
        }
        (hooked, failed)
    }

    /// The kernel's names of its packet drop reasons (`skb/kfree_skb`).
    pub fn drop_reasons(&self) -> &std::collections::BTreeMap<u32, String> {
        &self.drop_reasons
    }

    /// The TLS hooks: what was tried, or why TLS capture is off.
    pub fn tls(&self) -> &tls::TlsHooks {
        &self.tls
    }

    /// Marks a child the kernel added to the monitored set as confirmed. False when it is no
    /// longer there (it exited, and the kernel removed it).
    pub fn confirm_child(&mut self, tgid: u32) -> Result<bool, ProbeError> {
        const BPF_EXIST: u64 = 2;
        let mut map = self.monitored()?;
        match map.insert(tgid, monitored::CONFIRMED, BPF_EXIST) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(false)
            }
            Err(source) => Err(ProbeError::Map {
                name: "MONITORED",
                source,
            }),
        }
    }

    /// Takes a process out of the monitored set, and drops its cached decision.
    pub fn remove_process(&mut self, tgid: u32) -> Result<(), ProbeError> {
        let _ = self.monitored()?.remove(&tgid);
        let mut decisions: BpfHashMap<_, u32, u8> = self.map("DECISIONS")?;
        let _ = decisions.remove(&tgid);
        self.decisions_changed()
    }

    /// Adds processes to the monitored set (the tree under `--pid` at start, and what user
    /// space selects), dropping the kernel's cached "not traced" for each.
    pub fn monitor(&mut self, tgids: &[u32]) -> Result<(), ProbeError> {
        let mut map = self.monitored()?;
        for tgid in tgids {
            map.insert(tgid, monitored::CONFIRMED, 0)
                .map_err(|source| ProbeError::Map {
                    name: "MONITORED",
                    source,
                })?;
        }
        let mut decisions: BpfHashMap<_, u32, u8> = self.map("DECISIONS")?;
        for tgid in tgids {
            let _ = decisions.remove(tgid);
        }
        self.decisions_changed()
    }

    /// Moves user space's decision generation, after a change to the monitored set: each CPU's
    /// cached decision (`LAST_DECISION`) made before it is not used again. Only this writes
    /// that slot, so a read and a write do (the programs move their own, atomically).
    fn decisions_changed(&mut self) -> Result<(), ProbeError> {
        const NAME: &str = "DECISION_GENERATIONS";
        let map_err = |source| ProbeError::Map { name: NAME, source };
        let mut generations: Array<_, u64> = self
            .ebpf
            .map_mut(NAME)
            .ok_or(ProbeError::MissingMap(NAME))?
            .try_into()
            .map_err(map_err)?;
        const USER: u32 = 1;
        let generation = generations.get(&USER, 0).map_err(map_err)?;
        generations
            .set(USER, generation.wrapping_add(1), 0)
            .map_err(map_err)
    }

    /// Whether processes are filtered at all.
    pub fn selective(&self) -> bool {
        self.selective
    }

    /// Removes the per-fd and per-`SSL *` cache entries of processes that exited: those maps
    /// are keyed by tgid and cannot be cleaned by the kernel at exit. Returns entries removed.
    pub fn sweep(&mut self, exited: &HashSet<u32>) -> Result<u64, ProbeError> {
        if exited.is_empty() {
            return Ok(0);
        }
        let mut removed = 0;
        let mut sockets: BpfHashMap<_, u64, netsonde_common::SocketEntry> = self.map("SOCKETS")?;
        let stale: Vec<u64> = sockets
            .keys()
            .flatten()
            .filter(|k| exited.contains(&((k >> 32) as u32)))
            .collect();
        for key in stale {
            removed += u64::from(sockets.remove(&key).is_ok());
        }
        let mut ssl_fds: BpfHashMap<_, SslKey, i32> = self.map("SSL_FDS")?;
        let stale: Vec<SslKey> = ssl_fds
            .keys()
            .flatten()
            .filter(|k| exited.contains(&k.tgid))
            .collect();
        for key in stale {
            removed += u64::from(ssl_fds.remove(&key).is_ok());
        }
        Ok(removed)
    }

    fn monitored(&mut self) -> Result<BpfHashMap<&mut MapData, u32, u8>, ProbeError> {
        self.map("MONITORED")
    }

    fn map<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<BpfHashMap<&mut MapData, K, V>, ProbeError> {
        BpfHashMap::try_from(
            self.ebpf
                .map_mut(name)
                .ok_or(ProbeError::MissingMap(name))?,
        )
        .map_err(|source| ProbeError::Map { name, source })
    }

    /// Every probe point and what happened to it.
    pub fn report(&self) -> &[ProbeStatus] {
        &self.report
    }

    /// How many probe points attached, of how many count: a point that did not attach but
    /// whose data another reads (the socket layer's, the tracepoints reading instead) lost
    /// nothing and is not counted.
    pub fn attached_count(&self) -> (usize, usize) {
        let counted = self
            .report
            .iter()
            .filter(|s| s.attached.is_some() || s.point.fallback().is_none());
        counted.fold((0, 0), |(attached, total), s| {
            (attached + usize::from(s.attached.is_some()), total + 1)
        })
    }

    /// The loaded programs, to read how many runs the kernel skipped.
    pub fn watch_skipped_runs(&self) -> Vec<skipped::WatchedProgram> {
        self.ebpf
            .programs()
            .filter_map(|(name, program)| {
                let fd = std::os::fd::AsFd::as_fd(program.fd().ok()?)
                    .try_clone_to_owned()
                    .ok()?;
                Some(skipped::WatchedProgram::new(name.to_string(), fd))
            })
            .collect()
    }

    /// Takes the ring buffer for the reader task (once).
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(ProbeError::MissingMap("EVENTS"))?;
        RingBuf::try_from(map).map_err(|source| ProbeError::Map {
            name: "EVENTS",
            source,
        })
    }

    /// Takes the per-CPU counters (once).
    pub fn take_counters(&mut self) -> Result<KernelCounters, ProbeError> {
        let map = self
            .ebpf
            .take_map("COUNTERS")
            .ok_or(ProbeError::MissingMap("COUNTERS"))?;
        let array = PerCpuArray::try_from(map).map_err(|source| ProbeError::Map {
            name: "COUNTERS",
            source,
        })?;
        let drops = match self.ebpf.take_map("DROP_REASONS") {
            Some(map) => Some(
                PerCpuHashMap::try_from(map).map_err(|source| ProbeError::Map {
                    name: "DROP_REASONS",
                    source,
                })?,
            ),
            None => None,
        };
        Ok(KernelCounters::new(array, drops, self.drop_reasons.clone()))
    }
}

fn load_object(
    settings: &ProbeSettings,
    offsets: &KernelOffsets,
    net_layout: &NetLayout,
) -> Result<Ebpf, ProbeError> {
    let config = ProbeConfig {
        capture_bytes: settings.capture_bytes,
        agent_tgid: std::process::id(),
        filter_mode: if settings.pids.is_empty()
            && settings.comms.is_empty()
            && !settings.user_decides
        {
            filter_mode::ALL
        } else {
            filter_mode::SELECTED
        },
        comm_filter: u32::from(!settings.comms.is_empty() && !settings.user_decides),
        exec_all: u32::from(settings.user_decides),
        noop: u32::from(settings.noop),
        nr_read: libc::SYS_read as u32,
        nr_write: libc::SYS_write as u32,
        nr_recvfrom: libc::SYS_recvfrom as u32,
        nr_sendto: libc::SYS_sendto as u32,
        // Wake user space early once an eighth of the ring is in use; its timer does the rest.
        wakeup_bytes: settings.ring_buffer_bytes / 8,
    };
    let cpus = aya::util::nr_cpus().map_err(|(_, source)| ProbeError::Cpus { source })? as u32;
    EbpfLoader::new()
        // Rust objects carry no CO-RE relocations, so aya need not parse the kernel's BTF.
        .btf(None)
        .override_global("NETSONDE_CONFIG", &config, true)
        .map_max_entries("SCRATCH", cpus)
        .override_global("NETSONDE_OFFSETS", offsets, true)
        .override_global("NETSONDE_NET_LAYOUT", net_layout, true)
        .map_max_entries("EVENTS", settings.ring_buffer_bytes)
        .load(EBPF_OBJECT)
        .map_err(|source| ProbeError::Load { source })
}

fn fill_filters(ebpf: &mut Ebpf, settings: &ProbeSettings) -> Result<(), ProbeError> {
    let map_err = |name| move |source| ProbeError::Map { name, source };
    let mut pids: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(
        ebpf.map_mut("MONITORED")
            .ok_or(ProbeError::MissingMap("MONITORED"))?,
    )
    .map_err(map_err("MONITORED"))?;
    for pid in &settings.pids {
        pids.insert(pid, monitored::SELECTED, 0)
            .map_err(map_err("MONITORED"))?;
    }
    let mut comms: BpfHashMap<_, Comm, u8> = BpfHashMap::try_from(
        ebpf.map_mut("COMM_FILTER")
            .ok_or(ProbeError::MissingMap("COMM_FILTER"))?,
    )
    .map_err(map_err("COMM_FILTER"))?;
    for comm in &settings.comms {
        comms
            .insert(comm_key(comm), 1, 0)
            .map_err(map_err("COMM_FILTER"))?;
    }
    Ok(())
}

/// A process name as the kernel stores it: at most 15 bytes, NUL-padded.
pub fn comm_key(name: &str) -> Comm {
    let mut key: Comm = [0; 16];
    let bytes = name.as_bytes();
    let n = bytes.len().min(15);
    key[..n].copy_from_slice(&bytes[..n]);
    key
}

/// One line for a failed load or attach: the verifier's last words rather than its whole log
/// (which goes to the debug log).
pub(crate) fn describe_program_error(program: &str, error: &aya::programs::ProgramError) -> String {
    match error {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            tracing::debug!("verifier log for {program}:\n{log}");
            if log.trim().is_empty() {
                // Refused before verification: the program type or its attach point.
                return format!(
                    "the kernel refused to load {program} ({io_error}) before verifying it: \
                     this kernel does not allow this kind of program here"
                );
            }
            // The reason is the last line before the verifier's closing statistics.
            let last = log
                .lines()
                .take_while(|l| !l.starts_with("verification time"))
                .filter(|l| !l.trim().is_empty())
                .last()
                .unwrap_or("no verifier output");
            format!(
                "the kernel verifier rejected {program} ({io_error}): {}",
                last.trim()
            )
        }
        other => {
            let mut msg = other.to_string();
            // aya opens the kprobe event source to attach a kprobe.
            if msg.contains("devices/kprobe/type") {
                return "this kernel has no kprobe event source \
                        (/sys/bus/event_source/devices/kprobe): it was built without kprobes"
                    .into();
            }
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                source = s.source();
            }
            msg
        }
    }
}

/// Capabilities the kernel checks for loading and attaching tracing programs.
/// The capabilities the programs need, held now: root in a container may hold few of them.
fn check_privileges() -> Result<(), ProbeError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let has = |bit: u32| effective & (1u64 << bit) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let held: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(bit, _)| has(*bit))
        .map(|(_, name)| name)
        .collect();
    let has = if held.is_empty() {
        "neither".to_string()
    } else {
        format!("only {}", held.join(" and "))
    };
    Err(ProbeError::Privileges { has })
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it (harmless elsewhere).
fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionKind};

    use super::EBPF_OBJECT;

    /// The memory builtins bpf-linker exports copy one byte per loop turn: a program that calls
    /// them zeroes an 88-byte struct in some 350 instructions. ebpf/probes/build.rs lets LLVM
    /// write those as word-sized stores in place; this catches a build that lost that.
    #[test]
    fn no_program_calls_a_byte_at_a_time_memory_builtin() {
        let file = object::File::parse(EBPF_OBJECT).expect("the eBPF object parses");
        let mut calls: BTreeMap<String, usize> = BTreeMap::new();
        for section in file.sections().filter(|s| s.kind() == SectionKind::Text) {
            for (_, reloc) in section.relocations() {
                let RelocationTarget::Symbol(index) = reloc.target() else {
                    continue;
                };
                let name = file
                    .symbol_by_index(index)
                    .and_then(|s| s.name())
                    .unwrap_or_default();
                if matches!(name, "memset" | "memmove" | "memcpy" | "memcmp" | "bcmp") {
                    let at = format!("{} calls {name}", section.name().unwrap_or("?"));
                    *calls.entry(at).or_default() += 1;
                }
            }
        }
        assert!(calls.is_empty(), "calls into memory builtins: {calls:?}");
    }
}
