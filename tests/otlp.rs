//! OTLP output, end to end: real traffic (curl → the Python test server) captured by the real
//! agent, exported to a real collector (rotel), and checked in what the collector passed on.

mod support;

use std::time::Duration;

use support::{
    Agent, PyServer,
    collector::{Collector, Item, Received, Sink},
    curl, python, serial,
};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// Five requests: three to /items/N (one carrying a traceparent), one 404, one 503.
fn drive(server: &PyServer) -> Vec<u32> {
    let traceparent = format!("traceparent: 00-{TRACE_ID}-{PARENT_ID}-01");
    vec![
        curl(&["-H", &traceparent, &server.url("/items/42")]),
        curl(&[&server.url("/items/7?token=secret&page=2")]),
        curl(&[&server.url("/items/9")]),
        curl(&[&server.url("/missing")]),
        curl(&[&server.url("/fail")]),
    ]
}

/// Traces curl and the test server only: the collector's sink is a Python process too, and
/// tracing it would feed its own traffic back into what it receives.
fn agent_args<'a>(extra: &[&'a str], server_pid: &'a str) -> Vec<&'a str> {
    let mut args = vec!["--comm", "curl", "--pid", server_pid];
    args.extend_from_slice(extra);
    args
}

/// Everything a run must deliver, whichever transport carried it.
fn check_delivery(received: &Received, server: &PyServer, clients: &[u32]) {
    let server_spans = received.spans_of(server.pid);
    let mut names: Vec<_> = server_spans.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    // Exact names: routes are templated; /missing and /fail are routes of their own.
    assert_eq!(
        names,
        [
            "GET /fail",
            "GET /items/{id}",
            "GET /items/{id}",
            "GET /items/{id}",
            "GET /missing"
        ]
    );
    let first = server_spans[0];
    let exe = first.resource_attr("process.executable.name").unwrap();
    assert_eq!(first.resource_attr("service.name").as_deref(), Some(&*exe));
    let real_python = std::fs::canonicalize(python()).unwrap();
    assert_eq!(exe, real_python.file_name().unwrap().to_str().unwrap());
    assert!(first.resource_attr("host.name").is_some());
    assert!(
        first
            .resource_attr("service.instance.id")
            .unwrap()
            .contains(&format!(":{}:", server.pid))
    );
    assert_eq!(first.scope["name"], "netsonde");
    for span in &server_spans {
        assert_eq!(span.body["kind"], "SPAN_KIND_SERVER");
        assert_eq!(span.attr("url.scheme").as_deref(), Some("http"));
        assert_eq!(
            span.attr("network.protocol.version").as_deref(),
            Some("1.1")
        );
        assert_eq!(span.attr("server.address").as_deref(), Some("127.0.0.1"));
        assert_eq!(span.attr("server.port"), Some(server.port.to_string()));
        assert_eq!(span.attr("client.address").as_deref(), Some("127.0.0.1"));
        assert!(
            span.attr("user_agent.original")
                .unwrap()
                .starts_with("curl/")
        );
    }
    let by_path = |path: &str| -> &Item {
        server_spans
            .iter()
            .find(|s| s.attr("url.path").as_deref() == Some(path))
            .unwrap_or_else(|| panic!("no server span for {path}"))
    };
    // The traceparent joins the caller's trace, as a child of the span it names.
    let joined = by_path("/items/42");
    assert_eq!(joined.id("traceId"), TRACE_ID);
    assert_eq!(joined.id("parentSpanId"), PARENT_ID);
    assert_eq!(joined.attr("http.route").as_deref(), Some("/items/{id}"));
    assert_eq!(
        joined.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(joined.attr("http.response.body.size").as_deref(), Some("8"));
    // Without one, a trace starts.
    let fresh = by_path("/items/7");
    assert_ne!(fresh.id("traceId"), TRACE_ID);
    assert_eq!(fresh.id("traceId").len(), 32);
    assert_eq!(fresh.id("parentSpanId"), "");
    assert_eq!(
        fresh.attr("url.query").as_deref(),
        Some("token=REDACTED&page=2")
    );
    // Status: a 404 is not a server error, a 503 is.
    assert!(by_path("/missing").body["status"].get("code").is_none());
    assert_eq!(by_path("/fail").body["status"]["code"], "STATUS_CODE_ERROR");
    assert_eq!(by_path("/fail").attr("error.type").as_deref(), Some("503"));

    // Each curl is its own workload with one client span.
    for (i, &pid) in clients.iter().enumerate() {
        let spans = received.spans_of(pid);
        assert_eq!(spans.len(), 1, "client {pid}: {spans:?}");
        let span = spans[0];
        assert_eq!(span.body["kind"], "SPAN_KIND_CLIENT");
        assert_eq!(span.resource_attr("service.name").as_deref(), Some("curl"));
        if i == 0 {
            // The caller's span is the one it named in traceparent: the server span hangs
            // under it.
            assert_eq!(span.id("traceId"), TRACE_ID);
            assert_eq!(span.id("spanId"), PARENT_ID);
            assert_eq!(span.name, "GET /items/{id}");
            assert_eq!(span.attr("url.template").as_deref(), Some("/items/{id}"));
        }
    }
    let missing_client = received.spans_of(clients[3])[0];
    assert_eq!(
        missing_client.body["status"]["code"], "STATUS_CODE_ERROR",
        "a 404 is a client error"
    );

    // Metrics: one histogram count per request, per side.
    assert_eq!(
        received.histogram_count("http.server.request.duration", server.pid),
        5
    );
    let client_count: u64 = clients
        .iter()
        .map(|&pid| received.histogram_count("http.client.request.duration", pid))
        .sum();
    assert_eq!(client_count, 5);
    let duration = received
        .metrics
        .iter()
        .find(|m| m.name == "http.server.request.duration")
        .unwrap();
    assert_eq!(duration.body["unit"], "s");
    assert_eq!(
        duration.body["temporality"],
        "AGGREGATION_TEMPORALITY_CUMULATIVE"
    );
    assert!(
        duration.attr("url.path").is_none(),
        "no raw path in metrics"
    );
    assert_eq!(
        received
            .metrics
            .iter()
            .filter(|m| m.name == "netsonde.connection.opened"
                && m.resource_attr("process.pid") == Some(server.pid.to_string()))
            .count()
            .min(1),
        1,
        "connection metrics for the server"
    );

    // Logs: one access log per exchange and side, joined to its span.
    let server_logs: Vec<_> = received
        .logs
        .iter()
        .filter(|l| l.resource_attr("process.pid") == Some(server.pid.to_string()))
        .collect();
    assert_eq!(server_logs.len(), 5);
    for log in &server_logs {
        let span = server_spans
            .iter()
            .find(|s| s.id("spanId") == log.id("spanId"))
            .expect("the log's span id is a span's");
        assert_eq!(log.id("traceId"), span.id("traceId"));
        assert_eq!(log.body["eventName"], "netsonde.http.access");
        let body = log.body["body"]["stringValue"].as_str().unwrap();
        assert!(body.starts_with("127.0.0.1 - \"GET /"), "{body}");
        let expected = match span.attr("http.response.status_code").as_deref() {
            Some("503") => "SEVERITY_NUMBER_ERROR",
            Some("404") => "SEVERITY_NUMBER_WARN",
            _ => "SEVERITY_NUMBER_INFO",
        };
        assert_eq!(log.body["severityNumber"], expected, "{body}");
    }
    let client_logs = received
        .logs
        .iter()
        .filter(|l| {
            clients
                .iter()
                .any(|p| l.resource_attr("process.pid") == Some(p.to_string()))
        })
        .count();
    assert_eq!(client_logs, 5);

    // The agent's own telemetry, under its own resource.
    let own = received
        .metrics
        .iter()
        .find(|m| m.name == "netsonde.agent.exchanges")
        .expect("self-telemetry");
    assert_eq!(
        own.resource_attr("service.name").as_deref(),
        Some("netsonde")
    );
}

fn run_against(collector: &Collector, protocol_args: &[&str], env: &[(&str, &str)]) {
    let server = PyServer::start();
    let py = server.pid.to_string();
    let mut args = agent_args(&["--exporter", "otlp"], &py);
    args.extend_from_slice(protocol_args);
    let mut env = env.to_vec();
    env.push(("OTEL_METRIC_EXPORT_INTERVAL", "500"));
    let agent = Agent::start_with_env(&args, &env);
    let clients = drive(&server);
    std::thread::sleep(Duration::from_millis(700));
    let capture = agent.stop();
    // Everything `check_delivery` counts, so that a batch the collector has not passed on yet
    // is waited for, not taken for missing: the agent's last metrics leave at its exit.
    let received = collector.wait_until("the run's spans, logs and metrics", |r| {
        r.spans_of(server.pid).len() >= 5
            && clients.iter().all(|&pid| !r.spans_of(pid).is_empty())
            && r.logs.len() >= 10
            && r.histogram_count("http.server.request.duration", server.pid) >= 5
            && clients
                .iter()
                .map(|&pid| r.histogram_count("http.client.request.duration", pid))
                .sum::<u64>()
                >= 5
            && r.metrics.iter().any(|m| {
                m.name == "netsonde.connection.opened"
                    && m.resource_attr("process.pid") == Some(server.pid.to_string())
            })
            && r.metrics
                .iter()
                .any(|m| m.name == "netsonde.agent.exchanges")
    });
    check_delivery(&received, &server, &clients);
    assert_eq!(capture.stdout, "", "console is off unless asked for");
    assert!(
        !capture.stderr.contains("WARN") && !capture.stderr.contains("ERROR"),
        "{}",
        capture.stderr
    );
}

#[test]
fn grpc_delivers_spans_metrics_and_logs() {
    require_privileges!();
    let _guard = serial();
    let collector = Collector::start();
    // gzip-compressed gRPC messages, which the collector must accept.
    run_against(
        &collector,
        &["--otlp-endpoint", &collector.grpc_url()],
        &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")],
    );
}

#[test]
fn http_protobuf_delivers_spans_metrics_and_logs() {
    require_privileges!();
    let _guard = serial();
    let collector = Collector::start();
    run_against(
        &collector,
        &[
            "--otlp-protocol",
            "http/protobuf",
            "--otlp-endpoint",
            &collector.http_url(),
        ],
        &[],
    );
}

fn write_config(dir: &tempfile::TempDir, yaml: &str) -> String {
    let path = dir.path().join("netsonde.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

fn server_paths(received: &Received, pid: u32) -> Vec<String> {
    let mut paths: Vec<_> = received
        .spans_of(pid)
        .iter()
        .filter_map(|s| s.attr("url.path"))
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

#[test]
fn a_collector_absent_at_start_then_killed_and_restarted() {
    require_privileges!();
    let _guard = serial();
    let mut collector = Collector::start_later();
    let server = PyServer::start();
    let py = server.pid.to_string();
    let dir = tempfile::tempdir().unwrap();
    // Small queues and quick batches, so an outage overflows the queue within seconds.
    let config = write_config(
        &dir,
        "export:\n  batch_delay_ms: 100\n  otlp:\n    queue_batches: 2\n    retry:\n      \
         initial_backoff_ms: 200\n      max_backoff_ms: 1000\n      max_elapsed_ms: 20000\n",
    );
    let endpoint = collector.grpc_url();
    let args = agent_args(
        &[
            "--config",
            &config,
            "--exporter",
            "otlp",
            "--exporter",
            "console",
            "--otlp-endpoint",
            &endpoint,
        ],
        &py,
    );
    let agent = Agent::start(&args);
    // A: sent while no collector listens; retried until it comes.
    curl(&[&server.url("/items/1")]);
    curl(&[&server.url("/items/2")]);
    std::thread::sleep(Duration::from_millis(800));
    collector.start_rotel();
    collector.wait_until("the exchanges from before the collector started", |r| {
        server_paths(r, server.pid).len() == 2
    });
    // B: the collector dies; batches pile up beyond the queue and are dropped, counted.
    collector.kill_rotel();
    for i in 0..12 {
        curl(&[&server.url(&format!("/outage/{i}"))]);
        std::thread::sleep(Duration::from_millis(150));
    }
    // C: it comes back; what was still queued goes out, then new data flows again.
    collector.start_rotel();
    collector.wait_until("the batches queued during the outage", |r| {
        server_paths(r, server.pid)
            .iter()
            .any(|p| p.starts_with("/outage/"))
    });
    curl(&[&server.url("/items/100")]);
    curl(&[&server.url("/items/101")]);
    let received = collector.wait_until("the exchanges after the restart", |r| {
        let paths = server_paths(r, server.pid);
        paths.contains(&"/items/100".to_string()) && paths.contains(&"/items/101".to_string())
    });
    let capture = agent.stop();
    let paths = server_paths(&received, server.pid);
    assert!(paths.contains(&"/items/1".to_string()), "{paths:?}");
    assert!(paths.contains(&"/items/2".to_string()), "{paths:?}");
    let dropped = capture.final_stat("export_dropped").unwrap();
    let failures = capture.final_stat("export_failures").unwrap();
    assert!(
        dropped > 0,
        "the outage overflowed the queue: {:?}",
        capture.stats
    );
    assert!(failures > 0, "{:?}", capture.stats);
    assert!(
        capture.stderr.contains("works again"),
        "recovery is logged: {}",
        capture.stderr
    );
    // Each cause is logged once per signal, however many requests failed.
    let warnings = capture
        .stderr
        .lines()
        .filter(|l| l.contains("exporting traces to") && l.contains("failed"))
        .count();
    assert!(
        (1..=3).contains(&warnings) && failures as usize > warnings,
        "{warnings} warnings for {failures} failures:\n{}",
        capture.stderr
    );
    // Console output went on regardless.
    assert!(capture.lines.len() >= 16, "{}", capture.stdout);
}

#[test]
fn a_collector_that_answers_garbage_is_survived() {
    require_privileges!();
    let _guard = serial();
    // The Python test server speaks HTTP/1.1 only: gRPC gets garbage back.
    let not_a_collector = PyServer::start();
    let server = PyServer::start();
    let py = server.pid.to_string();
    let endpoint = not_a_collector.url("");
    let args = agent_args(
        &[
            "--exporter",
            "otlp",
            "--exporter",
            "console",
            "--otlp-endpoint",
            &endpoint,
        ],
        &py,
    );
    let agent = Agent::start_with_env(&args, &[("OTEL_METRIC_EXPORT_INTERVAL", "300")]);
    for i in 0..3 {
        curl(&[&server.url(&format!("/items/{i}"))]);
        std::thread::sleep(Duration::from_millis(400));
    }
    let capture = agent.stop();
    assert_eq!(capture.of(server.pid).len(), 3);
    assert!(capture.final_stat("export_failures").unwrap() > 0);
    let warnings: Vec<_> = capture
        .stderr
        .lines()
        .filter(|l| l.contains("exporting metrics to") && l.contains("failed"))
        .collect();
    // A few distinct causes (garbage on connect, a reset, a frame error), each logged once.
    assert!((1..=4).contains(&warnings.len()), "{}", capture.stderr);
}

#[test]
fn the_file_exporter_writes_otlp_json_lines() {
    require_privileges!();
    let _guard = serial();
    use opentelemetry_proto::tonic::collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let server = PyServer::start();
    let py = server.pid.to_string();
    let out_arg = out.display().to_string();
    let args = agent_args(&["--exporter", "file", "--file-path", &out_arg], &py);
    let agent = Agent::start(&args);
    let clients = drive(&server);
    agent.stop();
    let text = std::fs::read_to_string(&out).unwrap();
    let (mut spans, mut logs, mut metric_requests) = (Vec::new(), 0, 0);
    for line in text.lines() {
        let json: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
        if json.get("resourceSpans").is_some() {
            let request: ExportTraceServiceRequest = serde_json::from_str(line).unwrap();
            for rs in request.resource_spans {
                let pid = rs
                    .resource
                    .unwrap()
                    .attributes
                    .into_iter()
                    .find(|a| a.key == "process.pid")
                    .unwrap();
                for ss in rs.scope_spans {
                    for span in ss.spans {
                        spans.push((format!("{:?}", pid.value), span));
                    }
                }
            }
            // OTLP/JSON: ids in hex, not base64.
            let id = json["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"]
                .as_str()
                .unwrap();
            assert!(
                id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "{id}"
            );
        } else if json.get("resourceLogs").is_some() {
            let request: ExportLogsServiceRequest = serde_json::from_str(line).unwrap();
            logs += request
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum::<usize>();
        } else {
            let _: ExportMetricsServiceRequest = serde_json::from_str(line).unwrap();
            metric_requests += 1;
        }
    }
    let client_pids: Vec<_> = clients.iter().map(|p| p.to_string()).collect();
    let client_spans = spans
        .iter()
        .filter(|(pid, _)| {
            client_pids
                .iter()
                .any(|c| pid.contains(&format!("IntValue({c})")))
        })
        .count();
    let server_spans = spans
        .iter()
        .filter(|(pid, _)| pid.contains(&format!("IntValue({})", server.pid)))
        .count();
    assert_eq!((server_spans, client_spans), (5, 5), "{text}");
    assert!(logs >= 10, "{text}");
    assert!(metric_requests >= 1, "the last metrics are written at exit");
}

#[test]
fn https_with_headers_gzip_retry_after_and_partial_success() {
    require_privileges!();
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let support::pki::Pki {
        ca,
        server_cert: cert,
        server_key: key,
        ..
    } = support::pki::Pki::new(dir.path());
    // The first request gets 503 + Retry-After; every answer then rejects one item.
    let sink = Sink::start(&["--tls", &cert, &key, "--fail-first", "1", "--reject", "1"]);
    let server = PyServer::start();
    let pid = server.pid.to_string();
    let endpoint = format!("https://127.0.0.1:{}", sink.port);
    let agent = Agent::start_with_env(
        &agent_args(&["--exporter", "otlp", "--exporter", "console"], &pid),
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-api-key=s3cret,x-tenant=team%20a",
            ),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ],
    );
    for i in 0..3 {
        curl(&[&server.url(&format!("/items/{i}"))]);
    }
    let received = sink.wait_until("the three server spans", |r| {
        r.spans_of(server.pid).len() == 3
    });
    let capture = agent.stop();
    assert_eq!(received.spans_of(server.pid).len(), 3);
    let lines = sink.lines();
    assert!(!lines.is_empty());
    for line in &lines {
        let headers = &line["headers"];
        assert_eq!(headers["x-api-key"], "s3cret");
        assert_eq!(headers["x-tenant"], "team a");
        assert_eq!(headers["content-encoding"], "gzip");
        assert_eq!(headers["content-type"], "application/x-protobuf");
    }
    let stderr = &capture.stderr;
    assert_eq!(
        stderr.matches("HTTP 503").count(),
        1,
        "the 503 is logged once and retried: {stderr}"
    );
    assert!(stderr.contains("rejected 1 of"), "{stderr}");
    assert!(capture.final_stat("export_failures").unwrap() >= 1);
    // Every accepted request rejected one item.
    assert!(capture.final_stat("export_dropped").unwrap() >= lines.len() as u64);
}

#[test]
fn delta_temporality_when_the_environment_asks() {
    require_privileges!();
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let out_arg = out.display().to_string();
    let server = PyServer::start();
    let pid = server.pid.to_string();
    let agent = Agent::start_with_env(
        &agent_args(&["--exporter", "file", "--file-path", &out_arg], &pid),
        &[
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
        ],
    );
    // Two rounds in different export intervals.
    for round in 0..2 {
        for i in 0..3 {
            curl(&[&server.url(&format!("/items/{round}{i}"))]);
        }
        std::thread::sleep(Duration::from_millis(700));
    }
    agent.stop();
    let (mut total, mut points) = (0u64, 0);
    for line in std::fs::read_to_string(&out).unwrap().lines() {
        let json: serde_json::Value = serde_json::from_str(line).unwrap();
        for rm in json["resourceMetrics"].as_array().into_iter().flatten() {
            if !rm["resource"]["attributes"]
                .to_string()
                .contains(&format!("\"{pid}\""))
            {
                continue;
            }
            for m in rm["scopeMetrics"][0]["metrics"].as_array().unwrap() {
                if m["name"] == "http.server.request.duration" {
                    let h = &m["histogram"];
                    assert_eq!(h["aggregationTemporality"], 1, "delta");
                    for p in h["dataPoints"].as_array().unwrap() {
                        total += p["count"]
                            .as_str()
                            .map_or_else(|| p["count"].as_u64().unwrap(), |c| c.parse().unwrap());
                        points += 1;
                    }
                }
            }
        }
    }
    // Deltas add up to the requests, and came in more than one export.
    assert_eq!(total, 6);
    assert!(points >= 2, "{points} points");
}

#[test]
fn a_collector_that_never_answers_times_out() {
    require_privileges!();
    let _guard = serial();
    // Accepts connections and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in silent.incoming().take(16) {
            open.push(stream);
        }
    });
    let server = PyServer::start();
    let pid = server.pid.to_string();
    let agent = Agent::start_with_env(
        &agent_args(
            &[
                "--exporter",
                "otlp",
                "--exporter",
                "console",
                "--otlp-protocol",
                "http/protobuf",
                "--otlp-endpoint",
                &endpoint,
            ],
            &pid,
        ),
        &[("OTEL_EXPORTER_OTLP_TIMEOUT", "300")],
    );
    curl(&[&server.url("/items/1")]);
    std::thread::sleep(Duration::from_millis(2500));
    let capture = agent.stop();
    assert_eq!(capture.of(server.pid).len(), 1, "capture goes on");
    assert!(
        capture.final_stat("export_failures").unwrap() >= 2,
        "{:?}",
        capture.stats
    );
    assert!(
        capture.stderr.contains("timed out") || capture.stderr.contains("timeout"),
        "{}",
        capture.stderr
    );
    drop(held);
}

