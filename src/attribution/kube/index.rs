//! Everything the watches know, and the questions asked of it: which pod and container a
//! process runs in, what workload and service that pod is, and who is at a remote address.

use std::{net::IpAddr, sync::Arc};

use super::{
    meta::{ContainerMeta, NodeMeta, OwnerLink, PodMeta, ServiceMeta, SliceMeta},
    section::{Entry, Section},
};

/// The DNS domain of the cluster's Services (`<svc>.<ns>.svc.cluster.local`).
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

impl Entry for PodMeta {
    fn key(&self) -> Arc<str> {
        self.uid.clone()
    }
    fn addresses(&self) -> &[IpAddr] {
        &self.ips
    }
    fn holds_addresses(&self) -> bool {
        self.live
    }
}

fn namespaced_key(namespace: &str, name: &str) -> Arc<str> {
    Arc::from(format!("{namespace}/{name}"))
}

impl Entry for ServiceMeta {
    fn key(&self) -> Arc<str> {
        namespaced_key(&self.namespace, &self.name)
    }
    fn addresses(&self) -> &[IpAddr] {
        &self.cluster_ips
    }
}

impl Entry for SliceMeta {
    fn key(&self) -> Arc<str> {
        namespaced_key(&self.namespace, &self.name)
    }
    fn addresses(&self) -> &[IpAddr] {
        &self.addresses
    }
}

impl Entry for NodeMeta {
    fn key(&self) -> Arc<str> {
        self.name.clone()
    }
    fn addresses(&self) -> &[IpAddr] {
        &self.addresses
    }
}

impl Entry for OwnerLink {
    fn key(&self) -> Arc<str> {
        namespaced_key(&self.namespace, &self.name)
    }
}

/// Each watch's objects. One owner (the watch task) writes each section.
#[derive(Debug, Default)]
pub struct ClusterIndex {
    /// This node's pods, with labels and containers.
    pub local_pods: Section<PodMeta>,
    /// Every pod of the cluster, trimmed (peers).
    pub pods: Section<PodMeta>,
    pub services: Section<ServiceMeta>,
    pub slices: Section<SliceMeta>,
    pub nodes: Section<NodeMeta>,
    pub replicasets: Section<OwnerLink>,
    pub jobs: Section<OwnerLink>,
}

/// The workload controllers above a pod (`k8s.<kind>.name`); what is not known is left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    pub replicaset: Option<Arc<str>>,
    pub deployment: Option<Arc<str>>,
    pub statefulset: Option<Arc<str>>,
    pub daemonset: Option<Arc<str>>,
    pub job: Option<Arc<str>>,
    pub cronjob: Option<Arc<str>>,
}

impl Workload {
    /// The topmost controller: (kind as in `k8s.<kind>.name`, name).
    pub fn top(&self) -> Option<(&'static str, &Arc<str>)> {
        [
            ("deployment", &self.deployment),
            ("statefulset", &self.statefulset),
            ("daemonset", &self.daemonset),
            ("cronjob", &self.cronjob),
            ("job", &self.job),
            ("replicaset", &self.replicaset),
        ]
        .into_iter()
        .find_map(|(kind, name)| name.as_ref().map(|n| (kind, n)))
    }
}

/// `service.*` of a pod's container, by the OpenTelemetry Kubernetes attribute conventions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceIdentity {
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub version: Option<Arc<str>>,
}

impl ServiceIdentity {
    /// The service as SkyWalking's Kubernetes layer names one, `<service>.<namespace>`, after
    /// `<cluster>::` when the cluster is named. Both ends of a connection name a workload
    /// this way, so OAP joins them into one service.
    pub fn skywalking(&self, cluster: Option<&str>) -> String {
        skywalking_service(&self.name, &self.namespace, cluster)
    }
}

/// SkyWalking's name of service `name` in `namespace`: `[<cluster>::]<name>.<namespace>`.
pub fn skywalking_service(name: &str, namespace: &str, cluster: Option<&str>) -> String {
    match cluster {
        Some(c) => format!("{c}::{name}.{namespace}"),
        None => format!("{name}.{namespace}"),
    }
}

