//! The HTTP/2 connection parser fed frames as real peers write them (header blocks from an
//! HPACK encoder), whole, byte by byte, and with bytes missing.

use super::{
    frame::{self, FrameHeader, PREFACE, encode_header, flags, kind},
    *,
};
use crate::protocols::{Completeness, Direction, Exchange, Role, Segment};

mod ending;
mod gaps;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = encode_header(payload.len() as u32, kind, flags, stream).to_vec();
    f.extend_from_slice(payload);
    f
}

fn block(encoder: &mut loona_hpack::Encoder<'_>, headers: &[(&str, &str)]) -> Vec<u8> {
    encoder.encode(headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
}

/// A client's and a server's bytes for `n` GETs on streams 1, 3, 5…, answered in reverse
/// order, each with a `len`-byte body.
fn conversation(n: u32, len: usize) -> (Vec<u8>, Vec<u8>) {
    let mut client_enc = loona_hpack::Encoder::new();
    let mut server_enc = loona_hpack::Encoder::new();
    let mut client = PREFACE.to_vec();
    client.extend(frame(kind::SETTINGS, 0, 0, &[]));
    let mut server = frame(kind::SETTINGS, 0, 0, &[0, 1, 0, 0, 0x10, 0]);
    server.extend(frame(kind::SETTINGS, flags::ACK, 0, &[]));
    for i in 0..n {
        let path = format!("/items/{i}");
        let b = block(
            &mut client_enc,
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "example.test"),
                (":path", &path),
                ("user-agent", "test/1"),
            ],
        );
        client.extend(frame(
            kind::HEADERS,
            flags::END_HEADERS | flags::END_STREAM,
            1 + 2 * i,
            &b,
        ));
    }
    for i in (0..n).rev() {
        let b = block(
            &mut server_enc,
            &[(":status", "200"), ("content-type", "text/plain")],
        );
        server.extend(frame(kind::HEADERS, flags::END_HEADERS, 1 + 2 * i, &b));
        server.extend(frame(
            kind::DATA,
            flags::END_STREAM,
            1 + 2 * i,
            &vec![b'x'; len],
        ));
    }
    (client, server)
}

fn feed_all(h: &mut Http2, dir: Direction, bytes: &[u8], chunk: usize, t: u64) -> Vec<Exchange> {
    let mut out = Vec::new();
    for (i, piece) in bytes.chunks(chunk).enumerate() {
        let at = t + i as u64;
        h.feed(dir, &Segment::full(piece, at, at), &mut out);
    }
    out
}

