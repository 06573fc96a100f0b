//! Semantic-convention attributes of an HTTP exchange (semconv HTTP spans and metrics,
//! stable since v1.23), shared by spans, access logs and metrics.

use std::net::SocketAddr;

use crate::{
    protocols::Role,
    telemetry::{
        ExchangeRecord,
        otlp::{AttrValue, Attrs},
    },
};

/// Methods semconv knows; any other is `_OTHER` (with the original kept on spans).
const KNOWN_METHODS: [&str; 9] = [
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];

/// Query parameters whose values are replaced by `REDACTED` (semconv's list, plus common
/// credential names).
const SENSITIVE_QUERY_KEYS: [&str; 12] = [
    "AWSAccessKeyId",
    "Signature",
    "sig",
    "X-Goog-Signature",
    "access_token",
    "token",
    "api_key",
    "apikey",
    "password",
    "secret",
    "client_secret",
    "code",
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

/// The query with sensitive values replaced by `REDACTED`.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _))
                if SENSITIVE_QUERY_KEYS
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(key)) =>
            {
                format!("{key}=REDACTED")
            }
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
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

/// Where the request was addressed: the Host header if any, else the server's socket.
fn server_address(r: &ExchangeRecord) -> (Option<String>, Option<u16>) {
    let socket_port = r.server.map(|s| s.port());
    match r.request_header("host").map(split_host) {
        Some((name, port)) if !name.is_empty() => (Some(name.to_string()), port.or(socket_port)),
        _ => (r.server.map(|s| s.ip().to_string()), socket_port),
    }
}

fn protocol_version(r: &ExchangeRecord) -> &'static str {
    if r.version_minor == 0 { "1.0" } else { "1.1" }
}

/// Attributes of the exchange's span and access log. `route` is the server's route template,
/// or the client's URL template.
pub fn span_attributes(r: &ExchangeRecord, route: &str) -> Attrs {
    let mut a: Attrs = Vec::with_capacity(20);
    let m = method(&r.method);
    a.push(("http.request.method", m.into()));
    if m != r.method {
        a.push(("http.request.method_original", r.method.as_str().into()));
    }
    let (path, query) = path_and_query(&r.target);
    a.push(("url.path", path.into()));
    if let Some(q) = query {
        a.push(("url.query", redact_query(q).into()));
    }
    a.push(("url.scheme", "http".into()));
    if r.status != 0 {
        a.push(("http.response.status_code", r.status.into()));
    }
    a.push(("network.protocol.name", "http".into()));
    a.push(("network.protocol.version", protocol_version(r).into()));
    a.push(("network.transport", "tcp".into()));
    let (server, server_port) = server_address(r);
    if let Some(s) = &server {
        a.push(("server.address", s.as_str().into()));
    }
    if let Some(p) = server_port {
        a.push(("server.port", p.into()));
    }
    match r.role {
        Role::Server => {
            a.push(("http.route", route.into()));
            let forwarded = r
                .request_header("x-forwarded-for")
                .and_then(|v| v.split(',').next())
                .map(str::trim)
                .filter(|v| !v.is_empty());
            if let Some(client) = forwarded
                .map(str::to_string)
                .or_else(|| r.client.map(|c| c.ip().to_string()))
            {
                a.push(("client.address", client.into()));
            }
            if let Some(c) = r.client {
                a.push(("client.port", c.port().into()));
            }
        }
        Role::Client => {
            a.push(("url.template", route.into()));
            let mut full = format!(
                "http://{}{}",
                r.request_header("host")
                    .map(str::to_string)
                    .or_else(|| r.server.map(|s| s.to_string()))
                    .unwrap_or_default(),
                path
            );
            if let Some(q) = query {
                full.push('?');
                full.push_str(&redact_query(q));
            }
            a.push(("url.full", full.into()));
        }
    }
    if let Some(peer) = r.remote {
        a.push(("network.peer.address", peer.ip().to_string().into()));
        a.push(("network.peer.port", peer.port().into()));
    }
    if let Some(local) = r.local {
        a.push(("network.local.address", local.ip().to_string().into()));
        a.push(("network.local.port", local.port().into()));
    }
    if let Some(ua) = r.request_header("user-agent") {
        a.push(("user_agent.original", ua.into()));
    }
    a.push((
        "http.request.body.size",
        AttrValue::Int(r.request_body_bytes as i64),
    ));
    a.push((
        "http.response.body.size",
        AttrValue::Int(r.response_body_bytes as i64),
    ));
    if is_error(r.role, r.status) {
        a.push(("error.type", r.status.to_string().into()));
    }
    if let Some(why) = incompleteness(r) {
        a.push(("netsonde.http.incomplete", why.into()));
    }
    a
}

fn incompleteness(r: &ExchangeRecord) -> Option<&'static str> {
    use crate::protocols::Completeness;
    match r.completeness {
        Completeness::Complete => None,
        Completeness::BodyCut => Some("body_cut"),
        Completeness::FramingLost => Some("framing_lost"),
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
    a.push(("url.scheme", "http".into()));
    match r.role {
        Role::Server => a.push(("http.route", route.into())),
        Role::Client => {
            let (server, port) = server_address(r);
            if let Some(s) = server {
                a.push(("server.address", s.into()));
            }
            if let Some(p) = port {
                a.push(("server.port", p.into()));
            }
            a.push(("url.template", route.into()));
        }
    }
    if is_error(r.role, r.status) {
        a.push(("error.type", r.status.to_string().into()));
    }
    a.sort_by(|x, y| x.0.cmp(y.0));
    a
}

/// A one-line access log, in the spirit of the combined log format:
/// `client - "METHOD target HTTP/1.1" status response_bytes "user-agent" duration_ms`.
pub fn access_log_line(r: &ExchangeRecord) -> String {
    let client = r
        .client
        .map(|c: SocketAddr| c.ip().to_string())
        .unwrap_or_else(|| "-".into());
    let (path, query) = path_and_query(&r.target);
    let target = match query {
        Some(q) => format!("{path}?{}", redact_query(q)),
        None => path.to_string(),
    };
    let micros = r.duration().as_micros();
    format!(
        "{client} - \"{} {} HTTP/{}\" {} {} \"{}\" {}.{:03}ms",
        r.method,
        target,
        protocol_version(r),
        r.status,
        r.response_body_bytes,
        r.request_header("user-agent").unwrap_or("-"),
        micros / 1000,
        micros % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_lose_their_secrets() {
        assert_eq!(
            redact_query("a=1&Signature=abc&token=t&b"),
            "a=1&Signature=REDACTED&token=REDACTED&b"
        );
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
