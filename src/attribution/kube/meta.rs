//! The few facts netsonde keeps of each Kubernetes object: API objects are 10–30 KB each, these
//! are a few hundred bytes. Conversion is where malformed objects are found: an object without
//! a name or UID is refused (and counted by the caller), never half-stored.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use k8s_openapi::{
    api::{
        core::v1::{Node, Pod, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};

/// Why an object was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("{kind} without {field}")]
    Missing {
        kind: &'static str,
        field: &'static str,
    },
}

/// Annotations and labels that name a pod's service (the OpenTelemetry Kubernetes attribute
/// conventions, as the OpenTelemetry Operator applies them).
pub mod keys {
    pub const SERVICE_NAME_ANNOTATION: &str = "resource.opentelemetry.io/service.name";
    pub const SERVICE_NAMESPACE_ANNOTATION: &str = "resource.opentelemetry.io/service.namespace";
    pub const SERVICE_VERSION_ANNOTATION: &str = "resource.opentelemetry.io/service.version";
    pub const APP_INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
    pub const APP_NAME_LABEL: &str = "app.kubernetes.io/name";
    pub const APP_VERSION_LABEL: &str = "app.kubernetes.io/version";
    /// The label an EndpointSlice names its Service by.
    pub const SLICE_SERVICE_LABEL: &str = "kubernetes.io/service-name";
}

/// The controller that owns an object (`ownerReferences[controller=true]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub kind: Arc<str>,
    pub name: Arc<str>,
}

/// One container of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerMeta {
    pub name: Arc<str>,
    /// The runtime's id without its scheme (`containerd://`): 64 hex digits, as in cgroup paths.
    pub id: Option<Arc<str>>,
    /// The image tag (`nginx:1.27` → `1.27`), the last resort for `service.version`.
    pub image_tag: Option<Arc<str>>,
}

/// What the service-naming rules read from a pod's annotations and labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceHints {
    pub name_annotation: Option<Arc<str>>,
    pub namespace_annotation: Option<Arc<str>>,
    pub version_annotation: Option<Arc<str>>,
    pub instance_label: Option<Arc<str>>,
    pub name_label: Option<Arc<str>>,
    pub version_label: Option<Arc<str>>,
}

/// A pod, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMeta {
    pub uid: Arc<str>,
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub node: Option<Arc<str>>,
    /// `status.podIPs` (or `podIP`); a host-network pod's are its node's and are not kept.
    pub ips: Vec<IpAddr>,
    pub host_network: bool,
    /// Neither finished (`Succeeded`/`Failed`) nor being deleted: a live pod owns its IPs, a
    /// finished one yields them to whichever pod gets them next.
    pub live: bool,
    pub owner: Option<Owner>,
    pub hints: ServiceHints,
    /// Labels, for label-selector filters; only kept for this node's pods.
    pub labels: BTreeMap<String, String>,
    /// Containers, init containers included; only kept for this node's pods.
    pub containers: Vec<ContainerMeta>,
}

/// How much of a pod to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodDetail {
    /// Everything above: this node's pods, which netsonde attributes processes to.
    Full,
    /// No labels and containers: the cluster's pods, which are only ever peers.
    Peer,
}

