//! Connections: turns the kernel's events into per-connection byte streams and runs the protocol
//! parser on them.
//!
//! Owns the connection table (one task, one owner) and each connection's stream positions and
//! parser state. Emits [`ObservedExchange`]s: an exchange plus who took part in it.

mod ending;
pub mod kernel;
mod parser;
pub mod resolve;
pub mod stream;
pub mod table;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use netsonde_common::{
    ConnCloseEvent, ConnOpenEvent, DataEvent, KernelNoteEvent, KernelStats, ProcessExitEvent,
    data_flags, direction, h2_stream, note, origin,
};

use crate::{
    events::Event,
    protocols::{
        Direction, Exchange, Role, Segment,
        http1::{self, Http1},
    },
};
use kernel::KernelSummary;
use parser::{Parser, ParserNotes};
use resolve::ProcResolver;
use stream::{Continuity, Stream};
use table::{ConnKey, Table};

/// An exchange and the connection it happened on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedExchange {
    pub exchange: Exchange,
    /// The traced process's HTTP role.
    pub role: Role,
    pub pid: u32,
    pub comm: Arc<str>,
    /// The process's cgroup id (0 when the kernel did not say).
    pub cgroup_id: u64,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    /// Seen as plaintext through a TLS library.
    pub tls: bool,
    /// The kernel's part: the packets of the exchange's syscalls, and the retransmits and drops
    /// on the connection since the previous exchange.
    pub kernel: KernelSummary,
}

/// Something that happened to a connection, for connection metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionActivity {
    pub pid: u32,
    pub comm: Arc<str>,
    /// The process's cgroup id (0 when the kernel did not say).
    pub cgroup_id: u64,
    /// The traced process's TCP role, when known.
    pub role: Option<Role>,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub kind: ActivityKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivityKind {
    /// netsonde started tracking the connection. `new` when it was just connected or
    /// accepted (not older than netsonde); `connect_ns` is how long the connect took (the
    /// TCP handshake when the kernel layer saw it, else a blocking connect() call);
    /// `accept_ns` how long an accepted connection waited, established, for accept().
    Tracked {
        new: bool,
        connect_ns: Option<u64>,
        accept_ns: Option<u64>,
    },
    /// The handshake of a non-blocking connect finished after the call returned.
    Connected { handshake_ns: u64 },
    /// What the kernel did with the connection's packets one way since the last report.
    Packets {
        direction: Direction,
        totals: kernel::PacketTotals,
    },
    /// TCP retransmitted `count` of its segments (one per kernel note; more at the close when
    /// the socket's own total says notes were missed).
    Retransmits { count: u64 },
    /// The kernel dropped one of its packets, for this reason (`enum skb_drop_reason`).
    Drop { reason: u32 },
    /// Payload bytes since the last report.
    Bytes { sent: u64, received: u64 },
    /// netsonde stopped tracking it: `closed` when the process closed it, else forgotten
    /// (evicted, idle, or shutdown).
    Untracked { closed: bool },
}

/// How the kernel announced a connection. (Data for a connection nothing announced, because
/// its announcement was lost or the table forgot it, is adopted through /proc: see `adopt`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// connect(): the process is the TCP client.
    Connect,
    /// accept(): the process is the TCP server.
    Accept,
    /// Older than netsonde; the kernel announced it at its first read or write.
    Existing,
}

/// Limits for the tracker.
#[derive(Debug, Clone, Copy)]
pub struct TrackerConfig {
    pub max_connections: usize,
    pub idle_timeout_ns: u64,
    pub http1: http1::Limits,
}

