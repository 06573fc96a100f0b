//! The agent's own telemetry, through the OpenTelemetry SDK: one resource (the agent), read
//! on the metric interval from the counters every stage keeps, and handed to the same
//! exporters as the workloads' telemetry.

use std::{sync::Arc, time::Duration};

use opentelemetry::{KeyValue, metrics::MeterProvider as _};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_sdk::{
    error::OTelSdkResult,
    metrics::{
        PeriodicReader, SdkMeterProvider, Temporality, data::ResourceMetrics,
        exporter::PushMetricExporter,
    },
};

use crate::telemetry::{
    StatsReport,
    otlp::{Payload, SCHEMA_URL},
};

/// Where the agent's metrics go once the SDK has collected them.
pub type PayloadSink = Arc<dyn Fn(Payload) + Send + Sync>;
/// Reads the agent's counters now.
pub type StatsSource = Arc<dyn Fn() -> StatsReport + Send + Sync>;

/// Runs the SDK's periodic reader (its own thread) until [`SelfTelemetry::shutdown`].
pub struct SelfTelemetry {
    provider: SdkMeterProvider,
}

struct Forward {
    sink: PayloadSink,
    temporality: Temporality,
}

impl PushMetricExporter for Forward {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let mut request = ExportMetricsServiceRequest::from(metrics);
        for resource in &mut request.resource_metrics {
            resource.schema_url = SCHEMA_URL.into();
            for scope in &mut resource.scope_metrics {
                scope.schema_url = SCHEMA_URL.into();
            }
        }
        (self.sink)(Payload::Metrics(request));
        Ok(())
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        self.temporality
    }
}

/// One observable instrument: name, unit, description, and its value(s) from a report.
type Reading = fn(&StatsReport) -> Vec<(u64, Vec<KeyValue>)>;

fn one(v: u64) -> Vec<(u64, Vec<KeyValue>)> {
    vec![(v, Vec::new())]
}

fn per_signal(values: [u64; 3]) -> Vec<(u64, Vec<KeyValue>)> {
    ["traces", "metrics", "logs"]
        .into_iter()
        .zip(values)
        .map(|(s, v)| (v, vec![KeyValue::new("netsonde.signal", s)]))
        .collect()
}

