//! The programs' per-CPU counters: what they delivered and what they could not.

use aya::maps::{MapData, PerCpuArray};
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
    pub h2_pieces: u64,
    pub h2_lost: u64,
}

impl KernelTotals {
    /// Records written to the ring buffer.
    pub fn events(&self) -> u64 {
        self.data_events
            + self.conn_events
            + self.close_events
            + self.exit_events
            + self.process_events
    }

    /// Records lost because the ring buffer was full.
    pub fn lost(&self) -> u64 {
        self.data_lost + self.conn_lost + self.close_lost + self.exit_lost + self.process_lost
    }
}

/// Handle on the `COUNTERS` map.
pub struct KernelCounters {
    array: PerCpuArray<MapData, u64>,
}

impl KernelCounters {
    pub(super) fn new(array: PerCpuArray<MapData, u64>) -> Self {
        KernelCounters { array }
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
            h2_pieces: sum(counter::H2_PIECES),
            h2_lost: sum(counter::H2_LOST),
        }
    }
}
