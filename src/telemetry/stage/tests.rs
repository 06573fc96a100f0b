//! The telemetry stage on records: workloads as resources, pending buffers, peers on metrics, route
//! caps, signals turned off, idle workloads forgotten.

use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::telemetry::{otlp::AttrValue, spans::tests::record};

fn settings(max_routes: usize) -> TelemetrySettings {
    TelemetrySettings {
        drop_reasons: Default::default(),
        kube: None,
        host: "node-a".into(),
        resource_attributes: BTreeMap::from([
            ("deployment.environment.name".into(), "test".into()),
            ("service.name".into(), "only-the-agent".into()),
        ]),
        max_routes_per_workload: max_routes,
        max_series_per_metric: 100,
        delta: false,
        signals: Signals::default(),
        workload_ttl: Duration::from_secs(300),
        rpc_legacy_attributes: false,
        peer_addresses_on_metrics: false,
        access_log_attributes: Default::default(),
        metric_request_max_bytes: 3 << 20,
    }
}

fn attr<'a>(
    attrs: &'a [opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<&'a opentelemetry_proto::tonic::common::v1::any_value::Value> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

#[test]
fn each_workload_is_a_resource_with_its_spans_and_logs() {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_001);
    let mut t = Telemetry::new(settings(10), now);
    let a = record(Role::Server, &[], 200);
    let mut b = record(Role::Client, &[], 200);
    b.pid = 43;
    b.comm = Arc::from("other");
    t.add_exchanges(&mut [a.clone(), b, a], now);
    assert_eq!(t.pending_exchanges(), 3);
    let (spans, logs) = t.take_spans_and_logs().unwrap();
    let (Payload::Traces(traces), Payload::Logs(logs)) =
        (spans.decoded().unwrap(), logs.decoded().unwrap())
    else {
        panic!("traces and logs");
    };
    assert_eq!(traces.resource_spans.len(), 2);
    assert_eq!(logs.resource_logs.len(), 2);
    let server = traces
        .resource_spans
        .iter()
        .find(|r| {
            attr(&r.resource.as_ref().unwrap().attributes, "process.pid")
                == Some(&Value::IntValue(42))
        })
        .unwrap();
    let resource = &server.resource.as_ref().unwrap().attributes;
    // The configured environment applies; the configured service.name is the agent's.
    assert_eq!(
        attr(resource, "deployment.environment.name"),
        Some(&Value::StringValue("test".into()))
    );
    assert_ne!(
        attr(resource, "service.name"),
        Some(&Value::StringValue("only-the-agent".into()))
    );
    assert_eq!(
        attr(resource, "host.name"),
        Some(&Value::StringValue("node-a".into()))
    );
    assert_eq!(server.scope_spans[0].spans.len(), 2);
    assert_eq!(server.scope_spans[0].spans[0].name, "GET /users/{id}");
    assert!(t.take_spans_and_logs().is_none(), "nothing left pending");
    // Metrics: one duration point per workload and side, with both requests counted.
    let [Payload::Metrics(metrics)] = &t.collect_metrics(now)[..] else {
        panic!("metrics");
    };
    assert_eq!(metrics.resource_metrics.len(), 2);
}

#[test]
fn pending_buffers_stay_for_busy_workloads_and_go_with_idle_ones() {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_001);
    let mut t = Telemetry::new(settings(10), now);
    let busy = record(Role::Server, &[], 200);
    let mut idle = record(Role::Client, &[], 200);
    idle.pid = 43;
    idle.comm = Arc::from("other");
    let busy_key = (busy.pid, busy.comm.clone());
    t.add_exchanges(&mut [busy.clone(), idle, busy.clone()], now);
    let first = t.take_spans_and_logs().unwrap();
    let kept = t.pending[&busy_key].spans.capacity();
    assert!(kept > 0, "the busy workload's buffer is kept");
    assert_eq!(t.pending.len(), 2, "both had exchanges in that batch");
    // The next batch: the same busy workload, the other one quiet.
    t.add_exchanges(&mut [busy.clone(), busy], now);
    let second = t.take_spans_and_logs().unwrap();
    assert_eq!(
        t.pending.len(),
        1,
        "the idle workload's buffers are given back"
    );
    assert!(t.pending[&busy_key].spans.is_empty());
    assert!(t.pending[&busy_key].spans.capacity() > 0, "and kept again");
    // Each batch carries exactly its own exchanges.
    for (payload, spans) in [(first.0, 3), (second.0, 2)] {
        let Payload::Traces(traces) = payload.decoded().unwrap() else {
            panic!("traces");
        };
        let n: usize = traces
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        assert_eq!(n, spans);
    }
}