/// The secrets a client puts in a query and in a redacted header, and what must show instead.
const SECRETS: [&str; 5] = [
    "tok-3f9a1c",
    "pw-77e2b0",
    "ak-5d1e88",
    "sig-0c4b29",
    "198.51.100.77",
];

/// One request carrying every secret, then the agent stopped; what each output holds.
fn secrets_run(show_everything: bool) -> (String, String, String) {
    let collector = Collector::start();
    let server = PyServer::start();
    let py = server.pid.to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        &format!(
            "redaction:\n  headers: [X-Forwarded-For]\n  show_everything: {show_everything}\n\
             export:\n  batch_delay_ms: 100\n  metric_interval_ms: 500\n"
        ),
    );
    let out = dir.path().join("out.jsonl").display().to_string();
    let endpoint = collector.grpc_url();
    let args = agent_args(
        &[
            "--config",
            &config,
            "--exporter",
            "console",
            "--exporter",
            "file",
            "--file-path",
            &out,
            "--exporter",
            "otlp",
            "--otlp-endpoint",
            &endpoint,
        ],
        &py,
    );
    let agent = Agent::start(&args);
    let url = server.url(&format!(
        "/items/7?token={}&Password={}&api%5Fkey={}&sig={}&page=2",
        SECRETS[0], SECRETS[1], SECRETS[2], SECRETS[3]
    ));
    let forwarded = format!("X-Forwarded-For: {}", SECRETS[4]);
    curl(&["-H", &forwarded, &url]);
    collector.wait_until("both spans and both access logs", |r| {
        r.spans_of(server.pid).len() == 1 && r.spans.len() >= 2 && r.logs.len() >= 2
    });
    let capture = agent.stop();
    let otlp = serde_json::to_string(&collector.received()).unwrap();
    let file = std::fs::read_to_string(&out).unwrap();
    let console = format!("{}\n{}", capture.stdout, capture.stderr);
    (console, file, otlp)
}