/// Counters (monotonic, cumulative at the source).
const COUNTERS: [(&str, &str, &str, Reading); 13] = [
    (
        "netsonde.agent.kernel.skipped",
        "{run}",
        "Runs of netsonde's programs the kernel skipped because they would have nested in another BPF program on the same CPU (a retransmit or drop then is not counted), by program.",
        |s| {
            s.skipped_runs
                .iter()
                .map(|(program, n)| {
                    (
                        *n,
                        vec![KeyValue::new("netsonde.probe.program", program.clone())],
                    )
                })
                .collect()
        },
    ),
    (
        "netsonde.agent.kubernetes.objects",
        "{object}",
        "What the Kubernetes watches did with objects: `applied` (listed, added or changed), `deleted`, `malformed` (skipped), `failed` (list and watch requests that failed, retried), `listed` (completed lists).",
        |s| {
            let Some(w) = s.kubernetes else {
                return Vec::new();
            };
            [
                ("applied", w.applied),
                ("deleted", w.deleted),
                ("malformed", w.malformed),
                ("failed", w.errors),
                ("listed", w.lists),
            ]
            .into_iter()
            .map(|(k, v)| (v, vec![KeyValue::new("netsonde.kubernetes.outcome", k)]))
            .collect()
        },
    ),
    (
        "netsonde.agent.kernel.events",
        "{event}",
        "Events the kernel programs produced.",
        |s| one(s.kernel.events()),
    ),
    (
        "netsonde.agent.kernel.lost",
        "{event}",
        "Events the kernel programs dropped because the ring buffer was full.",
        |s| one(s.kernel.lost()),
    ),
    (
        "netsonde.agent.kernel.bytes_not_captured",
        "By",
        "Payload bytes counted but not copied (beyond capture.payload_bytes).",
        |s| one(s.kernel.bytes_not_captured),
    ),
    (
        "netsonde.agent.decode_errors",
        "{event}",
        "Kernel records user space could not decode.",
        |s| one(s.decode_errors),
    ),
    (
        "netsonde.agent.exchanges",
        "{exchange}",
        "HTTP exchanges reported.",
        |s| one(s.exchanges),
    ),
    (
        "netsonde.agent.parse.issues",
        "{issue}",
        "Protocol parsing problems, by kind.",
        |s| {
            [
                ("orphan_response", s.orphan_responses),
                ("unanswered_request", s.unanswered_requests),
                ("hidden_message", s.hidden_messages),
                ("http1_head_cut", s.heads_cut),
                ("http1_incomplete_request", s.incomplete_requests),
                ("unframed_body", s.unframed_bodies),
                ("malformed", s.malformed),
                ("not_http", s.not_http),
                ("http2_broken", s.http2_broken),
                ("http2_resync", s.http2_resyncs),
                ("http2_lost_stream", s.http2_lost_streams),
                ("http2_walk_lost", s.kernel.h2_lost),
                ("http2_walk_resync", s.kernel.h2_resyncs),
                ("tls_no_socket", s.kernel.tls_no_socket),
                ("tls_after_close", s.kernel.tls_after_close),
                ("tls_read_unseen", s.kernel.tls_read_unseen),
                ("after_close", s.kernel.after_close),
                ("http2_unknown_field", s.http2_unknown_fields),
            ]
            .into_iter()
            .map(|(k, v)| (v, vec![KeyValue::new("netsonde.issue", k)]))
            .collect()
        },
    ),
    (
        "netsonde.agent.processes",
        "{event}",
        "Process lifecycle events acted on, by kind.",
        |s| {
            let l = &s.lifecycle;
            [
                ("inherited", l.children_confirmed),
                ("removed", l.children_removed),
                ("exec", l.execs),
                ("exit", l.exits),
                ("dropped", l.dropped),
                ("selected", l.selected),
                ("excluded", l.excluded),
            ]
            .into_iter()
            .map(|(k, v)| (v, vec![KeyValue::new("netsonde.process.event", k)]))
            .collect()
        },
    ),
    (
        "netsonde.node.retransmits",
        "{segment}",
        "TCP segments the node retransmitted, traced processes or not.",
        |s| one(s.kernel.node_retransmits),
    ),
    (
        "netsonde.node.drops",
        "{packet}",
        "Packets the node's kernel dropped, traced processes or not, by drop reason.",
        |s| {
            s.drops_by_reason
                .iter()
                .map(|(reason, n)| {
                    (
                        *n,
                        vec![KeyValue::new("netsonde.kernel.drop.reason", reason.clone())],
                    )
                })
                .collect()
        },
    ),
    (
        "netsonde.agent.export.dropped",
        "{item}",
        "Spans, data points or log records dropped by the exporters (queue full, retries exhausted, or rejected by the collector).",
        |s| per_signal(s.export.dropped),
    ),
    (
        "netsonde.agent.export.failures",
        "{request}",
        "Export requests that failed (each retry counts).",
        |s| per_signal(s.export.failures),
    ),
];

