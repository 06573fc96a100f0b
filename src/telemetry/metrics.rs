//! Metric aggregation, per workload: netsonde aggregates itself (the SDK's providers hold one
//! resource each, and netsonde reports many) and emits OTLP data points.
//!
//! Every series belongs to one workload, one instrument and one attribute set. Each instrument
//! keeps at most `max_series` attribute sets per workload; more are merged into one series
//! marked `otel.metric.overflow=true`, as the OpenTelemetry SDKs do.

use std::hash::BuildHasher as _;

use foldhash::HashMap;
use hashbrown::{HashTable, hash_table::Entry};

use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, Histogram, HistogramDataPoint, Metric, NumberDataPoint, Sum,
    exemplar, metric::Data, number_data_point,
};

use crate::telemetry::otlp::{AttrValue, Attrs, to_key_values};

/// Semconv's advised buckets for HTTP durations, in seconds.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Body sizes, in bytes: semconv advises none; powers of four from 64 B to 16 MiB.
pub const SIZE_BUCKETS: [f64; 11] = [
    0.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
];

/// Kernel times (a packet in a layer, a handshake, a wait for accept()), in seconds: 1 µs to
/// 1 s.
pub const KERNEL_BUCKETS: [f64; 19] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    5e-2, 0.1, 0.25, 0.5, 1.0,
];

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Counter,
    UpDownCounter,
    Histogram(&'static [f64]),
}

/// Every metric netsonde emits for workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Instrument {
    HttpServerDuration,
    HttpServerRequestBodySize,
    HttpServerResponseBodySize,
    HttpClientDuration,
    HttpClientRequestBodySize,
    HttpClientResponseBodySize,
    RpcServerDuration,
    RpcClientDuration,
    ConnectionOpened,
    ConnectionClosed,
    ConnectionActive,
    ConnectionIo,
    ConnectDuration,
    AcceptDuration,
    KernelPackets,
    KernelBytes,
    KernelLayerDuration,
    KernelRetransmits,
    KernelDrops,
}

pub struct Spec {
    pub name: &'static str,
    pub unit: &'static str,
    pub description: &'static str,
    pub kind: Kind,
}

impl Instrument {
    pub const ALL: [Instrument; 19] = [
        Instrument::HttpServerDuration,
        Instrument::HttpServerRequestBodySize,
        Instrument::HttpServerResponseBodySize,
        Instrument::HttpClientDuration,
        Instrument::HttpClientRequestBodySize,
        Instrument::HttpClientResponseBodySize,
        Instrument::RpcServerDuration,
        Instrument::RpcClientDuration,
        Instrument::ConnectionOpened,
        Instrument::ConnectionClosed,
        Instrument::ConnectionActive,
        Instrument::ConnectionIo,
        Instrument::ConnectDuration,
        Instrument::AcceptDuration,
        Instrument::KernelPackets,
        Instrument::KernelBytes,
        Instrument::KernelLayerDuration,
        Instrument::KernelRetransmits,
        Instrument::KernelDrops,
    ];

