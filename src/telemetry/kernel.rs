//! The kernel's part in telemetry: per-connection packet metrics, and each exchange's
//! kernel-time breakdown on its span and access log.

use std::collections::BTreeMap;

use netsonde_common::layer;

use crate::{
    connections::{
        ActivityKind,
        kernel::{KernelSummary, LAYER_NAMES},
    },
    probes::netlayer::drop_reason,
    protocols::Direction,
    telemetry::{
        metrics::{Instrument, MetricSet},
        otlp::Attrs,
        wire::AttrSink,
    },
};

/// Span and access-log attribute names of each layer's time, by [`layer`] index.
const LAYER_ATTRIBUTES: [&str; layer::COUNT] = [
    "netsonde.kernel.l4.duration_ns",
    "netsonde.kernel.l3.duration_ns",
    "netsonde.kernel.netfilter.duration_ns",
    "netsonde.kernel.arp.duration_ns",
    "netsonde.kernel.device_queue.duration_ns",
    "netsonde.kernel.device_send.duration_ns",
    "netsonde.kernel.receive.duration_ns",
];

/// The exchange's kernel-time breakdown; nothing when the kernel layer saw none of it.
pub fn span_attributes(k: &KernelSummary, a: &mut impl AttrSink) {
    if k.is_empty() {
        return;
    }
    a.int("netsonde.kernel.packets.sent", k.sent.packets as i64);
    a.int(
        "netsonde.kernel.packets.received",
        k.received.packets as i64,
    );
    if k.retransmits > 0 {
        a.int("netsonde.kernel.retransmits", k.retransmits as i64);
    }
    if k.drops > 0 {
        a.int("netsonde.kernel.drops", k.drops as i64);
    }
    for (i, name) in LAYER_ATTRIBUTES.iter().enumerate() {
        let (ns, timed) = k.layer(i);
        if timed > 0 {
            a.int(name, ns as i64);
        }
    }
}

/// Books one kernel activity of a connection whose metric attributes are `attrs` (others are
/// not this module's: ignored).
pub fn add_activity(
    m: &mut MetricSet,
    attrs: &Attrs,
    kind: &ActivityKind,
    drop_reasons: &BTreeMap<u32, String>,
    t: u64,
    max_series: usize,
) {
    let with = |extra: &[(&'static str, String)]| {
        let mut out = attrs.clone();
        out.extend(extra.iter().map(|(k, v)| (*k, v.as_str().into())));
        out.sort_by(|x, y| x.0.cmp(y.0));
        out
    };
    match kind {
        ActivityKind::Packets { direction, totals } => {
            let dir = match direction {
                Direction::Egress => "transmit",
                Direction::Ingress => "receive",
            };
            let by_dir = with(&[("network.io.direction", dir.into())]);
            if totals.packets > 0 {
                let packets = totals.packets as i64;
                m.add(Instrument::KernelPackets, &by_dir, packets, t, max_series);
                m.add(
                    Instrument::KernelBytes,
                    &by_dir,
                    totals.bytes as i64,
                    t,
                    max_series,
                );
            }
            for (i, name) in LAYER_NAMES.iter().enumerate() {
                let timed = totals.timed[i];
                if timed == 0 {
                    continue;
                }
                let layer_attrs = with(&[
                    ("network.io.direction", dir.into()),
                    ("netsonde.kernel.layer", (*name).into()),
                ]);
                // Each packet's time, as the mean over the connection's packets since the
                // last report.
                let per_packet = totals.ns[i] as f64 / timed as f64 / 1e9;
                m.record_n(
                    Instrument::KernelLayerDuration,
                    &layer_attrs,
                    per_packet,
                    timed,
                    t,
                    max_series,
                );
            }
        }
        ActivityKind::Retransmits { count } => {
            let count = i64::try_from(*count).unwrap_or(i64::MAX);
            m.add(Instrument::KernelRetransmits, attrs, count, t, max_series);
        }
        ActivityKind::Drop { reason } => {
            let reason = drop_reason(drop_reasons, *reason);
            let by_reason = with(&[("netsonde.kernel.drop.reason", reason)]);
            m.add(Instrument::KernelDrops, &by_reason, 1, t, max_series);
        }
        ActivityKind::Connected { handshake_ns } => {
            let seconds = *handshake_ns as f64 / 1e9;
            m.record(Instrument::ConnectDuration, attrs, seconds, t, max_series);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exchange_without_kernel_data_gets_no_kernel_attributes() {
        let mut attrs = Attrs::new();
        span_attributes(&KernelSummary::default(), &mut attrs);
        assert!(attrs.is_empty());
        let mut k = KernelSummary::default();
        k.sent.packets = 1;
        k.sent.ns[layer::DEVICE_SEND] = 700;
        k.sent.timed[layer::DEVICE_SEND] = 1;
        k.received.packets = 2;
        span_attributes(&k, &mut attrs);
        let keys: Vec<_> = attrs.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "netsonde.kernel.packets.sent",
                "netsonde.kernel.packets.received",
                "netsonde.kernel.device_send.duration_ns",
            ]
        );
    }
}
