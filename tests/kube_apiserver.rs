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
    path::PathBuf,
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};

use netsonde::attribution::kube::{
    WatchSettings, Watches,
    watch::{self, NodePods},
};
use serde_json::{Value, json};
use support::{
    helm,
    kube_cluster::{chart_objects, cluster},
    kube_index::{local_pod_names, peer_name, until},
    kube_server::{self, AGENT_USER, KubeServer},
};

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

async fn watch(kubeconfig: PathBuf, peers: bool) -> Watches {
    let settings = WatchSettings {
        kubeconfig: Some(kubeconfig),
        node_name: "node-1".into(),
        peers,
    };
    let client = watch::client(&settings).await.expect("client");
    Watches::start(client, &settings)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_api_server_and_a_compacted_history_lose_nothing() {
    let server = require_server!();
    let mut c = cluster(server, |_| {}).await;
    let w = watch(c.kubeconfig.clone(), false).await;
    assert_eq!(
        w.wait_for_node_pods(Duration::from_secs(30)).await,
        NodePods::Listed
    );
    let checkout = c.object("checkout-5f6d8b7c9-k8s2d");

    // The API server restarts mid-watch: the watch resumes where it was, and what changes
    // afterwards arrives.
    c.server.restart_apiserver();
    kube_server::create(
        &c.admin,
        &new_pod(&checkout, "checkout-5f6d8b7c9-aft3r", "10.244.1.31"),
    )
    .await;
    until(&w, "a pod added after the restart", |w| {
        local_pod_names(w).contains(&"checkout-5f6d8b7c9-aft3r".into())
    })
    .await;
    let lists = w.stats.lists.load(Relaxed);

    // While it is down, another API server of the control plane takes a delete and a new
    // pod, and etcd's history is compacted: the watch's resume point is gone. The server
    // answers 410 Gone; the watch lists again, and the deleted pod expires.
    let other = c.server.second_apiserver().await;
    c.server.stop_apiserver();
    kube_server::delete(&other, &c.object("web-7d4b9c6f5d-x2x9k"), 0).await;
    kube_server::create(
        &other,
        &new_pod(&checkout, "checkout-5f6d8b7c9-l4te0", "10.244.1.32"),
    )
    .await;
    c.server.compact();
    c.server.start_apiserver();
    until(&w, "relisted after 410 Gone", |w| {
        let names = local_pod_names(w);
        names.contains(&"checkout-5f6d8b7c9-l4te0".into())
            && !names.contains(&"web-7d4b9c6f5d-x2x9k".into())
    })
    .await;
    assert!(
        w.stats.lists.load(Relaxed) > lists,
        "the node's pods were listed again"
    );
    assert_eq!(
        local_pod_names(&w),
        [
            "checkout-5f6d8b7c9-aft3r",
            "checkout-5f6d8b7c9-k8s2d",
            "checkout-5f6d8b7c9-l4te0",
            "kube-proxy-4xk2p",
            "report-29400000-q7m2c",
        ]
    );
    assert!(w.stats.errors.load(Relaxed) >= 1, "the outage is counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_pod_ip_names_the_new_pod() {
    let server = require_server!();
    let c = cluster(server, |_| {}).await;
    let w = watch(c.kubeconfig.clone(), true).await;
    until(&w, "peers listed", |w| peer_name(w, "192.0.2.1").is_some()).await;
    // The checkout pod is being deleted (the API server keeps it, terminating, until its
    // kubelet confirms) and its IP already went to a new pod; the old pod's last status
    // update arrives after the new pod.
    let old = c.object("checkout-5f6d8b7c9-k8s2d");
    let mut new = new_pod(&old, "web-7d4b9c6f5d-n3w9p", "10.244.1.6");
    new["metadata"]["ownerReferences"] =
        c.object("web-7d4b9c6f5d-x2x9k")["metadata"]["ownerReferences"].clone();
    kube_server::delete(&c.admin, &old, 30).await;
    kube_server::create(&c.admin, &new).await;
    kube_server::patch_status(&c.admin, &old, json!({"phase": "Running"})).await;
    until(&w, "new pod owns the IP", |w| {
        peer_name(w, "10.244.1.6").as_deref() == Some("pod web-7d4b9c6f5d-n3w9p")
    })
    .await;
    kube_server::delete(&c.admin, &old, 0).await;
    until(&w, "old pod gone", |w| {
        w.index
            .read()
            .unwrap()
            .pods
            .iter()
            .all(|p| &*p.name != "checkout-5f6d8b7c9-k8s2d")
    })
    .await;
    assert_eq!(
        peer_name(&w, "10.244.1.6").as_deref(),
        Some("pod web-7d4b9c6f5d-n3w9p")
    );
}

/// The agent itself (the real binary, root for its eBPF programs) with a ClusterRole that
/// lacks Services: one warning naming what is refused, the other watches list, and traffic is
/// still reported.
#[test]
fn without_one_permission_the_agent_names_it_and_runs_on() {
    if let Some(why) = support::skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let server = require_server!();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let c = runtime.block_on(cluster(server, |object| {
        if object["kind"] != "ClusterRole" {
            return;
        }
        let rules = object["rules"].as_array_mut().unwrap();
        for rule in rules.iter_mut() {
            let resources = rule["resources"].as_array_mut().unwrap();
            resources.retain(|r| r != "services");
        }
    }));
    let _guard = support::serial();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("netsonde.yaml");
    std::fs::write(
        &config,
        format!("kubernetes:\n  kubeconfig: {}\n", c.kubeconfig.display()),
    )
    .unwrap();
    let http = support::PyServer::start();
    let agent = support::Agent::start_with_env(
        &[
            "--config",
            &config.display().to_string(),
            "--pid",
            &http.pid.to_string(),
            "--exporter",
            "console",
        ],
        &[("NODE_NAME", "node-1")],
    );
    // Until every watch but the refused one has listed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while c
        .server
        .requests_of(AGENT_USER)
        .iter()
        .filter(|r| r.starts_with("watch "))
        .count()
        < 6
    {
        assert!(
            Instant::now() < deadline,
            "{:#?}",
            c.server.requests_of(AGENT_USER)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    support::curl(&[&http.url("/items/1")]);
    let capture = agent.stop();
    let warnings: Vec<&str> = capture
        .stderr
        .lines()
        .filter(|l| l.contains("WARN"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", capture.stderr);
    assert!(
        warnings[0].contains("kubernetes: the services watch is refused")
            && warnings[0].contains(&format!(
                "User \"{AGENT_USER}\" cannot list resource \"services\""
            ))
            && warnings[0].contains("needs list and watch on it"),
        "{}",
        warnings[0]
    );
    assert_eq!(capture.keys_of(http.pid).len(), 1, "{}", capture.stdout);
    assert_eq!(
        capture.final_stat("k8s_lists"),
        Some(6),
        "every watch but the refused one listed: {}",
        capture.stderr
    );
    assert!(capture.final_stat("k8s_errors").unwrap_or(0) >= 1);
}