    pub fn spec(self) -> Spec {
        use Instrument::*;
        let (name, unit, description, kind) = match self {
            HttpServerDuration => (
                "http.server.request.duration",
                "s",
                "Duration of HTTP server requests.",
                Kind::Histogram(&DURATION_BUCKETS),
            ),
            HttpServerRequestBodySize => (
                "http.server.request.body.size",
                "By",
                "Size of HTTP server request bodies.",
                Kind::Histogram(&SIZE_BUCKETS),
            ),
            HttpServerResponseBodySize => (
                "http.server.response.body.size",
                "By",
                "Size of HTTP server response bodies.",
                Kind::Histogram(&SIZE_BUCKETS),
            ),
            HttpClientDuration => (
                "http.client.request.duration",
                "s",
                "Duration of HTTP client requests.",
                Kind::Histogram(&DURATION_BUCKETS),
            ),
            HttpClientRequestBodySize => (
                "http.client.request.body.size",
                "By",
                "Size of HTTP client request bodies.",
                Kind::Histogram(&SIZE_BUCKETS),
            ),
            HttpClientResponseBodySize => (
                "http.client.response.body.size",
                "By",
                "Size of HTTP client response bodies.",
                Kind::Histogram(&SIZE_BUCKETS),
            ),
            RpcServerDuration => (
                "rpc.server.call.duration",
                "s",
                "Duration of RPCs served (gRPC calls, unary and streaming).",
                Kind::Histogram(&DURATION_BUCKETS),
            ),
            RpcClientDuration => (
                "rpc.client.call.duration",
                "s",
                "Duration of RPCs made (gRPC calls, unary and streaming).",
                Kind::Histogram(&DURATION_BUCKETS),
            ),
            ConnectionOpened => (
                "netsonde.connection.opened",
                "{connection}",
                "TCP connections opened (connected or accepted) while netsonde watched.",
                Kind::Counter,
            ),
            ConnectionClosed => (
                "netsonde.connection.closed",
                "{connection}",
                "TCP connections the process closed.",
                Kind::Counter,
            ),
            ConnectionActive => (
                "netsonde.connection.active",
                "{connection}",
                "TCP connections netsonde is tracking.",
                Kind::UpDownCounter,
            ),
            ConnectionIo => (
                "netsonde.connection.io",
                "By",
                "Payload bytes the process sent or received on TCP connections.",
                Kind::Counter,
            ),
            ConnectDuration => (
                "netsonde.connection.connect.duration",
                "s",
                "Time to connect: the TCP handshake (SYN to ESTABLISHED) when the kernel layer saw it, else the blocking connect() call.",
                Kind::Histogram(&KERNEL_BUCKETS),
            ),
            AcceptDuration => (
                "netsonde.connection.accept.duration",
                "s",
                "Time an accepted connection waited, established, in the listen queue until accept() returned it.",
                Kind::Histogram(&KERNEL_BUCKETS),
            ),
            KernelPackets => (
                "netsonde.kernel.packets",
                "{packet}",
                "Packets of traced syscalls: sent through the device layer, or received and copied to the reader.",
                Kind::Counter,
            ),
            KernelBytes => (
                "netsonde.kernel.io",
                "By",
                "Bytes of those packets as the device layer saw them, headers included.",
                Kind::Counter,
            ),
            KernelLayerDuration => (
                "netsonde.kernel.layer.duration",
                "s",
                "Time a packet spent in a kernel layer (a connection's packets since the last report count at their mean).",
                Kind::Histogram(&KERNEL_BUCKETS),
            ),
            KernelRetransmits => (
                "netsonde.kernel.retransmits",
                "{segment}",
                "TCP segments the kernel retransmitted.",
                Kind::Counter,
            ),
            KernelDrops => (
                "netsonde.kernel.drops",
                "{packet}",
                "Packets of the connection the kernel dropped, by drop reason.",
                Kind::Counter,
            ),
        };
        Spec {
            name,
            unit,
            description,
            kind,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Sum(i64),
    Histogram {
        counts: Vec<u64>,
        count: u64,
        sum: f64,
        min: f64,
        max: f64,
        /// The last traced measurement of each bucket since the last collection, as the
        /// SDKs' aligned-bucket reservoir keeps them: at most one per bucket.
        exemplars: Vec<Sample>,
    },
}

/// A measurement kept as an exemplar: its bucket, value, time and span.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    bucket: usize,
    value: f64,
    time: u64,
    span: SpanIds,
}

impl Sample {
    fn exemplar(self) -> Exemplar {
        Exemplar {
            filtered_attributes: Vec::new(),
            time_unix_nano: self.time,
            span_id: self.span.span_id.to_vec(),
            trace_id: self.span.trace_id.to_vec(),
            value: Some(exemplar::Value::AsDouble(self.value)),
        }
    }
}

/// The trace and span ids of the span a measurement was taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

#[derive(Debug, Clone)]
struct Point {
    /// Unix ns the series started.
    start: u64,
    value: Value,
    /// Updated since the last collection.
    touched: bool,
}

/// One instrument's series: each attribute set with its point, found by the set's hash (taken
/// with the `MetricSet`'s hasher, so that an exchange's set is hashed once for all its
/// instruments).
#[derive(Debug, Default)]
struct Series {
    points: HashTable<(Attrs, Point)>,
}

/// One workload's metrics.
#[derive(Debug, Default)]
pub struct MetricSet {
    hasher: foldhash::fast::RandomState,
    series: HashMap<Instrument, Series>,
}

/// One histogram measurement of several taken with the same attributes
/// (`MetricSet::record_each`); one taken in a span (`span`) may be kept as its bucket's
/// exemplar.
#[derive(Debug, Clone, Copy)]
pub struct Measurement {
    pub inst: Instrument,
    pub value: f64,
    pub span: Option<SpanIds>,
}

/// The attribute set that stands for every set beyond the cap.
fn overflow_attrs() -> Attrs {
    vec![("otel.metric.overflow", AttrValue::Bool(true))]
}

impl MetricSet {
    fn hash(&self, attrs: &Attrs) -> u64 {
        self.hasher.hash_one(attrs.as_slice())
    }

