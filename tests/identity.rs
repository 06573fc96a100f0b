//! What the telemetry says about where it was seen: `host.name` is the node's, whatever
//! namespace the agent itself runs in (a pod without `hostNetwork` has a UTS namespace of its
//! own, named after the pod), and Kubernetes' name for the node when it is given.

mod support;

use std::collections::BTreeSet;

use support::{Agent, Nginx, curl, serial};

/// The agent, in a UTS namespace of its own named like a pod (`unshare --uts`), with `env`,
/// exports one exchange's telemetry to a file; returns every `host.name` its resources carry.
fn host_names_from_a_pod_like_namespace(env: &str) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("otlp.jsonl");
    let nginx = Nginx::start();
    let worker = nginx.worker.to_string();
    let script = format!("hostname netsonde-x7k2p && exec env {env} \"$0\" \"$@\"");
    let agent = Agent::start_with_wrapper(
        &["unshare", "--uts", "sh", "-c", &script],
        &[
            "--pid",
            &worker,
            "--exporter",
            "file",
            "--file-path",
            file.to_str().unwrap(),
        ],
    );
    curl(&[&nginx.url("/index.html")]);
    let capture = agent.stop();
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Ok(json) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        for key in ["resourceSpans", "resourceLogs", "resourceMetrics"] {
            for r in json[key].as_array().into_iter().flatten() {
                for a in r["resource"]["attributes"].as_array().into_iter().flatten() {
                    if a["key"] == "host.name" {
                        names.insert(a["value"]["stringValue"].as_str().unwrap().to_string());
                    }
                }
            }
        }
    }
    assert!(!names.is_empty(), "no resources: {}", capture.stderr);
    names
}

#[test]
fn host_name_is_the_hosts_not_the_agents_namespace() {
    require_privileges!();
    let _guard = serial();
    // The oracle: the kernel's name for this (the host's) UTS namespace, read by the test.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim();
    assert_ne!(host, "netsonde-x7k2p");
    assert_eq!(
        host_names_from_a_pod_like_namespace(""),
        BTreeSet::from([host.to_string()])
    );
}

#[test]
fn host_name_is_the_kubernetes_node_name_when_given() {
    require_privileges!();
    let _guard = serial();
    assert_eq!(
        host_names_from_a_pod_like_namespace("NODE_NAME=node-a.example"),
        BTreeSet::from(["node-a.example".to_string()])
    );
}