/// A pod seen from the index: the pod, its workload and its service.
#[derive(Debug, Clone)]
pub struct PodIdentity {
    pub pod: Arc<PodMeta>,
    pub workload: Workload,
    pub service: ServiceIdentity,
    /// The container, when a process's was matched.
    pub container: Option<ContainerMeta>,
}

/// Who is at a remote address.
#[derive(Debug, Clone)]
pub enum Peer {
    /// A pod (its own IP), and the Service whose endpoints list it, if any.
    Pod {
        identity: Box<PodIdentity>,
        service: Option<Arc<str>>,
    },
    /// A Service's ClusterIP, and the workload behind it when all its endpoints are one
    /// service (the usual case; kube-proxy picks the pod after the connect).
    Service {
        service: Arc<ServiceMeta>,
        backend: Option<Box<PodIdentity>>,
    },
    /// A node's address (the kubelet, host-network pods, NodePorts).
    Node(Arc<NodeMeta>),
    /// None of the cluster's addresses.
    Outside,
}

impl Peer {
    /// `netsonde.peer.kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Peer::Pod { .. } => "pod",
            Peer::Service { .. } => "service",
            Peer::Node(_) => "node",
            Peer::Outside => "outside",
        }
    }
}

/// How the service naming rules read a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamingRules {
    /// Use the `app.kubernetes.io/{instance,name,version}` labels (after the annotations).
    pub use_labels: bool,
}

impl Default for NamingRules {
    fn default() -> Self {
        NamingRules { use_labels: true }
    }
}

impl ClusterIndex {
    /// The pod on this node running the container `container_id`, else the pod `pod_uid`
    /// (a process in the pod's sandbox, or a container not yet in the pod's status).
    pub fn local_pod(
        &self,
        container_id: &str,
        pod_uid: Option<&str>,
        rules: NamingRules,
    ) -> Option<PodIdentity> {
        let (pod, container) = self.local_pod_meta(container_id, pod_uid)?;
        Some(self.identity(pod, container.cloned(), rules))
    }

    /// The pod (and container) of [`Self::local_pod`], without working out its identity.
    pub fn local_pod_meta(
        &self,
        container_id: &str,
        pod_uid: Option<&str>,
    ) -> Option<(&Arc<PodMeta>, Option<&ContainerMeta>)> {
        self.local_pods
            .iter()
            .find_map(|p| p.container(container_id).map(|c| (p, Some(c))))
            .or_else(|| pod_uid.and_then(|uid| self.local_pods.get(uid).map(|p| (p, None))))
    }

    /// A pod's workload and service.
    pub fn identity(
        &self,
        pod: &Arc<PodMeta>,
        container: Option<ContainerMeta>,
        rules: NamingRules,
    ) -> PodIdentity {
        let workload = self.workload(pod);
        let service = service_identity(pod, &workload, container.as_ref(), rules);
        PodIdentity {
            pod: pod.clone(),
            workload,
            service,
            container,
        }
    }

    /// The controllers above a pod: its owner, and a ReplicaSet's Deployment or a Job's
    /// CronJob from the owner links watched. An unknown link is left out, not guessed.
    pub fn workload(&self, pod: &PodMeta) -> Workload {
        let mut w = Workload::default();
        let Some(owner) = &pod.owner else {
            return w;
        };
        let up = |section: &Section<OwnerLink>, kind: &str| {
            section
                .get(&format!("{}/{}", pod.namespace, owner.name))
                .and_then(|link| link.owner.as_ref())
                .filter(|o| &*o.kind == kind)
                .map(|o| o.name.clone())
        };
        let name = Some(owner.name.clone());
        match &*owner.kind {
            "ReplicaSet" => {
                w.replicaset = name;
                w.deployment = up(&self.replicasets, "Deployment");
            }
            "Job" => {
                w.job = name;
                w.cronjob = up(&self.jobs, "CronJob");
            }
            "StatefulSet" => w.statefulset = name,
            "DaemonSet" => w.daemonset = name,
            _ => {}
        }
        w
    }

