//! The console exporter: one line per exchange, and one per stats report, on standard output.
//!
//! Exchange line (fields separated by single spaces; `comm` last because it may contain
//! spaces):
//!
//! ```text
//! 2026-11-26T04:00:00.123Z server pid=1234 GET /x 200 0.412ms client=127.0.0.1:51234 server=127.0.0.1:8080 req_body=0 resp_body=612 comm=nginx
//! ```
//!
//! An exchange whose response was not seen to its end gets `incomplete=body_cut` (the
//! connection closed mid-body), `incomplete=framing_lost` (bytes were missed where the body's
//! framing was) or `incomplete=no_response` (the connection closed before any response) before
//! `comm=`, and `incomplete=request_cut` when its request's body was cut. A status not seen
//! prints as `000`, as curl's `%{http_code}` does.

use crate::connections::kernel::{KernelSummary, LAYER_NAMES};
use std::{
    fmt::Write as _,
    io::{self, Write},
    net::SocketAddr,
};

use crate::{
    protocols::Completeness,
    telemetry::{
        ExchangeRecord, Signal, StatsReport,
        text::{Rfc3339Millis, push_millis, push_padded, push_socket_addr, push_uint},
    },
};

pub struct ConsoleExporter<W: Write> {
    out: W,
    line: String,
    clock: Rfc3339Millis,
}

impl<W: Write> ConsoleExporter<W> {
    pub fn new(out: W) -> Self {
        ConsoleExporter {
            out,
            line: String::with_capacity(256),
            clock: Rfc3339Millis::default(),
        }
    }

