//! What users see downstream, through the real programs: the OpenTelemetry Collector (built
//! from the Go module proxy at a pinned release, tests/support/otelcol) and Prometheus
//! (tests/support/prometheus). nginx serves, curl asks, the real agent traces both; the
//! oracles are nginx's access log and the curl runs the test made.

mod support;

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde_json::Value;
use support::{
    Agent, Capture, Nginx, curl,
    otelcol::{Otelcol, Prometheus},
    otlp_json::{attr, histogram, points},
    serial,
};

/// Every (resource attributes, item) of a signal ("resourceSpans", "scopeSpans", "spans")
/// received, of the resource with `process.pid` = `pid`.
fn items_of(received: &[Value], kind: [&str; 3], pid: u32) -> Vec<(Value, Value)> {
    let [resources, scopes, items] = kind;
    let mut out = Vec::new();
    for batch in received {
        for r in batch[resources].as_array().into_iter().flatten() {
            let resource = &r["resource"]["attributes"];
            if attr(resource, "process.pid") != Some(pid.to_string()) {
                continue;
            }
            for s in r[scopes].as_array().into_iter().flatten() {
                for item in s[items].as_array().into_iter().flatten() {
                    out.push((resource.clone(), item.clone()));
                }
            }
        }
    }
    out
}

const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.44.0";
const SPANS: [&str; 3] = ["resourceSpans", "scopeSpans", "spans"];
const LOGS: [&str; 3] = ["resourceLogs", "scopeLogs", "logRecords"];

/// (method, path, status) of a span's or log record's attributes.
fn key_of(item: &Value) -> (String, String, u16) {
    let a = &item["attributes"];
    (
        attr(a, "http.request.method").unwrap_or_default(),
        attr(a, "url.path").unwrap_or_default(),
        attr(a, "http.response.status_code")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    )
}

/// The requests each test makes: `n` pages, two 404s and two 503s, one connection each.
fn traffic(nginx: &Nginx, pages: usize, extra: &[&str]) -> Vec<u32> {
    let mut clients = Vec::new();
    for _ in 0..pages {
        clients.push(curl(&[&nginx.url("/index.html")]));
    }
    for path in ["/missing", "/missing", "/unavailable", "/unavailable"]
        .iter()
        .chain(extra)
    {
        clients.push(curl(&[&nginx.url(path)]));
    }
    clients
}

/// nginx's access-log keys, sorted.
type Logged = Vec<(String, String, u16)>;