    /// Who is at `ip`: a Service's ClusterIP, a pod, a node, or outside the cluster. `None`
    /// until the pods', Services' and nodes' watches have all listed: an address cannot be
    /// called outside before each kind that could claim it is known.
    pub fn peer(&self, ip: IpAddr, rules: NamingRules) -> Option<Peer> {
        if let Some(service) = self.services.at(ip) {
            return Some(Peer::Service {
                service: service.clone(),
                backend: self.backend(service, rules).map(Box::new),
            });
        }
        if let Some(pod) = self.pods.at(ip).or_else(|| self.local_pods.at(ip)) {
            let service = self
                .slices
                .at(ip)
                .filter(|s| s.namespace == pod.namespace)
                .and_then(|s| s.service.clone());
            return Some(Peer::Pod {
                identity: Box::new(self.identity(pod, None, rules)),
                service,
            });
        }
        if let Some(node) = self.nodes.at(ip) {
            return Some(Peer::Node(node.clone()));
        }
        let listed = self.pods.synced() && self.services.synced() && self.nodes.synced();
        listed.then_some(Peer::Outside)
    }
}

impl ClusterIndex {
    /// The one service behind a Kubernetes Service: its endpoints' pods, when they all have
    /// the same `service.name`, namespace and workload. None when they differ or are unknown.
    pub fn backend(&self, service: &ServiceMeta, rules: NamingRules) -> Option<PodIdentity> {
        let mut found: Option<PodIdentity> = None;
        let slices = self.slices.iter().filter(|s| {
            s.namespace == service.namespace && s.service.as_deref() == Some(&*service.name)
        });
        for ip in slices.flat_map(|s| s.addresses.iter()) {
            let Some(pod) = self.pods.at(*ip).or_else(|| self.local_pods.at(*ip)) else {
                continue;
            };
            let identity = self.identity(pod, None, rules);
            match &found {
                None => found = Some(identity),
                Some(f)
                    if f.service.name == identity.service.name
                        && f.service.namespace == identity.service.namespace
                        && f.workload.top() == identity.workload.top() => {}
                Some(_) => return None,
            }
        }
        found
    }
}

/// `service.name`, `service.namespace` and `service.version` by the OpenTelemetry Kubernetes
/// attribute conventions (as the OpenTelemetry Operator sets them):
/// - name: annotation `resource.opentelemetry.io/service.name`, then the labels
///   `app.kubernetes.io/instance` and `app.kubernetes.io/name`, then the Deployment,
///   ReplicaSet, StatefulSet, DaemonSet, CronJob or Job, then the pod (which always has one);
/// - namespace: annotation `resource.opentelemetry.io/service.namespace`, then the pod's
///   namespace;
/// - version: annotation, then label `app.kubernetes.io/version`, then the image tag.
pub fn service_identity(
    pod: &PodMeta,
    workload: &Workload,
    container: Option<&ContainerMeta>,
    rules: NamingRules,
) -> ServiceIdentity {
    let h = &pod.hints;
    let labels = |l: &Option<Arc<str>>| if rules.use_labels { l.clone() } else { None };
    let name = h
        .name_annotation
        .clone()
        .or_else(|| labels(&h.instance_label))
        .or_else(|| labels(&h.name_label))
        .or_else(|| workload.deployment.clone())
        .or_else(|| workload.replicaset.clone())
        .or_else(|| workload.statefulset.clone())
        .or_else(|| workload.daemonset.clone())
        .or_else(|| workload.cronjob.clone())
        .or_else(|| workload.job.clone())
        .unwrap_or_else(|| pod.name.clone());
    let version = h
        .version_annotation
        .clone()
        .or_else(|| labels(&h.version_label))
        .or_else(|| container.and_then(|c| c.image_tag.clone()));
    ServiceIdentity {
        name,
        namespace: h
            .namespace_annotation
            .clone()
            .unwrap_or_else(|| pod.namespace.clone()),
        version,
    }
}

/// A Service's DNS name, `<name>.<namespace>.svc.<domain>`.
pub fn service_dns_name(service: &ServiceMeta, domain: &str) -> String {
    format!("{}.{}.svc.{domain}", service.name, service.namespace)
}
