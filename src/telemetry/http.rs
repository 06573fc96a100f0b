//! Semantic-convention attributes of an HTTP exchange (semconv HTTP spans and metrics,
//! stable since v1.23), shared by spans, access logs and metrics.

use crate::{
    protocols::Role,
    telemetry::{ExchangeRecord, otlp::Attrs, wire::AttrSink},
};

/// Methods semconv knows; any other is `_OTHER` (with the original kept on spans).
const KNOWN_METHODS: [&str; 9] = [
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];

/// The semconv method: known methods as is, anything else `_OTHER`.
pub fn method(raw: &str) -> &str {
    if KNOWN_METHODS.contains(&raw) {
        raw
    } else {
        "_OTHER"
    }
}

/// Whether the exchange failed by semconv's rules: a 5xx for servers, any 4xx/5xx for
/// clients. The status code is then `error.type`.
/// `error.type` of an exchange whose connection closed before any response (semconv: "a
/// component-specific low cardinality error identifier" when no status code was received).
pub const NO_RESPONSE: &str = "no_response";

pub fn is_error(role: Role, status: u16) -> bool {
    match role {
        Role::Server => status >= 500,
        Role::Client => status >= 400,
    }
}

/// Path and query of a request target (an absolute-form target loses scheme and host).
pub fn path_and_query(target: &str) -> (&str, Option<&str>) {
    let target = target.split('#').next().unwrap_or_default();
    let target = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

/// `host[:port]` of a Host header (IPv6 literals in brackets).
pub fn split_host(host: &str) -> (&str, Option<u16>) {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[')
        && let Some((addr, after)) = rest.split_once(']')
    {
        return (addr, after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, port.parse().ok()),
        _ => (host, None),
    }
}

/// A `server.address`: a name from the Host header, or the server socket's IP.
pub(super) enum ServerName<'a> {
    Host(&'a str),
    Ip(std::net::IpAddr),
}

/// Where the request was addressed: the Host header if any, else the server's socket. A
/// client that connected to a Kubernetes Service's ClusterIP addressed the Service: its DNS
/// name replaces a missing Host header, an IP, or a shorter form of the same name (`web`,
/// `web.shop`); a Host naming something else (a virtual host) is kept.
pub(super) fn server_address(r: &ExchangeRecord) -> (Option<ServerName<'_>>, Option<u16>) {
    let socket_port = r.server.map(|s| s.port());
    let host = r.request_header("host").map(split_host);
    if r.role == Role::Client
        && let Some(dns) = r.peer.as_ref().and_then(|p| p.service_dns.as_deref())
    {
        let replaceable = match host {
            None | Some(("", _)) => true,
            Some((name, _)) => {
                name.parse::<std::net::IpAddr>().is_ok()
                    || (dns.starts_with(name)
                        && dns.as_bytes().get(name.len()).is_none_or(|&b| b == b'.'))
            }
        };
        if replaceable {
            let port = host.and_then(|(_, p)| p).or(socket_port);
            return (Some(ServerName::Host(dns)), port);
        }
    }
    match host {
        Some((name, port)) if !name.is_empty() => {
            (Some(ServerName::Host(name)), port.or(socket_port))
        }
        _ => (r.server.map(|s| ServerName::Ip(s.ip())), socket_port),
    }
}

fn protocol_version(r: &ExchangeRecord) -> &'static str {
    match (r.version_major, r.version_minor) {
        (2, _) => "2",
        (_, 0) => "1.0",
        _ => "1.1",
    }
}

/// Attributes of the exchange's span and access log, written into `a`. `route` is the
/// server's route template, or the client's URL template.
pub fn span_attributes(r: &ExchangeRecord, route: &str, a: &mut impl AttrSink) {
    let m = method(&r.method);
    a.str("http.request.method", m);
    if m != r.method {
        a.str("http.request.method_original", &r.method);
    }
    let (path, query) = path_and_query(&r.target);
    a.str("url.path", path);
    if let Some(q) = query {
        // Redacted when the record was made (`telemetry::redact`).
        a.str("url.query", q);
    }
    a.str("url.scheme", r.scheme());
    if r.status != 0 {
        a.int("http.response.status_code", i64::from(r.status));
    }
    endpoint_attributes(r, a);
    match r.role {
        Role::Server => a.str("http.route", route),
        Role::Client => {
            a.str("url.template", route);
            let authority: &dyn std::fmt::Display = match (r.request_header("host"), &r.server) {
                (Some(h), _) => &HostText(h),
                (None, Some(s)) => s,
                (None, None) => &HostText(""),
            };
            let scheme = r.scheme();
            match query {
                Some(q) => a.display(
                    "url.full",
                    &format_args!("{scheme}://{authority}{path}?{q}"),
                ),
                None => a.display("url.full", &format_args!("{scheme}://{authority}{path}")),
            }
        }
    }
    a.int("http.request.body.size", r.request_body_bytes as i64);
    a.int("http.response.body.size", r.response_body_bytes as i64);
    if is_error(r.role, r.status) {
        a.display("error.type", &r.status);
    } else if r.completeness == crate::protocols::Completeness::NoResponse {
        a.str("error.type", NO_RESPONSE);
    }
    if let Some(why) = incompleteness(r) {
        a.str("netsonde.http.incomplete", why);
    }
}

/// The attributes every exchange carries, HTTP or RPC: the protocol under it, the server it
/// was addressed to, the client (servers only), the socket's two ends, the user agent.
pub(super) fn endpoint_attributes(r: &ExchangeRecord, a: &mut impl AttrSink) {
    a.str("network.protocol.name", "http");
    a.str("network.protocol.version", protocol_version(r));
    a.str("network.transport", "tcp");
    let (server, server_port) = server_address(r);
    match server {
        Some(ServerName::Host(name)) => a.str("server.address", name),
        Some(ServerName::Ip(ip)) => a.ip("server.address", ip),
        None => {}
    }
    if let Some(p) = server_port {
        a.int("server.port", i64::from(p));
    }
    if r.role == Role::Server {
        let forwarded = r
            .request_header("x-forwarded-for")
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty());
        match (forwarded, r.client) {
            (Some(f), _) => a.str("client.address", f),
            (None, Some(c)) => a.ip("client.address", c.ip()),
            (None, None) => {}
        }
        if let Some(c) = r.client {
            a.int("client.port", i64::from(c.port()));
        }
    }
    if let Some(peer) = r.remote {
        a.ip("network.peer.address", peer.ip());
        a.int("network.peer.port", i64::from(peer.port()));
    }
    if let Some(local) = r.local {
        a.ip("network.local.address", local.ip());
        a.int("network.local.port", i64::from(local.port()));
    }
    if let Some(ua) = r.request_header("user-agent") {
        a.str("user_agent.original", ua);
    }
    if let Some(peer) = &r.peer {
        peer.span_attributes(a);
    }
}