    /// The series for `attrs` (whose hash is `hash`), created (or, beyond the cap, the
    /// overflow series) on first use. The attributes are copied only when a series is created.
    fn point(
        &mut self,
        inst: Instrument,
        attrs: &Attrs,
        hash: u64,
        now: u64,
        max_series: usize,
    ) -> &mut Point {
        let hasher = &self.hasher;
        let points = &mut self.series.entry(inst).or_default().points;
        let new_point = || Point {
            start: now,
            value: match inst.spec().kind {
                Kind::Histogram(bounds) => Value::Histogram {
                    counts: vec![0; bounds.len() + 1],
                    count: 0,
                    sum: 0.0,
                    min: f64::INFINITY,
                    max: f64::NEG_INFINITY,
                    exemplars: Vec::new(),
                },
                _ => Value::Sum(0),
            },
            touched: false,
        };
        let rehash = |(a, _): &(Attrs, Point)| hasher.hash_one(a.as_slice());
        // Beyond the cap a new attribute set goes to the overflow series (a rare path: it
        // looks twice).
        let (attrs, hash) =
            if points.len() >= max_series && points.find(hash, |(a, _)| a == attrs).is_none() {
                let overflow = overflow_attrs();
                let hash = hasher.hash_one(overflow.as_slice());
                (std::borrow::Cow::Owned(overflow), hash)
            } else {
                (std::borrow::Cow::Borrowed(attrs), hash)
            };
        // One lookup; the attributes are copied only when the series is new.
        let (_, point) = match points.entry(hash, |(a, _)| *a == *attrs, rehash) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => v.insert((attrs.into_owned(), new_point())).into_mut(),
        };
        point.touched = true;
        point
    }

    /// Adds to a counter or up-down counter.
    pub fn add(
        &mut self,
        inst: Instrument,
        attrs: &Attrs,
        delta: i64,
        now: u64,
        max_series: usize,
    ) {
        let hash = self.hash(attrs);
        if let Value::Sum(v) = &mut self.point(inst, attrs, hash, now, max_series).value {
            *v += delta;
        }
    }

    /// Records a histogram measurement.
    pub fn record(
        &mut self,
        inst: Instrument,
        attrs: &Attrs,
        value: f64,
        now: u64,
        max_series: usize,
    ) {
        self.record_n(inst, attrs, value, 1, now, max_series);
    }

    /// Records a histogram measurement; one taken in a span (`span`) may be kept as the
    /// exemplar of its bucket.
    pub fn record_traced(
        &mut self,
        inst: Instrument,
        attrs: &Attrs,
        value: f64,
        now: u64,
        max_series: usize,
        span: Option<SpanIds>,
    ) {
        let hash = self.hash(attrs);
        self.measure(inst, (attrs, hash), (value, 1), now, max_series, span);
    }

    /// Records several histogram measurements taken with the same attributes, hashing them
    /// once (an exchange's duration and body sizes: the hash was a tenth of the telemetry
    /// stage's time when each instrument took its own).
    pub fn record_each(
        &mut self,
        attrs: &Attrs,
        measurements: &[Measurement],
        now: u64,
        max_series: usize,
    ) {
        let hash = self.hash(attrs);
        for m in measurements {
            self.measure(m.inst, (attrs, hash), (m.value, 1), now, max_series, m.span);
        }
    }

