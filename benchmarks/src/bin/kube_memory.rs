//! Memory of the Kubernetes watches with a big cluster: 10 000 pods on 100 nodes, 2 000
//! Services with their EndpointSlices, 2 000 ReplicaSets, served on loopback by a real
//! kube-apiserver and etcd (`--api-server real`: the tests' harness, tests/support/
//! kube_server.rs; the cluster is created through the API) or by the tests' API stand-in
//! (`--api-server stand-in`, tests/support/kube_api.rs). Each arm runs in its own process,
//! started by this one, and reports its resident memory once everything is listed, then again
//! after churn (half the pods deleted and replaced by new ones reusing their IPs):
//!
//! - **idle**: the runtime and a kube client, no watches (the floor);
//! - **netsonde**: netsonde's watches and index (trimmed objects);
//! - **reflector**: kube's reflector stores of the same objects, whole (what keeping the API
//!   objects costs).
//!
//! Usage: `kube_memory [--pods N] [--api-server real|stand-in]`. Prints a Markdown table.

// The tests' API stand-in and real API server harness; kube_server.rs finds `free_port`,
// `go_program` and `pki` in its parent module, as in the tests' support module: here, below.
#[allow(dead_code, reason = "the benchmark uses part of the tests' support")]
#[path = "../../../tests/support/kube_api.rs"]
mod kube_api;
#[allow(dead_code, reason = "the benchmark uses part of the tests' support")]
#[path = "../../../tests/support/kube_server.rs"]
mod kube_server;
#[allow(dead_code, reason = "the benchmark uses part of the tests' support")]
#[path = "../../../tests/support/pki.rs"]
mod pki;

fn free_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// Builds a Go program of the tests as the tests do (tests/go-programs.sh, the same flags),
/// into the workspace's target/tmp.
fn go_program(module: &str, package: &str, tags: &[&str]) -> Result<std::path::PathBuf, String> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = root.join(format!("target/tmp/go-{module}"));
    let built = Command::new("bash")
        .arg(root.join("tests/go-programs.sh"))
        .arg("one")
        .arg(&out)
        .args([module, &tags.join(","), package])
        .status()
        .map_err(|e| format!("bash runs tests/go-programs.sh: {e}"))?;
    if built.success() {
        Ok(out)
    } else {
        Err(format!("building tests/support/{module} failed"))
    }
}

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
use kube_server::KubeServer;
use netsonde::attribution::kube::{WatchSettings, Watches, watch};
use serde_json::{Value, json};

const NODE_COUNT: usize = 100;
const PODS_PER_SERVICE: usize = 5;
const MARKER: &str = "churn-marker";

/// Measures the memory of netsonde's Kubernetes watches against kube's reflector stores, with
/// a generated cluster of `--pods` pods.
#[derive(Debug, clap::Parser)]
struct Args {
    /// Pods in the generated cluster (a Service, EndpointSlice and ReplicaSet per 5).
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// What serves the cluster.
    #[arg(long, value_enum, default_value_t = ApiServer::Real)]
    api_server: ApiServer,
    /// Internal: run one arm against this kubeconfig (started by the benchmark itself).
    #[arg(long, hide = true, requires = "kubeconfig")]
    arm: Option<String>,
    #[arg(long, hide = true)]
    kubeconfig: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ApiServer {
    /// kube-apiserver and etcd (tests/support/k8s, built with Go), the cluster created through
    /// the API.
    Real,
    /// The tests' stand-in, serving the generated lists and watch events.
    StandIn,
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    if let (Some(arm), Some(kubeconfig)) = (&args.arm, &args.kubeconfig) {
        run_arm(arm, kubeconfig, args.pods);
        return;
    }
    drive(args.pods, args.api_server);
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

/// The generated cluster: the pod template and every collection's list, by API path.
fn generated(pods: usize) -> (Value, Vec<(String, Value)>) {
    let fixtures: Value =
        serde_json::from_str(include_str!("../../../tests/fixtures/kube/pods.json")).unwrap();
    let template = fixtures["items"][0].clone();
    let services = pods / PODS_PER_SERVICE;
    let ip = |n: usize| format!("10.{}.{}.{}", 64 + n / 65_536, (n / 256) % 256, n % 256);
    // From 10.96.0.16: the range's first addresses are its network and the API server's own
    // Service.
    let cluster_ip = |s: usize| format!("10.96.{}.{}", (s + 16) / 256, (s + 16) % 256);
    let pod_items: Vec<Value> = (0..pods).map(|n| pod(&template, n, 0)).collect();
    let service_items: Vec<Value> = (0..services)
        .map(|s| {
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": format!("app{s}"), "namespace": "shop", "uid": format!("svc-{s}"),
                                "resourceVersion": "5000", "labels": {"app.kubernetes.io/name": format!("app{s}")}},
                   "spec": {"type": "ClusterIP", "clusterIP": cluster_ip(s),
                            "clusterIPs": [cluster_ip(s)],
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
                   "spec": {"replicas": PODS_PER_SERVICE, "selector": {"matchLabels": {"app.kubernetes.io/name": format!("app{s}")}},
                            "template": {"metadata": {"labels": {"app.kubernetes.io/name": format!("app{s}")}},
                                         "spec": {"containers": [{"name": "web", "image": "nginx:1.27.3"}]}}}})
        })
        .collect();
    let lists = vec![
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
    ];
    (template, lists)
}

