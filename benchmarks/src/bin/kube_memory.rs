//! Memory of the Kubernetes watches with a big cluster: 10 000 pods on 100 nodes, 2 000
//! Services with their EndpointSlices, 2 000 ReplicaSets, served by the API stand-in of the
//! tests (tests/support/kube_api.rs) on loopback. Each arm runs in its own process, started by
//! this one, and reports its resident memory once everything is listed, then again after churn
//! (half the pods deleted and replaced by new ones reusing their IPs):
//!
//! - **idle**: the runtime and a kube client, no watches (the floor);
//! - **netsonde**: netsonde's watches and index (trimmed objects);
//! - **reflector**: kube's reflector stores of the same objects, whole (what keeping the API
//!   objects costs).
//!
//! Usage: `kube_memory [--pods N]`. Prints a Markdown table.

#[allow(
    dead_code,
    reason = "the benchmark uses part of the tests' API stand-in"
)]
#[path = "../../../tests/support/kube_api.rs"]
mod kube_api;

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    core::v1::{Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt as _, reflector, watcher},
};
use kube_api::{FakeApi, NODES, PODS, REPLICASETS, SERVICES, SLICES};
use netsonde::attribution::kube::{WatchSettings, Watches, watch};
use serde_json::{Value, json};

const NODE_COUNT: usize = 100;
const PODS_PER_SERVICE: usize = 5;
const MARKER: &str = "churn-marker";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if let Some(arm) = flag("--arm") {
        let kubeconfig = flag("--kubeconfig").expect("--kubeconfig");
        let pods: usize = flag("--pods").unwrap().parse().unwrap();
        run_arm(&arm, &kubeconfig, pods);
        return;
    }
    let pods: usize = flag("--pods").map_or(10_000, |p| p.parse().expect("--pods N"));
    drive(pods);
}

/// One pod, in the shape of the recorded fixture pods (metadata, spec, status, managed
/// fields), numbered `n`.
fn pod(template: &Value, n: usize, generation: usize) -> Value {
    let mut p = template.clone();
    let name = format!("app{}-7d4b9c6f5d-{generation}x{n:05}", n / PODS_PER_SERVICE);
    let node = format!("node-{}", n % NODE_COUNT + 1);
    let ip = format!("10.{}.{}.{}", 64 + n / 65_536, (n / 256) % 256, n % 256);
    p["metadata"]["name"] = json!(name);
    p["metadata"]["uid"] = json!(format!("{generation:08x}-0000-4000-8000-{n:012x}"));
    p["metadata"]["labels"]["app.kubernetes.io/name"] =
        json!(format!("app{}", n / PODS_PER_SERVICE));
    p["metadata"]["ownerReferences"][0]["name"] =
        json!(format!("app{}-7d4b9c6f5d", n / PODS_PER_SERVICE));
    p["spec"]["nodeName"] = json!(node);
    p["status"]["podIP"] = json!(ip);
    p["status"]["podIPs"] = json!([{"ip": ip}]);
    for (i, c) in p["status"]["containerStatuses"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        c["containerID"] = json!(format!("containerd://{generation:04x}{i:04x}{n:056x}"));
    }
    p
}

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "5000"}, "items": items})
}

/// The API stand-in with a generated cluster.
fn cluster(pods: usize) -> (FakeApi, Value) {
    let fixtures: Value =
        serde_json::from_str(include_str!("../../../tests/fixtures/kube/pods.json")).unwrap();
    let template = fixtures["items"][0].clone();
    let services = pods / PODS_PER_SERVICE;
    let ip = |n: usize| format!("10.{}.{}.{}", 64 + n / 65_536, (n / 256) % 256, n % 256);
    let pod_items: Vec<Value> = (0..pods).map(|n| pod(&template, n, 0)).collect();
    let service_items: Vec<Value> = (0..services)
        .map(|s| {
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": format!("app{s}"), "namespace": "shop", "uid": format!("svc-{s}"),
                                "resourceVersion": "5000", "labels": {"app.kubernetes.io/name": format!("app{s}")}},
                   "spec": {"type": "ClusterIP", "clusterIP": format!("10.96.{}.{}", s / 256, s % 256),
                            "clusterIPs": [format!("10.96.{}.{}", s / 256, s % 256)],
                            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
                            "selector": {"app.kubernetes.io/name": format!("app{s}")}}})
        })
        .collect();
    let slice_items: Vec<Value> = (0..services)
        .map(|s| {
            let endpoints: Vec<Value> = (0..PODS_PER_SERVICE)
                .map(|i| json!({"addresses": [ip(s * PODS_PER_SERVICE + i)], "conditions": {"ready": true}}))
                .collect();
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                   "metadata": {"name": format!("app{s}-abcde"), "namespace": "shop", "resourceVersion": "5000",
                                "labels": {"kubernetes.io/service-name": format!("app{s}")}},
                   "endpoints": endpoints, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
        })
        .collect();
    let node_items: Vec<Value> = (1..=NODE_COUNT)
        .map(|n| {
            json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": format!("node-{n}"), "resourceVersion": "5000"},
                   "status": {"addresses": [{"type": "InternalIP", "address": format!("10.0.{}.{}", n / 256, n % 256)}]}})
        })
        .collect();
    let rs_items: Vec<Value> = (0..services)
        .map(|s| {
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                   "metadata": {"name": format!("app{s}-7d4b9c6f5d"), "namespace": "shop", "resourceVersion": "5000",
                                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": format!("app{s}"),
                                                     "uid": format!("dep-{s}"), "controller": true}]},
                   "spec": {"replicas": PODS_PER_SERVICE, "selector": {"matchLabels": {"app.kubernetes.io/name": format!("app{s}")}}}})
        })
        .collect();
    let api = FakeApi::serve(vec![
        (PODS.into(), list("PodList", "v1", pod_items)),
        (SERVICES.into(), list("ServiceList", "v1", service_items)),
        (
            SLICES.into(),
            list("EndpointSliceList", "discovery.k8s.io/v1", slice_items),
        ),
        (NODES.into(), list("NodeList", "v1", node_items)),
        (
            REPLICASETS.into(),
            list("ReplicaSetList", "apps/v1", rs_items),
        ),
        (kube_api::JOBS.into(), list("JobList", "batch/v1", vec![])),
    ]);
    (api, template)
}

