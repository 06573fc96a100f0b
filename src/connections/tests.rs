//! The tracker fed with events built as the kernel programs build them.

use netsonde_common::{kind, syscall};

use crate::protocols::Completeness;

use super::*;

mod batch;
mod ending;

const CLIENT: u32 = 100;
const SERVER: u32 = 200;
const SOCK_C: u64 = 0xffff_8880_0000_1000;
const SOCK_S: u64 = 0xffff_8880_0000_2000;

fn config() -> TrackerConfig {
    TrackerConfig {
        max_connections: 16,
        idle_timeout_ns: 1_000_000_000,
        http1: http1::Limits::default(),
    }
}

fn open(tgid: u32, fd: i32, sock: u64, how: u32, local_port: u16, remote_port: u16) -> Ev<'static> {
    let mut comm = [0u8; 16];
    comm[..4].copy_from_slice(b"test");
    Ev::Other(Event::Open(ConnOpenEvent {
        kind: kind::CONN_OPEN,
        origin: how,
        tgid,
        tid: tgid,
        fd,
        family: 2,
        local_port,
        remote_port,
        syscall: syscall::CONNECT,
        ret: 0,
        sock,
        local_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        remote_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        enter_ns: 1,
        exit_ns: 2,
        comm,
        established_ns: 0,
        cgroup_id: 0x5eed,
    }))
}

/// One traced end of a connection: process, fd, socket.
type End = (u32, i32, u64);
const C5: End = (CLIENT, 5, SOCK_C);
const S7: End = (SERVER, 7, SOCK_S);

/// An event as a test builds it: a data event owns its header here (the tracker reads one in
/// place from a batch's bytes) and lends it as an [`Event`].
#[derive(Debug, Clone, Copy)]
enum Ev<'a> {
    Data(DataEvent, &'a [u8]),
    Other(Event<'a>),
}

/// The tracker fed one [`Ev`].
trait HandleEv {
    fn handle_ev(&mut self, event: &Ev, out: &mut Vec<ObservedExchange>);
}

impl HandleEv for Tracker {
    fn handle_ev(&mut self, event: &Ev, out: &mut Vec<ObservedExchange>) {
        self.handle(&event.event(), out);
    }
}

impl Ev<'_> {
    fn event(&self) -> Event<'_> {
        match self {
            Ev::Data(header, payload) => Event::Data { header, payload },
            Ev::Other(event) => *event,
        }
    }

    /// The data event's header, to change.
    fn header_mut(&mut self) -> &mut DataEvent {
        match self {
            Ev::Data(header, _) => header,
            Ev::Other(event) => panic!("not a data event: {event:?}"),
        }
    }
}

/// A data event; `total` > bytes.len() means only a prefix was captured.
fn data((tgid, fd, sock): End, dir: u8, pos: u64, bytes: &[u8], total: u64, t: u64) -> Ev<'_> {
    Ev::Data(
        DataEvent {
            kind: kind::DATA,
            captured: bytes.len() as u32,
            tgid,
            tid: tgid,
            fd,
            syscall: syscall::WRITE,
            direction: dir,
            flags: 0,
            sock,
            bytes: total,
            stream_pos: pos,
            enter_ns: t,
            exit_ns: t + 10,
            kernel: Default::default(),
            h2_frame: netsonde_common::h2_stream::LOST,
        },
        bytes,
    )
}

fn close(tgid: u32, fd: i32, sock: u64) -> Ev<'static> {
    close_at(tgid, fd, sock, [0, 0])
}

/// A close whose socket's streams ended at `ends` (egress, ingress bytes).
fn close_at(tgid: u32, fd: i32, sock: u64, ends: [u64; 2]) -> Ev<'static> {
    Ev::Other(Event::Close(ConnCloseEvent {
        kind: kind::CONN_CLOSE,
        tgid,
        tid: tgid,
        fd,
        sock,
        ts_ns: 99_000,
        egress_bytes: ends[0],
        ingress_bytes: ends[1],
        ..ConnCloseEvent::default()
    }))
}

const REQ: &[u8] = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n";
const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

fn run(events: &[Ev]) -> (Vec<ObservedExchange>, Arc<ConnectionStats>) {
    let stats = Arc::new(ConnectionStats::default());
    let mut tracker = Tracker::new(config(), stats.clone());
    let mut out = Vec::new();
    for e in events {
        tracker.handle_ev(e, &mut out);
    }
    (out, stats)
}

