//! HPACK for a connection joined mid-stream: decodes what can be known, marks the rest unknown,
//! and is never wrong.
//!
//! Joining an HTTP/2 connection late means missing the header blocks that filled each
//! encoder's dynamic table, so a field that refers to an old table entry cannot be decoded.
//! What can be: the static table (RFC 7541 Appendix A: `:method GET`, `:status 200`, common
//! names), every literal, and every entry inserted *after* joining. Entries are addressed by
//! recency (index 62 is the newest), so the entries this decoder saw inserted are exactly the
//! newest ones, whatever older ones the table held; an index beyond them is unknown. Evictions
//! only ever remove the oldest entries, which the encoder then no longer refers to, so keeping
//! more than the real table holds can never map an index to the wrong entry.
//!
//! The same decoder serves a direction seen from its first block: then every entry it is asked
//! for was seen inserted (one evicted past netsonde's table limit is unknown, never wrong).
//!
//! Written here because the HPACK crate netsonde used (loona-hpack) decodes with a complete
//! table only, and spent most of netsonde's CPU rebuilding its Huffman table for every string.

use std::collections::VecDeque;

use super::huffman;

/// What stands for a request's method or path, or a response's status, that a joined
/// connection's header block did not let netsonde know (the route becomes `{unknown}`).
pub const UNKNOWN: &str = "{unknown}";

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Why a block could not be read at all (its framing, not its table, is wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartialError {
    #[error("hpack: truncated or malformed block")]
    Malformed,
    #[error("hpack: bad Huffman string ({0})")]
    Huffman(#[source] huffman::HuffmanError),
}

/// A dynamic-table entry seen inserted; `None` parts were themselves unknown.
#[derive(Debug, Clone)]
struct Entry {
    name: Option<String>,
    value: String,
}

pub struct PartialDecoder {
    /// Entries inserted since joining, newest first.
    seen: VecDeque<Entry>,
    /// Bytes of the entries kept (RFC 7541 §4.1 sizes), bounded by `max_table_size`.
    seen_size: usize,
    /// The table size the encoder last set (at most `limit`), and netsonde's own limit.
    max_table_size: usize,
    limit: usize,
}

impl PartialDecoder {
    pub fn new(max_table_size: usize) -> Self {
        PartialDecoder {
            seen: VecDeque::new(),
            seen_size: 0,
            max_table_size,
            limit: max_table_size,
        }
    }

    /// Decodes one header block into `out`: every field whose name and value are known. A
    /// field behind an unknown table entry is left out (an indexed field's name is unknown with
    /// it). Returns how many fields were left out.
    pub fn decode(
        &mut self,
        mut block: &[u8],
        out: &mut Vec<(String, String)>,
    ) -> Result<u64, PartialError> {
        let mut unknown = 0;
        while let Some(&first) = block.first() {
            if first & 0x80 != 0 {
                // Indexed field.
                let (index, rest) = integer(block, 7)?;
                block = rest;
                match self.lookup(index) {
                    Some((Some(name), value)) => out.push((name, value)),
                    _ => unknown += 1,
                }
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update.
                let (size, rest) = integer(block, 5)?;
                block = rest;
                self.resize(size as usize);
            } else {
                // Literal: with incremental indexing (01), without (0000) or never (0001).
                let indexing = first & 0xc0 == 0x40;
                let prefix = if indexing { 6 } else { 4 };
                let (index, rest) = integer(block, prefix)?;
                block = rest;
                let name = if index == 0 {
                    let (name, rest) = self.string(block)?;
                    block = rest;
                    Some(name)
                } else {
                    match self.lookup(index) {
                        Some((name, _)) => name,
                        None => None,
                    }
                };
                let (value, rest) = self.string(block)?;
                block = rest;
                if indexing {
                    self.insert(name.clone(), value.clone());
                }
                match name {
                    Some(name) => out.push((name, value)),
                    None => unknown += 1,
                }
            }
        }
        Ok(unknown)
    }

    /// (name, value) of an index: `None` for an index beyond what is known; a `None` name was
    /// unknown when the entry was inserted (a literal naming an unknown entry).
    fn lookup(&self, index: u64) -> Option<(Option<String>, String)> {
        match index {
            0 => None,
            1..=61 => {
                let (n, v) = STATIC_TABLE[index as usize - 1];
                Some((Some(n.into()), v.into()))
            }
            _ => {
                let e = self.seen.get((index - 62) as usize)?;
                Some((e.name.clone(), e.value.clone()))
            }
        }
    }

    fn insert(&mut self, name: Option<String>, value: String) {
        let size = name.as_ref().map_or(0, String::len) + value.len() + 32;
        self.seen.push_front(Entry { name, value });
        self.seen_size += size;
        self.evict();
    }

    fn resize(&mut self, size: usize) {
        // Never more than the limit it was built with: a peer cannot grow netsonde's memory.
        self.max_table_size = size.min(self.limit);
        self.evict();
    }

    /// Drops the oldest entries kept beyond the table size: the encoder dropped them too (or
    /// earlier ones), and forgetting one only makes a later reference unknown.
    fn evict(&mut self) {
        while self.seen_size > self.max_table_size {
            let Some(e) = self.seen.pop_back() else { break };
            self.seen_size -= e.name.as_ref().map_or(0, String::len) + e.value.len() + 32;
        }
    }

    /// A string literal (RFC 7541 §5.2).
    fn string<'a>(&self, block: &'a [u8]) -> Result<(String, &'a [u8]), PartialError> {
        let huffman = block.first().ok_or(PartialError::Malformed)? & 0x80 != 0;
        let (len, rest) = integer(block, 7)?;
        let len = usize::try_from(len).map_err(|_| PartialError::Malformed)?;
        if rest.len() < len {
            return Err(PartialError::Malformed);
        }
        let (raw, rest) = rest.split_at(len);
        if !huffman {
            return Ok((String::from_utf8_lossy(raw).into_owned(), rest));
        }
        let mut bytes = Vec::with_capacity(raw.len() * 8 / 5);
        huffman::decode(raw, &mut bytes).map_err(PartialError::Huffman)?;
        let text = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Ok((text, rest))
    }
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), bounded to 2^32.
fn integer(block: &[u8], n: u32) -> Result<(u64, &[u8]), PartialError> {
    let (&first, mut rest) = block.split_first().ok_or(PartialError::Malformed)?;
    let max = (1u64 << n) - 1;
    let mut value = u64::from(first) & max;
    if value < max {
        return Ok((value, rest));
    }
    let mut shift = 0;
    loop {
        let (&b, more) = rest.split_first().ok_or(PartialError::Malformed)?;
        rest = more;
        value += u64::from(b & 0x7f) << shift;
        if value > u64::from(u32::MAX) {
            return Err(PartialError::Malformed);
        }
        if b & 0x80 == 0 {
            return Ok((value, rest));
        }
        shift += 7;
        // Past 2^32 whatever comes next (zero continuation bytes would otherwise go on
        // shifting until the shift itself overflows).
        if shift > 28 {
            return Err(PartialError::Malformed);
        }
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

    /// RFC 7541 C.4 (requests with Huffman), joined at the second request: what the first one
    /// inserted (`:authority www.example.com`, index 62 then) is unknown; what the second one
    /// inserts is learnt, and the third request's references to it decode.
    #[test]
    fn joining_rfc7541_c4_at_the_second_request() {
        let second = unhex("828684be5886a8eb10649cbf");
        let third = unhex("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf");
        let mut d = PartialDecoder::new(4096);
        let mut out = Vec::new();
        let unknown = d.decode(&second, &mut out).unwrap();
        // `be` (index 62: :authority from the first request) is behind the join.
        assert_eq!(unknown, 1);
        assert_eq!(
            out,
            [
                (":method".into(), "GET".into()),
                (":scheme".into(), "http".into()),
                (":path".into(), "/".into()),
                ("cache-control".into(), "no-cache".into()),
            ]
        );
        out.clear();
        let unknown = d.decode(&third, &mut out).unwrap();
        // `bf` is now index 63: the first request's :authority, still unknown; the custom
        // header is a literal with a literal name.
        assert_eq!(unknown, 1);
        assert_eq!(
            out,
            [
                (":method".into(), "GET".into()),
                (":scheme".into(), "https".into()),
                (":path".into(), "/index.html".into()),
                ("custom-key".into(), "custom-value".into()),
            ]
        );
    }

    #[test]
    fn bad_blocks_are_errors_not_panics() {
        let mut d = PartialDecoder::new(4096);
        let mut out = Vec::new();
        assert_eq!(d.decode(&[0x40], &mut out), Err(PartialError::Malformed));
        assert_eq!(
            d.decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], &mut out),
            Err(PartialError::Malformed)
        );
        // Continuation bytes that add nothing, more than any 32-bit value needs (found by the
        // fuzzer: the shift itself overflowed).
        let mut zeros = vec![0xff];
        zeros.extend([0x80; 12]);
        zeros.push(0);
        assert_eq!(d.decode(&zeros, &mut out), Err(PartialError::Malformed));
        assert_eq!(
            d.decode(&[0x00, 0x05, b'a'], &mut out),
            Err(PartialError::Malformed)
        );
        assert!(matches!(
            d.decode(&[0x00, 0x81, 0xff, 0x00], &mut out),
            Err(PartialError::Huffman(_))
        ));
    }
}