#[test]
fn streams_become_exchanges_in_completion_order() {
    let (client, server) = conversation(3, 10);
    let mut h = Http2::new(Limits::default());
    // The traced process is the client: it sends the preface.
    assert!(feed_all(&mut h, Direction::Egress, &client, 4096, 100).is_empty());
    let out = feed_all(&mut h, Direction::Ingress, &server, 4096, 200);
    assert_eq!(h.role(), Some(Role::Client));
    let got: Vec<_> = out
        .iter()
        .map(|e| {
            (
                &*e.request.method,
                e.request.target.as_str(),
                e.response.status,
                e.response_body_bytes,
                e.request.major,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("GET", "/items/2", 200, 10, 2),
            ("GET", "/items/1", 200, 10, 2),
            ("GET", "/items/0", 200, 10, 2)
        ]
    );
    let e = &out[0];
    assert_eq!(e.request.header("host"), Some("example.test"));
    assert_eq!(e.request.header("user-agent"), Some("test/1"));
    assert_eq!(e.completeness, Completeness::Complete);
    assert!(e.request_start_ns >= 100 && e.response_end_ns >= 200);
    assert_eq!(*h.status(), Status::Active);
}

#[test]
fn byte_by_byte_is_the_same_as_whole() {
    let (client, server) = conversation(4, 33);
    let mut whole = Http2::new(Limits::default());
    feed_all(&mut whole, Direction::Ingress, &client, 1 << 20, 0);
    let a = feed_all(&mut whole, Direction::Egress, &server, 1 << 20, 0);
    let mut bytewise = Http2::new(Limits::default());
    feed_all(&mut bytewise, Direction::Ingress, &client, 1, 0);
    let b = feed_all(&mut bytewise, Direction::Egress, &server, 1, 0);
    assert_eq!(bytewise.role(), Some(Role::Server));
    let key = |v: &[Exchange]| {
        v.iter()
            .map(|e| {
                (
                    e.request.target.clone(),
                    e.response.status,
                    e.response_body_bytes,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&a), key(&b));
    assert_eq!(a.len(), 4);
}

#[test]
fn continuation_padding_trailers_and_resets() {
    let mut enc_c = loona_hpack::Encoder::new();
    let mut enc_s = loona_hpack::Encoder::new();
    let mut client = PREFACE.to_vec();
    let req = block(
        &mut enc_c,
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "svc"),
            (":path", "/pkg.Service/Call"),
            ("content-type", "application/grpc"),
        ],
    );
    // The request's header block split over HEADERS (padded, with priority) + CONTINUATION.
    let (first, rest) = req.split_at(3);
    let mut payload = vec![2, 0, 0, 0, 0, 16];
    payload.extend_from_slice(first);
    payload.extend_from_slice(&[0, 0]);
    client.extend(frame(
        kind::HEADERS,
        flags::PADDED | flags::PRIORITY,
        1,
        &payload,
    ));
    client.extend(frame(kind::CONTINUATION, flags::END_HEADERS, 1, rest));
    // A padded DATA frame: 7 body bytes, 3 of padding.
    let mut data = vec![3];
    data.extend_from_slice(b"message");
    data.extend_from_slice(&[0, 0, 0]);
    client.extend(frame(
        kind::DATA,
        flags::PADDED | flags::END_STREAM,
        1,
        &data,
    ));
    // Stream 3: asked, then reset by the client before any answer.
    let req3 = block(
        &mut enc_c,
        &[(":method", "GET"), (":scheme", "http"), (":path", "/slow")],
    );
    client.extend(frame(
        kind::HEADERS,
        flags::END_HEADERS | flags::END_STREAM,
        3,
        &req3,
    ));
    client.extend(frame(kind::RST_STREAM, 0, 3, &[0, 0, 0, 8]));

    let mut server = Vec::new();
    let resp = block(
        &mut enc_s,
        &[(":status", "200"), ("content-type", "application/grpc")],
    );
    server.extend(frame(kind::HEADERS, flags::END_HEADERS, 1, &resp));
    server.extend(frame(kind::DATA, 0, 1, b"12345"));
    let trailers = block(
        &mut enc_s,
        &[("grpc-status", "5"), ("grpc-message", "nope")],
    );
    server.extend(frame(
        kind::HEADERS,
        flags::END_HEADERS | flags::END_STREAM,
        1,
        &trailers,
    ));

    let mut h = Http2::new(Limits::default());
    assert!(feed_all(&mut h, Direction::Egress, &client, 5, 0).is_empty());
    let out = feed_all(&mut h, Direction::Ingress, &server, 7, 0);
    assert_eq!(out.len(), 1);
    let e = &out[0];
    assert_eq!(
        (&*e.request.method, e.request.target.as_str()),
        ("POST", "/pkg.Service/Call")
    );
    assert_eq!((e.request_body_bytes, e.response_body_bytes), (7, 5));
    // The response's content-type is not kept (nothing reads it); gRPC's trailers are.
    assert_eq!(
        e.response.headers,
        [
            ("grpc-status".into(), "5".to_string()),
            ("grpc-message".into(), "nope".to_string())
        ]
    );
    let notes = h.take_notes();
    assert_eq!((notes.resets, notes.unanswered_requests), (1, 1));
}

#[test]
fn a_lost_data_payload_costs_nothing_and_lost_framing_costs_a_moment() {
    let (client, server) = conversation(1, 1000);
    let mut h = Http2::new(Limits::default());
    let mut out = Vec::new();
    h.feed(Direction::Egress, &Segment::full(&client, 0, 0), &mut out);
    // Everything up to the DATA payload, then the payload missing (uncaptured) except 10 bytes.
    let data_at = server.len() - 1000;
    h.feed(
        Direction::Ingress,
        &Segment::full(&server[..data_at + 10], 1, 1),
        &mut out,
    );
    h.feed(Direction::Ingress, &Segment::gap(990, 2), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].response_body_bytes, 1000);
    assert_eq!(out[0].completeness, Completeness::Complete);
    assert_eq!(h.take_notes().broken, 0);

    // Lost framing: the direction waits for a boundary, then decodes on.
    let (client, _) = conversation(2, 0);
    let frames = frames_of(&client[PREFACE.len()..]);
    let mut h = Http2::new(Limits::default());
    h.feed(Direction::Egress, &Segment::gap(50, 0), &mut out);
    assert_eq!(*h.status(), Status::Active);
    let notes = h.take_notes();
    assert_eq!((notes.broken, notes.resyncs), (1, 0));
    // Mid-frame: skipped. At a boundary the kernel proves: found again.
    h.feed(
        Direction::Egress,
        &Segment::full(&frames[1][3..], 1, 1),
        &mut out,
    );
    assert_eq!(h.take_notes().unaligned_segments, 1);
    let seg = Segment {
        boundary: Some(0),
        ..Segment::full(&frames[2], 2, 2)
    };
    h.feed(Direction::Egress, &seg, &mut out);
    assert_eq!(h.take_notes().resyncs, 1);
    assert_eq!(
        h.open_streams().len(),
        1,
        "the request after the gap is followed"
    );
}

