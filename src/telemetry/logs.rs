//! One access-log record per exchange: the OTel form of an access log line, joined to the
//! exchange's span by trace and span id.

use std::time::SystemTime;

use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, any_value::Value},
    logs::v1::{LogRecord, SeverityNumber},
    trace::v1::Span,
};

use crate::telemetry::{ExchangeRecord, http::access_log_line, spans::unix_nanos};

/// The log record's event name.
pub const EVENT_NAME: &str = "netsonde.http.access";

/// The access log of `r`, carrying `span`'s ids and attributes. Severity: ERROR for 5xx, WARN
/// for 4xx, INFO otherwise.
pub fn access_log(r: &ExchangeRecord, span: &Span, observed: SystemTime) -> LogRecord {
    let (severity, text) = match r.status {
        500.. => (SeverityNumber::Error, "ERROR"),
        400..=499 => (SeverityNumber::Warn, "WARN"),
        _ => (SeverityNumber::Info, "INFO"),
    };
    LogRecord {
        time_unix_nano: unix_nanos(r.end),
        observed_time_unix_nano: unix_nanos(observed),
        severity_number: severity as i32,
        severity_text: text.into(),
        body: Some(AnyValue {
            value: Some(Value::StringValue(access_log_line(r))),
        }),
        attributes: span.attributes.clone(),
        dropped_attributes_count: 0,
        // The sampled bit, as the span has it.
        flags: span.flags & 0xff,
        trace_id: span.trace_id.clone(),
        span_id: span.span_id.clone(),
        event_name: EVENT_NAME.into(),
    }
}