#[test]
fn both_ends_of_a_loopback_exchange() {
    let (out, stats) = run(&[
        open(CLIENT, 5, SOCK_C, origin::CONNECT, 40000, 8080),
        open(SERVER, 7, SOCK_S, origin::ACCEPT, 8080, 40000),
        data(C5, direction::EGRESS, 0, REQ, REQ.len() as u64, 1000),
        data(S7, direction::INGRESS, 0, REQ, REQ.len() as u64, 1100),
        data(S7, direction::EGRESS, 0, RESP, RESP.len() as u64, 1200),
        data(C5, direction::INGRESS, 0, RESP, RESP.len() as u64, 1300),
    ]);
    let got: Vec<_> = out
        .iter()
        .map(|o| (o.role, o.pid, o.exchange.response.status))
        .collect();
    assert_eq!(
        got,
        [(Role::Server, SERVER, 200), (Role::Client, CLIENT, 200)]
    );
    let client = &out[1];
    assert_eq!(client.local, Some("127.0.0.1:40000".parse().unwrap()));
    assert_eq!(client.remote, Some("127.0.0.1:8080".parse().unwrap()));
    assert_eq!(&*client.comm, "test");
    assert_eq!(
        client.cgroup_id, 0x5eed,
        "the open event's cgroup id travels with it"
    );
    // Client: first request byte at write entry, last response byte at read exit.
    assert_eq!(
        (
            client.exchange.request_start_ns,
            client.exchange.response_end_ns
        ),
        (1000, 1310)
    );
    // Server: the request is there when read returns.
    assert_eq!(out[0].exchange.request_start_ns, 1110);
    assert_eq!(stats.exchanges.load(Relaxed), 2);
    assert_eq!(stats.active.load(Relaxed), 2);
}

#[test]
fn lost_records_become_gaps_that_do_not_mispair() {
    let second = b"GET /second HTTP/1.1\r\n\r\n";
    let (out, stats) = run(&[
        open(CLIENT, 5, SOCK_C, origin::CONNECT, 40000, 8080),
        data(C5, direction::EGRESS, 0, REQ, REQ.len() as u64, 1000),
        // The response record was lost: the next one starts further on.
        data(
            C5,
            direction::EGRESS,
            REQ.len() as u64,
            second,
            second.len() as u64,
            3000,
        ),
        data(
            C5,
            direction::INGRESS,
            RESP.len() as u64,
            RESP,
            RESP.len() as u64,
            4000,
        ),
    ]);
    let got: Vec<_> = out
        .iter()
        .map(|o| o.exchange.request.target.as_str())
        .collect();
    assert_eq!(got, ["/second"]);
    assert_eq!(stats.gap_bytes.load(Relaxed), RESP.len() as u64);
    assert_eq!(stats.unanswered_requests.load(Relaxed), 1);
}

#[test]
fn a_response_until_close_is_reported_at_close_and_the_connection_forgotten() {
    let until_close = b"HTTP/1.0 200 OK\r\n\r\nbody";
    let (out, stats) = run(&[
        open(CLIENT, 5, SOCK_C, origin::CONNECT, 40000, 8080),
        data(C5, direction::EGRESS, 0, REQ, REQ.len() as u64, 1000),
        data(
            C5,
            direction::INGRESS,
            0,
            until_close,
            until_close.len() as u64,
            2000,
        ),
        close(CLIENT, 5, SOCK_C),
        // The fd number is reused for another socket.
        open(CLIENT, 5, SOCK_S, origin::CONNECT, 40001, 8080),
    ]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].exchange.response_body_bytes, 4);
    assert_eq!(
        (stats.closed.load(Relaxed), stats.active.load(Relaxed)),
        (1, 1)
    );
}

/// A request with no answer before the close is a failed exchange only when the kernel's
/// final positions show nothing went unseen: a response whose records were lost is a gap,
/// counted, and never passes for no response.
#[test]
fn no_response_is_reported_only_when_the_close_shows_nothing_was_missed() {
    let req = REQ.len() as u64;
    let (out, stats) = run(&[
        open(CLIENT, 5, SOCK_C, origin::CONNECT, 40000, 8080),
        data(C5, direction::EGRESS, 0, REQ, req, 1000),
        close_at(CLIENT, 5, SOCK_C, [req, 0]),
    ]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].exchange.completeness, Completeness::NoResponse);
    assert_eq!(out[0].exchange.response_end_ns, 99_000);
    assert_eq!(stats.unanswered_requests.load(Relaxed), 1);

    let (out, stats) = run(&[
        open(CLIENT, 5, SOCK_C, origin::CONNECT, 40000, 8080),
        data(C5, direction::EGRESS, 0, REQ, req, 1000),
        // The response's 40 bytes were read, but their record was lost.
        close_at(CLIENT, 5, SOCK_C, [req, 40]),
    ]);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(stats.gap_bytes.load(Relaxed), 40);
    assert_eq!(stats.hidden_messages.load(Relaxed), 1);
    assert_eq!(stats.unanswered_requests.load(Relaxed), 1);
}

