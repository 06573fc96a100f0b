//! The telemetry registry (semconv/registry.yaml) as tests read it, and the check that a
//! capture (the file exporter's OTLP JSON lines) emits only what it registers.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    pub attributes: Vec<Attribute>,
    pub resources: BTreeMap<String, Vec<String>>,
    pub spans: Vec<SpanDef>,
    pub logs: Vec<LogDef>,
    pub metrics: Vec<MetricDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attribute {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub stability: String,
    pub source: String,
    pub brief: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanDef {
    pub name: String,
    pub brief: String,
    pub attributes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogDef {
    pub event: String,
    pub brief: String,
    pub attributes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricDef {
    pub name: String,
    pub instrument: String,
    pub unit: String,
    pub stability: String,
    pub source: String,
    pub brief: String,
    pub attributes: Vec<String>,
}

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn registry() -> Registry {
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

/// Attribute (name, type) pairs.
pub type AttrSet = BTreeSet<(String, String)>;

/// What a run emitted: (name, type) per place.
#[derive(Debug, Default)]
pub struct Emitted {
    pub resource: BTreeSet<(String, String)>,
    pub span: BTreeSet<(String, String)>,
    pub log: BTreeSet<(String, String)>,
    pub log_events: BTreeSet<String>,
    /// Metric name → (instrument, unit, attribute (name, type)s).
    pub metrics: BTreeMap<String, (String, String, AttrSet)>,
}

pub fn attr_types(attributes: &Value) -> Vec<(String, String)> {
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
pub fn emitted(text: &str) -> Emitted {
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
pub fn check(
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
pub fn problems(r: &Registry, e: &Emitted) -> Vec<String> {
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
