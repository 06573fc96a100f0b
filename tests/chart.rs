//! charts/netsonde: rendered by the real `helm template` (Helm v4, tests/support/helm.rs) and
//! linted by `helm lint --strict`, every object read into its Kubernetes type with unknown
//! fields failing, the values schema enforced, the least-privilege choices
//! checked, the plain manifests beside the chart equal to the default rendering, and the agent
//! run with exactly the capabilities the DaemonSet grants.

mod support;

use std::collections::BTreeSet;

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{ConfigMap, Container, Service, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use netsonde::config::Config;
use serde_json::{Value, json};
use support::{
    Agent, PyServer, curl,
    helm::{self, Rendered, as_manifest, manifests_path, render, run_helm, try_render_as, typed},
    serial, skip_reason,
};

/// The chart tests need Helm, built with Go: without Go they say so and pass.
macro_rules! require_helm {
    () => {
        if let Some(why) = helm::missing() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// Every object of a rendering, typed; panics naming the template of a bad one.
struct Objects {
    daemonset: DaemonSet,
    config_map: ConfigMap,
    role: ClusterRole,
    binding: ClusterRoleBinding,
    account: ServiceAccount,
    /// With serviceMonitor.enabled: the headless Service and the ServiceMonitor (a CRD, kept
    /// as JSON: k8s-openapi has no type for it).
    service: Option<Service>,
    monitor: Option<Value>,
}

fn objects(rendered: &[Rendered]) -> Objects {
    let mut kinds = BTreeSet::new();
    let (mut ds, mut cm, mut role, mut binding, mut account) = (None, None, None, None, None);
    let (mut service, mut monitor) = (None, None);
    for r in rendered {
        let kind: Value = serde_saphyr::from_str(&r.text).expect("YAML");
        let kind = kind["kind"].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "DaemonSet" => ds = Some(parse::<DaemonSet>(r, &kind)),
            "ConfigMap" => cm = Some(parse::<ConfigMap>(r, &kind)),
            "ClusterRole" => role = Some(parse::<ClusterRole>(r, &kind)),
            "ClusterRoleBinding" => binding = Some(parse::<ClusterRoleBinding>(r, &kind)),
            "ServiceAccount" => account = Some(parse::<ServiceAccount>(r, &kind)),
            "Service" => service = Some(parse::<Service>(r, &kind)),
            "ServiceMonitor" => monitor = Some(serde_saphyr::from_str(&r.text).expect("YAML")),
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
        service,
        monitor,
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
    require_helm!();
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
        [
            "BPF",
            "PERFMON",
            "SYS_PTRACE",
            "DAC_READ_SEARCH",
            "SYS_NICE"
        ]
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
        [
            "run",
            "--config",
            "/etc/netsonde/config.yaml",
            "--status-listen",
            "0.0.0.0:9464"
        ]
    );
    // The kubelet asks the status endpoint: started and ready on /readyz, alive on /healthz.
    let port = &c.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.container_port),
        (Some("status"), 9464)
    );
    let path = |probe: Option<&k8s_openapi::api::core::v1::Probe>| {
        let get = probe.unwrap().http_get.as_ref().unwrap();
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("status".into())
        );
        get.path.clone().unwrap()
    };
    assert_eq!(path(c.startup_probe.as_ref()), "/readyz");
    assert_eq!(path(c.readiness_probe.as_ref()), "/readyz");
    assert_eq!(path(c.liveness_probe.as_ref()), "/healthz");
    // A rolling update a node at a time; the pods restart when the configuration changes.
    let strategy = ds.spec.as_ref().unwrap().update_strategy.as_ref().unwrap();
    assert_eq!(
        strategy.rolling_update.as_ref().unwrap().max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    let annotations = ds
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap();
    assert!(
        annotations.annotations.as_ref().unwrap()["checksum/config"].len() == 64,
        "{annotations:?}"
    );
    assert!(o.service.is_none() && o.monitor.is_none());
    assert_eq!(
        c.image.as_deref(),
        Some("netsonde/netsonde:0.1.0"),
        "appVersion as the tag"
    );
    // Scheduling and resources from the values.
    let tolerations = spec.tolerations.as_ref().unwrap();
    assert_eq!(tolerations[0].operator.as_deref(), Some("Exists"));
    let selector = spec.node_selector.as_ref().unwrap();
    assert_eq!(selector["kubernetes.io/os"], "linux");
    assert_eq!(
        selector["kubernetes.io/arch"], "amd64",
        "the image is x86-64 only"
    );
    let resources = c.resources.as_ref().unwrap();
    assert_eq!(resources.limits.as_ref().unwrap()["memory"].0, "512Mi");

    // RBAC: read-only, and exactly what the watches use (tests/kube_apiserver.rs proves it
    // against the real authorizer: every permission used, none refused).
    let mut granted = BTreeSet::new();
    for rule in o.role.rules.as_ref().unwrap() {
        assert_eq!(rule.verbs, ["list", "watch"]);
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
    require_helm!();
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
            "SYS_NICE",
            "NET_ADMIN",
            "SYS_RESOURCE"
        ]
    );
}

