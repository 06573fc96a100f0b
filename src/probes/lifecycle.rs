//! The process-lifecycle stage: keeps the kernel's monitored set and TLS hooks in step with
//! the processes that come and go.
//!
//! - **fork**: the kernel has already added a child of a monitored process to the monitored
//!   set (so its first syscall is traced); here it is confirmed or removed by the scope rules.
//! - **exec**: a traced process runs a new program; the OpenSSL libraries it will load are
//!   found from its ELF dependencies and hooked before it can call them.
//! - **exit**: the kernel forgot the process's decision and membership; the per-fd and
//!   per-`SSL *` caches, keyed by tgid, are swept here in batches.
//!
//! Runs on its own thread: hooking a library reads files and makes syscalls, which must not
//! hold up the reader or the tracker.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
        mpsc::{Receiver, RecvTimeoutError},
    },
    time::{Duration, Instant},
};

use crate::{
    attribution::scope::{self, ChildDecision},
    events::Event,
    probes::{Probes, libs::DynamicCache},
};

/// How often the caches of exited processes are swept (when any exited), or after how many
/// exits, whichever comes first: a sweep walks the whole socket cache, so it is batched.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
const SWEEP_AFTER_EXITS: usize = 100;

/// Counters of the lifecycle stage.
#[derive(Debug, Default)]
pub struct LifecycleStats {
    pub children_confirmed: AtomicU64,
    pub children_removed: AtomicU64,
    pub execs: AtomicU64,
    pub exits: AtomicU64,
    pub tls_libraries_hooked: AtomicU64,
    pub tls_libraries_failed: AtomicU64,
    /// Cache entries of exited processes removed by sweeps.
    pub swept: AtomicU64,
    /// Lifecycle events the stage could not take (its queue was full).
    pub dropped: AtomicU64,
}

/// A snapshot of [`LifecycleStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LifecycleTotals {
    pub children_confirmed: u64,
    pub children_removed: u64,
    pub execs: u64,
    pub exits: u64,
    pub tls_libraries_hooked: u64,
    pub tls_libraries_failed: u64,
    pub swept: u64,
    pub dropped: u64,
}

impl LifecycleStats {
    fn add_hooks(&self, hooked: u64, failed: u64) {
        self.tls_libraries_hooked.fetch_add(hooked, Relaxed);
        self.tls_libraries_failed.fetch_add(failed, Relaxed);
    }

    pub fn totals(&self) -> LifecycleTotals {
        LifecycleTotals {
            children_confirmed: self.children_confirmed.load(Relaxed),
            children_removed: self.children_removed.load(Relaxed),
            execs: self.execs.load(Relaxed),
            exits: self.exits.load(Relaxed),
            tls_libraries_hooked: self.tls_libraries_hooked.load(Relaxed),
            tls_libraries_failed: self.tls_libraries_failed.load(Relaxed),
            swept: self.swept.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
        }
    }
}

/// The probes, shared with the agent, which takes them at shutdown to detach everything.
pub type SharedProbes = Arc<Mutex<Option<Probes>>>;

pub struct Lifecycle {
    probes: SharedProbes,
    stats: Arc<LifecycleStats>,
    cache: DynamicCache,
    exited: HashSet<u32>,
    last_sweep: Instant,
}

impl Lifecycle {
    pub fn new(probes: SharedProbes, stats: Arc<LifecycleStats>) -> Self {
        Lifecycle {
            probes,
            stats,
            cache: DynamicCache::default(),
            exited: HashSet::new(),
            last_sweep: Instant::now(),
        }
    }

