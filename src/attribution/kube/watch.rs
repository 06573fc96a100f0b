//! The watches that keep the [`ClusterIndex`] current: this node's pods (for attribution), and
//! the cluster's pods, Services, EndpointSlices and nodes (for peers), plus the owner links
//! of ReplicaSets and Jobs (metadata only). kube's watcher lists, watches, follows bookmarks,
//! relists after `410 Gone` and backs off while the API server fails; each (re)list replaces
//! its section, so objects deleted meanwhile expire.
//!
//! Objects are read one by one from their raw JSON and trimmed at once ([`Trimmed`]): a list
//! is never held whole, and a malformed object is skipped and counted instead of failing its
//! list.

use std::{
    fmt::Debug,
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use futures::TryStreamExt as _;
use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    batch::v1::Job,
    core::v1::{Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt as _,
        watcher::{self, Event},
    },
};

use super::{
    KubeError,
    index::ClusterIndex,
    meta::{MetaError, NodeMeta, OwnerLink, PodDetail, PodMeta, ServiceMeta, SliceMeta},
    section::{Change, Section},
    trimmed::{Trim, Trimmed},
};

/// This node's pods, trimmed with labels and containers.
#[derive(Debug, Clone)]
struct ThisNodePods;
/// The cluster's pods, trimmed to what names a peer.
#[derive(Debug, Clone)]
struct ClusterPods;
#[derive(Debug, Clone)]
pub(crate) struct Services;
#[derive(Debug, Clone)]
struct Slices;
#[derive(Debug, Clone)]
struct Nodes;

impl Trim for ThisNodePods {
    type Api = Pod;
    type Facts = PodMeta;
    fn trim(pod: &Pod) -> Result<PodMeta, MetaError> {
        PodMeta::from_pod(pod, PodDetail::Full)
    }
}

impl Trim for ClusterPods {
    type Api = Pod;
    type Facts = PodMeta;
    fn trim(pod: &Pod) -> Result<PodMeta, MetaError> {
        PodMeta::from_pod(pod, PodDetail::Peer)
    }
}

impl Trim for Services {
    type Api = Service;
    type Facts = ServiceMeta;
    fn trim(service: &Service) -> Result<ServiceMeta, MetaError> {
        ServiceMeta::from_service(service)
    }
}

impl Trim for Slices {
    type Api = EndpointSlice;
    type Facts = SliceMeta;
    fn trim(slice: &EndpointSlice) -> Result<SliceMeta, MetaError> {
        SliceMeta::from_slice(slice)
    }
}

impl Trim for Nodes {
    type Api = Node;
    type Facts = NodeMeta;
    fn trim(node: &Node) -> Result<NodeMeta, MetaError> {
        NodeMeta::from_node(node)
    }
}

/// Where the API server is and what to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSettings {
    /// A kubeconfig file; none: the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// This node's name (`spec.nodeName` of its pods).
    pub node_name: String,
    /// Watch the whole cluster's pods, Services, EndpointSlices and nodes to name peers.
    pub peers: bool,
}

/// What the watches did, for self-telemetry and the stats line.
#[derive(Debug, Default)]
pub struct WatchStats {
    /// Objects stored (listed, added or changed).
    pub applied: AtomicU64,
    /// Objects deleted.
    pub deleted: AtomicU64,
    /// Objects skipped because they could not be read.
    pub malformed: AtomicU64,
    /// Failed list or watch requests (each retried with backoff).
    pub errors: AtomicU64,
    /// Completed lists (the first of each watch, then one per relist).
    pub lists: AtomicU64,
}

/// A snapshot of [`WatchStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchTotals {
    pub applied: u64,
    pub deleted: u64,
    pub malformed: u64,
    pub errors: u64,
    pub lists: u64,
}

impl WatchStats {
    pub fn totals(&self) -> WatchTotals {
        WatchTotals {
            applied: self.applied.load(Relaxed),
            deleted: self.deleted.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            errors: self.errors.load(Relaxed),
            lists: self.lists.load(Relaxed),
        }
    }
}

/// The index the watches keep, shared with its readers.
pub type SharedIndex = Arc<RwLock<ClusterIndex>>;