/// What serves the generated cluster.
enum Served {
    StandIn(FakeApi),
    Real {
        server: Box<KubeServer>,
        admin: kube::Client,
        runtime: tokio::runtime::Runtime,
    },
}

impl Served {
    fn start(kind: ApiServer, lists: Vec<(String, Value)>) -> Served {
        match kind {
            ApiServer::StandIn => Served::StandIn(FakeApi::serve(lists)),
            ApiServer::Real => {
                let server = KubeServer::start().unwrap_or_else(|e| panic!("{e}"));
                let runtime = tokio::runtime::Runtime::new().unwrap();
                let admin = runtime.block_on(async {
                    let admin = server.admin().await;
                    kube_server::namespace(&admin, "shop").await;
                    let items = lists.into_iter().flat_map(|(_, list)| {
                        let api_version = list["apiVersion"].clone();
                        let kind = list["kind"].as_str().unwrap().trim_end_matches("List");
                        let kind = json!(kind);
                        list["items"].as_array().unwrap().clone().into_iter().map(
                            move |mut item| {
                                item["apiVersion"] = api_version.clone();
                                item["kind"] = kind.clone();
                                item
                            },
                        )
                    });
                    create_all(&admin, items.collect()).await;
                    admin
                });
                Served::Real {
                    server: Box::new(server),
                    admin,
                    runtime,
                }
            }
        }
    }

    fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        match self {
            Served::StandIn(api) => api.write_kubeconfig(dir),
            Served::Real { server, .. } => server.admin_kubeconfig(),
        }
    }

    /// The churn before arm `round`: the first half of the pods deleted, as many new ones
    /// (reusing their IPs) added, then the marker pod.
    fn churn(&self, template: &Value, pods: usize, round: usize) {
        let mut marker = pod(template, pods, 1000 + round);
        marker["metadata"]["name"] = json!(MARKER);
        match self {
            Served::StandIn(api) => {
                for n in 0..pods / 2 {
                    api.event(PODS, "DELETED", pod(template, n, round));
                    api.event(PODS, "ADDED", pod(template, n, round + 1));
                }
                api.event(PODS, "ADDED", marker);
            }
            Served::Real { admin, runtime, .. } => runtime.block_on(async {
                let gone: Vec<Value> = (0..pods / 2).map(|n| pod(template, n, round)).collect();
                futures::stream::iter(gone.iter().map(|p| kube_server::delete(admin, p, 0)))
                    .buffer_unordered(16)
                    .collect::<Vec<()>>()
                    .await;
                create_all(
                    admin,
                    (0..pods / 2).map(|n| pod(template, n, round + 1)).collect(),
                )
                .await;
                kube_server::create(admin, &marker).await;
            }),
        }
    }

    /// After an arm: the marker pod goes, for the next arm to wait for its own.
    fn clear_marker(&self, template: &Value, pods: usize, round: usize) {
        if let Served::Real { admin, runtime, .. } = self {
            let mut marker = pod(template, pods, 1000 + round);
            marker["metadata"]["name"] = json!(MARKER);
            runtime.block_on(kube_server::delete(admin, &marker, 0));
        }
    }
}

/// Creates (with status) every object, 16 requests at a time.
async fn create_all(admin: &kube::Client, objects: Vec<Value>) {
    futures::stream::iter(objects.iter().map(|o| kube_server::create(admin, o)))
        .buffer_unordered(16)
        .collect::<Vec<Value>>()
        .await;
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

fn drive(pods: usize, kind: ApiServer) {
    let started = Instant::now();
    let (template, lists) = generated(pods);
    let served = Served::start(kind, lists);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = served.kubeconfig(dir.path());
    eprintln!(
        "cluster of {pods} pods generated and served ({kind:?}) in {:?}",
        started.elapsed()
    );
    let me = std::env::current_exe().unwrap();
    let mut rows = Vec::new();
    for (round, arm) in ["idle", "netsonde", "reflector"].into_iter().enumerate() {
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
        let churn_started = Instant::now();
        served.churn(&template, pods, round);
        eprintln!("{arm}: churn sent in {:?}", churn_started.elapsed());
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
        served.clear_marker(&template, pods, round);
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
