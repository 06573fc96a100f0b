//! netsonde → Apache SkyWalking OAP, end to end: two "pods" of the fixtures' cluster (real
//! processes in kubelet-named cgroups and network namespaces, the cluster created in a real API
//! server), a client pod calling the server pod through its Service's ClusterIP, netsonde
//! exporting OTLP straight to a real OAP (tests/support/oap.rs) that runs the rules users copy
//! (otel-config/skywalking). What OAP shows is read through its own query API (GraphQL, with
//! MQE for the metrics) and compared with curl's own account of what it did: every request's
//! status, connect count and time (`--write-out`).

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use serde_json::{Value, json};
use support::{
    netns::{self, NetPair},
    oap::Oap,
    otlp_json::{all_points_of, attr, counted},
    pods::{
        CLUSTER_IP, ContainerCgroup, PORT, Shop, cgroup_v2, real_server, run_in_pod, serve_web,
        shop_agent,
    },
    registry::{Registry, registry, root},
    serial, skip_reason,
};

/// The server and client as SkyWalking's Kubernetes layer names them, in cluster `demo`:
/// `service.name` and namespace of tests/fixtures/kube's web and checkout pods.
const WEB: &str = "demo::web.shop";
const CHECKOUT: &str = "demo::checkout-eu.shop";

/// One request as curl saw it: (path, status, new connections it opened, seconds).
type Made = (String, u16, u64, f64);

