//! Raw ring-buffer records (what the eBPF programs write, here arbitrary bytes) into the event
//! decoder, and through a batch as the reader keeps them: nothing may panic, whatever the
//! length, the kind byte or the record's address says, and a record the batch takes decodes the
//! same from it as from an aligned copy.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netsonde::events::{Batch, decode, encode::Record};

fuzz_target!(|bytes: &[u8]| {
    // Wherever the input happens to lie: an error or an event, never a panic.
    let _ = decode(bytes);
    // On an 8-byte boundary, as the ring and a batch keep records.
    let record = Record::new(bytes);
    let alone = decode(&record);
    let mut batch = Batch::default();
    assert_eq!(batch.push(&record).is_ok(), alone.is_ok());
    assert_eq!(batch.events().next().ok_or(()), alone.map_err(|_| ()));
});