/// Gauges.
const GAUGES: [(&str, &str, &str, Reading); 6] = [
    (
        "netsonde.agent.probe.method",
        "{probe}",
        "Each probe point, with the method it attached by (`none`: not attached); always 1.",
        |s| {
            s.probe_methods
                .iter()
                .map(|(point, method)| {
                    (
                        1,
                        vec![
                            KeyValue::new("netsonde.probe.point", *point),
                            KeyValue::new("netsonde.probe.method", *method),
                        ],
                    )
                })
                .collect()
        },
    ),
    (
        "netsonde.agent.tls.libraries",
        "{library}",
        "TLS library files tried, by whether they were hooked.",
        |s| {
            vec![
                (
                    s.lifecycle.tls_libraries_hooked,
                    vec![KeyValue::new("netsonde.tls.library.state", "hooked")],
                ),
                (
                    s.lifecycle.tls_libraries_failed,
                    vec![KeyValue::new("netsonde.tls.library.state", "failed")],
                ),
            ]
        },
    ),
    (
        "netsonde.agent.connections.tracked",
        "{connection}",
        "Connections in the connection table.",
        |s| one(s.connections_active),
    ),
    (
        "netsonde.agent.export.queue.depth",
        "{batch}",
        "Batches waiting in the export queues.",
        |s| per_signal(s.export.queued),
    ),
    (
        "netsonde.agent.export.disk_queue.items",
        "{item}",
        "Spans, data points or log records held in the disk queue (export.otlp.disk_queue).",
        |s| per_signal(s.export.on_disk),
    ),
    (
        "netsonde.agent.probes",
        "{probe}",
        "Probe points, by whether they attached.",
        |s| {
            vec![
                (
                    s.probes_attached,
                    vec![KeyValue::new("netsonde.probe.state", "attached")],
                ),
                (
                    s.probes_total - s.probes_attached,
                    vec![KeyValue::new("netsonde.probe.state", "failed")],
                ),
            ]
        },
    ),
];

/// One of the agent's metrics as read from a report, for outputs other than the SDK's (the
/// status endpoint's Prometheus text).
pub struct AgentMetric {
    pub name: &'static str,
    pub unit: &'static str,
    pub description: &'static str,
    /// A counter (monotonic); else a gauge.
    pub counter: bool,
    pub points: Vec<(u64, Vec<KeyValue>)>,
}

/// Every agent metric's value(s) in `report`, as the OTLP self-telemetry reports them.
pub fn readings(report: &StatsReport) -> Vec<AgentMetric> {
    let counters = COUNTERS.iter().map(|m| (m, true));
    let gauges = GAUGES.iter().map(|m| (m, false));
    counters
        .chain(gauges)
        .map(|((name, unit, description, read), counter)| AgentMetric {
            name,
            unit,
            description,
            counter,
            points: read(report),
        })
        .collect()
}

/// Names of the agent's metrics (for the registry test).
pub fn metric_names() -> impl Iterator<Item = &'static str> {
    COUNTERS.iter().chain(GAUGES.iter()).map(|(n, ..)| *n)
}

impl SelfTelemetry {
    pub fn start(
        resource: opentelemetry_sdk::Resource,
        interval: Duration,
        delta: bool,
        stats: StatsSource,
        sink: PayloadSink,
    ) -> Self {
        let temporality = if delta {
            Temporality::Delta
        } else {
            Temporality::Cumulative
        };
        let reader = PeriodicReader::builder(Forward { sink, temporality })
            .with_interval(interval)
            .build();
        let provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(reader)
            .build();
        let meter = provider.meter_with_scope(
            opentelemetry::InstrumentationScope::builder("netsonde")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        for (name, unit, description, read) in COUNTERS {
            let stats = stats.clone();
            meter
                .u64_observable_counter(name)
                .with_unit(unit)
                .with_description(description)
                .with_callback(move |o| {
                    for (v, attrs) in read(&stats()) {
                        o.observe(v, &attrs);
                    }
                })
                .build();
        }
        for (name, unit, description, read) in GAUGES {
            let stats = stats.clone();
            meter
                .u64_observable_gauge(name)
                .with_unit(unit)
                .with_description(description)
                .with_callback(move |o| {
                    for (v, attrs) in read(&stats()) {
                        o.observe(v, &attrs);
                    }
                })
                .build();
        }
        SelfTelemetry { provider }
    }

    /// Collects and sends one last time, then stops the reader thread.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!("stopping self-telemetry: {e}");
        }
    }
}
