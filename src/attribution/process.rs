//! Process identity from /proc, cached per pid.

use std::{num::NonZeroUsize, path::PathBuf, sync::Arc};

use lru::LruCache;

/// What netsonde knows about a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// Base name of /proc/PID/exe (semconv `process.executable.name`); the kernel's comm when
    /// the executable cannot be read (the process already exited, or no permission).
    pub executable_name: Arc<str>,
    /// Full path of the executable, when readable.
    pub executable_path: Option<Arc<str>>,
    /// Start time in clock ticks after boot (/proc/PID/stat field 22): with the pid it names
    /// the process uniquely, even after the pid is reused.
    pub start_ticks: Option<u64>,
    /// The container the process runs in, from its cgroup (none on the host, or when the
    /// path names no container runtime netsonde knows).
    pub container: Option<super::cgroup::Container>,
}

/// A bounded cache of [`ProcessInfo`] by pid.
pub struct ProcessCache {
    cache: LruCache<u32, Arc<ProcessInfo>>,
    /// Containers by cgroup id, for processes already gone from /proc.
    cgroups: super::cgroup::CgroupIds,
}

impl ProcessCache {
    pub fn new(capacity: usize) -> Self {
        ProcessCache {
            cache: LruCache::new(NonZeroUsize::new(capacity.max(1)).expect("at least 1")),
            cgroups: super::cgroup::CgroupIds::new(super::cgroup::CgroupIds::find_root()),
        }
    }

    /// The process `pid`, read on first use; `comm` and `cgroup_id` (the kernel's, 0 when
    /// unknown) stand in for what /proc no longer has.
    pub fn get(&mut self, pid: u32, comm: &str, cgroup_id: u64) -> Arc<ProcessInfo> {
        if let Some(info) = self.cache.get(&pid) {
            return info.clone();
        }
        let info = Arc::new(self.read(pid, comm, cgroup_id));
        self.cache.put(pid, info.clone());
        info
    }

    /// The process exited: its pid may be reused.
    pub fn forget(&mut self, pid: u32) {
        self.cache.pop(&pid);
    }

    fn read(&mut self, pid: u32, comm: &str, cgroup_id: u64) -> ProcessInfo {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let path = std::fs::read_link(dir.join("exe")).ok().map(|p| {
            p.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string()
        });
        let executable_name = path
            .as_deref()
            .and_then(|p| p.rsplit('/').next())
            .filter(|n| !n.is_empty())
            .unwrap_or(comm);
        let start_ticks = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|stat| start_ticks(&stat));
        ProcessInfo {
            pid,
            executable_name: Arc::from(executable_name),
            executable_path: path.map(Arc::from),
            start_ticks,
            // The kernel's cgroup id only when /proc no longer has the process: a live host
            // process in no container must not send every lookup through the hierarchy.
            container: match std::fs::read_to_string(dir.join("cgroup")) {
                Ok(text) => super::cgroup::container_from_proc_cgroup(&text),
                Err(_) => self.cgroups.container(cgroup_id),
            },
        }
    }
}

/// Field 22 of /proc/PID/stat. The command (field 2) is in parentheses and may itself hold
/// spaces and parentheses, so fields are counted after its last ')'.
fn start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ')' come fields 3, 4, …: field 22 is the 20th of them.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_process_names() {
        let stat = "4242 (we ird) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000000 200 18446744073709551615";
        assert_eq!(start_ticks(stat), Some(987654));
        assert_eq!(start_ticks("garbage"), None);
    }

    #[test]
    fn this_process_is_read_from_proc() {
        let mut cache = ProcessCache::new(4);
        let me = cache.get(std::process::id(), "fallback", 0);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(
            &*me.executable_name,
            exe.file_name().unwrap().to_str().unwrap()
        );
        assert!(me.start_ticks.is_some());
        // A pid that does not exist keeps the kernel's comm.
        let gone = cache.get(u32::MAX - 1, "gone", 0);
        assert_eq!((&*gone.executable_name, gone.start_ticks), ("gone", None));
    }
}