/// Running watches. Dropping them stops them.
pub struct Watches {
    pub index: SharedIndex,
    pub stats: Arc<WatchStats>,
    /// Bumped whenever this node's pods change: readers holding "pod not known yet" answers
    /// ask again when it moves.
    pub generation: Arc<AtomicU64>,
    /// Watches failing because the API server does (see [`Shared::unreachable`]).
    unreachable: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A client for the API server the settings name.
pub async fn client(settings: &WatchSettings) -> Result<Client, KubeError> {
    let config = match &settings.kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                KubeError::Kubeconfig {
                    path: path.clone(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|source| KubeError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
        None => kube::Config::incluster().map_err(KubeError::InCluster)?,
    };
    Client::try_from(config).map_err(KubeError::Client)
}

impl Watches {
    /// Starts every watch on the current tokio runtime.
    pub fn start(client: Client, settings: &WatchSettings) -> Watches {
        let shared = Shared {
            index: SharedIndex::default(),
            stats: Arc::new(WatchStats::default()),
            generation: Arc::new(AtomicU64::new(0)),
            unreachable: Arc::new(AtomicU64::new(0)),
        };
        let mut tasks = Vec::new();
        let node_pods =
            watcher::Config::default().fields(&format!("spec.nodeName={}", settings.node_name));
        tasks.push(spawn_trimmed::<ThisNodePods>(
            "this node's pods",
            &client,
            node_pods,
            |i| &mut i.local_pods,
            shared.clone(),
            true,
        ));
        tasks.push(spawn_owner_links::<ReplicaSet>(
            "replicasets",
            &client,
            |i| &mut i.replicasets,
            shared.clone(),
        ));
        tasks.push(spawn_owner_links::<Job>(
            "jobs",
            &client,
            |i| &mut i.jobs,
            shared.clone(),
        ));
        if settings.peers {
            tasks.push(spawn_trimmed::<ClusterPods>(
                "pods",
                &client,
                watcher::Config::default(),
                |i| &mut i.pods,
                shared.clone(),
                false,
            ));
            tasks.push(spawn_trimmed::<Services>(
                "services",
                &client,
                watcher::Config::default(),
                |i| &mut i.services,
                shared.clone(),
                false,
            ));
            tasks.push(spawn_trimmed::<Slices>(
                "endpointslices",
                &client,
                watcher::Config::default(),
                |i| &mut i.slices,
                shared.clone(),
                false,
            ));
            tasks.push(spawn_trimmed::<Nodes>(
                "nodes",
                &client,
                watcher::Config::default(),
                |i| &mut i.nodes,
                shared.clone(),
                false,
            ));
        }
        Watches {
            index: shared.index,
            stats: shared.stats,
            generation: shared.generation,
            unreachable: shared.unreachable,
            tasks,
        }
    }

    /// Waits until this node's pods have been listed once, at most `timeout`, and not at all
    /// once the API server is known to fail (it was said; start-up need not wait for it).
    pub async fn wait_for_node_pods(&self, timeout: Duration) -> NodePods {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.index.read().is_ok_and(|i| i.local_pods.synced()) {
                return NodePods::Listed;
            }
            if self.unreachable.load(Relaxed) > 0 {
                return NodePods::ApiFails;
            }
            if tokio::time::Instant::now() >= deadline {
                return NodePods::NotYet;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How the wait for this node's pods ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodePods {
    Listed,
    /// The API server fails (already warned about).
    ApiFails,
    /// Still listing when the wait ran out.
    NotYet,
}

#[derive(Clone)]
struct Shared {
    index: SharedIndex,
    stats: Arc<WatchStats>,
    generation: Arc<AtomicU64>,
    /// Watches failing for another reason than a refusal: an unreachable or failing API
    /// server is said once for all of them, not once per watch.
    unreachable: Arc<AtomicU64>,
}

type SectionOf<T> = fn(&mut ClusterIndex) -> &mut Section<T>;

/// Watches `T::Api` objects, trimmed one by one (a malformed one is skipped and counted).
fn spawn_trimmed<T>(
    what: &'static str,
    client: &Client,
    config: watcher::Config,
    section: SectionOf<T::Facts>,
    shared: Shared,
    bumps_generation: bool,
) -> tokio::task::JoinHandle<()>
where
    T: Trim,
    T::Facts: super::section::Entry,
    Trimmed<T>: kube::Resource<DynamicType = ()>,
{
    let api: Api<Trimmed<T>> = Api::all(client.clone());
    let stats = shared.stats.clone();
    let read = move |object: Trimmed<T>| -> Option<T::Facts> {
        match object.facts {
            Ok(facts) => Some(facts),
            Err(reason) => {
                stats.malformed.fetch_add(1, Relaxed);
                tracing::debug!("skipped a malformed object from the {what} watch: {reason}");
                None
            }
        }
    };
    tokio::spawn(drive(
        what,
        watcher::watcher(api, lean(config)),
        read,
        section,
        shared,
        bumps_generation,
    ))
}

/// Watches the metadata of `K` for its controller (ReplicaSet → Deployment, Job → CronJob).
fn spawn_owner_links<K>(
    what: &'static str,
    client: &Client,
    section: SectionOf<OwnerLink>,
    shared: Shared,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource<DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + serde::de::DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<PartialObjectMeta<K>> = Api::all(client.clone());
    let stats = shared.stats.clone();
    let read = move |object: PartialObjectMeta<K>| -> Option<OwnerLink> {
        match OwnerLink::from_meta(<K as k8s_openapi::Resource>::KIND, &object.metadata) {
            Ok(link) => Some(link),
            Err(e) => {
                stats.malformed.fetch_add(1, Relaxed);
                tracing::debug!("skipped a malformed object from the {what} watch: {e}");
                None
            }
        }
    };
    tokio::spawn(drive(
        what,
        watcher::watcher(api, lean(watcher::Config::default())),
        read,
        section,
        shared,
        false,
    ))
}

/// Lists served from the API server's cache (`resourceVersion=0`): a DaemonSet relisting on
/// every node must not load etcd. kube drops `resourceVersion=0` when a page size is set.
fn lean(config: watcher::Config) -> watcher::Config {
    let mut config = config.any_semantic();
    config.page_size = None;
    config
}

/// Applies one watch's events to its section until the task is stopped.
async fn drive<S, O, T>(
    what: &'static str,
    stream: S,
    read: impl Fn(O) -> Option<T>,
    section: SectionOf<T>,
    shared: Shared,
    bumps_generation: bool,
) where
    S: futures::Stream<Item = Result<Event<O>, watcher::Error>> + Send,
    T: super::section::Entry,
{
    // Why this watch is failing, if it is: refused (RBAC) or the API server unreachable.
    let mut failing: Option<bool> = None;
    let mut stream = std::pin::pin!(stream.default_backoff());
    loop {
        let event = match stream.try_next().await {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(e) => {
                shared.stats.errors.fetch_add(1, Relaxed);
                // One line when the API server becomes unreachable (whichever watch finds out
                // first), one when it is back; a refused watch (RBAC) is named on its own. An
                // API server that is down for an hour must not fill the log.
                if failing.is_none() {
                    let refused = is_forbidden(&e);
                    failing = Some(refused);
                    if refused {
                        tracing::warn!(
                            "kubernetes: the {what} watch is refused, retrying with backoff: {}",
                            describe(&e)
                        );
                    } else if shared.unreachable.fetch_add(1, Relaxed) == 0 {
                        tracing::warn!(
                            "kubernetes: the API server fails ({}), retrying with backoff; \
                             process and container attributes meanwhile",
                            describe(&e)
                        );
                    }
                }
                continue;
            }
        };
        let change = match event {
            Event::Init => Change::Restart,
            Event::InitApply(o) => match read(o) {
                Some(t) => Change::Put(t),
                None => continue,
            },
            Event::InitDone => {
                shared.stats.lists.fetch_add(1, Relaxed);
                match failing.take() {
                    Some(true) => tracing::info!("kubernetes: the {what} watch is allowed now"),
                    Some(false) => {
                        let was = shared.unreachable.fetch_sub(1, Relaxed);
                        if was == 1 {
                            tracing::info!("kubernetes: the API server answers again");
                        }
                    }
                    None => {}
                }
                Change::Synced
            }
            Event::Apply(o) => match read(o) {
                Some(t) => Change::Apply(t),
                None => continue,
            },
            Event::Delete(o) => match read(o) {
                Some(t) => Change::Delete(t),
                None => continue,
            },
        };
        match &change {
            Change::Put(_) | Change::Apply(_) => shared.stats.applied.fetch_add(1, Relaxed),
            Change::Delete(_) => shared.stats.deleted.fetch_add(1, Relaxed),
            _ => 0,
        };
        let visible = !matches!(change, Change::Restart | Change::Put(_));
        let synced = matches!(change, Change::Synced);
        if let Ok(mut index) = shared.index.write() {
            section(&mut index).apply(change);
        }
        if bumps_generation && visible {
            shared.generation.fetch_add(1, Relaxed);
        }
        if synced {
            release_freed_memory();
        }
    }
}

/// Hands the memory a list was parsed in back to the system. A list of 10 000 pods is parsed
/// into tens of megabytes of JSON values that are dropped as soon as the trimmed facts are
/// taken; glibc's allocator would keep those pages, and the agent's RSS with them.
fn release_freed_memory() {
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn is_forbidden(e: &watcher::Error) -> bool {
    matches!(
        e,
        watcher::Error::InitialListFailed(kube::Error::Api(s))
            | watcher::Error::WatchStartFailed(kube::Error::Api(s))
            | watcher::Error::WatchFailed(kube::Error::Api(s)) if s.is_forbidden()
    )
}

/// A watch error in one line, with the hint a user needs for the common ones.
fn describe(e: &watcher::Error) -> String {
    let api_status = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s),
        _ => None,
    };
    match api_status {
        Some(s) if s.is_forbidden() => format!(
            "forbidden ({}); the service account needs list and watch on it (see charts/netsonde)",
            s.message
        ),
        Some(s) => format!(
            "the API server answered {} {}: {}",
            s.code, s.reason, s.message
        ),
        None => crate::one_line(e),
    }
}
