//! OTLP over gRPC (tonic).

use std::time::Duration;

use std::marker::PhantomData;

use bytes::{BufMut as _, Bytes};
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceResponse, metrics::v1::ExportMetricsServiceResponse,
    trace::v1::ExportTraceServiceResponse,
};
use tonic::{
    codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::{MetadataKey, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tonic_types::StatusExt as _;

use super::{Accepted, Failure, OtlpError, proxy, read_pem};
use crate::{
    config::export::{Compression, OtlpTarget, SignalKind},
    export::otlp::retry::grpc_verdict,
};

#[derive(Clone)]
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
        let via = proxy::route(target)?;
        let url = match via {
            Some(_) => proxy::with_port(&target.endpoint),
            None => target.endpoint.clone(),
        };
        let mut endpoint = Endpoint::from_shared(url)
            .map_err(|e| invalid(e.to_string()))?
            .timeout(target.timeout)
            .connect_timeout(target.timeout)
            .tcp_nodelay(true);
        if target.endpoint.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(path) = &target.certificate {
                let pem = read_pem("the CA certificate", path)?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let Some(client) = &target.client_identity {
                let certificate = read_pem("the client certificate", &client.certificate)?;
                let key = read_pem("the client key", &client.key)?;
                tls = tls.identity(Identity::from_pem(certificate, key));
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
            channel: match via {
                Some(via) => {
                    endpoint.connect_with_connector_lazy(proxy::tunnel(&via, target.timeout))
                }
                None => endpoint.connect_lazy(),
            },
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

    /// Sends one encoded request: the generated clients would want the decoded message (and
    /// a copy of it for every retry); the generic client with [`Raw`] sends the bytes as
    /// they are.
    pub async fn send(&mut self, signal: SignalKind, body: &Bytes) -> Result<Accepted, Failure> {
        let result = match signal {
            SignalKind::Traces => self
                .call::<ExportTraceServiceResponse>(
                    body,
                    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                )
                .await
                .map(|r| {
                    let p = r.partial_success.unwrap_or_default();
                    Accepted::new(p.rejected_spans, p.error_message)
                }),
            SignalKind::Metrics => self
                .call::<ExportMetricsServiceResponse>(
                    body,
                    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                )
                .await
                .map(|r| {
                    let p = r.partial_success.unwrap_or_default();
                    Accepted::new(p.rejected_data_points, p.error_message)
                }),
            SignalKind::Logs => self
                .call::<ExportLogsServiceResponse>(
                    body,
                    "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                )
                .await
                .map(|r| {
                    let p = r.partial_success.unwrap_or_default();
                    Accepted::new(p.rejected_log_records, p.error_message)
                }),
        };
        result.map_err(|status| {
            let retry_info = status.get_details_retry_info().map(|info| info.retry_delay);
            // A status the server sent has no source error; one tonic made from a transport
            // failure (hyper, h2, io) carries it.
            let transport = std::error::Error::source(&status).is_some();
            Failure {
                verdict: grpc_verdict(status.code(), retry_info, transport),
                reason: grpc_reason(&status),
            }
        })
    }

    async fn call<R: prost::Message + Default + Send + 'static>(
        &self,
        body: &Bytes,
        path: &'static str,
    ) -> Result<R, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        if self.gzip {
            grpc = grpc.send_compressed(CompressionEncoding::Gzip);
        }
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connection not ready: {e}")))?;
        let response = grpc
            .unary(
                self.request(body.clone()),
                http::uri::PathAndQuery::from_static(path),
                Raw::<R>(PhantomData),
            )
            .await?;
        Ok(response.into_inner())
    }
}

/// A gRPC codec that sends already-encoded protobuf and decodes the answer as `R`.
struct Raw<R>(PhantomData<R>);

struct RawEncoder;

struct RawDecoder<R>(PhantomData<R>);

impl<R: prost::Message + Default + Send + 'static> Codec for Raw<R> {
    type Encode = Bytes;
    type Decode = R;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder<R>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder<R> {
        RawDecoder(PhantomData)
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl<R: prost::Message + Default> Decoder for RawDecoder<R> {
    type Item = R;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<R>, tonic::Status> {
        R::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable response: {e}")))
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