/// The agent run with `args` and `env` over `traffic(nginx, pages)`: what it printed, and the
/// access-log keys nginx wrote meanwhile (its whole log less what was there before).
fn traced(nginx: &Nginx, args: &[&str], env: &[(&str, &str)], pages: usize) -> (Capture, Logged) {
    let before = nginx.access_keys();
    let agent = Agent::start_with_env(args, env);
    traffic(nginx, pages, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let capture = agent.stop();
    let mut logged = nginx.access_keys();
    for key in &before {
        let at = logged.iter().position(|k| k == key).unwrap();
        logged.remove(at);
    }
    (capture, logged)
}

/// Waits until the collector has received a span and an access log of nginx's `worker` for
/// each line of `logged` (sorted), checks they are exactly those, and returns all it received.
fn every_exchange_arrives(collector: &Otelcol, worker: u32, logged: &Logged) -> Vec<Value> {
    let received = collector.wait_until("every exchange", |r| {
        items_of(r, SPANS, worker).len() >= logged.len()
            && items_of(r, LOGS, worker).len() >= logged.len()
    });
    for kind in [SPANS, LOGS] {
        let mut seen: Vec<_> = items_of(&received, kind, worker)
            .iter()
            .map(|(_, item)| key_of(item))
            .collect();
        seen.sort();
        assert_eq!(&seen, logged, "{} of nginx's worker", kind[2]);
    }
    received
}

/// netsonde → the Collector over `transport`: everything nginx logged arrives as spans and
/// access logs of its worker, counted once in the duration histogram; each curl has its span.
/// Each access log carries its span's attributes, or with `access_log_attributes` lean, some.
fn deliver_through(transport: &[&str], access_log_attributes: &str) {
    let collector = Otelcol::recording();
    let nginx = Nginx::start();
    let worker = nginx.worker.to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("netsonde.yaml");
    std::fs::write(
        &config,
        format!("export:\n  access_log_attributes: {access_log_attributes}\n"),
    )
    .unwrap();
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "--pid",
        &worker,
        "--comm",
        "curl",
        "--exporter",
        "otlp",
    ];
    let endpoint = match transport {
        [] => collector.grpc_url(),
        _ => collector.http_url(),
    };
    args.extend_from_slice(transport);
    args.extend_from_slice(&["--otlp-endpoint", &endpoint]);
    let agent = Agent::start_with_env(&args, &[("OTEL_METRIC_EXPORT_INTERVAL", "500")]);
    let clients = traffic(&nginx, 5, &[]);
    std::thread::sleep(Duration::from_millis(700));
    let capture = agent.stop();
    let mut logged: Vec<_> = nginx.access_keys();
    logged.sort();
    assert_eq!(logged.len(), 9, "nginx's access log: {logged:?}");

    let received = every_exchange_arrives(&collector, nginx.worker, &logged);
    let keys = |item: &Value| -> Vec<String> {
        item["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| a["key"].as_str().unwrap().to_string())
            .collect()
    };
    let spans = items_of(&received, SPANS, nginx.worker);
    for (_, log) in items_of(&received, LOGS, nginx.worker) {
        let (_, span) = spans
            .iter()
            .find(|(_, s)| s["spanId"] == log["spanId"])
            .expect("the log's span arrived");
        let (span_keys, log_keys) = (keys(span), keys(&log));
        if access_log_attributes == "all" {
            assert_eq!(log_keys, span_keys, "{log}");
        } else {
            assert!(log_keys.iter().all(|k| span_keys.contains(k)), "{log}");
            for key in ["url.path", "http.response.status_code", "client.address"] {
                assert!(log_keys.iter().any(|k| k == key), "{key}: {log}");
            }
            for key in ["network.peer.port", "user_agent.original"] {
                assert!(span_keys.iter().any(|k| k == key), "{key}: {span}");
                assert!(!log_keys.iter().any(|k| k == key), "{key}: {log}");
            }
        }
    }
    for pid in &clients {
        let spans = items_of(&received, SPANS, *pid);
        assert_eq!(spans.len(), 1, "curl {pid}: {spans:?}");
        assert_eq!(attr(&spans[0].0, "service.name").as_deref(), Some("curl"));
    }
    // Every resource and scope names the semantic conventions release, and what made it.
    for batch in &received {
        for (resources, scopes) in [
            ("resourceSpans", "scopeSpans"),
            ("resourceMetrics", "scopeMetrics"),
            ("resourceLogs", "scopeLogs"),
        ] {
            for r in batch[resources].as_array().into_iter().flatten() {
                assert_eq!(r["schemaUrl"], SCHEMA_URL, "{resources}: {r}");
                for scope in r[scopes].as_array().into_iter().flatten() {
                    assert_eq!(scope["schemaUrl"], SCHEMA_URL, "{scopes}");
                }
                let resource = &r["resource"]["attributes"];
                assert_eq!(
                    attr(resource, "telemetry.sdk.name").as_deref(),
                    Some("netsonde")
                );
                assert_eq!(
                    attr(resource, "telemetry.sdk.language").as_deref(),
                    Some("rust")
                );
            }
        }
    }
    // Exemplars on the duration histogram point at spans that were sent.
    let span_ids: Vec<(String, String)> = items_of(&received, SPANS, nginx.worker)
        .iter()
        .map(|(_, s)| (s["traceId"].to_string(), s["spanId"].to_string()))
        .collect();
    let mut exemplars = 0;
    for batch in &received {
        for r in batch["resourceMetrics"].as_array().into_iter().flatten() {
            if attr(&r["resource"]["attributes"], "process.pid") != Some(worker.clone()) {
                continue;
            }
            for m in r["scopeMetrics"][0]["metrics"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if m["name"] != "http.server.request.duration" {
                    continue;
                }
                for p in m["histogram"]["dataPoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    for e in p["exemplars"].as_array().into_iter().flatten() {
                        let ids = (e["traceId"].to_string(), e["spanId"].to_string());
                        assert!(span_ids.contains(&ids), "exemplar {e} names no span sent");
                        exemplars += 1;
                    }
                }
            }
        }
    }
    assert!(exemplars > 0, "no exemplar on http.server.request.duration");
    // The duration histogram of the last export counts every request once.
    let text: String = received.iter().map(|b| format!("{b}\n")).collect();
    let points = points(&text, nginx.worker, "http.server.request.duration");
    assert_eq!(histogram(&points).0, logged.len() as u64);
    assert!(
        !capture.stderr.contains("WARN") && !capture.stderr.contains("ERROR"),
        "{}",
        capture.stderr
    );
}

