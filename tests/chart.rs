//! charts/netsonde: rendered as `helm template` would (tests/support/helm.rs), every object
//! read into its Kubernetes type with unknown fields failing, the least-privilege choices
//! checked, the plain manifests beside the chart equal to the default rendering, and the agent
//! run with exactly the capabilities the DaemonSet grants.

mod support;

use std::collections::BTreeSet;

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{ConfigMap, Container, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use netsonde::config::Config;
use serde_json::{Value, json};
use support::{
    Agent, PyServer, curl,
    helm::{self, Rendered, as_manifest, manifests_path, render, typed},
    serial, skip_reason,
};

/// Every object of a rendering, typed; panics naming the template of a bad one.
struct Objects {
    daemonset: DaemonSet,
    config_map: ConfigMap,
    role: ClusterRole,
    binding: ClusterRoleBinding,
    account: ServiceAccount,
}

fn objects(rendered: &[Rendered]) -> Objects {
    let mut kinds = BTreeSet::new();
    let (mut ds, mut cm, mut role, mut binding, mut account) = (None, None, None, None, None);
    for r in rendered {
        let kind: Value = serde_saphyr::from_str(&r.text).expect("YAML");
        let kind = kind["kind"].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "DaemonSet" => ds = Some(parse::<DaemonSet>(r, &kind)),
            "ConfigMap" => cm = Some(parse::<ConfigMap>(r, &kind)),
            "ClusterRole" => role = Some(parse::<ClusterRole>(r, &kind)),
            "ClusterRoleBinding" => binding = Some(parse::<ClusterRoleBinding>(r, &kind)),
            "ServiceAccount" => account = Some(parse::<ServiceAccount>(r, &kind)),
            other => panic!("{}: unexpected kind {other:?}", r.template),
        }
        assert!(kinds.insert(kind.clone()), "two {kind}s");
    }
    Objects {
        daemonset: ds.expect("a DaemonSet"),
        config_map: cm.expect("a ConfigMap"),
        role: role.expect("a ClusterRole"),
        binding: binding.expect("a ClusterRoleBinding"),
        account: account.expect("a ServiceAccount"),
    }
}

fn parse<K: serde::de::DeserializeOwned>(r: &Rendered, kind: &str) -> K {
    typed::<K>(&r.text).unwrap_or_else(|e| panic!("{} ({kind}): {e}\n{}", r.template, r.text))
}

fn container(ds: &DaemonSet) -> &Container {
    let spec = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(spec.containers.len(), 1);
    &spec.containers[0]
}

fn added_capabilities(ds: &DaemonSet) -> Vec<String> {
    container(ds)
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.clone())
        .unwrap_or_default()
}