#[test]
fn a_process_exit_ends_its_connections() {
    let until_close = b"HTTP/1.0 200 OK\r\n\r\nbody";
    let (out, stats) = run(&[
        open(CLIENT, 5, SOCK_C, origin::CONNECT, 40000, 8080),
        data(C5, direction::EGRESS, 0, REQ, REQ.len() as u64, 1000),
        data(
            C5,
            direction::INGRESS,
            0,
            until_close,
            until_close.len() as u64,
            2000,
        ),
        open(SERVER, 7, SOCK_S, origin::ACCEPT, 8080, 40000),
        Ev::Other(Event::ProcessExit(ProcessExitEvent {
            kind: kind::PROCESS_EXIT,
            tgid: CLIENT,
            ts_ns: 3000,
        })),
    ]);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (stats.closed.load(Relaxed), stats.active.load(Relaxed)),
        (1, 1)
    );
}

#[test]
fn non_http_connections_are_counted_once_and_yield_nothing() {
    let (out, stats) = run(&[
        open(CLIENT, 5, SOCK_C, origin::CONNECT, 40000, 5432),
        data(
            C5,
            direction::EGRESS,
            0,
            b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
            8,
            1000,
        ),
        data(C5, direction::INGRESS, 0, b"N", 1, 2000),
        data(C5, direction::EGRESS, 8, REQ, REQ.len() as u64, 3000),
        data(C5, direction::INGRESS, 1, RESP, RESP.len() as u64, 4000),
    ]);
    assert!(out.is_empty());
    assert_eq!(stats.not_http.load(Relaxed), 1);
}

#[test]
fn the_table_is_bounded_and_idle_connections_expire() {
    let stats = Arc::new(ConnectionStats::default());
    let mut tracker = Tracker::new(config(), stats.clone());
    let mut out = Vec::new();
    for fd in 0..20 {
        tracker.handle_ev(
            &open(CLIENT, fd, SOCK_C + fd as u64, origin::CONNECT, 40000, 8080),
            &mut out,
        );
    }
    assert_eq!(stats.active.load(Relaxed), 16);
    assert_eq!(stats.evicted.load(Relaxed), 4);
    tracker.expire(2_000_000_000, &mut out);
    assert_eq!(stats.active.load(Relaxed), 0);
    assert_eq!(stats.expired.load(Relaxed), 16);
}

#[test]
fn uncounted_bytes_make_the_parser_find_its_place_again() {
    // A sendmmsg of more messages than the programs count: the record says so, and the
    // stream continues at an unknown distance.
    let mut more = data(C5, direction::EGRESS, 0, REQ, REQ.len() as u64, 1000);
    more.header_mut().flags = netsonde_common::data_flags::BYTES_UNCOUNTED;
    let (out, stats) = run(&[
        open(CLIENT, 5, SOCK_C, origin::CONNECT, 40000, 8080),
        more,
        // This would look like the next request's body if the parser trusted the position.
        data(
            C5,
            direction::EGRESS,
            REQ.len() as u64,
            b"continuation",
            12,
            2000,
        ),
        data(
            C5,
            direction::EGRESS,
            REQ.len() as u64 + 12,
            b"GET /after HTTP/1.1\r\n\r\n",
            23,
            3000,
        ),
        data(C5, direction::INGRESS, 0, RESP, RESP.len() as u64, 4000),
        data(
            C5,
            direction::INGRESS,
            RESP.len() as u64,
            RESP,
            RESP.len() as u64,
            5000,
        ),
    ]);
    let got: Vec<_> = out
        .iter()
        .map(|o| {
            (
                &*o.exchange.request.method,
                o.exchange.request.target.as_str(),
            )
        })
        .collect();
    // Trusting the position would fuse "continuation" and the next request into a request
    // with method "continuationGET".
    assert_eq!(got, [("GET", "/x"), ("GET", "/after")]);
    assert_eq!(stats.restarts.load(Relaxed), 1);
}