    /// Records the same histogram measurement `n` times.
    pub fn record_n(
        &mut self,
        inst: Instrument,
        attrs: &Attrs,
        value: f64,
        n: u64,
        now: u64,
        max_series: usize,
    ) {
        let hash = self.hash(attrs);
        self.measure(inst, (attrs, hash), (value, n), now, max_series, None);
    }

    fn measure(
        &mut self,
        inst: Instrument,
        (attrs, hash): (&Attrs, u64),
        (value, n): (f64, u64),
        now: u64,
        max_series: usize,
        span: Option<SpanIds>,
    ) {
        let Kind::Histogram(bounds) = inst.spec().kind else {
            return;
        };
        if let Value::Histogram {
            counts,
            count,
            sum,
            min,
            max,
            exemplars,
        } = &mut self.point(inst, attrs, hash, now, max_series).value
        {
            // Bucket i holds (bounds[i-1], bounds[i]], as OTLP defines.
            let bucket = bounds.partition_point(|b| *b < value);
            counts[bucket] += n;
            *count += n;
            *sum += value * n as f64;
            *min = min.min(value);
            *max = max.max(value);
            if let Some(span) = span {
                let sample = Sample {
                    bucket,
                    value,
                    time: now,
                    span,
                };
                match exemplars.iter_mut().find(|e| e.bucket == bucket) {
                    Some(kept) => *kept = sample,
                    None => exemplars.push(sample),
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.series.values().all(|s| s.points.is_empty())
    }

    /// The data points as of `now`. Cumulative: every series, from its start. Delta: counters
    /// and histograms updated since `last` (then reset); up-down counters stay cumulative.
    pub fn collect(&mut self, now: u64, last: u64, delta: bool) -> Vec<Metric> {
        let mut instruments: Vec<_> = self.series.keys().copied().collect();
        instruments.sort();
        let mut out = Vec::new();
        for inst in instruments {
            let spec = inst.spec();
            let series = self.series.get_mut(&inst).expect("listed");
            let is_delta = delta && spec.kind != Kind::UpDownCounter;
            let temporality = if is_delta {
                AggregationTemporality::Delta
            } else {
                AggregationTemporality::Cumulative
            } as i32;
            let mut sorted: Vec<_> = series.points.iter_mut().collect();
            sorted.sort_by(|(a, _), (b, _)| a.cmp(b));
            let mut numbers = Vec::new();
            let mut histograms = Vec::new();
            for (attrs, point) in sorted {
                if is_delta && !point.touched {
                    continue;
                }
                // A delta point covers the interval since the last collection.
                let start = if is_delta { last } else { point.start };
                match &mut point.value {
                    Value::Sum(v) => numbers.push(NumberDataPoint {
                        attributes: to_key_values(attrs),
                        start_time_unix_nano: start,
                        time_unix_nano: now,
                        exemplars: Vec::new(),
                        flags: 0,
                        value: Some(number_data_point::Value::AsInt(*v)),
                    }),
                    Value::Histogram {
                        counts,
                        count,
                        sum,
                        min,
                        max,
                        exemplars,
                    } => histograms.push(HistogramDataPoint {
                        attributes: to_key_values(attrs),
                        start_time_unix_nano: start,
                        time_unix_nano: now,
                        count: *count,
                        sum: Some(*sum),
                        bucket_counts: counts.clone(),
                        explicit_bounds: match spec.kind {
                            Kind::Histogram(b) => b.to_vec(),
                            _ => Vec::new(),
                        },
                        exemplars: exemplars.drain(..).map(Sample::exemplar).collect(),
                        flags: 0,
                        min: (*count > 0).then_some(*min),
                        max: (*count > 0).then_some(*max),
                    }),
                }
                point.touched = false;
            }
            if is_delta {
                // The next interval starts from nothing.
                series.points.retain(|(_, p)| p.touched);
            }
            let data = match spec.kind {
                Kind::Histogram(_) if !histograms.is_empty() => Data::Histogram(Histogram {
                    data_points: histograms,
                    aggregation_temporality: temporality,
                }),
                Kind::Counter | Kind::UpDownCounter if !numbers.is_empty() => Data::Sum(Sum {
                    data_points: numbers,
                    aggregation_temporality: temporality,
                    is_monotonic: spec.kind == Kind::Counter,
                }),
                _ => continue,
            };
            out.push(Metric {
                name: spec.name.into(),
                description: spec.description.into(),
                unit: spec.unit.into(),
                metadata: Vec::new(),
                data: Some(data),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(route: &str) -> Attrs {
        vec![("http.route", route.into())]
    }

    fn histogram(m: &Metric) -> &Histogram {
        match &m.data {
            Some(Data::Histogram(h)) => h,
            other => panic!("not a histogram: {other:?}"),
        }
    }

    #[test]
    fn histograms_bucket_like_otlp() {
        let mut set = MetricSet::default();
        for v in [0.001, 0.005, 0.0051, 20.0] {
            set.record(Instrument::HttpServerDuration, &attrs("/a"), v, 10, 100);
        }
        let metrics = set.collect(20, 0, false);
        let point = &histogram(&metrics[0]).data_points[0];
        assert_eq!(point.count, 4);
        // 0.001 and 0.005 are ≤ 0.005; 0.0051 in (0.005, 0.01]; 20 beyond the last bound.
        assert_eq!(&point.bucket_counts[..3], &[2, 1, 0]);
        assert_eq!(point.bucket_counts[14], 1);
        assert_eq!((point.min, point.max), (Some(0.001), Some(20.0)));
        assert_eq!(point.start_time_unix_nano, 10);
    }

    #[test]
    fn exemplars_keep_the_last_traced_measurement_of_each_bucket_until_collected() {
        let mut set = MetricSet::default();
        let span = |n: u8| SpanIds {
            trace_id: [n; 16],
            span_id: [n; 8],
        };
        let a = attrs("/a");
        let inst = Instrument::HttpServerDuration;
        set.record_traced(inst, &a, 0.001, 10, 100, Some(span(1)));
        set.record_traced(inst, &a, 0.002, 11, 100, Some(span(2)));
        set.record_traced(inst, &a, 0.3, 12, 100, Some(span(3)));
        set.record_traced(inst, &a, 0.004, 13, 100, None);
        let metrics = set.collect(20, 0, false);
        let point = &histogram(&metrics[0]).data_points[0];
        assert_eq!(point.count, 4);
        let kept: Vec<_> = point
            .exemplars
            .iter()
            .map(|e| (e.span_id[0], e.trace_id[0], e.time_unix_nano, e.value))
            .collect();
        // Bucket (0, 0.005]: the second span replaced the first; the untraced one left it.
        assert_eq!(
            kept,
            [
                (2, 2, 11, Some(exemplar::Value::AsDouble(0.002))),
                (3, 3, 12, Some(exemplar::Value::AsDouble(0.3)))
            ]
        );
        // Reported once: the next collection has the counts, not the exemplars.
        let again = set.collect(30, 20, false);
        let point = &histogram(&again[0]).data_points[0];
        assert_eq!((point.count, point.exemplars.len()), (4, 0));
    }

    #[test]
    fn cumulative_keeps_counting_and_delta_resets() {
        let mut cumulative = MetricSet::default();
        let mut delta = MetricSet::default();
        for set in [&mut cumulative, &mut delta] {
            set.add(Instrument::ConnectionOpened, &attrs("x"), 2, 5, 100);
            set.add(Instrument::ConnectionActive, &attrs("x"), 2, 5, 100);
        }
        let sum = |m: &Metric| match &m.data {
            Some(Data::Sum(s)) => (
                s.aggregation_temporality,
                s.data_points[0].start_time_unix_nano,
                s.data_points[0].value,
            ),
            _ => panic!(),
        };
        let c = cumulative.collect(10, 0, false);
        let d = delta.collect(10, 0, true);
        assert_eq!(c.len(), 2);
        assert_eq!(d.len(), 2);
        for set in [&mut cumulative, &mut delta] {
            set.add(Instrument::ConnectionOpened, &attrs("x"), 1, 15, 100);
        }
        let c = cumulative.collect(20, 10, false);
        let d = delta.collect(20, 10, true);
        let c_opened = c
            .iter()
            .find(|m| m.name == "netsonde.connection.opened")
            .unwrap();
        let d_opened = d
            .iter()
            .find(|m| m.name == "netsonde.connection.opened")
            .unwrap();
        assert_eq!(
            sum(c_opened),
            (2, 5, Some(number_data_point::Value::AsInt(3)))
        );
        assert_eq!(
            sum(d_opened),
            (1, 10, Some(number_data_point::Value::AsInt(1)))
        );
        // The up-down counter is cumulative either way, and still reported.
        let d_active = d
            .iter()
            .find(|m| m.name == "netsonde.connection.active")
            .unwrap();
        assert_eq!(
            sum(d_active),
            (2, 5, Some(number_data_point::Value::AsInt(2)))
        );
    }

    #[test]
    fn series_beyond_the_cap_overflow_into_one() {
        let mut set = MetricSet::default();
        for route in ["/a", "/b", "/c", "/d"] {
            set.record(Instrument::HttpServerDuration, &attrs(route), 0.1, 1, 2);
        }
        set.record(Instrument::HttpServerDuration, &attrs("/a"), 0.1, 1, 2);
        let metrics = set.collect(2, 0, false);
        let points = &histogram(&metrics[0]).data_points;
        assert_eq!(points.len(), 3);
        let overflow = points
            .iter()
            .find(|p| p.attributes[0].key == "otel.metric.overflow")
            .unwrap();
        assert_eq!(overflow.count, 2);
        assert_eq!(points.iter().map(|p| p.count).sum::<u64>(), 5);
    }

    #[test]
    fn measurements_taken_together_land_as_if_taken_one_by_one() {
        // Routes beyond the cap of 2 overflow, and a repeated set finds its series again, in
        // every instrument alike.
        let span = SpanIds {
            trace_id: [7; 16],
            span_id: [7; 8],
        };
        let (duration, req, resp) = (
            Instrument::HttpServerDuration,
            Instrument::HttpServerRequestBodySize,
            Instrument::HttpServerResponseBodySize,
        );
        let mut together = MetricSet::default();
        let mut one_by_one = MetricSet::default();
        for (i, route) in ["/a", "/b", "/c", "/a", "/d", "/b"].into_iter().enumerate() {
            let (t, secs, bytes) = (i as u64, 0.01 * i as f64, 100.0 * i as f64);
            let a = attrs(route);
            let each = [
                (duration, secs, Some(span)),
                (req, bytes, None),
                (resp, 2.0 * bytes, None),
            ];
            let measurements = each.map(|(inst, value, span)| Measurement { inst, value, span });
            together.record_each(&a, &measurements, t, 2);
            for (inst, value, span) in each {
                one_by_one.record_traced(inst, &a, value, t, 2, span);
            }
        }
        let collected = together.collect(10, 0, false);
        assert_eq!(collected, one_by_one.collect(10, 0, false));
        assert_eq!(collected.len(), 3);
        for metric in &collected {
            let points = &histogram(metric).data_points;
            let counts: Vec<_> = points
                .iter()
                .map(|p| (p.attributes[0].key.as_str(), p.count))
                .collect();
            assert_eq!(
                counts,
                [
                    ("http.route", 2),
                    ("http.route", 2),
                    ("otel.metric.overflow", 2)
                ],
                "{}",
                metric.name
            );
        }
        let exemplars = |m: &Metric| {
            histogram(m)
                .data_points
                .iter()
                .map(|p| p.exemplars.len())
                .sum::<usize>()
        };
        assert!(
            exemplars(&collected[0]) > 0,
            "the duration keeps its exemplars"
        );
        assert_eq!(exemplars(&collected[1]) + exemplars(&collected[2]), 0);
    }
}