#[test]
fn the_default_rendering_is_valid_and_least_privilege() {
    let o = objects(&render(&json!({})));
    let ds = &o.daemonset;
    let spec = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(spec.host_pid, Some(true));
    assert_eq!(spec.host_network, None, "the host's network is not needed");
    assert_eq!(spec.service_account_name.as_deref(), Some(helm::RELEASE));
    let c = container(ds);
    let security = c.security_context.as_ref().unwrap();
    assert_eq!(security.privileged, Some(false));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    let caps = security.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(
        added_capabilities(ds),
        ["BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH"]
    );
    // NODE_NAME from the downward API.
    let env = c.env.as_ref().unwrap();
    let node = env.iter().find(|e| e.name == "NODE_NAME").unwrap();
    let field = node
        .value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref()
        .unwrap();
    assert_eq!(field.field_path, "spec.nodeName");
    // The host paths it mounts, read-only but for tracefs and bpffs.
    let volumes = spec.volumes.as_ref().unwrap();
    let host_path = |name: &str| {
        volumes
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.host_path.as_ref())
            .map(|h| h.path.clone())
    };
    assert_eq!(host_path("tracefs").as_deref(), Some("/sys/kernel/tracing"));
    assert_eq!(host_path("bpffs").as_deref(), Some("/sys/fs/bpf"));
    assert_eq!(host_path("proc").as_deref(), Some("/proc"));
    assert_eq!(host_path("cgroup").as_deref(), Some("/sys/fs/cgroup"));
    let mounts = c.volume_mounts.as_ref().unwrap();
    for m in mounts {
        let writable = ["tracefs", "bpffs"].contains(&m.name.as_str());
        assert_eq!(m.read_only.unwrap_or(false), !writable, "{}", m.name);
    }
    assert_eq!(
        c.args.as_deref().unwrap(),
        ["run", "--config", "/etc/netsonde/config.yaml"]
    );
    assert_eq!(
        c.image.as_deref(),
        Some("netsonde/netsonde:0.1.0"),
        "appVersion as the tag"
    );
    // Scheduling and resources from the values.
    let tolerations = spec.tolerations.as_ref().unwrap();
    assert_eq!(tolerations[0].operator.as_deref(), Some("Exists"));
    assert_eq!(
        spec.node_selector.as_ref().unwrap()["kubernetes.io/os"],
        "linux"
    );
    let resources = c.resources.as_ref().unwrap();
    assert_eq!(resources.limits.as_ref().unwrap()["memory"].0, "512Mi");

    // RBAC: read-only, and exactly what the watches use.
    let mut granted = BTreeSet::new();
    for rule in o.role.rules.as_ref().unwrap() {
        assert_eq!(rule.verbs, ["get", "list", "watch"]);
        for group in rule.api_groups.as_ref().unwrap() {
            for resource in rule.resources.as_ref().unwrap() {
                granted.insert(format!("{group}/{resource}"));
            }
        }
    }
    assert_eq!(
        granted,
        BTreeSet::from(
            [
                "/pods",
                "/services",
                "/nodes",
                "discovery.k8s.io/endpointslices",
                "apps/replicasets",
                "batch/jobs"
            ]
            .map(String::from)
        )
    );
    let subject = &o.binding.subjects.as_ref().unwrap()[0];
    assert_eq!(subject.name, o.account.metadata.name.clone().unwrap());
    assert_eq!(
        o.binding.role_ref.name,
        o.role.metadata.name.clone().unwrap()
    );

    // The ConfigMap is a config netsonde accepts (every key known).
    let config_yaml = &o.config_map.data.as_ref().unwrap()["config.yaml"];
    let config = Config::from_yaml(config_yaml).unwrap_or_else(|e| panic!("{e}\n{config_yaml}"));
    assert_eq!(
        config.export.otlp.endpoint.as_deref(),
        Some("http://otel-collector.observability.svc:4317")
    );
}

#[test]
fn values_switch_privileges_and_reach_the_config() {
    let o = objects(&render(&json!({
        "privileged": true,
        "config": {"export": {"otlp": {"endpoint": "http://tempo.tracing:4317"}},
                   "kubernetes": {"cluster_name": "prod-eu"},
                   "filter": {"exclude_namespaces": ["kube-system"]}},
        "image": {"tag": "0.1.1"},
        "tolerations": [],
        "podAnnotations": {"example.com/team": "sre"},
    })));
    let c = container(&o.daemonset);
    let security = c.security_context.as_ref().unwrap();
    assert_eq!(security.privileged, Some(true));
    assert!(security.capabilities.is_none(), "privileged needs no list");
    assert_eq!(c.image.as_deref(), Some("netsonde/netsonde:0.1.1"));
    let spec = o.daemonset.spec.as_ref().unwrap();
    assert!(spec.template.spec.as_ref().unwrap().tolerations.is_none());
    assert_eq!(
        spec.template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["example.com/team"],
        "sre"
    );
    let config = Config::from_yaml(&o.config_map.data.as_ref().unwrap()["config.yaml"]).unwrap();
    assert_eq!(
        config.export.otlp.endpoint.as_deref(),
        Some("http://tempo.tracing:4317")
    );
    assert_eq!(config.kubernetes.cluster_name.as_deref(), Some("prod-eu"));
    assert_eq!(config.filter.exclude_namespaces, ["kube-system"]);

    let o = objects(&render(&json!({
        "capabilities": {"netAdmin": true, "sysResource": true},
    })));
    assert_eq!(
        added_capabilities(&o.daemonset),
        [
            "BPF",
            "PERFMON",
            "SYS_PTRACE",
            "DAC_READ_SEARCH",
            "NET_ADMIN",
            "SYS_RESOURCE"
        ]
    );
}