impl PodMeta {
    pub fn from_pod(pod: &Pod, detail: PodDetail) -> Result<PodMeta, MetaError> {
        let (namespace, name, uid) = identity("Pod", &pod.metadata)?;
        let uid = uid.ok_or(MetaError::Missing {
            kind: "Pod",
            field: "metadata.uid",
        })?;
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
        let mut ips: Vec<IpAddr> = Vec::new();
        if !host_network && let Some(status) = status {
            let listed = status.pod_ips.iter().flatten().map(|p| p.ip.as_str());
            for ip in listed.chain(status.pod_ip.as_deref()) {
                if let Ok(ip) = ip.parse::<IpAddr>()
                    && !ips.contains(&ip)
                {
                    ips.push(ip);
                }
            }
        }
        let phase = status.and_then(|s| s.phase.as_deref());
        let finished = matches!(phase, Some("Succeeded" | "Failed"));
        let live = !finished && pod.metadata.deletion_timestamp.is_none();
        let annotations = pod.metadata.annotations.as_ref();
        let labels = pod.metadata.labels.as_ref();
        let get = |map: Option<&BTreeMap<String, String>>, key: &str| {
            map.and_then(|m| m.get(key))
                .filter(|v| !v.is_empty())
                .map(|v| Arc::from(v.as_str()))
        };
        let hints = ServiceHints {
            name_annotation: get(annotations, keys::SERVICE_NAME_ANNOTATION),
            namespace_annotation: get(annotations, keys::SERVICE_NAMESPACE_ANNOTATION),
            version_annotation: get(annotations, keys::SERVICE_VERSION_ANNOTATION),
            instance_label: get(labels, keys::APP_INSTANCE_LABEL),
            name_label: get(labels, keys::APP_NAME_LABEL),
            version_label: get(labels, keys::APP_VERSION_LABEL),
        };
        let (labels, containers) = match detail {
            PodDetail::Peer => (BTreeMap::new(), Vec::new()),
            PodDetail::Full => (labels.cloned().unwrap_or_default(), containers_of(pod)),
        };
        Ok(PodMeta {
            uid,
            namespace,
            name,
            node: spec
                .and_then(|s| s.node_name.as_deref())
                .filter(|n| !n.is_empty())
                .map(Arc::from),
            ips,
            host_network,
            live,
            owner: controller(pod.metadata.owner_references.as_deref()),
            hints,
            labels,
            containers,
        })
    }

    /// The container with this runtime id.
    pub fn container(&self, id: &str) -> Option<&ContainerMeta> {
        self.containers.iter().find(|c| c.id.as_deref() == Some(id))
    }
}

/// Containers from the spec (names, images) joined with their statuses (ids).
fn containers_of(pod: &Pod) -> Vec<ContainerMeta> {
    let mut out = Vec::new();
    let spec_images: Vec<(&str, Option<&str>)> = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .map(|c| (c.name.as_str(), c.image.as_deref()))
        .collect();
    let statuses = pod.status.iter().flat_map(|s| {
        s.init_container_statuses
            .iter()
            .flatten()
            .chain(s.container_statuses.iter().flatten())
    });
    for status in statuses {
        let image = spec_images
            .iter()
            .find(|(n, _)| *n == status.name)
            .and_then(|(_, i)| *i)
            .unwrap_or(status.image.as_str());
        out.push(ContainerMeta {
            name: Arc::from(status.name.as_str()),
            id: status.container_id.as_deref().and_then(strip_scheme),
            image_tag: image_tag(image).map(Arc::from),
        });
    }
    // Containers not started yet have no status: keep their names all the same.
    for (name, image) in spec_images {
        if !out.iter().any(|c| &*c.name == name) {
            out.push(ContainerMeta {
                name: Arc::from(name),
                id: None,
                image_tag: image.and_then(image_tag).map(Arc::from),
            });
        }
    }
    out
}

/// `containerd://abc…` → `abc…`.
fn strip_scheme(id: &str) -> Option<Arc<str>> {
    let bare = id.split_once("://").map_or(id, |(_, rest)| rest);
    (!bare.is_empty()).then(|| Arc::from(bare))
}

/// The tag of an image reference: `registry:5000/app:1.2@sha256:…` → `1.2`. A digest alone
/// is no version.
fn image_tag(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next()?;
    let last = without_digest.rsplit('/').next()?;
    let (_, tag) = last.split_once(':')?;
    (!tag.is_empty()).then_some(tag)
}

fn controller(owners: Option<&[OwnerReference]>) -> Option<Owner> {
    owners?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| Owner {
            kind: Arc::from(o.kind.as_str()),
            name: Arc::from(o.name.as_str()),
        })
}

type Identity = (Arc<str>, Arc<str>, Option<Arc<str>>);

