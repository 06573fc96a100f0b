//! The example pipelines in otel-config/ parse, have the shape a collector needs, and name
//! only attributes and metrics netsonde emits (semconv/registry.yaml).

use std::{collections::BTreeSet, path::Path};

use serde_json::Value;

fn load(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name} does not parse: {e}"))
}

/// Every name the registry declares (attributes and metrics).
fn registered() -> BTreeSet<String> {
    let registry = load("semconv/registry.yaml");
    let mut names = BTreeSet::new();
    for list in ["attributes", "metrics"] {
        for item in registry[list].as_array().unwrap() {
            names.insert(item["name"].as_str().unwrap().to_string());
        }
    }
    names
}

/// Dotted names from the namespaces netsonde emits in, found in any string of `value`
/// (including inside OTTL expressions like `attributes["url.path"]`).
fn used_names(value: &Value, out: &mut BTreeSet<String>) {
    const NAMESPACES: [&str; 12] = [
        "k8s.",
        "http.",
        "url.",
        "network.",
        "server.",
        "client.",
        "service.",
        "process.",
        "host.",
        "error.",
        "user_agent.",
        "netsonde.",
    ];
    match value {
        Value::String(s) => {
            for token in s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_')) {
                if NAMESPACES.iter().any(|n| token.starts_with(n)) && token.contains('.') {
                    out.insert(token.to_string());
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| used_names(v, out)),
        Value::Object(map) => map.values().for_each(|v| used_names(v, out)),
        _ => {}
    }
}

fn check_names(name: &str, config: &Value, at_least: usize) {
    let mut used = BTreeSet::new();
    used_names(config, &mut used);
    let registered = registered();
    let unknown: Vec<_> = used.difference(&registered).collect();
    assert!(
        unknown.is_empty(),
        "{name} names what netsonde does not emit: {unknown:?}"
    );
    assert!(used.len() >= at_least, "{name} uses {used:?}");
}

#[test]
fn the_collector_pipeline_receives_and_forwards_every_signal() {
    let c = load("otel-config/collector.yaml");
    assert!(c["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].is_string());
    assert!(c["receivers"]["otlp"]["protocols"]["http"]["endpoint"].is_string());
    for signal in ["traces", "metrics", "logs"] {
        let pipeline = &c["service"]["pipelines"][signal];
        assert_eq!(
            pipeline["receivers"],
            serde_json::json!(["otlp"]),
            "{signal}"
        );
        let exporters = pipeline["exporters"].as_array().unwrap();
        for exporter in exporters {
            let exporter = exporter.as_str().unwrap();
            assert!(
                !c["exporters"][exporter].is_null(),
                "{exporter} is not defined"
            );
        }
        // Each signal to a backend that takes it (Tempo takes only traces), and a summary.
        let backend = match signal {
            "traces" => "otlp/traces",
            "metrics" => "otlphttp/metrics",
            _ => "otlphttp/logs",
        };
        assert!(
            exporters.contains(&Value::from("debug")) && exporters.contains(&Value::from(backend)),
            "{signal}: {exporters:?}"
        );
        for processor in pipeline["processors"].as_array().unwrap() {
            let processor = processor.as_str().unwrap();
            assert!(
                !c["processors"][processor].is_null(),
                "{processor} is not defined"
            );
        }
    }
    check_names("collector.yaml", &c, 2);
}

#[test]
fn the_tempo_example_uses_span_attributes_netsonde_emits() {
    let t = load("otel-config/tempo.yaml");
    assert!(t["distributor"]["receivers"]["otlp"]["protocols"]["grpc"].is_object());
    let dims = t["metrics_generator"]["processor"]["span_metrics"]["dimensions"]
        .as_array()
        .unwrap();
    assert!(dims.contains(&Value::from("http.route")));
    check_names("tempo.yaml", &t, 4);
}

#[test]
fn the_prometheus_example_promotes_resource_attributes_netsonde_emits() {
    let p = load("otel-config/prometheus.yaml");
    let promoted = p["otlp"]["promote_resource_attributes"].as_array().unwrap();
    assert!(promoted.contains(&Value::from("service.name")));
    check_names("prometheus.yaml", &p, 5);
}

#[test]
fn a_name_netsonde_does_not_emit_is_caught() {
    let bogus = serde_json::json!({ "dimensions": ["http.request.method", "http.target"] });
    let result = std::panic::catch_unwind(|| check_names("bogus", &bogus, 1));
    assert!(
        result.is_err(),
        "http.target (an old semconv name) must be refused"
    );
}