#[test]
fn the_collector_receives_every_signal_over_grpc() {
    require_privileges!();
    let _guard = serial();
    deliver_through(&[], "all");
}

#[test]
fn the_collector_receives_every_signal_over_http() {
    require_privileges!();
    let _guard = serial();
    // Lean access logs here; the gRPC test has the default.
    deliver_through(&["--otlp-protocol", "http/protobuf"], "lean");
}

fn shipped(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("otel-config")
        .join(name)
}

/// One series' value per `service_name` label.
fn by_service(found: Vec<(Value, f64)>) -> BTreeMap<String, f64> {
    found
        .into_iter()
        .map(|(labels, v)| (labels["service_name"].as_str().unwrap_or("").to_string(), v))
        .collect()
}

/// The shipped pipeline, as shipped: otel-config/collector.yaml between netsonde and its
/// backends (a second collector recording traces and logs, as Tempo and a log store would;
/// Prometheus, configured by otel-config/prometheus.yaml, for metrics). Health checks are
/// filtered out; what remains is asked of Prometheus in PromQL and compared with the traffic.
#[test]
fn the_shipped_pipeline_feeds_prometheus_and_the_trace_and_log_backends() {
    require_privileges!();
    let _guard = serial();
    let prometheus = Prometheus::start(&shipped("prometheus.yaml"));
    let backend = Otelcol::recording();
    let (grpc, http) = (support::free_port(), support::free_port());
    let listen = |p: u16| format!("127.0.0.1:{p}");
    let pipeline = Otelcol::run(
        &shipped("collector.yaml"),
        &[
            ("OTLP_GRPC_LISTEN", &listen(grpc)),
            ("OTLP_HTTP_LISTEN", &listen(http)),
            ("TRACES_OTLP_ENDPOINT", &listen(backend.grpc_port)),
            ("METRICS_OTLP_URL", &prometheus.otlp_url()),
            ("LOGS_OTLP_URL", &format!("{}/v1/logs", backend.http_url())),
        ],
        (grpc, http),
    );
    let nginx = Nginx::start();
    let worker = nginx.worker.to_string();
    let agent = Agent::start_with_env(
        &[
            "--pid",
            &worker,
            "--comm",
            "curl",
            "--exporter",
            "otlp",
            "--otlp-endpoint",
            &pipeline.grpc_url(),
        ],
        &[("OTEL_METRIC_EXPORT_INTERVAL", "500")],
    );
    // Two rounds a few metric intervals apart, so that rates have something to rise by.
    let mut clients = traffic(&nginx, 3, &["/healthz"]);
    std::thread::sleep(Duration::from_millis(1500));
    clients.extend(traffic(&nginx, 3, &["/healthz"]));
    std::thread::sleep(Duration::from_millis(700));
    agent.stop();
    let logged = nginx.access_keys();
    let kept: Vec<_> = logged
        .iter()
        .filter(|k| k.1 != "/healthz")
        .cloned()
        .collect();
    assert_eq!((logged.len(), kept.len()), (16, 14));

    // Traces and logs reach their backends, health checks left out by the pipeline.
    backend.wait_until("the spans and logs", |r| {
        items_of(r, SPANS, nginx.worker).len() >= kept.len()
            && items_of(r, LOGS, nginx.worker).len() >= kept.len()
    });
    // Anything more (a health check let through) would arrive with them or just after.
    std::thread::sleep(Duration::from_millis(500));
    let received = backend.received();
    let mut durations = Vec::new();
    for kind in [SPANS, LOGS] {
        let items = items_of(&received, kind, nginx.worker);
        let mut seen: Vec<_> = items.iter().map(|(_, item)| key_of(item)).collect();
        seen.sort();
        assert_eq!(seen, kept, "{} of nginx's worker", kind[2]);
        if kind == SPANS {
            for (_, span) in &items {
                let ns = |k: &str| span[k].as_str().unwrap().parse::<u64>().unwrap();
                durations.push((ns("endTimeUnixNano") - ns("startTimeUnixNano")) as f64 / 1e9);
            }
        }
    }

    for pid in &clients {
        for kind in [SPANS, LOGS] {
            let items = items_of(&received, kind, *pid);
            let paths: Vec<_> = items.iter().map(|(_, i)| key_of(i).1).collect();
            assert!(paths.len() <= 1, "curl {pid}: {paths:?}");
            assert!(
                !paths.contains(&"/healthz".to_string()),
                "curl {pid}: {paths:?}"
            );
        }
    }

    // Metrics in Prometheus: wait for the last export to be stored.
    let count = "http_server_request_duration_seconds_count";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let requests = loop {
        let found = by_service(prometheus.query(&format!("sum by (service_name) ({count})")));
        if found.get("nginx") == Some(&(kept.len() as f64)) {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "prometheus has {found:?}, nginx served {} (health checks aside)",
            kept.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("requests per service: {requests:?}");
    // Every curl's one request, as the client saw it, to nginx's address and port.
    let clients_seen = by_service(prometheus.query(&format!(
        "sum by (service_name) (http_client_request_duration_seconds_count{{server_port=\"{}\"}})",
        nginx.port
    )));
    assert_eq!(clients_seen.get("curl"), Some(&(kept.len() as f64)));
    assert_eq!(clients.len(), logged.len());

    // Error ratio: the four 503s of all requests (404s are not server errors).
    let ratio = by_service(prometheus.query(&format!(
        "sum by (service_name) ({count}{{error_type!=\"\"}}) / sum by (service_name) ({count})"
    )));
    assert_eq!(ratio.get("nginx"), Some(&(4.0 / kept.len() as f64)));

    // p95: in the bucket where the spans' own 95th percentile falls.
    durations.sort_by(f64::total_cmp);
    let rank = (0.95 * durations.len() as f64).ceil() as usize - 1;
    let true_p95 = durations[rank];
    let buckets = [
        0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    ];
    let upper = buckets.iter().position(|b| *b >= true_p95).unwrap();
    let p95 = by_service(prometheus.query(
        "histogram_quantile(0.95, sum by (service_name, le) \
         (http_server_request_duration_seconds_bucket))",
    ))["nginx"];
    assert!(
        p95 > buckets[upper - 1] && p95 <= buckets[upper],
        "p95 {p95} outside ({}, {}] where the spans' {true_p95} falls",
        buckets[upper - 1],
        buckets[upper]
    );

    // The server's request rate (its value depends on when Prometheus evaluates). Each curl
    // is a process of its own, outside any pod, so a series of its own with one sample: it
    // has no rate, which otel-config/README.md says.
    let query = "sum by (service_name) (rate(http_server_request_duration_seconds_count[5m]))";
    let rates = by_service(prometheus.query(query));
    assert!(
        rates.get("nginx").is_some_and(|r| *r > 0.0),
        "{query}: {rates:?}"
    );

    // TCP: one connection per curl, opened and closed, on both ends.
    for metric in [
        "netsonde_connection_opened_total",
        "netsonde_connection_closed_total",
    ] {
        let found = by_service(prometheus.query(&format!("sum by (service_name) ({metric})")));
        assert_eq!(found.get("nginx"), Some(&(logged.len() as f64)), "{metric}");
        assert_eq!(found.get("curl"), Some(&(logged.len() as f64)), "{metric}");
    }
    // No client address on the server's series (export.peer_addresses_on_metrics is off);
    // the clients' series name the server.
    let opened = prometheus.query("netsonde_connection_opened_total");
    for (labels, _) in &opened {
        assert!(labels.get("network_peer_address").is_none(), "{labels}");
        if labels["service_name"] == "curl" {
            assert_eq!(labels["server_address"], "127.0.0.1", "{labels}");
        }
    }
    // The kernel layer, per service.
    let names = prometheus.names();
    let kernel: Vec<_> = names
        .iter()
        .filter(|n| n.starts_with("netsonde_kernel_"))
        .collect();
    assert!(!kernel.is_empty(), "no kernel metrics among {names:?}");
    let packets = by_service(
        prometheus.query("sum by (service_name) (netsonde_kernel_layer_duration_seconds_count)"),
    );
    assert!(
        packets.get("nginx").is_some_and(|n| *n > 0.0),
        "{packets:?}"
    );
    // Resource attributes promoted as prometheus.yaml says; the rest in target_info.
    let info = prometheus.query("target_info{service_name=\"nginx\"}");
    assert!(!info.is_empty(), "target_info");
    assert!(
        info.iter().all(|(l, _)| l["process_pid"].is_string()),
        "{info:?}"
    );
    let promoted = prometheus.query(&format!("{count}{{service_name=\"nginx\"}}"));
    assert!(
        promoted.iter().all(|(l, _)| l["host_name"].is_string()),
        "{promoted:?}"
    );
}

/// A collection larger than the collector takes in one message arrives whole, in several
/// requests: the receiver here takes at most 1 MiB per gRPC message, and 1 500 routes on
/// both ends make about 3 MiB of metrics.
#[test]
fn metrics_larger_than_the_collectors_limit_arrive_in_several_requests() {
    require_privileges!();
    let _guard = serial();
    let collector = Otelcol::recording_with("        max_recv_msg_size_mib: 1\n", "");
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("netsonde.yaml");
    std::fs::write(
        &config,
        "export:\n  max_routes_per_workload: 5000\n  max_series_per_metric: 5000\n  \
         metric_request_max_bytes: 900000\n  metric_interval_ms: 500\n  \
         signals: {traces: false, logs: false, metrics: true}\n",
    )
    .unwrap();
    let worker = nginx.worker.to_string();
    let agent = Agent::start(&[
        "--config",
        &config.display().to_string(),
        "--pid",
        &worker,
        "--comm",
        "curl",
        "--exporter",
        "otlp",
        "--otlp-endpoint",
        &collector.grpc_url(),
    ]);
    // Paths of letters from g to z: never taken for identifiers, so each is a route.
    let routes: Vec<String> = (0..1500)
        .map(|i: usize| {
            let letter = |d: usize| char::from(b'g' + (d % 20) as u8);
            format!("/r-{}{}{}", letter(i / 400), letter(i / 20), letter(i))
        })
        .collect();
    let urls: Vec<String> = routes.iter().map(|r| nginx.url(r)).collect();
    let mut args = vec!["--max-time", "60"];
    for url in &urls {
        args.extend_from_slice(&["-o", "/dev/null", url.as_str()]);
    }
    curl(&args);
    std::thread::sleep(Duration::from_millis(800));
    let capture = agent.stop();
    assert_eq!(nginx.access_log().len(), routes.len());
    let received = collector.wait_until("every route's metrics", |r| {
        let text: String = r.iter().map(|b| format!("{b}\n")).collect();
        histogram(&points(&text, nginx.worker, "http.server.request.duration")).0
            == routes.len() as u64
    });
    let text: String = received.iter().map(|b| format!("{b}\n")).collect();
    let last = points(&text, nginx.worker, "http.server.request.duration");
    let mut seen: Vec<String> = last
        .iter()
        .filter_map(|p| attr(&p["attributes"], "http.route"))
        .collect();
    seen.sort();
    let mut expected = routes.clone();
    expected.sort();
    assert_eq!(seen, expected);
    for stat in ["export_failures", "export_dropped"] {
        assert_eq!(
            capture.final_stat(stat),
            Some(0),
            "{stat}: {:?}",
            capture.stats.last()
        );
    }
}

/// Mutual TLS with the real Collector asking every client for a certificate its CA signed
/// (`client_ca_file`), set up the standard way (OTEL_EXPORTER_OTLP_* variables): spans over
/// gRPC to an endpoint given without a scheme (so `https://`), logs over HTTP. Without the
/// client certificate the collector refuses the handshake, nothing arrives, and netsonde
/// counts the failed exports.
#[test]
fn mutual_tls_with_the_collector() {
    require_privileges!();
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki::Pki::new(dir.path());
    let tls = format!(
        "        tls:\n          cert_file: {}\n          key_file: {}\n          client_ca_file: {}\n",
        pki.server_cert, pki.server_key, pki.ca
    );
    let collector = Otelcol::recording_with(&tls, &tls);
    let nginx = Nginx::start();
    let worker = nginx.worker.to_string();
    let args = ["--pid", &worker, "--exporter", "otlp"];
    let grpc = format!("127.0.0.1:{}", collector.grpc_port);
    let http_logs = format!("https://127.0.0.1:{}/v1/logs", collector.http_port);
    let server_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", grpc.as_str()),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", &pki.ca),
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", &http_logs),
        ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf"),
        ("OTEL_METRICS_EXPORTER", "none"),
    ];

    // Without a client certificate: refused, counted, nothing received.
    let (refused, logged) = traced(&nginx, &args, &server_env, 2);
    assert_eq!(logged.len(), 6);
    assert!(
        refused.final_stat("export_failures").unwrap_or(0) >= 1,
        "{:?}\n{}",
        refused.stats.last(),
        refused.stderr
    );
    assert!(
        collector.received().is_empty(),
        "{:?}",
        collector.received()
    );
    assert!(
        refused
            .stderr
            .contains("the collector wants a client certificate"),
        "{}",
        refused.stderr
    );

    // With it: everything nginx logs arrives, spans over gRPC, logs over HTTP.
    let mut env = server_env.to_vec();
    env.extend([
        (
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            pki.client_cert.as_str(),
        ),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &pki.client_key),
    ]);
    let (capture, logged) = traced(&nginx, &args, &env, 3);
    assert_eq!(logged.len(), 7, "nginx's access log: {logged:?}");
    every_exchange_arrives(&collector, nginx.worker, &logged);
    assert_eq!(
        capture.final_stat("export_failures"),
        Some(0),
        "{}",
        capture.stderr
    );
    assert!(
        capture.stderr.contains("with the client certificate"),
        "{}",
        capture.stderr
    );
}

