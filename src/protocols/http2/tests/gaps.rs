//! Bytes missing from a connection: whatever goes, nothing is invented, every stream is
//! accounted for, and a direction finds its place again; a stream is marked only for bytes of
//! its own that went.

use super::*;

/// Where each frame starts in `bytes` (frames from `from` on).
fn frame_starts(bytes: &[u8], from: usize) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = from;
    while at + 9 <= bytes.len() {
        starts.push(at);
        at += 9 + FrameHeader::parse(&bytes[at..]).unwrap().len as usize;
    }
    starts
}

/// Cuts `bytes` into syscall-like segments of `chunk` bytes as the kernel reports them: each
/// with the first frame start in it (`boundary`, when `kernel_walks`), and segment `lost`
/// replaced by a gap.
fn segments<'a>(
    bytes: &'a [u8],
    starts: &[usize],
    chunk: usize,
    lost: usize,
    kernel_walks: bool,
) -> Vec<Segment<'a>> {
    bytes
        .chunks(chunk)
        .enumerate()
        .map(|(i, piece)| {
            let at = i * chunk;
            let t = 1000 + i as u64;
            if i == lost {
                return Segment::gap(piece.len() as u64, t);
            }
            let boundary = starts
                .iter()
                .find(|&&s| s >= at && s <= at + piece.len())
                .filter(|_| kernel_walks)
                .map(|&s| (s - at) as u64);
            Segment {
                boundary,
                ..Segment::full(piece, t, t)
            }
        })
        .collect()
}

/// Whatever segment of the server's bytes goes missing, and however they were cut: nothing is
/// invented (every exchange is a stream that happened, reported once, exact when complete),
/// every stream is accounted for (reported, left out as lost, or unanswered), and with the
/// kernel's walk the direction always finds its place again.
#[test]
fn losing_any_segment_never_invents_and_finds_its_place_again() {
    const STREAMS: u32 = 6;
    const BODY: usize = 700;
    let (client, server) = conversation(STREAMS, BODY);
    let starts = frame_starts(&server, 0);
    // Over all cases: (bytes_lost exchanges, lost streams, resyncs), so none of it goes untried.
    let mut tried = (0, 0, 0);
    for chunk in [7, 64, 300, 1000] {
        for kernel_walks in [true, false] {
            for lost in 0..server.len().div_ceil(chunk) {
                let mut h = Http2::new(Limits::default());
                let mut out = Vec::new();
                h.feed(Direction::Egress, &Segment::full(&client, 0, 0), &mut out);
                for seg in segments(&server, &starts, chunk, lost, kernel_walks) {
                    h.feed(Direction::Ingress, &seg, &mut out);
                }
                let before_close = h.take_notes();
                h.close(0, false, &mut out);
                let notes = h.take_notes();
                let case = format!("chunk {chunk}, segment {lost} lost, walk {kernel_walks}");
                let mut seen = std::collections::HashSet::new();
                for e in &out {
                    let i: u32 = e.request.target["/items/".len()..].parse().unwrap();
                    assert!(i < STREAMS && seen.insert(i), "{case}: {e:?}");
                    assert_eq!((&*e.request.method, e.response.status), ("GET", 200));
                    match e.completeness {
                        Completeness::Complete => {
                            assert_eq!(e.response_body_bytes, BODY as u64, "{case}")
                        }
                        _ => assert!(e.response_body_bytes <= BODY as u64, "{case}"),
                    }
                }
                let lost_streams = before_close.lost_streams + notes.lost_streams;
                tried.0 += out
                    .iter()
                    .filter(|e| e.completeness == Completeness::BytesLost)
                    .count();
                tried.1 += lost_streams;
                tried.2 += before_close.resyncs;
                let unanswered = before_close.unanswered_requests + notes.unanswered_requests;
                assert_eq!(
                    out.len() as u64 + lost_streams + unanswered,
                    u64::from(STREAMS),
                    "{case}: every stream accounted for"
                );
                if kernel_walks && before_close.broken > 0 {
                    let last_start = *starts.last().unwrap();
                    if (lost + 1) * chunk <= last_start {
                        assert_eq!(
                            before_close.resyncs, before_close.broken,
                            "{case}: a boundary came after the gap"
                        );
                    }
                }
            }
        }
    }
    assert!(tried.0 > 0 && tried.1 > 0 && tried.2 > 0, "{tried:?}");
}