#[test]
fn secrets_in_queries_and_redacted_headers_reach_no_output() {
    require_privileges!();
    let _guard = serial();
    let (console, file, otlp) = secrets_run(false);
    for (output, text) in [("console", &console), ("file", &file), ("OTLP", &otlp)] {
        for secret in SECRETS {
            assert!(
                !text.contains(secret),
                "{secret} on the {output} output:\n{text}"
            );
        }
        // The request is there, its secrets replaced, what is not secret kept.
        assert!(
            text.contains(
                "token=REDACTED&Password=REDACTED&api%5Fkey=REDACTED&sig=REDACTED&page=2"
            ),
            "{output}:\n{text}"
        );
    }
    // The console names both sides' exchanges.
    assert_eq!(
        console.matches("/items/7?token=REDACTED").count(),
        2,
        "{console}"
    );

    // Shown on purpose (local debugging), every output has them: the check above can fail.
    let (console, file, otlp) = secrets_run(true);
    for (output, text) in [("console", &console), ("file", &file), ("OTLP", &otlp)] {
        for secret in &SECRETS[..4] {
            assert!(
                text.contains(secret),
                "{secret} missing on the {output} output"
            );
        }
    }
    assert!(
        otlp.contains(SECRETS[4]),
        "x-forwarded-for is client.address"
    );
    assert!(
        console.contains("redaction.show_everything is on"),
        "the agent warns: {console}"
    );
}

