//! Who is at the other end, as attributes: the Kubernetes pod, Service, node or "outside"
//! behind a remote address (`netsonde.peer.*`), and the Service's DNS name as a client's
//! `server.address`. Together with the resource (this end), every request and connection
//! metric names both ends' workloads: a service graph needs nothing but the metrics.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, atomic::AtomicU64},
    time::{Duration, Instant},
};

use crate::{
    attribution::kube::{
        NamingRules, Peer, PodIdentity, SharedIndex,
        index::{service_dns_name, skywalking_service},
    },
    telemetry::{otlp::Attrs, wire::AttrSink},
};

/// What the telemetry stage reads from the Kubernetes watches.
#[derive(Debug, Clone)]
pub struct KubeView {
    pub index: SharedIndex,
    /// Moves whenever the index changes.
    pub generation: Arc<AtomicU64>,
    pub rules: NamingRules,
    pub cluster_domain: String,
    /// `k8s.cluster.name`, when configured.
    pub cluster_name: Option<String>,
}

/// A peer's identity, ready to become attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// `pod`, `service`, `node` or `outside`.
    pub kind: &'static str,
    pub service_name: Option<Arc<str>>,
    pub service_namespace: Option<Arc<str>>,
    pub namespace: Option<Arc<str>>,
    pub pod: Option<Arc<str>>,
    /// The topmost controller: (`deployment`, `web`).
    pub workload: Option<(&'static str, Arc<str>)>,
    /// The Kubernetes Service (a ClusterIP peer, or the Service listing a pod peer).
    pub k8s_service: Option<Arc<str>>,
    pub node: Option<Arc<str>>,
    /// `<service>.<namespace>.svc.<domain>` when the peer is a Service's ClusterIP.
    pub service_dns: Option<Arc<str>>,
    /// The peer's service as SkyWalking names it (`skywalking_service`).
    pub skywalking: Option<Arc<str>>,
}

impl PeerInfo {
    /// `cluster` is `k8s.cluster.name`, when configured: the peer is in the same cluster.
    pub fn from_peer(peer: &Peer, cluster_domain: &str, cluster: Option<&str>) -> PeerInfo {
        let mut info = PeerInfo {
            kind: peer.kind(),
            ..Default::default()
        };
        let with_identity = |info: &mut PeerInfo, id: &PodIdentity| {
            info.service_name = Some(id.service.name.clone());
            info.service_namespace = Some(id.service.namespace.clone());
            info.namespace = Some(id.pod.namespace.clone());
            info.workload = id.workload.top().map(|(k, n)| (k, n.clone()));
        };
        match peer {
            Peer::Pod { identity, service } => {
                with_identity(&mut info, identity);
                info.pod = Some(identity.pod.name.clone());
                info.k8s_service = service.clone();
            }
            Peer::Service { service, backend } => {
                match backend {
                    Some(id) => with_identity(&mut info, id),
                    None => {
                        info.service_name = Some(service.name.clone());
                        info.service_namespace = Some(service.namespace.clone());
                    }
                }
                info.namespace = Some(service.namespace.clone());
                info.k8s_service = Some(service.name.clone());
                info.service_dns = Some(Arc::from(service_dns_name(service, cluster_domain)));
            }
            Peer::Node(node) => info.node = Some(node.name.clone()),
            Peer::Outside => {}
        }
        if let (Some(name), Some(namespace)) = (&info.service_name, &info.service_namespace) {
            info.skywalking = Some(Arc::from(skywalking_service(name, namespace, cluster)));
        }
        info
    }

    /// Span and access-log attributes (the pod name included).
    pub fn span_attributes(&self, a: &mut impl AttrSink) {
        self.common(|k, v| a.str(k, v));
        if let Some(pod) = &self.pod {
            a.str("netsonde.peer.k8s.pod.name", pod);
        }
    }

    /// Metric attributes: the peer's workload, never its pod (pods come and go; series
    /// would pile up).
    pub fn metric_attributes(&self, a: &mut Attrs) {
        self.common(|k, v| a.push((k, v.to_string().into())));
    }

