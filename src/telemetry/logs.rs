//! One access-log record per exchange: the OTel form of an access log line, joined to the
//! exchange's span by trace and span id, encoded straight to protobuf (see `wire`).

use std::time::SystemTime;

use opentelemetry_proto::tonic::logs::v1::SeverityNumber;

use crate::telemetry::{
    ExchangeRecord,
    http::access_log_line,
    spans::{Identity, unix_nanos},
    wire::{WireAttrs, put_bytes, put_fixed32, put_fixed64, put_str, put_uint, put_varint},
};

/// The log record's event name.
pub const EVENT_NAME: &str = "netsonde.http.access";

/// The attributes a lean access log keeps (`export.access_log_attributes: lean`): what a log
/// backend filters access logs by (what was asked, of whom, by whom, and how it ended; the peer
/// workload in Kubernetes). The record's line has the rest in brief (sizes, user agent,
/// duration, the query), and its span, named by the record's trace and span ids, has them all.
pub const LEAN_LOG_ATTRIBUTES: [&str; 14] = [
    "http.request.method",
    "url.path",
    "http.route",
    "url.template",
    "http.response.status_code",
    "error.type",
    "netsonde.http.incomplete",
    "server.address",
    "server.port",
    "client.address",
    "rpc.method",
    "rpc.response.status_code",
    "netsonde.peer.service.name",
    "netsonde.peer.service.namespace",
];

/// Appends the access log of `r` (a `LogRecord` message, without its field tag and length) to
/// `out`: the span's ids and attributes, severity ERROR for 5xx, WARN for 4xx, INFO otherwise.
/// `line` is scratch space for the body.
pub fn encode_access_log(
    out: &mut Vec<u8>,
    r: &ExchangeRecord,
    id: &Identity,
    attributes: &WireAttrs,
    observed: SystemTime,
    line: &mut String,
) {
    let (severity, text) = match (&r.rpc, r.status) {
        (Some(_), _) if r.failed() => (SeverityNumber::Error, "ERROR"),
        (Some(_), _) => (SeverityNumber::Info, "INFO"),
        (None, 500..) => (SeverityNumber::Error, "ERROR"),
        (None, 400..=499) => (SeverityNumber::Warn, "WARN"),
        (None, _) => (SeverityNumber::Info, "INFO"),
    };
    put_fixed64(out, 1, unix_nanos(r.end));
    put_uint(out, 2, severity as u64);
    put_str(out, 3, text);
    // body: AnyValue { string_value (1) }
    line.clear();
    access_log_line(line, r);
    put_varint(out, 5 << 3 | 2);
    put_varint(
        out,
        (1 + super::wire::varint_len(line.len() as u64) + line.len()) as u64,
    );
    put_bytes(out, 1, line.as_bytes());
    attributes.splice_into(out, 6);
    // The sampled bit, as the span has it.
    put_fixed32(out, 8, id.flags & 0xff);
    put_bytes(out, 9, &id.trace_id);
    put_bytes(out, 10, &id.span_id);
    put_fixed64(out, 11, unix_nanos(observed));
    put_str(out, 12, EVENT_NAME);
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{common::v1::any_value::Value, logs::v1::LogRecord};
    use prost::Message as _;

    use super::*;
    use crate::{
        protocols::Role,
        telemetry::{
            spans::identity, spans::tests::record, trace_context::IdGenerator, wire::AttrSink as _,
        },
    };

    #[test]
    fn the_access_log_decodes_with_its_spans_ids_and_attributes() {
        let r = record(Role::Server, &[], 503);
        let id = identity(&r, &mut IdGenerator::new());
        let mut attrs = WireAttrs::default();
        attrs.str("url.path", "/users/7");
        let mut bytes = Vec::new();
        encode_access_log(&mut bytes, &r, &id, &attrs, r.end, &mut String::new());
        let log = LogRecord::decode(bytes.as_slice()).unwrap();
        assert_eq!(log.trace_id, id.trace_id);
        assert_eq!(log.span_id, id.span_id);
        assert_eq!(log.severity_number, SeverityNumber::Error as i32);
        assert_eq!(log.severity_text, "ERROR");
        assert_eq!(log.event_name, EVENT_NAME);
        assert_eq!(log.flags, 1);
        assert_eq!(log.attributes.len(), 1);
        assert_eq!(log.attributes[0].key, "url.path");
        let Some(Value::StringValue(body)) = log.body.and_then(|b| b.value) else {
            panic!("a string body")
        };
        assert_eq!(
            body,
            "10.0.0.1 - \"GET /users/7 HTTP/1.1\" 503 10 \"-\" 3.000ms"
        );
        assert_eq!(log.time_unix_nano, unix_nanos(r.end));
    }
}