/// Counters of the connection stage (self-telemetry). Written by the tracker, read by whoever
/// reports.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub events: AtomicU64,
    pub opened_connect: AtomicU64,
    pub opened_accept: AtomicU64,
    pub opened_existing: AtomicU64,
    pub opened_unannounced: AtomicU64,
    pub closed: AtomicU64,
    pub evicted: AtomicU64,
    pub expired: AtomicU64,
    pub active: AtomicU64,
    pub not_http: AtomicU64,
    pub switched: AtomicU64,
    pub exchanges: AtomicU64,
    pub orphan_responses: AtomicU64,
    pub unanswered_requests: AtomicU64,
    pub hidden_messages: AtomicU64,
    pub unframed_bodies: AtomicU64,
    pub malformed: AtomicU64,
    /// HTTP/1 heads longer than the captured prefix of their syscall (lost).
    pub heads_cut: AtomicU64,
    /// HTTP/1 requests not whole when their connection ended or was forgotten.
    pub incomplete_requests: AtomicU64,
    /// Bytes the stream positions show were never delivered.
    pub gap_bytes: AtomicU64,
    /// Times a stream's numbering restarted.
    pub restarts: AtomicU64,
    /// HTTP/2 connections found (by their preface).
    pub http2_connections: AtomicU64,
    /// Times an HTTP/2 connection's direction lost its place in the frames or its header
    /// compression table (for a moment: it finds them again).
    pub http2_broken: AtomicU64,
    /// Times one found its place again.
    pub http2_resyncs: AtomicU64,
    /// HTTP/2 streams left out because their start went missing.
    pub http2_lost_streams: AtomicU64,
    /// HTTP/2 streams reset before their response ended.
    pub http2_resets: AtomicU64,
    /// New HTTP/2 streams not followed (too many open).
    pub http2_streams_refused: AtomicU64,
    /// Header fields of joined HTTP/2 connections behind table entries set before netsonde
    /// joined (left out; a missing method or path is reported as `{unknown}`).
    pub http2_unknown_fields: AtomicU64,
    /// Connections whose bytes are TLS records, and those of them whose plaintext is seen.
    pub tls_connections: AtomicU64,
    pub tls_plaintext: AtomicU64,
    /// Kernel notes (retransmits, drops, handshakes) and the ones for no tracked connection.
    pub kernel_notes: AtomicU64,
    pub kernel_notes_unmatched: AtomicU64,
    /// Retransmits the socket's own total at its close showed that no note had reported (the
    /// kernel did not run the program for them, or they were SYN-ACK retransmits, which the
    /// retransmit tracepoint does not see); counted on the connection all the same.
    pub retransmits_at_close: AtomicU64,
    /// connect() handshakes that failed.
    pub connect_failures: AtomicU64,
}

impl ConnectionStats {
    pub fn opened(&self) -> u64 {
        self.opened_connect.load(Relaxed)
            + self.opened_accept.load(Relaxed)
            + self.opened_existing.load(Relaxed)
            + self.opened_unannounced.load(Relaxed)
    }

    fn add_notes(&self, parser: ParserNotes) {
        // Called for every batch of a connection's bytes, and the notes are nearly always zero:
        // a locked add each would cost more than the rest of the bookkeeping (a profile showed
        // it), so only what the parser noticed is added.
        let bump = |counter: &AtomicU64, n: u64| {
            if n != 0 {
                counter.fetch_add(n, Relaxed);
            }
        };
        let h2 = parser.http2;
        bump(&self.http2_broken, h2.broken);
        bump(&self.http2_resyncs, h2.resyncs);
        bump(&self.http2_lost_streams, h2.lost_streams);
        bump(&self.http2_resets, h2.resets);
        bump(&self.http2_unknown_fields, h2.unknown_fields);
        bump(&self.http2_streams_refused, h2.streams_refused);
        bump(&self.unanswered_requests, h2.unanswered_requests);
        let notes = parser.http1;
        bump(&self.orphan_responses, notes.orphan_responses);
        bump(&self.unanswered_requests, notes.unanswered_requests);
        bump(&self.hidden_messages, notes.hidden_messages);
        bump(&self.unframed_bodies, notes.unframed_bodies);
        bump(&self.malformed, notes.malformed);
        bump(&self.heads_cut, notes.heads_cut);
        bump(&self.incomplete_requests, notes.incomplete_requests);
    }
}

