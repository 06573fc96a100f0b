//! Turns observed exchanges and connection activity into telemetry: export-ready records
//! (wall-clock times, client and server sides) for the console, and OTLP spans, metrics and
//! logs with one resource per workload ([`Telemetry`]); gathers the agent's own counters into
//! stats reports and self-telemetry.

pub mod http;
pub mod kernel;
pub mod logs;
pub mod metrics;
pub mod otlp;
pub mod peer;
pub mod redact;
pub mod resource;
pub mod route;
pub mod rpc;
pub mod selfmon;
pub mod spans;
pub mod split;
pub mod stage;
pub mod text;
pub mod trace_context;
pub mod wire;

pub use stage::{Telemetry, TelemetrySettings};

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, SystemTime},
};

use crate::{
    connections::{ConnectionStats, ObservedExchange},
    events::KernelClock,
    probes::counters::KernelTotals,
    protocols::{Completeness, Role},
};

/// One HTTP exchange, ready to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeRecord {
    pub start: SystemTime,
    pub end: SystemTime,
    pub role: Role,
    pub pid: u32,
    pub comm: Arc<str>,
    /// The process's cgroup id (0 when unknown): its container when /proc no longer has it.
    pub cgroup_id: u64,
    pub method: std::borrow::Cow<'static, str>,
    pub target: String,
    pub version_minor: u8,
    /// HTTP major version: 1 or 2.
    pub version_major: u8,
    pub status: u16,
    /// The HTTP client's and server's socket addresses (whichever side was traced).
    pub client: Option<SocketAddr>,
    pub server: Option<SocketAddr>,
    /// The traced process's own and its peer's socket addresses.
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    /// The request headers the parser kept (lower-case names; see `protocols::http1`).
    pub request_headers: Vec<crate::protocols::Header>,
    pub request_body_bytes: u64,
    pub response_body_bytes: u64,
    pub completeness: Completeness,
    /// Seen as plaintext through a TLS library (`url.scheme` https).
    pub tls: bool,
    /// The gRPC call the exchange carried, if it is one: then it is reported as an RPC.
    pub rpc: Option<crate::protocols::grpc::Call>,
    /// What the kernel did with the exchange's packets.
    pub kernel: crate::connections::kernel::KernelSummary,
    /// Who the peer is in the cluster (filled by the telemetry stage when it watches one).
    pub peer: Option<Arc<peer::PeerInfo>>,
}

impl ExchangeRecord {
    /// The record of an observed exchange, redacted by `redaction` (the one place where that
    /// happens: every output gets the same, redacted, record).
    pub fn from_observed(
        observed: ObservedExchange,
        clock: &KernelClock,
        redaction: &redact::Redaction,
    ) -> Self {
        let rpc = crate::protocols::grpc::call(&observed.exchange);
        let mut ex = observed.exchange;
        redaction.target(&mut ex.request.target);
        redaction.headers(&mut ex.request.headers);
        let (client, server) = match observed.role {
            Role::Client => (observed.local, observed.remote),
            Role::Server => (observed.remote, observed.local),
        };
        ExchangeRecord {
            start: clock.to_wall(ex.request_start_ns),
            end: clock.to_wall(ex.response_end_ns.max(ex.request_start_ns)),
            role: observed.role,
            pid: observed.pid,
            comm: observed.comm,
            cgroup_id: observed.cgroup_id,
            method: ex.request.method,
            target: ex.request.target,
            version_minor: ex.request.version_minor,
            version_major: ex.request.major,
            status: ex.response.status,
            client,
            server,
            local: observed.local,
            remote: observed.remote,
            request_headers: ex.request.headers,
            request_body_bytes: ex.request_body_bytes,
            response_body_bytes: ex.response_body_bytes,
            completeness: ex.completeness,
            tls: observed.tls,
            rpc,
            kernel: observed.kernel,
            peer: None,
        }
    }

    /// Whether it failed, by the side's rules (semconv): HTTP status, or gRPC status.
    pub fn failed(&self) -> bool {
        match &self.rpc {
            Some(call) => rpc::error_type(self.role, call).is_some(),
            None => {
                http::is_error(self.role, self.status)
                    || self.completeness == Completeness::NoResponse
            }
        }
    }

    /// `url.scheme`.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    pub fn duration(&self) -> Duration {
        self.end.duration_since(self.start).unwrap_or_default()
    }

    /// First value of a kept request header (lower-case name). A redacted one is absent for
    /// whatever is derived from it (a redacted Host names no server, a redacted traceparent
    /// joins no trace).
    pub fn request_header(&self, name: &str) -> Option<&str> {
        self.request_headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| *v != redact::REDACTED)
    }
}

/// Counters of the ring-buffer reader (self-telemetry).
#[derive(Debug, Default)]
pub struct ReaderStats {
    pub records: std::sync::atomic::AtomicU64,
    pub decode_errors: std::sync::atomic::AtomicU64,
}