/// The server address and port of a client's metric series.
pub(super) fn push_server(r: &ExchangeRecord, a: &mut Attrs) {
    let (server, port) = server_address(r);
    match server {
        Some(ServerName::Host(name)) => a.push(("server.address", name.into())),
        Some(ServerName::Ip(ip)) => a.push(("server.address", ip.to_string().into())),
        None => {}
    }
    if let Some(p) = port {
        a.push(("server.port", p.into()));
    }
}

/// A header value shown as is.
struct HostText<'a>(&'a str);

impl std::fmt::Display for HostText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

fn incompleteness(r: &ExchangeRecord) -> Option<&'static str> {
    use crate::protocols::Completeness;
    match r.completeness {
        Completeness::Complete => None,
        Completeness::BodyCut => Some("body_cut"),
        Completeness::FramingLost => Some("framing_lost"),
        Completeness::BytesLost => Some("bytes_lost"),
        Completeness::NoResponse => Some("no_response"),
        Completeness::RequestCut => Some("request_cut"),
    }
}

/// The low-cardinality attributes of the request duration and body size metrics.
pub fn metric_attributes(r: &ExchangeRecord, route: &str) -> Attrs {
    let mut a: Attrs = Vec::with_capacity(8);
    a.push(("http.request.method", method(&r.method).into()));
    if r.status != 0 {
        a.push(("http.response.status_code", r.status.into()));
    }
    a.push(("network.protocol.name", "http".into()));
    a.push(("network.protocol.version", protocol_version(r).into()));
    a.push(("url.scheme", r.scheme().into()));
    match r.role {
        Role::Server => a.push(("http.route", route.into())),
        Role::Client => {
            push_server(r, &mut a);
            a.push(("url.template", route.into()));
        }
    }
    if is_error(r.role, r.status) {
        a.push(("error.type", r.status.to_string().into()));
    } else if r.completeness == crate::protocols::Completeness::NoResponse {
        a.push(("error.type", NO_RESPONSE.into()));
    }
    if let Some(peer) = &r.peer {
        peer.metric_attributes(&mut a);
    }
    a.sort_by(|x, y| x.0.cmp(y.0));
    a
}

