//! Wires the stages together, owns their tasks, and stops them in order.
//!
//! ```text
//! probes ──ring buffer──▶ reader task ──Vec<Event>──▶ tracker task ──Signal──▶ export thread
//!  (kernel)               (events::decode)            (connections + protocols    (console)
//!                                                       → telemetry records)
//! ```
//!
//! Every arrow is a bounded channel: when a stage falls behind, the one before it waits, and in
//! the end the kernel ring buffer fills and the programs count what they drop. Nothing is lost
//! without a counter.
//!
//! Shutdown order: detach the programs (no new events), let the reader drain the ring buffer,
//! let the tracker finish what it was given, send the final stats, flush the output.

use std::{
    future::Future,
    io,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use tokio::sync::{mpsc, watch};

use crate::{
    config::Config,
    connections::{ConnectionStats, Tracker, TrackerConfig},
    events::{self, Event, KernelClock},
    export::console::ConsoleExporter,
    probes::{ProbeError, ProbeSettings, Probes, ring::RingReader},
    protocols::http1,
    telemetry::{ExchangeRecord, ReaderStats, Signal, StatsReport},
};

/// Most records handed on in one batch.
const BATCH: usize = 4096;
/// Event batches in flight between reader and tracker.
const EVENT_QUEUE: usize = 64;
/// Signals in flight between tracker and exporter.
const SIGNAL_QUEUE: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Probes(#[from] ProbeError),
    #[error("cannot watch the ring buffer")]
    Ring(#[source] io::Error),
    #[error("a pipeline task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// How the agent was asked to run, beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Attach no-op programs instead (the benchmark floor).
    pub noop_probes: bool,
    /// Read kernel struct layouts from this BTF file instead of the running kernel's.
    pub btf: Option<std::path::PathBuf>,
}

/// The probe settings a config asks for.
pub fn probe_settings(config: &Config, options: &RunOptions) -> ProbeSettings {
    let noop = options.noop_probes;
    ProbeSettings {
        capture_bytes: config.capture.payload_bytes,
        ring_buffer_bytes: config.capture.ring_buffer_bytes,
        pids: config.filter.pids.clone(),
        comms: config.filter.comms.clone(),
        noop,
        btf_path: options
            .btf
            .clone()
            .unwrap_or_else(|| crate::probes::offsets::VMLINUX_BTF.into()),
    }
}

/// Runs until `shutdown` completes; returns the final stats.
pub async fn run(
    config: &Config,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<StatsReport, AgentError> {
    let clock = KernelClock::calibrate();
    let mut probes = Probes::load(&probe_settings(config, &options))?;
    let ring = RingReader::new(probes.take_ring()?).map_err(AgentError::Ring)?;
    let counters = probes.take_counters()?;
    announce(&probes, config);

    let reader_stats = Arc::new(ReaderStats::default());
    let conn_stats = Arc::new(ConnectionStats::default());
    let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
    let (signal_tx, signal_rx) = mpsc::channel(SIGNAL_QUEUE);
    let (stop_tx, stop_rx) = watch::channel(false);

    let batch_delay = Duration::from_millis(config.capture.batch_delay_ms);
    let reader = tokio::spawn(read_ring(
        ring,
        event_tx,
        reader_stats.clone(),
        batch_delay,
        stop_rx,
    ));
    let tracker_config = TrackerConfig {
        max_connections: config.connections.max_connections,
        idle_timeout_ns: config.idle_timeout().as_nanos() as u64,
        http1: http1::Limits {
            max_head_bytes: config.http1.max_head_bytes,
            max_pending: config.http1.max_pending_requests,
            ..http1::Limits::default()
        },
    };
    let tracker = tokio::spawn(track(
        event_rx,
        signal_tx.clone(),
        tracker_config,
        conn_stats.clone(),
        clock,
    ));
    let exporter = tokio::task::spawn_blocking(move || export(signal_rx));

    let interval = Duration::from_secs(config.output.stats_interval_secs);
    let mut ticker = (!interval.is_zero())
        .then(|| tokio::time::interval_at(tokio::time::Instant::now() + interval, interval));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = async { ticker.as_mut().expect("guarded").tick().await }, if ticker.is_some() => {
                let report = StatsReport::gather(counters.totals(), &reader_stats, &conn_stats, false);
                let _ = signal_tx.send(Signal::Stats(Box::new(report))).await;
            }
        }
    }

    tracing::info!("stopping: detaching probes and draining what is left");
    // Each detach waits for a kernel RCU grace period (about 2 s for all of them here): keep
    // that off the runtime's threads.
    tokio::task::spawn_blocking(move || drop(probes))
        .await
        .map_err(AgentError::Task)?;
    tracing::debug!("probes detached");
    let _ = stop_tx.send(true);
    reader.await.map_err(AgentError::Task)?;
    tracing::debug!("ring buffer drained");
    tracker.await.map_err(AgentError::Task)?;
    tracing::debug!("tracker finished");
    let report = StatsReport::gather(counters.totals(), &reader_stats, &conn_stats, true);
    let _ = signal_tx
        .send(Signal::Stats(Box::new(report.clone())))
        .await;
    drop(signal_tx);
    exporter.await.map_err(AgentError::Task)?;
    Ok(report)
}

/// One line saying what is being watched, and how much of it could be hooked.
fn announce(probes: &Probes, config: &Config) {
    let report = probes.report();
    let attached = report.iter().filter(|s| s.attached.is_some()).count();
    let scope = if config.filter.pids.is_empty() && config.filter.comms.is_empty() {
        "every process".to_string()
    } else {
        let mut parts = Vec::new();
        if !config.filter.pids.is_empty() {
            parts.push(format!("pids {:?}", config.filter.pids));
        }
        if !config.filter.comms.is_empty() {
            parts.push(format!("processes named {:?}", config.filter.comms));
        }
        parts.join(" and ")
    };
    tracing::info!(
        "{attached} of {} probes attached; tracing {scope}; payload prefix {} bytes",
        report.len(),
        config.capture.payload_bytes
    );
}

async fn read_ring(
    mut ring: RingReader,
    tx: mpsc::Sender<Vec<Event>>,
    stats: Arc<ReaderStats>,
    batch_delay: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let decode_into = |record: &[u8], batch: &mut Vec<Event>| {
        stats.records.fetch_add(1, Relaxed);
        match events::decode(record) {
            Ok(event) => batch.push(event),
            Err(e) => {
                if stats.decode_errors.fetch_add(1, Relaxed) == 0 {
                    tracing::warn!(
                        "dropping an undecodable kernel record: {e} (counted as decode_errors)"
                    );
                }
            }
        }
    };
    let mut timer = tokio::time::interval(batch_delay);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            woken = ring.readable() => {
                if let Err(e) = woken {
                    tracing::error!("watching the ring buffer failed, no more events: {e}");
                    return;
                }
            }
            _ = timer.tick() => {}
        }
        loop {
            let mut batch = Vec::new();
            let n = ring.drain(BATCH, |record| decode_into(record, &mut batch));
            if !batch.is_empty() && tx.send(batch).await.is_err() {
                return;
            }
            if n < BATCH {
                break;
            }
        }
    }
    // Detached: whatever is left is all there will be.
    loop {
        let mut batch = Vec::new();
        let n = ring.drain(BATCH, |record| decode_into(record, &mut batch));
        if batch.is_empty() || tx.send(batch).await.is_err() || n < BATCH {
            return;
        }
    }
}

