//! OTLP building blocks: attribute values, the instrumentation scope, and the export payload
//! every OTLP-speaking exporter (gRPC, HTTP, file) receives.

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value},
};

use crate::config::export::SignalKind;

/// The instrumentation scope of everything netsonde observes.
/// The semantic conventions release netsonde's names follow (semconv/registry.yaml), as the
/// schema URL of everything it exports.
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.44.0";

pub fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "netsonde".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
    }
}

/// An attribute value netsonde emits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl AttrValue {
    /// The OTLP value, moving strings rather than copying them.
    pub fn into_proto(self) -> AnyValue {
        AnyValue {
            value: Some(match self {
                AttrValue::Str(s) => Value::StringValue(s),
                AttrValue::Int(i) => Value::IntValue(i),
                AttrValue::Bool(b) => Value::BoolValue(b),
            }),
        }
    }

    pub fn to_proto(&self) -> AnyValue {
        AnyValue {
            value: Some(match self {
                AttrValue::Str(s) => Value::StringValue(s.clone()),
                AttrValue::Int(i) => Value::IntValue(*i),
                AttrValue::Bool(b) => Value::BoolValue(*b),
            }),
        }
    }
}

impl From<&str> for AttrValue {
    fn from(s: &str) -> Self {
        AttrValue::Str(s.to_string())
    }
}

impl From<String> for AttrValue {
    fn from(s: String) -> Self {
        AttrValue::Str(s)
    }
}

impl From<i64> for AttrValue {
    fn from(i: i64) -> Self {
        AttrValue::Int(i)
    }
}

impl From<u16> for AttrValue {
    fn from(i: u16) -> Self {
        AttrValue::Int(i64::from(i))
    }
}

impl From<bool> for AttrValue {
    fn from(b: bool) -> Self {
        AttrValue::Bool(b)
    }
}

/// An attribute list: keys are the semconv names (all static).
pub type Attrs = Vec<(&'static str, AttrValue)>;

pub fn kv(key: &str, value: impl Into<AttrValue>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(value.into().into_proto()),
        ..KeyValue::default()
    }
}

pub fn to_key_values(attrs: &[(&'static str, AttrValue)]) -> Vec<KeyValue> {
    attrs
        .iter()
        .map(|(k, v)| KeyValue {
            key: (*k).to_string(),
            value: Some(v.to_proto()),
            ..KeyValue::default()
        })
        .collect()
}

/// What goes to an OTLP exporter: one request of one signal, possibly holding many resources.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
    /// A request already in protobuf form (spans and access logs are built that way).
    Encoded {
        signal: SignalKind,
        items: u64,
        body: bytes::Bytes,
    },
}

impl Payload {
    pub fn signal(&self) -> SignalKind {
        match self {
            Payload::Traces(_) => SignalKind::Traces,
            Payload::Metrics(_) => SignalKind::Metrics,
            Payload::Logs(_) => SignalKind::Logs,
            Payload::Encoded { signal, .. } => *signal,
        }
    }

    /// The request as typed messages (decoding an encoded one).
    pub fn decoded(self) -> Result<Payload, prost::DecodeError> {
        use prost::Message as _;
        Ok(match self {
            Payload::Encoded { signal, body, .. } => match signal {
                SignalKind::Traces => Payload::Traces(ExportTraceServiceRequest::decode(body)?),
                SignalKind::Metrics => Payload::Metrics(ExportMetricsServiceRequest::decode(body)?),
                SignalKind::Logs => Payload::Logs(ExportLogsServiceRequest::decode(body)?),
            },
            typed => typed,
        })
    }

    /// Spans, data points or log records in it (what partial success and drops count).
    pub fn items(&self) -> u64 {
        let n: usize = match self {
            Payload::Encoded { items, .. } => return *items,
            Payload::Traces(r) => r
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum(),
            Payload::Metrics(r) => r
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .map(data_points)
                .sum(),
            Payload::Logs(r) => r
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum(),
        };
        n as u64
    }

    pub fn is_empty(&self) -> bool {
        self.items() == 0
    }

    /// The protobuf encoding (the gRPC message, and the OTLP/HTTP body).
    pub fn encode(&self) -> Vec<u8> {
        use prost::Message as _;
        match self {
            Payload::Traces(r) => r.encode_to_vec(),
            Payload::Metrics(r) => r.encode_to_vec(),
            Payload::Logs(r) => r.encode_to_vec(),
            Payload::Encoded { body, .. } => body.to_vec(),
        }
    }

    /// The protobuf encoding, without a copy when it is already encoded.
    pub fn into_bytes(self) -> bytes::Bytes {
        match self {
            Payload::Encoded { body, .. } => body,
            typed => bytes::Bytes::from(typed.encode()),
        }
    }

    /// OTLP/JSON, one line (the Collector file exporter's format).
    pub fn to_json_line(&self) -> serde_json::Result<String> {
        match self {
            Payload::Traces(r) => serde_json::to_string(r),
            Payload::Metrics(r) => serde_json::to_string(r),
            Payload::Logs(r) => serde_json::to_string(r),
            encoded @ Payload::Encoded { .. } => match encoded.clone().decoded() {
                Ok(typed) => typed.to_json_line(),
                Err(e) => Err(serde::ser::Error::custom(format!(
                    "undecodable payload: {e}"
                ))),
            },
        }
    }
}

fn data_points(metric: &opentelemetry_proto::tonic::metrics::v1::Metric) -> usize {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    match &metric.data {
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}