#[test]
fn peer_addresses_reach_metrics_only_when_asked_for() {
    let activity = |role| ConnectionActivity {
        pid: 1,
        comm: Arc::from("x"),
        cgroup_id: 0,
        role,
        local: Some("10.0.0.1:8080".parse().unwrap()),
        remote: Some("10.0.0.2:41000".parse().unwrap()),
        kind: ActivityKind::Untracked { closed: true },
    };
    let keys = |role, on| -> Vec<(&str, String)> {
        connection_attributes(&activity(role), None, on)
            .into_iter()
            .filter(|(k, _)| k.contains("address") || *k == "server.port")
            .map(|(k, v)| (k, format!("{v:?}")))
            .collect()
    };
    let ip = |s: &str| format!("{:?}", AttrValue::from(s.to_string()));
    let port = |p: u16| format!("{:?}", AttrValue::from(p));
    for (role, on, expected) in [
        (Some(Role::Server), false, vec![("server.port", port(8080))]),
        (
            Some(Role::Server),
            true,
            vec![
                ("network.peer.address", ip("10.0.0.2")),
                ("server.port", port(8080)),
            ],
        ),
        (
            Some(Role::Client),
            false,
            vec![
                ("server.address", ip("10.0.0.2")),
                ("server.port", port(41000)),
            ],
        ),
        (None, false, vec![]),
        (None, true, vec![("network.peer.address", ip("10.0.0.2"))]),
    ] {
        assert_eq!(keys(role, on), expected, "{role:?}, switch {on}");
    }
}

#[test]
fn routes_beyond_the_cap_overflow() {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_001);
    let mut t = Telemetry::new(settings(1), now);
    let mut first = record(Role::Server, &[], 200);
    first.target = "/a".into();
    let mut second = record(Role::Server, &[], 200);
    second.target = "/b".into();
    t.add_exchanges(&mut [first, second], now);
    let Some(Payload::Traces(traces)) = t.take_spans_and_logs().map(|(s, _)| s.decoded().unwrap())
    else {
        panic!()
    };
    let names: Vec<_> = traces.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["GET /a", "GET {overflow}"]);
}

#[test]
fn signals_turned_off_are_not_built() {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_001);
    let mut only_logs = settings(10);
    only_logs.signals = Signals {
        traces: false,
        metrics: false,
        logs: true,
    };
    let mut t = Telemetry::new(only_logs, now);
    t.add_exchanges(&mut [record(Role::Server, &[], 200)], now);
    let (spans, logs) = t.take_spans_and_logs().unwrap();
    let (Payload::Traces(traces), Payload::Logs(logs)) =
        (spans.decoded().unwrap(), logs.decoded().unwrap())
    else {
        panic!()
    };
    assert!(traces.resource_spans.is_empty());
    assert_eq!(logs.resource_logs[0].scope_logs[0].log_records.len(), 1);
    assert!(
        t.collect_metrics(now).is_empty(),
        "no metrics were recorded"
    );
}

#[test]
fn idle_workloads_are_forgotten() {
    let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_001);
    let mut t = Telemetry::new(settings(10), t0);
    t.add_exchanges(&mut [record(Role::Server, &[], 200)], t0);
    t.take_spans_and_logs();
    assert!(!t.collect_metrics(t0 + Duration::from_secs(10)).is_empty());
    assert_eq!(t.workloads(), 1);
    assert!(!t.collect_metrics(t0 + Duration::from_secs(400)).is_empty());
    assert_eq!(t.workloads(), 0);
    assert!(t.collect_metrics(t0 + Duration::from_secs(500)).is_empty());
}

/// A lean access log keeps the attributes to filter by, in the span's order; the span keeps
/// them all; by default the log repeats the span's.
#[test]
fn a_lean_access_log_keeps_what_logs_are_filtered_by() {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_001);
    let keys = |lean: AccessLogAttributes| {
        let mut t = Telemetry::new(
            TelemetrySettings {
                access_log_attributes: lean,
                ..settings(10)
            },
            now,
        );
        let mut r = record(Role::Server, &[("user-agent", "curl/8")], 503);
        r.kernel.sent.packets = 2;
        t.add_exchanges(&mut [r], now);
        let (spans, logs) = t.take_spans_and_logs().unwrap();
        let (Payload::Traces(traces), Payload::Logs(logs)) =
            (spans.decoded().unwrap(), logs.decoded().unwrap())
        else {
            panic!("traces and logs");
        };
        let names = |attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
            attrs.iter().map(|a| a.key.clone()).collect::<Vec<_>>()
        };
        let span = &traces.resource_spans[0].scope_spans[0].spans[0];
        let log = &logs.resource_logs[0].scope_logs[0].log_records[0];
        (names(&span.attributes), names(&log.attributes))
    };
    let (span, log) = keys(AccessLogAttributes::All);
    assert_eq!(log, span);
    let (lean_span, lean_log) = keys(AccessLogAttributes::Lean);
    assert_eq!(lean_span, span, "the span keeps every attribute");
    let want: Vec<String> = span
        .iter()
        .filter(|k| crate::telemetry::logs::LEAN_LOG_ATTRIBUTES.contains(&k.as_str()))
        .cloned()
        .collect();
    assert_eq!(lean_log, want);
    for key in [
        "http.request.method",
        "url.path",
        "http.response.status_code",
        "error.type",
        "client.address",
    ] {
        assert!(lean_log.iter().any(|k| k == key), "{key}: {lean_log:?}");
    }
    for key in [
        "user_agent.original",
        "client.port",
        "netsonde.kernel.packets.sent",
    ] {
        assert!(span.iter().any(|k| k == key), "{key} on the span: {span:?}");
        assert!(!lean_log.iter().any(|k| k == key), "{key}: {lean_log:?}");
    }
}
