//! The telemetry registry (semconv/registry.yaml) against the code, the docs, and a real
//! capture: everything emitted must be registered, with the registered type, unit and
//! instrument; docs/telemetry.md must be what the registry generates.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use netsonde::telemetry::{
    metrics::{Instrument, Kind},
    selfmon,
};
use serde::Deserialize;
use serde_json::Value;
use support::{Agent, PyServer, curl, serial};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Registry {
    attributes: Vec<Attribute>,
    resources: BTreeMap<String, Vec<String>>,
    spans: Vec<SpanDef>,
    logs: Vec<LogDef>,
    metrics: Vec<MetricDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Attribute {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    stability: String,
    source: String,
    brief: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpanDef {
    name: String,
    brief: String,
    attributes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogDef {
    event: String,
    brief: String,
    attributes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricDef {
    name: String,
    instrument: String,
    unit: String,
    stability: String,
    source: String,
    brief: String,
    attributes: Vec<String>,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn registry() -> Registry {
    let text = std::fs::read_to_string(root().join("semconv/registry.yaml")).unwrap();
    let registry: Registry = serde_saphyr::from_str(&text).expect("semconv/registry.yaml parses");
    // Every list names declared attributes, each declared once.
    let declared: BTreeSet<_> = registry
        .attributes
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(
        declared.len(),
        registry.attributes.len(),
        "an attribute is declared twice"
    );
    let used = registry
        .resources
        .values()
        .flatten()
        .chain(registry.spans.iter().flat_map(|s| &s.attributes))
        .chain(registry.logs.iter().flat_map(|l| &l.attributes))
        .chain(registry.metrics.iter().flat_map(|m| &m.attributes));
    for name in used {
        assert!(
            declared.contains(name.as_str()),
            "{name} is used but not declared"
        );
    }
    for a in &registry.attributes {
        assert!(
            ["string", "int", "bool", "double"].contains(&a.kind.as_str()),
            "{}",
            a.name
        );
        assert!(
            ["stable", "release_candidate", "development"].contains(&a.stability.as_str()),
            "{}",
            a.name
        );
        assert!(
            ["semconv", "otel-spec", "netsonde"].contains(&a.source.as_str()),
            "{}",
            a.name
        );
        assert_eq!(
            a.source == "netsonde",
            a.name.starts_with("netsonde."),
            "{}",
            a.name
        );
    }
    registry
}

/// docs/telemetry.md, as the registry generates it.
fn render(r: &Registry) -> String {
    let mut md = String::from(
        "# Telemetry reference\n\n\
         Generated from `semconv/registry.yaml` by `NETSONDE_UPDATE_DOCS=1 cargo test --test \
         semconv`; do not edit by hand. A test fails when this page is stale, and another when \
         a real capture emits anything not listed here.\n\n\
         Every observed workload (a process) is its own resource; the agent's own metrics \
         (`netsonde.agent.*`) come with the agent's resource. The instrumentation scope is \
         `netsonde` with the agent's version. *Source* says whether a name is an OpenTelemetry \
         semantic convention (`semconv`), from the OpenTelemetry specification (`otel-spec`), \
         or netsonde's own (`netsonde`).\n\n## Resources\n\n",
    );
    for (kind, attrs) in &r.resources {
        md.push_str(&format!("- **{kind}**: {}\n", code_list(attrs)));
    }
    md.push_str("\n## Spans\n\n");
    for s in &r.spans {
        md.push_str(&format!(
            "### `{}`\n\n{}\n\nAttributes: {}\n\n",
            s.name,
            s.brief,
            code_list(&s.attributes)
        ));
    }
    md.push_str("## Logs\n\n");
    for l in &r.logs {
        md.push_str(&format!(
            "### `{}`\n\n{}\n\nAttributes: {}\n\n",
            l.event,
            l.brief,
            code_list(&l.attributes)
        ));
    }
    md.push_str(
        "## Metrics\n\n| name | instrument | unit | stability | source | description | attributes |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for m in &r.metrics {
        md.push_str(&format!(
            "| `{}` | {} | `{}` | {} | {} | {} | {} |\n",
            m.name,
            m.instrument,
            m.unit,
            m.stability,
            m.source,
            m.brief,
            code_list(&m.attributes)
        ));
    }
    md.push_str(
        "\n## Attributes\n\n| name | type | stability | source | meaning |\n|---|---|---|---|---|\n",
    );
    for a in &r.attributes {
        md.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            a.name, a.kind, a.stability, a.source, a.brief
        ));
    }
    md
}

fn code_list(names: &[String]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn docs_are_generated_from_the_registry() {
    let expected = render(&registry());
    let path = root().join("docs/telemetry.md");
    if std::env::var_os("NETSONDE_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "docs/telemetry.md is stale: run NETSONDE_UPDATE_DOCS=1 cargo test --test semconv"
    );
}

#[test]
fn the_code_and_the_registry_agree() {
    let r = registry();
    for inst in Instrument::ALL {
        let spec = inst.spec();
        let def = r
            .metrics
            .iter()
            .find(|m| m.name == spec.name)
            .unwrap_or_else(|| panic!("{} is not registered", spec.name));
        let instrument = match spec.kind {
            Kind::Counter => "counter",
            Kind::UpDownCounter => "updowncounter",
            Kind::Histogram(_) => "histogram",
        };
        assert_eq!(
            (def.instrument.as_str(), def.unit.as_str()),
            (instrument, spec.unit)
        );
    }
    for name in selfmon::metric_names() {
        assert!(
            r.metrics.iter().any(|m| m.name == name),
            "{name} is not registered"
        );
    }
}

/// Attribute (name, type) pairs.
type AttrSet = BTreeSet<(String, String)>;

/// What a run emitted: (name, type) per place.
#[derive(Debug, Default)]
struct Emitted {
    resource: BTreeSet<(String, String)>,
    span: BTreeSet<(String, String)>,
    log: BTreeSet<(String, String)>,
    log_events: BTreeSet<String>,
    /// Metric name → (instrument, unit, attribute (name, type)s).
    metrics: BTreeMap<String, (String, String, AttrSet)>,
}

fn attr_types(attributes: &Value) -> Vec<(String, String)> {
    attributes
        .as_array()
        .into_iter()
        .flatten()
        .map(|kv| {
            let v = &kv["value"];
            let kind = if v.get("stringValue").is_some() {
                "string"
            } else if v.get("intValue").is_some() {
                "int"
            } else if v.get("boolValue").is_some() {
                "bool"
            } else if v.get("doubleValue").is_some() {
                "double"
            } else {
                "other"
            };
            (
                kv["key"].as_str().unwrap_or("").to_string(),
                kind.to_string(),
            )
        })
        .collect()
}

/// Reads the file exporter's OTLP JSON lines.
fn emitted(text: &str) -> Emitted {
    let mut e = Emitted::default();
    for line in text.lines() {
        let json: Value = serde_json::from_str(line).unwrap();
        for rs in json["resourceSpans"].as_array().into_iter().flatten() {
            e.resource.extend(attr_types(&rs["resource"]["attributes"]));
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    e.span.extend(attr_types(&span["attributes"]));
                }
            }
        }
        for rl in json["resourceLogs"].as_array().into_iter().flatten() {
            e.resource.extend(attr_types(&rl["resource"]["attributes"]));
            for sl in rl["scopeLogs"].as_array().into_iter().flatten() {
                for log in sl["logRecords"].as_array().into_iter().flatten() {
                    e.log.extend(attr_types(&log["attributes"]));
                    e.log_events
                        .insert(log["eventName"].as_str().unwrap_or("").to_string());
                }
            }
        }
        for rm in json["resourceMetrics"].as_array().into_iter().flatten() {
            e.resource.extend(attr_types(&rm["resource"]["attributes"]));
            for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
                for m in sm["metrics"].as_array().into_iter().flatten() {
                    let (instrument, data) = if let Some(s) = m.get("sum") {
                        let monotonic = s["isMonotonic"].as_bool().unwrap_or(false);
                        (
                            if monotonic {
                                "counter"
                            } else {
                                "updowncounter"
                            },
                            s,
                        )
                    } else if let Some(h) = m.get("histogram") {
                        ("histogram", h)
                    } else if let Some(g) = m.get("gauge") {
                        ("gauge", g)
                    } else {
                        ("other", m)
                    };
                    let entry = e
                        .metrics
                        .entry(m["name"].as_str().unwrap_or("").to_string())
                        .or_insert_with(|| {
                            (
                                instrument.to_string(),
                                m["unit"].as_str().unwrap_or("").to_string(),
                                BTreeSet::new(),
                            )
                        });
                    for p in data["dataPoints"].as_array().into_iter().flatten() {
                        entry.2.extend(attr_types(&p["attributes"]));
                    }
                }
            }
        }
    }
    e
}

/// Attributes `allowed` does not admit, or of another type than registered.
fn check(
    r: &Registry,
    out: &mut Vec<String>,
    place: &str,
    allowed: &dyn Fn(&str) -> bool,
    attrs: &BTreeSet<(String, String)>,
) {
    let kind_of = |name: &str| {
        r.attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.kind.as_str())
    };
    for (name, kind) in attrs {
        if !allowed(name) {
            out.push(format!("{place} attribute {name} is not registered there"));
        } else if kind_of(name) != Some(kind.as_str()) {
            out.push(format!(
                "{place} attribute {name} is emitted as {kind}, registered as {:?}",
                kind_of(name)
            ));
        }
    }
}

