//! The Grafana dashboards shipped in otel-config/grafana: every query in them is run against
//! the real Prometheus (tests/support/prometheus, configured by otel-config/prometheus.yaml)
//! after real traffic, and must return data; every metric and label they name is one
//! netsonde emits (semconv/registry.yaml, as Prometheus's OTLP translation names it).
//! Grafana itself is not run (it cannot be built from the registries here): the panels'
//! rendering is not checked, their queries are.

mod support;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{Agent, Nginx, curl, otelcol::Prometheus, serial};

fn dashboards() -> Vec<(PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("otel-config/grafana");
    let mut found: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    found.sort();
    found
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
            (path, json)
        })
        .collect()
}

/// (panel title, PromQL) of every query of a dashboard, and its variables' queries.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap().to_string();
            out.push((title, target["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

/// Registered metrics and attributes as Prometheus's OTLP translation names them: dots
/// become underscores, the unit is appended (`s` seconds, `By` bytes, `{…}` nothing),
/// counters get `_total`, histograms `_bucket`, `_count` and `_sum`.
fn prometheus_names() -> (BTreeSet<String>, BTreeSet<String>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("semconv/registry.yaml");
    let registry: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut metrics = BTreeSet::new();
    for m in registry["metrics"].as_array().unwrap() {
        let base = m["name"].as_str().unwrap().replace('.', "_");
        let unit = match m["unit"].as_str().unwrap() {
            "s" => "_seconds",
            "By" => "_bytes",
            _ => "",
        };
        let name = format!("{base}{unit}");
        match m["instrument"].as_str().unwrap() {
            "counter" => {
                metrics.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["bucket", "count", "sum"] {
                    metrics.insert(format!("{name}_{suffix}"));
                }
            }
            _ => {
                metrics.insert(name);
            }
        }
    }
    let labels = registry["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().replace('.', "_"))
        .collect();
    (metrics, labels)
}

#[test]
fn the_dashboards_name_only_what_netsonde_emits() {
    let (metrics, labels) = prometheus_names();
    let metric = regex::Regex::new(r"([a-z_][a-z0-9_]*)\{").unwrap();
    let selector = regex::Regex::new(r"\{([^}]*)\}").unwrap();
    let grouping = regex::Regex::new(r"by \(([^)]*)\)").unwrap();
    let mut uids = BTreeSet::new();
    for (path, dashboard) in dashboards() {
        let name = path.display();
        assert!(
            uids.insert(dashboard["uid"].to_string()),
            "{name}: uid taken"
        );
        let found = queries(&dashboard);
        assert!(found.len() >= 8, "{name}: {found:?}");
        for panel in dashboard["panels"].as_array().unwrap() {
            if panel["type"] != "row" {
                assert_eq!(panel["datasource"]["uid"], "${datasource}", "{name}");
            }
        }
        for (title, expr) in found {
            for m in metric.captures_iter(&expr) {
                assert!(
                    metrics.contains(&m[1]),
                    "{name}, {title}: {} is not emitted",
                    &m[1]
                );
            }
            let selected = selector
                .captures_iter(&expr)
                .flat_map(|c| {
                    c[1].split(',')
                        .filter_map(|m| m.split(['=', '!']).next())
                        .map(|l| l.trim().to_string())
                        .collect::<Vec<_>>()
                })
                .filter(|l| !l.is_empty());
            let grouped = grouping.captures_iter(&expr).flat_map(|c| {
                c[1].split(',')
                    .map(|l| l.trim().to_string())
                    .collect::<Vec<_>>()
            });
            for label in selected.chain(grouped) {
                // `le` is the histogram's bucket bound, `kind` one the query makes itself.
                assert!(
                    labels.contains(&label) || label == "le" || label == "kind",
                    "{name}, {title}: no attribute becomes the label {label}"
                );
            }
        }
    }
    assert_eq!(uids.len(), 2);
}

/// `expr` as Grafana would send it with `service` chosen.
fn expand(expr: &str, service: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$service", service)
}

#[test]
fn every_dashboard_query_returns_data_from_real_traffic() {
    require_privileges!();
    let _guard = serial();
    let prometheus = Prometheus::start(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("otel-config/prometheus.yaml"),
    );
    let nginx = Nginx::start();
    let worker = nginx.worker.to_string();
    let base = prometheus.otlp_url().replace("/v1/metrics", "");
    let agent = Agent::start_with_env(
        &[
            "--pid",
            &worker,
            "--comm",
            "curl",
            "--exporter",
            "otlp",
            "--otlp-protocol",
            "http/protobuf",
            "--otlp-endpoint",
            &base,
        ],
        &[
            ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
            ("OTEL_TRACES_EXPORTER", "none"),
            ("OTEL_LOGS_EXPORTER", "none"),
        ],
    );
    // One client process calling for a few seconds, a connection per request, so that its
    // series (like the server's) have samples to take a rate of.
    let paths = [
        "/index.html",
        "/missing",
        "/index.html",
        "/unavailable",
        "/index.html",
        "/index.html",
        "/missing",
        "/index.html",
        "/unavailable",
        "/index.html",
    ];
    let urls: Vec<String> = paths.iter().map(|p| nginx.url(p)).collect();
    let mut args = vec!["--rate", "4/s", "-H", "Connection: close"];
    for url in &urls {
        args.extend_from_slice(&["-o", "/dev/null", url.as_str()]);
    }
    curl(&args);
    std::thread::sleep(Duration::from_millis(1200));
    agent.stop();
    assert_eq!(nginx.access_log().len(), paths.len());

    let deadline = Instant::now() + Duration::from_secs(20);
    while prometheus
        .query("sum(http_client_request_duration_seconds_count)")
        .first()
        .map(|(_, v)| *v)
        != Some(paths.len() as f64)
    {
        assert!(
            Instant::now() < deadline,
            "the metrics never reached Prometheus"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The service variable's choices.
    let services = prometheus.label_values("service_name", "netsonde_connection_opened_total");
    assert_eq!(services, ["curl", "nginx"]);

    for (path, dashboard) in dashboards() {
        // The overview with every service; the one-service dashboard with the server.
        let service = if dashboard["uid"] == "netsonde-service" {
            "nginx"
        } else {
            ".+"
        };
        for (title, expr) in queries(&dashboard) {
            let promql = expand(&expr, service);
            let found = prometheus.query(&promql);
            assert!(
                !found.is_empty(),
                "{}, {title}: no data for {promql}",
                path.display()
            );
        }
    }

    // The service graph's edge: curl → nginx's address and port, every call.
    let edges = prometheus.query(
        "sum by (service_name, server_address, server_port) \
         (http_client_request_duration_seconds_count)",
    );
    assert_eq!(edges.len(), 1, "{edges:?}");
    assert_eq!(edges[0].0["service_name"], "curl");
    assert_eq!(edges[0].0["server_address"], "127.0.0.1");
    assert_eq!(edges[0].0["server_port"], nginx.port.to_string());
    assert_eq!(edges[0].1, paths.len() as f64);
    // The endpoint list: the routes requested, with nginx's own counts.
    let routes = prometheus.query(
        "sum by (http_route) (http_server_request_duration_seconds_count{service_name=\"nginx\"})",
    );
    let mut seen: Vec<(String, f64)> = routes
        .iter()
        .map(|(l, v)| (l["http_route"].as_str().unwrap().to_string(), *v))
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        [
            ("/index.html".to_string(), 6.0),
            ("/missing".to_string(), 2.0),
            ("/unavailable".to_string(), 2.0)
        ]
    );
}