#[test]
fn bad_input_costs_a_moment_and_is_counted() {
    // Not HTTP/2 at all, though it starts with a P: given up, as it is not HTTP/2.
    let mut h = Http2::new(Limits::default());
    feed_all(
        &mut h,
        Direction::Egress,
        b"POST / HTTP/1.1\r\n\r\n",
        100,
        0,
    );
    assert_eq!(*h.status(), Status::NotHttp2);

    let request = |path: &str| {
        let mut enc = loona_hpack::Encoder::new();
        block(
            &mut enc,
            &[(":method", "GET"), (":path", path), (":scheme", "http")],
        )
    };
    // What each case is followed by: a request that decodes (these blocks are literals).
    let then = |h: &mut Http2, bytes: &mut Vec<u8>, id: u32| {
        bytes.extend(frame(
            kind::HEADERS,
            flags::END_HEADERS | flags::END_STREAM,
            id,
            &request("/after"),
        ));
        let seg = Segment::full(bytes, 0, 0);
        let mut out = Vec::new();
        h.feed(Direction::Egress, &seg, &mut out);
        h.open_streams().contains(&id)
    };

    // An undecodable header block (a literal cut short): its stream and the table are lost,
    // not the connection.
    let mut h = Http2::new(Limits::default());
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(kind::HEADERS, flags::END_HEADERS, 1, &[0x82, 0x40]));
    assert!(then(&mut h, &mut bytes, 3));
    let notes = h.take_notes();
    assert_eq!((notes.broken, notes.resyncs), (1, 1));
    assert!(!h.open_streams().contains(&1));

    // A CONTINUATION flood: header fragments past the block limit are skipped by length.
    let mut h = Http2::new(Limits {
        max_block: 1000,
        ..Limits::default()
    });
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(kind::HEADERS, 0, 1, &[0x82]));
    for i in 0..10 {
        let end = if i == 9 { flags::END_HEADERS } else { 0 };
        bytes.extend(frame(kind::CONTINUATION, end, 1, &[0x40; 200]));
    }
    assert!(then(&mut h, &mut bytes, 3));
    assert_eq!(h.take_notes().broken, 1);

    // A frame larger than kept: skipped by length.
    let mut h = Http2::new(Limits {
        max_block: 100,
        ..Limits::default()
    });
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(kind::HEADERS, flags::END_HEADERS, 1, &[0x82; 300]));
    assert!(then(&mut h, &mut bytes, 3));
    assert_eq!(h.take_notes().broken, 1);

    // A frame header no peer would send: the place is lost until a proven boundary.
    let mut h = Http2::new(Limits::default());
    let mut bytes = PREFACE.to_vec();
    bytes.extend(encode_header(7, kind::SETTINGS, 0, 0));
    let mut out = Vec::new();
    h.feed(Direction::Egress, &Segment::full(&bytes, 0, 0), &mut out);
    let after = frame(
        kind::HEADERS,
        flags::END_HEADERS | flags::END_STREAM,
        3,
        &request("/after"),
    );
    let seg = Segment {
        boundary: Some(0),
        ..Segment::full(&after, 1, 1)
    };
    h.feed(Direction::Egress, &seg, &mut out);
    let notes = h.take_notes();
    assert_eq!((notes.broken, notes.resyncs), (1, 1));
    assert!(h.open_streams().contains(&3));

    // A header table larger than netsonde keeps: nothing is lost yet (an entry evicted early
    // is only unknown when referred to).
    let mut h = Http2::new(Limits::default());
    let settings = frame(kind::SETTINGS, 0, 0, &[0, 1, 0x40, 0, 0, 0]);
    feed_all(&mut h, Direction::Ingress, &settings, 100, 0);
    assert_eq!(h.take_notes().broken, 0);
    assert_eq!(*h.status(), Status::Active);
}

