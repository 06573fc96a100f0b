//! Exporters: the console (lines), OTLP to a collector (gRPC or HTTP/protobuf), and OTLP JSON
//! lines to a file. [`Fanout`] hands each OTLP payload to every OTLP-speaking exporter's queue
//! without ever waiting: a full queue drops the batch and counts it.

pub mod console;
pub mod file;
pub mod otlp;

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use tokio::sync::mpsc::{self, error::TrySendError};

use crate::{
    config::export::SignalKind,
    telemetry::{ExportTotals, otlp::Payload},
};

/// Export counters per signal, across exporters (self-telemetry).
#[derive(Debug, Default)]
pub struct ExportStats {
    sent: [AtomicU64; 3],
    dropped: [AtomicU64; 3],
    failures: [AtomicU64; 3],
    queued: [AtomicU64; 3],
    /// Items queued or being sent.
    pending: [AtomicU64; 3],
}

fn index(signal: SignalKind) -> usize {
    match signal {
        SignalKind::Traces => 0,
        SignalKind::Metrics => 1,
        SignalKind::Logs => 2,
    }
}

impl ExportStats {
    pub fn sent(&self, signal: SignalKind, items: u64) {
        self.sent[index(signal)].fetch_add(items, Relaxed);
    }

    pub fn dropped(&self, signal: SignalKind, items: u64) {
        self.dropped[index(signal)].fetch_add(items, Relaxed);
    }

    pub fn failure(&self, signal: SignalKind) {
        self.failures[index(signal)].fetch_add(1, Relaxed);
    }

    fn enqueued(&self, signal: SignalKind, items: u64) {
        self.queued[index(signal)].fetch_add(1, Relaxed);
        self.pending[index(signal)].fetch_add(items, Relaxed);
    }

    pub fn dequeued(&self, signal: SignalKind, items: u64) {
        self.queued[index(signal)].fetch_sub(1, Relaxed);
        self.pending[index(signal)].fetch_sub(items, Relaxed);
    }

    /// At exit, what never left is dropped.
    pub fn abandon_pending(&self) {
        for i in 0..3 {
            let n = self.pending[i].swap(0, Relaxed);
            self.dropped[i].fetch_add(n, Relaxed);
            self.queued[i].store(0, Relaxed);
        }
    }

    pub fn totals(&self) -> ExportTotals {
        let read = |a: &[AtomicU64; 3]| [0, 1, 2].map(|i| a[i].load(Relaxed));
        ExportTotals {
            sent: read(&self.sent),
            dropped: read(&self.dropped),
            failures: read(&self.failures),
            queued: read(&self.queued),
        }
    }
}

/// Remembers which problems were already logged, so each cause is logged once.
#[derive(Debug, Default)]
pub struct OnceLog {
    seen: HashSet<String>,
}

impl OnceLog {
    /// Most distinct causes remembered (a reason that embeds changing numbers must not grow
    /// this without bound).
    const MAX: usize = 64;

    /// Whether `cause` is new (and should be logged).
    pub fn first(&mut self, cause: &str) -> bool {
        if self.seen.len() >= Self::MAX || self.seen.contains(cause) {
            return false;
        }
        self.seen.insert(cause.to_string());
        true
    }
}

/// An exporter's queue: its name, the signal it takes (None: all), the sender.
type Queue = (&'static str, Option<SignalKind>, mpsc::Sender<Arc<Payload>>);

/// Hands payloads to every OTLP-speaking exporter's queue.
#[derive(Clone)]
pub struct Fanout {
    queues: Vec<Queue>,
    stats: Arc<ExportStats>,
    full_logged: Arc<std::sync::Mutex<OnceLog>>,
}

impl Fanout {
    pub fn new(stats: Arc<ExportStats>) -> Self {
        Fanout {
            queues: Vec::new(),
            stats,
            full_logged: Arc::default(),
        }
    }

    /// Adds an exporter's queue, for one signal or (None) all.
    pub fn add(
        &mut self,
        name: &'static str,
        signal: Option<SignalKind>,
        queue: mpsc::Sender<Arc<Payload>>,
    ) {
        self.queues.push((name, signal, queue));
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Queues `payload` everywhere, never waiting.
    pub fn send(&self, payload: Payload) {
        if payload.is_empty() {
            return;
        }
        let signal = payload.signal();
        let items = payload.items();
        let payload = Arc::new(payload);
        for (name, only, queue) in &self.queues {
            if only.is_some_and(|only| only != signal) {
                continue;
            }
            self.stats.enqueued(signal, items);
            match queue.try_send(payload.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.stats.dequeued(signal, items);
                    self.stats.dropped(signal, items);
                    let cause = format!("{name} {}", signal.as_str());
                    if self.full_logged.lock().is_ok_and(|mut l| l.first(&cause)) {
                        tracing::warn!(
                            "the {name} exporter's {} queue is full: dropping batches until it drains (counted)",
                            signal.as_str()
                        );
                    }
                }
                Err(TrySendError::Closed(_)) => {
                    self.stats.dequeued(signal, items);
                    self.stats.dropped(signal, items);
                }
            }
        }
    }
}
