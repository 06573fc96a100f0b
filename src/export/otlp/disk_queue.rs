//! The OTLP exporter's queue on disk: one file per signal, holding encoded batches in order
//! until the collector takes them. The file format and its atomic add/remove are the
//! `queue-file` crate's (a port of Square's Tape `QueueFile`); this module adds what the
//! exporter needs around it: the item count of each batch, one byte budget shared by the
//! signals, recovery from a damaged file, and giving the disk back once the queue drains.
//!
//! Batches are stored gzip-compressed (fastest level): spans and logs repeat their attribute
//! names and resource in every item, so a batch shrinks several times over, and an outage of a
//! given length needs that much less disk (benchmarks/RESULTS.md).
//!
//! Writes go to the page cache without `fsync` (as the Collector's file storage does by
//! default): what is queued survives an agent restart or crash, not a power cut.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use std::io::{Read as _, Write as _};

use bytes::Bytes;
use flate2::{Compression, read::GzDecoder, write::GzEncoder};
use queue_file::QueueFile;

use crate::{config::export::SignalKind, export::Encoded};

#[derive(Debug, thiserror::Error)]
pub enum DiskQueueError {
    #[error("cannot create the disk queue directory {path}")]
    Directory {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the disk queue {path}")]
    Open {
        path: String,
        #[source]
        source: queue_file::Error,
    },
    #[error("disk queue {path}")]
    Io {
        path: String,
        #[source]
        source: queue_file::Error,
    },
}

/// Bytes the signals' queues may hold together.
#[derive(Debug)]
pub struct DiskBudget {
    max_bytes: u64,
    used: AtomicU64,
}

impl DiskBudget {
    pub fn new(max_bytes: u64) -> Arc<Self> {
        Arc::new(DiskBudget {
            max_bytes,
            used: AtomicU64::new(0),
        })
    }

    /// Takes `bytes` from the budget if they fit.
    fn take(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Relaxed, Relaxed, |used| {
                (used + bytes <= self.max_bytes).then_some(used + bytes)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Relaxed, Relaxed, |used| Some(used.saturating_sub(bytes)));
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }
}

/// What [`DiskQueue::push`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Stored,
    /// The budget is spent: the batch was not stored.
    Full,
}

/// Each element: the batch's item count (u64, little-endian), its body's format (one byte),
/// then the body.
const ITEMS_LEN: usize = 8;
const HEADER_LEN: usize = ITEMS_LEN + 1;
/// Body formats.
const RAW: u8 = 0;
const GZIP: u8 = 1;

/// One signal's queue file.
pub struct DiskQueue {
    file: QueueFile,
    path: PathBuf,
    signal: SignalKind,
    budget: Arc<DiskBudget>,
    /// Bytes of each element still held are counted against the budget.
    held: u64,
    /// Items in the queue (spans, points or log records).
    items: u64,
}

