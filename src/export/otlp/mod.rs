//! The OTLP exporter: one task per signal, each with its own bounded queue, transport
//! (gRPC or HTTP/protobuf) and retry loop. A batch waits in the queue while the one before it
//! is retried; when the queue is full new batches are dropped and counted, so a dead
//! collector costs bounded memory and never blocks the pipeline.

pub mod grpc;
pub mod http;
pub mod retry;

use std::{sync::Arc, time::Instant};

use bytes::Bytes;

use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    config::export::{OtlpTarget, Protocol, RetryConfig, SignalKind},
    export::{Encoded, ExportStats, OnceLog},
};
use retry::{Verdict, next_delay};

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("OTLP endpoint {endpoint}: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error("cannot read the CA certificate {path}")]
    Certificate {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The collector took the request; `rejected` items it refused (partial success).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted {
    pub rejected: u64,
    pub message: String,
}

impl Accepted {
    fn new(rejected: i64, message: String) -> Self {
        Accepted {
            rejected: rejected.max(0) as u64,
            message,
        }
    }
}

/// A request that failed, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub verdict: Verdict,
    pub reason: String,
}

enum Transport {
    Grpc(grpc::GrpcTransport),
    Http(http::HttpTransport),
}

impl Transport {
    async fn send(&mut self, signal: SignalKind, body: &Bytes) -> Result<Accepted, Failure> {
        match self {
            Transport::Grpc(t) => t.send(signal, body).await,
            Transport::Http(t) => t.send(signal, body).await,
        }
    }
}

/// Starts the exporter of one signal; batches go into the returned queue. Must run inside a
/// Tokio runtime.
pub fn spawn(
    target: OtlpTarget,
    retry: RetryConfig,
    queue: usize,
    stats: Arc<ExportStats>,
) -> Result<(mpsc::Sender<Encoded>, JoinHandle<()>), OtlpError> {
    let transport = match target.protocol {
        Protocol::Grpc => Transport::Grpc(grpc::GrpcTransport::new(&target)?),
        Protocol::HttpProtobuf => Transport::Http(http::HttpTransport::new(&target)?),
    };
    let (tx, rx) = mpsc::channel(queue);
    let task = tokio::spawn(deliver_all(rx, transport, target, retry, stats));
    Ok((tx, task))
}

async fn deliver_all(
    mut rx: mpsc::Receiver<Encoded>,
    mut transport: Transport,
    target: OtlpTarget,
    retry: RetryConfig,
    stats: Arc<ExportStats>,
) {
    let signal = target.signal;
    let mut log = OnceLog::default();
    let mut failing = false;
    while let Some(payload) = rx.recv().await {
        let items = payload.items;
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match transport.send(signal, &payload.body).await {
                Ok(accepted) => {
                    if failing {
                        failing = false;
                        tracing::info!(
                            "exporting {} to {} works again",
                            signal.as_str(),
                            target.endpoint
                        );
                    }
                    stats.sent(signal, items - accepted.rejected.min(items));
                    if accepted.rejected > 0 {
                        stats.dropped(signal, accepted.rejected);
                        if log.first(&accepted.message) {
                            tracing::warn!(
                                "the collector at {} rejected {} of {items} {}: {} (counted as dropped)",
                                target.endpoint,
                                accepted.rejected,
                                signal.as_str(),
                                if accepted.message.is_empty() {
                                    "no reason given"
                                } else {
                                    &accepted.message
                                }
                            );
                        }
                    }
                    break;
                }
                Err(failure) => {
                    stats.failure(signal);
                    failing = true;
                    let delay = match failure.verdict {
                        Verdict::Retry(server_delay) => next_delay(
                            &retry,
                            attempt,
                            server_delay,
                            rand::random::<f64>(),
                            started.elapsed(),
                        ),
                        Verdict::Drop => None,
                    };
                    if log.first(&failure.reason) {
                        let next = match (failure.verdict, delay) {
                            (Verdict::Drop, _) => "not retryable, batch dropped (counted)",
                            (_, Some(_)) => "retrying with backoff",
                            (_, None) => "retries exhausted, batch dropped (counted)",
                        };
                        tracing::warn!(
                            "exporting {} to {} failed: {}; {next}",
                            signal.as_str(),
                            target.endpoint,
                            failure.reason
                        );
                    }
                    match delay {
                        Some(d) => tokio::time::sleep(d).await,
                        None => {
                            stats.dropped(signal, items);
                            break;
                        }
                    }
                }
            }
        }
        stats.dequeued(signal, items);
    }
}
