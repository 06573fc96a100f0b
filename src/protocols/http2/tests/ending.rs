//! How a connection ends: requests left without a response head at the close are failed
//! exchanges when every byte the server sent was seen and decoded, and only counted otherwise.

use super::*;

/// Three GETs (streams 1, 3, 5) and a server that answers the first one only.
fn one_of_three_answered() -> (Vec<u8>, Vec<u8>) {
    let (client, _) = conversation(3, 0);
    let mut enc = loona_hpack::Encoder::new();
    let mut server = frame(kind::SETTINGS, 0, 0, &[]);
    server.extend(frame(
        kind::HEADERS,
        flags::END_HEADERS | flags::END_STREAM,
        1,
        &block(&mut enc, &[(":status", "200")]),
    ));
    (client, server)
}

/// Each frame of `bytes` as its own segment starting at a frame boundary (as the kernel's walk
/// says), from time `t`.
fn feed_frames(h: &mut Http2, dir: Direction, bytes: &[u8], t: u64, out: &mut Vec<Exchange>) {
    for (i, f) in frames_of(bytes).iter().enumerate() {
        let at = t + i as u64;
        let seg = Segment {
            boundary: Some(0),
            ..Segment::full(f, at, at)
        };
        h.feed(dir, &seg, out);
    }
}

