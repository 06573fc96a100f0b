//! The process-lifecycle stage: keeps the kernel's monitored set and TLS hooks in step with
//! the processes that come and go.
//!
//! - **fork**: the kernel has already added a child of a monitored process to the monitored
//!   set (so its first syscall is traced); here it is confirmed or removed by the scope rules.
//! - **exec**: a traced process runs a new program; the OpenSSL libraries it will load are
//!   found from its ELF dependencies and hooked before it can call them. When user space
//!   decides (pod rules, exclusions), every exec comes here: the filter selects new programs
//!   into the monitored set and drops traced ones it excludes; a process whose pod is not
//!   listed yet waits, and is decided again as the Kubernetes index moves.
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
    attribution::{
        filter::Verdict,
        scope::{self, ChildDecision, Scope},
    },
    events::Event,
    probes::{Probes, libs::DynamicCache},
};

/// How often the caches of exited processes are swept (when any exited), or after how many
/// exits, whichever comes first: a sweep walks the whole socket cache, so it is batched.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
const SWEEP_AFTER_EXITS: usize = 100;
/// How often processes waiting for their pod are decided again (also when the index moves),
/// and how long they may wait: a pod the API never lists is not this node's to trace.
const PENDING_EVERY: Duration = Duration::from_secs(2);
const PENDING_FOR: Duration = Duration::from_secs(120);

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
    /// Processes the filter selected into the monitored set (start, exec, a pod listed).
    pub selected: AtomicU64,
    /// Processes the filter excluded (or took out after an exec).
    pub excluded: AtomicU64,
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
    pub selected: u64,
    pub excluded: u64,
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
            selected: self.selected.load(Relaxed),
            excluded: self.excluded.load(Relaxed),
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
    scope: Arc<Scope>,
    /// Processes waiting for their pod, since when.
    pending: std::collections::HashMap<u32, Instant>,
    /// When, and at which index generation, the waiting ones were last decided.
    pending_checked: (Instant, u64),
}

impl Lifecycle {
    pub fn new(probes: SharedProbes, stats: Arc<LifecycleStats>, scope: Arc<Scope>) -> Self {
        Lifecycle {
            probes,
            stats,
            cache: DynamicCache::default(),
            exited: HashSet::new(),
            last_sweep: Instant::now(),
            pending_checked: (Instant::now(), scope.generation()),
            scope,
            pending: Default::default(),
        }
    }

    fn user_decides(&self) -> bool {
        self.scope.filter().user_decides()
    }

    /// Applies the filter to `pid`; adds it to the monitored set (and hooks its TLS
    /// libraries) when selected. Returns the verdict.
    fn select(&mut self, pid: u32, in_tree: bool) -> Verdict {
        let verdict = self.scope.decide(pid, in_tree);
        match verdict {
            Verdict::Trace => {
                if self.pending.remove(&pid).is_some() {
                    tracing::info!("filter: pid {pid} is traced now that its pod is listed");
                }
                if let Some(probes) = &mut *lock(&self.probes) {
                    match probes.monitor(&[pid]) {
                        Ok(()) => {
                            self.stats.selected.fetch_add(1, Relaxed);
                            let (hooked, failed) = probes.hook_tls_of(pid, Some(&mut self.cache));
                            self.stats.add_hooks(hooked, failed);
                        }
                        Err(e) => tracing::warn!("cannot add pid {pid} to the monitored set: {e}"),
                    }
                }
            }
            Verdict::Wait => {
                self.pending.entry(pid).or_insert_with(Instant::now);
            }
            Verdict::Skip => {
                self.pending.remove(&pid);
                self.stats.excluded.fetch_add(1, Relaxed);
            }
        }
        verdict
    }

