//! Arbitrary bytes, cut into segments of both directions (some with uncaptured tails), into
//! the HTTP/1 and HTTP/2 parsers (HTTP/2 from the start and joined mid-stream, with its partial
//! HPACK decoder). They must never panic, and must stay within their bounds.
//!
//! Input layout: a sequence of records `[control, len, bytes...]`. `control` bit 0 picks the
//! direction, bit 1 makes the segment's tail a gap of `len` bytes, bit 2 starts the HTTP/2
//! connection with the client preface, bit 3 says (as the kernel's frame walk does) that a frame
//! starts at offset `control >> 4` of the segment.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netsonde::protocols::{
    Direction, Segment,
    http1::{Http1, Limits as Http1Limits},
    http2::{Http2, Limits as Http2Limits, frame::PREFACE},
};

fuzz_target!(|input: &[u8]| {
    let mut h1 = Http1::new(Http1Limits::default());
    let mut h1_mid = Http1::midstream(Http1Limits::default());
    let mut h2 = Http2::new(Http2Limits {
        max_block: 4096,
        max_streams: 8,
        ..Http2Limits::default()
    });
    let mut h2_mid = Http2::midstream(
        Http2Limits {
            max_block: 4096,
            max_streams: 8,
            ..Http2Limits::default()
        },
        None,
    );
    let mut out = Vec::new();
    let mut rest = input;
    let mut t = 0u64;
    let mut first = true;
    while let [control, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        t += 1;
        let dir = if control & 1 == 0 {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        if first && control & 4 != 0 {
            h2.feed(Direction::Egress, &Segment::full(PREFACE, t, t), &mut out);
        }
        first = false;
        let gap = if control & 2 != 0 { u64::from(*len) } else { 0 };
        let seg = Segment {
            data: bytes,
            len: bytes.len() as u64 + gap,
            first_ns: t,
            last_ns: t,
            boundary: (control & 8 != 0).then(|| u64::from(control >> 4).min(bytes.len() as u64)),
        };
        h1.feed(dir, &seg, &mut out);
        h1_mid.feed(dir, &seg, &mut out);
        h2.feed(dir, &seg, &mut out);
        h2_mid.feed(dir, &seg, &mut out);
        assert!(out.len() <= input.len(), "more exchanges than input bytes");
        for exchange in &out {
            // gRPC reading of whatever came out must not panic either.
            let _ = netsonde::protocols::grpc::call(exchange);
        }
        out.clear();
    }
    h1.close(u64::MAX, input.len() % 2 == 0, &mut out);
    h1_mid.abandon(&mut out);
    h2.close(0, true, &mut out);
    h2_mid.close(0, true, &mut out);
});
