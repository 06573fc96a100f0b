//! The index answering from the recorded objects in tests/fixtures/kube (API-server-shaped
//! lists; see the README there: no API server runs on the test machines).

use std::{net::IpAddr, sync::Arc};

use k8s_openapi::{
    List,
    api::{
        apps::v1::ReplicaSet,
        batch::v1::Job,
        core::v1::{Node, Pod, Service},
        discovery::v1::EndpointSlice,
    },
};

use super::{
    index::{ClusterIndex, NamingRules, Peer, service_dns_name},
    meta::{NodeMeta, OwnerLink, PodDetail, PodMeta, ServiceMeta, SliceMeta},
    section::{Change, Entry, Section},
};

fn list<K: serde::de::DeserializeOwned + k8s_openapi::ListableResource>(json: &str) -> Vec<K> {
    serde_json::from_str::<List<K>>(json)
        .expect("a valid list")
        .items
}

fn load<T: Entry>(section: &mut Section<T>, items: impl IntoIterator<Item = T>) {
    section.apply(Change::Restart);
    for item in items {
        section.apply(Change::Put(item));
    }
    section.apply(Change::Synced);
}

pub(crate) fn fixture_index() -> ClusterIndex {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kube/");
    let read = |f: &str| std::fs::read_to_string(format!("{dir}{f}")).expect(f);
    let pods: Vec<Pod> = list(&read("pods.json"));
    let mut index = ClusterIndex::default();
    let on_node_1 = pods
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("node-1"));
    load(
        &mut index.local_pods,
        on_node_1.map(|p| PodMeta::from_pod(p, PodDetail::Full).unwrap()),
    );
    load(
        &mut index.pods,
        pods.iter()
            .map(|p| PodMeta::from_pod(p, PodDetail::Peer).unwrap()),
    );
    load(
        &mut index.services,
        list::<Service>(&read("services.json"))
            .iter()
            .map(|s| ServiceMeta::from_service(s).unwrap()),
    );
    load(
        &mut index.slices,
        list::<EndpointSlice>(&read("endpointslices.json"))
            .iter()
            .map(|s| SliceMeta::from_slice(s).unwrap()),
    );
    load(
        &mut index.nodes,
        list::<Node>(&read("nodes.json"))
            .iter()
            .map(|n| NodeMeta::from_node(n).unwrap()),
    );
    load(
        &mut index.replicasets,
        list::<ReplicaSet>(&read("replicasets.json"))
            .iter()
            .map(|r| OwnerLink::from_meta("ReplicaSet", &r.metadata).unwrap()),
    );
    load(
        &mut index.jobs,
        list::<Job>(&read("jobs.json"))
            .iter()
            .map(|j| OwnerLink::from_meta("Job", &j.metadata).unwrap()),
    );
    index
}

/// The container id the fixture generator gives `namespace` + `pod` + `container`.
fn container_id(index: &ClusterIndex, pod: &str, container: &str) -> Arc<str> {
    index
        .local_pods
        .iter()
        .find(|p| &*p.name == pod)
        .and_then(|p| p.containers.iter().find(|c| &*c.name == container))
        .and_then(|c| c.id.clone())
        .expect("fixture container")
}

const RULES: NamingRules = NamingRules { use_labels: true };