/// Runs curl in the checkout pod for `paths` (one command: one connection while the server
/// keeps it open) and returns what curl says it did.
fn curl_in_pod(pair: &NetPair, cgroup: &ContainerCgroup, paths: &[&str]) -> Vec<Made> {
    let mut args = vec![
        "-sS".to_string(),
        "--write-out".into(),
        "%{http_code} %{num_connects} %{time_total}\\n".into(),
    ];
    for path in paths {
        args.extend(["-o".into(), "/dev/null".into()]);
        args.push(format!("http://{CLUSTER_IP}{path}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_in_pod(pair, &pair.client, cgroup, "curl", &args)
        .wait_with_output()
        .unwrap();
    assert!(out.status.success(), "curl failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let made: Vec<Made> = text
        .lines()
        .zip(paths)
        .map(|(line, path)| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (
                path.to_string(),
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(made.len(), paths.len(), "curl wrote: {text}");
    made
}

/// An MQE expression's values for `entity`: (labels, value) per series with a value.
fn mqe(oap: &Oap, expression: &str, entity: Value) -> Vec<(Vec<(String, String)>, f64)> {
    let data = oap.graphql(
        "query($e: String!, $entity: Entity!, $d: Duration!) { \
           r: execExpression(expression: $e, entity: $entity, duration: $d) { \
             error results { metric { labels { key value } } values { value } } } }",
        json!({ "e": expression, "entity": entity, "d": oap.query_window() }),
    );
    let r = &data["r"];
    assert!(r["error"].is_null(), "{expression}: {r}");
    let mut found = Vec::new();
    for series in r["results"].as_array().unwrap() {
        let labels = series["metric"]["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["key"].as_str().unwrap().to_string(),
                    l["value"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        for v in series["values"].as_array().unwrap() {
            if let Some(value) = v["value"].as_str().and_then(|s| s.parse().ok()) {
                found.push((labels, value));
                break;
            }
        }
    }
    found
}

/// The total of a per-minute metric over the window (MQE's `sum` of its minutes); 0 when OAP
/// has no value.
fn total(oap: &Oap, metric: &str, entity: &Value) -> f64 {
    mqe(oap, &format!("sum({metric})"), entity.clone())
        .first()
        .map_or(0.0, |(_, v)| *v)
}

/// The mean time of `<prefix>_duration` (µs) over `<prefix>_cpm`, in ms, for the window.
fn mean_ms(oap: &Oap, prefix: &str, entity: &Value) -> f64 {
    let calls = total(oap, &format!("{prefix}_cpm"), entity);
    assert!(calls > 0.0, "no {prefix}_cpm");
    total(oap, &format!("{prefix}_duration"), entity) / calls / 1000.0
}

/// Every widget of a dashboard with the kind of entity the UI runs its expressions for and
/// the expressions: (title, entity kind, expressions). The dashboard's own summary and the
/// topology's node and link expressions count as widgets too; a list runs its expressions
/// for each item listed.
fn widgets(config: &Value) -> Vec<(String, String, Vec<String>)> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str().map(str::to_string))
            .collect()
    };
    let own = config["entity"].as_str().unwrap().to_string();
    let mut found = vec![(
        "summary".into(),
        own.clone(),
        strings(&config["expressions"]),
    )];
    let mut stack: Vec<&Value> = config["children"].as_array().unwrap().iter().collect();
    while let Some(node) = stack.pop() {
        let title = node["widget"]["title"]
            .as_str()
            .unwrap_or("topology")
            .to_string();
        let kind = match node["graph"]["type"].as_str() {
            Some("InstanceList") => "ServiceInstance".to_string(),
            Some("EndpointList") => "Endpoint".to_string(),
            _ => own.clone(),
        };
        found.push((title.clone(), kind, strings(&node["expressions"])));
        for (key, kind) in [
            ("nodeExpressions", "Service"),
            ("linkServerExpressions", "ServiceRelation"),
            ("linkClientExpressions", "ServiceRelation"),
        ] {
            found.push((format!("{title} {key}"), kind.into(), strings(&node[key])));
        }
        stack.extend(node["children"].as_array().into_iter().flatten());
    }
    found.retain(|(_, _, e)| !e.is_empty());
    found
}

/// Widgets of the dashboards that the test's traffic leaves empty, and why.
fn empty(widget: &str, dashboard: &str) -> Option<&'static str> {
    match (dashboard, widget) {
        ("netsonde-Service" | "netsonde-Pod", "Connect Mean Time (ms)") => {
            Some("the server pod connects to nothing")
        }
        ("netsonde-Endpoint", "HTTP 5xx (calls / min)") => {
            Some("the endpoint shown, GET:/items/{id}, answered no 5xx")
        }
        _ => None,
    }
}

fn service(name: &str) -> Value {
    json!({ "serviceName": name, "normal": true })
}

fn relation(client: &str, server: &str) -> Value {
    json!({ "serviceName": client, "normal": true, "destServiceName": server, "destNormal": true })
}

#[test]
fn oap_shows_services_topology_metrics_and_endpoints() {
    if let Some(why) = skip_reason()
        .or_else(netns::missing_tools)
        .or_else(cgroup_v2)
    {
        eprintln!("skipped: {why}");
        return;
    }
    let _guard = serial();
    let oap = match Oap::start() {
        Ok(oap) => oap,
        Err(why) => {
            eprintln!("skipped: no SkyWalking OAP: {why}");
            return;
        }
    };
    let Some(server) = real_server() else { return };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Shop {
        cluster: c,
        pair,
        web: (web_uid, web_cid),
        checkout: (checkout_uid, checkout_cid),
    } = Shop::create(&runtime, server);

    // As docs/skywalking.md says: delta temporality, metrics only, straight to OAP's gRPC port.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("netsonde.yaml");
    // What netsonde exported, also written to a file: what OAP shows must add up to it.
    let otlp = dir.path().join("otlp.jsonl");
    std::fs::write(
        &config,
        format!(
            "kubernetes:\n  kubeconfig: {}\n  cluster_name: demo\nexport:\n  \
             metric_interval_ms: 500\n  metric_temporality: delta\n  \
             signals: {{traces: false, logs: false}}\n  otlp:\n    endpoint: {}\n    protocol: grpc\n",
            c.kubeconfig.display(),
            oap.otlp_endpoint()
        ),
    )
    .unwrap();
    let agent = shop_agent(&config, &otlp, &["otlp"]);

    let web_cgroup = ContainerCgroup::create(&web_uid, &web_cid);
    let checkout_cgroup = ContainerCgroup::create(&checkout_uid, &checkout_cid);
    let web = serve_web(&pair, &web_cgroup);

    // Two curl runs: items, a 503 and a 404 (after which the server closes: curl connects
    // again, and says so), then two more on a connection of their own.
    let mut made = curl_in_pod(
        &pair,
        &checkout_cgroup,
        &[
            "/items/1", "/items/2", "/fail", "/items/3", "/missing", "/items/4",
        ],
    );
    // Then eleven more while every fourth packet carrying data to the server is dropped (only
    // requests: lost handshakes, ACKs or FINs would be retransmitted after curl closed, when
    // no connection is left to name): curl's side retransmits. The kernel's own
    // TcpRetransSegs, per namespace, says how many.
    let retransmits = |ns: &str| pair.nstat(ns, "TcpRetransSegs");
    let before = (retransmits(&pair.client), retransmits(&pair.server));
    pair.nft(
        &pair.server,
        &format!(
            "table inet lossy {{\n chain input {{\n  type filter hook input priority 0;\n  \
             tcp dport {PORT} ip length > 60 numgen inc mod 4 == 0 counter drop\n }}\n}}\n"
        ),
    );
    let more: Vec<String> = (5..15).map(|i| format!("/items/{i}")).collect();
    let mut paths: Vec<&str> = more.iter().map(String::as_str).collect();
    paths.push("/chunked");
    made.extend(curl_in_pod(&pair, &checkout_cgroup, &paths));
    let dropped = pair.nft_counted(&pair.server, "lossy");
    pair.nft(&pair.server, "delete table inet lossy");
    pair.wait_until_acked(Duration::from_secs(30));
    let retransmitted = (
        retransmits(&pair.client) - before.0,
        retransmits(&pair.server) - before.1,
    );
    assert!(
        dropped > 0 && retransmitted.0 > 0,
        "dropped {dropped}, retransmitted {retransmitted:?}"
    );
    // A few metric intervals, so the last points are exported; then OAP's aggregation and
    // its write to storage.
    std::thread::sleep(Duration::from_millis(1500));
    let capture = agent.stop();
    drop(web);
    std::thread::sleep(oap.persist_wait());
    let last = capture.stats.last().expect("a final stats line");
    assert!(last.contains("export_failures=0"), "{last}");
    assert!(last.contains("export_dropped=0"), "{last}");

    let requests = made.len() as f64;
    let with = |class: char| {
        made.iter()
            .filter(|m| m.1.to_string().starts_with(class))
            .count() as f64
    };
    let connections: f64 = made.iter().map(|m| m.2 as f64).sum();
    let slowest_ms = made.iter().map(|m| m.3 * 1000.0).fold(0.0, f64::max);
    assert_eq!(
        (requests, with('2'), with('4'), with('5')),
        (17.0, 15.0, 1.0, 1.0)
    );
    let otlp = std::fs::read_to_string(&otlp).unwrap();

    // (1) The services, in the Kubernetes service layer.
    let listed = oap.graphql(
        "{ s: listServices(layer: \"K8S_SERVICE\") { name normal layers } }",
        json!({}),
    );
    let names: BTreeSet<&str> = listed["s"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([CHECKOUT, WEB]),
        "{listed}\n{}",
        oap.log_tail()
    );

    // (2) The topology: one call, checkout → web, seen from both ends.
    let topology = oap.graphql(
        "query($d: Duration!) { t: getGlobalTopology(duration: $d, layer: \"K8S_SERVICE\") { \
           nodes { id name isReal } \
           calls { source target detectPoints sourceComponents targetComponents } } }",
        json!({ "d": oap.query_window() }),
    );
    let node = |name: &str| {
        topology["t"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {topology}"))["id"]
            .clone()
    };
    let calls = topology["t"]["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{topology}\n{}", oap.log_tail());
    assert_eq!(calls[0]["source"], node(CHECKOUT), "{topology}");
    assert_eq!(calls[0]["target"], node(WEB), "{topology}");
    let points: BTreeSet<&str> = calls[0]["detectPoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(points, BTreeSet::from(["CLIENT", "SERVER"]), "{topology}");
    // HTTP and TCP (49 and 110 in OAP's catalogue of components), seen from both ends.
    for end in ["sourceComponents", "targetComponents"] {
        let components: BTreeSet<&str> = calls[0][end]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(
            components,
            BTreeSet::from(["http", "tcp"]),
            "{end}: {topology}"
        );
    }

    // (3) The server's HTTP and TCP metrics: curl's requests, statuses and connections.
    let web_entity = service(WEB);
    for (metric, want) in [
        ("meter_netsonde_service_http_call_cpm", requests),
        ("meter_netsonde_service_http_status_2xx_cpm", with('2')),
        ("meter_netsonde_service_http_status_4xx_cpm", with('4')),
        ("meter_netsonde_service_http_status_5xx_cpm", with('5')),
        ("meter_netsonde_service_accept_cpm", connections),
    ] {
        assert_eq!(total(&oap, metric, &web_entity), want, "{metric} of {WEB}");
    }
    let checkout_entity = service(CHECKOUT);
    assert_eq!(
        total(&oap, "meter_netsonde_service_connect_cpm", &checkout_entity),
        connections,
        "connections checkout made"
    );
    // The server's mean time for a request is within what curl measured: above nothing, at
    // most curl's slowest request.
    let mean = mean_ms(&oap, "meter_netsonde_service_http_call", &web_entity);
    assert!(
        mean > 0.0 && mean <= slowest_ms,
        "{mean} ms, curl's slowest {slowest_ms}"
    );
    assert!(
        total(&oap, "meter_netsonde_service_write_bytes", &web_entity) > 0.0
            && total(&oap, "meter_netsonde_service_read_bytes", &web_entity) > 0.0,
        "bytes both ways"
    );

    // (4) The edge's metrics, from each end.
    let edge = relation(CHECKOUT, WEB);
    for side in ["client", "server"] {
        let prefix = format!("meter_netsonde_service_relation_{side}");
        assert_eq!(
            total(&oap, &format!("{prefix}_http_call_cpm"), &edge),
            requests,
            "{side}'s requests on the edge"
        );
        assert_eq!(
            total(&oap, &format!("{prefix}_http_status_5xx_cpm"), &edge),
            with('5'),
            "{side}'s 5xx on the edge"
        );
        assert_eq!(
            total(&oap, &format!("{prefix}_connection_cpm"), &edge),
            connections,
            "{side}'s connections on the edge"
        );
        let mean = mean_ms(&oap, &format!("{prefix}_http_call"), &edge);
        assert!(
            mean > 0.0 && mean <= slowest_ms,
            "{side}: {mean} ms, curl's slowest {slowest_ms}"
        );
    }

    // The kernel layer: every retransmit the kernel counted in each namespace, on each
    // service and on the edge from that end; every drop netsonde reported; a mean time for
    // each layer netsonde timed.
    for (name, cid, retransmitted, side) in [
        (CHECKOUT, &checkout_cid, retransmitted.0, "client"),
        (WEB, &web_cid, retransmitted.1, "server"),
    ] {
        let entity = service(name);
        assert_eq!(
            total(&oap, "meter_netsonde_service_retransmit_cpm", &entity),
            retransmitted as f64,
            "{name}: TcpRetransSegs of its namespace"
        );
        assert_eq!(
            total(
                &oap,
                &format!("meter_netsonde_service_relation_{side}_retransmit_cpm"),
                &edge
            ),
            retransmitted as f64,
            "{side}'s retransmits on the edge"
        );
        let drops = counted(
            &all_points_of(&otlp, ("container.id", cid), "netsonde.kernel.drops"),
            None,
        );
        assert_eq!(
            total(&oap, "meter_netsonde_service_drop_cpm", &entity),
            drops as f64,
            "{name}: the drops netsonde exported"
        );
        let timed: BTreeSet<(String, String)> = all_points_of(
            &otlp,
            ("container.id", cid),
            "netsonde.kernel.layer.duration",
        )
        .iter()
        .map(|p| {
            let a = |k| attr(&p["attributes"], k).unwrap();
            (a("netsonde.kernel.layer"), a("network.io.direction"))
        })
        .collect();
        assert!(!timed.is_empty(), "{name}: no kernel layer timed");
        for (layer, direction) in &timed {
            let select = format!("{{layer='{layer}',direction='{direction}'}}");
            for metric in ["kernel_layer_duration", "kernel_layer_timed_cpm"] {
                let expression = format!("meter_netsonde_service_{metric}{select}");
                let found = mqe(&oap, &expression, entity.clone());
                assert!(
                    found.iter().any(|(_, v)| *v >= 1.0),
                    "{name}: {expression}: {found:?}"
                );
            }
        }
    }
    assert!(
        total(&oap, "meter_netsonde_service_drop_cpm", &web_entity) > 0.0,
        "the server's namespace dropped {dropped}"
    );

    // (5) The server's endpoints: the routes requested, named as Rover names them.
    let web_id = node(WEB);
    let endpoints = oap.graphql(
        "query($id: ID!) { e: findEndpoint(keyword: \"\", serviceId: $id, limit: 50) { name } }",
        json!({ "id": web_id }),
    );
    let found: BTreeSet<&str> = endpoints["e"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        found,
        BTreeSet::from([
            "GET:/chunked",
            "GET:/fail",
            "GET:/items/{id}",
            "GET:/missing"
        ]),
        "{endpoints}"
    );
    let items = json!({ "serviceName": WEB, "normal": true, "endpointName": "GET:/items/{id}" });
    assert_eq!(
        total(&oap, "meter_netsonde_endpoint_http_call_cpm", &items),
        14.0
    );

    // And the pods, as the service's instances.
    let instances = oap.graphql(
        "query($id: ID!, $d: Duration!) { i: listInstances(duration: $d, serviceId: $id) { name } }",
        json!({ "id": web_id, "d": oap.query_window() }),
    );
    assert_eq!(
        instances["i"][0]["name"], "web-7d4b9c6f5d-x2x9k",
        "{instances}"
    );
    // The dashboards of otel-config/skywalking/ui-initialized-templates, as OAP loaded them:
    // every expression in them runs, for an entity of the dashboard's kind, without error,
    // and every widget has something to show (but those named in `empty`, with why).
    let entities = [
        ("Service", web_entity.clone()),
        (
            "ServiceInstance",
            json!({ "serviceName": WEB, "normal": true, "serviceInstanceName": "web-7d4b9c6f5d-x2x9k" }),
        ),
        ("Endpoint", items.clone()),
        ("ServiceRelation", edge.clone()),
    ];
    let templates = oap.graphql("{ t: getAllTemplates { id configuration } }", json!({}));
    let mut seen = BTreeSet::new();
    let mut blank = Vec::new();
    for t in templates["t"].as_array().unwrap() {
        let config: Value = serde_json::from_str(t["configuration"].as_str().unwrap()).unwrap();
        let Some(name) = config["name"]
            .as_str()
            .filter(|n| n.starts_with("netsonde-"))
        else {
            continue;
        };
        seen.insert(name.to_string());
        for (widget, kind, expressions) in widgets(&config) {
            let entity = &entities
                .iter()
                .find(|(k, _)| *k == kind)
                .unwrap_or_else(|| panic!("{name}: entity {kind}"))
                .1;
            let shown: Vec<bool> = expressions
                .iter()
                .map(|e| !mqe(&oap, e, entity.clone()).is_empty())
                .collect();
            if !shown.contains(&true) && empty(&widget, name).is_none() {
                blank.push(format!(
                    "{name}: widget {widget} shows nothing: {expressions:?}"
                ));
            }
        }
    }
    assert!(blank.is_empty(), "{}", blank.join("\n"));
    assert_eq!(
        seen,
        BTreeSet::from(
            [
                "netsonde-Endpoint",
                "netsonde-Pod",
                "netsonde-Service",
                "netsonde-Service-Relation"
            ]
            .map(String::from)
        )
    );

    let errors = oap.errors();
    assert!(
        errors.is_empty(),
        "OAP logged errors:\n{}",
        errors.join("\n")
    );
}

/// A MAL rule file of otel-config/skywalking/otel-rules, as OAP reads it.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RuleFile {
    filter: String,
    exp_suffix: String,
    metric_prefix: String,
    metrics_rules: Vec<MetricRule>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricRule {
    name: String,
    exp: String,
}

/// The metrics and labels a rule reads: (metric families, label keys). Families are the
/// identifiers not reached through a `.` (functions are) and not MAL's own words; labels are
/// the first argument of `tag*` filters, the items of label lists and what `tags` is indexed
/// with, leaving out the labels the rule itself makes (`tags.x = …`).
fn references(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let family = regex::Regex::new(r"(^|[^.\w'])([a-z][a-z0-9_]*)\b").unwrap();
    let words = ["tags", "Layer", "DetectPoint", "SUM"];
    let families = family
        .captures_iter(text)
        .map(|c| c[2].to_string())
        .filter(|w| !words.contains(&w.as_str()))
        .filter(|w| !text.contains(&format!("'{w}'")))
        .collect();
    let made: BTreeSet<String> = regex::Regex::new(r"tags\.(\w+) =")
        .unwrap()
        .captures_iter(text)
        .map(|c| c[1].to_string())
        .collect();
    let mut labels = BTreeSet::new();
    for pattern in [
        r"tag(?:Equal|NotEqual|Match|NotMatch)\('([^']+)'",
        r"tags\['([^']+)'\]",
        r"tags\.(\w+)",
    ] {
        for c in regex::Regex::new(pattern).unwrap().captures_iter(text) {
            labels.insert(c[1].to_string());
        }
    }
    let quoted = regex::Regex::new(r"'([^']+)'").unwrap();
    for list in regex::Regex::new(r"\[([^\]]*)\]")
        .unwrap()
        .captures_iter(text)
    {
        for item in quoted.captures_iter(&list[1]) {
            labels.insert(item[1].to_string());
        }
    }
    labels.retain(|l| !made.contains(l) && l != "le");
    (families, labels)
}

/// Every metric a rule reads is one netsonde emits (in OAP's form: dots become underscores, a
/// histogram is also `_count` and `_sum`), and every label is an attribute of that metric
/// (as emitted) or of the workload's resource (OAP turns its dots into underscores), all in
/// semconv/registry.yaml. Also the filter's and entity's labels.
#[test]
fn the_rules_name_only_registered_metrics_and_attributes() {
    let registry: Registry = registry();
    let oap_name = |name: &str| name.replace('.', "_");
    let mut metrics: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in &registry.metrics {
        let attributes: BTreeSet<String> = m.attributes.iter().cloned().collect();
        metrics.insert(oap_name(&m.name), attributes.clone());
        if m.instrument == "histogram" {
            for part in ["_count", "_sum"] {
                metrics.insert(oap_name(&m.name) + part, attributes.clone());
            }
        }
    }
    let resource: BTreeSet<String> = registry.resources["workload"]
        .iter()
        .map(|a| oap_name(a))
        .collect();
    let dir = root().join("otel-config/skywalking/otel-rules/netsonde");
    let made = regex::Regex::new(r"tags\.(\w+) =").unwrap();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let file: RuleFile =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        files += 1;
        assert!(
            file.metric_prefix.starts_with("meter_netsonde_"),
            "{}",
            path.display()
        );
        let (_, mut entity_labels) = references(&format!("{} {}", file.filter, file.exp_suffix));
        // Labels the rules make (`endpoint`) name entities too.
        for rule in &file.metrics_rules {
            for c in made.captures_iter(&rule.exp) {
                entity_labels.remove(&c[1]);
            }
        }
        for label in &entity_labels {
            assert!(
                resource.contains(label) || registry.attributes.iter().any(|a| &a.name == label),
                "{}: label {label} is not registered",
                path.display()
            );
        }
        for rule in &file.metrics_rules {
            let (families, labels) = references(&rule.exp);
            assert!(
                !families.is_empty(),
                "{}: {} reads nothing",
                path.display(),
                rule.name
            );
            for family in &families {
                let Some(attributes) = metrics.get(family) else {
                    panic!(
                        "{}: {}: {family} is not a metric netsonde emits",
                        path.display(),
                        rule.name
                    )
                };
                for label in &labels {
                    assert!(
                        resource.contains(label) || attributes.contains(label),
                        "{}: {}: {label} is not an attribute of {family}",
                        path.display(),
                        rule.name
                    );
                }
            }
        }
    }
    assert_eq!(files, 5, "the five rule files of {}", dir.display());
}
