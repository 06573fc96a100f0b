//! Raw ring-buffer records (what the eBPF programs write, here arbitrary bytes) into the event
//! decoder, and through a batch as the reader keeps them: nothing may panic, whatever the
//! length or the kind byte says, and a record the batch takes decodes the same from it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netsonde::events::{Batch, decode};

fuzz_target!(|record: &[u8]| {
    let alone = decode(record);
    let mut batch = Batch::default();
    assert_eq!(batch.push(record).is_ok(), alone.is_ok());
    assert_eq!(batch.events().next().ok_or(()), alone.map_err(|_| ()));
});
