//! Raw ring-buffer records (what the eBPF programs write, here arbitrary bytes) into the event
//! decoder: it must never panic, whatever the length or the kind byte says.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|record: &[u8]| {
    let _ = netsonde::events::decode(record);
});