#[test]
fn a_deployment_pod_gets_its_workload_and_service() {
    let index = fixture_index();
    let id = container_id(&index, "web-7d4b9c6f5d-x2x9k", "web");
    assert_eq!(id.len(), 64, "runtime scheme stripped");
    let web = index
        .local_pod(&id, None, RULES)
        .expect("found by container id");
    assert_eq!(&*web.pod.namespace, "shop");
    assert_eq!(web.pod.uid.len(), 36);
    assert_eq!(web.workload.replicaset.as_deref(), Some("web-7d4b9c6f5d"));
    assert_eq!(web.workload.deployment.as_deref(), Some("web"));
    assert_eq!(
        web.workload.top().map(|(k, n)| (k, &**n)),
        Some(("deployment", "web"))
    );
    assert_eq!(&*web.service.name, "web", "label app.kubernetes.io/name");
    assert_eq!(&*web.service.namespace, "shop");
    assert_eq!(web.service.version.as_deref(), Some("1.27.3"), "image tag");
    assert_eq!(web.service.skywalking(None), "web.shop");
    assert_eq!(web.service.skywalking(Some("demo")), "demo::web.shop");
    assert_eq!(web.container.as_ref().map(|c| &*c.name), Some("web"));
    // The other container of the same pod is the same service, another container.
    let metrics = container_id(&index, "web-7d4b9c6f5d-x2x9k", "metrics");
    let side = index.local_pod(&metrics, None, RULES).unwrap();
    assert_eq!(side.container.as_ref().map(|c| &*c.name), Some("metrics"));
    assert_eq!(side.service.version.as_deref(), Some("1.4"));
    // Known by pod UID only (the sandbox, or a container not in the status yet).
    let by_uid = index
        .local_pod("f".repeat(64).as_str(), Some(&web.pod.uid), RULES)
        .unwrap();
    assert_eq!(by_uid.pod.name, web.pod.name);
    assert!(by_uid.container.is_none());
    assert!(index.local_pod(&"f".repeat(64), None, RULES).is_none());
}

#[test]
fn service_names_follow_the_opentelemetry_rules() {
    let index = fixture_index();
    let checkout = index
        .local_pod(
            &container_id(&index, "checkout-5f6d8b7c9-k8s2d", "checkout"),
            None,
            RULES,
        )
        .unwrap();
    assert_eq!(
        &*checkout.service.name, "checkout-eu",
        "instance label before name label"
    );
    assert_eq!(
        checkout.service.version.as_deref(),
        Some("2.3.0"),
        "version label"
    );
    let no_labels = index
        .local_pod(
            &container_id(&index, "checkout-5f6d8b7c9-k8s2d", "checkout"),
            None,
            NamingRules { use_labels: false },
        )
        .unwrap();
    assert_eq!(&*no_labels.service.name, "checkout", "the Deployment");
    assert_eq!(
        no_labels.service.version.as_deref(),
        Some("2.3.0"),
        "image tag"
    );

    let report = index
        .local_pod(
            &container_id(&index, "report-29400000-q7m2c", "report"),
            None,
            RULES,
        )
        .unwrap();
    assert_eq!(report.workload.job.as_deref(), Some("report-29400000"));
    assert_eq!(report.workload.cronjob.as_deref(), Some("report"));
    assert_eq!(&*report.service.name, "report", "CronJob before Job");

    let proxy = index
        .local_pod(
            &container_id(&index, "kube-proxy-4xk2p", "kube-proxy"),
            None,
            RULES,
        )
        .unwrap();
    assert_eq!(proxy.workload.daemonset.as_deref(), Some("kube-proxy"));
    assert!(
        proxy.pod.host_network && proxy.pod.ips.is_empty(),
        "node IPs are not the pod's"
    );
    assert_eq!(&*proxy.service.name, "kube-proxy");
    assert_eq!(&*proxy.service.namespace, "kube-system");

    // On node-2: only in the cluster-wide section, as a peer.
    let db = index
        .pods
        .iter()
        .find(|p| &*p.name == "db-0")
        .unwrap()
        .clone();
    let db = index.identity(&db, None, RULES);
    assert_eq!(&*db.service.name, "orders-db", "the annotation wins");
    assert_eq!(db.workload.statefulset.as_deref(), Some("db"));
    let bare = index
        .pods
        .iter()
        .find(|p| &*p.name == "debug")
        .unwrap()
        .clone();
    let bare = index.identity(&bare, None, RULES);
    assert_eq!(
        bare.workload,
        Default::default(),
        "no owner, nothing guessed"
    );
    assert_eq!(&*bare.service.name, "debug", "the pod's name");
}