/// After a loss the compression table is unknown: a field behind an entry inserted before it
/// is left out (a missing path is `{unknown}`), entries inserted after it decode.
#[test]
fn after_a_loss_old_table_entries_are_unknown_new_ones_known() {
    let mut h = Http2::new(Limits::default());
    let mut out = Vec::new();
    let mut bytes = PREFACE.to_vec();
    // `:path /secret` with incremental indexing (index 4's name), becoming entry 62.
    let mut b = vec![0x82, 0x44, 7];
    b.extend(b"/secret");
    bytes.extend(frame(
        kind::HEADERS,
        flags::END_HEADERS | flags::END_STREAM,
        1,
        &b,
    ));
    h.feed(Direction::Egress, &Segment::full(&bytes, 0, 0), &mut out);
    h.desync(Direction::Egress);
    // Stream 3 refers to entry 62; stream 5 inserts `/new` and stream 7 refers to it.
    let mut after = frame(
        kind::HEADERS,
        flags::END_HEADERS | flags::END_STREAM,
        3,
        &[0x82, 0xbe],
    );
    let mut b = vec![0x82, 0x44, 4];
    b.extend(b"/new");
    after.extend(frame(
        kind::HEADERS,
        flags::END_HEADERS | flags::END_STREAM,
        5,
        &b,
    ));
    after.extend(frame(
        kind::HEADERS,
        flags::END_HEADERS | flags::END_STREAM,
        7,
        &[0x82, 0xbe],
    ));
    let seg = Segment {
        boundary: Some(0),
        ..Segment::full(&after, 1, 1)
    };
    h.feed(Direction::Egress, &seg, &mut out);
    let mut senc = loona_hpack::Encoder::new();
    let mut resp = Vec::new();
    for id in [1, 3, 5, 7] {
        resp.extend(frame(
            kind::HEADERS,
            flags::END_HEADERS | flags::END_STREAM,
            id,
            &block(&mut senc, &[(":status", "200")]),
        ));
    }
    h.feed(Direction::Ingress, &Segment::full(&resp, 2, 2), &mut out);
    let paths: Vec<_> = out.iter().map(|e| e.request.target.as_str()).collect();
    assert_eq!(paths, ["/secret", super::UNKNOWN, "/new", "/new"]);
    let notes = h.take_notes();
    assert_eq!(notes.unknown_fields, 1);
    assert_eq!((notes.broken, notes.resyncs), (1, 1));
}

