//! Kubernetes: which pod, workload and service a process belongs to, and who is at a remote
//! address. The watches ([`watch`]) keep an index ([`index`]) of trimmed objects ([`meta`]);
//! readers ask it questions and never see an API object.

pub mod index;
pub mod meta;
pub mod section;
pub mod trimmed;
pub mod watch;

use std::path::PathBuf;

pub use index::{ClusterIndex, NamingRules, Peer, PodIdentity, ServiceIdentity, Workload};
pub use watch::{SharedIndex, WatchSettings, WatchStats, Watches};

/// Why netsonde cannot talk to the Kubernetes API.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot use the kubeconfig {path}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("not running in a Kubernetes pod (and no kubeconfig given)")]
    InCluster(#[source] kube::config::InClusterError),
    #[error("cannot create a Kubernetes API client")]
    Client(#[source] kube::Error),
}

#[cfg(test)]
pub(crate) mod tests;
