//! Exporters: the console (lines), OTLP to a collector (gRPC or HTTP/protobuf), and OTLP JSON
//! lines to a file. [`Fanout`] hands each OTLP payload to every OTLP-speaking exporter's queue
//! without ever waiting: a full queue drops the batch and counts it.
//!
//! The OTLP queues hold payloads already encoded to protobuf ([`Encoded`]): a span waiting
//! there costs its wire size (a few hundred bytes), not its decoded form (several KiB of small
//! strings), and a retry resends the same bytes without encoding or copying anything again.

pub mod console;
pub mod file;
pub mod otlp;
pub mod status;

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use bytes::Bytes;
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
    /// Of those, items held in the disk queue (kept, not lost, at exit).
    on_disk: [AtomicU64; 3],
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

    pub(crate) fn enqueued(&self, signal: SignalKind, items: u64) {
        self.queued[index(signal)].fetch_add(1, Relaxed);
        self.pending[index(signal)].fetch_add(items, Relaxed);
    }

    pub fn dequeued(&self, signal: SignalKind, items: u64) {
        self.queued[index(signal)].fetch_sub(1, Relaxed);
        self.pending[index(signal)].fetch_sub(items, Relaxed);
    }

    /// Batches an earlier run left in the disk queue, waiting again.
    pub fn resumed(&self, signal: SignalKind, batches: u64, items: u64) {
        self.queued[index(signal)].fetch_add(batches, Relaxed);
        self.pending[index(signal)].fetch_add(items, Relaxed);
        self.on_disk[index(signal)].fetch_add(items, Relaxed);
    }

    pub fn stored_on_disk(&self, signal: SignalKind, items: u64) {
        self.on_disk[index(signal)].fetch_add(items, Relaxed);
    }

    pub fn removed_from_disk(&self, signal: SignalKind, items: u64) {
        self.on_disk[index(signal)].fetch_sub(items, Relaxed);
    }

    /// At exit, what never left is dropped, except what the disk queue keeps for the next
    /// run. Returns the items kept on disk per signal.
    pub fn abandon_pending(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| {
            let pending = self.pending[i].swap(0, Relaxed);
            let kept = self.on_disk[i].load(Relaxed);
            self.dropped[i].fetch_add(pending.saturating_sub(kept), Relaxed);
            self.queued[i].store(0, Relaxed);
            kept
        })
    }

    pub fn totals(&self) -> ExportTotals {
        let read = |a: &[AtomicU64; 3]| [0, 1, 2].map(|i| a[i].load(Relaxed));
        ExportTotals {
            sent: read(&self.sent),
            dropped: read(&self.dropped),
            failures: read(&self.failures),
            queued: read(&self.queued),
            on_disk: read(&self.on_disk),
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

/// One OTLP request, encoded once.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub signal: SignalKind,
    /// Spans, data points or log records in it.
    pub items: u64,
    /// The protobuf `Export*ServiceRequest`.
    pub body: Bytes,
}

impl Encoded {
    pub fn new(payload: &Payload) -> Self {
        Encoded {
            signal: payload.signal(),
            items: payload.items(),
            body: match payload {
                Payload::Encoded { body, .. } => body.clone(),
                typed => Bytes::from(typed.encode()),
            },
        }
    }
}

/// An exporter's queue.
#[derive(Clone)]
enum Queue {
    /// An OTLP exporter of one signal: encoded requests.
    Otlp(SignalKind, mpsc::Sender<Encoded>),
    /// The file exporter: every signal, as built (it writes JSON).
    File(mpsc::Sender<Arc<Payload>>),
}

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

    /// Adds the OTLP exporter of one signal.
    pub fn add_otlp(&mut self, signal: SignalKind, queue: mpsc::Sender<Encoded>) {
        self.queues.push(Queue::Otlp(signal, queue));
    }

    /// Adds the file exporter (all signals).
    pub fn add_file(&mut self, queue: mpsc::Sender<Arc<Payload>>) {
        self.queues.push(Queue::File(queue));
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
        let wanted = |q: &Queue| !matches!(q, Queue::Otlp(only, _) if *only != signal);
        // Encode once for every OTLP queue; the file exporter takes the payload itself.
        let encoded = self
            .queues
            .iter()
            .any(|q| wanted(q) && matches!(q, Queue::Otlp(..)))
            .then(|| Encoded::new(&payload));
        let payload = Arc::new(payload);
        for queue in self.queues.iter().filter(|q| wanted(q)) {
            self.stats.enqueued(signal, items);
            let (name, result) = match (queue, &encoded) {
                (Queue::Otlp(_, tx), Some(e)) => {
                    ("otlp", tx.try_send(e.clone()).map_err(|e| full(&e)))
                }
                (Queue::File(tx), _) => {
                    ("file", tx.try_send(payload.clone()).map_err(|e| full(&e)))
                }
                (Queue::Otlp(..), None) => unreachable!("encoded when an OTLP queue wants it"),
            };
            if let Err(is_full) = result {
                self.stats.dequeued(signal, items);
                self.stats.dropped(signal, items);
                let cause = format!("{name} {}", signal.as_str());
                if is_full && self.full_logged.lock().is_ok_and(|mut l| l.first(&cause)) {
                    tracing::warn!(
                        "the {name} exporter's {} queue is full: dropping batches until it drains (counted)",
                        signal.as_str()
                    );
                }
            }
        }
    }
}

/// Whether a failed send found the queue full (rather than closed).
fn full<T>(e: &TrySendError<T>) -> bool {
    matches!(e, TrySendError::Full(_))
}
