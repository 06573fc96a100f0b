//! The HPACK decoder against real encoders: every story of the hpack-test-case corpus
//! (http2jp/hpack-test-case, MIT, the licence is inside the archive) as nghttp2, Go and Python
//! encoded it, including nghttp2 changing the table size mid-story. The cases of a story share
//! one decoder, as the blocks of one connection direction do.

use std::io::Read as _;

use netsonde::protocols::http2::hpack::{HeaderDecoder, HpackLimits};
use serde_json::Value;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn every_story_from_every_encoder_decodes_exactly() {
    let archive = std::fs::File::open(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/hpack-test-case.tar.gz"
    ))
    .unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let mut stories = 0;
    let mut blocks = 0;
    let mut encoders = std::collections::BTreeSet::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        if !path.ends_with(".json") {
            continue;
        }
        encoders.insert(path.split('/').nth(1).unwrap().to_string());
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        let story: Value = serde_json::from_str(&text).unwrap();
        let mut decoder = HeaderDecoder::new(HpackLimits::default());
        for case in story["cases"].as_array().unwrap() {
            if let Some(size) = case["header_table_size"].as_u64() {
                decoder.allow_table_size(size as usize).unwrap();
            }
            let mut headers = Vec::new();
            decoder
                .decode(&unhex(case["wire"].as_str().unwrap()), &mut headers)
                .unwrap_or_else(|e| panic!("{path} case {}: {e}", case["seqno"]));
            let expected: Vec<(String, String)> = case["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    let (name, value) = h.as_object().unwrap().iter().next().unwrap();
                    (name.clone(), value.as_str().unwrap().to_string())
                })
                .collect();
            assert_eq!(headers, expected, "{path} case {}", case["seqno"]);
            blocks += 1;
        }
        stories += 1;
    }
    assert_eq!(
        encoders.into_iter().collect::<Vec<_>>(),
        [
            "go-hpack",
            "nghttp2",
            "nghttp2-change-table-size",
            "python-hpack"
        ]
    );
    // 32 stories each, but nghttp2-change-table-size has 31.
    assert_eq!(stories, 127);
    assert_eq!(blocks, 13_419);
}