    fn common(&self, mut put: impl FnMut(&'static str, &str)) {
        put("netsonde.peer.kind", self.kind);
        if let Some(v) = &self.service_name {
            put("netsonde.peer.service.name", v);
        }
        if let Some(v) = &self.service_namespace {
            put("netsonde.peer.service.namespace", v);
        }
        if let Some(v) = &self.skywalking {
            put("netsonde.peer.skywalking.service", v);
        }
        if let Some(v) = &self.namespace {
            put("netsonde.peer.k8s.namespace.name", v);
        }
        if let Some((kind, name)) = &self.workload {
            put("netsonde.peer.k8s.workload.kind", kind);
            put("netsonde.peer.k8s.workload.name", name);
        }
        if let Some(v) = &self.k8s_service {
            put("netsonde.peer.k8s.service.name", v);
        }
        if let Some(v) = &self.node {
            put("netsonde.peer.k8s.node.name", v);
        }
    }
}

/// How long a peer's identity is reused before the index is asked again: pods behind an IP
/// change rarely, and asking per exchange would take the index's lock per exchange.
const PEER_TTL: Duration = Duration::from_secs(5);
/// Most remote addresses remembered; beyond that the cache starts over.
const MAX_PEERS: usize = 65_536;

/// Peers by remote address, asked of the index at most once per [`PEER_TTL`].
#[derive(Debug)]
pub struct PeerCache {
    view: KubeView,
    entries: HashMap<IpAddr, (Instant, Option<Arc<PeerInfo>>)>,
}

impl PeerCache {
    pub fn new(view: KubeView) -> Self {
        PeerCache {
            view,
            entries: HashMap::new(),
        }
    }

    pub fn view(&self) -> &KubeView {
        &self.view
    }

    /// The peer at `ip`; none for loopback (the pod itself) or before the watches listed.
    pub fn lookup(&mut self, ip: IpAddr, now: Instant) -> Option<Arc<PeerInfo>> {
        if ip.is_loopback() || ip.is_unspecified() {
            return None;
        }
        if let Some((at, info)) = self.entries.get(&ip)
            && now.duration_since(*at) < PEER_TTL
        {
            return info.clone();
        }
        if self.entries.len() >= MAX_PEERS {
            self.entries.clear();
        }
        let info = self.view.index.read().ok().and_then(|index| {
            let peer = index.peer(ip, self.view.rules)?;
            Some(Arc::new(PeerInfo::from_peer(
                &peer,
                &self.view.cluster_domain,
                self.view.cluster_name.as_deref(),
            )))
        });
        self.entries.insert(ip, (now, info.clone()));
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_of_each_kind_of_peer() {
        let index = crate::attribution::kube::tests::fixture_index();
        let rules = NamingRules::default();
        let named = |ip: &str, cluster: Option<&str>| {
            let peer = index.peer(ip.parse().unwrap(), rules).unwrap();
            let mut attrs: Attrs = Vec::new();
            PeerInfo::from_peer(&peer, "cluster.local", cluster).metric_attributes(&mut attrs);
            attrs
                .into_iter()
                .map(|(k, v)| match v {
                    crate::telemetry::otlp::AttrValue::Str(s) => format!("{k}={s}"),
                    other => format!("{k}={other:?}"),
                })
                .collect::<Vec<_>>()
        };
        let info = |ip: &str| named(ip, None);
        assert_eq!(
            info("10.96.12.34"),
            [
                "netsonde.peer.kind=service",
                "netsonde.peer.service.name=web",
                "netsonde.peer.service.namespace=shop",
                "netsonde.peer.skywalking.service=web.shop",
                "netsonde.peer.k8s.namespace.name=shop",
                "netsonde.peer.k8s.workload.kind=deployment",
                "netsonde.peer.k8s.workload.name=web",
                "netsonde.peer.k8s.service.name=web",
            ]
        );
        assert_eq!(
            info("10.244.2.7"),
            [
                "netsonde.peer.kind=pod",
                "netsonde.peer.service.name=orders-db",
                "netsonde.peer.service.namespace=shop",
                "netsonde.peer.skywalking.service=orders-db.shop",
                "netsonde.peer.k8s.namespace.name=shop",
                "netsonde.peer.k8s.workload.kind=statefulset",
                "netsonde.peer.k8s.workload.name=db",
                "netsonde.peer.k8s.service.name=db",
            ]
        );
        assert_eq!(
            info("10.0.0.11"),
            [
                "netsonde.peer.kind=node",
                "netsonde.peer.k8s.node.name=node-1"
            ]
        );
        assert_eq!(info("192.0.2.1"), ["netsonde.peer.kind=outside"]);
        // A named cluster comes first in SkyWalking's form, as OAP's Kubernetes layer has it.
        assert!(
            named("10.244.2.7", Some("demo"))
                .contains(&"netsonde.peer.skywalking.service=demo::orders-db.shop".to_string())
        );
    }
}