#[test]
fn connection_activity_reports_tracking_bytes_and_close() {
    let mut t = Tracker::new(config(), Arc::new(ConnectionStats::default()));
    let mut out = Vec::new();
    t.handle_ev(
        &open(CLIENT, 5, SOCK_C, origin::CONNECT, 40000, 8080),
        &mut out,
    );
    t.handle_ev(
        &data(C5, direction::EGRESS, 0, b"GET / HTTP/1.1\r\n\r\n", 18, 10),
        &mut out,
    );
    t.handle_ev(
        &data(
            C5,
            direction::INGRESS,
            0,
            b"HTTP/1.1 204 No Content\r\n",
            25,
            20,
        ),
        &mut out,
    );
    t.handle_ev(&data(C5, direction::INGRESS, 25, b"\r\n", 2, 30), &mut out);
    let mut activity = Vec::new();
    t.take_activity(&mut activity);
    let kinds: Vec<_> = activity.iter().map(|a| a.kind).collect();
    assert_eq!(
        kinds,
        [
            ActivityKind::Tracked {
                accept_ns: None,
                new: true,
                connect_ns: Some(1)
            },
            ActivityKind::Bytes {
                sent: 18,
                received: 27
            },
        ]
    );
    assert_eq!(activity[0].role, Some(Role::Client));
    assert_eq!(activity[0].remote.unwrap().port(), 8080);
    // Nothing new: nothing reported.
    activity.clear();
    t.take_activity(&mut activity);
    assert!(activity.is_empty());
    // Bytes since the last report come with the close.
    t.handle_ev(
        &data(C5, direction::EGRESS, 18, b"GET / HTTP/1.1\r\n\r\n", 18, 40),
        &mut out,
    );
    t.handle_ev(&close(CLIENT, 5, SOCK_C), &mut out);
    t.take_activity(&mut activity);
    let kinds: Vec<_> = activity.iter().map(|a| a.kind).collect();
    assert_eq!(
        kinds,
        [
            ActivityKind::Bytes {
                sent: 18,
                received: 0
            },
            ActivityKind::Untracked { closed: true },
        ]
    );
}

#[test]
fn a_burst_of_closed_connections_leaves_no_activity_capacity_behind() {
    let mut t = Tracker::new(config(), Arc::new(ConnectionStats::default()));
    let mut out = Vec::new();
    for fd in 0..2_000 {
        t.handle_ev(
            &open(
                CLIENT,
                fd,
                SOCK_C + fd as u64,
                origin::CONNECT,
                40_000,
                8080,
            ),
            &mut out,
        );
        t.handle_ev(&close(CLIENT, fd, SOCK_C + fd as u64), &mut out);
    }
    let mut activity = Vec::new();
    t.take_activity(&mut activity);
    // Each connection: tracked, then untracked at its close.
    assert_eq!(activity.len(), 4_000);
    // The tracker's list went with them: a burst's high-water mark is not kept for good.
    assert_eq!(t.activity.capacity(), 0);
    // Into a list that is not empty, appended, and still nothing kept.
    t.handle_ev(
        &open(CLIENT, 9, SOCK_C, origin::CONNECT, 40_000, 8080),
        &mut out,
    );
    t.take_activity(&mut activity);
    assert_eq!(activity.len(), 4_001);
    assert_eq!(t.activity.capacity(), 0);
}

#[test]
fn a_connection_older_than_netsonde_is_tracked_but_not_new_and_forgotten_not_closed() {
    let mut t = Tracker::new(config(), Arc::new(ConnectionStats::default()));
    let mut out = Vec::new();
    t.handle_ev(
        &open(SERVER, 7, SOCK_S, origin::EXISTING, 8080, 40000),
        &mut out,
    );
    t.expire(10_000_000_000, &mut out);
    let mut activity = Vec::new();
    t.take_activity(&mut activity);
    let kinds: Vec<_> = activity.iter().map(|a| a.kind).collect();
    assert_eq!(
        kinds,
        [
            ActivityKind::Tracked {
                accept_ns: None,
                new: false,
                connect_ns: None
            },
            ActivityKind::Untracked { closed: false },
        ]
    );
}

fn flagged(mut event: Ev, flags: u8) -> Ev {
    event.header_mut().flags = flags;
    event
}