struct Connection {
    /// The TCP role, when known (from connect/accept, or a listening-port check).
    tcp_role: Option<Role>,
    comm: Arc<str>,
    /// From the open event (0 for a connection first seen by its data).
    cgroup_id: u64,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    streams: [Stream; 2],
    /// Payload bytes, and the kernel's findings on packets, not yet reported, by direction.
    unreported: [u64; 2],
    unreported_packets: [kernel::PacketTotals; 2],
    /// In the tracker's list of connections with something to report.
    dirty: bool,
    http: Parser,
    /// Seen from its first byte (so HTTP/2 can be recognised by its preface).
    from_start: bool,
    /// The parser's status when last looked at, to count changes once.
    http_status: http1::Status,
    last_seen_ns: u64,
    /// Whether the wire carries TLS, and whether its plaintext is seen.
    tls: Tls,
    /// Plaintext stream positions (TLS library calls), by direction.
    plaintext: [Stream; 2],
    /// The kernel's part since the last exchange.
    kernel: KernelSummary,
    /// Bytes of it went unseen (lost records, a restarted position): a request left waiting at
    /// its close cannot then be said to have had no answer.
    lost_bytes: bool,
    /// Retransmit notes since it was connected or accepted; `None` for a connection older than
    /// netsonde, whose socket counted retransmits netsonde never saw.
    retransmits_noted: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    /// No TLS seen (yet).
    No,
    /// The bytes on the wire are TLS records: counted, never parsed.
    Wire,
    /// Plaintext arrives through TLS library calls: that is what is parsed.
    Plaintext,
}

/// The connection table and everything that happens to it.
pub struct Tracker {
    table: Table<Connection>,
    config: TrackerConfig,
    resolver: ProcResolver,
    stats: Arc<ConnectionStats>,
    scratch: Vec<Exchange>,
    /// Exchanges of connections forgotten outside a call that hands exchanges on (evicted by
    /// an insert): handed on by the next one.
    forgotten: Vec<ObservedExchange>,
    activity: Vec<ConnectionActivity>,
    /// Connections with unreported bytes (may hold keys since removed).
    dirty: Vec<ConnKey>,
    /// Handshakes that finished before their connect() returned (the kernel reports the
    /// handshake first): nanoseconds, and when reported.
    handshakes: foldhash::HashMap<ConnKey, (u64, u64)>,
}

/// Most handshakes kept for connect()s not yet returned; beyond, the oldest are dropped.
const MAX_PENDING_HANDSHAKES: usize = 4096;

impl Tracker {
    pub fn new(config: TrackerConfig, stats: Arc<ConnectionStats>) -> Self {
        Tracker {
            table: Table::new(config.max_connections),
            config,
            resolver: ProcResolver::default(),
            stats,
            scratch: Vec::new(),
            forgotten: Vec::new(),
            activity: Vec::new(),
            dirty: Vec::new(),
            handshakes: Default::default(),
        }
    }

    /// Applies one kernel event; finished exchanges go to `out`.
    pub fn handle(&mut self, event: &Event<'_>, out: &mut Vec<ObservedExchange>) {
        self.handle_batch(std::iter::once(*event), out);
    }