    pub fn export(&mut self, signal: &Signal) -> io::Result<()> {
        match signal {
            Signal::Exchanges(records) => {
                for record in records {
                    self.line.clear();
                    format_exchange(&mut self.line, record, &mut self.clock);
                    self.line.push('\n');
                    self.out.write_all(self.line.as_bytes())?;
                }
            }
            Signal::Connections(_) => return Ok(()),
            Signal::Stats(report) => {
                self.line.clear();
                format_stats(&mut self.line, report, std::time::SystemTime::now());
                self.line.push('\n');
                self.out.write_all(self.line.as_bytes())?;
            }
        }
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

pub fn format_exchange(line: &mut String, r: &ExchangeRecord, clock: &mut Rfc3339Millis) {
    // Written piece by piece rather than with one `write!`: `core::fmt` took most of this
    // function's time at saturation (see `telemetry::text`).
    clock.push(line, r.start);
    line.push(' ');
    line.push_str(r.role.as_str());
    line.push_str(" pid=");
    push_uint(line, u64::from(r.pid));
    line.push(' ');
    push_token(line, &r.method);
    line.push(' ');
    push_token(line, &r.target);
    line.push(' ');
    push_padded(line, u64::from(r.status), 3);
    line.push(' ');
    push_millis(line, r.duration());
    line.push_str(" client=");
    push_addr(line, r.client);
    line.push_str(" server=");
    push_addr(line, r.server);
    line.push_str(" req_body=");
    push_uint(line, r.request_body_bytes);
    line.push_str(" resp_body=");
    push_uint(line, r.response_body_bytes);
    match r.completeness {
        Completeness::Complete => {}
        Completeness::BodyCut => line.push_str(" incomplete=body_cut"),
        Completeness::FramingLost => line.push_str(" incomplete=framing_lost"),
        Completeness::BytesLost => line.push_str(" incomplete=bytes_lost"),
        Completeness::NoResponse => line.push_str(" incomplete=no_response"),
        Completeness::RequestCut => line.push_str(" incomplete=request_cut"),
    }
    if let Some(call) = &r.rpc {
        let count = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
        let _ = write!(
            line,
            " grpc_status={} messages={}/{}",
            call.status
                .map_or("none", crate::protocols::grpc::status_name),
            count(call.request_messages),
            count(call.response_messages)
        );
    }
    if r.tls {
        line.push_str(" tls=true");
    }
    kernel_part(line, &r.kernel);
    line.push_str(" comm=");
    push_printable(line, &r.comm);
}

/// ` packets=SENT/RECEIVED kernel_ns=layer:ns,… retransmits=N drops=N`, when the kernel layer
/// saw the exchange's packets.
fn kernel_part(line: &mut String, k: &KernelSummary) {
    if k.is_empty() {
        return;
    }
    line.push_str(" packets=");
    push_uint(line, k.sent.packets);
    line.push('/');
    push_uint(line, k.received.packets);
    let mut sep = " kernel_ns=";
    for (i, name) in LAYER_NAMES.iter().enumerate() {
        let (ns, timed) = k.layer(i);
        if timed > 0 {
            line.push_str(sep);
            line.push_str(name);
            line.push(':');
            push_uint(line, ns);
            sep = ",";
        }
    }
    if k.retransmits > 0 {
        line.push_str(" retransmits=");
        push_uint(line, k.retransmits);
    }
    if k.drops > 0 {
        line.push_str(" drops=");
        push_uint(line, k.drops);
    }
}

pub fn format_stats(line: &mut String, s: &StatsReport, now: std::time::SystemTime) {
    let k = &s.kernel;
    let _ = write!(
        line,
        "{} {} events={} lost={} bytes={} not_captured={} connections={} opened={} closed={} \
         evicted={} expired={} exchanges={} not_http={} orphan_responses={} unanswered_requests={} \
         hidden_messages={} heads_cut={} incomplete_requests={} unframed_bodies={} malformed={} gap_bytes={} decode_errors={} read_failed={} in_flight_full={} after_close={} \
         h2_connections={} h2_broken={} h2_resyncs={} h2_lost_streams={} h2_unknown_fields={} h2_pieces={} h2_walk_lost={} h2_walk_resyncs={} tls_connections={} tls_plaintext={} tls_events={} tls_no_socket={} tls_after_close={} tls_read_unseen={} tls_libraries={} inherited={} swept={} kernel_notes={} notes_unmatched={} node_retransmits={} retransmits_at_close={} node_drops={} device_late={} receive_untimed={} probes={}/{} export_sent={} export_dropped={} export_dropped_spans={} export_dropped_points={} export_dropped_log_records={} export_failures={} export_queued={} export_on_disk={}",
        humantime::format_rfc3339_millis(now),
        if s.last { "stats(final)" } else { "stats" },
        k.events(),
        k.lost(),
        k.bytes_total,
        k.bytes_not_captured,
        s.connections_active,
        s.connections_opened,
        s.connections_closed,
        s.connections_evicted,
        s.connections_expired,
        s.exchanges,
        s.not_http,
        s.orphan_responses,
        s.unanswered_requests,
        s.hidden_messages,
        s.heads_cut,
        s.incomplete_requests,
        s.unframed_bodies,
        s.malformed,
        s.gap_bytes,
        s.decode_errors,
        k.read_failed,
        k.in_flight_full,
        k.after_close,
        s.http2_connections,
        s.http2_broken,
        s.http2_resyncs,
        s.http2_lost_streams,
        s.http2_unknown_fields,
        k.h2_pieces,
        k.h2_lost,
        k.h2_resyncs,
        s.tls_connections,
        s.tls_plaintext,
        k.tls_events,
        k.tls_no_socket,
        k.tls_after_close,
        k.tls_read_unseen,
        s.lifecycle.tls_libraries_hooked,
        s.lifecycle.children_confirmed,
        s.lifecycle.swept,
        k.notes,
        s.notes_unmatched,
        k.node_retransmits,
        s.retransmits_at_close,
        k.node_drops,
        k.device_late,
        k.receive_untimed,
        s.probes_attached,
        s.probes_total,
        s.export.sent.iter().sum::<u64>(),
        s.export.dropped.iter().sum::<u64>(),
        s.export.dropped[0],
        s.export.dropped[1],
        s.export.dropped[2],
        s.export.failures.iter().sum::<u64>(),
        s.export.queued.iter().sum::<u64>(),
        s.export.on_disk.iter().sum::<u64>(),
    );
    if let Some(w) = &s.kubernetes {
        let _ = write!(
            line,
            " k8s_objects={} k8s_deleted={} k8s_malformed={} k8s_errors={} k8s_lists={}",
            w.applied, w.deleted, w.malformed, w.errors, w.lists
        );
    }
    let mut sep = " kernel_skipped=";
    for (program, n) in &s.skipped_runs {
        let _ = write!(line, "{sep}{program}:{n}");
        sep = ",";
    }
    // The node's most frequent drop reasons.
    let mut sep = " node_drop_reasons=";
    for (reason, n) in s.drops_by_reason.iter().take(8) {
        let _ = write!(line, "{sep}{reason}:{n}");
        sep = ",";
    }
}

fn push_addr(line: &mut String, a: Option<SocketAddr>) {
    match a {
        Some(a) => push_socket_addr(line, a),
        None => line.push('-'),
    }
}

/// A field that must stay one space-free token: whitespace and control characters are
/// percent-encoded.
fn push_token(line: &mut String, s: &str) {
    if s.is_empty() {
        line.push('-');
        return;
    }
    if !s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        line.push_str(s);
        return;
    }
    for c in s.chars() {
        if c.is_whitespace() || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(line, "%{b:02X}");
            }
        } else {
            line.push(c);
        }
    }
}

