//! Records from the ring buffer, kept as the kernel wrote them, one after the other in one
//! buffer that batch after batch reuses, each from an 8-byte boundary as in the ring. The reader
//! copies each record once and allocates nothing per event; the stages after it decode the
//! records in place, headers included. (An owned payload per
//! event was an allocation in the reader's thread freed in the tracker's: the allocator's
//! per-thread caches then refilled and flushed through its shared arenas, about 10 % of the
//! agent's samples under load.)

use super::{DecodeError, Event, append_aligned, check, decode, is_lifecycle_kind};

/// Records after which a batch is full.
const FULL_RECORDS: usize = 4096;
/// Record bytes after which a batch is full. Bounded so that batches keep the same room from
/// round to round, and the batches in flight (at most the agent's queue of them) stay small.
const FULL_BYTES: usize = 256 << 10;
/// Room for a full batch's bytes and one more record (a 16 KiB payload and its header): taken
/// with the first record, so a batch never grows after it. In 8-byte words.
const ROOM_WORDS: usize = (FULL_BYTES + (20 << 10)) / 8;

/// Records that decode, in the order they came.
#[derive(Debug, Default)]
pub struct Batch {
    /// The records, each from an 8-byte boundary (as in the ring), so that a data record's
    /// header is read in place: words, not bytes, for that alignment.
    words: Vec<u64>,
    /// Where each record starts in `words` and how long it is, in bytes.
    records: Vec<(u32, u32)>,
    /// How many of the records the process-lifecycle stage wants.
    lifecycle: usize,
}

impl Batch {
    /// Adds `record` if it decodes; otherwise leaves it out and says why.
    pub fn push(&mut self, record: &[u8]) -> Result<(), DecodeError> {
        if self.records.capacity() == 0 {
            self.words.reserve_exact(ROOM_WORDS);
            self.records.reserve_exact(FULL_RECORDS);
        }
        if is_lifecycle_kind(check(record)?) {
            self.lifecycle += 1;
        }
        let start = append_aligned(&mut self.words, record);
        // Both fit in 32 bits: a batch is full at 256 KiB, and a record is at most 16 KiB
        // and its header.
        self.records.push((start as u32, record.len() as u32));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whether the batch should go on rather than take more records.
    pub fn is_full(&self) -> bool {
        self.records.len() >= FULL_RECORDS || self.words.len() * 8 >= FULL_BYTES
    }

    /// Whether any record is one the process-lifecycle stage wants.
    pub fn has_lifecycle(&self) -> bool {
        self.lifecycle > 0
    }

    /// The records' events, in order, their headers and payloads borrowed from the batch.
    pub fn events(&self) -> impl ExactSizeIterator<Item = Event<'_>> + '_ {
        self.records.iter().map(|&(start, len)| {
            let words = &self.words[start as usize..];
            // SAFETY: `len` bytes from `start` lie within `words` (pushed so) and are
            // initialised; a u64 slice is valid as bytes.
            let record =
                unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), len as usize) };
            decode(record).expect("records are checked when pushed, and kept aligned")
        })
    }

    /// Empties the batch for another round, keeping its room (one filled past its room by
    /// records pushed after it was full gives the excess back).
    pub fn recycle(&mut self) {
        self.words.clear();
        self.records.clear();
        self.lifecycle = 0;
        self.words.shrink_to(ROOM_WORDS);
        self.records.shrink_to(FULL_RECORDS);
    }
}

#[cfg(test)]
mod tests {
    use netsonde_common::{
        ConnCloseEvent, DataEvent, KernelNoteEvent, ProcessEvent, ProcessExitEvent, kind,
    };

    use super::*;
    use crate::events::encode;

    fn data(captured: &[u8]) -> encode::Record {
        let header = DataEvent {
            kind: kind::DATA,
            captured: captured.len() as u32,
            fd: 3,
            ..Default::default()
        };
        encode::data_record(&header, captured)
    }

    #[test]
    fn keeps_the_records_that_decode_in_order_and_lends_their_payloads() {
        let close = encode::bytes_of(&ConnCloseEvent {
            kind: kind::CONN_CLOSE,
            fd: 3,
            ..Default::default()
        });
        let fork = encode::bytes_of(&ProcessEvent {
            kind: kind::PROCESS_FORK,
            tgid: 7,
            ..Default::default()
        });
        let exit = encode::bytes_of(&ProcessExitEvent {
            kind: kind::PROCESS_EXIT,
            tgid: 7,
            ..Default::default()
        });
        let records = [data(b"GET / HTTP/1.1\r\n"), data(b""), close, fork, exit];
        let mut batch = Batch::default();
        assert!(!batch.has_lifecycle());
        for (i, record) in records.iter().enumerate() {
            assert_eq!(batch.push(record), Ok(()), "record {i}");
            // A record cut short or of a kind nobody knows is left out, and said why.
            assert!(batch.push(&record[..3]).is_err());
        }
        assert_eq!(
            batch.push(&[9, 0, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::UnknownKind { kind: 9 })
        );
        assert_eq!(batch.len(), 5);
        assert!(batch.has_lifecycle());
        let events: Vec<Event<'_>> = batch.events().collect();
        let decoded: Vec<Event<'_>> = records.iter().map(|r| decode(r).unwrap()).collect();
        assert_eq!(events, decoded);
        match events[0] {
            Event::Data { payload, .. } => assert_eq!(payload, b"GET / HTTP/1.1\r\n"),
            other => panic!("{other:?}"),
        }
        assert_eq!(batch.events().len(), 5);
        // The batch's own count of lifecycle records agrees with the events', kind by kind.
        for record in &records {
            let mut one = Batch::default();
            one.push(record).unwrap();
            assert_eq!(
                one.has_lifecycle(),
                decode(record).unwrap().lifecycle().is_some()
            );
        }
    }

    #[test]
    fn a_batch_is_full_by_records_or_bytes_and_keeps_its_room_when_recycled() {
        let mut batch = Batch::default();
        let small = encode::bytes_of(&KernelNoteEvent {
            kind: kind::KERNEL_NOTE,
            ..Default::default()
        });
        while !batch.is_full() {
            batch.push(&small).unwrap();
        }
        assert_eq!(batch.len(), FULL_RECORDS);
        batch.recycle();
        let big = data(&[b'x'; 16384]);
        while !batch.is_full() {
            batch.push(&big).unwrap();
        }
        // Full by bytes, within the room taken with the first record: it never grew.
        assert!(batch.len() < FULL_RECORDS);
        assert!(batch.words.len() * 8 >= FULL_BYTES);
        assert_eq!(batch.words.capacity(), ROOM_WORDS);
        // Pushed past full anyway (a caller that ignores it), then recycled: the excess goes.
        for _ in 0..100 {
            batch.push(&big).unwrap();
        }
        batch
            .push(&encode::bytes_of(&ProcessEvent {
                kind: kind::PROCESS_EXEC,
                ..Default::default()
            }))
            .unwrap();
        assert!(batch.words.capacity() > 2 * ROOM_WORDS);
        batch.recycle();
        assert!(batch.is_empty() && !batch.has_lifecycle() && !batch.is_full());
        assert_eq!(batch.events().count(), 0);
        assert_eq!(batch.words.capacity(), ROOM_WORDS);
        batch.push(&data(b"again")).unwrap();
        assert!(matches!(
            batch.events().next(),
            Some(Event::Data {
                payload: b"again",
                ..
            })
        ));
    }
}