#[test]
fn the_disk_queue_gets_a_volume_and_the_flag() {
    let queue_mount = |ds: &DaemonSet| {
        container(ds)
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "disk-queue")
            .map(|m| m.mount_path.clone())
    };
    let volume = |ds: &DaemonSet| {
        ds.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "disk-queue")
            .cloned()
    };
    let o = objects(&render(&json!({})));
    assert_eq!(queue_mount(&o.daemonset), None);
    assert!(volume(&o.daemonset).is_none());
    assert!(
        !container(&o.daemonset)
            .args
            .as_ref()
            .unwrap()
            .contains(&"--disk-queue".to_string())
    );

    let o = objects(&render(&json!({"diskQueue": {"volume": "hostPath"}})));
    let args = container(&o.daemonset).args.clone().unwrap();
    let dir = &args[args.iter().position(|a| a == "--disk-queue").unwrap() + 1];
    assert_eq!(queue_mount(&o.daemonset).as_ref(), Some(dir));
    let host = volume(&o.daemonset).unwrap().host_path.unwrap();
    assert_eq!(host.path, "/var/lib/netsonde/queue");
    assert_eq!(host.type_.as_deref(), Some("DirectoryOrCreate"));

    let o = objects(&render(&json!({"diskQueue": {"volume": "emptyDir"}})));
    let empty = volume(&o.daemonset).unwrap().empty_dir.unwrap();
    assert_eq!(empty.size_limit.unwrap().0, "2Gi");
    assert!(queue_mount(&o.daemonset).is_some());
}

#[test]
fn a_misspelt_field_fails() {
    let good = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n";
    assert!(typed::<ServiceAccount>(good).is_ok());
    let unknown = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n  lables: {a: b}\n";
    assert_eq!(
        typed::<ServiceAccount>(unknown).unwrap_err(),
        "unknown fields: metadata.?.lables"
    );
    let mistyped = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: a}\nspec:\n  selector: {}\n  \
                    template:\n    spec:\n      hostPID: yes please\n      containers: []\n";
    assert!(typed::<DaemonSet>(mistyped).is_err());
}

#[test]
fn the_plain_manifests_are_the_default_rendering() {
    let expected = as_manifest(&render(&json!({})));
    let path = manifests_path();
    if std::env::var_os("NETSONDE_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "charts/netsonde.yaml is stale: run NETSONDE_UPDATE_DOCS=1 cargo test --test chart"
    );
    // And it reads back as the same objects.
    let docs: Vec<Rendered> = actual
        .split("\n---\n")
        .skip(1)
        .map(|d| Rendered {
            template: "charts/netsonde.yaml".into(),
            text: d.to_string(),
        })
        .collect();
    objects(&docs);
}

/// Capability names as `setpriv` spells them.
fn setpriv_caps(caps: &[String]) -> String {
    let mut list = String::from("-all");
    for c in caps {
        list.push_str(&format!(",+{}", c.to_lowercase()));
    }
    list
}

#[test]
fn the_agent_runs_with_only_the_charts_capabilities() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let setpriv = std::process::Command::new("setpriv")
        .arg("--version")
        .output();
    if setpriv.is_err() {
        eprintln!("skipped: setpriv (Debian package util-linux) is not installed");
        return;
    }
    let _guard = serial();
    let o = objects(&render(&json!({})));
    let caps = setpriv_caps(&added_capabilities(&o.daemonset));
    let server = PyServer::start();
    let pid = server.pid.to_string();
    // As root, but with the bounding set cut to the chart's list: after exec the agent holds
    // those capabilities and nothing else (as a container with `drop: [ALL]` and `add`).
    let agent = Agent::start_with_wrapper(
        &[
            "setpriv",
            "--bounding-set",
            &caps,
            "--inh-caps",
            &caps,
            "--",
        ],
        &["--pid", &pid, "--exporter", "console"],
    );
    let held = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let bounding = held
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    // CAP_DAC_READ_SEARCH 2, CAP_SYS_PTRACE 19, CAP_PERFMON 38, CAP_BPF 39.
    assert_eq!(bounding, (1 << 2) | (1 << 19) | (1 << 38) | (1 << 39));
    curl(&[&server.url("/items/1")]);
    let capture = agent.stop();
    assert_eq!(
        capture.keys_of(server.pid),
        [(
            "server".to_string(),
            "GET".to_string(),
            "/items/1".to_string(),
            200
        )],
        "{}",
        capture.stderr
    );
}
