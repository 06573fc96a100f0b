use proptest::prelude::*;

use super::*;
use crate::protocols::Direction::{Egress as Out, Ingress as In};

/// One step of a scripted connection: bytes that went one way, or a gap of `n` unseen bytes.
#[derive(Clone, Debug)]
enum Step {
    Data(Direction, Vec<u8>),
    /// Captured prefix and total length of one syscall.
    Partial(Direction, Vec<u8>, u64),
}

fn data(dir: Direction, bytes: &[u8]) -> Step {
    Step::Data(dir, bytes.to_vec())
}

/// Feeds the steps at 1 ms intervals (segment i spans [i ms, i ms + 0.5 ms]) and closes if
/// asked. Returns exchanges as (method, target, status) plus the full list.
fn run_with(mut http: Http1, steps: &[Step], close: bool) -> (Vec<Exchange>, Notes, Status) {
    let mut out = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let t = (i as u64 + 1) * 1_000_000;
        match step {
            Step::Data(dir, bytes) => {
                http.feed(*dir, &Segment::full(bytes, t, t + 500_000), &mut out)
            }
            Step::Partial(dir, bytes, len) => http.feed(
                *dir,
                &Segment {
                    data: bytes,
                    len: *len,
                    first_ns: t,
                    last_ns: t + 500_000,
                    boundary: None,
                },
                &mut out,
            ),
        }
    }
    if close {
        http.close((steps.len() as u64 + 1) * 1_000_000, true, &mut out);
    }
    let status = http.status();
    (out, http.take_notes(), status)
}

fn run(steps: &[Step], close: bool) -> (Vec<Exchange>, Notes, Status) {
    run_with(Http1::new(Limits::default()), steps, close)
}

fn summary(exchanges: &[Exchange]) -> Vec<(String, String, u16)> {
    exchanges
        .iter()
        .map(|e| {
            (
                e.request.method.to_string(),
                e.request.target.clone(),
                e.response.status,
            )
        })
        .collect()
}

fn s(method: &str, target: &str, status: u16) -> (String, String, u16) {
    (method.to_string(), target.to_string(), status)
}

const GET_X: &[u8] =
    b"GET /x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
const OK_5: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello";

#[test]
fn a_server_exchange_with_timing_and_sizes() {
    let (ex, notes, status) = run(&[data(In, GET_X), data(Out, OK_5)], false);
    assert_eq!(summary(&ex), [s("GET", "/x", 200)]);
    let e = &ex[0];
    assert_eq!(
        (e.request_start_ns, e.request_end_ns),
        (1_000_000, 1_500_000)
    );
    assert_eq!(
        (e.response_start_ns, e.response_end_ns),
        (2_000_000, 2_500_000)
    );
    assert_eq!(e.duration_ns(), 1_500_000);
    assert_eq!(
        (e.request_head_bytes, e.request_body_bytes),
        (GET_X.len() as u64, 0)
    );
    assert_eq!(
        (e.response_head_bytes, e.response_body_bytes),
        (OK_5.len() as u64 - 5, 5)
    );
    assert_eq!(e.request.header("user-agent"), Some("curl/7.88.1"));
    assert_eq!(e.completeness, Completeness::Complete);
    assert_eq!((notes, status), (Notes::default(), Status::Active));
}

#[test]
fn the_role_follows_who_sends_the_request() {
    let mut server = Http1::new(Limits::default());
    assert_eq!(server.role(), None);
    server.feed(In, &Segment::full(GET_X, 1, 2), &mut Vec::new());
    assert_eq!(server.role(), Some(Role::Server));
    let mut client = Http1::new(Limits::default());
    client.feed(Out, &Segment::full(GET_X, 1, 2), &mut Vec::new());
    assert_eq!(client.role(), Some(Role::Client));
}

