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

/// The node's host name, as the kernel reports it (`host.name`).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