#[test]
fn at_a_close_seen_whole_the_requests_without_answer_are_failed_exchanges() {
    let (client, server) = one_of_three_answered();
    let mut h = Http2::new(Limits::default());
    feed_all(&mut h, Direction::Egress, &client, 4096, 0);
    let answered = feed_all(&mut h, Direction::Ingress, &server, 4096, 10);
    assert_eq!(answered.len(), 1);
    let mut out = Vec::new();
    h.close(50, true, &mut out);
    let got: Vec<_> = out
        .iter()
        .map(|e| {
            (
                e.request.target.as_str(),
                e.response.status,
                e.completeness,
                e.response_start_ns,
                e.response_end_ns,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("/items/1", 0, Completeness::NoResponse, 50, 50),
            ("/items/2", 0, Completeness::NoResponse, 50, 50),
        ]
    );
    assert_eq!(h.take_notes().unanswered_requests, 2);
}

/// Builds a connection from the client's and the server's bytes; whether the close saw it whole.
type Setup = fn(&[u8], &[u8]) -> (Http2, bool);

#[test]
fn unless_the_answers_were_seen_whole_they_are_only_counted() {
    let (client, server) = one_of_three_answered();
    let cases: [(&str, Setup); 5] = [
        ("bytes of the connection went missing", |client, server| {
            let mut h = Http2::new(Limits::default());
            feed_all(&mut h, Direction::Egress, client, 4096, 0);
            feed_all(&mut h, Direction::Ingress, server, 4096, 10);
            (h, false)
        }),
        ("the server's frames lost their place", |client, server| {
            let mut h = Http2::new(Limits::default());
            feed_all(&mut h, Direction::Egress, client, 4096, 0);
            feed_all(&mut h, Direction::Ingress, server, 4096, 10);
            h.desync(Direction::Ingress);
            (h, true)
        }),
        ("and found it again", |client, server| {
            let mut h = Http2::new(Limits::default());
            feed_all(&mut h, Direction::Egress, client, 4096, 0);
            h.desync(Direction::Ingress);
            feed_frames(&mut h, Direction::Ingress, server, 10, &mut Vec::new());
            (h, true)
        }),
        ("the connection was joined midstream", |client, server| {
            let mut h = Http2::midstream(Limits::default(), Some(Direction::Egress));
            let mut out = Vec::new();
            feed_frames(
                &mut h,
                Direction::Egress,
                &client[PREFACE.len()..],
                0,
                &mut out,
            );
            feed_frames(&mut h, Direction::Ingress, server, 10, &mut out);
            assert_eq!(out.len(), 1, "the answered stream is reported");
            (h, true)
        }),
        ("the server stopped inside a frame", |client, server| {
            let mut h = Http2::new(Limits::default());
            feed_all(&mut h, Direction::Egress, client, 4096, 0);
            feed_all(&mut h, Direction::Ingress, server, 4096, 10);
            let next = frame(kind::HEADERS, flags::END_HEADERS, 3, &[0x88]);
            feed_all(&mut h, Direction::Ingress, &next[..5], 4096, 20);
            (h, true)
        }),
    ];
    for (what, setup) in cases {
        let (mut h, seen_to_the_end) = setup(&client, &server);
        let mut out = Vec::new();
        h.close(50, seen_to_the_end, &mut out);
        assert!(out.is_empty(), "{what}: {out:?}");
        assert_eq!(h.take_notes().unanswered_requests, 2, "{what}");
    }
}

#[test]
fn a_goaway_from_the_client_leaves_its_requests_one_from_the_server_ends_them() {
    let (client, _) = conversation(3, 0);
    let mut h = Http2::new(Limits::default());
    feed_all(&mut h, Direction::Egress, &client, 4096, 0);
    // Last stream 0: the client processed no stream the server started.
    let goaway = |last: u8| frame(kind::GOAWAY, 0, 0, &[0, 0, 0, last, 0, 0, 0, 0]);
    feed_all(&mut h, Direction::Egress, &goaway(0), 4096, 1);
    assert_eq!(h.open_streams(), [1, 3, 5]);
    let mut server = frame(kind::SETTINGS, 0, 0, &[]);
    server.extend(goaway(1));
    feed_all(&mut h, Direction::Ingress, &server, 4096, 2);
    assert_eq!(h.open_streams(), [1]);
    assert_eq!(h.take_notes().unanswered_requests, 2);
}

/// A gRPC call to a method the server does not have, answered on its HEADERS before the
/// request's message (as grpc-go does): the client's bytes up to its HEADERS, and the server's
/// answer (trailers only, ending the stream).
fn answered_before_its_message() -> (Vec<u8>, Vec<u8>) {
    let mut enc = loona_hpack::Encoder::new();
    let mut client = PREFACE.to_vec();
    client.extend(frame(kind::SETTINGS, 0, 0, &[]));
    let request = [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "example.test"),
        (":path", "/demo.Echo/Nope"),
        ("content-type", "application/grpc"),
    ];
    client.extend(frame(
        kind::HEADERS,
        flags::END_HEADERS,
        1,
        &block(&mut enc, &request),
    ));
    let mut enc = loona_hpack::Encoder::new();
    let mut server = frame(kind::SETTINGS, 0, 0, &[]);
    let answer = [
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-status", "12"),
    ];
    server.extend(frame(
        kind::HEADERS,
        flags::END_HEADERS | flags::END_STREAM,
        1,
        &block(&mut enc, &answer),
    ));
    (client, server)
}

/// How the stream goes on after its early answer, seen from the server (the client's frames
/// come in), with the exchanges it reports.
type Then = fn(&mut Http2, &mut Vec<Exchange>);

