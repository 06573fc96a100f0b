//! The programs' per-CPU counters: what they delivered and what they could not.

use std::collections::BTreeMap;

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use netsonde_common::counter;

/// Totals over all CPUs, one per counter slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelTotals {
    pub data_events: u64,
    pub conn_events: u64,
    pub close_events: u64,
    pub exit_events: u64,
    pub data_lost: u64,
    pub conn_lost: u64,
    pub close_lost: u64,
    pub exit_lost: u64,
    pub bytes_total: u64,
    pub bytes_not_captured: u64,
    pub read_failed: u64,
    pub in_flight_full: u64,
    pub iov_truncated: u64,
    pub process_events: u64,
    pub process_lost: u64,
    pub monitored_full: u64,
    pub tls_events: u64,
    pub tls_no_socket: u64,
    pub tls_after_close: u64,
    pub tls_read_unseen: u64,
    pub after_close: u64,
    pub h2_pieces: u64,
    pub h2_lost: u64,
    pub h2_resyncs: u64,
    pub notes: u64,
    pub notes_lost: u64,
    pub device_late: u64,
    pub receive_untimed: u64,
    pub node_retransmits: u64,
    pub node_drops: u64,
    pub drop_reasons_full: u64,
}

impl KernelTotals {
    /// Records written to the ring buffer.
    pub fn events(&self) -> u64 {
        self.data_events
            + self.conn_events
            + self.close_events
            + self.exit_events
            + self.process_events
            + self.notes
    }

    /// Records lost because the ring buffer was full.
    pub fn lost(&self) -> u64 {
        self.data_lost
            + self.conn_lost
            + self.close_lost
            + self.exit_lost
            + self.process_lost
            + self.notes_lost
    }
}

/// Handle on the `COUNTERS` map, and on the node's drops by reason (`DROP_REASONS`).
pub struct KernelCounters {
    array: PerCpuArray<MapData, u64>,
    drops: Option<PerCpuHashMap<MapData, u32, u64>>,
    drop_names: BTreeMap<u32, String>,
}

impl KernelCounters {
    pub(super) fn new(
        array: PerCpuArray<MapData, u64>,
        drops: Option<PerCpuHashMap<MapData, u32, u64>>,
        drop_names: BTreeMap<u32, String>,
    ) -> Self {
        KernelCounters {
            array,
            drops,
            drop_names,
        }
    }

    /// Packets dropped on the node since start, by reason name (by number when the kernel
    /// does not name it), largest first.
    pub fn drops_by_reason(&self) -> Vec<(String, u64)> {
        let Some(map) = &self.drops else {
            return Vec::new();
        };
        let mut out: Vec<(String, u64)> = map
            .iter()
            .flatten()
            .map(|(reason, per_cpu)| {
                let name = super::netlayer::drop_reason(&self.drop_names, reason);
                (name, per_cpu.iter().sum())
            })
            .collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }

    /// One slot's value on every CPU.
    pub fn per_cpu(&self, slot: u32) -> Vec<u64> {
        self.array
            .get(&slot, 0)
            .map(|values| values.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Sums every slot over all CPUs.
    pub fn totals(&self) -> KernelTotals {
        let sum = |slot: u32| self.per_cpu(slot).iter().sum::<u64>();
        KernelTotals {
            data_events: sum(counter::DATA_EVENTS),
            conn_events: sum(counter::CONN_EVENTS),
            close_events: sum(counter::CLOSE_EVENTS),
            exit_events: sum(counter::EXIT_EVENTS),
            data_lost: sum(counter::DATA_LOST),
            conn_lost: sum(counter::CONN_LOST),
            close_lost: sum(counter::CLOSE_LOST),
            exit_lost: sum(counter::EXIT_LOST),
            bytes_total: sum(counter::BYTES_TOTAL),
            bytes_not_captured: sum(counter::BYTES_NOT_CAPTURED),
            read_failed: sum(counter::READ_FAILED),
            in_flight_full: sum(counter::IN_FLIGHT_FULL),
            iov_truncated: sum(counter::IOV_TRUNCATED),
            process_events: sum(counter::PROCESS_EVENTS),
            process_lost: sum(counter::PROCESS_LOST),
            monitored_full: sum(counter::MONITORED_FULL),
            tls_events: sum(counter::TLS_EVENTS),
            tls_no_socket: sum(counter::TLS_NO_SOCKET),
            tls_after_close: sum(counter::TLS_AFTER_CLOSE),
            tls_read_unseen: sum(counter::TLS_READ_UNSEEN),
            after_close: sum(counter::AFTER_CLOSE),
            h2_pieces: sum(counter::H2_PIECES),
            h2_lost: sum(counter::H2_LOST),
            h2_resyncs: sum(counter::H2_RESYNCS),
            notes: sum(counter::NOTES),
            notes_lost: sum(counter::NOTES_LOST),
            device_late: sum(counter::DEVICE_LATE),
            receive_untimed: sum(counter::RECEIVE_UNTIMED),
            node_retransmits: sum(counter::NODE_RETRANSMITS),
            node_drops: sum(counter::NODE_DROPS),
            drop_reasons_full: sum(counter::DROP_REASONS_FULL),
        }
    }
}