/// (namespace, name, uid) of an object; cluster-scoped objects have an empty namespace.
fn identity(kind: &'static str, meta: &ObjectMeta) -> Result<Identity, MetaError> {
    let name = meta
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or(MetaError::Missing {
            kind,
            field: "metadata.name",
        })?;
    Ok((
        Arc::from(meta.namespace.as_deref().unwrap_or("")),
        Arc::from(name),
        meta.uid.as_deref().map(Arc::from),
    ))
}

/// A Service, trimmed: what a client connecting to its ClusterIP talked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceMeta {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    /// `spec.clusterIPs`; empty for headless Services (`None`) and ExternalName ones.
    pub cluster_ips: Vec<IpAddr>,
}

impl ServiceMeta {
    pub fn from_service(service: &Service) -> Result<ServiceMeta, MetaError> {
        let (namespace, name, _) = identity("Service", &service.metadata)?;
        let spec = service.spec.as_ref();
        let listed = spec
            .into_iter()
            .flat_map(|s| s.cluster_ips.iter().flatten());
        let mut cluster_ips = Vec::new();
        for ip in listed.chain(spec.and_then(|s| s.cluster_ip.as_ref())) {
            // "None" marks a headless Service.
            if let Ok(ip) = ip.parse::<IpAddr>()
                && !cluster_ips.contains(&ip)
            {
                cluster_ips.push(ip);
            }
        }
        Ok(ServiceMeta {
            namespace,
            name,
            cluster_ips,
        })
    }
}

/// An EndpointSlice, trimmed: which Service the addresses behind it serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceMeta {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    /// The Service (label `kubernetes.io/service-name`); slices without it are kept empty.
    pub service: Option<Arc<str>>,
    pub addresses: Vec<IpAddr>,
}

impl SliceMeta {
    pub fn from_slice(slice: &EndpointSlice) -> Result<SliceMeta, MetaError> {
        let (namespace, name, _) = identity("EndpointSlice", &slice.metadata)?;
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(keys::SLICE_SERVICE_LABEL))
            .map(|s| Arc::from(s.as_str()));
        let addresses = slice
            .endpoints
            .iter()
            .flat_map(|e| &e.addresses)
            .filter_map(|a| a.parse().ok())
            .collect();
        Ok(SliceMeta {
            namespace,
            name,
            service,
            addresses,
        })
    }
}

/// A node, trimmed: its name and addresses (host-network pods and kubelets talk from these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMeta {
    pub name: Arc<str>,
    pub addresses: Vec<IpAddr>,
}

impl NodeMeta {
    pub fn from_node(node: &Node) -> Result<NodeMeta, MetaError> {
        let (_, name, _) = identity("Node", &node.metadata)?;
        let addresses = node
            .status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        Ok(NodeMeta { name, addresses })
    }
}

/// An owner link of a ReplicaSet or Job (to its Deployment or CronJob): only the object's
/// metadata is watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerLink {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub owner: Option<Owner>,
}

impl OwnerLink {
    pub fn from_meta(kind: &'static str, meta: &ObjectMeta) -> Result<OwnerLink, MetaError> {
        let (namespace, name, _) = identity(kind, meta)?;
        Ok(OwnerLink {
            namespace,
            name,
            owner: controller(meta.owner_references.as_deref()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tags() {
        assert_eq!(image_tag("nginx:1.27"), Some("1.27"));
        assert_eq!(image_tag("registry:5000/team/app:2.0.1"), Some("2.0.1"));
        assert_eq!(image_tag("registry:5000/team/app"), None);
        assert_eq!(image_tag("app@sha256:abcd"), None);
        assert_eq!(image_tag("app:3@sha256:abcd"), Some("3"));
    }

    #[test]
    fn container_ids_lose_their_scheme() {
        assert_eq!(strip_scheme("containerd://ab12").as_deref(), Some("ab12"));
        assert_eq!(strip_scheme("cri-o://ab12").as_deref(), Some("ab12"));
        assert_eq!(strip_scheme("ab12").as_deref(), Some("ab12"));
        assert_eq!(strip_scheme("docker://"), None);
    }
}
