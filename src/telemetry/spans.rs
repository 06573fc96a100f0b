//! One span per HTTP exchange, placed in the caller's trace when the request says which.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::trace::v1::{Span, Status, span::SpanKind, status::StatusCode};

use crate::{
    protocols::Role,
    telemetry::{
        ExchangeRecord,
        http::{is_error, method},
        otlp::{Attrs, to_key_values},
        trace_context::{new_span_id, new_trace_id, parse_traceparent},
    },
};

/// Span flags (OTLP): the W3C trace flags in bits 0-7, then "whether the parent is remote is
/// known" and "the parent is remote".
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;
const SAMPLED: u32 = 0x01;

pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The span of one exchange. `route` is the template in its name (`{method} {route}`); with no
/// route known the name is the method alone.
///
/// Trace context: a server exchange whose request carries `traceparent` joins that trace as a
/// child of the span it names. A client exchange whose request carries one is that span (the
/// client put its own span id there), so the server's span hangs under it — and no parent is
/// claimed, because the client's parent is not on the wire. Without the header a trace starts.
pub fn exchange_span(r: &ExchangeRecord, route: Option<&str>, attributes: Attrs) -> Span {
    let parent = r.request_header("traceparent").and_then(parse_traceparent);
    let tracestate = r.request_header("tracestate").unwrap_or_default();
    let (trace_id, span_id, parent_span_id, flags, trace_state) = match (r.role, parent) {
        (Role::Server, Some(tp)) => (
            tp.trace_id,
            new_span_id(),
            tp.parent_id.to_vec(),
            u32::from(tp.flags) | HAS_IS_REMOTE | IS_REMOTE,
            tracestate,
        ),
        (Role::Client, Some(tp)) => (
            tp.trace_id,
            tp.parent_id,
            Vec::new(),
            u32::from(tp.flags) | HAS_IS_REMOTE,
            tracestate,
        ),
        (_, None) => (
            new_trace_id(),
            new_span_id(),
            Vec::new(),
            SAMPLED | HAS_IS_REMOTE,
            "",
        ),
    };
    let m = method(&r.method);
    let verb = if m == "_OTHER" { "HTTP" } else { m };
    let name = match route {
        Some(route) => format!("{verb} {route}"),
        None => verb.to_string(),
    };
    let status = if is_error(r.role, r.status) {
        Status {
            message: String::new(),
            code: StatusCode::Error as i32,
        }
    } else {
        Status::default()
    };
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        trace_state: trace_state.to_string(),
        parent_span_id,
        flags,
        name,
        kind: match r.role {
            Role::Server => SpanKind::Server,
            Role::Client => SpanKind::Client,
        } as i32,
        start_time_unix_nano: unix_nanos(r.start),
        end_time_unix_nano: unix_nanos(r.end),
        attributes: to_key_values(&attributes),
        dropped_attributes_count: 0,
        events: Vec::new(),
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status: Some(status),
    }
}