/// Exports through a real proxy (tinyproxy, with a password), set up by the standard
/// variables: spans over gRPC through an HTTP CONNECT tunnel, logs over HTTP forwarded by
/// the proxy. The proxy's own log is the oracle of what went through it; with the
/// collector's address in NO_PROXY nothing does.
#[test]
fn exports_through_a_proxy() {
    require_privileges!();
    let _guard = serial();
    let proxy = support::proxy::Tinyproxy::start("agent", "s3cret");
    let collector = Otelcol::recording();
    let nginx = Nginx::start();
    let worker = nginx.worker.to_string();
    let args = ["--pid", &worker, "--exporter", "otlp"];
    let proxy_url = format!("http://agent:s3cret@127.0.0.1:{}", proxy.port);
    let logs_url = format!("{}/v1/logs", collector.http_url());
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.grpc_url()),
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", logs_url.clone()),
        ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf".into()),
        ("OTEL_METRICS_EXPORTER", "none".into()),
        ("http_proxy", proxy_url),
    ];

    let run = |env: &[(&'static str, String)], pages: usize| {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        traced(&nginx, &args, &pairs, pages)
    };

    let (capture, logged) = run(&env, 3);
    assert_eq!(logged.len(), 7, "nginx's access log: {logged:?}");
    every_exchange_arrives(&collector, nginx.worker, &logged);
    assert_eq!(
        capture.final_stat("export_failures"),
        Some(0),
        "{}",
        capture.stderr
    );
    let through = proxy.requests();
    let tunnel = format!("CONNECT 127.0.0.1:{} HTTP/1.1", collector.grpc_port);
    let forwarded = format!("POST {logs_url} HTTP/1.1");
    assert!(through.contains(&tunnel), "{through:?}");
    assert!(through.contains(&forwarded), "{through:?}");
    assert!(
        through.iter().all(|r| *r == tunnel || *r == forwarded),
        "{through:?}"
    );
    let said = format!("through the proxy http://127.0.0.1:{}/", proxy.port);
    assert!(capture.stderr.contains(&said), "{}", capture.stderr);
    assert!(!capture.stderr.contains("s3cret"), "{}", capture.stderr);

    // The collector's address in NO_PROXY: straight there, the proxy asked for nothing.
    env.push(("NO_PROXY", "localhost, 127.0.0.0/8".into()));
    let asked = proxy.requests().len();
    let (capture, logged) = run(&env, 1);
    assert_eq!(logged.len(), 5);
    collector.wait_until("the second run's exchanges", |r| {
        items_of(r, SPANS, nginx.worker).len() >= 12 && items_of(r, LOGS, nginx.worker).len() >= 12
    });
    assert_eq!(
        capture.final_stat("export_failures"),
        Some(0),
        "{}",
        capture.stderr
    );
    assert_eq!(proxy.requests().len(), asked, "{:?}", proxy.requests());
    assert!(
        !capture.stderr.contains("through the proxy"),
        "{}",
        capture.stderr
    );
}

