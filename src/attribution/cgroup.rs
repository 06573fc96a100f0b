//! pid → container: the container runtime, container id and pod UID a process's cgroup path
//! names. Covers cgroup v1 and v2; containerd, CRI-O, Docker and Podman; the systemd and the
//! cgroupfs drivers of the kubelet. A path that names none of these leaves the process without
//! a container: netsonde then reports it by its process identity, never a guess.
//!
//! The layouts are conventions of the runtimes and the kubelet, not a format any crate parses
//! (procfs reads /proc/PID/cgroup into lines, not containers), hence this small parser.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// The runtime whose naming a cgroup path follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    Podman,
}

impl Runtime {
    /// The prefix Kubernetes puts before container ids (`containerd://…`).
    pub fn scheme(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
        }
    }
}

/// The container a process runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub runtime: Runtime,
    /// 64 lower-case hex digits (`container.id`).
    pub id: String,
    /// The pod's UID with dashes (`k8s.pod.uid`), when the path is the kubelet's.
    pub pod_uid: Option<String>,
}

/// The container named by the contents of `/proc/PID/cgroup`, if any. The unified (v2) line
/// is preferred; on v1 hosts any controller's path names the same container.
pub fn container_from_proc_cgroup(text: &str) -> Option<Container> {
    let mut paths: Vec<&str> = text
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .collect();
    // `0::/…` (v2) first.
    paths.sort_by_key(|p| !text.lines().any(|l| l == format!("0::{p}")));
    paths.into_iter().find_map(container_from_path)
}

/// Containers by cgroup id, for processes /proc no longer has: the kernel's events carry the
/// cgroup (v2) id of the process, and a cgroup's id is its directory's inode number in the
/// cgroup2 filesystem. The directories that name a container are found by walking the
/// hierarchy, again when an id is not known (at most once per [`CgroupIds::REWALK_EVERY`]).
#[derive(Debug)]
pub struct CgroupIds {
    root: Option<PathBuf>,
    containers: HashMap<u64, Container>,
    last_walk: Option<Instant>,
}

impl CgroupIds {
    const REWALK_EVERY: Duration = Duration::from_secs(2);
    /// Most containers remembered; beyond that the map starts over.
    const MAX: usize = 65_536;

    /// Walks the cgroup2 hierarchy at `root` (none: ids are never resolved).
    pub fn new(root: Option<PathBuf>) -> Self {
        CgroupIds {
            root,
            containers: HashMap::new(),
            last_walk: None,
        }
    }

    /// The host's cgroup2 hierarchy: mounted at `/host/sys/fs/cgroup` (a DaemonSet, whose own
    /// `/sys/fs/cgroup` shows only its container), else the first cgroup2 mount.
    pub fn find_root() -> Option<PathBuf> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
        let cgroup2: Vec<&str> = mounts
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(2) == Some(&"cgroup2")).then(|| f[1])
            })
            .collect();
        cgroup2
            .iter()
            .find(|m| **m == "/host/sys/fs/cgroup")
            .or(cgroup2.first())
            .map(PathBuf::from)
    }

    /// The container of the cgroup `id` (0: unknown).
    pub fn container(&mut self, id: u64) -> Option<Container> {
        if id == 0 || self.root.is_none() {
            return None;
        }
        if let Some(c) = self.containers.get(&id) {
            return Some(c.clone());
        }
        if self
            .last_walk
            .is_none_or(|at| at.elapsed() >= Self::REWALK_EVERY)
        {
            self.walk();
        }
        self.containers.get(&id).cloned()
    }

    fn walk(&mut self) {
        self.last_walk = Some(Instant::now());
        if self.containers.len() >= Self::MAX {
            self.containers.clear();
        }
        let Some(root) = self.root.clone() else {
            return;
        };
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                if !meta.is_dir() {
                    continue;
                }
                let path = entry.path();
                let relative = path.strip_prefix(&root).unwrap_or(&path);
                if let Some(c) = relative.to_str().and_then(container_from_path) {
                    self.containers.insert(meta.ino(), c);
                }
                stack.push(path);
            }
        }
    }
}

