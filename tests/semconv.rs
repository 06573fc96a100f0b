//! The telemetry registry (semconv/registry.yaml) against the code, the docs, and a real
//! capture: everything emitted must be registered, with the registered type, unit and
//! instrument; docs/telemetry.md must be what the registry generates.

mod support;

use std::collections::BTreeSet;

use netsonde::telemetry::{
    metrics::{Instrument, Kind},
    selfmon,
};
use support::{
    Agent, PyServer, curl,
    registry::{Emitted, Registry, emitted, problems, registry, root},
    serial,
};

/// docs/telemetry.md, as the registry generates it.
fn render(r: &Registry) -> String {
    let mut md = String::from(
        "# Telemetry reference\n\n\
         Generated from `semconv/registry.yaml` by `NETSONDE_UPDATE_DOCS=1 cargo test --test \
         semconv`; do not edit by hand. A test fails when this page is stale, and another when \
         a real capture emits anything not listed here.\n\n\
         Every observed process is a resource of its spans and logs; metrics are one resource \
         per container in a pod (without `process.*`), per process elsewhere. The agent's own \
         metrics (`netsonde.agent.*`) come with the agent's resource. The instrumentation scope \
         is `netsonde` with the agent's version. Names follow the OpenTelemetry semantic \
         conventions 1.44.0: every resource and scope carries the schema URL \
         `https://opentelemetry.io/schemas/1.44.0`. When spans are exported, the request and \
         call duration histograms carry exemplars: per bucket, the last measurement of the \
         interval with its span's trace and span id. *Source* says whether a name is an \
         OpenTelemetry semantic convention (`semconv`), from the OpenTelemetry specification \
         (`otel-spec`), or netsonde's own (`netsonde`).\n\n## Resources\n\n",
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
