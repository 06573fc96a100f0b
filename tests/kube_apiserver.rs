//! netsonde's Kubernetes watches against a real API server: kube-apiserver and etcd v1.37.2
//! (tests/support/kube_server.rs) on loopback with TLS and RBAC. The cluster of
//! tests/fixtures/kube is created through the API (pods, their status as the kubelet writes it,
//! Services, EndpointSlices, nodes, ReplicaSets, Jobs), the chart's own objects are applied,
//! and the watches run with the chart's service account token. What they asked is read from
//! the API server's audit log.
//!
//! tests/kube_watch.rs keeps the stand-in for what a real server cannot be made to do.

mod support;

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::PathBuf,
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};

use kube::Client;
use netsonde::attribution::kube::{
    NamingRules, Peer, WatchSettings, Watches,
    watch::{self, NodePods},
};
use serde_json::{Value, json};
use support::{
    helm,
    kube_api::fixture,
    kube_server::{self, KubeServer},
};

const RULES: NamingRules = NamingRules { use_labels: true };
/// The chart's release and namespace: its service account is `netsonde/netsonde`.
const AGENT_USER: &str = "system:serviceaccount:netsonde:netsonde";

macro_rules! require_server {
    () => {{
        if let Some(why) = helm::missing() {
            eprintln!("skipped: the chart's RBAC cannot be rendered: {why}");
            return;
        }
        match KubeServer::start() {
            Ok(server) => server,
            Err(why) => {
                eprintln!("skipped: no API server: {why}");
                return;
            }
        }
    }};
}

/// The fixtures' objects in an order the API server accepts (owners before what they own),
/// without the `default/kubernetes` Service the API server makes itself.
fn fixture_objects() -> Vec<Value> {
    let mut objects = Vec::new();
    for file in [
        "nodes.json",
        "replicasets.json",
        "jobs.json",
        "services.json",
        "endpointslices.json",
        "pods.json",
    ] {
        let list = fixture(file);
        let api_version = list["apiVersion"].clone();
        let kind = list["kind"]
            .as_str()
            .unwrap()
            .trim_end_matches("List")
            .to_string();
        for mut item in list["items"].as_array().unwrap().iter().cloned() {
            if item["metadata"]["namespace"] == "default"
                && item["metadata"]["name"] == "kubernetes"
            {
                continue;
            }
            item["apiVersion"] = api_version.clone();
            item["kind"] = json!(kind);
            objects.push(item);
        }
    }
    objects
}

/// The chart's objects, rendered by the real helm with its default values.
fn chart_objects() -> Vec<Value> {
    helm::render(&json!({}))
        .iter()
        .map(|r| serde_saphyr::from_str(&r.text).expect("a rendered object"))
        .collect()
}

struct Cluster {
    server: KubeServer,
    admin: Client,
    /// The agent's kubeconfig: the chart's service account's token.
    kubeconfig: PathBuf,
    /// The stored objects, by name.
    objects: Vec<Value>,
}

impl Cluster {
    fn object(&self, name: &str) -> Value {
        self.objects
            .iter()
            .find(|o| o["metadata"]["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no object {name}"))
    }
}

/// The fixtures' cluster and the chart (its ClusterRole edited by `role`) in a real API server.
async fn cluster(server: KubeServer, role: impl Fn(&mut Value)) -> Cluster {
    let admin = server.admin().await;
    for ns in ["shop", "netsonde"] {
        kube_server::namespace(&admin, ns).await;
    }
    let mut objects = Vec::new();
    for object in fixture_objects() {
        objects.push(kube_server::create(&admin, &object).await);
    }
    for mut object in chart_objects() {
        if object["kind"] == "ClusterRole" {
            role(&mut object);
        }
        // Every object of the chart, created with strict field validation: a field the API
        // server does not know fails here.
        kube_server::create(&admin, &object).await;
    }
    let token = kube_server::service_account_token(&admin, "netsonde", "netsonde").await;
    let kubeconfig = server.token_kubeconfig("agent", &token);
    Cluster {
        server,
        admin,
        kubeconfig,
        objects,
    }
}

async fn watch(kubeconfig: PathBuf, peers: bool) -> Watches {
    let settings = WatchSettings {
        kubeconfig: Some(kubeconfig),
        node_name: "node-1".into(),
        peers,
    };
    let client = watch::client(&settings).await.expect("client");
    Watches::start(client, &settings)
}