/// A collector that takes 400 ms to answer each request (the sink, over HTTP/protobuf) while
/// batches come every 50 ms: with `max_concurrent_requests` 4 it holds 4 requests of a signal
/// at once and never more, with 1 never more than 1, and every span arrives either way. The
/// sink stands in for the collector here: rotel cannot be told to answer slowly, nor to say
/// how many requests it holds at once.
#[test]
fn a_slow_collector_gets_concurrent_requests_up_to_the_setting() {
    require_privileges!();
    let _guard = serial();
    for concurrent in [1, 4] {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(
            &dir,
            &format!(
                "export:\n  batch_delay_ms: 50\n  otlp:\n    max_concurrent_requests: {concurrent}\n"
            ),
        );
        let sink = Sink::start(&["--delay-ms", "400"]);
        let server = PyServer::start();
        let pid = server.pid.to_string();
        let endpoint = format!("http://127.0.0.1:{}", sink.port);
        let agent = Agent::start_with_env(
            &agent_args(&["--config", &config, "--exporter", "otlp"], &pid),
            &[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ],
        );
        const REQUESTS: usize = 40;
        for i in 0..REQUESTS {
            curl(&[&server.url(&format!("/items/{i}"))]);
        }
        let received = sink.wait_until_for("every server span", Duration::from_secs(60), |r| {
            r.spans_of(server.pid).len() == REQUESTS
        });
        let capture = agent.stop();
        assert_eq!(received.spans_of(server.pid).len(), REQUESTS);
        let most_at_once = sink
            .lines()
            .iter()
            .filter(|l| l["signal"] == "traces")
            .map(|l| l["in_flight"].as_u64().unwrap())
            .max()
            .unwrap();
        assert_eq!(
            most_at_once, concurrent as u64,
            "span requests the collector held at once, with max_concurrent_requests {concurrent}"
        );
        assert_eq!(capture.final_stat("export_dropped"), Some(0));
    }
}