#[test]
fn keep_alive_requests_in_sequence() {
    let mut steps = Vec::new();
    for i in 0..100 {
        steps.push(data(
            Out,
            format!("GET /k/{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes(),
        ));
        steps.push(data(In, OK_5));
    }
    let (ex, notes, _) = run(&steps, true);
    assert_eq!(ex.len(), 100);
    assert_eq!(ex[99].request.target, "/k/99");
    assert_eq!(notes, Notes::default());
}

#[test]
fn pipelined_requests_in_one_write_and_responses_in_one_read() {
    let requests = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\nHEAD /c HTTP/1.1\r\nHost: h\r\n\r\n";
    let responses = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nbbHTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
    let (ex, notes, _) = run(&[data(Out, requests), data(In, responses)], false);
    assert_eq!(
        summary(&ex),
        [
            s("GET", "/a", 200),
            s("GET", "/b", 404),
            s("HEAD", "/c", 200)
        ]
    );
    assert_eq!(ex[2].response_body_bytes, 0, "HEAD responses have no body");
    assert_eq!(notes, Notes::default());
}

#[test]
fn chunked_response_split_at_awkward_places() {
    let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\n";
    for cut in [
        1,
        40,
        48,
        50,
        55,
        58,
        60,
        90,
        response.len() - 3,
        response.len() - 1,
    ] {
        let (a, b) = response.split_at(cut);
        let (ex, notes, _) = run(
            &[
                data(Out, GET_X),
                data(In, a),
                data(In, b),
                data(Out, GET_X),
                data(In, OK_5),
            ],
            false,
        );
        assert_eq!(
            summary(&ex),
            [s("GET", "/x", 200), s("GET", "/x", 200)],
            "cut at {cut}"
        );
        assert_eq!(
            ex[0].response_end_ns, 3_500_000,
            "ends with the second piece (cut at {cut})"
        );
        assert_eq!(
            ex[0].response_body_bytes,
            response.len() as u64 - 47,
            "cut at {cut}"
        );
        assert_eq!(notes, Notes::default(), "cut at {cut}");
    }
}

#[test]
fn post_with_a_body_across_segments() {
    let head = b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello";
    let (ex, _, _) = run(
        &[data(In, head), data(In, b" world"), data(Out, OK_5)],
        false,
    );
    assert_eq!(summary(&ex), [s("POST", "/upload", 200)]);
    assert_eq!(
        (ex[0].request_body_bytes, ex[0].request_end_ns),
        (11, 2_500_000)
    );
}

#[test]
fn bodiless_statuses_and_interim_responses() {
    let steps = [
        data(Out, b"GET /nc HTTP/1.1\r\n\r\n"),
        data(In, b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"),
        data(Out, b"GET /nm HTTP/1.1\r\nIf-None-Match: \"x\"\r\n\r\n"),
        data(
            In,
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        ),
        data(
            Out,
            b"PUT /c HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        ),
        data(In, b"HTTP/1.1 100 Continue\r\n\r\n"),
        data(Out, b"abc"),
        data(In, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
    ];
    let (ex, notes, _) = run(&steps, false);
    assert_eq!(
        summary(&ex),
        [
            s("GET", "/nc", 204),
            s("GET", "/nm", 304),
            s("PUT", "/c", 201)
        ]
    );
    assert_eq!(ex[2].informational, 1);
    assert_eq!(ex[2].request_body_bytes, 3);
    assert_eq!(notes, Notes::default());
}

#[test]
fn a_response_that_ends_at_close() {
    let steps = [
        data(Out, b"GET /old HTTP/1.0\r\n\r\n"),
        data(
            In,
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nsome",
        ),
        data(In, b" more"),
    ];
    let (ex, _, _) = run(&steps, false);
    assert!(ex.is_empty(), "not over until the connection closes");
    let (ex, notes, _) = run(&steps, true);
    assert_eq!(summary(&ex), [s("GET", "/old", 200)]);
    assert_eq!(
        (ex[0].response_body_bytes, ex[0].response_end_ns),
        (9, 3_500_000)
    );
    assert_eq!(ex[0].completeness, Completeness::Complete);
    assert_eq!(notes, Notes::default());
}

#[test]
fn close_mid_body_reports_a_cut_body_and_the_unanswered_request_as_failed() {
    let steps = [
        data(Out, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"),
        data(In, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"),
    ];
    let (ex, notes, _) = run(&steps, true);
    assert_eq!(summary(&ex), [s("GET", "/a", 200), s("GET", "/b", 0)]);
    assert_eq!(ex[0].completeness, Completeness::BodyCut);
    // No response: it ends at the close (3 ms), with nothing invented about the answer.
    assert_eq!(ex[1].completeness, Completeness::NoResponse);
    assert_eq!(
        (ex[1].response_start_ns, ex[1].response_end_ns),
        (3_000_000, 3_000_000)
    );
    assert_eq!(ex[1].response, Response::default());
    assert_eq!(notes.unanswered_requests, 1);
    assert_eq!(notes.incomplete_requests, 0);
}

/// Requests waiting when the connection closes while the answering side had lost its place
/// (a gap, then bytes skipped looking for a message start) are only counted: the skipped bytes
/// may have been their answers.
#[test]
fn no_response_is_not_claimed_for_answers_that_were_skipped() {
    let steps = [
        data(Out, b"GET /a HTTP/1.1\r\n\r\n"),
        Step::Partial(In, b"HTTP/1.1 200 OK\r\nContent-Len".to_vec(), 300),
        data(Out, b"GET /b HTTP/1.1\r\n\r\n"),
        data(In, b"bytes of something, not a message start"),
    ];
    let (ex, notes, _) = run(&steps, true);
    assert!(ex.is_empty(), "{ex:?}");
    // /a: its response head was cut (hidden); /b: waiting at the close.
    assert_eq!(notes.unanswered_requests, 2);
    assert_eq!(notes.hidden_messages, 1);
}

/// One gap can hide several responses and is taken for one: what waits after it cannot be
/// said to have had no answer.
#[test]
fn no_response_is_not_claimed_after_a_gap_in_the_answers() {
    let steps = [
        data(Out, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"),
        Step::Partial(In, Vec::new(), 200),
    ];
    let (ex, notes, _) = run(&steps, true);
    assert!(ex.is_empty(), "{ex:?}");
    assert_eq!((notes.unanswered_requests, notes.hidden_messages), (2, 1));
}

/// A server that answers before the request body has all arrived (413 to an upload, nginx's
/// 405 to a POST on a static file) and then reads the rest: the exchange is reported once the
/// body ends, with all of it, and the next request is not charged for it.
#[test]
fn a_response_before_the_request_body_ends_waits_for_the_body() {
    let steps = [
        data(Out, b"POST /up HTTP/1.1\r\nContent-Length: 10\r\n\r\n1234"),
        data(
            In,
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n",
        ),
        data(Out, b"567890"),
        data(Out, b"GET /next HTTP/1.1\r\n\r\n"),
        data(In, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ];
    let mut http = Http1::new(Limits::default());
    let mut out = Vec::new();
    for (i, step) in steps[..2].iter().enumerate() {
        let Step::Data(dir, bytes) = step else {
            unreachable!()
        };
        let t = (i as u64 + 1) * 1_000_000;
        http.feed(*dir, &Segment::full(bytes, t, t + 500_000), &mut out);
    }
    assert!(out.is_empty(), "held until the request body ends");
    let (ex, notes, _) = run(&steps, true);
    assert_eq!(
        summary(&ex),
        [s("POST", "/up", 413), s("GET", "/next", 200)]
    );
    assert_eq!(
        (ex[0].request_body_bytes, ex[0].request_end_ns),
        (10, 3_500_000)
    );
    assert_eq!(ex[0].completeness, Completeness::Complete);
    assert_eq!(ex[1].request_body_bytes, 0);
    assert_eq!(notes, Notes::default());
}

#[test]
fn an_early_response_whose_request_body_is_cut_says_so() {
    let steps = [
        data(
            Out,
            b"POST /up HTTP/1.1\r\nContent-Length: 1000\r\n\r\n1234",
        ),
        data(
            In,
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ),
        data(Out, b"5678"),
    ];
    let (ex, notes, _) = run(&steps, true);
    assert_eq!(summary(&ex), [s("POST", "/up", 413)]);
    assert_eq!(ex[0].request_body_bytes, 8);
    assert_eq!(ex[0].completeness, Completeness::RequestCut);
    assert_eq!(notes.incomplete_requests, 1);
    // Forgotten instead of closed (idle, evicted): the same, reported with what was seen.
    let mut http = Http1::new(Limits::default());
    let mut out = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let Step::Data(dir, bytes) = step else {
            unreachable!()
        };
        let t = (i as u64 + 1) * 1_000_000;
        http.feed(*dir, &Segment::full(bytes, t, t + 500_000), &mut out);
    }
    http.abandon(&mut out);
    assert_eq!(summary(&out), [s("POST", "/up", 413)]);
    assert_eq!(out[0].completeness, Completeness::RequestCut);
    assert_eq!(http.take_notes().incomplete_requests, 1);
}

/// Slowloris: heads begun and never finished are counted when the connection closes, or when
/// it is forgotten; nothing is reported for them.
#[test]
fn heads_never_finished_are_counted_incomplete() {
    let steps = [data(Out, b"GET /slow HTTP/1.1\r\nX-a: 1\r\n")];
    let (ex, notes, _) = run(&steps, true);
    assert!(ex.is_empty());
    assert_eq!(notes.incomplete_requests, 1);
    assert_eq!(notes.unanswered_requests, 0);
    // The first message of a connection: which side requests is not known yet.
    let mut http = Http1::new(Limits::default());
    let mut out = Vec::new();
    http.feed(
        Out,
        &Segment::full(b"GET /slow HTTP/1.1\r\n", 1, 2),
        &mut out,
    );
    http.abandon(&mut out);
    assert!(out.is_empty());
    assert_eq!(http.take_notes().incomplete_requests, 1);
    // After a whole exchange, on a keep-alive connection.
    let steps = [
        data(Out, GET_X),
        data(In, b"HTTP/1.1 204 No Content\r\n\r\n"),
        data(Out, b"GET /slow HTTP/1.1\r\nX-a"),
    ];
    let (ex, notes, _) = run(&steps, true);
    assert_eq!(summary(&ex), [s("GET", "/x", 204)]);
    assert_eq!(notes.incomplete_requests, 1);
}

/// A connection forgotten with a request waiting: counted as unanswered, not reported (its
/// answer may still come, unseen).
#[test]
fn a_forgotten_connection_counts_its_waiting_requests() {
    let mut http = Http1::new(Limits::default());
    let mut out = Vec::new();
    http.feed(Out, &Segment::full(GET_X, 1, 2), &mut out);
    http.abandon(&mut out);
    assert!(out.is_empty());
    let notes = http.take_notes();
    assert_eq!(
        (notes.unanswered_requests, notes.incomplete_requests),
        (1, 0)
    );
}

#[test]
fn gaps_inside_bodies_cost_nothing() {
    // A 1 MiB body of which the capture saw 4 KiB per write.
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n";
    let mut first = head.to_vec();
    first.extend_from_slice(&[b'x'; 4096 - 44]);
    let steps = [
        data(Out, GET_X),
        Step::Partial(In, first, 65536 + head.len() as u64),
        Step::Partial(In, vec![b'x'; 4096], 1048576 - 65536),
        data(Out, GET_X),
        data(In, OK_5),
    ];
    let (ex, notes, _) = run(&steps, false);
    assert_eq!(summary(&ex), [s("GET", "/x", 200), s("GET", "/x", 200)]);
    assert_eq!(ex[0].response_body_bytes, 1048576);
    assert_eq!(ex[0].response_end_ns, 3_500_000);
    assert_eq!(notes, Notes::default());
}

#[test]
fn a_hidden_chunk_size_leaves_the_body_unframed_until_the_next_message() {
    // Chunked upload written in one syscall larger than the captured prefix.
    let mut upload = b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n186a0\r\n".to_vec();
    upload.extend_from_slice(&[b'u'; 100]);
    let total = upload.len() as u64 - 100 + 100_000 + b"\r\n0\r\n\r\n".len() as u64;
    let steps = [
        Step::Partial(Out, upload, total),
        data(In, OK_5),
        data(Out, GET_X),
        data(In, OK_5),
    ];
    let (ex, notes, _) = run(&steps, false);
    assert_eq!(summary(&ex), [s("POST", "/up", 200), s("GET", "/x", 200)]);
    assert_eq!(notes.unframed_bodies, 1);
    assert_eq!(notes.unanswered_requests + notes.orphan_responses, 0);
}

#[test]
fn a_chunked_response_losing_its_framing_ends_at_the_last_byte_before_the_next_response() {
    let mut response =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n".to_vec();
    let captured = response.len();
    response.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
    let steps = [
        data(Out, GET_X),
        Step::Partial(In, response[..captured].to_vec(), response.len() as u64),
        data(Out, GET_X),
        data(In, OK_5),
    ];
    let (ex, notes, _) = run(&steps, false);
    assert_eq!(summary(&ex), [s("GET", "/x", 200), s("GET", "/x", 200)]);
    assert_eq!(ex[0].completeness, Completeness::FramingLost);
    assert_eq!(ex[0].response_end_ns, 2_500_000);
    assert_eq!(ex[0].response_body_bytes, response.len() as u64 - 47);
    assert_eq!(notes.unframed_bodies, 1);
}

#[test]
fn a_hidden_request_does_not_shift_the_pairing() {
    // The second request's head lies entirely in a gap (as if its record was lost).
    let steps = [
        data(Out, b"GET /one HTTP/1.1\r\n\r\n"),
        Step::Partial(Out, Vec::new(), 20),
        data(Out, b"GET /three HTTP/1.1\r\n\r\n"),
        data(In, OK_5),
        data(In, b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"),
        data(In, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
    ];
    let (ex, notes, _) = run(&steps, false);
    assert_eq!(
        summary(&ex),
        [s("GET", "/one", 200), s("GET", "/three", 201)]
    );
    assert_eq!((notes.hidden_messages, notes.orphan_responses), (1, 1));
}

#[test]
fn a_head_longer_than_its_captured_prefix_is_cut_and_counted() {
    // The second request's head goes on past the 30 bytes copied of its 9 000-byte write: it
    // is lost (its response is not paired with anything) and counted as cut.
    let steps = [
        data(Out, b"GET /one HTTP/1.1\r\n\r\n"),
        data(In, OK_5),
        Step::Partial(Out, b"GET /two HTTP/1.1\r\nX-Big: bbbb".to_vec(), 9_000),
        data(In, OK_5),
        data(Out, b"GET /three HTTP/1.1\r\n\r\n"),
        data(In, OK_5),
    ];
    let (ex, notes, _) = run(&steps, false);
    assert_eq!(
        summary(&ex),
        [s("GET", "/one", 200), s("GET", "/three", 200)]
    );
    assert_eq!((notes.heads_cut, notes.hidden_messages), (1, 1));
    // A head hidden whole (nothing copied) is not a cut one.
    let (_, notes, _) = run(
        &[
            data(Out, b"GET /one HTTP/1.1\r\n\r\n"),
            data(In, OK_5),
            Step::Partial(Out, Vec::new(), 9_000),
        ],
        false,
    );
    assert_eq!((notes.heads_cut, notes.hidden_messages), (0, 1));
}

#[test]
fn a_hidden_response_consumes_its_request() {
    let steps = [
        data(Out, b"GET /one HTTP/1.1\r\n\r\n"),
        Step::Partial(In, Vec::new(), 43),
        data(Out, b"GET /two HTTP/1.1\r\n\r\n"),
        data(In, OK_5),
    ];
    let (ex, notes, _) = run(&steps, false);
    assert_eq!(summary(&ex), [s("GET", "/two", 200)]);
    assert_eq!((notes.hidden_messages, notes.unanswered_requests), (1, 1));
}

#[test]
fn bytes_that_are_not_http_make_the_connection_unknown() {
    for first in [
        &b"\x16\x03\x01\x00\xa5\x01\x00\x00"[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"220 smtp.example ESMTP\r\n",
    ] {
        let (ex, _, status) = run(
            &[
                data(Out, first),
                data(In, OK_5),
                data(Out, GET_X),
                data(In, OK_5),
            ],
            true,
        );
        assert!(ex.is_empty(), "{first:?}");
        assert_eq!(status, Status::NotHttp, "{first:?}");
    }
}

#[test]
fn joining_midstream_waits_for_a_message_start() {
    let steps = [
        data(In, b"tail of an earlier body"),
        data(Out, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        data(In, b"GET /seen HTTP/1.1\r\nHost: h\r\n\r\n"),
        data(Out, OK_5),
    ];
    let (ex, notes, status) = run_with(Http1::midstream(Limits::default()), &steps, false);
    assert_eq!(summary(&ex), [s("GET", "/seen", 200)]);
    assert_eq!(notes.orphan_responses, 1);
    assert_eq!(status, Status::Active);
}

/// Go's HTTP server reads one byte while it answers a bodyless request (to notice a client
/// going away), so the next request can come as `P`, then `OST /submit HTTP/1.1…`, which is a
/// valid request line of its own for a method `OST`. Joined mid-stream, the side must read
/// one `POST`, from the `P`'s time.
#[test]
fn joining_midstream_finds_a_request_whose_first_byte_came_alone() {
    let steps = [
        data(In, OK_5),
        data(Out, b"P"),
        data(
            Out,
            b"OST /submit HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi",
        ),
        data(In, OK_5),
    ];
    let (ex, notes, status) = run_with(Http1::midstream(Limits::default()), &steps, false);
    assert_eq!(summary(&ex), [s("POST", "/submit", 200)]);
    assert_eq!(ex[0].request_start_ns, 2_000_000);
    assert_eq!(ex[0].request_body_bytes, 2);
    assert_eq!(notes.orphan_responses, 1);
    assert_eq!(status, Status::Active);
}

/// What comes before a whole request line is not glued to it when it makes no common method
/// (a short body tail, `ab`, before `GET`), and a held byte does not reach over a gap.
#[test]
fn a_held_segment_joins_only_what_makes_a_common_method_right_after_it() {
    let tail_then_get = [
        data(In, OK_5),
        data(Out, b"ab"),
        data(Out, GET_X),
        data(In, OK_5),
    ];
    let (ex, _, _) = run_with(Http1::midstream(Limits::default()), &tail_then_get, false);
    assert_eq!(summary(&ex), [s("GET", "/x", 200)]);
    let gap_between = [
        data(In, OK_5),
        data(Out, b"P"),
        Step::Partial(Out, Vec::new(), 7),
        data(Out, b"OST /late HTTP/1.1\r\n\r\n"),
        data(In, OK_5),
    ];
    let (ex, _, _) = run_with(Http1::midstream(Limits::default()), &gap_between, false);
    assert_eq!(
        summary(&ex),
        [s("OST", "/late", 200)],
        "after a gap, `OST` is what the bytes say"
    );
}

/// A body whose framing was lost ends where the next request starts, also when that request's
/// first byte came alone; the body keeps what was not the request.
#[test]
fn an_unframed_body_ends_at_a_request_whose_first_byte_came_alone() {
    let mut upload = b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n186a0\r\n".to_vec();
    upload.extend_from_slice(&[b'u'; 100]);
    let total = upload.len() as u64 - 100 + 100_000 + b"\r\n0\r\n\r\n".len() as u64;
    let steps = [
        Step::Partial(Out, upload, total),
        data(Out, b"tail"),
        data(In, OK_5),
        data(Out, b"P"),
        data(Out, b"OST /next HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        data(In, OK_5),
    ];
    let (ex, notes, _) = run(&steps, false);
    assert_eq!(
        summary(&ex),
        [s("POST", "/up", 200), s("POST", "/next", 200)]
    );
    assert_eq!(ex[1].request_start_ns, 4_000_000);
    assert_eq!(notes.unframed_bodies, 1);
}

#[test]
fn joining_midstream_gives_up_on_what_never_looks_like_http() {
    let steps: Vec<Step> = (0..70)
        .map(|i| data(if i % 2 == 0 { In } else { Out }, b"\x00\x01binary"))
        .collect();
    let (ex, _, status) = run_with(Http1::midstream(Limits::default()), &steps, false);
    assert!(ex.is_empty());
    assert_eq!(status, Status::NotHttp);
}

#[test]
fn switching_protocols_stops_parsing() {
    let steps = [
        data(
            Out,
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        ),
        data(
            In,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
        ),
        data(Out, b"GET /not-http-any-more HTTP/1.1\r\n\r\n"),
        data(In, OK_5),
    ];
    let (ex, _, status) = run(&steps, false);
    assert_eq!(summary(&ex), [s("GET", "/ws", 101)]);
    assert_eq!(status, Status::Switched);
}

#[test]
fn an_oversized_head_is_malformed_not_a_memory_leak() {
    let limits = Limits {
        max_head_bytes: 1024,
        ..Limits::default()
    };
    let mut big = b"GET /big HTTP/1.1\r\n".to_vec();
    for i in 0..100 {
        big.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "v".repeat(20)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    let (ex, notes, _) = run_with(
        Http1::new(limits),
        &[
            data(Out, b"GET /ok HTTP/1.1\r\n\r\n"),
            data(In, OK_5),
            data(Out, &big),
            data(In, OK_5),
        ],
        false,
    );
    assert_eq!(summary(&ex), [s("GET", "/ok", 200)]);
    assert_eq!(
        (
            notes.malformed,
            notes.hidden_messages,
            notes.orphan_responses
        ),
        (1, 1, 1)
    );
}

/// A realistic connection: requests and responses of all kinds, as whole writes per message.
fn conversation() -> Vec<Step> {
    vec![
        data(Out, GET_X),
        data(In, OK_5),
        data(Out, b"POST /p HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody"),
        data(
            In,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
        ),
        data(Out, b"HEAD /h HTTP/1.1\r\n\r\nGET /p2 HTTP/1.1\r\n\r\n"),
        data(
            In,
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        ),
        data(Out, b"GET /last HTTP/1.1\r\nConnection: close\r\n\r\n"),
        data(
            In,
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close",
        ),
    ]
}

fn conversation_bytes() -> (Vec<u8>, Vec<u8>) {
    let (mut out, mut inn) = (Vec::new(), Vec::new());
    for step in conversation() {
        if let Step::Data(dir, bytes) = step {
            if dir == Out {
                out.extend(bytes)
            } else {
                inn.extend(bytes)
            }
        }
    }
    (out, inn)
}

#[test]
fn the_conversation_parses_whole() {
    let (ex, notes, _) = run(&conversation(), true);
    assert_eq!(
        summary(&ex),
        [
            s("GET", "/x", 200),
            s("POST", "/p", 200),
            s("HEAD", "/h", 200),
            s("GET", "/p2", 204),
            s("GET", "/last", 200)
        ]
    );
    assert_eq!(notes, Notes::default());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Re-splitting each direction's bytes anywhere (messages interleaved in order) gives the
    /// same exchanges.
    #[test]
    fn any_split_gives_the_same_exchanges(cuts in proptest::collection::vec(1usize..40, 1..80)) {
        let whole = summary(&run(&conversation(), true).0);
        // Split every step's bytes into pieces of the given sizes, keeping step order.
        let mut steps = Vec::new();
        let mut c = cuts.iter().cycle();
        for step in conversation() {
            let Step::Data(dir, bytes) = step else { unreachable!() };
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let n = (*c.next().unwrap()).min(rest.len());
                steps.push(Step::Data(dir, rest[..n].to_vec()));
                rest = &rest[n..];
            }
        }
        let (ex, notes, _) = run(&steps, true);
        prop_assert_eq!(summary(&ex), whole);
        prop_assert_eq!(notes, Notes::default());
    }

    /// Arbitrary bytes, arbitrarily split and interleaved, with gaps: no panic, bounded output,
    /// and no exchange unless the bytes contain a response start.
    #[test]
    fn garbage_never_panics_or_invents(
        chunks in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..200), 0u64..300), 0..40),
        midstream in any::<bool>(),
    ) {
        let http = if midstream { Http1::midstream(Limits::default()) } else { Http1::new(Limits::default()) };
        let steps: Vec<Step> = chunks
            .into_iter()
            .map(|(out, bytes, extra)| {
                let len = bytes.len() as u64 + extra;
                Step::Partial(if out { Out } else { In }, bytes, len)
            })
            .collect();
        let has_response = steps.iter().any(|s| matches!(s, Step::Partial(_, b, _) if b.windows(5).any(|w| w == b"HTTP/")));
        let (ex, _, _) = run_with(http, &steps, true);
        prop_assert!(ex.is_empty() || has_response);
    }

    /// A capture that stops anywhere yields a prefix of the full capture's exchanges, never a
    /// different or extra one.
    #[test]
    fn truncation_never_invents(stop_out in 0usize..400, stop_in in 0usize..400) {
        let (out, inn) = conversation_bytes();
        let whole = summary(&run(&[data(Out, &out), data(In, &inn)], true).0);
        let (ex, _, _) = run(&[data(Out, &out[..stop_out.min(out.len())]), data(In, &inn[..stop_in.min(inn.len())])], true);
        prop_assert!(ex.len() <= whole.len());
        // A request whose response the capture cut off is reported as unanswered (status 0),
        // never with an answer it did not see.
        for (got, full) in ex.iter().zip(&whole) {
            if got.completeness == Completeness::NoResponse {
                prop_assert_eq!((&*got.request.method, &got.request.target, 0), (full.0.as_str(), &full.1, got.response.status));
            } else {
                prop_assert_eq!(&(got.request.method.to_string(), got.request.target.clone(), got.response.status), full);
            }
        }
    }
}