/// Waits until `check` holds on the index (the watches run on their own tasks).
async fn until(watches: &Watches, what: &str, check: impl Fn(&Watches) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check(watches) {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn local_pod_names(w: &Watches) -> Vec<String> {
    let index = w.index.read().unwrap();
    let mut names: Vec<String> = index
        .local_pods
        .iter()
        .map(|p| p.name.to_string())
        .collect();
    names.sort();
    names
}

fn peer_name(w: &Watches, ip: &str) -> Option<String> {
    let ip: IpAddr = ip.parse().unwrap();
    let index = w.index.read().unwrap();
    index.peer(ip, RULES).map(|p| match p {
        Peer::Pod { identity, .. } => format!("pod {}", identity.pod.name),
        Peer::Service { service, .. } => format!("service {}", service.name),
        Peer::Node(n) => format!("node {}", n.name),
        Peer::Outside => "outside".into(),
    })
}

/// A copy of the stored pod `from` under a new name and IP, ready to be created.
fn new_pod(from: &Value, name: &str, ip: &str) -> Value {
    let mut pod = from.clone();
    pod["metadata"]["name"] = json!(name);
    pod["status"]["podIP"] = json!(ip);
    pod["status"]["podIPs"] = json!([{ "ip": ip }]);
    pod
}

/// (API group, resource, verb) of every request `user` made, from the audit log.
fn used_permissions(server: &KubeServer, user: &str) -> BTreeSet<(String, String, String)> {
    server
        .audit()
        .iter()
        .filter(|e| e["user"]["username"] == user)
        .map(|e| {
            let text = |v: &Value| v.as_str().unwrap_or("").to_string();
            (
                text(&e["objectRef"]["apiGroup"]),
                text(&e["objectRef"]["resource"]),
                text(&e["verb"]),
            )
        })
        .collect()
}

/// (API group, resource, verb) of every permission a ClusterRole grants.
fn granted_permissions(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    granted.insert((
                        group.as_str().unwrap().to_string(),
                        resource.as_str().unwrap().to_string(),
                        verb.as_str().unwrap().to_string(),
                    ));
                }
            }
        }
    }
    granted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_charts_rbac_lists_then_follows_changes() {
    let server = require_server!();
    let c = cluster(server, |_| {}).await;
    let w = watch(c.kubeconfig.clone(), true).await;
    assert_eq!(
        w.wait_for_node_pods(Duration::from_secs(30)).await,
        NodePods::Listed
    );
    assert_eq!(
        local_pod_names(&w),
        [
            "checkout-5f6d8b7c9-k8s2d",
            "kube-proxy-4xk2p",
            "report-29400000-q7m2c",
            "web-7d4b9c6f5d-x2x9k"
        ],
        "only node-1's pods"
    );
    until(&w, "peers listed", |w| peer_name(w, "192.0.2.1").is_some()).await;
    assert_eq!(peer_name(&w, "10.96.12.34").as_deref(), Some("service web"));
    assert_eq!(peer_name(&w, "10.244.2.7").as_deref(), Some("pod db-0"));
    assert_eq!(peer_name(&w, "10.0.0.12").as_deref(), Some("node node-2"));
    until(&w, "owner links", |w| {
        w.index.read().unwrap().replicasets.len() == 2
    })
    .await;

    // A new pod on node-1 (created, then its IP written as the kubelet does), a delete, and a
    // pod on another node.
    let checkout = c.object("checkout-5f6d8b7c9-k8s2d");
    kube_server::create(
        &c.admin,
        &new_pod(&checkout, "checkout-5f6d8b7c9-zz9pt", "10.244.1.30"),
    )
    .await;
    until(&w, "added pod", |w| {
        local_pod_names(w).contains(&"checkout-5f6d8b7c9-zz9pt".into())
    })
    .await;
    until(&w, "added peer", |w| peer_name(w, "10.244.1.30").is_some()).await;
    kube_server::delete(&c.admin, &c.object("report-29400000-q7m2c"), 0).await;
    until(&w, "deleted pod", |w| {
        !local_pod_names(w).contains(&"report-29400000-q7m2c".into())
    })
    .await;
    let mut elsewhere = new_pod(&c.object("db-0"), "debug-2", "10.244.2.20");
    elsewhere["metadata"]["namespace"] = json!("default");
    elsewhere["metadata"]["ownerReferences"] = json!([]);
    kube_server::create(&c.admin, &elsewhere).await;
    until(&w, "peer on node-2", |w| {
        peer_name(w, "10.244.2.20").as_deref() == Some("pod debug-2")
    })
    .await;
    assert!(!local_pod_names(&w).contains(&"debug-2".into()));
    assert_eq!(w.stats.malformed.load(Relaxed), 0);
    assert_eq!(w.stats.errors.load(Relaxed), 0, "{}", c.server.log_tail());

    // What the real server saw: this node's pods by field selector, lists from its cache,
    // nothing refused; and the chart's role is exactly what was used (sufficient: no 403;
    // minimal: every permission it grants was exercised).
    let requests = c.server.requests_of(AGENT_USER);
    assert!(
        requests.iter().any(|r| r.starts_with("list /api/v1/pods?")
            && r.contains("fieldSelector=spec.nodeName%3Dnode-1")
            && r.contains("resourceVersion=0")),
        "{requests:#?}"
    );
    let refused: Vec<Value> = c
        .server
        .audit()
        .into_iter()
        .filter(|e| e["user"]["username"] == AGENT_USER && e["responseStatus"]["code"] == 403)
        .collect();
    assert!(refused.is_empty(), "refused: {refused:#?}");
    let role = chart_objects()
        .into_iter()
        .find(|o| o["kind"] == "ClusterRole")
        .unwrap();
    assert_eq!(
        used_permissions(&c.server, AGENT_USER),
        granted_permissions(&role),
        "the permissions the agent used (left) and those the chart grants (right)"
    );
}