/// Reads `/proc/PID/cgroup` under `proc_root` (`/proc`, or a host's /proc mounted elsewhere).
pub fn container_of(proc_root: &Path, pid: u32) -> Option<Container> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    container_from_proc_cgroup(&text)
}

/// The container named by one cgroup path: the deepest directory that is a container's
/// (Podman nests one more below it), and the pod among its parents.
pub fn container_from_path(path: &str) -> Option<Container> {
    let mut parts = path.split('/').filter(|p| !p.is_empty()).rev();
    let (mut runtime, id) = parts.find_map(container_id)?;
    let parents: Vec<&str> = parts.collect();
    let pod_uid = parents.iter().find_map(|p| pod_uid(p));
    // A bare id (cgroupfs driver) under a `docker` directory, outside Kubernetes.
    if pod_uid.is_none() && parents.contains(&"docker") {
        runtime = Runtime::Docker;
    }
    Some(Container {
        runtime,
        id: id.to_string(),
        pod_uid,
    })
}

/// A container's own cgroup directory: `cri-containerd-ID.scope`, `crio-ID.scope`,
/// `docker-ID.scope`, `libpod-ID.scope` (systemd driver), or the bare ID (cgroupfs driver,
/// where the runtime is told by the parents: containerd unless a `docker` directory says so).
fn container_id(segment: &str) -> Option<(Runtime, &str)> {
    let scoped = segment.strip_suffix(".scope");
    let (runtime, id) = match scoped {
        Some(s) => {
            if let Some(id) = s.strip_prefix("cri-containerd-") {
                (Runtime::Containerd, id)
            } else if let Some(id) = s.strip_prefix("crio-") {
                // `crio-conmon-ID.scope` is the runtime's monitor, not the container.
                (Runtime::CriO, id)
            } else if let Some(id) = s.strip_prefix("docker-") {
                (Runtime::Docker, id)
            } else if let Some(id) = s.strip_prefix("libpod-") {
                (Runtime::Podman, id)
            } else {
                return None;
            }
        }
        None => (Runtime::Containerd, segment),
    };
    is_container_id(id).then_some((runtime, id))
}

