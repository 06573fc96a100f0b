//! The user-space HTTP/1 path, per exchange, beside its baseline in the same run:
//!
//! * `httparse_heads` — the floor: httparse alone parsing the request and response heads;
//! * `http1_exchange` — netsonde's parser on the same bytes: framing, pairing, an `Exchange`;
//! * `decode_track_exchange` — the whole user-space path for one exchange as the kernel delivers
//!   it: two ring records copied into a batch (as the reader does), decoded in place, routed to
//!   their connection, parsed;
//! * `decode_track_exchange_256_connections` — the same, each exchange on the next of 256 open
//!   connections in turn (the connection table's lookups no longer hit one hot entry).
//!
//! The bytes are what curl sends and nginx answers for a small static file.

use std::{hint::black_box, sync::Arc};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use netsonde::{
    connections::{ConnectionStats, Tracker, TrackerConfig},
    events::{self, encode},
    protocols::{
        Direction, Segment,
        http1::{Http1, Limits},
    },
};
use netsonde_common::{ConnOpenEvent, DataEvent, direction, kind, origin, syscall};

const REQUEST: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 04:00:00 GMT\r\nContent-Type: text/html\r\nContent-Length: 28\r\nLast-Modified: Thu, 26 Nov 2026 03:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"6925f7f0-1d\"\r\nAccept-Ranges: bytes\r\n\r\n<h1>netsonde test page</h1>\n";

fn http1_path(c: &mut Criterion, group: &str) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    g.bench_function("httparse_heads", |b| {
        b.iter(|| {
            let mut h = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut h);
            let a = req.parse(black_box(REQUEST)).unwrap();
            let mut h = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut h);
            let b2 = resp.parse(black_box(RESPONSE)).unwrap();
            black_box((a, b2));
        })
    });
    g.bench_function("http1_exchange", |b| {
        let mut http = Http1::new(Limits::default());
        let mut out = Vec::with_capacity(4);
        let mut t = 0u64;
        b.iter(|| {
            t += 1000;
            http.feed(
                Direction::Ingress,
                &Segment::full(black_box(REQUEST), t, t),
                &mut out,
            );
            http.feed(
                Direction::Egress,
                &Segment::full(black_box(RESPONSE), t + 500, t + 600),
                &mut out,
            );
            assert_eq!(out.len(), 1);
            black_box(out.pop());
        })
    });
    g.bench_function("decode_track_exchange", |b| decode_track(b, 1));
    g.bench_function("decode_track_exchange_256_connections", |b| {
        decode_track(b, 256)
    });
    g.finish();
}

/// One exchange per iteration, on the next of `connections` keep-alive connections in turn.
fn decode_track(b: &mut criterion::Bencher<'_>, connections: usize) {
    let stats = Arc::new(ConnectionStats::default());
    let config = TrackerConfig {
        max_connections: 1024,
        idle_timeout_ns: u64::MAX,
        http1: Limits::default(),
    };
    let mut tracker = Tracker::new(config, stats);
    let mut out = Vec::with_capacity(4);
    let tgid = 4242u32;
    let pos_at = std::mem::offset_of!(DataEvent, stream_pos);
    // Per connection: its request and response records, and how far each stream has got.
    let mut conns: Vec<(Vec<u8>, Vec<u8>, u64, u64)> = (0..connections)
        .map(|i| {
            let (fd, sock) = (7 + i as i32, 0xffff_8880_1234_0000u64 + 0x1000 * i as u64);
            let open = ConnOpenEvent {
                kind: kind::CONN_OPEN,
                origin: origin::ACCEPT,
                tgid,
                tid: tgid,
                fd,
                family: 2,
                local_port: 8080,
                remote_port: 40000 + i as u16,
                sock,
                local_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                remote_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                comm: *b"nginx\0\0\0\0\0\0\0\0\0\0\0",
                ..ConnOpenEvent::default()
            };
            tracker.handle(&events::decode(&encode::bytes_of(&open)).unwrap(), &mut out);
            let header = |dir: u8, sc: u16, len: usize| DataEvent {
                kind: kind::DATA,
                captured: len as u32,
                tgid,
                tid: tgid,
                fd,
                syscall: sc,
                direction: dir,
                flags: 0,
                sock,
                bytes: len as u64,
                stream_pos: 0,
                enter_ns: 0,
                exit_ns: 0,
                kernel: Default::default(),
                h2_frame: netsonde_common::h2_stream::LOST,
            };
            let request = encode::data_record(
                &header(direction::INGRESS, syscall::RECVFROM, REQUEST.len()),
                REQUEST,
            )
            .to_vec();
            let response = encode::data_record(
                &header(direction::EGRESS, syscall::WRITEV, RESPONSE.len()),
                RESPONSE,
            )
            .to_vec();
            (request, response, 0, 0)
        })
        .collect();
    let mut next = 0;
    let mut batch = events::Batch::default();
    b.iter(|| {
        let (request, response, in_pos, out_pos) = &mut conns[next];
        next = (next + 1) % connections;
        request[pos_at..pos_at + 8].copy_from_slice(&in_pos.to_ne_bytes());
        response[pos_at..pos_at + 8].copy_from_slice(&out_pos.to_ne_bytes());
        *in_pos += REQUEST.len() as u64;
        *out_pos += RESPONSE.len() as u64;
        // One batch, as the agent hands the ring's records on, recycled as the tracker does.
        batch.push(black_box(request)).unwrap();
        batch.push(black_box(response)).unwrap();
        tracker.handle_batch(batch.events(), &mut out);
        batch.recycle();
        assert_eq!(out.len(), 1);
        black_box(out.pop());
    })
}

fn benches(c: &mut Criterion) {
    http1_path(c, "http1_path");
}

criterion_group!(http1, benches);
criterion_main!(http1);