#[test]
fn a_missing_owner_link_is_left_out() {
    let mut index = fixture_index();
    index.replicasets.apply(Change::Restart);
    index.replicasets.apply(Change::Synced);
    let web = index
        .local_pod(
            &container_id(&index, "web-7d4b9c6f5d-x2x9k", "web"),
            None,
            RULES,
        )
        .unwrap();
    assert_eq!(web.workload.replicaset.as_deref(), Some("web-7d4b9c6f5d"));
    assert_eq!(web.workload.deployment, None);
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn peers_are_services_pods_nodes_or_outside() {
    let index = fixture_index();
    match index.peer(ip("10.96.12.34"), RULES) {
        Some(Peer::Service {
            service: s,
            backend,
        }) => {
            assert_eq!((&*s.namespace, &*s.name), ("shop", "web"));
            assert_eq!(
                service_dns_name(&s, "cluster.local"),
                "web.shop.svc.cluster.local"
            );
            let backend = backend.expect("one workload behind it");
            assert_eq!(backend.workload.deployment.as_deref(), Some("web"));
            assert_eq!(&*backend.service.name, "web");
        }
        other => panic!("{other:?}"),
    }
    match index.peer(ip("10.244.1.5"), RULES) {
        Some(Peer::Pod { identity, service }) => {
            assert_eq!(&*identity.pod.name, "web-7d4b9c6f5d-x2x9k");
            assert_eq!(identity.workload.deployment.as_deref(), Some("web"));
            assert_eq!(service.as_deref(), Some("web"), "from its EndpointSlice");
        }
        other => panic!("{other:?}"),
    }
    match index.peer(ip("10.244.2.7"), RULES) {
        Some(Peer::Pod { identity, service }) => {
            assert_eq!(&*identity.service.name, "orders-db");
            assert_eq!(service.as_deref(), Some("db"), "a headless Service's pod");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(index.peer(ip("10.0.0.11"), RULES), Some(Peer::Node(n)) if &*n.name == "node-1")
    );
    assert!(matches!(
        index.peer(ip("192.0.2.1"), RULES),
        Some(Peer::Outside)
    ));
    // Nothing listed yet: an unknown address is not "outside".
    assert!(
        ClusterIndex::default()
            .peer(ip("192.0.2.1"), RULES)
            .is_none()
    );
}

/// An address is called outside only once every kind that could claim it has listed: a node's
/// address, asked for while pods and Services are listed and nodes are not yet, is unknown.
#[test]
fn outside_waits_for_pods_services_and_nodes() {
    for unlisted in ["pods", "services", "nodes"] {
        let mut index = fixture_index();
        match unlisted {
            "pods" => index.pods = Default::default(),
            "services" => index.services = Default::default(),
            _ => index.nodes = Default::default(),
        }
        assert!(
            index.peer(ip("192.0.2.1"), RULES).is_none(),
            "{unlisted} not listed"
        );
    }
    assert!(matches!(
        fixture_index().peer(ip("192.0.2.1"), RULES),
        Some(Peer::Outside)
    ));
}

#[test]
fn a_finished_pods_ip_goes_to_the_next_pod() {
    let mut index = fixture_index();
    // report-… finished and kept 10.244.1.9 in its status; a new pod gets the IP.
    let mut newer = index
        .pods
        .iter()
        .find(|p| &*p.name == "debug")
        .unwrap()
        .as_ref()
        .clone();
    newer.uid = Arc::from("0d0c6a47-2b1e-4c55-9a0e-3f1d2c4b5a69");
    newer.name = Arc::from("debug-2");
    newer.ips = vec![ip("10.244.1.9")];
    index.pods.apply(Change::Apply(newer));
    match index.peer(ip("10.244.1.9"), RULES) {
        Some(Peer::Pod { identity, .. }) => assert_eq!(&*identity.pod.name, "debug-2"),
        other => panic!("{other:?}"),
    }
}
