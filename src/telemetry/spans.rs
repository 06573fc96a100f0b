//! One span per HTTP exchange, placed in the caller's trace when the request says which.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::trace::v1::{Span, Status, span::SpanKind, status::StatusCode};

use crate::{
    protocols::Role,
    telemetry::{
        ExchangeRecord,
        http::{is_error, method},
        otlp::{Attrs, into_key_values},
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
        attributes: into_key_values(attributes),
        dropped_attributes_count: 0,
        events: Vec::new(),
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status: Some(status),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{
        sync::Arc,
        time::{Duration, UNIX_EPOCH},
    };

    use super::*;
    use crate::protocols::Completeness;

    pub(crate) fn record(role: Role, headers: &[(&str, &str)], status: u16) -> ExchangeRecord {
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        ExchangeRecord {
            start,
            end: start + Duration::from_millis(3),
            role,
            pid: 42,
            comm: Arc::from("app"),
            method: "GET".into(),
            target: "/users/7".into(),
            version_minor: 1,
            status,
            client: Some("10.0.0.1:40000".parse().unwrap()),
            server: Some("10.0.0.2:8080".parse().unwrap()),
            local: None,
            remote: None,
            request_headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            request_body_bytes: 0,
            response_body_bytes: 10,
            completeness: Completeness::Complete,
        }
    }

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_server_joins_the_callers_trace_as_a_child() {
        let r = record(
            Role::Server,
            &[("traceparent", TP), ("tracestate", "a=1")],
            200,
        );
        let s = exchange_span(&r, Some("/users/{id}"), Vec::new());
        assert_eq!(hex(&s.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&s.parent_span_id), "00f067aa0ba902b7");
        assert_ne!(hex(&s.span_id), "00f067aa0ba902b7");
        assert_eq!(s.trace_state, "a=1");
        assert_eq!(s.flags, 0x301, "sampled, parent known to be remote");
        assert_eq!(s.name, "GET /users/{id}");
        assert_eq!(s.kind, SpanKind::Server as i32);
        assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 3_000_000);
    }

    #[test]
    fn a_client_is_the_span_it_named() {
        let r = record(Role::Client, &[("traceparent", TP)], 200);
        let s = exchange_span(&r, None, Vec::new());
        assert_eq!(hex(&s.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&s.span_id), "00f067aa0ba902b7");
        assert!(s.parent_span_id.is_empty());
        assert_eq!(s.name, "GET");
        assert_eq!(s.kind, SpanKind::Client as i32);
    }

    #[test]
    fn without_a_header_a_trace_starts_and_errors_follow_the_side() {
        let r = record(Role::Server, &[("traceparent", "garbage")], 404);
        let s = exchange_span(&r, None, Vec::new());
        assert!(s.parent_span_id.is_empty());
        assert_eq!((s.trace_id.len(), s.span_id.len()), (16, 8));
        assert_eq!(s.status.unwrap().code, StatusCode::Unset as i32);
        let client = exchange_span(&record(Role::Client, &[], 404), None, Vec::new());
        assert_eq!(client.status.unwrap().code, StatusCode::Error as i32);
        let server = exchange_span(&record(Role::Server, &[], 500), None, Vec::new());
        assert_eq!(server.status.unwrap().code, StatusCode::Error as i32);
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