impl DiskQueue {
    /// Opens (or creates) `<dir>/<signal>.queue`. What an earlier run left there is kept and
    /// sent first; a file that cannot be read as a queue is moved aside (`.damaged`) and a new
    /// one started, so a damaged file never stops the agent.
    pub fn open(
        dir: &Path,
        signal: SignalKind,
        budget: Arc<DiskBudget>,
    ) -> Result<Self, DiskQueueError> {
        std::fs::create_dir_all(dir).map_err(|source| DiskQueueError::Directory {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join(format!("{}.queue", signal.as_str()));
        let mut file = match QueueFile::open(&path) {
            Ok(file) => file,
            Err(error) => {
                let aside = path.with_extension("queue.damaged");
                tracing::warn!(
                    "the disk queue {} cannot be read ({error}): moved to {} and started anew",
                    path.display(),
                    aside.display()
                );
                let _ = std::fs::rename(&path, &aside);
                QueueFile::open(&path).map_err(|source| DiskQueueError::Open {
                    path: path.display().to_string(),
                    source,
                })?
            }
        };
        file.set_sync_writes(false);
        let mut items = 0;
        for element in file.iter() {
            items += element_items(&element);
        }
        let held = file.used_bytes();
        // What an earlier run left is held even beyond the budget: it is already on disk.
        budget.used.fetch_add(held, Relaxed);
        Ok(DiskQueue {
            file,
            path,
            signal,
            budget,
            held,
            items,
        })
    }

    /// Batches in the queue.
    pub fn batches(&self) -> usize {
        self.file.size()
    }

    /// Items in the queue.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Appends a batch at the tail, if the budget allows.
    pub fn push(&mut self, batch: &Encoded) -> Result<Pushed, DiskQueueError> {
        let mut element = Vec::with_capacity(HEADER_LEN + batch.body.len() / 4);
        element.extend_from_slice(&batch.items.to_le_bytes());
        element.push(GZIP);
        let mut gz = GzEncoder::new(element, Compression::fast());
        // Writing into a Vec cannot fail.
        let _ = gz.write_all(&batch.body);
        let element = gz.finish().unwrap_or_default();
        // The file's own header per element (4 bytes) counts too.
        let cost = (element.len() + 4) as u64;
        if !self.budget.take(cost) {
            return Ok(Pushed::Full);
        }
        if let Err(source) = self.file.add(&element) {
            self.budget.give_back(cost);
            return Err(self.io(source));
        }
        self.held += cost;
        self.items += batch.items;
        Ok(Pushed::Stored)
    }

    /// The batch at the head, left in place. A body that does not decompress is sent as it
    /// is stored (the collector rejects it, counted): it is never silently skipped.
    pub fn head(&mut self) -> Result<Option<Encoded>, DiskQueueError> {
        let element = self.file.peek().map_err(|source| self.io(source))?;
        Ok(element.map(|element| {
            let stored = element.get(HEADER_LEN..).unwrap_or_default();
            let body = match element.get(ITEMS_LEN) {
                Some(&GZIP) => {
                    let mut body = Vec::with_capacity(stored.len() * 4);
                    match GzDecoder::new(stored).read_to_end(&mut body) {
                        Ok(_) => Bytes::from(body),
                        Err(_) => Bytes::copy_from_slice(stored),
                    }
                }
                Some(&RAW) | Some(_) | None => Bytes::copy_from_slice(stored),
            };
            Encoded {
                signal: self.signal,
                items: element_items(&element),
                body,
            }
        }))
    }

    /// Removes the head batch; when that empties the queue the file shrinks back.
    pub fn pop(&mut self) -> Result<(), DiskQueueError> {
        let Some(head) = self.file.peek().map_err(|source| self.io(source))? else {
            return Ok(());
        };
        self.file.remove().map_err(|source| self.io(source))?;
        let cost = (head.len() + 4) as u64;
        self.items = self.items.saturating_sub(element_items(&head));
        self.held = self.held.saturating_sub(cost);
        self.budget.give_back(cost);
        if self.file.is_empty() {
            self.budget.give_back(self.held);
            self.held = 0;
            self.file.clear().map_err(|source| self.io(source))?;
        }
        Ok(())
    }

    /// The budget all signals share.
    pub fn max_bytes(&self) -> u64 {
        self.budget.max_bytes
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: queue_file::Error) -> DiskQueueError {
        DiskQueueError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }
}

/// The item count an element starts with (0 for an element too short to have one: it is
/// sent as it is and the collector judges it).
fn element_items(element: &[u8]) -> u64 {
    element
        .get(..ITEMS_LEN)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(items: u64, body: &[u8]) -> Encoded {
        Encoded {
            signal: SignalKind::Traces,
            items,
            body: Bytes::copy_from_slice(body),
        }
    }

    #[test]
    fn batches_come_back_in_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let budget = DiskBudget::new(1 << 20);
        let mut queue = DiskQueue::open(dir.path(), SignalKind::Traces, budget.clone()).unwrap();
        for i in 0..5u8 {
            assert_eq!(
                queue.push(&batch(u64::from(i) + 1, &[i; 100])).unwrap(),
                Pushed::Stored
            );
        }
        assert_eq!((queue.batches(), queue.items()), (5, 15));
        let head = queue.head().unwrap().unwrap();
        assert_eq!((head.items, &head.body[..]), (1, &[0u8; 100][..]));
        queue.pop().unwrap();
        drop(queue);
        // A new run finds the four left, counts them against its budget, and goes on.
        let budget = DiskBudget::new(1 << 20);
        let mut queue = DiskQueue::open(dir.path(), SignalKind::Traces, budget.clone()).unwrap();
        assert_eq!((queue.batches(), queue.items()), (4, 14));
        assert!(budget.used.load(Relaxed) > 0);
        for i in 1..5u8 {
            let head = queue.head().unwrap().unwrap();
            assert_eq!(
                (head.items, &head.body[..]),
                (u64::from(i) + 1, &[i; 100][..])
            );
            queue.pop().unwrap();
        }
        assert!(queue.head().unwrap().is_none());
        assert_eq!(queue.items(), 0);
        assert_eq!(budget.used.load(Relaxed), 0, "the budget is whole again");
    }

    #[test]
    fn the_budget_is_shared_and_refuses_what_does_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let budget = DiskBudget::new(1100);
        let mut traces = DiskQueue::open(dir.path(), SignalKind::Traces, budget.clone()).unwrap();
        let mut logs = DiskQueue::open(dir.path(), SignalKind::Logs, budget.clone()).unwrap();
        // Bytes that do not compress: their stored size is about their size.
        let noise = |n: usize, seed: u64| {
            let mut x = seed;
            (0..n)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (x >> 56) as u8
                })
                .collect::<Vec<u8>>()
        };
        assert_eq!(
            traces.push(&batch(1, &noise(600, 1))).unwrap(),
            Pushed::Stored
        );
        assert_eq!(logs.push(&batch(1, &noise(600, 2))).unwrap(), Pushed::Full);
        assert_eq!(
            logs.push(&batch(1, &noise(300, 3))).unwrap(),
            Pushed::Stored
        );
        traces.pop().unwrap();
        assert_eq!(
            logs.push(&batch(1, &noise(600, 4))).unwrap(),
            Pushed::Stored
        );
        assert_eq!(logs.batches(), 2);
        // What compresses costs what it compresses to.
        assert_eq!(traces.push(&batch(1, &[0; 5000])).unwrap(), Pushed::Stored);
    }

    #[test]
    fn a_damaged_file_is_moved_aside_and_a_new_queue_started() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("logs.queue"), b"not a queue file at all").unwrap();
        let mut queue =
            DiskQueue::open(dir.path(), SignalKind::Logs, DiskBudget::new(1 << 20)).unwrap();
        assert_eq!(queue.batches(), 0);
        assert_eq!(queue.push(&batch(2, b"x")).unwrap(), Pushed::Stored);
        assert!(dir.path().join("logs.queue.damaged").exists());
    }

    #[test]
    fn a_drained_queue_gives_its_disk_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut queue =
            DiskQueue::open(dir.path(), SignalKind::Metrics, DiskBudget::new(64 << 20)).unwrap();
        for i in 0..64u32 {
            // Incompressible, so the file grows.
            let body: Vec<u8> = (0..16 << 10)
                .flat_map(|j: u32| (j.wrapping_mul(2_654_435_761) ^ i).to_le_bytes())
                .collect();
            queue.push(&batch(1, &body)).unwrap();
        }
        let file = queue.path().to_path_buf();
        let grown = std::fs::metadata(&file).unwrap().len();
        assert!(grown >= 2 << 20, "{grown}");
        while queue.head().unwrap().is_some() {
            queue.pop().unwrap();
        }
        let shrunk = std::fs::metadata(&file).unwrap().len();
        assert!(shrunk < 64 << 10, "{shrunk} bytes left after draining");
    }
}
