//! Header blocks into netsonde's HPACK decoder and, side by side, into loona-hpack (a decoder
//! nobody here wrote): neither may panic, and where both decode a block the fields must be the
//! same, in the same order, none left out.
//!
//! Input layout: a sequence of records `[len, bytes...]`, each one header block of one
//! direction, decoded in order against the same dynamic table.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netsonde::protocols::http2::hpack::{HeaderDecoder, HpackLimits};

fuzz_target!(|input: &[u8]| {
    let mut ours = HeaderDecoder::new(HpackLimits {
        max_table_size: 4096,
        max_list_size: 1 << 20,
    });
    let mut theirs = loona_hpack::Decoder::new();
    let mut rest = input;
    while let [len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (block, next) = tail.split_at(n);
        rest = next;
        let mut fields = Vec::new();
        let mine = ours.decode(block, &mut fields);
        let reference = theirs.decode(block);
        let (Ok(()), Ok(reference)) = (mine, reference) else {
            // One of them refused the block: their tables may differ from here on.
            return;
        };
        // netsonde keeps text (invalid UTF-8 replaced), whose table sizes then differ from
        // the bytes': compare only what is text.
        let Ok(reference) = reference
            .into_iter()
            .map(|(n, v)| Ok((String::from_utf8(n)?, String::from_utf8(v)?)))
            .collect::<Result<Vec<_>, std::string::FromUtf8Error>>()
        else {
            return;
        };
        assert_eq!(ours.take_unknown(), 0, "a field left out with the whole history known");
        assert_eq!(fields, reference);
    }
});
