//! Pods without a kubelet: processes in cgroups named the way the kubelet and containerd name
//! them, in the network namespaces of tests/support/netns.rs, for the objects a test created
//! in the real API server (tests/support/kube_server.rs).

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

use super::{
    Agent, comm_of,
    kube_cluster::{Cluster, cluster},
    kube_server::KubeServer,
    netns::{CLIENT_IP, NetPair, SERVER_IP},
    python, support_file,
};

/// The ClusterIP of the Service `web` of tests/fixtures/kube, and the port its pod serves on.
pub const CLUSTER_IP: &str = "10.96.12.34";
pub const PORT: &str = "8080";

/// The fixtures' cluster, created in a real API server, with the web pod at the server
/// namespace's address (the one the Service's EndpointSlice lists) and the checkout pod at the
/// client's, and the Service's ClusterIP translated to the web pod in the client's namespace.
pub struct Shop {
    pub cluster: Cluster,
    pub pair: NetPair,
    /// (pod uid, container id) of the web pod.
    pub web: (String, String),
    /// (pod uid, container id) of the checkout pod.
    pub checkout: (String, String),
}

impl Shop {
    pub fn create(runtime: &tokio::runtime::Runtime, server: KubeServer) -> Shop {
        // The pods' IPs are the namespaces' (the recorded ones are the cluster's).
        let cluster = runtime.block_on(cluster(server, |object| {
            match (object["kind"].as_str(), object["metadata"]["name"].as_str()) {
                (Some("Pod"), Some("web-7d4b9c6f5d-x2x9k")) => set_pod_ip(object, SERVER_IP),
                (Some("Pod"), Some("checkout-5f6d8b7c9-k8s2d")) => set_pod_ip(object, CLIENT_IP),
                (Some("EndpointSlice"), Some("web-x9v2q")) => {
                    object["endpoints"][0]["addresses"] = json!([SERVER_IP]);
                }
                _ => {}
            }
        }));
        let web = ids(&cluster.object("web-7d4b9c6f5d-x2x9k"));
        let checkout = ids(&cluster.object("checkout-5f6d8b7c9-k8s2d"));
        let pair = NetPair::create().expect("network namespaces");
        kube_proxy(&pair, CLUSTER_IP, 80, SERVER_IP, PORT);
        Shop {
            cluster,
            pair,
            web,
            checkout,
        }
    }
}

/// The agent on node-1 as the shop's tests run it: with `config`, tracing the Python server
/// and curl, exporting to the console and to the OTLP JSON file `otlp`, plus `exporters`.
pub fn shop_agent(config: &Path, otlp: &Path, exporters: &[&str]) -> Agent {
    let (config, otlp) = (config.display().to_string(), otlp.display().to_string());
    let python = comm_of(python());
    let mut args = vec!["--config", &config, "--comm", &python, "--comm", "curl"];
    args.extend([
        "--exporter",
        "console",
        "--exporter",
        "file",
        "--file-path",
        &otlp,
    ]);
    for exporter in exporters {
        args.extend(["--exporter", exporter]);
    }
    Agent::start_with_env(&args, &[("NODE_NAME", "node-1")])
}

/// tests/support/http_server.py on the server namespace's address, in `cgroup`; returns once
/// it listens.
pub fn serve_web(pair: &NetPair, cgroup: &ContainerCgroup) -> Running {
    let server_py = support_file("http_server.py").display().to_string();
    let mut server = Running(run_in_pod(
        pair,
        &pair.server,
        cgroup,
        python(),
        &[&server_py, SERVER_IP, PORT],
    ));
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.0.stdout.as_mut().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), format!("ready {PORT}"));
    server
}

/// Where the cgroup v2 hierarchy is mounted, if it is (found as netsonde finds it).
pub fn cgroup_root() -> Option<PathBuf> {
    netsonde::attribution::cgroup::CgroupIds::find_root()
}

pub fn cgroup_v2() -> Option<String> {
    cgroup_root()
        .is_none()
        .then(|| "no cgroup v2 hierarchy is mounted to put the pods' processes in".into())
}

/// A container's cgroup as the kubelet's systemd driver and containerd name it. Removed on
/// drop (once its processes are gone).
pub struct ContainerCgroup {
    dirs: Vec<PathBuf>,
}

impl ContainerCgroup {
    pub fn create(pod_uid: &str, container_id: &str) -> ContainerCgroup {
        let root = cgroup_root().unwrap();
        let pod = format!("kubepods-burstable-pod{}.slice", pod_uid.replace('-', "_"));
        let mut dirs = vec![root.join(format!("netsonde-test-{}.slice", std::process::id()))];
        for part in [
            "kubepods.slice".to_string(),
            "kubepods-burstable.slice".into(),
            pod,
            format!("cri-containerd-{container_id}.scope"),
        ] {
            let next = dirs.last().unwrap().join(part);
            dirs.push(next);
        }
        std::fs::create_dir_all(dirs.last().unwrap()).expect("create the container's cgroup");
        ContainerCgroup { dirs }
    }

    fn procs(&self) -> String {
        self.dirs
            .last()
            .unwrap()
            .join("cgroup.procs")
            .display()
            .to_string()
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `program args…` in namespace `ns`, inside `cgroup` from its first instruction. (The
/// test moves it: `ip netns exec` mounts its own /sys, where the cgroup is not to be seen.)
pub fn run_in_pod(
    pair: &NetPair,
    ns: &str,
    cgroup: &ContainerCgroup,
    program: &str,
    args: &[&str],
) -> Child {
    let mut all = vec!["-c", "read go && exec \"$@\"", "sh", program];
    all.extend_from_slice(args);
    let mut child = pair
        .command(ns, "sh", &all)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn in pod");
    std::fs::write(cgroup.procs(), child.id().to_string()).expect("move into the cgroup");
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(b"go\n").unwrap();
    stdin.flush().unwrap();
    child
}

pub fn set_pod_ip(pod: &mut Value, ip: &str) {
    pod["status"]["podIP"] = json!(ip);
    pod["status"]["podIPs"] = json!([{ "ip": ip }]);
}

/// (pod uid, container id) of a stored pod's first container.
pub fn ids(pod: &Value) -> (String, String) {
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let cid = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .split_once("://")
        .unwrap()
        .1
        .to_string();
    (uid, cid)
}

/// The real API server, or `None` after saying why it cannot run.
pub fn real_server() -> Option<KubeServer> {
    if let Some(why) = super::helm::missing() {
        eprintln!("skipped: the chart's RBAC cannot be rendered: {why}");
        return None;
    }
    KubeServer::start()
        .inspect_err(|why| eprintln!("skipped: no API server: {why}"))
        .ok()
}

/// kube-proxy's job: the Service's `cluster_ip`:`port` translated to the pod at
/// `pod_ip`:`pod_port` in the client's namespace by nftables (a route makes the ClusterIP
/// reachable, as the node's routes do).
pub fn kube_proxy(pair: &NetPair, cluster_ip: &str, port: u16, pod_ip: &str, pod_port: &str) {
    let route = std::process::Command::new("ip")
        .args([
            "-n",
            &pair.client,
            "route",
            "add",
            "10.96.0.0/12",
            "dev",
            "veth0",
        ])
        .status()
        .unwrap();
    assert!(route.success());
    pair.nft(
        &pair.client,
        &format!(
            "table ip kubeproxy {{\n chain output {{\n  type nat hook output priority -100;\n  \
             ip daddr {cluster_ip} tcp dport {port} dnat to {pod_ip}:{pod_port}\n }}\n}}\n"
        ),
    );
}