/// A one-line access log, in the spirit of the combined log format, appended to `line`:
/// `client - "METHOD target HTTP/1.1" status response_bytes "user-agent" duration_ms`.
pub fn access_log_line(line: &mut String, r: &ExchangeRecord) {
    // Pushed piece by piece, not through `write!`: `core::fmt` was most of this line's cost,
    // once per exchange (the same as the console line, `text`).
    use crate::telemetry::text::{push_ip, push_millis, push_uint};
    match r.client {
        Some(c) => push_ip(line, c.ip()),
        None => line.push('-'),
    }
    let (path, query) = path_and_query(&r.target);
    line.push_str(" - \"");
    line.push_str(&r.method);
    line.push(' ');
    line.push_str(path);
    if let Some(q) = query {
        line.push('?');
        line.push_str(q);
    }
    line.push_str(" HTTP/");
    line.push_str(protocol_version(r));
    line.push_str("\" ");
    push_uint(line, r.status.into());
    line.push(' ');
    push_uint(line, r.response_body_bytes);
    line.push_str(" \"");
    line.push_str(r.request_header("user-agent").unwrap_or("-"));
    line.push_str("\" ");
    push_millis(line, r.duration());
    if let Some(call) = &r.rpc {
        let status = call.status.map_or("-", crate::protocols::grpc::status_name);
        line.push_str(" grpc-status=");
        line.push_str(status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_lines_are_exact() {
        use std::time::Duration;

        use crate::{protocols::grpc::Call, telemetry::spans::tests::record};
        let with = |target: &str, micros: u64, edit: &dyn Fn(&mut ExchangeRecord)| {
            let mut r = record(Role::Server, &[("user-agent", "curl/8.0")], 200);
            r.target = target.into();
            r.end = r.start + Duration::from_micros(micros);
            edit(&mut r);
            let mut line = String::new();
            access_log_line(&mut line, &r);
            line
        };
        let cases = [
            (
                with("/a/b?x=1&y=2", 480, &|_| {}),
                "10.0.0.1 - \"GET /a/b?x=1&y=2 HTTP/1.1\" 200 10 \"curl/8.0\" 0.480ms",
            ),
            (
                with("http://h:1/p#frag", 12, &|r| {
                    r.client = None;
                    r.version_minor = 0;
                    r.status = 404;
                    r.request_headers.clear();
                }),
                "- - \"GET /p HTTP/1.0\" 404 10 \"-\" 0.012ms",
            ),
            (
                with("/pkg.Svc/Do", 1_234_567, &|r| {
                    r.method = "POST".into();
                    r.version_major = 2;
                    r.response_body_bytes = 0;
                    r.client = Some("[2001:db8::1]:443".parse().unwrap());
                    r.rpc = Some(Call {
                        method: "pkg.Svc/Do".into(),
                        status: Some(5),
                        request_messages: None,
                        response_messages: None,
                    });
                }),
                "2001:db8::1 - \"POST /pkg.Svc/Do HTTP/2\" 200 0 \"curl/8.0\" 1234.567ms grpc-status=NOT_FOUND",
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(line, expected);
        }
    }

    #[test]
    fn the_wire_and_the_list_carry_the_same_attributes() {
        use crate::telemetry::{
            otlp::{AttrValue, to_key_values},
            spans::tests::record,
            wire::WireAttrs,
        };
        use prost::Message as _;
        for role in [Role::Client, Role::Server] {
            let mut r = record(
                role,
                &[
                    ("host", "example.test:8080"),
                    ("user-agent", "curl/8.0"),
                    ("x-forwarded-for", "203.0.113.9, 10.0.0.1"),
                ],
                404,
            );
            r.target = "/users/7?token=REDACTED&a=1".into();
            r.method = "PURGE".into();
            r.remote = r.server;
            r.local = r.client;
            let mut listed: Attrs = Vec::new();
            span_attributes(&r, "/users/{id}", &mut listed);
            let mut wire = WireAttrs::default();
            span_attributes(&r, "/users/{id}", &mut wire);
            let mut span = Vec::new();
            wire.splice_into(&mut span, 9);
            let decoded =
                opentelemetry_proto::tonic::trace::v1::Span::decode(span.as_slice()).unwrap();
            assert_eq!(decoded.attributes, to_key_values(&listed));
            let get = |k: &str| listed.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
            assert_eq!(get("url.query"), Some("token=REDACTED&a=1".into()));
            assert_eq!(get("http.request.method"), Some("_OTHER".into()));
            if role == Role::Client {
                assert_eq!(
                    get("url.full"),
                    Some("http://example.test:8080/users/7?token=REDACTED&a=1".into())
                );
                assert_eq!(get("error.type"), Some("404".into()));
            } else {
                assert_eq!(get("client.address"), Some("203.0.113.9".into()));
                assert_eq!(get("error.type"), None);
            }
            assert_eq!(get("server.address"), Some("example.test".into()));
            assert_eq!(get("server.port"), Some(AttrValue::Int(8080)));
        }
    }

    /// No response before the close: no status code, a failure on both sides, and the metric
    /// series says why.
    #[test]
    fn an_exchange_without_a_response_fails_with_no_response() {
        use crate::{protocols::Completeness, telemetry::spans::tests::record};
        for role in [Role::Client, Role::Server] {
            let mut r = record(role, &[], 0);
            r.completeness = Completeness::NoResponse;
            let mut a: Attrs = Vec::new();
            span_attributes(&r, "/users/{id}", &mut a);
            let get = |a: &Attrs, k: &str| a.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
            assert_eq!(get(&a, "error.type"), Some(NO_RESPONSE.into()));
            assert_eq!(
                get(&a, "netsonde.http.incomplete"),
                Some("no_response".into())
            );
            assert_eq!(get(&a, "http.response.status_code"), None);
            let m = metric_attributes(&r, "/users/{id}");
            assert_eq!(get(&m, "error.type"), Some(NO_RESPONSE.into()));
            assert_eq!(get(&m, "http.response.status_code"), None);
            assert!(r.failed());
        }
    }

    #[test]
    fn hosts_split_into_name_and_port() {
        assert_eq!(
            split_host("example.test:8080"),
            ("example.test", Some(8080))
        );
        assert_eq!(split_host("example.test"), ("example.test", None));
        assert_eq!(split_host("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_host("::1"), ("::1", None));
    }

    #[test]
    fn unknown_methods_are_other() {
        assert_eq!(method("GET"), "GET");
        assert_eq!(method("PURGE"), "_OTHER");
    }

    #[test]
    fn errors_depend_on_the_side() {
        assert!(!is_error(Role::Server, 404));
        assert!(is_error(Role::Client, 404));
        assert!(is_error(Role::Server, 503));
    }
}