/// Export counters per signal (traces, metrics, logs), across exporters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportTotals {
    pub sent: [u64; 3],
    pub dropped: [u64; 3],
    pub failures: [u64; 3],
    /// Batches waiting in queues now.
    pub queued: [u64; 3],
    /// Items held in the disk queue now.
    pub on_disk: [u64; 3],
}

/// A snapshot of the agent's own counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsReport {
    pub kernel: KernelTotals,
    pub records: u64,
    pub decode_errors: u64,
    pub connections_active: u64,
    pub connections_opened: u64,
    pub connections_closed: u64,
    pub connections_evicted: u64,
    pub connections_expired: u64,
    pub not_http: u64,
    pub exchanges: u64,
    pub orphan_responses: u64,
    pub unanswered_requests: u64,
    pub hidden_messages: u64,
    pub unframed_bodies: u64,
    pub malformed: u64,
    pub heads_cut: u64,
    pub incomplete_requests: u64,
    pub gap_bytes: u64,
    /// Retransmits no kernel note reported, found from the sockets' own totals at close.
    pub retransmits_at_close: u64,
    /// Kernel notes (retransmits, drops) for connections user space does not hold.
    pub notes_unmatched: u64,
    pub http2_connections: u64,
    /// Times an HTTP/2 connection's direction lost its place or its compression table, times
    /// one found its place again, and streams left out because their start went missing.
    pub http2_broken: u64,
    pub http2_resyncs: u64,
    pub http2_lost_streams: u64,
    /// Header fields of joined HTTP/2 connections that could not be decoded.
    pub http2_unknown_fields: u64,
    /// Connections carrying TLS, and those of them whose plaintext was seen.
    pub tls_connections: u64,
    pub tls_plaintext: u64,
    pub export: ExportTotals,
    pub probes_attached: u64,
    pub probes_total: u64,
    pub lifecycle: crate::probes::lifecycle::LifecycleTotals,
    /// Packets dropped on the node, by drop reason.
    pub drops_by_reason: Vec<(String, u64)>,
    /// Each probe point and the method it attached with (`none`).
    pub probe_methods: Arc<[(&'static str, &'static str)]>,
    /// The Kubernetes watches, when they run.
    pub kubernetes: Option<crate::attribution::kube::watch::WatchTotals>,
    /// Runs of netsonde's programs the kernel skipped (they would have nested in another BPF
    /// program on the same CPU), by program; only those with any.
    pub skipped_runs: Vec<(String, u64)>,
    /// Whether this is the last report, at exit.
    pub last: bool,
}

impl StatsReport {
    pub fn gather(
        kernel: KernelTotals,
        reader: &ReaderStats,
        conns: &ConnectionStats,
        last: bool,
    ) -> Self {
        StatsReport {
            kernel,
            records: reader.records.load(Relaxed),
            decode_errors: reader.decode_errors.load(Relaxed),
            connections_active: conns.active.load(Relaxed),
            connections_opened: conns.opened(),
            connections_closed: conns.closed.load(Relaxed),
            connections_evicted: conns.evicted.load(Relaxed),
            connections_expired: conns.expired.load(Relaxed),
            not_http: conns.not_http.load(Relaxed),
            exchanges: conns.exchanges.load(Relaxed),
            orphan_responses: conns.orphan_responses.load(Relaxed),
            unanswered_requests: conns.unanswered_requests.load(Relaxed),
            hidden_messages: conns.hidden_messages.load(Relaxed),
            unframed_bodies: conns.unframed_bodies.load(Relaxed),
            malformed: conns.malformed.load(Relaxed),
            heads_cut: conns.heads_cut.load(Relaxed),
            incomplete_requests: conns.incomplete_requests.load(Relaxed),
            gap_bytes: conns.gap_bytes.load(Relaxed),
            retransmits_at_close: conns.retransmits_at_close.load(Relaxed),
            notes_unmatched: conns.kernel_notes_unmatched.load(Relaxed),
            http2_connections: conns.http2_connections.load(Relaxed),
            http2_broken: conns.http2_broken.load(Relaxed),
            http2_resyncs: conns.http2_resyncs.load(Relaxed),
            http2_lost_streams: conns.http2_lost_streams.load(Relaxed),
            http2_unknown_fields: conns.http2_unknown_fields.load(Relaxed),
            tls_connections: conns.tls_connections.load(Relaxed),
            tls_plaintext: conns.tls_plaintext.load(Relaxed),
            export: ExportTotals::default(),
            probes_attached: 0,
            probes_total: 0,
            lifecycle: Default::default(),
            drops_by_reason: Vec::new(),
            probe_methods: Arc::new([]),
            kubernetes: None,
            skipped_runs: Vec::new(),
            last,
        }
    }
}

/// What the export stage receives.
#[derive(Debug, Clone)]
pub enum Signal {
    Exchanges(Vec<ExchangeRecord>),
    Connections(Vec<crate::connections::ConnectionActivity>),
    Stats(Box<StatsReport>),
}