#[test]
fn tls_plaintext_is_parsed_and_ciphertext_only_counted() {
    const HELLO: &[u8] = &[22, 3, 1, 0, 200, 1, 0, 0];
    const RECORD: &[u8] = &[23, 3, 3, 0, 40];
    let mut tracker = Tracker::new(config(), Arc::new(ConnectionStats::default()));
    let stats = tracker.stats.clone();
    let mut out = Vec::new();
    let events = [
        open(CLIENT, 5, SOCK_C, origin::CONNECT, 40000, 8443),
        // The handshake, written by SSL_connect (not hooked): recognised by its record header.
        data(C5, direction::EGRESS, 0, HELLO, 205, 1000),
        data(C5, direction::INGRESS, 0, &[22, 3, 3, 0, 90], 1500, 1100),
        // SSL_write: the nested write is ciphertext (not captured), then the plaintext.
        flagged(
            data(C5, direction::EGRESS, 205, &[], 60, 1200),
            data_flags::TLS_CIPHERTEXT,
        ),
        flagged(
            data(C5, direction::EGRESS, 0, REQ, REQ.len() as u64, 1200),
            data_flags::TLS_PLAINTEXT,
        ),
        flagged(
            data(C5, direction::INGRESS, 1500, RECORD, 80, 1300),
            data_flags::TLS_CIPHERTEXT,
        ),
        flagged(
            data(C5, direction::INGRESS, 0, RESP, RESP.len() as u64, 1300),
            data_flags::TLS_PLAINTEXT,
        ),
        close(CLIENT, 5, SOCK_C),
    ];
    for e in &events {
        tracker.handle_ev(e, &mut out);
    }
    assert_eq!(out.len(), 1);
    assert!(out[0].tls);
    assert_eq!(out[0].exchange.request.target, "/x");
    assert_eq!(out[0].exchange.response.status, 200);
    assert_eq!(stats.not_http.load(Relaxed), 0);
    assert_eq!(stats.tls_connections.load(Relaxed), 1);
    assert_eq!(stats.tls_plaintext.load(Relaxed), 1);
    // Wire bytes are the ciphertext: 205 + 60 sent, 1500 + 80 received.
    let mut activity = Vec::new();
    tracker.take_activity(&mut activity);
    let (sent, received) = activity.iter().fold((0, 0), |(s, r), a| match a.kind {
        ActivityKind::Bytes { sent, received } => (s + sent, r + received),
        _ => (s, r),
    });
    assert_eq!((sent, received), (265, 1580));
}

#[test]
fn tls_without_plaintext_is_counted_not_parsed() {
    let (out, stats) = run(&[
        open(SERVER, 7, SOCK_S, origin::ACCEPT, 8443, 40000),
        data(S7, direction::INGRESS, 0, &[22, 3, 1, 2, 0, 1], 517, 1000),
        data(S7, direction::EGRESS, 0, &[22, 3, 3, 0, 122], 1400, 1100),
        data(
            S7,
            direction::INGRESS,
            517,
            b"\x17\x03\x03garbage",
            100,
            1200,
        ),
        close(SERVER, 7, SOCK_S),
    ]);
    assert!(out.is_empty());
    assert_eq!(stats.not_http.load(Relaxed), 0);
    assert_eq!(stats.malformed.load(Relaxed), 0);
    assert_eq!(stats.tls_connections.load(Relaxed), 1);
    assert_eq!(stats.tls_plaintext.load(Relaxed), 0);
}

/// `Upgrade: h2c`: the HTTP/1.1 request is answered by HTTP/2 on stream 1, after a 101 whose
/// head shares a read with the server's first HTTP/2 frames.
#[test]
fn an_h2c_upgrade_is_answered_over_http2() {
    use crate::protocols::http2::frame::{PREFACE, encode_header, flags, kind};
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let mut f = encode_header(payload.len() as u32, kind, flags, stream).to_vec();
        f.extend_from_slice(payload);
        f
    };
    let request: &[u8] = b"GET /up HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
    let mut from_server =
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec();
    from_server.extend(frame(kind::SETTINGS, 0, 0, &[]));
    let mut client_after = PREFACE.to_vec();
    client_after.extend(frame(kind::SETTINGS, 0, 0, &[]));
    client_after.extend(frame(kind::SETTINGS, flags::ACK, 0, &[]));
    let mut encoder = loona_hpack::Encoder::new();
    let block = encoder.encode([(&b":status"[..], &b"200"[..])]);
    let mut response = frame(kind::HEADERS, flags::END_HEADERS, 1, &block);
    response.extend(frame(kind::DATA, flags::END_STREAM, 1, b"hello"));
    let len = |b: &[u8]| b.len() as u64;
    let (out, stats) = run(&[
        open(CLIENT, 5, SOCK_C, origin::CONNECT, 40000, 8080),
        data(C5, direction::EGRESS, 0, request, len(request), 1000),
        data(
            C5,
            direction::INGRESS,
            0,
            &from_server,
            len(&from_server),
            1100,
        ),
        data(
            C5,
            direction::EGRESS,
            len(request),
            &client_after,
            len(&client_after),
            1200,
        ),
        data(
            C5,
            direction::INGRESS,
            len(&from_server),
            &response,
            len(&response),
            1300,
        ),
    ]);
    let got: Vec<_> = out
        .iter()
        .map(|o| {
            (
                &*o.exchange.request.method,
                o.exchange.request.target.as_str(),
                o.exchange.response.status,
                o.exchange.response_body_bytes,
                o.exchange.response.major,
                o.role,
            )
        })
        .collect();
    assert_eq!(got, [("GET", "/up", 200, 5, 2, Role::Client)]);
    assert_eq!(out[0].exchange.request.header("host"), Some("h"));
    assert_eq!(out[0].exchange.request_start_ns, 1000);
    assert_eq!(stats.http2_connections.load(Relaxed), 1);
    assert_eq!(stats.not_http.load(Relaxed), 0);
    assert_eq!(stats.malformed.load(Relaxed), 0);
}

