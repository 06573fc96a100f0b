//! Splitting a metrics export so that no request exceeds a size: collectors refuse messages
//! above their limit (4 MiB by default for gRPC), and a refused request would be refused
//! again on every retry. Resources are kept whole where they fit; a resource too big alone is
//! cut between its metrics, and a metric too big alone between its data points, each piece
//! keeping its resource and scope.

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    metrics::v1::{Metric, ResourceMetrics, ScopeMetrics, metric::Data},
};
use prost::Message as _;

use crate::telemetry::wire::varint_len;

/// The size of a message of `len` bytes as a field of its parent (tag, length, bytes).
fn framed(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// `request` as requests of at most `max_bytes` each (a single data point larger than that
/// goes alone: nothing smaller can carry it). Nothing is lost or repeated.
pub fn split_metrics(
    request: ExportMetricsServiceRequest,
    max_bytes: usize,
) -> Vec<ExportMetricsServiceRequest> {
    let mut out = Vec::new();
    let mut current = ExportMetricsServiceRequest::default();
    let mut size = 0;
    for resource in request.resource_metrics {
        for piece in split_resource(resource, max_bytes) {
            let len = framed(piece.encoded_len());
            if size + len > max_bytes && !current.resource_metrics.is_empty() {
                out.push(std::mem::take(&mut current));
                size = 0;
            }
            current.resource_metrics.push(piece);
            size += len;
        }
    }
    if !current.resource_metrics.is_empty() {
        out.push(current);
    }
    out
}

/// A resource's metrics as pieces that each fit in `max_bytes` (framed).
fn split_resource(resource: ResourceMetrics, max_bytes: usize) -> Vec<ResourceMetrics> {
    if framed(resource.encoded_len()) <= max_bytes {
        return vec![resource];
    }
    let mut pieces = Vec::new();
    let ResourceMetrics {
        resource: res,
        scope_metrics,
        schema_url,
    } = resource;
    for scope in scope_metrics {
        let ScopeMetrics {
            scope: sc,
            metrics,
            schema_url: scope_url,
        } = scope;
        let shell = |metrics: Vec<Metric>| ResourceMetrics {
            resource: res.clone(),
            scope_metrics: vec![ScopeMetrics {
                scope: sc.clone(),
                metrics,
                schema_url: scope_url.clone(),
            }],
            schema_url: schema_url.clone(),
        };
        // What the resource and scope cost around the metrics, with a margin for the
        // length prefixes growing as metrics are added.
        let overhead = framed(shell(Vec::new()).encoded_len()) + 16;
        let budget = max_bytes.saturating_sub(overhead).max(1);
        let mut current = Vec::new();
        let mut size = 0;
        for metric in metrics {
            for part in split_metric(metric, budget) {
                let len = framed(part.encoded_len());
                if size + len > budget && !current.is_empty() {
                    pieces.push(shell(std::mem::take(&mut current)));
                    size = 0;
                }
                current.push(part);
                size += len;
            }
        }
        if !current.is_empty() {
            pieces.push(shell(current));
        }
    }
    pieces
}

/// A metric as copies that each fit in `budget` (framed), its data points shared out in
/// order.
fn split_metric(metric: Metric, budget: usize) -> Vec<Metric> {
    if framed(metric.encoded_len()) <= budget {
        return vec![metric];
    }
    let empty = Metric {
        data: metric.data.as_ref().map(without_points),
        ..metric.clone()
    };
    let room = budget.saturating_sub(framed(empty.encoded_len()) + 16);
    // Each share of the points goes into a copy of the empty metric.
    macro_rules! parts {
        ($points:expr, $variant:ident) => {
            share_out($points, room)
                .into_iter()
                .map(|points| {
                    let mut part = empty.clone();
                    if let Some(Data::$variant(d)) = &mut part.data {
                        d.data_points = points;
                    }
                    part
                })
                .collect()
        };
    }
    match metric.data {
        Some(Data::Sum(d)) => parts!(d.data_points, Sum),
        Some(Data::Gauge(d)) => parts!(d.data_points, Gauge),
        Some(Data::Histogram(d)) => parts!(d.data_points, Histogram),
        Some(Data::ExponentialHistogram(d)) => parts!(d.data_points, ExponentialHistogram),
        Some(Data::Summary(d)) => parts!(d.data_points, Summary),
        None => vec![metric],
    }
}

/// `points` in order, in shares of at most `room` bytes (framed; a point larger than that
/// alone in its share).
fn share_out<P: prost::Message>(points: Vec<P>, room: usize) -> Vec<Vec<P>> {
    let mut shares = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for point in points {
        let len = framed(point.encoded_len());
        if size + len > room && !current.is_empty() {
            shares.push(std::mem::take(&mut current));
            size = 0;
        }
        current.push(point);
        size += len;
    }
    if !current.is_empty() {
        shares.push(current);
    }
    shares
}

/// The metric's data with no points (its temporality and monotonicity kept).
fn without_points(data: &Data) -> Data {
    match data {
        Data::Sum(d) => Data::Sum(opentelemetry_proto::tonic::metrics::v1::Sum {
            data_points: Vec::new(),
            ..d.clone()
        }),
        Data::Gauge(_) => Data::Gauge(Default::default()),
        Data::Histogram(d) => Data::Histogram(opentelemetry_proto::tonic::metrics::v1::Histogram {
            data_points: Vec::new(),
            ..d.clone()
        }),
        Data::ExponentialHistogram(d) => Data::ExponentialHistogram(
            opentelemetry_proto::tonic::metrics::v1::ExponentialHistogram {
                data_points: Vec::new(),
                ..d.clone()
            },
        ),
        Data::Summary(_) => Data::Summary(Default::default()),
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        metrics::v1::{NumberDataPoint, Sum, number_data_point},
        resource::v1::Resource,
    };

    use super::*;
    use crate::telemetry::otlp::kv;

    fn point(i: i64) -> NumberDataPoint {
        NumberDataPoint {
            attributes: vec![kv("k", format!("{i:0>40}"))],
            value: Some(number_data_point::Value::AsInt(i)),
            ..Default::default()
        }
    }

    fn resource(name: &str, metrics: usize, points: i64) -> ResourceMetrics {
        ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", name)],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: (0..metrics)
                    .map(|m| Metric {
                        name: format!("m{m}"),
                        data: Some(Data::Sum(Sum {
                            data_points: (0..points).map(point).collect(),
                            aggregation_temporality: 2,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            schema_url: "s".into(),
        }
    }

    /// (service, metric, point value) of every data point, in order.
    fn points(requests: &[ExportMetricsServiceRequest]) -> Vec<(String, String, i64)> {
        let mut out = Vec::new();
        for r in requests {
            for rm in &r.resource_metrics {
                let service = format!("{:?}", rm.resource.as_ref().unwrap().attributes[0].value);
                for m in &rm.scope_metrics[0].metrics {
                    let Some(Data::Sum(s)) = &m.data else {
                        panic!()
                    };
                    assert!(s.is_monotonic && s.aggregation_temporality == 2);
                    for p in &s.data_points {
                        let Some(number_data_point::Value::AsInt(v)) = p.value else {
                            panic!()
                        };
                        out.push((service.clone(), m.name.clone(), v));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn every_request_fits_and_nothing_is_lost_or_repeated() {
        // (resources as (metrics, points each), limit)
        let cases: [(&[(usize, i64)], usize); 5] = [
            (&[(2, 3)], 1 << 20),                 // small: one request, untouched
            (&[(2, 3), (2, 3), (2, 3)], 700),     // a resource per request
            (&[(40, 1)], 1000),                   // one resource cut between metrics
            (&[(1, 200)], 2000),                  // one metric cut between points
            (&[(3, 50), (1, 1), (2, 120)], 4096), // all at once
        ];
        for (shape, limit) in cases {
            let request = ExportMetricsServiceRequest {
                resource_metrics: shape
                    .iter()
                    .enumerate()
                    .map(|(i, (m, p))| resource(&format!("r{i}"), *m, *p))
                    .collect(),
            };
            let before = points(std::slice::from_ref(&request));
            let total = request.encoded_len();
            let split = split_metrics(request.clone(), limit);
            if total <= limit {
                assert_eq!(split, vec![request], "what fits is sent as it is");
            }
            for r in &split {
                assert!(r.encoded_len() <= limit, "{} > {limit}", r.encoded_len());
                for rm in &r.resource_metrics {
                    assert_eq!(rm.schema_url, "s");
                }
            }
            assert_eq!(points(&split), before, "{shape:?} at {limit}");
            // Packed, not one request per point: at most twice the fewest possible, plus a
            // request per resource (each cut starts afresh).
            let fewest = total.div_ceil(limit);
            assert!(
                split.len() >= fewest && split.len() <= 2 * fewest + shape.len(),
                "{shape:?} at {limit}: {} requests for {total} bytes",
                split.len()
            );
        }
    }
}