/// A gap hides a DATA frame's header in the middle of one response and the head of another:
/// the first is reported with `bytes_lost`, the second is left out and counted.
#[test]
fn streams_in_flight_across_a_gap_are_marked_or_left_out() {
    let mut c = loona_hpack::Encoder::new();
    let mut s = loona_hpack::Encoder::new();
    let mut client = PREFACE.to_vec();
    for (id, path) in [(1, "/a"), (3, "/b")] {
        let b = block(&mut c, &[(":method", "GET"), (":path", path)]);
        client.extend(frame(
            kind::HEADERS,
            flags::END_HEADERS | flags::END_STREAM,
            id,
            &b,
        ));
    }
    let ok = |enc: &mut loona_hpack::Encoder<'_>| block(enc, &[(":status", "200")]);
    let mut server = frame(kind::HEADERS, flags::END_HEADERS, 1, &ok(&mut s));
    server.extend(frame(kind::DATA, 0, 1, &[b'a'; 100]));
    let gap_from = server.len();
    server.extend(frame(kind::DATA, 0, 1, &[b'a'; 100]));
    server.extend(frame(kind::HEADERS, flags::END_HEADERS, 3, &ok(&mut s)));
    let gap_to = server.len();
    server.extend(frame(kind::DATA, flags::END_STREAM, 3, &[b'b'; 10]));
    let resume = server.len();
    server.extend(frame(kind::DATA, flags::END_STREAM, 1, &[b'a'; 100]));

    let mut h = Http2::new(Limits::default());
    let mut out = Vec::new();
    h.feed(Direction::Egress, &Segment::full(&client, 0, 0), &mut out);
    h.feed(
        Direction::Ingress,
        &Segment::full(&server[..gap_from], 1, 1),
        &mut out,
    );
    h.feed(
        Direction::Ingress,
        &Segment::gap((gap_to - gap_from) as u64, 2),
        &mut out,
    );
    let seg = Segment {
        boundary: Some(0),
        ..Segment::full(&server[gap_to..resume], 3, 3)
    };
    h.feed(Direction::Ingress, &seg, &mut out);
    h.feed(
        Direction::Ingress,
        &Segment::full(&server[resume..], 4, 4),
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].request.target, "/a");
    assert_eq!(out[0].completeness, Completeness::BytesLost);
    assert_eq!(out[0].response_body_bytes, 200, "what was seen");
    assert_eq!(out[0].response_messages, None);
    let notes = h.take_notes();
    assert_eq!((notes.broken, notes.resyncs, notes.lost_streams), (1, 1, 1));
    assert!(h.open_streams().is_empty());
}

/// The kernel's walk says where frames start; where this parser disagrees, the kernel is right
/// (bytes went missing that no position showed).
#[test]
fn a_disagreement_with_the_kernels_walk_is_a_lost_place() {
    let (client, _) = conversation(3, 0);
    let frames = frames_of(&client[PREFACE.len()..]);
    let mut h = Http2::new(Limits::default());
    let mut out = Vec::new();
    let mut first = PREFACE.to_vec();
    first.extend(&frames[0]);
    first.extend(&frames[1][..5]);
    h.feed(Direction::Egress, &Segment::full(&first, 0, 0), &mut out);
    // The rest of frames[1] never arrived; three bytes of something else did, then frames[2],
    // which starts where the kernel says. (No chain of frames starts the segment: only the
    // kernel's word shows where frames are.)
    let mut bytes = b"xyz".to_vec();
    bytes.extend(&frames[2]);
    let seg = Segment {
        boundary: Some(3),
        ..Segment::full(&bytes, 1, 1)
    };
    h.feed(Direction::Egress, &seg, &mut out);
    let notes = h.take_notes();
    assert_eq!((notes.broken, notes.resyncs), (1, 1));
    assert_eq!(h.open_streams(), [3]);
}

/// Bytes a direction lost before a stream's response began were not that response's: found
/// again at a boundary, the response that follows is complete and exact (a client that reads
/// the tail of a lost burst only after sending its next request shows the loss then).
#[test]
fn a_response_that_begins_after_a_gap_is_whole() {
    let mut c = loona_hpack::Encoder::new();
    let mut s = loona_hpack::Encoder::new();
    let get = |enc: &mut loona_hpack::Encoder<'_>, id: u32, path: &str| {
        let b = block(enc, &[(":method", "GET"), (":path", path)]);
        frame(
            kind::HEADERS,
            flags::END_HEADERS | flags::END_STREAM,
            id,
            &b,
        )
    };
    let mut first = PREFACE.to_vec();
    first.extend(get(&mut c, 1, "/big"));
    let ok = |enc: &mut loona_hpack::Encoder<'_>| block(enc, &[(":status", "200")]);
    let mut server = frame(kind::HEADERS, flags::END_HEADERS, 1, &ok(&mut s));
    server.extend(frame(kind::DATA, 0, 1, &[b'a'; 100]));
    let gap_from = server.len();
    server.extend(frame(kind::DATA, flags::END_STREAM, 1, &[b'a'; 100]));
    let gap_to = server.len();
    server.extend(frame(kind::HEADERS, flags::END_HEADERS, 3, &ok(&mut s)));
    server.extend(frame(kind::DATA, flags::END_STREAM, 3, &[b'b'; 11]));

    let mut h = Http2::new(Limits::default());
    let mut out = Vec::new();
    h.feed(Direction::Egress, &Segment::full(&first, 0, 0), &mut out);
    h.feed(
        Direction::Ingress,
        &Segment::full(&server[..gap_from], 1, 1),
        &mut out,
    );
    // The next request goes out before the lost tail of the first response shows.
    h.feed(
        Direction::Egress,
        &Segment::full(&get(&mut c, 3, "/after"), 2, 2),
        &mut out,
    );
    h.feed(
        Direction::Ingress,
        &Segment::gap((gap_to - gap_from) as u64, 3),
        &mut out,
    );
    let seg = Segment {
        boundary: Some(0),
        ..Segment::full(&server[gap_to..], 4, 4)
    };
    h.feed(Direction::Ingress, &seg, &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].request.target, "/after");
    assert_eq!(out[0].completeness, Completeness::Complete);
    assert_eq!(out[0].response_body_bytes, 11);
    let notes = h.take_notes();
    assert_eq!((notes.broken, notes.resyncs), (1, 1));
    assert_eq!(h.open_streams(), [1], "the first's end went by unseen");
}