#[test]
fn open_streams_are_bounded() {
    let (client, _) = conversation(10, 0);
    let mut h = Http2::new(Limits {
        max_streams: 4,
        ..Limits::default()
    });
    feed_all(&mut h, Direction::Egress, &client, 4096, 0);
    let notes = h.take_notes();
    assert_eq!(notes.streams_refused, 6);
    let mut out = Vec::new();
    h.close(0, false, &mut out);
    assert!(out.is_empty());
    assert_eq!(h.take_notes().unanswered_requests, 4);
}

#[test]
fn at_close_a_response_is_complete_by_its_length_or_cut() {
    let mut enc_c = loona_hpack::Encoder::new();
    let mut enc_s = loona_hpack::Encoder::new();
    let mut client = PREFACE.to_vec();
    for id in [1, 3, 5] {
        let b = block(
            &mut enc_c,
            &[(":method", "GET"), (":path", "/f"), (":scheme", "http")],
        );
        client.extend(frame(
            kind::HEADERS,
            flags::END_HEADERS | flags::END_STREAM,
            id,
            &b,
        ));
    }
    let mut server = Vec::new();
    // Stream 1: 5 of 5 bytes, no END_STREAM yet; stream 3: 2 of 5; stream 5: no response.
    for (id, sent) in [(1, 5), (3, 2)] {
        let b = block(&mut enc_s, &[(":status", "200"), ("content-length", "5")]);
        server.extend(frame(kind::HEADERS, flags::END_HEADERS, id, &b));
        server.extend(frame(kind::DATA, 0, id, &vec![b'x'; sent]));
    }
    let mut h = Http2::new(Limits::default());
    feed_all(&mut h, Direction::Egress, &client, 4096, 0);
    assert!(feed_all(&mut h, Direction::Ingress, &server, 4096, 10).is_empty());
    let mut out = Vec::new();
    h.close(0, false, &mut out);
    let got: Vec<_> = out
        .iter()
        .map(|e| (e.response_body_bytes, e.completeness))
        .collect();
    assert_eq!(
        got,
        [(5, Completeness::Complete), (2, Completeness::BodyCut)]
    );
    assert_eq!(h.take_notes().unanswered_requests, 1);
}

#[test]
fn a_server_that_speaks_first_is_recognised_by_its_settings() {
    let (client, server) = conversation(2, 5);
    assert!(Http2::starts_with_server_preface(&server));
    assert!(!Http2::starts_with_server_preface(&client));
    assert!(!Http2::starts_with_server_preface(
        b"HTTP/1.1 200 OK\r\n\r\n"
    ));
    // An ACK, a stream other than 0, or a length that is not whole settings: not a preface.
    assert!(!Http2::starts_with_server_preface(&frame(
        kind::SETTINGS,
        flags::ACK,
        0,
        &[]
    )));
    assert!(!Http2::starts_with_server_preface(&frame(
        kind::SETTINGS,
        0,
        1,
        &[0; 6]
    )));
    assert!(!Http2::starts_with_server_preface(&frame(
        kind::SETTINGS,
        0,
        0,
        &[0; 5]
    )));
    assert!(!Http2::starts_with_server_preface(&server[..8]));
    // The traced process is the server, and its SETTINGS went out before the preface came in.
    let mut h = Http2::new(Limits::default());
    let (settings, rest) = server.split_at(15);
    assert!(feed_all(&mut h, Direction::Egress, settings, 4096, 100).is_empty());
    assert!(feed_all(&mut h, Direction::Ingress, &client, 4096, 200).is_empty());
    let out = feed_all(&mut h, Direction::Egress, rest, 4096, 300);
    assert_eq!(h.role(), Some(Role::Server));
    assert_eq!(out.len(), 2);
    assert_eq!(*h.status(), Status::Active);
}

