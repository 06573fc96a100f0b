//! Which processes are in scope: the process tree under `--pid`, found at start from /proc and
//! kept up to date by the kernel at fork (user space confirms each child here).
//!
//! Today the only rule is the tree: a child of a monitored process is monitored while it
//! lives. Kubernetes namespace and label filters will decide here too, once pods are known.

use std::collections::{HashMap, HashSet};

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