/// The last field: spaces are fine, control characters are escaped.
fn push_printable(line: &mut String, s: &str) {
    if !s.chars().any(char::is_control) {
        line.push_str(s);
        return;
    }
    for c in s.chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::Arc,
        time::{Duration, UNIX_EPOCH},
    };

    use super::*;
    use crate::protocols::Role;

    fn record() -> ExchangeRecord {
        let start = UNIX_EPOCH + Duration::from_millis(1_764_129_600_123);
        ExchangeRecord {
            kernel: Default::default(),
            peer: None,
            cgroup_id: 0,
            start,
            end: start + Duration::from_micros(412),
            role: Role::Server,
            pid: 1234,
            comm: Arc::from("nginx"),
            method: "GET".into(),
            target: "/x".into(),
            version_minor: 1,
            version_major: 1,
            status: 200,
            client: Some("127.0.0.1:51234".parse().unwrap()),
            server: Some("127.0.0.1:8080".parse().unwrap()),
            local: None,
            remote: None,
            request_headers: Vec::new(),
            request_body_bytes: 0,
            response_body_bytes: 612,
            completeness: Completeness::Complete,
            tls: false,
            rpc: None,
        }
    }

    #[test]
    fn formats_an_exchange_line() {
        let mut line = String::new();
        format_exchange(&mut line, &record(), &mut Rfc3339Millis::default());
        assert_eq!(
            line,
            "2025-11-26T04:00:00.123Z server pid=1234 GET /x 200 0.412ms client=127.0.0.1:51234 \
             server=127.0.0.1:8080 req_body=0 resp_body=612 comm=nginx"
        );
    }

    #[test]
    fn keeps_fields_single_tokens() {
        let mut r = record();
        r.target = "/a b\tc".into();
        r.comm = Arc::from("Web Content\n");
        r.client = None;
        r.completeness = Completeness::BodyCut;
        let mut line = String::new();
        format_exchange(&mut line, &r, &mut Rfc3339Millis::default());
        assert!(line.contains(" GET /a%20b%09c 200 "), "{line}");
        assert!(line.contains(" client=- "), "{line}");
        assert!(
            line.ends_with(" incomplete=body_cut comm=Web Content\\n"),
            "{line}"
        );
    }

    #[test]
    fn formats_a_stats_line() {
        let mut line = String::new();
        let report = StatsReport {
            exchanges: 7,
            connections_active: 2,
            last: true,
            ..Default::default()
        };
        format_stats(&mut line, &report, UNIX_EPOCH);
        assert!(
            line.starts_with("1970-01-01T00:00:00.000Z stats(final) events=0 lost=0 "),
            "{line}"
        );
        assert!(
            line.contains(" connections=2 ") && line.contains(" exchanges=7 "),
            "{line}"
        );
    }
}
