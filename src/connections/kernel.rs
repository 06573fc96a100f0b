//! What the kernel did with a connection's packets, as the network-layer programs report it:
//! summed per exchange (for its span and access log) and passed on per syscall (for metrics).

use netsonde_common::{KernelStats, layer};

/// Names of the kernel layers in telemetry, by [`layer`] index.
pub const LAYER_NAMES: [&str; layer::COUNT] = [
    "l4",
    "l3",
    "netfilter",
    "arp",
    "device_queue",
    "device_send",
    "receive",
];

/// Packets one way, and the time they spent in each layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketTotals {
    pub packets: u64,
    /// Packet bytes as the device layer saw them (headers included).
    pub bytes: u64,
    /// Nanoseconds spent in each layer, and how many packets (or hook runs) that covers.
    pub ns: [u64; layer::COUNT],
    pub timed: [u64; layer::COUNT],
}

impl PacketTotals {
    pub fn add(&mut self, stats: &KernelStats) {
        self.packets += u64::from(stats.packets);
        self.bytes += stats.bytes;
        for i in 0..layer::COUNT {
            self.ns[i] += stats.ns[i];
            self.timed[i] += u64::from(stats.timed[i]);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.packets == 0 && self.timed.iter().all(|&t| t == 0)
    }
}

/// Whether a syscall's record says anything about its packets.
pub fn has_packets(stats: &KernelStats) -> bool {
    stats.packets > 0 || stats.timed.iter().any(|&t| t > 0)
}

/// The kernel's part in one exchange: its packets each way, and what happened to the
/// connection's packets meanwhile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelSummary {
    pub sent: PacketTotals,
    pub received: PacketTotals,
    pub retransmits: u64,
    pub drops: u64,
}

impl KernelSummary {
    pub fn is_empty(&self) -> bool {
        self.sent.is_empty() && self.received.is_empty() && self.retransmits == 0 && self.drops == 0
    }

    /// Nanoseconds in layer `i` both ways, and how many packets that covers.
    pub fn layer(&self, i: usize) -> (u64, u64) {
        (
            self.sent.ns[i] + self.received.ns[i],
            self.sent.timed[i] + self.received.timed[i],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_syscall_by_syscall() {
        let mut stats = KernelStats {
            packets: 2,
            bytes: 180,
            ..Default::default()
        };
        stats.ns[layer::DEVICE_QUEUE] = 1_000;
        stats.timed[layer::DEVICE_QUEUE] = 2;
        let mut totals = PacketTotals::default();
        assert!(totals.is_empty());
        totals.add(&stats);
        totals.add(&stats);
        assert_eq!(totals.packets, 4);
        assert_eq!(totals.bytes, 360);
        assert_eq!(totals.ns[layer::DEVICE_QUEUE], 2_000);
        assert_eq!(totals.timed[layer::DEVICE_QUEUE], 4);
        let summary = KernelSummary {
            sent: totals,
            received: totals,
            ..Default::default()
        };
        assert_eq!(summary.layer(layer::DEVICE_QUEUE), (4_000, 8));
        assert!(!has_packets(&KernelStats::default()));
        assert!(has_packets(&stats));
    }
}
