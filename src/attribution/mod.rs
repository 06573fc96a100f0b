//! Who is behind a connection: the process, its container and pod (cgroup), and later the
//! Kubernetes objects around it.
//!
//! Reads /proc and caches what it learns; imports no other stage.

pub mod cgroup;
pub mod filter;
pub mod kube;
pub mod process;
pub mod scope;

pub use process::{ProcessCache, ProcessInfo};

/// The node's name (`host.name`, and the node when Kubernetes did not name it): Kubernetes'
/// name for it when known (`node_name`, from `NODE_NAME`), else the host's UTS name — the
/// host's, not that of a namespace netsonde may run in (a pod without `hostNetwork` has its
/// own, named after the pod).
pub fn host_name(node_name: Option<&str>) -> String {
    choose_host_name(node_name, host_uts_name, own_uts_name)
}

/// The first of: the configured node name, the host's UTS name, netsonde's own, `localhost`.
/// The two lookups are only made when needed.
fn choose_host_name(
    node_name: Option<&str>,
    host_uts: impl FnOnce() -> Option<String>,
    own_uts: impl FnOnce() -> Option<String>,
) -> String {
    node_name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .or_else(host_uts)
        .or_else(own_uts)
        .unwrap_or_else(|| "localhost".into())
}

/// The host name of netsonde's UTS namespace.
fn own_uts_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The host name of the node's UTS namespace when it is not netsonde's own; `None` when they
/// are the same or it cannot be read. The node's namespace is that of the kernel's threads
/// (`kthreadd`, PID 2 where netsonde sees the host's processes), else PID 1's (PID 1 may
/// refuse access, as some init programs make themselves undumpable). Read from a thread that
/// joins that namespace for the moment and ends (`setns` needs CAP_SYS_ADMIN, which loading
/// the programs needs anyway).
fn host_uts_name() -> Option<String> {
    use std::os::{fd::AsRawFd as _, unix::fs::MetadataExt as _};
    let id = |path: &str| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let own = id("/proc/self/ns/uts");
    let kthreadd = std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd");
    let (path, host) = [("/proc/2/ns/uts", kthreadd), ("/proc/1/ns/uts", true)]
        .into_iter()
        .filter(|(_, candidate)| *candidate)
        .find_map(|(path, _)| Some((path, id(path)?)))?;
    if own == Some(host) {
        return None;
    }
    std::thread::spawn(move || {
        let ns = std::fs::File::open(path).ok()?;
        // SAFETY: a valid namespace fd; only this short-lived thread changes namespace.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWUTS) } != 0 {
            return None;
        }
        own_uts_name()
    })
    .join()
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::choose_host_name;

    #[test]
    fn the_node_name_comes_first_then_the_hosts_then_our_own() {
        let none = || None;
        // (case, node name, the host's UTS name, our own, expected)
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
        );
        let cases: [Case; 6] = [
            (
                "NODE_NAME wins",
                Some("node-7"),
                Some("host"),
                Some("pod-x"),
                "node-7",
            ),
            (
                "blank NODE_NAME",
                Some("  "),
                Some("host"),
                Some("pod-x"),
                "host",
            ),
            (
                "in a pod's UTS namespace",
                None,
                Some("host"),
                Some("pod-x"),
                "host",
            ),
            ("on the host", None, None, Some("host"), "host"),
            ("nothing readable", None, None, None, "localhost"),
            ("NODE_NAME trimmed", Some(" node-7\n"), None, None, "node-7"),
        ];
        for (what, node, host, own, want) in cases {
            let host_uts = || host.map(str::to_string);
            let own_uts = || own.map(str::to_string);
            assert_eq!(choose_host_name(node, host_uts, own_uts), want, "{what}");
        }
        // The lookups are not made when the node name is known.
        let called = std::cell::Cell::new(false);
        let lookup = || {
            called.set(true);
            None
        };
        choose_host_name(Some("n"), lookup, none);
        assert!(!called.get());
    }
}