/// Sends the churn: the first half of the pods deleted, as many new ones (reusing their IPs)
/// added, then the marker pod.
fn churn(api: &FakeApi, template: &Value, pods: usize) {
    for n in 0..pods / 2 {
        api.event(PODS, "DELETED", pod(template, n, 0));
        api.event(PODS, "ADDED", pod(template, n, 1));
    }
    let mut marker = pod(template, pods, 2);
    marker["metadata"]["name"] = json!(MARKER);
    api.event(PODS, "ADDED", marker);
}

#[derive(Debug, Default, Clone, Copy)]
struct Memory {
    rss_kib: u64,
    peak_kib: u64,
}

fn memory() -> Memory {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kib: field("VmRSS:"),
        peak_kib: field("VmHWM:"),
    }
}

fn drive(pods: usize) {
    let started = Instant::now();
    let (api, template) = cluster(pods);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    eprintln!(
        "cluster of {pods} pods generated in {:?}",
        started.elapsed()
    );
    let me = std::env::current_exe().unwrap();
    let mut rows = Vec::new();
    for arm in ["idle", "netsonde", "reflector"] {
        let mut child = Command::new(&me)
            .args(["--arm", arm, "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["--pods", &pods.to_string()])
            .stdout(Stdio::piped())
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let synced: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        churn(&api, &template, pods);
        child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(b"churned\n")
            .unwrap();
        line.clear();
        out.read_line(&mut line).unwrap();
        let churned: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        child.wait().unwrap();
        eprintln!("{arm}: synced {synced:?}, churned {churned:?}");
        rows.push((arm, synced, churned));
    }
    println!("| arm | listed in | RSS listed | RSS after churn | peak RSS |");
    println!("|---|---:|---:|---:|---:|");
    for (arm, synced, churned) in rows {
        let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
        println!(
            "| {arm} | {} ms | {} | {} | {} |",
            synced[2],
            mib(synced[0]),
            mib(churned[0]),
            mib(churned[1])
        );
    }
}

/// Runs one arm: prints `RSS PEAK MS` once listed, waits for the parent's churn, prints
/// `RSS PEAK` once the marker pod arrived.
fn run_arm(arm: &str, kubeconfig: &str, pods: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let settings = WatchSettings {
            kubeconfig: Some(kubeconfig.into()),
            node_name: "node-1".into(),
            peers: true,
        };
        let client = watch::client(&settings).await.unwrap();
        let started = Instant::now();
        let stdin = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
        });
        match arm {
            "idle" => {
                report(started, None);
                stdin.await.unwrap();
                report(started, Some(()));
            }
            "netsonde" => {
                let watches = Watches::start(client, &settings);
                let listed = |w: &Watches| {
                    let i = w.index.read().unwrap();
                    i.pods.len() == pods
                        && i.slices.len() == pods / PODS_PER_SERVICE
                        && i.services.synced()
                        && i.nodes.synced()
                        && i.replicasets.synced()
                };
                wait(|| listed(&watches)).await;
                report(started, None);
                stdin.await.unwrap();
                wait(|| {
                    watches
                        .index
                        .read()
                        .unwrap()
                        .pods
                        .iter()
                        .any(|p| &*p.name == MARKER)
                })
                .await;
                report(started, Some(()));
            }
            "reflector" => {
                let pods_store = store::<Pod>(&client);
                let services = store::<Service>(&client);
                let slices = store::<EndpointSlice>(&client);
                let nodes = store::<Node>(&client);
                let replicasets = store::<ReplicaSet>(&client);
                wait(|| {
                    pods_store.state().len() == pods
                        && slices.state().len() == pods / PODS_PER_SERVICE
                        && !services.state().is_empty()
                        && nodes.state().len() == NODE_COUNT
                        && !replicasets.state().is_empty()
                })
                .await;
                report(started, None);
                stdin.await.unwrap();
                wait(|| {
                    pods_store
                        .state()
                        .iter()
                        .any(|p| p.metadata.name.as_deref() == Some(MARKER))
                })
                .await;
                report(started, Some(()));
            }
            other => panic!("unknown arm {other}"),
        }
    });
}

/// A reflector store of whole `K` objects, kept by a spawned watch.
fn store<K>(client: &Client) -> reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let mut config = watcher::Config::default().any_semantic();
    config.page_size = None;
    let stream = watcher::watcher(Api::<K>::all(client.clone()), config)
        .default_backoff()
        .reflect(writer)
        .for_each(|_| futures::future::ready(()));
    tokio::spawn(stream);
    reader
}

async fn wait(done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !done() {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn report(started: Instant, churned: Option<()>) {
    let m = memory();
    let mut out = std::io::stdout().lock();
    match churned {
        None => writeln!(
            out,
            "{} {} {}",
            m.rss_kib,
            m.peak_kib,
            started.elapsed().as_millis()
        ),
        Some(()) => writeln!(out, "{} {}", m.rss_kib, m.peak_kib),
    }
    .unwrap();
    out.flush().unwrap();
}
