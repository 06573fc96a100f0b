//! The OTLP exporter: one task per signal, each with its own bounded queue, transport
//! (gRPC or HTTP/protobuf) and retry loop. Up to `max_concurrent_requests` batches are on
//! their way at once (each retried on its own), so a collector's answer time does not cap the
//! throughput; with the disk queue, one at a time, in the queue's order. A batch waits in the
//! queue while those before it are sent; when the queue is full new batches are dropped and
//! counted, so a dead collector costs bounded memory and never blocks the pipeline.

pub mod disk_queue;
pub mod grpc;
pub mod http;
pub mod proxy;
pub mod retry;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use futures::StreamExt as _;

use bytes::Bytes;

use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    config::export::{OtlpTarget, Protocol, RetryConfig, SignalKind},
    export::{Encoded, ExportStats, OnceLog},
};
use disk_queue::{DiskQueue, Pushed};
use http::error_chain;
use retry::{Verdict, next_delay};

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("OTLP endpoint {endpoint}: {message}")]
    Endpoint { endpoint: String, message: String },
    /// `what`: the CA certificate, the client certificate, the client key.
    #[error("cannot read {what} {path}")]
    Certificate {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Reads a PEM file the TLS settings name; `what` it is goes into the error.
pub(crate) fn read_pem(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, OtlpError> {
    std::fs::read(path).map_err(|source| OtlpError::Certificate {
        what,
        path: path.display().to_string(),
        source,
    })
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

/// What to do about a failure whose cause the transport's words do not say plainly.
fn hint(reason: &str, target: &OtlpTarget) -> &'static str {
    if reason.contains("CertificateRequired") && target.client_identity.is_none() {
        " (the collector wants a client certificate: set export.otlp.client_certificate and client_key)"
    } else {
        ""
    }
}

/// A request that failed, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub verdict: Verdict,
    pub reason: String,
}

#[derive(Clone)]
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

/// Starts the exporter of one signal; batches go into the returned queue. With `disk`, every
/// batch is written to that queue as it arrives and removed once delivered, and a retryable
/// failure is retried until the collector is back (the disk queue's size is the bound, not
/// the retry budget). Without it, up to `concurrent` requests are in flight at once. Must run
/// inside a Tokio runtime.
pub fn spawn(
    target: OtlpTarget,
    retry: RetryConfig,
    queue: usize,
    concurrent: usize,
    disk: Option<DiskQueue>,
    stats: Arc<ExportStats>,
) -> Result<(mpsc::Sender<Encoded>, JoinHandle<()>), OtlpError> {
    let transport = match target.protocol {
        Protocol::Grpc => Transport::Grpc(grpc::GrpcTransport::new(&target)?),
        Protocol::HttpProtobuf => Transport::Http(http::HttpTransport::new(&target)?),
    };
    let (tx, rx) = mpsc::channel(queue);
    let retry = match disk {
        Some(_) => RetryConfig {
            max_elapsed_ms: u64::MAX,
            ..retry
        },
        None => retry,
    };
    let through = match proxy::route(&target)? {
        Some(via) => format!(" through the proxy {}", via.uri()),
        None => String::new(),
    };
    let delivery = Delivery {
        transport,
        target,
        through,
        retry,
        stats,
        log: Mutex::default(),
        failing: AtomicBool::new(false),
    };
    let task = match disk {
        Some(disk) => tokio::spawn(delivery.run_with_disk(rx, disk)),
        None => tokio::spawn(delivery.run_in_memory(rx, concurrent.max(1))),
    };
    Ok((tx, task))
}

/// One signal's sending side: the transport, its retry rules, and what was already logged
/// (shared by the requests in flight at once).
struct Delivery {
    transport: Transport,
    target: OtlpTarget,
    /// ` through the proxy …` when one is used (for messages), else empty.
    through: String,
    retry: RetryConfig,
    stats: Arc<ExportStats>,
    log: Mutex<OnceLog>,
    /// The last request failed (recovery is logged once).
    failing: AtomicBool,
}

impl Delivery {
    async fn run_in_memory(self, mut rx: mpsc::Receiver<Encoded>, concurrent: usize) {
        // The next batch is taken as soon as fewer than `concurrent` are in flight.
        let this = &self;
        futures::stream::poll_fn(|cx| rx.poll_recv(cx))
            .for_each_concurrent(concurrent, |payload| async move {
                this.deliver(&payload).await;
                this.stats.dequeued(this.target.signal, payload.items);
            })
            .await;
    }

    /// Whether `cause` is logged for the first time.
    fn first(&self, cause: &str) -> bool {
        self.log.lock().is_ok_and(|mut log| log.first(cause))
    }

    /// Spools every arriving batch to `disk` while the head of the disk queue is sent; a
    /// batch leaves the disk once the collector took it or refused it for good.
    async fn run_with_disk(self, mut rx: mpsc::Receiver<Encoded>, mut disk: DiskQueue) {
        let signal = self.target.signal;
        let stats = self.stats.clone();
        stats.resumed(signal, disk.batches() as u64, disk.items());
        if disk.batches() > 0 {
            tracing::info!(
                "{} batches of {} left by an earlier run in {}: sending them first",
                disk.batches(),
                signal.as_str(),
                disk.path().display()
            );
        }
        let mut spool_log = OnceLog::default();
        let mut spool = |disk: &mut DiskQueue, batch: Encoded| {
            let refused = match disk.push(&batch) {
                Ok(Pushed::Stored) => {
                    stats.stored_on_disk(signal, batch.items);
                    return;
                }
                Ok(Pushed::Full) => format!(
                    "the disk queue is full ({} bytes, export.otlp.disk_queue.max_bytes)",
                    disk.max_bytes()
                ),
                Err(error) => error_chain(&error),
            };
            stats.dequeued(signal, batch.items);
            stats.dropped(signal, batch.items);
            if spool_log.first(&refused) {
                tracing::warn!(
                    "{refused}: dropping new {} batches until it has room (counted)",
                    signal.as_str()
                );
            }
        };
        let mut open = true;
        loop {
            let head = match disk.head() {
                Ok(head) => head,
                Err(error) => {
                    tracing::error!(
                        "{}: the {} disk queue stops here; new batches are dropped (counted)",
                        error_chain(&error),
                        signal.as_str()
                    );
                    break;
                }
            };
            let Some(head) = head else {
                if !open {
                    return;
                }
                match rx.recv().await {
                    Some(batch) => spool(&mut disk, batch),
                    None => open = false,
                }
                continue;
            };
            {
                let sending = self.deliver(&head);
                tokio::pin!(sending);
                loop {
                    tokio::select! {
                        biased;
                        () = &mut sending => break,
                        batch = rx.recv(), if open => match batch {
                            Some(batch) => spool(&mut disk, batch),
                            None => open = false,
                        },
                    }
                }
            }
            if let Err(error) = disk.pop() {
                tracing::error!(
                    "{}: the {} disk queue stops here; new batches are dropped (counted)",
                    error_chain(&error),
                    signal.as_str()
                );
                break;
            }
            stats.removed_from_disk(signal, head.items);
            stats.dequeued(signal, head.items);
        }
        // The disk failed: what arrives from now on is dropped and counted.
        while let Some(batch) = rx.recv().await {
            stats.dequeued(signal, batch.items);
            stats.dropped(signal, batch.items);
        }
    }

    /// Sends one batch, retrying as the rules say; counts it sent, rejected or dropped.
    async fn deliver(&self, payload: &Encoded) {
        // A transport per request: its clone shares the connection (cheap handles).
        let mut transport = self.transport.clone();
        let signal = self.target.signal;
        let stats = &self.stats;
        let items = payload.items;
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match transport.send(signal, &payload.body).await {
                Ok(accepted) => {
                    if self.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(
                            "exporting {} to {} works again",
                            signal.as_str(),
                            self.target.endpoint
                        );
                    }
                    stats.sent(signal, items - accepted.rejected.min(items));
                    if accepted.rejected > 0 {
                        stats.dropped(signal, accepted.rejected);
                        if self.first(&accepted.message) {
                            tracing::warn!(
                                "the collector at {} rejected {} of {items} {}: {} (counted as dropped)",
                                self.target.endpoint,
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
                    return;
                }
                Err(failure) => {
                    stats.failure(signal);
                    self.failing.store(true, Ordering::Relaxed);
                    let delay = match failure.verdict {
                        Verdict::Retry(server_delay) => next_delay(
                            &self.retry,
                            attempt,
                            server_delay,
                            rand::random::<f64>(),
                            started.elapsed(),
                        ),
                        Verdict::Drop => None,
                    };
                    if self.first(&failure.reason) {
                        let next = match (failure.verdict, delay) {
                            (Verdict::Drop, _) => "not retryable, batch dropped (counted)",
                            (_, Some(_)) => "retrying with backoff",
                            (_, None) => "retries exhausted, batch dropped (counted)",
                        };
                        tracing::warn!(
                            "exporting {} to {}{} failed: {}{}; {next}",
                            signal.as_str(),
                            self.target.endpoint,
                            self.through,
                            failure.reason,
                            hint(&failure.reason, &self.target),
                        );
                    }
                    match delay {
                        Some(d) => tokio::time::sleep(d).await,
                        None => {
                            stats.dropped(signal, items);
                            return;
                        }
                    }
                }
            }
        }
    }
}
