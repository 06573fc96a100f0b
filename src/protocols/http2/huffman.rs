//! The HPACK Huffman code (RFC 7541 §5.2, Appendix B), decoded.
//!
//! Written here because the crate's decoder (loona-hpack) builds a hash map of the code for
//! every string it decodes and looks each bit up in it: on an HTTP/2 server at 4 000 requests a
//! second that was 70 % of netsonde's CPU (benchmarks/RESULTS.md). The code is canonical (codes
//! of one length are consecutive, in symbol order, and follow on from the shorter ones), so the
//! code lengths of Appendix B are all it takes: decoding is a running code compared with the
//! first code of each length.

/// Code length of each symbol (256 is EOS), RFC 7541 Appendix B.
#[rustfmt::skip]
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    30,
];

const EOS: u16 = 256;
const MAX_LEN: usize = 30;

/// Why a string did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HuffmanError {
    #[error("EOS inside a Huffman string")]
    Eos,
    #[error("Huffman padding longer than 7 bits, or not the EOS prefix")]
    Padding,
}

/// The code, arranged for canonical decoding.
struct Code {
    /// Symbols in code order (by length, then symbol).
    symbols: [u16; 257],
    /// For each length: the first code of that length, and the index in `symbols` of its
    /// symbol; `count` codes of that length follow.
    first: [u32; MAX_LEN + 1],
    offset: [u16; MAX_LEN + 1],
    count: [u16; MAX_LEN + 1],
}

const fn build() -> Code {
    let mut count = [0u16; MAX_LEN + 1];
    let mut s = 0;
    while s < 257 {
        count[LENGTHS[s] as usize] += 1;
        s += 1;
    }
    let mut first = [0u32; MAX_LEN + 1];
    let mut offset = [0u16; MAX_LEN + 1];
    let mut code = 0u32;
    let mut index = 0u16;
    let mut len = 1;
    while len <= MAX_LEN {
        first[len] = code;
        offset[len] = index;
        code = (code + count[len] as u32) << 1;
        index += count[len];
        len += 1;
    }
    // Within a length, symbols in ascending order.
    let mut symbols = [0u16; 257];
    let mut next = offset;
    let mut len = 1;
    while len <= MAX_LEN {
        let mut s = 0;
        while s < 257 {
            if LENGTHS[s] as usize == len {
                symbols[next[len] as usize] = s as u16;
                next[len] += 1;
            }
            s += 1;
        }
        len += 1;
    }
    Code {
        symbols,
        first,
        offset,
        count,
    }
}

static CODE: Code = build();

/// Decodes a Huffman-encoded string into `out`.
pub fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let code = &CODE;
    let mut value: u32 = 0;
    let mut len: usize = 0;
    for &byte in input {
        for bit in (0..8).rev() {
            value = value << 1 | u32::from(byte >> bit & 1);
            len += 1;
            let at = value.wrapping_sub(code.first[len]);
            if at < u32::from(code.count[len]) {
                let symbol = code.symbols[usize::from(code.offset[len]) + at as usize];
                if symbol == EOS {
                    return Err(HuffmanError::Eos);
                }
                out.push(symbol as u8);
                value = 0;
                len = 0;
            } else if len == MAX_LEN {
                // Only EOS is 30 bits long and it was not matched: cannot happen with this
                // code, but never index past the tables.
                return Err(HuffmanError::Padding);
            }
        }
    }
    // What is left must be at most 7 bits, all ones (the start of EOS).
    if len > 7 || value != (1 << len) - 1 {
        return Err(HuffmanError::Padding);
    }
    Ok(())
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

    fn text(hex: &str) -> Result<String, HuffmanError> {
        let mut out = Vec::new();
        decode(&unhex(hex), &mut out).map(|()| String::from_utf8(out).unwrap())
    }

    #[test]
    fn the_code_is_complete_and_canonical() {
        // Kraft: the lengths fill the code space exactly (sum of 2^-len = 1).
        let sum: u64 = LENGTHS
            .iter()
            .map(|&l| 1u64 << (MAX_LEN - l as usize))
            .sum();
        assert_eq!(sum, 1 << MAX_LEN);
        // Appendix B's first and last codes: '0' is 00000, EOS is 30 ones.
        assert_eq!(
            (CODE.first[5], CODE.symbols[CODE.offset[5] as usize]),
            (0, b'0' as u16)
        );
        assert_eq!(CODE.symbols[256], EOS);
        assert_eq!(
            CODE.first[30] + u32::from(CODE.count[30]) - 1,
            (1 << 30) - 1
        );
    }

    /// RFC 7541 C.4 and C.6: the Huffman-encoded strings of its examples.
    #[test]
    fn rfc7541_examples_decode() {
        let cases = [
            ("f1e3c2e5f23a6ba0ab90f4ff", "www.example.com"),
            ("a8eb10649cbf", "no-cache"),
            ("25a849e95ba97d7f", "custom-key"),
            ("25a849e95bb8e8b4bf", "custom-value"),
            ("6402", "302"),
            ("aec3771a4b", "private"),
            (
                "d07abe941054d444a8200595040b8166e082a62d1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "9d29ad171863c78f0b97c8e9ae82ae43d3",
                "https://www.example.com",
            ),
            (
                "94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            ),
        ];
        for (hex, want) in cases {
            assert_eq!(text(hex).as_deref(), Ok(want), "{hex}");
        }
        assert_eq!(text("").as_deref(), Ok(""));
    }

    #[test]
    fn bad_padding_and_eos_are_errors() {
        // 8 bits of ones: padding longer than 7 bits.
        assert_eq!(text("ff"), Err(HuffmanError::Padding));
        // '0' (00000) then 000: padding that is not the EOS prefix.
        assert_eq!(text("00"), Err(HuffmanError::Padding));
        // EOS itself (30 ones) then 2 ones of padding.
        assert_eq!(text("ffffffff"), Err(HuffmanError::Eos));
    }
}