/// OTEL_SDK_DISABLED=true: the OTLP exporter sends nothing, says so once, and the agent
/// still traces (its stats line counts the exchanges).
#[test]
fn sdk_disabled_sends_nothing() {
    require_privileges!();
    let _guard = serial();
    let collector = Otelcol::recording();
    let nginx = Nginx::start();
    let worker = nginx.worker.to_string();
    let agent = Agent::start_with_env(
        &[
            "--pid",
            &worker,
            "--exporter",
            "otlp",
            "--otlp-endpoint",
            &collector.grpc_url(),
        ],
        &[
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ],
    );
    traffic(&nginx, 1, &[]);
    std::thread::sleep(Duration::from_millis(500));
    let capture = agent.stop();
    assert_eq!(
        capture.final_stat("exchanges"),
        Some(5),
        "{}",
        capture.stderr
    );
    assert_eq!(capture.final_stat("export_sent"), Some(0));
    assert!(
        capture
            .stderr
            .contains("OTEL_SDK_DISABLED=true: the otlp exporter sends nothing"),
        "{}",
        capture.stderr
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(collector.received().is_empty());
}

/// The status endpoint (`--status-listen`): ready once tracing, alive, and its /metrics
/// scraped by the real Prometheus, whose numbers match the agent's own final stats line.
#[test]
fn the_status_endpoint_answers_probes_and_prometheus_scrapes_it() {
    require_privileges!();
    let _guard = serial();
    let nginx = Nginx::start();
    let worker = nginx.worker.to_string();
    let port = support::free_port();
    let address = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("scrape.yaml");
    std::fs::write(
        &config,
        format!(
            "scrape_configs:\n  - job_name: netsonde\n    scrape_interval: 1s\n    \
             static_configs: [{{targets: ['{address}']}}]\n"
        ),
    )
    .unwrap();
    let prometheus = Prometheus::start(&config);
    let agent = Agent::start(&["--pid", &worker, "--status-listen", &address]);
    let get = |path: &str| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-w",
                "\n%{http_code}",
                &format!("http://{address}{path}"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(get("/healthz"), "ok\n\n200");
    assert_eq!(get("/readyz"), "ready\n\n200");
    assert!(get("/nothing").ends_with("404"));
    traffic(&nginx, 3, &[]);
    // Two scrapes after the traffic.
    std::thread::sleep(Duration::from_millis(2500));
    let exchanges = |p: &Prometheus| {
        p.query("netsonde_agent_exchanges_total{job=\"netsonde\"}")
            .first()
            .map(|(_, v)| *v)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while exchanges(&prometheus) != Some(7.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "prometheus scraped {:?} exchanges",
            exchanges(&prometheus)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let probes = prometheus.query("netsonde_agent_probes{netsonde_probe_state=\"attached\"}");
    assert!(probes.first().is_some_and(|(_, n)| *n > 0.0), "{probes:?}");
    let capture = agent.stop();
    assert_eq!(capture.final_stat("exchanges"), Some(7));
    assert!(
        capture
            .stderr
            .contains(&format!("status endpoint on http://{address}/")),
        "{}",
        capture.stderr
    );
}
