//! netsonde's Kubernetes watches against an API server stand-in on loopback (real HTTP, kube's
//! real client and watcher; the objects are the fixtures of tests/fixtures/kube), for what a
//! real API server cannot be made to do on demand: a bookmark now (a real one sends them about
//! once a minute), error statuses (500), garbage lines and malformed objects in a stream, no
//! server at all. Everything a real server does — lists, changes, deletes, pod IP reuse,
//! restarts, `410 Gone` after compaction, RBAC — is tested against one in
//! tests/kube_apiserver.rs.

mod support;

use std::{
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};

use netsonde::attribution::kube::{
    WatchSettings, Watches,
    watch::{self, NodePods},
};
use serde_json::{Value, json};
use support::{
    kube_api::{self, FakeApi, PODS, REPLICASETS, SERVICES},
    kube_index::{local_pod_names, peer_name, until},
};

async fn start(api: &FakeApi, peers: bool) -> (Watches, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let settings = WatchSettings {
        kubeconfig: Some(api.write_kubeconfig(dir.path())),
        node_name: "node-1".into(),
        peers,
    };
    let client = watch::client(&settings).await.expect("client");
    (Watches::start(client, &settings), dir)
}

/// Waits until `path` has had `n` watch requests (see `FakeApi::watches`): the list can be in
/// the index before the watch that follows it reaches the stand-in.
async fn until_watching(api: &FakeApi, path: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while api.watches(path) < n {
        assert!(
            Instant::now() < deadline,
            "no {n} watches of {path}: {:?}",
            api.requests_for(path)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pod(name: &str) -> Value {
    let list = kube_api::fixture("pods.json");
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["metadata"]["name"] == name)
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_resume_and_410_gone_relists_without_stale_objects() {
    let api = FakeApi::start();
    let (w, _dir) = start(&api, false).await;
    assert_eq!(
        w.wait_for_node_pods(Duration::from_secs(20)).await,
        NodePods::Listed
    );
    // Pod lists as the stand-in saw them: the agent's own count also holds the lists of the
    // other kinds, which may still be coming in (that made this test fail now and then).
    let pod_lists = |api: &FakeApi| {
        api.requests_for(PODS)
            .iter()
            .filter(|r| !r.contains("watch=true"))
            .count()
    };
    let first_lists = pod_lists(&api);

    // A bookmark moves the resume point; the API server then ends the stream (its timeout).
    until_watching(&api, PODS, 1).await;
    let watches_before = api.watches(PODS);
    api.event(PODS, "BOOKMARK", kube_api::bookmark("v1", "Pod", "2345"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.end_watches(PODS);
    let resumed = |api: &FakeApi| {
        api.requests_for(PODS)
            .iter()
            .filter(|r| r.contains("watch=true"))
            .skip(watches_before)
            .any(|r| r.contains("resourceVersion=2345"))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !resumed(&api) {
        assert!(
            Instant::now() < deadline,
            "no watch resumed at the bookmark: {:?}",
            api.requests_for(PODS)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        pod_lists(&api),
        first_lists,
        "a resumed watch does not relist"
    );

    // While the watch was away the web pod was deleted; the server says 410 Gone.
    let mut list = api.list(PODS);
    list["items"]
        .as_array_mut()
        .unwrap()
        .retain(|p| p["metadata"]["name"] != "web-7d4b9c6f5d-x2x9k");
    list["metadata"]["resourceVersion"] = json!("3000");
    api.set_list(PODS, list);
    api.event(PODS, "ERROR", kube_api::gone());
    let deadline = Instant::now() + Duration::from_secs(20);
    while pod_lists(&api) <= first_lists {
        assert!(Instant::now() < deadline, "no relist after 410 Gone");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    until(&w, "stale pod expired", |w| {
        !local_pod_names(w).contains(&"web-7d4b9c6f5d-x2x9k".into())
    })
    .await;
    assert_eq!(local_pod_names(&w).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_objects_are_skipped_and_counted() {
    let api = FakeApi::start();
    let mut list = api.list(PODS);
    // A pod whose containers are not a list, and one without a UID.
    let mut bad_type = pod("web-7d4b9c6f5d-x2x9k");
    bad_type["metadata"]["name"] = json!("bad-type");
    bad_type["spec"]["containers"] = json!("nginx");
    let mut no_uid = pod("checkout-5f6d8b7c9-k8s2d");
    no_uid["metadata"]["name"] = json!("no-uid");
    no_uid["metadata"].as_object_mut().unwrap().remove("uid");
    list["items"]
        .as_array_mut()
        .unwrap()
        .extend([bad_type, no_uid]);
    api.set_list(PODS, list);
    let (w, _dir) = start(&api, false).await;
    assert_eq!(
        w.wait_for_node_pods(Duration::from_secs(20)).await,
        NodePods::Listed
    );
    assert_eq!(local_pod_names(&w).len(), 4, "the good ones are all there");
    assert_eq!(w.stats.malformed.load(Relaxed), 2);
    // A line that is not JSON at all fails that one event; the watch goes on.
    until_watching(&api, PODS, 1).await;
    api.raw_event(PODS, "{not json");
    let mut fresh = pod("checkout-5f6d8b7c9-k8s2d");
    fresh["metadata"]["name"] = json!("after-garbage");
    fresh["metadata"]["uid"] = json!("1c9e3f0a-7b2d-4e6f-8a1c-3d5e7f9b2c14");
    api.event(PODS, "ADDED", fresh);
    until(&w, "pod after garbage", |w| {
        local_pod_names(w).contains(&"after-garbage".into())
    })
    .await;
    assert!(w.stats.errors.load(Relaxed) >= 1, "the bad line is counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_forbidden_requests_back_off_and_recover() {
    let api = FakeApi::start();
    // The API server fails the first two pod lists and the first ReplicaSet list (500; kube's
    // client itself retries 503s, which never reach the watches); Services are forbidden.
    api.fail_next(PODS, 500, 2);
    api.fail_next(SERVICES, 403, 1000);
    api.fail_next(REPLICASETS, 500, 1);
    let (w, _dir) = start(&api, true).await;
    // A failing list is retried by the watch; the wait returns at the first failure.
    assert_eq!(
        w.wait_for_node_pods(Duration::from_secs(30)).await,
        NodePods::ApiFails
    );
    until(&w, "node pods after backoff", |w| {
        w.index.read().unwrap().local_pods.synced()
    })
    .await;
    until(&w, "owner links after a failure", |w| {
        w.index.read().unwrap().replicasets.len() == 2
    })
    .await;
    assert!(
        w.stats.errors.load(Relaxed) >= 4,
        "2 + 1 failed lists, 1 forbidden at least"
    );
    // Without Services nothing can be called outside the cluster, but pods still resolve.
    until(&w, "pods listed", |w| peer_name(w, "10.244.2.7").is_some()).await;
    assert_eq!(peer_name(&w, "192.0.2.1"), None);
    assert!(w.index.read().unwrap().services.is_empty());
    // Forbidden is retried, but backing off: not a tight loop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tries = api.requests_for(SERVICES).len();
    assert!(
        (2..=6).contains(&tries),
        "{tries} Service requests in about 3 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_api_server_is_errors_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kube_api::write_kubeconfig(&kube_api::dead_url(), dir.path());
    let settings = WatchSettings {
        kubeconfig: Some(kubeconfig),
        node_name: "node-1".into(),
        peers: true,
    };
    let client = watch::client(&settings).await.unwrap();
    let w = Watches::start(client, &settings);
    assert_eq!(
        w.wait_for_node_pods(Duration::from_secs(20)).await,
        NodePods::ApiFails
    );
    assert!(w.stats.errors.load(Relaxed) >= 1);
    assert!(w.index.read().unwrap().local_pods.is_empty());
}

#[tokio::test]
async fn a_missing_kubeconfig_is_one_clear_error() {
    let settings = WatchSettings {
        kubeconfig: Some("/nonexistent/kubeconfig".into()),
        node_name: "node-1".into(),
        peers: false,
    };
    let e = watch::client(&settings).await.err().expect("an error");
    assert_eq!(
        e.to_string(),
        "cannot use the kubeconfig /nonexistent/kubeconfig"
    );
}
