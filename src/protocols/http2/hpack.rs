//! HPACK header decoding (RFC 7541) with bounded memory.
//!
//! One decoder per connection direction: the dynamic table is built by what one side sends.
//! netsonde keeps at most `max_table_size` bytes of it, whatever the peers agree on: a peer
//! cannot make netsonde keep an unbounded table, and an entry evicted early is only unknown.

use super::partial::{PartialDecoder, PartialError};

/// Limits for one decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HpackLimits {
    /// Largest dynamic table netsonde keeps, whatever the peers agree on.
    pub max_table_size: usize,
    /// Largest decoded header list (names + values + 32 per field, as RFC 9113 counts).
    pub max_list_size: usize,
}

impl Default for HpackLimits {
    fn default() -> Self {
        HpackLimits {
            max_table_size: 64 * 1024,
            max_list_size: 64 * 1024,
        }
    }
}

/// Why a header block could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    /// The block is malformed: the table may have been changed in ways not known, so the
    /// direction's table is no longer trusted.
    #[error(transparent)]
    Decode(#[from] PartialError),
    /// The header list is over the limit: only this block is lost (the table was updated).
    #[error("header list larger than {0} bytes")]
    TooLarge(usize),
}

/// One direction's header blocks, decoded against the dynamic table its encoder built. A
/// field behind an entry this decoder never saw inserted (a direction joined late, or whose
/// table was lost with bytes) is left out and counted, never guessed (see `partial`).
pub struct HeaderDecoder {
    table: PartialDecoder,
    limits: HpackLimits,
    /// Fields left out, since the last `take_unknown`.
    unknown: u64,
}

impl HeaderDecoder {
    /// For a direction whose table starts now: empty, as at a connection's start (or after
    /// bytes were lost, when the entries inserted before are unknown).
    pub fn new(limits: HpackLimits) -> Self {
        HeaderDecoder {
            table: PartialDecoder::new(limits.max_table_size),
            limits,
            unknown: 0,
        }
    }

    /// Fields decoded as unknown since the last call.
    pub fn take_unknown(&mut self) -> u64 {
        std::mem::take(&mut self.unknown)
    }

    /// Decodes one complete header block (HEADERS + CONTINUATION fragments joined) into `out`.
    pub fn decode(
        &mut self,
        block: &[u8],
        out: &mut Vec<(String, String)>,
    ) -> Result<(), HpackError> {
        let from = out.len();
        self.unknown += self.table.decode(block, out)?;
        let size: usize = out[from..]
            .iter()
            .map(|(n, v)| n.len() + v.len() + 32)
            .sum();
        if size > self.limits.max_list_size {
            out.truncate(from);
            return Err(HpackError::TooLarge(self.limits.max_list_size));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn rfc7541_c4_requests_with_huffman_share_one_table() {
        let mut d = HeaderDecoder::new(HpackLimits::default());
        let mut out = Vec::new();
        d.decode(&unhex("828684418cf1e3c2e5f23a6ba0ab90f4ff"), &mut out)
            .unwrap();
        assert_eq!(out[3], (":authority".into(), "www.example.com".into()));
        out.clear();
        // The second request refers to the first's dynamic entry.
        d.decode(&unhex("828684be5886a8eb10649cbf"), &mut out)
            .unwrap();
        assert_eq!(out[3], (":authority".into(), "www.example.com".into()));
        assert_eq!(out[4], ("cache-control".into(), "no-cache".into()));
    }

    #[test]
    fn a_reference_to_an_entry_never_seen_is_left_out() {
        let mut d = HeaderDecoder::new(HpackLimits::default());
        let mut out = Vec::new();
        // Index 62: the first dynamic entry, which a decoder that joined late never saw.
        d.decode(&[0x82, 0xbe], &mut out).unwrap();
        assert_eq!(out, [(":method".into(), "GET".into())]);
        assert_eq!(d.take_unknown(), 1);
        // A malformed block is an error (the table may have changed unseen).
        assert!(matches!(
            d.decode(&[0x40], &mut out),
            Err(HpackError::Decode(_))
        ));
    }

    #[test]
    fn sizes_are_bounded() {
        // A size update to 1 MiB: netsonde keeps its own limit, whatever the peer says.
        let mut d = HeaderDecoder::new(HpackLimits {
            max_table_size: 100,
            max_list_size: 1000,
        });
        let mut out = Vec::new();
        let mut block = vec![0x3f, 0xe1, 0xff, 0x3f];
        // Two literals with incremental indexing, 70 bytes each with overhead: the first is
        // evicted by the second, so referring to it (index 63) is unknown, not wrong.
        for value in [
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        ] {
            block.extend([0x40, 0x01, b'x', value.len() as u8]);
            block.extend(value.as_bytes());
        }
        block.extend([0xbe, 0xbf]);
        d.decode(&block, &mut out).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].1, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
        assert_eq!(d.take_unknown(), 1);
        // A literal header of 200 bytes: over the list size.
        let mut d = HeaderDecoder::new(HpackLimits {
            max_table_size: 8192,
            max_list_size: 100,
        });
        let mut block = vec![0x00, 0x01, b'x', 0x7f, 200 - 127];
        block.extend(std::iter::repeat_n(b'v', 200));
        out.clear();
        assert_eq!(d.decode(&block, &mut out), Err(HpackError::TooLarge(100)));
        assert!(out.is_empty());
    }
}