/// A TLS connection older than netsonde: its first plaintext (position 0 in the kernel's
/// numbering) is mid-conversation, so HTTP/1 waits for the next request line instead of
/// calling the connection not HTTP.
#[test]
fn tls_plaintext_of_an_older_connection_is_joined_midstream() {
    const BODY_TAIL: &[u8] = b"ody of an earlier response\r\n";
    let (out, stats) = run(&[
        open(CLIENT, 5, SOCK_C, origin::EXISTING, 40000, 8443),
        flagged(
            data(C5, direction::INGRESS, 0, &[23, 3, 3, 0, 40], 45, 900),
            data_flags::TLS_CIPHERTEXT,
        ),
        flagged(
            data(
                C5,
                direction::INGRESS,
                0,
                BODY_TAIL,
                BODY_TAIL.len() as u64,
                900,
            ),
            data_flags::TLS_PLAINTEXT,
        ),
        flagged(
            data(C5, direction::EGRESS, 0, REQ, REQ.len() as u64, 1000),
            data_flags::TLS_PLAINTEXT,
        ),
        flagged(
            data(
                C5,
                direction::INGRESS,
                BODY_TAIL.len() as u64,
                RESP,
                RESP.len() as u64,
                1100,
            ),
            data_flags::TLS_PLAINTEXT,
        ),
    ]);
    assert_eq!(stats.not_http.load(Relaxed), 0);
    assert_eq!(out.len(), 1);
    assert!(out[0].tls);
    assert_eq!(out[0].exchange.request.target, "/x");
}

/// A large HTTP/2 download read in one big syscall, of which only a prefix was captured: the
/// kernel sends the frame headers past the prefix as pieces at their stream positions, and the
/// DATA payloads between them are skipped as gaps. The exchange is whole and exact.
#[test]
fn an_http2_download_beyond_the_capture_is_followed_by_its_frame_pieces() {
    use crate::protocols::http2::frame::{PREFACE, encode_header, flags, kind};
    let header = |len: usize, kind: u8, flags: u8, stream: u32| {
        encode_header(len as u32, kind, flags, stream).to_vec()
    };
    let mut request = PREFACE.to_vec();
    request.extend(header(0, kind::SETTINGS, 0, 0));
    let mut encoder = loona_hpack::Encoder::new();
    let block = encoder.encode([(&b":method"[..], &b"GET"[..]), (b":path", b"/big")]);
    request.extend(header(
        block.len(),
        kind::HEADERS,
        flags::END_HEADERS | flags::END_STREAM,
        1,
    ));
    request.extend(&block);
    // The server's bytes: SETTINGS, HEADERS, then DATA 16384 + 16384 + 100 (the last ends it).
    let mut encoder = loona_hpack::Encoder::new();
    let block = encoder.encode([(&b":status"[..], &b"200"[..])]);
    let mut response = header(0, kind::SETTINGS, 0, 0);
    response.extend(header(block.len(), kind::HEADERS, flags::END_HEADERS, 1));
    response.extend(&block);
    let mut piece_at = Vec::new();
    for (len, end) in [(16384, false), (16384, false), (100, true)] {
        piece_at.push(response.len());
        let f = if end { flags::END_STREAM } else { 0 };
        response.extend(header(len, kind::DATA, f, 1));
        response.extend(std::iter::repeat_n(b'd', len));
    }
    // One read of everything, 4096 bytes captured; the kernel adds the two DATA headers past
    // the prefix as pieces.
    let total = response.len() as u64;
    let mut head = data(C5, direction::INGRESS, 0, &response[..4096], total, 1100);
    head.header_mut().flags = data_flags::H2_WALKED;
    let piece = |at: usize| {
        let mut e = data(
            C5,
            direction::INGRESS,
            at as u64,
            &response[at..at + 9],
            9,
            1100,
        );
        e.header_mut().flags = data_flags::H2_PIECE;
        e
    };
    // And an empty piece where the read ended.
    let mut end = data(C5, direction::INGRESS, total, &[], 0, 1100);
    end.header_mut().flags = data_flags::H2_PIECE;
    let len = |b: &[u8]| b.len() as u64;
    let (out, stats) = run(&[
        open(CLIENT, 5, SOCK_C, origin::CONNECT, 40000, 8080),
        data(C5, direction::EGRESS, 0, &request, len(&request), 1000),
        head,
        piece(piece_at[1]),
        piece(piece_at[2]),
        end,
    ]);
    let got: Vec<_> = out
        .iter()
        .map(|o| {
            (
                o.exchange.request.target.as_str(),
                o.exchange.response.status,
                o.exchange.response_body_bytes,
            )
        })
        .collect();
    assert_eq!(got, [("/big", 200, 16384 + 16384 + 100)]);
    assert_eq!(stats.http2_broken.load(Relaxed), 0);
    // The skipped DATA payloads were never lost.
    assert_eq!(stats.gap_bytes.load(Relaxed), 0);
}