    /// Applies a batch of kernel events in order; finished exchanges go to `out`. The shared
    /// counters are updated once per batch: a locked add per event showed in profiles.
    pub fn handle_batch<'a>(
        &mut self,
        events: impl ExactSizeIterator<Item = Event<'a>>,
        out: &mut Vec<ObservedExchange>,
    ) {
        self.stats.events.fetch_add(events.len() as u64, Relaxed);
        for event in events {
            self.apply(&event, out);
        }
        self.stats.active.store(self.table.len() as u64, Relaxed);
    }

    fn apply(&mut self, event: &Event<'_>, out: &mut Vec<ObservedExchange>) {
        match event {
            Event::Open(open) => self.on_open(open, out),
            Event::Data { header, payload } => self.on_data(header, payload, out),
            Event::Close(close) => self.on_close(close, out),
            Event::ProcessExit(exit) => self.on_process_exit(exit, out),
            Event::KernelNote(n) => self.on_note(n),
            Event::ProcessFork(_) | Event::ProcessExec(_) => {}
        }
        out.append(&mut self.forgotten);
    }

    /// Moves what happened to connections since the last call into `out`, including bytes
    /// still unreported on open connections.
    pub fn take_activity(&mut self, out: &mut Vec<ConnectionActivity>) {
        for key in std::mem::take(&mut self.dirty) {
            if let Some(conn) = self.table.get_mut(&key) {
                Self::report_pending(key, conn, &mut self.activity);
            }
        }
        // Handed over whole, not appended: a burst of connections (tens of thousands closed
        // in a second) grows this list to tens of MiB, and an appended-from list keeps its
        // capacity for good (measured with heaptrack: 30 MiB held after connection churn).
        if out.is_empty() {
            std::mem::swap(out, &mut self.activity);
        } else {
            out.append(&mut self.activity);
            self.activity = Vec::new();
        }
    }

    /// Bytes and packets since the last report, summed per connection: one activity per
    /// connection and direction each report, not one per syscall.
    fn report_pending(key: ConnKey, conn: &mut Connection, out: &mut Vec<ConnectionActivity>) {
        conn.dirty = false;
        let [sent, received] = std::mem::take(&mut conn.unreported);
        if sent + received > 0 {
            out.push(conn.activity(key, ActivityKind::Bytes { sent, received }));
        }
        let packets = std::mem::take(&mut conn.unreported_packets);
        for (direction, totals) in [Direction::Egress, Direction::Ingress]
            .into_iter()
            .zip(packets)
        {
            if !totals.is_empty() {
                out.push(conn.activity(key, ActivityKind::Packets { direction, totals }));
            }
        }
    }

    /// Reports a connection's last bytes and the end of its tracking.
    fn untracked(&mut self, key: ConnKey, conn: &mut Connection, closed: bool) {
        Self::report_pending(key, conn, &mut self.activity);
        self.activity
            .push(conn.activity(key, ActivityKind::Untracked { closed }));
    }

    fn on_open(&mut self, open: &ConnOpenEvent, out: &mut Vec<ObservedExchange>) {
        let key = ConnKey {
            tgid: open.tgid,
            fd: open.fd,
            sock: open.sock,
        };
        let origin = match open.origin {
            origin::CONNECT => Origin::Connect,
            origin::ACCEPT => Origin::Accept,
            _ => Origin::Existing,
        };
        if self.table.get_mut(&key).is_some() {
            if origin == Origin::Existing {
                // Announced again (the kernel's socket cache forgot it): the stream positions
                // tell whether anything was missed.
                return;
            }
            // The same fd and socket connected again without a close we saw: end the old one.
            self.close(key, 0, None, out);
        }
        let (local, remote) = addresses(open);
        let tcp_role = match origin {
            Origin::Connect => Some(Role::Client),
            Origin::Accept => Some(Role::Server),
            _ => local.map(|l| {
                if self.resolver.listens_on(open.tgid, l.port()) {
                    Role::Server
                } else {
                    Role::Client
                }
            }),
        };
        // The kernel numbers stream bytes from when it first saw the socket, so both kinds
        // start at position 0; only a connection older than netsonde starts mid-conversation.
        let http = Parser::Http1(if origin == Origin::Existing {
            Http1::midstream(self.config.http1)
        } else {
            Http1::new(self.config.http1)
        });
        let counter = match origin {
            Origin::Connect => &self.stats.opened_connect,
            Origin::Accept => &self.stats.opened_accept,
            _ => &self.stats.opened_existing,
        };
        counter.fetch_add(1, Relaxed);
        let handshake = self.handshakes.remove(&key).map(|(ns, _)| ns);
        let connect_ns = match origin {
            Origin::Connect if handshake.is_some() => handshake,
            Origin::Connect if open.ret == 0 => Some(open.exit_ns.saturating_sub(open.enter_ns)),
            _ => None,
        };
        let accept_ns = (origin == Origin::Accept
            && open.established_ns != 0
            && open.established_ns <= open.exit_ns)
            .then(|| open.exit_ns - open.established_ns);
        self.insert(
            key,
            Connection {
                tcp_role,
                comm: comm_str(&open.comm),
                cgroup_id: open.cgroup_id,
                local,
                remote,
                streams: [Stream::from_start(), Stream::from_start()],
                unreported: [0; 2],
                unreported_packets: Default::default(),
                dirty: false,
                http,
                from_start: origin != Origin::Existing,
                http_status: http1::Status::Active,
                last_seen_ns: open.exit_ns,
                tls: Tls::No,
                plaintext: [Stream::from_start(), Stream::from_start()],
                kernel: KernelSummary::default(),
                lost_bytes: false,
                retransmits_noted: (origin != Origin::Existing).then_some(0),
            },
            ActivityKind::Tracked {
                new: origin != Origin::Existing,
                connect_ns,
                accept_ns,
            },
        );
    }

    fn on_data(&mut self, header: &DataEvent, payload: &[u8], out: &mut Vec<ObservedExchange>) {
        let key = ConnKey {
            tgid: header.tgid,
            fd: header.fd,
            sock: header.sock,
        };
        // Asked without moving it to the front: the lookup below does that.
        if !self.table.contains(&key) {
            self.adopt(key);
        }
        let Some(conn) = self.table.get_mut(&key) else {
            return;
        };
        let dir = if header.direction == direction::EGRESS {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        // A sender's first byte leaves when the syscall starts; a receiver has it when the
        // syscall returns.
        let (first_ns, last_ns) = match dir {
            Direction::Egress => (header.enter_ns, header.exit_ns),
            Direction::Ingress => (header.exit_ns, header.exit_ns),
        };
        conn.last_seen_ns = header.exit_ns;
        if kernel::has_packets(&header.kernel) {
            match dir {
                Direction::Egress => conn.kernel.sent.add(&header.kernel),
                Direction::Ingress => conn.kernel.received.add(&header.kernel),
            }
            conn.unreported_packets[dir.index()].add(&header.kernel);
            conn.mark_dirty(key, &mut self.dirty);
        }
        let plaintext = header.flags & data_flags::TLS_PLAINTEXT != 0;
        // An HTTP/2 stream the kernel follows frame by frame: a record covers only what it
        // captured (the pieces after it, and the gaps between them, cover the rest), and a
        // piece's bytes were counted with its record.
        let piece = header.flags & data_flags::H2_PIECE != 0;
        let covered = if piece || header.flags & data_flags::H2_WALKED != 0 {
            payload.len() as u64
        } else {
            header.bytes
        };
        if plaintext {
            if conn.tls != Tls::Plaintext {
                self.stats.tls_plaintext.fetch_add(1, Relaxed);
                if conn.tls == Tls::No {
                    self.stats.tls_connections.fetch_add(1, Relaxed);
                }
                conn.start_plaintext(header.stream_pos, self.config.http1);
            }
        } else if !piece {
            // Wire bytes: counted once, here (plaintext is the same bytes decrypted).
            conn.mark_dirty(key, &mut self.dirty);
            conn.unreported[dir.index()] += header.bytes;
            if conn.tls == Tls::No
                && (header.flags & data_flags::TLS_CIPHERTEXT != 0
                    || (header.stream_pos == 0 && is_tls_record(payload)))
            {
                conn.tls = Tls::Wire;
                self.stats.tls_connections.fetch_add(1, Relaxed);
            }
            if conn.tls != Tls::No {
                return;
            }
        }
        let exchanges = &mut self.scratch;
        let streams = if plaintext {
            &mut conn.plaintext
        } else {
            &mut conn.streams
        };
        match streams[dir.index()].advance(header.stream_pos, covered) {
            Continuity::InOrder => {}
            Continuity::Gap(n) => {
                // Before a piece, the gap is DATA payload the kernel chose not to copy, not a
                // loss.
                if !piece {
                    self.stats.gap_bytes.fetch_add(n, Relaxed);
                    conn.lost_bytes = true;
                }
                conn.http.feed(dir, &Segment::gap(n, first_ns), exchanges);
            }
            Continuity::Restart => {
                self.stats.restarts.fetch_add(1, Relaxed);
                conn.lost_bytes = true;
                conn.http.desync(dir, exchanges);
            }
        }
        // Where the kernel's walk of HTTP/2 frames says a frame starts in these bytes.
        let boundary = header
            .h2_frame
            .checked_sub(header.stream_pos)
            .filter(|&at| header.h2_frame != h2_stream::LOST && at <= covered);
        let segment = Segment {
            data: payload,
            len: covered,
            first_ns,
            last_ns,
            boundary,
        };
        let was_http1 = matches!(conn.http, Parser::Http1(_));
        if was_http1 {
            conn.http
                .detect(conn.from_start, header.stream_pos, &segment, conn.tcp_role);
        }
        conn.http.feed(dir, &segment, exchanges);
        // By its preface, or by an `Upgrade: h2c` the feed just completed.
        if was_http1 && matches!(conn.http, Parser::Http2(_)) {
            self.stats.http2_connections.fetch_add(1, Relaxed);
        }
        if header.flags & data_flags::BYTES_UNCOUNTED != 0 {
            // Bytes followed that no position accounts for: the parser must find its place
            // again.
            self.stats.restarts.fetch_add(1, Relaxed);
            conn.http.desync(dir, exchanges);
        }
        Self::publish(&self.stats, key, conn, exchanges, out);
    }

    /// Something the kernel did to a connection outside its syscalls.
    fn on_note(&mut self, n: &KernelNoteEvent) {
        self.stats.kernel_notes.fetch_add(1, Relaxed);
        let key = ConnKey {
            tgid: n.tgid,
            fd: n.fd,
            sock: n.sock,
        };
        if n.note == note::CONNECT_FAILED {
            self.stats.connect_failures.fetch_add(1, Relaxed);
            return;
        }
        let Some(conn) = self.table.get_mut(&key) else {
            if n.note == note::CONNECTED {
                // A blocking connect(): the handshake ends before the call returns.
                if self.handshakes.len() >= MAX_PENDING_HANDSHAKES {
                    self.handshakes.clear();
                }
                self.handshakes.insert(key, (n.value, n.ts_ns));
            } else {
                self.stats.kernel_notes_unmatched.fetch_add(1, Relaxed);
            }
            return;
        };
        let kind = match n.note {
            note::RETRANSMIT => {
                conn.kernel.retransmits += 1;
                if let Some(noted) = conn.retransmits_noted.as_mut() {
                    *noted += 1;
                }
                ActivityKind::Retransmits { count: 1 }
            }
            note::DROP => {
                conn.kernel.drops += 1;
                ActivityKind::Drop {
                    reason: n.value as u32,
                }
            }
            note::CONNECTED => ActivityKind::Connected {
                handshake_ns: n.value,
            },
            note::ARP => {
                // A packet's wait for neighbour resolution, after its syscall returned.
                let mut stats = KernelStats::default();
                stats.ns[netsonde_common::layer::ARP] = n.value;
                stats.timed[netsonde_common::layer::ARP] = 1;
                conn.kernel.sent.add(&stats);
                conn.unreported_packets[Direction::Egress.index()].add(&stats);
                conn.mark_dirty(key, &mut self.dirty);
                return;
            }
            _ => return,
        };
        self.activity.push(conn.activity(key, kind));
    }

    /// Data for a connection nothing announced: ask /proc who it is, join it mid-stream.
    fn adopt(&mut self, key: ConnKey) {
        self.stats.opened_unannounced.fetch_add(1, Relaxed);
        let addrs = self.resolver.socket_of_fd(key.tgid, key.fd);
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", key.tgid)).unwrap_or_default();
        let local = addrs.map(|a| canonical(a.local));
        let tcp_role = local.map(|l| {
            if self.resolver.listens_on(key.tgid, l.port()) {
                Role::Server
            } else {
                Role::Client
            }
        });
        self.insert(
            key,
            Connection {
                tcp_role,
                comm: Arc::from(comm.trim_end()),
                cgroup_id: 0,
                local,
                remote: addrs.map(|a| canonical(a.remote)),
                streams: [Stream::joined(), Stream::joined()],
                unreported: [0; 2],
                unreported_packets: Default::default(),
                dirty: false,
                http: Parser::Http1(Http1::midstream(self.config.http1)),
                from_start: false,
                http_status: http1::Status::Active,
                last_seen_ns: 0,
                tls: Tls::No,
                plaintext: [Stream::from_start(), Stream::from_start()],
                kernel: KernelSummary::default(),
                lost_bytes: false,
                retransmits_noted: None,
            },
            ActivityKind::Tracked {
                new: false,
                connect_ns: None,
                accept_ns: None,
            },
        );
    }

    fn insert(&mut self, key: ConnKey, conn: Connection, tracked: ActivityKind) {
        self.activity.push(conn.activity(key, tracked));
        if let Some((old_key, mut evicted)) = self.table.insert(key, conn) {
            self.stats.evicted.fetch_add(1, Relaxed);
            let mut forgotten = std::mem::take(&mut self.forgotten);
            self.forget(old_key, &mut evicted, &mut forgotten);
            self.forgotten = forgotten;
        }
    }

    /// Hands the connection's finished exchanges on, and books what its parser noticed.
    fn publish(
        stats: &ConnectionStats,
        key: ConnKey,
        conn: &mut Connection,
        exchanges: &mut Vec<Exchange>,
        out: &mut Vec<ObservedExchange>,
    ) {
        stats.add_notes(conn.http.take_notes());
        let status = conn.http.status();
        if status != conn.http_status {
            conn.http_status = status;
            match status {
                http1::Status::NotHttp => stats.not_http.fetch_add(1, Relaxed),
                http1::Status::Switched => stats.switched.fetch_add(1, Relaxed),
                http1::Status::Active => 0,
            };
        }
        if exchanges.is_empty() {
            return;
        }
        stats.exchanges.fetch_add(exchanges.len() as u64, Relaxed);
        // Every exchange proves which side requested; fall back on the TCP role regardless.
        let role = conn.http.role().or(conn.tcp_role).unwrap_or(Role::Client);
        // The packets since the last exchange belong to the first of these; on a multiplexed
        // connection that is an approximation.
        let mut kernel = std::mem::take(&mut conn.kernel);
        out.extend(exchanges.drain(..).map(|exchange| ObservedExchange {
            exchange,
            role,
            pid: key.tgid,
            comm: conn.comm.clone(),
            cgroup_id: conn.cgroup_id,
            local: conn.local,
            remote: conn.remote,
            tls: conn.tls == Tls::Plaintext,
            kernel: std::mem::take(&mut kernel),
        }));
    }
}