/// Everything emitted that the registry does not list, or lists differently.
fn problems(r: &Registry, e: &Emitted) -> Vec<String> {
    let mut out = Vec::new();
    let resource: BTreeSet<&String> = r.resources.values().flatten().collect();
    check(
        r,
        &mut out,
        "resource",
        &|n| resource.iter().any(|r| *r == n),
        &e.resource,
    );
    check(
        r,
        &mut out,
        "span",
        &|n| r.spans.iter().any(|s| s.attributes.iter().any(|a| a == n)),
        &e.span,
    );
    check(
        r,
        &mut out,
        "log",
        &|n| r.logs.iter().any(|l| l.attributes.iter().any(|a| a == n)),
        &e.log,
    );
    for event in &e.log_events {
        if !r.logs.iter().any(|l| &l.event == event) {
            out.push(format!("log event {event:?} is not registered"));
        }
    }
    for (name, (instrument, unit, attrs)) in &e.metrics {
        let Some(def) = r.metrics.iter().find(|m| &m.name == name) else {
            out.push(format!("metric {name} is not registered"));
            continue;
        };
        if (&def.instrument, &def.unit) != (instrument, unit) {
            out.push(format!(
                "metric {name} is a {instrument} in {unit}, registered as a {} in {}",
                def.instrument, def.unit
            ));
        }
        check(
            r,
            &mut out,
            &format!("metric {name}"),
            &|n| def.attributes.iter().any(|a| a == n),
            attrs,
        );
    }
    out
}

