//! Semantic-convention attributes of a gRPC call (semconv RPC spans and metrics, the
//! `rpc.system.name` / `rpc.method` / `rpc.response.status_code` generation), shared by spans,
//! access logs and metrics.
//!
//! A gRPC call is reported as an RPC, not as the HTTP/2 exchange under it: span name
//! `{rpc.method}` (`package.Service/Method`), `rpc.*` attributes, and the
//! `rpc.{server,client}.call.duration` histograms instead of the HTTP ones.

use crate::{
    protocols::{
        Role,
        grpc::{Call, is_error as grpc_error, status_name},
    },
    telemetry::{
        ExchangeRecord,
        http::{endpoint_attributes, push_server},
        otlp::Attrs,
        wire::AttrSink,
    },
};

/// `error.type` of a call that failed, `None` for a success. A call that ended without a
/// status (reset, or cut by the connection's end) failed without one: `_OTHER`.
pub fn error_type(role: Role, call: &Call) -> Option<&'static str> {
    match call.status {
        Some(code) if grpc_error(role == Role::Server, code) => Some(status_name(code)),
        Some(_) => None,
        None => Some("_OTHER"),
    }
}

/// Attributes of the call's span and access log, written into `a`.
pub fn span_attributes(r: &ExchangeRecord, call: &Call, a: &mut impl AttrSink) {
    a.str("rpc.system.name", "grpc");
    a.str("rpc.method", &call.method);
    if let Some(code) = call.status {
        a.str("rpc.response.status_code", status_name(code));
    }
    endpoint_attributes(r, a);
    if let Some(n) = call.request_messages {
        a.int("netsonde.rpc.request.messages", n as i64);
    }
    if let Some(n) = call.response_messages {
        a.int("netsonde.rpc.response.messages", n as i64);
    }
    if let Some(e) = error_type(r.role, call) {
        a.str("error.type", e);
    }
}

/// The experimental RPC attributes (semconv ≤ 1.37) beside the current ones, for
/// `OTEL_SEMCONV_STABILITY_OPT_IN=rpc/dup`: `rpc.system`, `rpc.service`, and the numeric
/// `rpc.grpc.status_code`. (Their `rpc.method`, the bare method name, would collide with the
/// current fully qualified one, which is kept.)
pub fn legacy_attributes(call: &Call, a: &mut impl AttrSink) {
    a.str("rpc.system", "grpc");
    if let Some((service, _)) = call.method.split_once('/') {
        a.str("rpc.service", service);
    }
    if let Some(code) = call.status {
        a.int("rpc.grpc.status_code", i64::from(code));
    }
}

/// The attributes of the call duration metric.
pub fn metric_attributes(r: &ExchangeRecord, call: &Call) -> Attrs {
    let mut a: Attrs = Vec::with_capacity(7);
    a.push(("rpc.system.name", "grpc".into()));
    a.push(("rpc.method", call.method.clone().into()));
    if let Some(code) = call.status {
        a.push(("rpc.response.status_code", status_name(code).into()));
    }
    if r.role == Role::Client {
        push_server(r, &mut a);
    }
    if let Some(e) = error_type(r.role, call) {
        a.push(("error.type", e.into()));
    }
    if let Some(peer) = &r.peer {
        peer.metric_attributes(&mut a);
    }
    a.sort_by(|x, y| x.0.cmp(y.0));
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{otlp::AttrValue, spans::tests::record};

    fn call(status: Option<u8>) -> Call {
        Call {
            method: "helloworld.Greeter/SayHello".into(),
            status,
            request_messages: Some(1),
            response_messages: Some(3),
        }
    }

    fn get<'a>(a: &'a Attrs, key: &str) -> Option<&'a AttrValue> {
        a.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    #[test]
    fn a_call_is_described_as_an_rpc() {
        let mut r = record(Role::Server, &[("content-type", "application/grpc")], 200);
        r.version_major = 2;
        let mut a: Attrs = Vec::new();
        span_attributes(&r, &call(Some(0)), &mut a);
        assert_eq!(get(&a, "rpc.system.name"), Some(&"grpc".into()));
        assert_eq!(
            get(&a, "rpc.method"),
            Some(&"helloworld.Greeter/SayHello".into())
        );
        assert_eq!(get(&a, "rpc.response.status_code"), Some(&"OK".into()));
        assert_eq!(
            get(&a, "netsonde.rpc.response.messages"),
            Some(&3i64.into())
        );
        assert_eq!(get(&a, "network.protocol.version"), Some(&"2".into()));
        assert!(get(&a, "error.type").is_none());
        assert!(get(&a, "http.request.method").is_none(), "an RPC, not HTTP");
    }

    #[test]
    fn the_older_attributes_come_on_request() {
        let mut a: Attrs = Vec::new();
        legacy_attributes(&call(Some(5)), &mut a);
        assert_eq!(get(&a, "rpc.system"), Some(&"grpc".into()));
        assert_eq!(get(&a, "rpc.service"), Some(&"helloworld.Greeter".into()));
        assert_eq!(get(&a, "rpc.grpc.status_code"), Some(&5i64.into()));
    }

    #[test]
    fn errors_follow_the_side_and_a_missing_status_is_an_error() {
        let server = record(Role::Server, &[], 200);
        let client = record(Role::Client, &[], 200);
        // NOT_FOUND: the client's failure, not the server's.
        assert_eq!(error_type(server.role, &call(Some(5))), None);
        assert_eq!(error_type(client.role, &call(Some(5))), Some("NOT_FOUND"));
        assert_eq!(error_type(server.role, &call(Some(13))), Some("INTERNAL"));
        assert_eq!(error_type(server.role, &call(None)), Some("_OTHER"));
        let m = metric_attributes(&client, &call(Some(14)));
        assert_eq!(get(&m, "error.type"), Some(&"UNAVAILABLE".into()));
        assert!(get(&m, "server.address").is_some());
        let m = metric_attributes(&server, &call(Some(0)));
        assert!(get(&m, "server.address").is_none());
        assert!(m.windows(2).all(|w| w[0].0 < w[1].0), "sorted: {m:?}");
    }
}