impl Connection {
    /// Plaintext starts to arrive through a TLS library: from now on it is what gets parsed,
    /// from its own stream position. It is seen from its start only on a connection seen from
    /// its start whose first plaintext is at position 0 (the kernel numbers plaintext from
    /// when it first saw the socket, so on an older connection 0 is mid-conversation).
    fn start_plaintext(&mut self, stream_pos: u64, limits: http1::Limits) {
        self.tls = Tls::Plaintext;
        let from_start = self.from_start && stream_pos == 0;
        self.from_start = from_start;
        self.http = Parser::Http1(if from_start {
            Http1::new(limits)
        } else {
            Http1::midstream(limits)
        });
        self.http_status = http1::Status::Active;
        self.plaintext = if from_start {
            [Stream::from_start(), Stream::from_start()]
        } else {
            [Stream::joined(), Stream::joined()]
        };
    }

    /// Puts the connection on the list of those with something to report, once.
    fn mark_dirty(&mut self, key: ConnKey, dirty: &mut Vec<ConnKey>) {
        if !self.dirty {
            self.dirty = true;
            dirty.push(key);
        }
    }

    fn activity(&self, key: ConnKey, kind: ActivityKind) -> ConnectionActivity {
        ConnectionActivity {
            pid: key.tgid,
            comm: self.comm.clone(),
            cgroup_id: self.cgroup_id,
            role: self.tcp_role,
            local: self.local,
            remote: self.remote,
            kind,
        }
    }
}