/// The frames of `bytes` (a direction's stream, after any preface), one segment per frame,
/// as syscalls usually carry them.
fn frames_of(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 9 {
        let h = FrameHeader::parse(rest).unwrap();
        let n = 9 + h.len as usize;
        out.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    out
}

#[test]
fn frame_chains_tell_a_boundary_from_the_middle_of_a_frame() {
    let (client, server) = conversation(2, 30);
    let frames = frames_of(&client[PREFACE.len()..]);
    let two = [frames[0].clone(), frames[1].clone()].concat();
    assert!(frame::chains(&two, two.len() as u64));
    assert!(frame::chains(&frames[1], frames[1].len() as u64));
    // Captured only in part: one frame header is too little to tell, two that chain suffice.
    assert!(!frame::chains(&two[..12], two.len() as u64 + 40));
    assert!(frame::chains(&server[..40], server.len() as u64));
    // The middle of a frame, HTTP/1, or nothing: not a boundary.
    assert!(!frame::chains(&two[3..], two.len() as u64 - 3));
    assert!(!frame::chains(b"GET / HTTP/1.1\r\n\r\n", 18));
    assert!(!frame::chains(&[], 0));
}

/// Joined after the first of four requests: the later requests and responses become
/// exchanges, decoded in full (this encoder writes literals, never table references).
#[test]
fn a_connection_joined_midstream_decodes_what_it_can() {
    let (client, server) = conversation(4, 10);
    let client_frames = frames_of(&client[PREFACE.len()..]);
    let server_frames = frames_of(&server);
    // The client's SETTINGS and first HEADERS, and the server's SETTINGS, ACK, and the answer
    // to the last request (answered first) happened before netsonde.
    let mut h = Http2::midstream(Limits::default(), Some(Direction::Egress));
    let mut out = Vec::new();
    // An unaligned start: skipped until a segment starts at a frame boundary.
    h.feed(
        Direction::Egress,
        &Segment::full(&client_frames[2][4..], 1, 1),
        &mut out,
    );
    for (i, f) in client_frames[2..].iter().enumerate() {
        h.feed(
            Direction::Egress,
            &Segment::full(f, 10 + i as u64, 10 + i as u64),
            &mut out,
        );
    }
    for (i, f) in server_frames[2..].iter().enumerate() {
        h.feed(
            Direction::Ingress,
            &Segment::full(f, 20 + i as u64, 20 + i as u64),
            &mut out,
        );
    }
    let got: Vec<_> = out
        .iter()
        .map(|e| {
            (
                &*e.request.method,
                e.request.target.as_str(),
                e.request.header("host"),
                e.response.status,
                e.response_body_bytes,
            )
        })
        .collect();
    // Streams 3, 5, 7 (requests 1..3) were seen; stream 1's request was not.
    assert_eq!(
        got,
        [
            ("GET", "/items/3", Some("example.test"), 200, 10),
            ("GET", "/items/2", Some("example.test"), 200, 10),
            ("GET", "/items/1", Some("example.test"), 200, 10),
        ]
    );
    let notes = h.take_notes();
    assert_eq!(notes.unaligned_segments, 1);
    assert_eq!(notes.unknown_fields, 0);
    assert_eq!(*h.status(), Status::Active);
}

/// A path behind an unknown table entry is `{unknown}`, never another request's path.
#[test]
fn an_unknown_path_is_reported_unknown() {
    // Before the join the client sent `:path /secret/42` with incremental indexing (0x44 …);
    // after it, the same path is a reference to that entry (0xbe, index 62).
    let after = [0x82, 0xbe];
    let mut h = Http2::midstream(Limits::default(), Some(Direction::Egress));
    let mut out = Vec::new();
    let req = frame(
        kind::HEADERS,
        flags::END_HEADERS | flags::END_STREAM,
        3,
        &after,
    );
    h.feed(Direction::Egress, &Segment::full(&req, 1, 1), &mut out);
    let mut senc = loona_hpack::Encoder::new();
    let resp = frame(
        kind::HEADERS,
        flags::END_HEADERS | flags::END_STREAM,
        3,
        &block(&mut senc, &[(":status", "404")]),
    );
    h.feed(Direction::Ingress, &Segment::full(&resp, 2, 2), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].request.method, "GET");
    assert_eq!(out[0].request.target, super::UNKNOWN);
    assert_eq!(out[0].response.status, 404);
    assert_eq!(h.take_notes().unknown_fields, 1);
}
