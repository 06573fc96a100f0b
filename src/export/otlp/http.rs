//! OTLP over HTTP with protobuf bodies.

use std::io::Write as _;

use bytes::Bytes;

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceResponse, metrics::v1::ExportMetricsServiceResponse,
    trace::v1::ExportTraceServiceResponse,
};
use prost::Message as _;

use super::{Accepted, Failure, OtlpError, proxy, read_pem};
use crate::{
    config::export::{Compression, OtlpTarget, SignalKind},
    export::otlp::retry::{Verdict, http_verdict},
};

#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    url: String,
    headers: reqwest::header::HeaderMap,
    gzip: bool,
}

impl HttpTransport {
    pub fn new(target: &OtlpTarget) -> Result<Self, OtlpError> {
        let invalid = |message: String| OtlpError::Endpoint {
            endpoint: target.endpoint.clone(),
            message,
        };
        // reqwest wants a TLS configuration even for plain http:// (rustls with ring, the
        // provider tonic uses too: one crypto library in the binary).
        let builder = reqwest::Client::builder()
            .timeout(target.timeout)
            .connect_timeout(target.timeout)
            .tls_backend_preconfigured(tls_config(target)?);
        // The proxy is chosen here (one rule for both transports), never by reqwest from
        // the environment: components do not read it.
        let builder = match proxy::route(target)? {
            None => builder.no_proxy(),
            Some(via) => {
                let mut p = reqwest::Proxy::all(via.uri().to_string())
                    .map_err(|e| invalid(format!("proxy {}: {e}", via.uri())))?;
                if let Some(auth) = via.basic_auth() {
                    p = p.custom_http_auth(auth.clone());
                }
                builder.proxy(p)
            }
        };
        let client = builder.build().map_err(|e| invalid(e.to_string()))?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &target.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| invalid(format!("{k:?} is not a header name")))?;
            let value = reqwest::header::HeaderValue::from_str(v)
                .map_err(|_| invalid(format!("header {k:?} has an invalid value")))?;
            headers.insert(name, value);
        }
        Ok(HttpTransport {
            client,
            url: target.endpoint.clone(),
            headers,
            gzip: target.compression == Compression::Gzip,
        })
    }

    pub async fn send(&mut self, signal: SignalKind, body: &Bytes) -> Result<Accepted, Failure> {
        let mut body = body.clone();
        let mut request = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .header("content-type", "application/x-protobuf");
        if self.gzip {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            // Writing into a Vec cannot fail.
            let _ = gz.write_all(&body);
            body = Bytes::from(gz.finish().unwrap_or_default());
            request = request.header("content-encoding", "gzip");
        }
        let response = request.body(body).send().await.map_err(|e| Failure {
            verdict: Verdict::Retry(None),
            reason: error_chain(&e),
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = response.bytes().await.unwrap_or_default();
        if status.is_success() {
            return Ok(partial_success(signal, &bytes));
        }
        Err(Failure {
            verdict: http_verdict(status.as_u16(), retry_after.as_deref()),
            reason: format!("HTTP {status}{}", status_message(&bytes)),
        })
    }
}

/// The response's partial success; an empty or undecodable body means all accepted.
fn partial_success(signal: SignalKind, body: &[u8]) -> Accepted {
    match signal {
        SignalKind::Traces => ExportTraceServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| Accepted::new(p.rejected_spans, p.error_message)),
        SignalKind::Metrics => ExportMetricsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| Accepted::new(p.rejected_data_points, p.error_message)),
        SignalKind::Logs => ExportLogsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| Accepted::new(p.rejected_log_records, p.error_message)),
    }
    .unwrap_or_default()
}

/// A failed response's body is a google.rpc.Status in protobuf; show its message if it is one.
fn status_message(body: &[u8]) -> String {
    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }
    match RpcStatus::decode(body) {
        Ok(s) if !s.message.is_empty() => format!(": {}", s.message),
        _ => String::new(),
    }
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let t = cause.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = cause.source();
    }
    text
}

fn tls_config(target: &OtlpTarget) -> Result<rustls::ClientConfig, OtlpError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let bad_pem = |path: &std::path::Path, e: &dyn std::fmt::Display| OtlpError::Endpoint {
        endpoint: target.endpoint.clone(),
        message: format!("{}: {e}", path.display()),
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &target.certificate {
        let pem = read_pem("the CA certificate", path)?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let _ = roots.add(cert.map_err(|e| bad_pem(path, &e))?);
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| OtlpError::Endpoint {
            endpoint: target.endpoint.clone(),
            message: format!("TLS: {e}"),
        })?
        .with_root_certificates(roots);
    let Some(client) = &target.client_identity else {
        return Ok(builder.with_no_client_auth());
    };
    let pem = read_pem("the client certificate", &client.certificate)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(&client.certificate, &e))?;
    let pem = read_pem("the client key", &client.key)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| bad_pem(&client.key, &e))?;
    builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad_pem(&client.certificate, &e))
}
