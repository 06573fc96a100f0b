//! The telemetry stage, per exchange, beside its baseline in the same run:
//!
//! * `console_line` — the baseline: one console line for the exchange (what netsonde did before
//!   OTLP existed);
//! * `access_log_line` — the access log record's text body alone (part of the OTLP path);
//! * `otlp_batch_512` — the OTLP path as it runs: 512 exchanges turned into spans, access logs
//!   and histogram updates, taken as one batch and protobuf-encoded (traces and logs), per
//!   exchange;
//! * `otlp_alone` — the same for a batch of one exchange (a quiet node: every span and log
//!   leaves on its own).
//!
//! Metrics collection is not per exchange (once per interval) and is measured separately:
//! `collect_metrics_100_workloads`.

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use netsonde::{
    export::console::format_exchange,
    protocols::{Completeness, Role},
    telemetry::{
        ExchangeRecord, Telemetry, TelemetrySettings, http::access_log_line, text::Rfc3339Millis,
    },
};

fn record(pid: u32, n: u64) -> ExchangeRecord {
    let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000) + Duration::from_micros(n);
    ExchangeRecord {
        kernel: Default::default(),
        peer: None,
        cgroup_id: 0,
        start,
        end: start + Duration::from_micros(480),
        role: Role::Server,
        pid,
        comm: Arc::from("nginx"),
        method: "GET".into(),
        target: format!("/api/users/{n}?page=2"),
        version_minor: 1,
        version_major: 1,
        status: 200,
        client: Some("127.0.0.1:40000".parse().unwrap()),
        server: Some("127.0.0.1:8080".parse().unwrap()),
        local: Some("127.0.0.1:8080".parse().unwrap()),
        remote: Some("127.0.0.1:40000".parse().unwrap()),
        request_headers: vec![
            ("host".into(), "127.0.0.1:8080".into()),
            ("user-agent".into(), "curl/7.88.1".into()),
            (
                "traceparent".into(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            ),
        ],
        request_body_bytes: 0,
        response_body_bytes: 612,
        completeness: Completeness::Complete,
        tls: false,
        rpc: None,
    }
}

fn settings() -> TelemetrySettings {
    TelemetrySettings {
        drop_reasons: Default::default(),
        kube: None,
        host: "bench".into(),
        resource_attributes: Default::default(),
        max_routes_per_workload: 200,
        max_series_per_metric: 2000,
        delta: false,
        signals: Default::default(),
        workload_ttl: Duration::from_secs(300),
        rpc_legacy_attributes: false,
        peer_addresses_on_metrics: false,
        access_log_attributes: Default::default(),
        metric_request_max_bytes: 3 << 20,
    }
}

fn telemetry(c: &mut Criterion) {
    let mut g = c.benchmark_group("telemetry");
    g.throughput(Throughput::Elements(1));
    let one = record(std::process::id(), 7);
    g.bench_function("console_line", |b| {
        let mut line = String::with_capacity(256);
        let mut clock = Rfc3339Millis::default();
        b.iter(|| {
            line.clear();
            format_exchange(&mut line, black_box(&one), &mut clock);
            black_box(line.len());
        })
    });
    // The access log's text body alone (part of every otlp_* figure).
    g.bench_function("access_log_line", |b| {
        let mut line = String::with_capacity(256);
        b.iter(|| {
            line.clear();
            access_log_line(&mut line, black_box(&one));
            black_box(line.len());
        })
    });
    g.bench_function("otlp_alone", |b| {
        let now = SystemTime::now();
        let mut t = Telemetry::new(settings(), now);
        let mut batch = [one.clone()];
        b.iter(|| {
            t.add_exchanges(black_box(&mut batch), now);
            let (spans, logs) = t.take_spans_and_logs().unwrap();
            black_box((spans.into_bytes(), logs.into_bytes()));
        })
    });
    let mut batch: Vec<_> = (0..512).map(|n| record(std::process::id(), n)).collect();
    g.throughput(Throughput::Elements(512));
    g.bench_function("otlp_batch_512", |b| {
        let now = SystemTime::now();
        let mut t = Telemetry::new(settings(), now);
        b.iter(|| {
            t.add_exchanges(black_box(&mut batch), now);
            let (spans, logs) = t.take_spans_and_logs().unwrap();
            black_box((spans.into_bytes(), logs.into_bytes()));
        })
    });
    g.finish();

    let mut g = c.benchmark_group("metrics");
    g.bench_function("collect_metrics_100_workloads", |b| {
        let now = SystemTime::now();
        let mut t = Telemetry::new(settings(), now);
        // 100 workloads (pids) with 20 routes each; their processes do not exist, so each
        // resource falls back to the name given.
        for pid in 0..100u32 {
            let mut records: Vec<_> = (0..20u64)
                .map(|n| {
                    let mut r = record(4_000_000 + pid, n);
                    r.target = format!("/route{n}");
                    r
                })
                .collect();
            t.add_exchanges(&mut records, now);
        }
        t.take_spans_and_logs();
        b.iter(|| {
            black_box(
                t.collect_metrics(now)
                    .iter()
                    .map(|p| p.encode().len())
                    .sum::<usize>(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, telemetry);
criterion_main!(benches);
