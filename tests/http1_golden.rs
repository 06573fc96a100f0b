//! Golden tests of the HTTP/1 parser on real byte streams: conversations between curl (or a raw
//! Python client) and nginx or the Python test server, recorded by
//! tests/fixtures/http1/record.sh. Each `NAME.expected` lists, by hand, the exchanges the
//! recorded command made: `METHOD TARGET STATUS req_body=N resp_body=M`.
//!
//! Every conversation is parsed from the client's side and from the server's, whole and in
//! many different splits; the answer must always be the expected one.

use std::path::{Path, PathBuf};

use netsonde::protocols::{
    Completeness, Direction, Exchange, Role, Segment,
    http1::{Http1, Limits, Notes},
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/http1")
}

fn describe(e: &Exchange) -> String {
    let complete = match e.completeness {
        Completeness::Complete => "",
        Completeness::BodyCut => " body_cut",
        Completeness::FramingLost => " framing_lost",
        Completeness::BytesLost => " bytes_lost",
        Completeness::NoResponse => " no_response",
        Completeness::RequestCut => " request_cut",
    };
    format!(
        "{} {} {} req_body={} resp_body={}{complete}",
        e.request.method,
        e.request.target,
        e.response.status,
        e.request_body_bytes,
        e.response_body_bytes
    )
}

/// Feeds the requests then the responses (every response follows its request), `chunk` bytes
/// at a time, from the side of `role`, then closes.
fn parse(
    requests: &[u8],
    responses: &[u8],
    role: Role,
    chunk: usize,
) -> (Vec<String>, Option<Role>, Notes) {
    let (request_dir, response_dir) = match role {
        Role::Client => (Direction::Egress, Direction::Ingress),
        Role::Server => (Direction::Ingress, Direction::Egress),
    };
    let mut http = Http1::new(Limits::default());
    let mut out = Vec::new();
    let mut t = 0;
    for (dir, bytes) in [(request_dir, requests), (response_dir, responses)] {
        for piece in bytes.chunks(chunk) {
            t += 1000;
            http.feed(dir, &Segment::full(piece, t, t + 100), &mut out);
        }
    }
    http.close(t + 1000, true, &mut out);
    (
        out.iter().map(describe).collect(),
        http.role(),
        http.take_notes(),
    )
}

#[test]
fn recorded_conversations_parse_to_what_was_asked() {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".expected")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 8, "fixtures missing: {names:?}");
    for name in names {
        let read = |ext: &str| std::fs::read(fixtures().join(format!("{name}.{ext}"))).unwrap();
        let (requests, responses) = (read("request.bin"), read("response.bin"));
        let expected: Vec<String> = String::from_utf8(read("expected"))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        for role in [Role::Client, Role::Server] {
            for chunk in [usize::MAX, 1, 2, 3, 7, 13, 64, 100, 1000] {
                let (got, seen_role, notes) = parse(&requests, &responses, role, chunk);
                assert_eq!(got, expected, "{name} as {role:?} in chunks of {chunk}");
                assert_eq!(seen_role, Some(role), "{name}");
                assert_eq!(
                    notes,
                    Notes::default(),
                    "{name} as {role:?} in chunks of {chunk}"
                );
            }
        }
    }
}