/// A record of a walked HTTP/2 stream is lost (the ring buffer was full): the next one starts in
/// the middle of a DATA payload, where no chain of frames can be seen, but it says where the
/// kernel's walk found the next frame. The parser picks up there.
#[test]
fn a_lost_http2_record_is_found_again_at_the_kernels_frame_boundary() {
    use crate::protocols::http2::frame::{PREFACE, encode_header, flags, kind};
    let header = |len: usize, kind: u8, flags: u8, stream: u32| {
        encode_header(len as u32, kind, flags, stream).to_vec()
    };
    let mut encoder = loona_hpack::Encoder::new();
    let mut request = PREFACE.to_vec();
    request.extend(header(0, kind::SETTINGS, 0, 0));
    for (stream, path) in [(1, &b"/one"[..]), (3, b"/three")] {
        let block = encoder.encode([(&b":method"[..], &b"GET"[..]), (b":path", path)]);
        let f = flags::END_HEADERS | flags::END_STREAM;
        request.extend(header(block.len(), kind::HEADERS, f, stream));
        request.extend(&block);
    }
    let mut encoder = loona_hpack::Encoder::new();
    let mut response = header(0, kind::SETTINGS, 0, 0);
    let mut frame_at = Vec::new();
    for stream in [1, 3] {
        let block = encoder.encode([(&b":status"[..], &b"200"[..])]);
        frame_at.push(response.len());
        response.extend(header(
            block.len(),
            kind::HEADERS,
            flags::END_HEADERS,
            stream,
        ));
        response.extend(&block);
        response.extend(header(300, kind::DATA, flags::END_STREAM, stream));
        response.extend(std::iter::repeat_n(b'd', 300));
    }
    // The first read is lost; the second starts 100 bytes before stream 3's HEADERS.
    let cut = frame_at[1] - 100;
    let mut second = data(
        C5,
        direction::INGRESS,
        cut as u64,
        &response[cut..],
        (response.len() - cut) as u64,
        1100,
    );
    {
        let header = second.header_mut();
        header.flags = data_flags::H2_WALKED;
        header.h2_frame = frame_at[1] as u64;
    }
    let (out, stats) = run(&[
        open(CLIENT, 5, SOCK_C, origin::CONNECT, 40000, 8080),
        data(
            C5,
            direction::EGRESS,
            0,
            &request,
            request.len() as u64,
            1000,
        ),
        second,
        close(CLIENT, 5, SOCK_C),
    ]);
    let got: Vec<_> = out
        .iter()
        .map(|o| {
            (
                o.exchange.request.target.as_str(),
                o.exchange.response.status,
                o.exchange.response_body_bytes,
            )
        })
        .collect();
    assert_eq!(got, [("/three", 200, 300)]);
    assert_eq!(stats.http2_broken.load(Relaxed), 1);
    assert_eq!(stats.http2_resyncs.load(Relaxed), 1);
    // Stream 1's answer went by unseen.
    assert_eq!(stats.unanswered_requests.load(Relaxed), 1);
    assert_eq!(stats.gap_bytes.load(Relaxed), cut as u64);
}

fn note(end: End, what: u32, value: u64, ts: u64) -> Ev<'static> {
    Ev::Other(Event::KernelNote(KernelNoteEvent {
        kind: kind::KERNEL_NOTE,
        note: what,
        tgid: end.0,
        fd: end.1,
        sock: end.2,
        ts_ns: ts,
        value,
    }))
}