    /// At start: the processes already below `--pid` join the monitored set, and every
    /// traced process's mapped OpenSSL libraries are hooked.
    pub fn start(&mut self, pids: &[u32], comms: &[String]) {
        let descendants = scope::descendants(pids);
        if self.user_decides() {
            self.start_deciding(pids, &descendants);
            return;
        }
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

    /// At start, when user space decides: every running process through the filter (the
    /// `--pid` trees count as selected by pid).
    fn start_deciding(&mut self, pids: &[u32], descendants: &[u32]) {
        if let Some(probes) = &mut *lock(&self.probes) {
            let (hooked, failed) = probes.hook_system_tls();
            self.stats.add_hooks(hooked, failed);
        }
        let me = std::process::id();
        let (mut traced, mut waiting) = (0, 0);
        for pid in running_pids().into_iter().filter(|&p| p != me) {
            let in_tree = pids.contains(&pid) || descendants.contains(&pid);
            match self.select(pid, in_tree) {
                Verdict::Trace => traced += 1,
                Verdict::Wait => waiting += 1,
                Verdict::Skip if pids.contains(&pid) => {
                    // Selected by --pid, but the other rules say no.
                    if let Some(probes) = &mut *lock(&self.probes) {
                        let _ = probes.remove_process(pid);
                    }
                }
                Verdict::Skip => {}
            }
        }
        tracing::info!(
            "filter: tracing {traced} running processes{}",
            if waiting > 0 {
                format!("; {waiting} wait for their pod to be listed")
            } else {
                String::new()
            }
        );
    }

    /// Acts on one lifecycle event (others are ignored).
    pub fn handle(&mut self, event: &Event<'_>) {
        match event {
            Event::ProcessFork(fork) => self.on_fork(fork.tgid),
            Event::ProcessExec(exec) if exec.traced == 0 => {
                // Reported only when user space decides: a new program to select or not.
                self.select(exec.tgid, false);
            }
            Event::ProcessExec(exec) => {
                self.stats.execs.fetch_add(1, Relaxed);
                if self.user_decides() && self.scope.decide(exec.tgid, true) == Verdict::Skip {
                    // The new program's name is excluded.
                    if let Some(probes) = &mut *lock(&self.probes) {
                        let _ = probes.remove_process(exec.tgid);
                    }
                    self.stats.excluded.fetch_add(1, Relaxed);
                    return;
                }
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
                self.pending.remove(&exit.tgid);
            }
            _ => {}
        }
    }

    fn on_fork(&mut self, child: u32) {
        let Some(probes) = &mut *lock(&self.probes) else {
            return;
        };
        // A child runs its parent's program in its parent's pod: the filter says no only
        // when a rule it could not apply to the parent (a `--pid` tree) now applies.
        let alive = scope::alive(child)
            && (!self.user_decides() || self.scope.decide(child, true) != Verdict::Skip);
        let outcome = match scope::decide_child(alive) {
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

    /// Decides again on processes waiting for their pod, when the index moved or every
    /// [`PENDING_EVERY`]; gives up on those that waited [`PENDING_FOR`].
    fn recheck_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let generation = self.scope.generation();
        let (at, seen) = self.pending_checked;
        if generation == seen && at.elapsed() < PENDING_EVERY {
            return;
        }
        self.pending_checked = (Instant::now(), generation);
        let waiting: Vec<(u32, Instant)> = self.pending.iter().map(|(p, t)| (*p, *t)).collect();
        for (pid, since) in waiting {
            if self.select(pid, false) == Verdict::Wait && since.elapsed() >= PENDING_FOR {
                self.pending.remove(&pid);
                self.stats.excluded.fetch_add(1, Relaxed);
                tracing::debug!("pid {pid}: its pod was not listed in {PENDING_FOR:?}; not traced");
            }
        }
    }

    /// Sweeps the caches of exited processes when due.
    pub fn tick(&mut self) {
        self.recheck_pending();
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
    pub fn run(mut self, rx: Receiver<Vec<Event<'static>>>) {
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

/// Every process's pid, from /proc.
pub(crate) fn running_pids() -> Vec<u32> {
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