    /// At start: the processes already below `--pid` join the monitored set, and every
    /// traced process's mapped OpenSSL libraries are hooked.
    pub fn start(&mut self, pids: &[u32], comms: &[String]) {
        let descendants = scope::descendants(pids);
        let Some(probes) = &mut *lock(&self.probes) else {
            return;
        };
        if !descendants.is_empty() {
            tracing::info!(
                "also tracing {} processes already running below --pid",
                descendants.len()
            );
            if let Err(e) = probes.monitor(&descendants) {
                tracing::warn!("cannot add the children of --pid processes: {e}");
            }
        }
        let (hooked, failed) = probes.hook_system_tls();
        self.stats.add_hooks(hooked, failed);
        let me = std::process::id();
        let traced: Vec<u32> = running_pids()
            .into_iter()
            .filter(|&pid| pid != me)
            .filter(|&pid| {
                !probes.selective()
                    || pids.contains(&pid)
                    || descendants.contains(&pid)
                    || comm_matches(pid, comms)
            })
            .collect();
        for pid in traced {
            let (hooked, failed) = probes.hook_tls_of(pid, None);
            self.stats.add_hooks(hooked, failed);
        }
    }

    /// Acts on one lifecycle event (others are ignored).
    pub fn handle(&mut self, event: &Event) {
        match event {
            Event::ProcessFork(fork) => self.on_fork(fork.tgid),
            Event::ProcessExec(exec) => {
                self.stats.execs.fetch_add(1, Relaxed);
                if let Some(probes) = &mut *lock(&self.probes) {
                    let started = Instant::now();
                    let (hooked, failed) = probes.hook_tls_of(exec.tgid, Some(&mut self.cache));
                    self.stats.add_hooks(hooked, failed);
                    tracing::debug!(
                        "exec of pid {}: {hooked} TLS libraries hooked in {:?}, {:?} after the exec",
                        exec.tgid,
                        started.elapsed(),
                        crate::events::KernelClock::now_ktime()
                            .checked_sub(exec.ts_ns)
                            .map(Duration::from_nanos)
                    );
                }
            }
            Event::ProcessExit(exit) => {
                self.stats.exits.fetch_add(1, Relaxed);
                self.exited.insert(exit.tgid);
            }
            _ => {}
        }
    }

    fn on_fork(&mut self, child: u32) {
        let Some(probes) = &mut *lock(&self.probes) else {
            return;
        };
        let outcome = match scope::decide_child(scope::alive(child)) {
            ChildDecision::Keep => probes.confirm_child(child).map(|present| {
                if present {
                    &self.stats.children_confirmed
                } else {
                    // Gone before we looked: the kernel already removed it at exit.
                    &self.stats.children_removed
                }
            }),
            ChildDecision::Remove => probes
                .remove_process(child)
                .map(|()| &self.stats.children_removed),
        };
        match outcome {
            Ok(counter) => {
                counter.fetch_add(1, Relaxed);
            }
            Err(e) => tracing::warn!("cannot update the monitored set for pid {child}: {e}"),
        }
    }

    /// Sweeps the caches of exited processes when due.
    pub fn tick(&mut self) {
        let due =
            self.last_sweep.elapsed() >= SWEEP_EVERY || self.exited.len() >= SWEEP_AFTER_EXITS;
        if self.exited.is_empty() || !due {
            return;
        }
        self.sweep();
    }

    fn sweep(&mut self) {
        self.last_sweep = Instant::now();
        let exited = std::mem::take(&mut self.exited);
        if let Some(probes) = &mut *lock(&self.probes) {
            match probes.sweep(&exited) {
                Ok(n) => {
                    self.stats.swept.fetch_add(n, Relaxed);
                }
                Err(e) => tracing::debug!("sweeping caches of exited processes: {e}"),
            }
        }
    }

    /// Runs until the sender side is gone.
    pub fn run(mut self, rx: Receiver<Vec<Event>>) {
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(events) => events.iter().for_each(|e| self.handle(e)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            self.tick();
        }
    }
}

fn lock(probes: &SharedProbes) -> std::sync::MutexGuard<'_, Option<Probes>> {
    probes
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn running_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

fn comm_matches(pid: u32, comms: &[String]) -> bool {
    if comms.is_empty() {
        return false;
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let comm = comm.trim_end();
    // The kernel keeps 15 bytes of a name.
    comms
        .iter()
        .any(|c| c.as_bytes()[..c.len().min(15)] == comm.as_bytes()[..comm.len().min(15)])
}
