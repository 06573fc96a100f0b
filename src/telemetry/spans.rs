//! One span per HTTP exchange, placed in the caller's trace when the request says which,
//! encoded straight to protobuf (see `wire`).

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};

use crate::{
    protocols::Role,
    telemetry::{
        ExchangeRecord,
        http::method,
        trace_context::{IdGenerator, parse_traceparent},
        wire::{WireAttrs, put_bytes, put_fixed32, put_fixed64, put_str, put_uint},
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

/// Where an exchange's span sits in its trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    /// OTLP span flags.
    pub flags: u32,
    /// The request carried a valid `traceparent` (so its `tracestate` travels along).
    pub joined: bool,
}

/// Trace context: a server exchange whose request carries `traceparent` joins that trace as a
/// child of the span it names. A client exchange whose request carries one is that span (the
/// client put its own span id there), so the server's span hangs under it — and no parent is
/// claimed, because the client's parent is not on the wire. Without the header a trace starts.
pub fn identity(r: &ExchangeRecord, ids: &mut IdGenerator) -> Identity {
    match (
        r.role,
        r.request_header("traceparent").and_then(parse_traceparent),
    ) {
        (Role::Server, Some(tp)) => Identity {
            trace_id: tp.trace_id,
            span_id: ids.span_id(),
            parent_span_id: Some(tp.parent_id),
            flags: u32::from(tp.flags) | HAS_IS_REMOTE | IS_REMOTE,
            joined: true,
        },
        (Role::Client, Some(tp)) => Identity {
            trace_id: tp.trace_id,
            span_id: tp.parent_id,
            parent_span_id: None,
            flags: u32::from(tp.flags) | HAS_IS_REMOTE,
            joined: true,
        },
        (_, None) => Identity {
            trace_id: ids.trace_id(),
            span_id: ids.span_id(),
            parent_span_id: None,
            flags: SAMPLED | HAS_IS_REMOTE,
            joined: false,
        },
    }
}

/// Appends the exchange's `Span` message (without its field tag and length) to `out`. The
/// name is `{method} {route}`, or the method alone with no route; `HTTP` for a method semconv
/// does not know.
pub fn encode_span(
    out: &mut Vec<u8>,
    r: &ExchangeRecord,
    id: &Identity,
    route: Option<&str>,
    attributes: &WireAttrs,
) {
    put_bytes(out, 1, &id.trace_id);
    put_bytes(out, 2, &id.span_id);
    // The `tracestate` travels with a joined trace only.
    if id.joined {
        put_str(out, 3, r.request_header("tracestate").unwrap_or_default());
    }
    if let Some(parent) = &id.parent_span_id {
        put_bytes(out, 4, parent);
    }
    let m = method(&r.method);
    let verb = if m == "_OTHER" { "HTTP" } else { m };
    match route {
        // An RPC is named by its method: `package.Service/Method`.
        _ if r.rpc.is_some() => put_str(out, 5, &r.rpc.as_ref().expect("checked").method),
        Some(route) => {
            let len = verb.len() + 1 + route.len();
            super::wire::put_varint(out, 5 << 3 | 2);
            super::wire::put_varint(out, len as u64);
            out.extend_from_slice(verb.as_bytes());
            out.push(b' ');
            out.extend_from_slice(route.as_bytes());
        }
        None => put_str(out, 5, verb),
    }
    let kind = match r.role {
        Role::Server => SpanKind::Server,
        Role::Client => SpanKind::Client,
    };
    put_uint(out, 6, kind as u64);
    put_fixed64(out, 7, unix_nanos(r.start));
    put_fixed64(out, 8, unix_nanos(r.end));
    attributes.splice_into(out, 9);
    // Status: code 3 (message 2 stays empty); an unset status is an empty message.
    if r.failed() {
        put_bytes(out, 15, &[3 << 3, StatusCode::Error as u8]);
    } else {
        put_bytes(out, 15, &[]);
    }
    put_fixed32(out, 16, id.flags);
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
            kernel: Default::default(),
            peer: None,
            cgroup_id: 0,
            start,
            end: start + Duration::from_millis(3),
            role,
            pid: 42,
            comm: Arc::from("app"),
            method: "GET".into(),
            target: "/users/7".into(),
            version_minor: 1,
            version_major: 1,
            status,
            client: Some("10.0.0.1:40000".parse().unwrap()),
            server: Some("10.0.0.2:8080".parse().unwrap()),
            local: None,
            remote: None,
            request_headers: headers
                .iter()
                .map(|(k, v)| (k.to_string().into(), v.to_string()))
                .collect(),
            request_body_bytes: 0,
            response_body_bytes: 10,
            completeness: Completeness::Complete,
            tls: false,
            rpc: None,
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
        let s = decoded_span(&r, Some("/users/{id}"));
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
        let s = decoded_span(&r, None);
        assert_eq!(hex(&s.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&s.span_id), "00f067aa0ba902b7");
        assert!(s.parent_span_id.is_empty());
        assert_eq!(s.name, "GET");
        assert_eq!(s.kind, SpanKind::Client as i32);
    }

    #[test]
    fn without_a_header_a_trace_starts_and_errors_follow_the_side() {
        let r = record(Role::Server, &[("traceparent", "garbage")], 404);
        let s = decoded_span(&r, None);
        assert!(s.parent_span_id.is_empty());
        assert_eq!((s.trace_id.len(), s.span_id.len()), (16, 8));
        assert_eq!(s.status.unwrap().code, StatusCode::Unset as i32);
        let client = decoded_span(&record(Role::Client, &[], 404), None);
        assert_eq!(client.status.unwrap().code, StatusCode::Error as i32);
        let server = decoded_span(&record(Role::Server, &[], 500), None);
        assert_eq!(server.status.unwrap().code, StatusCode::Error as i32);
    }

    /// The span as a collector decodes it.
    fn decoded_span(
        r: &ExchangeRecord,
        route: Option<&str>,
    ) -> opentelemetry_proto::tonic::trace::v1::Span {
        use prost::Message as _;
        let mut bytes = Vec::new();
        encode_span(
            &mut bytes,
            r,
            &identity(r, &mut IdGenerator::new()),
            route,
            &WireAttrs::default(),
        );
        opentelemetry_proto::tonic::trace::v1::Span::decode(bytes.as_slice()).unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