fn with_packets(mut event: Ev, packets: u32, layer_at: usize, ns: u64) -> Ev {
    {
        let header = event.header_mut();
        header.kernel.packets = packets;
        header.kernel.bytes = 100 * u64::from(packets);
        header.kernel.ns[layer_at] = ns;
        header.kernel.timed[layer_at] = packets as u16;
    }
    event
}

#[test]
fn the_kernels_part_joins_the_next_exchange_and_the_connection_metrics() {
    use netsonde_common::{layer, note};
    let stats = Arc::new(ConnectionStats::default());
    let mut tracker = Tracker::new(config(), stats.clone());
    let mut out = Vec::new();
    let events = [
        // A blocking connect: the kernel reports the handshake before connect() returns.
        note(C5, note::CONNECTED, 40_000, 900),
        open(CLIENT, 5, SOCK_C, origin::CONNECT, 40000, 8080),
        with_packets(
            data(C5, direction::EGRESS, 0, REQ, REQ.len() as u64, 1000),
            1,
            layer::DEVICE_SEND,
            700,
        ),
        note(C5, note::RETRANSMIT, 0, 1050),
        note(C5, note::DROP, 77, 1060),
        note(C5, note::ARP, 5_000, 1070),
        with_packets(
            data(C5, direction::INGRESS, 0, RESP, RESP.len() as u64, 1300),
            2,
            layer::RECEIVE,
            9_000,
        ),
        // A note for a connection nobody knows is counted, not guessed at.
        note((CLIENT, 9, 0xdead), note::RETRANSMIT, 0, 1400),
    ];
    for e in &events {
        tracker.handle_ev(e, &mut out);
    }
    assert_eq!(out.len(), 1);
    let k = out[0].kernel;
    assert_eq!((k.sent.packets, k.received.packets), (1, 2));
    assert_eq!((k.retransmits, k.drops), (1, 1));
    assert_eq!(k.layer(layer::DEVICE_SEND), (700, 1));
    assert_eq!(k.layer(layer::RECEIVE), (9_000, 2));
    assert_eq!(k.layer(layer::ARP), (5_000, 1));
    assert_eq!(stats.kernel_notes.load(Relaxed), 5);
    assert_eq!(stats.kernel_notes_unmatched.load(Relaxed), 1);
    let mut activity = Vec::new();
    tracker.take_activity(&mut activity);
    let kinds: Vec<_> = activity
        .iter()
        .filter(|a| !matches!(a.kind, ActivityKind::Bytes { .. }))
        .map(|a| match a.kind {
            ActivityKind::Tracked { connect_ns, .. } => format!("tracked {connect_ns:?}"),
            ActivityKind::Packets { direction, totals } => {
                format!(
                    "{direction:?} {} arp {}",
                    totals.packets,
                    totals.ns[layer::ARP]
                )
            }
            ActivityKind::Retransmits { count } => format!("retransmits {count}"),
            ActivityKind::Drop { reason } => format!("drop {reason}"),
            ref other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "tracked Some(40000)",
            "retransmits 1",
            "drop 77",
            // Summed per connection and direction until the report.
            "Egress 1 arp 5000",
            "Ingress 2 arp 0"
        ]
    );
    // The next exchange starts from nothing.
    let second = [
        data(
            C5,
            direction::EGRESS,
            REQ.len() as u64,
            REQ,
            REQ.len() as u64,
            2000,
        ),
        data(
            C5,
            direction::INGRESS,
            RESP.len() as u64,
            RESP,
            RESP.len() as u64,
            2100,
        ),
    ];
    out.clear();
    for e in &second {
        tracker.handle_ev(e, &mut out);
    }
    assert!(out[0].kernel.is_empty());
}

#[test]
fn an_accepted_connection_reports_its_wait_in_the_listen_queue() {
    let mut event = open(SERVER, 7, SOCK_S, origin::ACCEPT, 8080, 40000);
    if let Ev::Other(Event::Open(o)) = &mut event {
        o.established_ns = 500;
        o.exit_ns = 2_500;
    }
    let stats = Arc::new(ConnectionStats::default());
    let mut tracker = Tracker::new(config(), stats);
    tracker.handle_ev(&event, &mut Vec::new());
    let mut activity = Vec::new();
    tracker.take_activity(&mut activity);
    assert!(matches!(
        activity[0].kind,
        ActivityKind::Tracked {
            accept_ns: Some(2_000),
            connect_ns: None,
            ..
        }
    ));
}