#[test]
fn an_answer_before_the_request_ends_is_held_until_the_request_or_stream_ends() {
    fn reset(h: &mut Http2, by: Direction, out: &mut Vec<Exchange>) {
        let rst = frame(kind::RST_STREAM, 0, 1, &[0; 4]);
        h.feed(by, &Segment::full(&rst, 30, 30), out);
    }
    use Completeness::{Complete, RequestCut};
    // (what happens, then, request body bytes, request messages, how the exchange ended)
    let cases: [(&str, Then, u64, Option<u64>, Completeness); 6] = [
        (
            "the request's message follows, ending it",
            |h, out| {
                let m = frame(kind::DATA, flags::END_STREAM, 1, &[0, 0, 0, 0, 1, b'x']);
                h.feed(Direction::Ingress, &Segment::full(&m, 30, 30), out);
            },
            6,
            Some(1),
            Complete,
        ),
        (
            "the client resets the stream instead",
            |h, out| reset(h, Direction::Ingress, out),
            0,
            Some(0),
            Complete,
        ),
        (
            "the server resets it: a message after that is not the stream's",
            |h, out| {
                reset(h, Direction::Egress, out);
                let m = frame(kind::DATA, flags::END_STREAM, 1, &[0, 0, 0, 0, 1, b'x']);
                h.feed(Direction::Ingress, &Segment::full(&m, 40, 40), out);
            },
            0,
            Some(0),
            Complete,
        ),
        (
            "the request's message follows in pieces",
            |h, out| {
                let m = frame(kind::DATA, 0, 1, &[0, 0, 0, 0, 3, b'a']);
                h.feed(Direction::Ingress, &Segment::full(&m, 30, 30), out);
                assert!(out.is_empty(), "held while the request goes on");
                let end = frame(kind::DATA, flags::END_STREAM, 1, b"bc");
                h.feed(Direction::Ingress, &Segment::full(&end, 31, 31), out);
            },
            8,
            Some(1),
            Complete,
        ),
        (
            "the connection closes",
            |h, out| h.close(50, true, out),
            0,
            Some(0),
            RequestCut,
        ),
        (
            "the connection is forgotten",
            |h, out| h.abandon(out),
            0,
            Some(0),
            RequestCut,
        ),
    ];
    let (client, server) = answered_before_its_message();
    for (what, then, body, messages, ended) in cases {
        let mut h = Http2::new(Limits::default());
        let mut out = feed_all(&mut h, Direction::Ingress, &client, 4096, 0);
        out.extend(feed_all(&mut h, Direction::Egress, &server, 4096, 10));
        assert!(out.is_empty(), "{what}: reported before its request ended");
        assert_eq!(h.open_streams(), [1], "{what}");
        then(&mut h, &mut out);
        assert_eq!(out.len(), 1, "{what}: {out:?}");
        let e = &out[0];
        assert_eq!(e.request.target, "/demo.Echo/Nope", "{what}");
        assert_eq!(e.completeness, ended, "{what}");
        assert_eq!(
            (
                e.request_body_bytes,
                e.request_messages,
                e.response_messages
            ),
            (body, messages, Some(0)),
            "{what}"
        );
        assert!(h.open_streams().is_empty(), "{what}");
        let notes = h.take_notes();
        assert_eq!(
            (notes.resets, notes.unanswered_requests, notes.lost_streams),
            (0, 0, 0),
            "{what}"
        );
    }
}

/// Streams held for a request that never ends give way to new ones when the table is full:
/// the oldest is reported then, its request cut.
#[test]
fn held_streams_give_way_to_new_ones() {
    let mut h = Http2::new(Limits {
        max_streams: 2,
        ..Limits::default()
    });
    let mut enc = loona_hpack::Encoder::new();
    let mut server_enc = loona_hpack::Encoder::new();
    let mut client = PREFACE.to_vec();
    client.extend(frame(kind::SETTINGS, 0, 0, &[]));
    let mut out = feed_all(&mut h, Direction::Ingress, &client, 4096, 0);
    for id in [1u32, 3, 5] {
        let path = format!("/upload/{id}");
        let head = [(":method", "POST"), (":scheme", "http"), (":path", &path)];
        let head = frame(
            kind::HEADERS,
            flags::END_HEADERS,
            id,
            &block(&mut enc, &head),
        );
        out.extend(feed_all(
            &mut h,
            Direction::Ingress,
            &head,
            4096,
            10 * id as u64,
        ));
        let answer = block(&mut server_enc, &[(":status", "413")]);
        let answer = frame(
            kind::HEADERS,
            flags::END_HEADERS | flags::END_STREAM,
            id,
            &answer,
        );
        out.extend(feed_all(
            &mut h,
            Direction::Egress,
            &answer,
            4096,
            10 * id as u64 + 1,
        ));
    }
    let reported: Vec<_> = out
        .iter()
        .map(|e| (e.request.target.as_str(), e.completeness))
        .collect();
    assert_eq!(reported, [("/upload/1", Completeness::RequestCut)]);
    assert_eq!(h.open_streams(), [3, 5]);
    assert_eq!(h.take_notes().streams_refused, 0);
}
