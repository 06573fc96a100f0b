//! The proxy an export goes through, chosen as curl does (hyper-util's matcher: the
//! endpoint's scheme picks `proxy.http` or `proxy.https`; `no_proxy`'s names, addresses and
//! networks go direct; loopback is proxied unless listed, as with curl).

use hyper_util::client::{
    legacy::connect::{HttpConnector, proxy::Tunnel},
    proxy::matcher::{Intercept, Matcher},
};

use super::OtlpError;
use crate::config::export::OtlpTarget;

/// The proxy for `target`, if it goes through one.
pub fn route(target: &OtlpTarget) -> Result<Option<Intercept>, OtlpError> {
    let proxy = &target.proxy;
    if proxy.http.is_none() && proxy.https.is_none() {
        return Ok(None);
    }
    let matcher = Matcher::builder()
        .http(proxy.http.clone().unwrap_or_default())
        .https(proxy.https.clone().unwrap_or_default())
        .no(proxy.no_proxy.clone().unwrap_or_default())
        .build();
    let uri: http::Uri = target.endpoint.parse().map_err(|e| OtlpError::Endpoint {
        endpoint: target.endpoint.clone(),
        message: format!("not a URL: {e}"),
    })?;
    Ok(matcher.intercept(&uri))
}

/// A connector that opens an HTTP CONNECT tunnel through `via` (gRPC's way through a
/// proxy, for http:// and https:// endpoints alike; TLS then runs inside the tunnel).
pub fn tunnel(via: &Intercept, connect_timeout: std::time::Duration) -> Tunnel<HttpConnector> {
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    let tunnel = Tunnel::new(via.uri().clone(), tcp);
    match via.basic_auth() {
        Some(auth) => tunnel.with_auth(auth.clone()),
        None => tunnel,
    }
}

/// `endpoint` with its scheme's port written out (the tunnel asks the proxy for the
/// destination's port and would take 443 for a missing one).
pub fn with_port(endpoint: &str) -> String {
    let Ok(uri) = endpoint.parse::<http::Uri>() else {
        return endpoint.to_string();
    };
    let (Some(scheme), Some(authority), None) = (uri.scheme_str(), uri.authority(), uri.port())
    else {
        return endpoint.to_string();
    };
    let port = if scheme == "https" { 443 } else { 80 };
    let path = uri.path_and_query().map_or("", |p| p.as_str());
    format!("{scheme}://{authority}:{port}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{export::ExportConfig, export::SignalKind, proxy::ProxyConfig};

    fn target(endpoint: &str, proxy: ProxyConfig) -> OtlpTarget {
        let mut export = ExportConfig::default();
        export.otlp.endpoint = Some(endpoint.into());
        export.otlp.proxy = proxy;
        export.otlp.target(SignalKind::Traces)
    }

    #[test]
    fn the_endpoints_scheme_and_no_proxy_choose() {
        let proxy = ProxyConfig {
            http: Some("http://plain:3128".into()),
            https: Some("me:pw@secure:3129".into()),
            no_proxy: Some("direct.example, .svc.cluster.local, 10.1.0.0/16".into()),
        };
        for (endpoint, via) in [
            ("http://collector:4317", Some("http://plain:3128/")),
            ("https://collector:4317", Some("http://secure:3129/")),
            ("http://127.0.0.1:4317", Some("http://plain:3128/")),
            ("https://direct.example:4317", None),
            ("https://otel.obs.svc.cluster.local:4317", None),
            ("http://10.1.2.3:4317", None),
            ("http://10.2.2.3:4317", Some("http://plain:3128/")),
        ] {
            let found = route(&target(endpoint, proxy.clone())).unwrap();
            assert_eq!(
                found.as_ref().map(|i| i.uri().to_string()).as_deref(),
                via,
                "{endpoint}"
            );
        }
        let secure = route(&target("https://c:1", proxy.clone()))
            .unwrap()
            .unwrap();
        assert!(
            secure.basic_auth().is_some(),
            "credentials become Proxy-Authorization"
        );
        assert!(!secure.uri().to_string().contains("pw"));
        assert!(
            route(&target("https://c:1", ProxyConfig::default()))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn ports_written_out() {
        for (endpoint, full) in [
            ("http://c", "http://c:80/"),
            ("https://c/v1/traces", "https://c:443/v1/traces"),
            ("http://c:4317", "http://c:4317"),
        ] {
            assert_eq!(with_port(endpoint), full);
        }
    }
}