#[test]
fn an_unregistered_or_mistyped_name_is_caught() {
    let r = registry();
    let mut e = Emitted::default();
    e.span
        .insert(("http.request.method".into(), "string".into()));
    e.metrics.insert(
        "http.server.request.duration".into(),
        (
            "histogram".into(),
            "s".into(),
            BTreeSet::from([("http.route".into(), "string".into())]),
        ),
    );
    assert_eq!(problems(&r, &e), Vec::<String>::new());
    e.span.insert(("http.secret".into(), "string".into()));
    e.span
        .insert(("http.response.status_code".into(), "string".into()));
    e.resource.insert(("url.path".into(), "string".into()));
    e.metrics.insert(
        "made.up".into(),
        ("counter".into(), "1".into(), BTreeSet::new()),
    );
    e.metrics.insert(
        "http.client.request.duration".into(),
        ("histogram".into(), "ms".into(), BTreeSet::new()),
    );
    let found = problems(&r, &e);
    assert_eq!(found.len(), 5, "{found:#?}");
}

#[test]
fn a_real_capture_emits_only_what_is_registered() {
    require_privileges!();
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let out_arg = out.display().to_string();
    let server = PyServer::start();
    let pid = server.pid.to_string();
    let agent = Agent::start_with_env(
        &[
            "--comm",
            "curl",
            "--pid",
            &pid,
            "--exporter",
            "file",
            "--file-path",
            &out_arg,
        ],
        &[("OTEL_METRIC_EXPORT_INTERVAL", "300")],
    );
    curl(&[
        "-H",
        "X-Forwarded-For: 203.0.113.7",
        &server.url("/items/1?a=b"),
    ]);
    curl(&["-X", "PURGE", &server.url("/items/2")]);
    curl(&["--data-binary", "hello", &server.url("/echo")]);
    curl(&[&server.url("/fail")]);
    curl(&[&server.url("/chunked")]);
    std::thread::sleep(std::time::Duration::from_millis(700));
    agent.stop();
    let e = emitted(&std::fs::read_to_string(&out).unwrap());
    let r = registry();
    let found = problems(&r, &e);
    assert!(
        found.is_empty(),
        "emitted but not registered:\n{}",
        found.join("\n")
    );
    // And the run did emit the main things (so this test cannot pass on an empty file).
    for metric in [
        "http.server.request.duration",
        "http.client.request.duration",
        "http.server.response.body.size",
        "netsonde.connection.io",
        "netsonde.connection.opened",
        "netsonde.agent.exchanges",
    ] {
        assert!(e.metrics.contains_key(metric), "{metric} was not emitted");
    }
    for attr in [
        "http.request.method_original",
        "client.address",
        "error.type",
        "url.query",
    ] {
        assert!(
            e.span.iter().any(|(n, _)| n == attr),
            "{attr} was not emitted"
        );
    }
}