async fn track(
    mut rx: mpsc::Receiver<Vec<Event>>,
    tx: mpsc::Sender<Signal>,
    config: TrackerConfig,
    stats: Arc<ConnectionStats>,
    clock: KernelClock,
) {
    let mut tracker = Tracker::new(config, stats);
    let mut expiry = tokio::time::interval(Duration::from_secs(1));
    let mut observed = Vec::new();
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(events) = batch else { break };
                for event in &events {
                    tracker.handle(event, &mut observed);
                }
                if !observed.is_empty() {
                    let records = observed.drain(..).map(|o| ExchangeRecord::from_observed(o, &clock)).collect();
                    if tx.send(Signal::Exchanges(records)).await.is_err() {
                        break;
                    }
                }
            }
            _ = expiry.tick() => tracker.expire(KernelClock::now_ktime()),
        }
    }
    tracker.finish();
}

/// The export stage: a plain thread, because writing to stdout blocks. Buffered: one write per
/// batch of lines, not one per line.
fn export(mut rx: mpsc::Receiver<Signal>) {
    let mut console =
        ConsoleExporter::new(io::BufWriter::with_capacity(1 << 16, io::stdout().lock()));
    while let Some(signal) = rx.blocking_recv() {
        if let Err(e) = console.export(&signal) {
            if e.kind() != io::ErrorKind::BrokenPipe {
                tracing::error!("writing to standard output failed, output stops: {e}");
            }
            break;
        }
    }
    // Keep receiving (and dropping) so upstream stages never block on a dead output.
    while rx.blocking_recv().is_some() {}
}
