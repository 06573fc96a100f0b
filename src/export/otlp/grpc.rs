//! OTLP over gRPC (tonic).

use std::time::Duration;

use opentelemetry_proto::tonic::collector::{
    logs::v1::logs_service_client::LogsServiceClient,
    metrics::v1::metrics_service_client::MetricsServiceClient,
    trace::v1::trace_service_client::TraceServiceClient,
};
use tonic::{
    codec::CompressionEncoding,
    metadata::{MetadataKey, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};
use tonic_types::StatusExt as _;

use super::{Accepted, Failure, OtlpError};
use crate::{
    config::export::{Compression, OtlpTarget},
    export::otlp::retry::grpc_verdict,
    telemetry::otlp::Payload,
};

pub struct GrpcTransport {
    channel: Channel,
    headers: Vec<(
        MetadataKey<tonic::metadata::Ascii>,
        MetadataValue<tonic::metadata::Ascii>,
    )>,
    gzip: bool,
    timeout: Duration,
}

impl GrpcTransport {
    /// Connects lazily: a collector that is not there yet is not an error until a send.
    pub fn new(target: &OtlpTarget) -> Result<Self, OtlpError> {
        let invalid = |message: String| OtlpError::Endpoint {
            endpoint: target.endpoint.clone(),
            message,
        };
        let mut endpoint = Endpoint::from_shared(target.endpoint.clone())
            .map_err(|e| invalid(e.to_string()))?
            .timeout(target.timeout)
            .connect_timeout(target.timeout)
            .tcp_nodelay(true);
        if target.endpoint.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(path) = &target.certificate {
                let pem = std::fs::read(path).map_err(|source| OtlpError::Certificate {
                    path: path.display().to_string(),
                    source,
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| invalid(format!("TLS: {e}")))?;
        }
        let headers = target
            .headers
            .iter()
            .map(|(k, v)| {
                let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                    .map_err(|_| invalid(format!("header {k:?} is not a gRPC metadata key")))?;
                let value = MetadataValue::try_from(v.as_str())
                    .map_err(|_| invalid(format!("header {k:?} has a value gRPC cannot carry")))?;
                Ok((key, value))
            })
            .collect::<Result<_, OtlpError>>()?;
        Ok(GrpcTransport {
            channel: endpoint.connect_lazy(),
            headers,
            gzip: target.compression == Compression::Gzip,
            timeout: target.timeout,
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        for (k, v) in &self.headers {
            request.metadata_mut().insert(k.clone(), v.clone());
        }
        request
    }

    pub async fn send(&mut self, payload: &Payload) -> Result<Accepted, Failure> {
        let enc = CompressionEncoding::Gzip;
        let result = match payload {
            Payload::Traces(r) => {
                let mut c = TraceServiceClient::new(self.channel.clone());
                if self.gzip {
                    c = c.send_compressed(enc);
                }
                c.export(self.request(r.clone())).await.map(|resp| {
                    let p = resp.into_inner().partial_success.unwrap_or_default();
                    Accepted::new(p.rejected_spans, p.error_message)
                })
            }
            Payload::Metrics(r) => {
                let mut c = MetricsServiceClient::new(self.channel.clone());
                if self.gzip {
                    c = c.send_compressed(enc);
                }
                c.export(self.request(r.clone())).await.map(|resp| {
                    let p = resp.into_inner().partial_success.unwrap_or_default();
                    Accepted::new(p.rejected_data_points, p.error_message)
                })
            }
            Payload::Logs(r) => {
                let mut c = LogsServiceClient::new(self.channel.clone());
                if self.gzip {
                    c = c.send_compressed(enc);
                }
                c.export(self.request(r.clone())).await.map(|resp| {
                    let p = resp.into_inner().partial_success.unwrap_or_default();
                    Accepted::new(p.rejected_log_records, p.error_message)
                })
            }
        };
        result.map_err(|status| {
            let retry_info = status.get_details_retry_info().map(|info| info.retry_delay);
            Failure {
                verdict: grpc_verdict(status.code(), retry_info),
                reason: grpc_reason(&status),
            }
        })
    }
}

/// A short reason: the code, and the message (or the transport error under it).
fn grpc_reason(status: &tonic::Status) -> String {
    let mut reason = format!("gRPC {:?}", status.code());
    let message = status.message();
    if !message.is_empty() {
        reason.push_str(": ");
        reason.push_str(message);
    }
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !reason.contains(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        source = cause.source();
    }
    reason
}