/// Socket addresses of an open event; IPv4-mapped IPv6 addresses (dual-stack sockets) are shown
/// as the IPv4 addresses they are.
fn addresses(open: &ConnOpenEvent) -> (Option<SocketAddr>, Option<SocketAddr>) {
    const AF_INET: u16 = 2;
    const AF_INET6: u16 = 10;
    let ip = |bytes: &[u8; 16]| -> Option<IpAddr> {
        match open.family {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
                bytes[0], bytes[1], bytes[2], bytes[3],
            ))),
            AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*bytes))),
            _ => None,
        }
    };
    let local = ip(&open.local_addr).map(|ip| canonical(SocketAddr::new(ip, open.local_port)));
    let remote = ip(&open.remote_addr).map(|ip| canonical(SocketAddr::new(ip, open.remote_port)));
    (local, remote)
}

/// Whether bytes start like a TLS record: content type 20–24 (change_cipher_spec, alert,
/// handshake, application_data, heartbeat), then version 3.x (SSL 3.0 to TLS 1.3's legacy 3.3).
fn is_tls_record(data: &[u8]) -> bool {
    matches!(data, [20..=24, 3, 0..=4, ..])
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

fn comm_str(comm: &[u8; 16]) -> Arc<str> {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    Arc::from(String::from_utf8_lossy(&comm[..end]).as_ref())
}

#[cfg(test)]
mod tests;