fn is_container_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A pod's directory: `pod<uid>` (cgroupfs driver, dashes) or `kubepods-<qos>-pod<uid>.slice`
/// (systemd driver, underscores). Returns the UID with dashes.
fn pod_uid(segment: &str) -> Option<String> {
    let segment = segment.strip_suffix(".slice").unwrap_or(segment);
    let at = segment.rfind("pod")?;
    let uid = segment[at + 3..].replace('_', "-");
    let valid = uid.len() == 36
        && uid.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    valid.then_some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4c5b2f4e6d1a8b9c0d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c";
    const UID: &str = "1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718";

    /// Recorded `/proc/PID/cgroup` lines of real layouts, by runtime and kubelet driver.
    fn samples() -> Vec<(&'static str, String, Option<Container>)> {
        let uid_ = UID.replace('-', "_");
        let k8s = |runtime| {
            Some(Container {
                runtime,
                id: ID.into(),
                pod_uid: Some(UID.into()),
            })
        };
        vec![
            (
                "containerd, systemd driver, cgroup v2",
                format!(
                    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope\n"
                ),
                k8s(Runtime::Containerd),
            ),
            (
                "containerd, cgroupfs driver, cgroup v1",
                format!(
                    "12:memory:/kubepods/burstable/pod{UID}/{ID}\n11:cpu,cpuacct:/kubepods/burstable/pod{UID}/{ID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n"
                ),
                k8s(Runtime::Containerd),
            ),
            (
                "CRI-O, systemd driver, cgroup v2",
                format!(
                    "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/crio-{ID}.scope\n"
                ),
                k8s(Runtime::CriO),
            ),
            (
                "CRI-O's monitor (conmon) is no container",
                format!(
                    "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/crio-conmon-{ID}.scope\n"
                ),
                None,
            ),
            (
                "guaranteed QoS pod, systemd driver",
                format!("0::/kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{ID}.scope\n"),
                k8s(Runtime::Containerd),
            ),
            (
                "Docker, systemd driver",
                format!("0::/system.slice/docker-{ID}.scope\n"),
                Some(Container {
                    runtime: Runtime::Docker,
                    id: ID.into(),
                    pod_uid: None,
                }),
            ),
            (
                "Podman (rootful, cgroup v2)",
                format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
                Some(Container {
                    runtime: Runtime::Podman,
                    id: ID.into(),
                    pod_uid: None,
                }),
            ),
            (
                "a host process",
                "0::/user.slice/user-1000.slice/session-3.scope\n".to_string(),
                None,
            ),
            (
                "not a container id (too short)",
                "4:memory:/process_api/186d94ce82450a2d7c5eb112df3e15fb\n0::/\n".to_string(),
                None,
            ),
            ("garbage", "no colons here\n:::\n".to_string(), None),
        ]
    }

    #[test]
    fn recorded_layouts_name_their_container_and_pod() {
        for (what, text, expected) in samples() {
            assert_eq!(container_from_proc_cgroup(&text), expected, "{what}");
        }
    }

    #[test]
    fn docker_with_the_cgroupfs_driver_is_docker() {
        let c = container_from_path(&format!("/docker/{ID}")).unwrap();
        assert_eq!(
            (c.runtime, c.id.as_str(), c.pod_uid),
            (Runtime::Docker, ID, None)
        );
        assert_eq!(c.runtime.scheme(), "docker");
    }

    #[test]
    fn paths_seen_from_inside_a_cgroup_namespace_still_name_the_container() {
        // netsonde in its own pod's cgroup namespace sees other pods' paths relative to its
        // own cgroup, climbing out with `..`.
        let c = container_from_proc_cgroup(&format!(
            "0::/../../kubepods-besteffort-pod0d9a3c52_5b1e_4f0a_9c3d_8e7f6a5b4c3d.slice/cri-containerd-{ID}.scope\n"
        ))
        .unwrap();
        assert_eq!(c.id, ID);
        assert_eq!(
            c.pod_uid.as_deref(),
            Some("0d9a3c52-5b1e-4f0a-9c3d-8e7f6a5b4c3d")
        );
    }

    #[test]
    fn a_cgroup_id_names_its_container_without_proc() {
        let Some(root) = CgroupIds::find_root() else {
            eprintln!("skipped: no cgroup2 hierarchy is mounted");
            return;
        };
        let base = root.join(format!("netsonde-unit-{}.slice", std::process::id()));
        let dir = base.join(format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0d9a3c52_5b1e_4f0a_9c3d_8e7f6a5b4c3d.slice/cri-containerd-{ID}.scope"
        ));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("skipped: cannot create a cgroup ({e}; needs root)");
            return;
        }
        let id = std::fs::metadata(&dir).unwrap().ino();
        let mut ids = CgroupIds::new(Some(root));
        let found = ids.container(id);
        // Not there: unknown, and not walked again at once.
        assert_eq!(ids.container(id ^ 0x5555), None);
        for d in dir.ancestors().take_while(|d| d.starts_with(&base)) {
            let _ = std::fs::remove_dir(d);
        }
        let found = found.expect("found by its inode");
        assert_eq!(found.id, ID);
        assert_eq!(
            found.pod_uid.as_deref(),
            Some("0d9a3c52-5b1e-4f0a-9c3d-8e7f6a5b4c3d")
        );
        assert_eq!(CgroupIds::new(None).container(id), None);
    }

    #[test]
    fn this_machines_processes_have_no_container_layout_and_fall_back() {
        // This machine's own cgroups (a sandbox, not a container runtime): readable, and
        // naming no container, so the process identity is used.
        let own = container_of(Path::new("/proc"), std::process::id());
        assert_eq!(own, None);
        assert_eq!(container_of(Path::new("/proc"), u32::MAX), None);
    }
}
