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
