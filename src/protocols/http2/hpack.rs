//! HPACK header decoding (RFC 7541) with bounded memory, on the loona-hpack decoder.
//!
//! One decoder per connection direction: the dynamic table is built by what one side sends.
//! Its size limit is what the *other* side allowed in SETTINGS_HEADER_TABLE_SIZE, capped by
//! netsonde, so a peer cannot make netsonde keep an unbounded table.

/// The table size every HTTP/2 endpoint starts with.
pub const DEFAULT_TABLE_SIZE: usize = 4096;

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

/// Why a header block could not be decoded. After any of these the decoder's table is no longer
/// known, so the direction stays undecodable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    #[error("hpack: {0}")]
    Decode(String),
    #[error("header list larger than {0} bytes")]
    TooLarge(usize),
    #[error("a peer asked for a {0}-byte header table, over netsonde's limit")]
    TableTooLarge(usize),
    #[error("an earlier header block failed to decode")]
    Broken,
}

pub struct HeaderDecoder {
    inner: loona_hpack::Decoder<'static>,
    /// For a direction joined mid-stream: decodes what can be known (see `partial`).
    partial: Option<Box<super::partial::PartialDecoder>>,
    limits: HpackLimits,
    broken: bool,
    /// Fields the partial decoder could not decode, since the last `take_unknown`.
    unknown: u64,
}

impl HeaderDecoder {
    pub fn new(limits: HpackLimits) -> Self {
        let mut inner = loona_hpack::Decoder::new();
        inner.set_max_allowed_table_size(DEFAULT_TABLE_SIZE.min(limits.max_table_size));
        HeaderDecoder {
            inner,
            partial: None,
            limits,
            broken: false,
            unknown: 0,
        }
    }

    /// For a direction whose earlier header blocks were never seen.
    pub fn joined(limits: HpackLimits) -> Self {
        HeaderDecoder {
            partial: Some(Box::new(super::partial::PartialDecoder::new(
                limits.max_table_size,
            ))),
            ..HeaderDecoder::new(limits)
        }
    }

    /// Fields decoded as unknown since the last call.
    pub fn take_unknown(&mut self) -> u64 {
        std::mem::take(&mut self.unknown)
    }

    /// The receiving side announced SETTINGS_HEADER_TABLE_SIZE = `size`: the encoder may now
    /// grow its table up to it (with a size update in a header block).
    pub fn allow_table_size(&mut self, size: usize) -> Result<(), HpackError> {
        if size > self.limits.max_table_size {
            self.broken = true;
            return Err(HpackError::TableTooLarge(size));
        }
        self.inner.set_max_allowed_table_size(size);
        Ok(())
    }

    /// Decodes one complete header block (HEADERS + CONTINUATION fragments joined) into `out`.
    pub fn decode(
        &mut self,
        block: &[u8],
        out: &mut Vec<(String, String)>,
    ) -> Result<(), HpackError> {
        if self.broken {
            return Err(HpackError::Broken);
        }
        if let Some(partial) = &mut self.partial {
            return match partial.decode(block, out) {
                Ok(unknown) => {
                    self.unknown += unknown;
                    Ok(())
                }
                Err(e) => {
                    self.broken = true;
                    Err(HpackError::Decode(e.to_string()))
                }
            };
        }
        let max = self.limits.max_list_size;
        let mut size = 0usize;
        let mut too_large = false;
        let result = self.inner.decode_with_cb(block, |name, value| {
            size += name.len() + value.len() + 32;
            if size > max {
                too_large = true;
                return;
            }
            out.push((
                String::from_utf8_lossy(&name).into_owned(),
                String::from_utf8_lossy(&value).into_owned(),
            ));
        });
        if let Err(e) = result {
            self.broken = true;
            return Err(HpackError::Decode(e.to_string()));
        }
        if too_large {
            // The table was still updated (decoding went on): only this block is lost.
            out.clear();
            return Err(HpackError::TooLarge(max));
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
    fn a_reference_to_an_unknown_entry_breaks_the_direction() {
        let mut d = HeaderDecoder::new(HpackLimits::default());
        let mut out = Vec::new();
        // Index 62: the first dynamic entry, which a decoder that joined late never saw.
        assert!(matches!(
            d.decode(&[0xbe], &mut out),
            Err(HpackError::Decode(_))
        ));
        assert_eq!(d.decode(&[0x82], &mut out), Err(HpackError::Broken));
    }

    #[test]
    fn sizes_are_bounded() {
        let mut d = HeaderDecoder::new(HpackLimits {
            max_table_size: 8192,
            max_list_size: 100,
        });
        assert_eq!(
            d.allow_table_size(1 << 30),
            Err(HpackError::TableTooLarge(1 << 30))
        );
        let mut d = HeaderDecoder::new(HpackLimits {
            max_table_size: 8192,
            max_list_size: 100,
        });
        // A size update to 1 MiB at the start of a block: over what the peer allowed.
        let mut out = Vec::new();
        assert!(d.decode(&[0x3f, 0xe1, 0xff, 0x3f], &mut out).is_err());
        // A literal header of 200 bytes: over the list size.
        let mut d = HeaderDecoder::new(HpackLimits {
            max_table_size: 8192,
            max_list_size: 100,
        });
        let mut block = vec![0x00, 0x01, b'x', 0x7f, 200 - 127];
        block.extend(std::iter::repeat_n(b'v', 200));
        assert_eq!(d.decode(&block, &mut out), Err(HpackError::TooLarge(100)));
        assert!(out.is_empty());
    }
}
