//! End to end in "Kubernetes": real processes in real cgroups named the way the kubelet and
//! containerd name them, in two network namespaces with the pods' IPs, a Service ClusterIP
//! translated by nftables the way kube-proxy does, and the agent watching a real API server
//! (tests/support/kube_server.rs) in which the cluster of tests/fixtures/kube was created, with
//! the chart's service account token. The exported spans, logs and metrics must carry the
//! pod's resource attributes and the peer's identity on both sides.

mod support;

use std::{io::Write, process::Child, time::Duration};

use serde_json::{Value, json};
use support::{
    Agent, kube_api,
    kube_cluster::cluster,
    kube_server::{self, AGENT_USER},
    netns::{self, CLIENT_IP, NetPair, SERVER_IP},
    otelcol::Prometheus,
    otlp_json::{attr, histogram, points_of},
    pods::{
        CLUSTER_IP, ContainerCgroup, PORT, Shop, cgroup_v2, ids, real_server, run_in_pod,
        serve_web, set_pod_ip, shop_agent,
    },
    python,
    registry::{emitted, problems, registry},
    serial, skip_reason, support_file, wait_for_line,
};

macro_rules! require {
    () => {
        if let Some(why) = skip_reason()
            .or_else(netns::missing_tools)
            .or_else(cgroup_v2)
        {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// Every (resource attributes, record) of `kind` ("resourceSpans"/"resourceLogs") whose
/// resource has `process.pid` = `pid`.
fn records(otlp: &str, kind: &str, pid: u32) -> Vec<(Value, Value)> {
    let (scopes, items) = match kind {
        "resourceSpans" => ("scopeSpans", "spans"),
        _ => ("scopeLogs", "logRecords"),
    };
    let mut out = Vec::new();
    for line in otlp.lines() {
        let Ok(json) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        for r in json[kind].as_array().into_iter().flatten() {
            if attr(&r["resource"]["attributes"], "process.pid") != Some(pid.to_string()) {
                continue;
            }
            for s in r[scopes].as_array().into_iter().flatten() {
                for item in s[items].as_array().into_iter().flatten() {
                    out.push((
                        r["resource"]["attributes"].clone(),
                        item["attributes"].clone(),
                    ));
                }
            }
        }
    }
    out
}

fn assert_attrs(what: &str, attributes: &Value, expected: &[(&str, &str)]) {
    for (key, value) in expected {
        assert_eq!(
            attr(attributes, key).as_deref(),
            Some(*value),
            "{what}: {key} in {attributes}"
        );
    }
}

#[test]
fn pods_and_peers_are_named_on_both_sides() {
    require!();
    let _guard = serial();
    let Some(server) = real_server() else { return };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Shop {
        cluster: c,
        pair,
        web: (web_uid, web_cid),
        checkout: (checkout_uid, checkout_cid),
    } = Shop::create(&runtime, server);

    let dir = tempfile::tempdir().unwrap();
    let otlp = dir.path().join("otlp.jsonl");
    let config = dir.path().join("netsonde.yaml");
    std::fs::write(
        &config,
        format!(
            "kubernetes:\n  kubeconfig: {}\n  cluster_name: demo\nexport:\n  metric_interval_ms: 500\n",
            c.kubeconfig.display()
        ),
    )
    .unwrap();
    let agent = shop_agent(&config, &otlp, &[]);

    let web_cgroup = ContainerCgroup::create(&web_uid, &web_cid);
    let checkout_cgroup = ContainerCgroup::create(&checkout_uid, &checkout_cid);
    let server = serve_web(&pair, &web_cgroup);
    let server_pid = server.0.id();

    // Three requests on one connection to the Service, as a pod would make them.
    let url = format!("http://{CLUSTER_IP}/items/1");
    let client = run_in_pod(
        &pair,
        &pair.client,
        &checkout_cgroup,
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            &url,
            &url,
            &url,
        ],
    );
    let client_pid = client.id();
    let out = client.wait_with_output().unwrap();
    assert!(out.status.success(), "curl failed");
    // A client that is gone before its exchange reaches the telemetry stage: its pod comes
    // from the cgroup id the kernel put in its connection's open event, not from /proc.
    let client_py = support_file("raw_client.py").display().to_string();
    let quick = run_in_pod(
        &pair,
        &pair.client,
        &checkout_cgroup,
        python(),
        &[&client_py, "pipeline", CLUSTER_IP, "80", "/items/quick"],
    );
    let quick_pid = quick.id();
    assert!(quick.wait_with_output().unwrap().status.success());
    // One metric interval, so the connection and request metrics are exported.
    std::thread::sleep(Duration::from_millis(1200));
    let capture = agent.stop();
    drop(server);
    let otlp = std::fs::read_to_string(&otlp).unwrap();

    assert!(
        capture.stderr.contains("kubernetes: 4 pods on node node-1"),
        "{}",
        capture.stderr
    );
    // The watches' own counts: seven lists, nothing malformed, nothing failed.
    let last = capture.stats.last().expect("a final stats line");
    for field in ["k8s_lists=7", "k8s_malformed=0", "k8s_errors=0"] {
        assert!(last.contains(field), "{field} in {last}");
    }

    // The server: the web pod's resource, its client the checkout pod.
    let server_spans = records(&otlp, "resourceSpans", server_pid);
    assert_eq!(server_spans.len(), 4, "{otlp}");
    let web_resource = [
        ("service.name", "web"),
        ("service.namespace", "shop"),
        ("netsonde.skywalking.service", "demo::web.shop"),
        ("service.version", "1.27.3"),
        ("service.instance.id", "shop.web-7d4b9c6f5d-x2x9k.web"),
        ("k8s.namespace.name", "shop"),
        ("k8s.pod.name", "web-7d4b9c6f5d-x2x9k"),
        ("k8s.pod.uid", web_uid.as_str()),
        ("k8s.container.name", "web"),
        ("k8s.node.name", "node-1"),
        ("k8s.deployment.name", "web"),
        ("k8s.replicaset.name", "web-7d4b9c6f5d"),
        ("k8s.cluster.name", "demo"),
        ("container.id", web_cid.as_str()),
    ];
    let from_checkout = [
        ("netsonde.peer.kind", "pod"),
        ("netsonde.peer.service.name", "checkout-eu"),
        ("netsonde.peer.service.namespace", "shop"),
        ("netsonde.peer.skywalking.service", "demo::checkout-eu.shop"),
        ("netsonde.peer.k8s.namespace.name", "shop"),
        ("netsonde.peer.k8s.pod.name", "checkout-5f6d8b7c9-k8s2d"),
        ("netsonde.peer.k8s.workload.kind", "deployment"),
        ("netsonde.peer.k8s.workload.name", "checkout"),
    ];
    for (resource, span) in &server_spans {
        assert_attrs("server resource", resource, &web_resource);
        assert_attrs("server span", span, &from_checkout);
    }

    // The client: the checkout pod's resource; it talked to the Service web.
    let client_spans = records(&otlp, "resourceSpans", client_pid);
    assert_eq!(client_spans.len(), 3, "{otlp}");
    let to_web = [
        ("server.address", "web.shop.svc.cluster.local"),
        ("network.peer.address", CLUSTER_IP),
        ("netsonde.peer.kind", "service"),
        ("netsonde.peer.service.name", "web"),
        ("netsonde.peer.service.namespace", "shop"),
        ("netsonde.peer.skywalking.service", "demo::web.shop"),
        ("netsonde.peer.k8s.service.name", "web"),
        ("netsonde.peer.k8s.workload.kind", "deployment"),
        ("netsonde.peer.k8s.workload.name", "web"),
    ];
    for (resource, span) in &client_spans {
        assert_attrs(
            "client resource",
            resource,
            &[
                ("service.name", "checkout-eu"),
                ("service.version", "2.3.0"),
                ("k8s.pod.name", "checkout-5f6d8b7c9-k8s2d"),
                ("k8s.deployment.name", "checkout"),
                ("container.id", checkout_cid.as_str()),
            ],
        );
        assert_attrs("client span", span, &to_web);
    }

    let quick_spans = records(&otlp, "resourceSpans", quick_pid);
    assert_eq!(quick_spans.len(), 1, "{otlp}");
    assert_attrs(
        "short-lived client resource",
        &quick_spans[0].0,
        &[
            ("k8s.pod.name", "checkout-5f6d8b7c9-k8s2d"),
            ("container.id", checkout_cid.as_str()),
            ("service.name", "checkout-eu"),
        ],
    );
    assert_attrs("short-lived client span", &quick_spans[0].1, &to_web);

    // Access logs carry the same.
    let server_logs = records(&otlp, "resourceLogs", server_pid);
    assert_eq!(server_logs.len(), 4);
    for (resource, log) in &server_logs {
        assert_attrs("server log resource", resource, &web_resource);
        assert_attrs("server log", log, &from_checkout);
    }

    // Everything emitted is registered (semconv/registry.yaml, docs/telemetry.md).
    let found = problems(&registry(), &emitted(&otlp));
    assert!(
        found.is_empty(),
        "emitted but not registered:\n{}",
        found.join("\n")
    );

    // Metrics are the container's, whichever of its processes made them: curl and the
    // short-lived Python client are two processes of the checkout container, and one
    // resource, with no process in it (its service.instance.id names the container).
    let metric_resources: Vec<Value> = otlp
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .flat_map(|j| j["resourceMetrics"].as_array().cloned().unwrap_or_default())
        .map(|r| r["resource"]["attributes"].clone())
        .filter(|a| attr(a, "container.id").as_deref() == Some(checkout_cid.as_str()))
        .collect();
    assert!(!metric_resources.is_empty(), "{otlp}");
    for resource in &metric_resources {
        assert_attrs(
            "checkout metrics resource",
            resource,
            &[(
                "service.instance.id",
                "shop.checkout-5f6d8b7c9-k8s2d.checkout",
            )],
        );
        assert_eq!(attr(resource, "process.pid"), None, "{resource}");
    }
    for line in otlp.lines().filter(|l| l.contains("resourceMetrics")) {
        let per_export = line.matches(checkout_cid.as_str()).count();
        assert!(per_export <= 1, "one checkout resource per export: {line}");
    }
    let requests = histogram(&points_of(
        &otlp,
        ("container.id", &checkout_cid),
        "http.client.request.duration",
    ));
    assert_eq!(
        requests.0, 4,
        "curl's three requests and the quick client's one"
    );

    // Request and connection metrics name both ends: this end by the resource, the peer by
    // its workload (never its pod, which would grow series without bound).
    for (cid, metric, peer) in [
        (&web_cid, "http.server.request.duration", "checkout-eu"),
        (&checkout_cid, "http.client.request.duration", "web"),
        (&web_cid, "netsonde.connection.opened", "checkout-eu"),
        (&checkout_cid, "netsonde.connection.opened", "web"),
    ] {
        let found = points_of(&otlp, ("container.id", cid), metric);
        assert!(!found.is_empty(), "{metric} of {cid}");
        for p in &found {
            assert_attrs(
                metric,
                &p["attributes"],
                &[("netsonde.peer.service.name", peer)],
            );
            assert_eq!(attr(&p["attributes"], "netsonde.peer.k8s.pod.name"), None);
        }
    }

    // The service graph with names on both ends, in the real Prometheus: the metrics of
    // netsonde's file output posted as they are (OTLP JSON) to its OTLP receiver, configured
    // by otel-config/prometheus.yaml.
    let prometheus = Prometheus::start(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("otel-config/prometheus.yaml"),
    );
    prometheus.push_otlp_json(otlp.lines().filter(|l| l.contains("resourceMetrics")));
    let edges = |metric: &str| {
        let mut found: Vec<(String, String, String, f64)> = prometheus
            .query(&format!(
                "sum by (service_name, k8s_namespace_name, netsonde_peer_service_name) ({metric})"
            ))
            .into_iter()
            .map(|(l, v)| {
                let label = |k: &str| l[k].as_str().unwrap_or_default().to_string();
                (
                    label("k8s_namespace_name"),
                    label("service_name"),
                    label("netsonde_peer_service_name"),
                    v,
                )
            })
            .collect();
        found.sort_by(|a, b| a.partial_cmp(b).unwrap());
        found
    };
    let ns = |s: &str| s.to_string();
    assert_eq!(
        edges("http_client_request_duration_seconds_count"),
        [(ns("shop"), ns("checkout-eu"), ns("web"), 4.0)],
        "the client's side of the edge"
    );
    assert_eq!(
        edges("http_server_request_duration_seconds_count"),
        [(ns("shop"), ns("web"), ns("checkout-eu"), 4.0)],
        "the server's side of the edge"
    );
}

#[test]
fn filters_select_pods_by_label_and_wait_for_unlisted_pods() {
    require!();
    let _guard = serial();
    let Some(server) = real_server() else { return };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let c = runtime.block_on(cluster(server, |object| {
        if object["kind"] == "Pod" && object["metadata"]["name"] == "web-7d4b9c6f5d-x2x9k" {
            set_pod_ip(object, SERVER_IP);
        }
    }));
    let (web_uid, web_cid) = ids(&c.object("web-7d4b9c6f5d-x2x9k"));
    // A checkout pod not on this node yet: created unscheduled (no `spec.nodeName`), its
    // process starts first, and the test binds it to node-1 later, as the scheduler does.
    let late_cid = "4b1f".repeat(16);
    let mut late = c.object("checkout-5f6d8b7c9-k8s2d");
    late["metadata"]["name"] = json!("checkout-5f6d8b7c9-late1");
    late["spec"].as_object_mut().unwrap().remove("nodeName");
    set_pod_ip(&mut late, CLIENT_IP);
    late["status"]["containerStatuses"][0]["containerID"] =
        json!(format!("containerd://{late_cid}"));
    let late = runtime.block_on(kube_server::create(&c.admin, &late));
    let late_uid = late["metadata"]["uid"].as_str().unwrap().to_string();

    let pair = NetPair::create().expect("network namespaces");
    let web_cgroup = ContainerCgroup::create(&web_uid, &web_cid);
    let late_cgroup = ContainerCgroup::create(&late_uid, &late_cid);
    // The server runs before the agent starts: selected from /proc at start.
    let server = serve_web(&pair, &web_cgroup);
    let server_pid = server.0.id();

    let dir = tempfile::tempdir().unwrap();
    let otlp = dir.path().join("otlp.jsonl");
    let config = dir.path().join("netsonde.yaml");
    std::fs::write(
        &config,
        format!(
            "kubernetes:\n  kubeconfig: {}\nfilter:\n  pod_selector:\n    matchExpressions:\n    \
             - key: app.kubernetes.io/name\n      operator: In\n      values: [web, checkout]\n",
            c.kubeconfig.display()
        ),
    )
    .unwrap();
    let agent = Agent::start_with_env(
        &[
            "--config",
            &config.display().to_string(),
            "--exporter",
            "file",
            "--file-path",
            &otlp.display().to_string(),
        ],
        &[("NODE_NAME", "node-1")],
    );

    // A client outside any pod: not traced (the server still sees its request).
    let host_url = format!("http://{SERVER_IP}:{PORT}/items/host");
    let host_curl = pair
        .command(&pair.client, "curl", &["-sS", "-o", "/dev/null", &host_url])
        .status()
        .unwrap();
    assert!(host_curl.success());

    // A client in the unlisted pod: it connects and waits…
    let client_py = support_file("raw_client.py").display().to_string();
    let mut client = run_in_pod(
        &pair,
        &pair.client,
        &late_cgroup,
        python(),
        &[&client_py, "rounds", SERVER_IP, PORT, "1"],
    );
    let client_pid = client.id();
    let mut client_out = std::io::BufReader::new(client.stdout.take().unwrap());
    wait_for_line(&mut client_out, "connected");
    // …until its pod is bound to this node (the node's pod watch sees it then); then it is
    // selected.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !c
        .server
        .requests_of(AGENT_USER)
        .iter()
        .any(|r| r.starts_with("watch /api/v1/pods?") && r.contains("fieldSelector=spec.nodeName"))
    {
        assert!(std::time::Instant::now() < deadline, "no pod watch");
        std::thread::sleep(Duration::from_millis(20));
    }
    runtime.block_on(kube_server::bind(&c.admin, &late, "node-1"));
    let selected = format!("filter: pid {client_pid} is traced now that its pod is listed");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !agent.stderr().contains(&selected) {
        assert!(
            std::time::Instant::now() < deadline,
            "never selected:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let say = |client: &mut Child| {
        let stdin = client.stdin.as_mut().unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    };
    say(&mut client);
    wait_for_line(&mut client_out, "done");
    // Stopped while the client lives: a process gone before its first exchange reaches the
    // telemetry stage can no longer be read from /proc (see docs/kubernetes.md).
    let capture = agent.stop();
    say(&mut client);
    assert!(client.wait().unwrap().success());
    drop(server);
    let otlp = std::fs::read_to_string(&otlp).unwrap();

    assert!(
        capture
            .stderr
            .contains("filter: tracing 1 running processes"),
        "{}",
        capture.stderr
    );
    let path = |records: &[(Value, Value)]| {
        let mut paths: Vec<String> = records
            .iter()
            .filter_map(|(_, s)| attr(s, "url.path"))
            .collect();
        paths.sort();
        paths
    };
    let server_spans = records(&otlp, "resourceSpans", server_pid);
    assert_eq!(path(&server_spans), ["/items/0", "/items/host"]);
    let client_spans = records(&otlp, "resourceSpans", client_pid);
    assert_eq!(path(&client_spans), ["/items/0"]);
    assert_attrs(
        "late client resource",
        &client_spans[0].0,
        &[
            ("k8s.pod.name", "checkout-5f6d8b7c9-late1"),
            ("k8s.pod.uid", late_uid.as_str()),
            ("container.id", late_cid.as_str()),
            ("service.name", "checkout-eu"),
        ],
    );
    // Nothing else was traced: every resource is one of the two pods' (their processes' for
    // spans and logs, their containers' for metrics).
    let pids = [server_pid, client_pid].map(|p| p.to_string());
    let containers = [web_cid.clone(), late_cid.clone()];
    for line in otlp.lines() {
        let json: Value = serde_json::from_str(line).unwrap();
        for kind in ["resourceSpans", "resourceLogs", "resourceMetrics"] {
            for r in json[kind].as_array().into_iter().flatten() {
                let resource = &r["resource"]["attributes"];
                let agent_own = attr(resource, "service.name").as_deref() == Some("netsonde");
                let (key, allowed) = match kind {
                    "resourceMetrics" => ("container.id", &containers),
                    _ => ("process.pid", &pids),
                };
                let value = attr(resource, key).unwrap_or_default();
                assert!(
                    agent_own || allowed.contains(&value),
                    "{kind} of {key} {value}"
                );
            }
        }
    }
}

#[test]
fn without_the_api_server_one_warning_and_process_attributes() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kube_api::write_kubeconfig(&kube_api::dead_url(), dir.path());
    let config = dir.path().join("netsonde.yaml");
    std::fs::write(
        &config,
        format!("kubernetes:\n  kubeconfig: {}\n", kubeconfig.display()),
    )
    .unwrap();
    let otlp = dir.path().join("otlp.jsonl");
    let server = support::PyServer::start();
    let agent = Agent::start_with_env(
        &[
            "--config",
            &config.display().to_string(),
            "--pid",
            &server.pid.to_string(),
            "--exporter",
            "console",
            "--exporter",
            "file",
            "--file-path",
            &otlp.display().to_string(),
        ],
        &[("NODE_NAME", "node-1")],
    );
    support::curl(&[&server.url("/items/1")]);
    let exe = std::fs::read_link(format!("/proc/{}/exe", server.pid)).unwrap();
    let exe = exe.file_name().unwrap().to_string_lossy().to_string();
    let capture = agent.stop();
    let warnings: Vec<&str> = capture
        .stderr
        .lines()
        .filter(|l| l.contains("WARN"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", capture.stderr);
    assert!(
        warnings[0].contains("kubernetes: the API server fails")
            && warnings[0].contains("process and container attributes meanwhile"),
        "{}",
        warnings[0]
    );
    assert_eq!(capture.keys_of(server.pid).len(), 1, "{}", capture.stdout);
    let otlp = std::fs::read_to_string(&otlp).unwrap();
    let spans = records(&otlp, "resourceSpans", server.pid);
    assert_eq!(spans.len(), 1);
    assert_attrs("resource", &spans[0].0, &[("service.name", exe.as_str())]);
    assert_eq!(attr(&spans[0].0, "k8s.pod.name"), None);
    assert_eq!(attr(&spans[0].1, "netsonde.peer.kind"), None);
}