#[test]
fn the_disk_queue_gets_a_volume_and_the_flag() {
    require_helm!();
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
    require_helm!();
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
    require_helm!();
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
    // CAP_DAC_READ_SEARCH 2, CAP_SYS_PTRACE 19, CAP_SYS_NICE 23, CAP_PERFMON 38, CAP_BPF 39.
    assert_eq!(
        bounding,
        (1 << 2) | (1 << 19) | (1 << 23) | (1 << 38) | (1 << 39)
    );
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
    // SYS_NICE lets the ring reader's thread go ahead of ordinary ones.
    assert!(
        !capture.stderr.contains("keeps the default priority"),
        "{}",
        capture.stderr
    );
}

/// The checksum annotation follows the configuration, so `helm upgrade` with a new config
/// rolls the agents; nothing else moves it.
#[test]
fn a_new_configuration_rolls_the_agents() {
    require_helm!();
    let checksum = |values: Value| {
        objects(&render(&values))
            .daemonset
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()["checksum/config"]
            .clone()
    };
    let default = checksum(json!({}));
    assert_eq!(checksum(json!({"tolerations": []})), default);
    assert_ne!(
        checksum(json!({"config": {"kubernetes": {"cluster_name": "prod"}}})),
        default
    );
}

/// Two releases, or one release name in two namespaces, never share an object: the
/// cluster-scoped ones carry the namespace.
#[test]
fn names_do_not_collide_across_releases_and_namespaces() {
    require_helm!();
    let names = |release: &str, namespace: &str| {
        let o = objects(&try_render_as(release, namespace, &json!({})).unwrap());
        (
            o.daemonset.metadata.name.unwrap(),
            o.role.metadata.name.unwrap(),
            o.binding.metadata.name.unwrap(),
            o.binding.subjects.unwrap()[0].clone(),
        )
    };
    let (ds, role, binding, subject) = names("edge", "observability");
    assert_eq!(ds, "edge-netsonde");
    assert_eq!(role, "edge-netsonde-observability");
    assert_eq!(binding, role);
    assert_eq!(
        (subject.name.as_str(), subject.namespace.as_deref()),
        ("edge-netsonde", Some("observability"))
    );
    let (_, other_role, ..) = names("edge", "staging");
    assert_ne!(other_role, role);
    let (ds, role, ..) = names("netsonde", "netsonde");
    assert_eq!(
        (ds.as_str(), role.as_str()),
        ("netsonde", "netsonde-netsonde")
    );
    let o = objects(&try_render_as("edge", "a", &json!({"fullnameOverride": "probe"})).unwrap());
    assert_eq!(o.daemonset.metadata.name.as_deref(), Some("probe"));
    assert_eq!(o.config_map.metadata.name.as_deref(), Some("probe"));
}

/// The ServiceMonitor selects the agents through a headless Service on the status port.
#[test]
fn the_service_monitor_scrapes_every_agent() {
    require_helm!();
    let o = objects(&render(&json!({
        "serviceMonitor": {"enabled": true, "labels": {"release": "kube-prometheus-stack"}}
    })));
    let service = o.service.expect("a Service");
    let spec = service.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    let pod_labels = o
        .daemonset
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .labels
        .unwrap();
    for (k, v) in spec.selector.as_ref().unwrap() {
        assert_eq!(pod_labels.get(k), Some(v), "the Service selects the agents");
    }
    let monitor = o.monitor.expect("a ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(
        (endpoint["port"].as_str(), endpoint["path"].as_str()),
        (Some("status"), Some("/metrics"))
    );
    assert_eq!(spec.ports.unwrap()[0].name.as_deref(), Some("status"));
    let service_labels = service.metadata.labels.unwrap();
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(service_labels.get(k).map(String::as_str), v.as_str(), "{k}");
    }
    // Without the status endpoint there is nothing to scrape or probe.
    let o = objects(&render(
        &json!({"status": {"enabled": false}, "serviceMonitor": {"enabled": true}}),
    ));
    assert!(o.service.is_none() && o.monitor.is_none());
    let c = container(&o.daemonset);
    assert!(c.ports.is_none() && c.liveness_probe.is_none());
    assert!(
        !c.args
            .as_ref()
            .unwrap()
            .contains(&"--status-listen".to_string())
    );
}

/// values.schema.json: helm refuses a bad value, naming it.
#[test]
fn the_values_schema_refuses_bad_values() {
    require_helm!();
    for (values, named) in [
        (json!({"diskQueue": {"volume": "nfs"}}), "volume"),
        (json!({"status": {"port": 70000}}), "port"),
        (
            json!({"updateStrategy": {"maxUnavailable": "half"}}),
            "maxUnavailable",
        ),
        (json!({"privilegd": true}), "privilegd"),
    ] {
        let e = try_render_as("netsonde", "netsonde", &values).unwrap_err();
        assert!(e.contains(named), "{values}: {e}");
    }
    assert!(
        try_render_as(
            "netsonde",
            "netsonde",
            &json!({"updateStrategy": {"maxUnavailable": "20%"}})
        )
        .is_ok()
    );
}

/// `helm lint --strict`: templates, NOTES.txt and the schema, as Helm checks a chart.
#[test]
fn helm_lint_passes() {
    require_helm!();
    let chart = helm::chart_dir().display().to_string();
    for values in [
        json!({}),
        json!({"serviceMonitor": {"enabled": true}, "diskQueue": {"volume": "emptyDir"}}),
    ] {
        let out = run_helm(&["lint", "--strict", &chart], &values)
            .unwrap_or_else(|e| panic!("helm lint {values}: {e}"));
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
}
