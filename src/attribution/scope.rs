//! Which processes are in scope: the process tree under `--pid`, found at start from /proc and
//! kept up to date by the kernel at fork (user space confirms each child here).
//!
//! The rules themselves are [`super::filter`]'s; [`Scope`] applies them to a pid, reading its
//! name and cgroup from /proc and its pod from the Kubernetes index.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use super::{
    cgroup,
    filter::{PodFacts, ProcessFacts, ProcessFilter, Verdict},
    kube::SharedIndex,
};

/// The filter, and what it needs to look at a process.
#[derive(Debug, Clone)]
pub struct Scope {
    filter: ProcessFilter,
    /// The Kubernetes index and its generation, when the watches run.
    kube: Option<(SharedIndex, Arc<AtomicU64>)>,
    proc_root: PathBuf,
}

impl Scope {
    pub fn new(filter: ProcessFilter, kube: Option<(SharedIndex, Arc<AtomicU64>)>) -> Self {
        Scope {
            filter,
            kube,
            proc_root: PathBuf::from("/proc"),
        }
    }

    pub fn filter(&self) -> &ProcessFilter {
        &self.filter
    }

    /// Moves whenever the Kubernetes index changes (0 without one).
    pub fn generation(&self) -> u64 {
        self.kube.as_ref().map_or(0, |(_, g)| g.load(Relaxed))
    }

    /// Whether to trace the process `pid`; `in_tree` when it is in a `--pid` tree. A process
    /// that is gone is skipped.
    pub fn decide(&self, pid: u32, in_tree: bool) -> Verdict {
        let dir = self.proc_root.join(pid.to_string());
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            return Verdict::Skip;
        };
        let process = ProcessFacts {
            comm: comm.trim_end_matches('\n'),
            in_tree,
        };
        if !self.filter.has_pod_rules() {
            return self.filter.decide(process, PodFacts::None);
        }
        let container = cgroup::container_of(&self.proc_root, pid);
        // A container the kubelet did not create (no pod UID in its path) is no pod's.
        let Some(container) = container.filter(|c| c.pod_uid.is_some()) else {
            return self.filter.decide(process, PodFacts::None);
        };
        let Some((index, _)) = &self.kube else {
            return self.filter.decide(process, PodFacts::Unknown);
        };
        let Ok(index) = index.read() else {
            return self.filter.decide(process, PodFacts::Unknown);
        };
        match index.local_pod_meta(&container.id, container.pod_uid.as_deref()) {
            Some((pod, _)) => self.filter.decide(process, PodFacts::Pod(pod)),
            None => self.filter.decide(process, PodFacts::Unknown),
        }
    }
}

/// What to do with a child the kernel added to the monitored set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildDecision {
    /// It stays monitored.
    Keep,
    /// Take it out (it is gone already; nothing of it may outlive its pid).
    Remove,
}

/// Decides on a child of a monitored process.
pub fn decide_child(alive: bool) -> ChildDecision {
    if alive {
        ChildDecision::Keep
    } else {
        ChildDecision::Remove
    }
}

/// Every process below `roots` in `parents` (pid → parent pid), roots excluded.
pub fn descendants_in(parents: &HashMap<u32, u32>, roots: &[u32]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, &ppid) in parents {
        children.entry(ppid).or_default().push(pid);
    }
    let mut seen: HashSet<u32> = roots.iter().copied().collect();
    let mut stack: Vec<u32> = roots.to_vec();
    let mut out = Vec::new();
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            if seen.insert(child) {
                out.push(child);
                stack.push(child);
            }
        }
    }
    out.sort_unstable();
    out
}

/// Every running process below `roots`, from /proc.
pub fn descendants(roots: &[u32]) -> Vec<u32> {
    if roots.is_empty() {
        return Vec::new();
    }
    let parents: HashMap<u32, u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            Some((pid, parent_pid(&stat)?))
        })
        .collect();
    descendants_in(&parents, roots)
}

/// Whether the process `pid` still exists.
pub fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Field 4 of /proc/PID/stat (counted after the command's last ')', see `process.rs`).
fn parent_pid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_below_the_roots() {
        // 1 ─┬─ 10 ── 11 ── 12
        //    └─ 20 ── 21
        let parents = HashMap::from([(10, 1), (11, 10), (12, 11), (20, 1), (21, 20), (30, 2)]);
        assert_eq!(descendants_in(&parents, &[10]), vec![11, 12]);
        assert_eq!(descendants_in(&parents, &[10, 20]), vec![11, 12, 21]);
        assert_eq!(descendants_in(&parents, &[1]), vec![10, 11, 12, 20, 21]);
        assert!(descendants_in(&parents, &[99]).is_empty());
    }

    #[test]
    fn children_of_this_process_are_found_in_proc() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        let found = descendants(&[std::process::id()]);
        let pid = child.id();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found.contains(&pid), "{found:?} lacks {pid}");
        assert!(!alive(pid));
        assert_eq!(decide_child(alive(pid)), ChildDecision::Remove);
        assert_eq!(decide_child(alive(std::process::id())), ChildDecision::Keep);
    }

    #[test]
    fn parent_pid_survives_odd_names() {
        assert_eq!(parent_pid("42 (a) b) (c) S 7 42 42 0"), Some(7));
        assert_eq!(parent_pid("nonsense"), None);
    }
}
