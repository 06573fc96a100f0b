//! Wires the stages together, owns their tasks, and stops them in order.
//!
//! ```text
//! probes ──ring buffer──▶ reader thread ───Batch────▶ tracker task ──Signal──▶ telemetry task ──Signal──▶ console thread
//!  (kernel)               (events::Batch)             (connections +             (spans, logs,  ──Payload─▶ OTLP tasks / file thread
//!     ▲                        │                        protocols)                 metrics)            (Fanout: never waits)
//!     │                        └─fork/exec/exit─▶ lifecycle thread
//!     └──monitored set, TLS uprobes──────────────── (probes::lifecycle)
//! ```
//!
//! The reader has a thread and an event loop of its own, at a higher priority, so that the
//! ring is drained however busy the other stages' tasks are; those yield after each batch.
//! The lifecycle thread is the one stage that writes back to the kernel: it confirms children
//! of monitored processes and hooks TLS libraries as programs start. It holds the probes (and
//! the agent takes them back to detach them at shutdown).
//!
//! Every arrow up to the telemetry task is a bounded channel: when a stage falls behind, the
//! one before it waits, and in the end the kernel ring buffer fills and the programs count what
//! they drop. The exporters' queues are bounded too, but a full one drops the batch (counted)
//! rather than stall capture behind a slow collector. Nothing is lost without a counter.
//!
//! Shutdown order: detach the programs (no new events), let the reader drain the ring buffer,
//! let the tracker finish what it was given, let the telemetry task send the last spans, logs
//! and metrics, stop self-telemetry (one last collection), give the exporters a few seconds to
//! deliver, then print the final stats.

use std::{
    future::Future,
    io,
    sync::{
        Arc, Mutex,
        atomic::Ordering::Relaxed,
        mpsc::{Receiver, SyncSender, TrySendError},
    },
    time::Duration,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use tokio::sync::{mpsc, watch};

use crate::{
    attribution::{
        self,
        filter::{FilterRules, ProcessFilter},
        kube::{self as k8s, NamingRules, WatchSettings, Watches, watch::NodePods},
        scope::Scope,
    },
    config::{
        Config,
        export::{ExporterKind, SignalKind},
    },
    connections::{ConnectionStats, Tracker, TrackerConfig},
    events::{Batch, Event, KernelClock},
    export::{
        ExportStats, Fanout,
        console::ConsoleExporter,
        file, otlp,
        status::{Status, serve as serve_status},
    },
    probes::{
        ProbeError, ProbeSettings, Probes,
        lifecycle::{Lifecycle, LifecycleStats},
        ring::RingReader,
        tls::LibraryOutcome,
    },
    protocols::http1,
    telemetry::{
        ExchangeRecord, ReaderStats, Signal, StatsReport, Telemetry, TelemetrySettings,
        peer::KubeView,
        redact::Redaction,
        resource::Resources,
        selfmon::{SelfTelemetry, StatsSource},
    },
};

mod outputs;
use outputs::{
    TelemetryTiming, export_console, finish_exporters, start_exporters, stats_to_stderr,
    telemetry_stage,
};

/// The ring reader thread's nice value.
const READER_NICE: libc::c_int = -10;
/// Event batches in flight between reader and tracker: with batches of at most 256 KiB, up to
/// 32 MiB of records wait here while the tracker is behind, before the ring fills.
const EVENT_QUEUE: usize = 128;
/// Emptied batches waiting for the reader to fill them again (each keeps about 276 KiB).
const SPARE_BATCHES: usize = 4;
/// Signals in flight between tracker and telemetry, and telemetry and console.
const SIGNAL_QUEUE: usize = 256;
/// Lifecycle event batches in flight between reader and lifecycle thread.
const LIFECYCLE_QUEUE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Probes(#[from] ProbeError),
    #[error("cannot watch the ring buffer")]
    Ring(#[source] io::Error),
    #[error("a pipeline task failed")]
    Task(#[source] tokio::task::JoinError),
    #[error(transparent)]
    Otlp(#[from] otlp::OtlpError),
    #[error(transparent)]
    DiskQueue(#[from] otlp::disk_queue::DiskQueueError),
    #[error("cannot start a thread")]
    Thread(#[source] io::Error),
    #[error("cannot apply the process filter")]
    Filter(#[source] attribution::filter::FilterError),
    #[error("cannot serve the status endpoint on {address} (output.status_listen)")]
    Status {
        address: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the output file {path}")]
    File {
        path: String,
        #[source]
        source: io::Error,
    },
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
        // Pod rules and exclusions: the kernel cannot apply them.
        user_decides: config.filter.has_pod_rules() || !config.filter.exclude_comms.is_empty(),
        noop,
        kernel_layer: config.capture.kernel_layer,
        fentry: config.capture.fentry,
        tp_btf: config.capture.tp_btf,
        socket_layer: config.capture.socket_layer,
        btf_path: options
            .btf
            .clone()
            .unwrap_or_else(|| crate::probes::offsets::VMLINUX_BTF.into()),
    }
}

/// The `filter.*` rules, compiled.
fn process_filter(config: &Config) -> Result<ProcessFilter, AgentError> {
    let f = &config.filter;
    let selector = f.pod_selector.as_ref().map(|s| LabelSelector {
        match_labels: Some(s.match_labels.clone()),
        match_expressions: Some(
            s.match_expressions
                .iter()
                .map(|r| LabelSelectorRequirement {
                    key: r.key.clone(),
                    operator: r.operator.clone(),
                    values: (!r.values.is_empty()).then(|| r.values.clone()),
                })
                .collect(),
        ),
    });
    let filter = ProcessFilter::new(&FilterRules {
        pids: &f.pids,
        comms: &f.comms,
        exclude_comms: &f.exclude_comms,
        namespaces: &f.namespaces,
        exclude_namespaces: &f.exclude_namespaces,
        pods: &f.pods,
        pod_selector: selector.as_ref(),
    })
    .map_err(AgentError::Filter)?;
    debug_assert_eq!(
        filter.user_decides(),
        probe_settings(config, &RunOptions::default()).user_decides
    );
    Ok(filter)
}

/// Runs until `shutdown` completes; returns the final stats.
pub async fn run(
    config: &Config,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<StatsReport, AgentError> {
    let clock = KernelClock::calibrate();
    let export_stats = Arc::new(ExportStats::default());
    // Before the probes: a bad endpoint or file stops the agent before it touches the kernel.
    let exporters = start_exporters(config, &export_stats)?;
    // Before the probes: this node's pods are listed (briefly waited for) before the first
    // exchange needs one.
    let status_listener = match config.output.status_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| AgentError::Status { address, source })?,
        ),
        None => None,
    };
    let kube = start_kubernetes(config).await;
    let kube_view = kube.as_ref().map(|w| KubeView {
        index: w.index.clone(),
        generation: w.generation.clone(),
        rules: NamingRules {
            use_labels: config.kubernetes.service_name_from_labels,
        },
        cluster_domain: config.kubernetes.cluster_domain.clone(),
        cluster_name: config.kubernetes.cluster_name.clone(),
    });
    let scope = Arc::new(Scope::new(
        process_filter(config)?,
        kube.as_ref()
            .map(|w| (w.index.clone(), w.generation.clone())),
    ));
    let mut probes = Probes::load(&probe_settings(config, &options))?;
    // The reader runs on a thread of its own with its own event loop: on the shared workers
    // it waited behind the other stages' batches under load, and the ring overflowed
    // (benchmarks/RESULTS.md, "Events lost: the ring reader waited behind the other stages").
    let reader_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AgentError::Thread)?;
    let ring = {
        let _watched_there = reader_runtime.enter();
        RingReader::new(probes.take_ring()?).map_err(AgentError::Ring)?
    };
    let counters = Arc::new(probes.take_counters()?);
    let drop_reasons = Arc::new(probes.drop_reasons().clone());
    let probes_total = probes.report().len() as u64;
    let probes_attached = probes
        .report()
        .iter()
        .filter(|s| s.attached.is_some())
        .count() as u64;
    // Which method each probe point got, for self-telemetry.
    let probe_methods: Arc<[(&'static str, &'static str)]> = probes
        .report()
        .iter()
        .map(|s| (s.point.name, s.attached.map_or("none", |c| c.hook.method())))
        .collect();

    let watched_programs = Arc::new(probes.watch_skipped_runs());
    let probes = Arc::new(Mutex::new(Some(probes)));
    let lifecycle_stats = Arc::new(LifecycleStats::default());
    let (lifecycle_tx, lifecycle_rx) = std::sync::mpsc::sync_channel(LIFECYCLE_QUEUE);
    let lifecycle = {
        let mut lifecycle = Lifecycle::new(probes.clone(), lifecycle_stats.clone(), scope);
        // Before anything is announced: once netsonde says it is attached, the process tree
        // under --pid is followed and the TLS libraries on disk are hooked.
        let (pids, comms) = (&config.filter.pids, &config.filter.comms);
        tokio::task::block_in_place(|| lifecycle.start(pids, comms));
        std::thread::Builder::new()
            .name("lifecycle".into())
            .spawn(move || lifecycle.run(lifecycle_rx))
            .map_err(AgentError::Thread)?
    };
    if let Some(probes) = &*probes.lock().unwrap_or_else(|p| p.into_inner()) {
        announce(probes, config);
    }

    let reader_stats = Arc::new(ReaderStats::default());
    let conn_stats = Arc::new(ConnectionStats::default());
    let snapshot: StatsSource = {
        let (counters, reader_stats, conn_stats, export_stats, lifecycle_stats) = (
            counters.clone(),
            reader_stats.clone(),
            conn_stats.clone(),
            export_stats.clone(),
            lifecycle_stats.clone(),
        );
        let kube_stats = kube.as_ref().map(|w| w.stats.clone());
        let watched_programs = watched_programs.clone();
        Arc::new(move || {
            let mut report =
                StatsReport::gather(counters.totals(), &reader_stats, &conn_stats, false);
            report.export = export_stats.totals();
            report.lifecycle = lifecycle_stats.totals();
            report.drops_by_reason = counters.drops_by_reason();
            report.probe_methods = probe_methods.clone();
            report.kubernetes = kube_stats.as_ref().map(|k| k.totals());
            report.skipped_runs = watched_programs
                .iter()
                .filter_map(|p| Some((p.name.clone(), p.misses().ok().filter(|n| *n > 0)?)))
                .collect();
            report.probes_attached = probes_attached;
            report.probes_total = probes_total;
            report
        })
    };
    let status = Status::new(snapshot.clone());
    let status_server = status_listener.map(|listener| {
        tracing::info!(
            "status endpoint on http://{}/ (healthz, readyz, metrics)",
            listener
                .local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string())
        );
        tokio::spawn(serve_status(listener, status.clone()))
    });
    let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
    let (spare_tx, spare_rx) = std::sync::mpsc::sync_channel(SPARE_BATCHES);
    let (signal_tx, signal_rx) = mpsc::channel(SIGNAL_QUEUE);
    let (stop_tx, stop_rx) = watch::channel(false);

    let batch_delay = Duration::from_millis(config.capture.batch_delay_ms);
    let batches = Batches {
        filling: Batch::default(),
        tx: event_tx,
        spares: spare_rx,
        lifecycles: Lifecycles {
            tx: lifecycle_tx,
            stats: lifecycle_stats.clone(),
        },
        stats: reader_stats.clone(),
    };
    let reading = read_ring(ring, batches, batch_delay, stop_rx);
    let reader = tokio::task::spawn_blocking(move || {
        name_reader_thread();
        raise_reader_priority();
        reader_runtime.block_on(reading)
    });
    let tracker_config = TrackerConfig {
        max_connections: config.connections.max_connections,
        idle_timeout_ns: config.idle_timeout().as_nanos() as u64,
        http1: http1::Limits {
            max_head_bytes: config.http1.max_head_bytes,
            max_pending: config.http1.max_pending_requests,
            ..http1::Limits::default()
        },
    };
    if config.redaction.show_everything {
        tracing::warn!(
            "redaction.show_everything is on: query secrets and redacted headers go to every \
             output in clear (for local debugging only)"
        );
    }
    let tracker = tokio::spawn(track(
        event_rx,
        spare_tx,
        signal_tx,
        tracker_config,
        conn_stats.clone(),
        clock,
        Redaction::new(&config.redaction),
    ));

    let console_on = config.export.enabled(ExporterKind::Console);
    let (console_tx, console_rx) = mpsc::channel(SIGNAL_QUEUE);
    let console = tokio::task::spawn_blocking(move || export_console(console_rx));
    let host = attribution::host_name(config.kubernetes.node_name.as_deref());
    let otel = (!exporters.fanout.is_empty()).then(|| {
        let export = &config.export;
        let settings = TelemetrySettings {
            host: host.clone(),
            resource_attributes: export.resource_attributes.clone(),
            max_routes_per_workload: export.max_routes_per_workload,
            max_series_per_metric: export.max_series_per_metric,
            delta: export.metric_temporality.is_delta(),
            signals: export.signals,
            workload_ttl: (export.metric_interval() * 5).max(Duration::from_secs(300)),
            rpc_legacy_attributes: export.rpc_legacy_attributes,
            peer_addresses_on_metrics: export.peer_addresses_on_metrics,
            access_log_attributes: export.access_log_attributes,
            metric_request_max_bytes: export.metric_request_max_bytes,
            drop_reasons: drop_reasons.clone(),
            kube: kube_view.clone(),
        };
        (
            Telemetry::new(settings, std::time::SystemTime::now()),
            exporters.fanout.clone(),
        )
    });
    let self_telemetry =
        (!exporters.fanout.is_empty() && config.export.signals.metrics).then(|| {
            let fanout = exporters.fanout.clone();
            SelfTelemetry::start(
                Resources::new(host.clone(), config.export.resource_attributes.clone())
                    .agent(&config.export.agent_service_name),
                config.export.metric_interval(),
                config.export.metric_temporality.is_delta(),
                snapshot.clone(),
                Arc::new(move |payload| fanout.send(payload)),
            )
        });
    let telemetry = tokio::spawn(telemetry_stage(
        signal_rx,
        console_on.then(|| console_tx.clone()),
        otel,
        TelemetryTiming {
            batch_delay: Duration::from_millis(config.export.batch_delay_ms),
            batch_exchanges: config.export.batch_exchanges,
            metric_interval: config.export.metric_interval(),
        },
    ));

    let interval = Duration::from_secs(config.output.stats_interval_secs);
    let mut ticker = (!interval.is_zero())
        .then(|| tokio::time::interval_at(tokio::time::Instant::now() + interval, interval));
    tokio::pin!(shutdown);
    status.ready.store(true, Relaxed);
    let mut health = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = health.tick(), if status.alive.load(Relaxed) => {
                let stopped = [("reader", &reader), ("tracker", &tracker), ("telemetry", &telemetry)]
                    .into_iter()
                    .find(|(_, task)| task.is_finished());
                if let Some((stage, _)) = stopped {
                    tracing::error!("the {stage} stage stopped: /healthz now answers 503");
                    status.alive.store(false, Relaxed);
                }
            }
            _ = async { ticker.as_mut().expect("guarded").tick().await }, if ticker.is_some() => {
                let report = snapshot();
                if console_on {
                    let _ = console_tx.send(Signal::Stats(Box::new(report))).await;
                } else {
                    stats_to_stderr(&report);
                }
            }
        }
    }

    status.ready.store(false, Relaxed);
    tracing::info!("stopping: detaching probes and draining what is left");
    // Each detach waits for a kernel RCU grace period (about 2 s for all of them here): keep
    // that off the runtime's threads.
    tokio::task::spawn_blocking(move || {
        let taken = probes.lock().map(|mut p| p.take());
        drop(taken);
    })
    .await
    .map_err(AgentError::Task)?;
    tracing::debug!("probes detached");
    let _ = stop_tx.send(true);
    reader.await.map_err(AgentError::Task)?;
    tracing::debug!("ring buffer drained");
    // The reader held the lifecycle queue's sender: the thread ends once it has drained it.
    let _ = tokio::task::spawn_blocking(move || lifecycle.join()).await;
    tracker.await.map_err(AgentError::Task)?;
    tracing::debug!("tracker finished");
    telemetry.await.map_err(AgentError::Task)?;
    if let Some(s) = self_telemetry {
        tokio::task::spawn_blocking(move || s.shutdown())
            .await
            .map_err(AgentError::Task)?;
    }
    finish_exporters(exporters, &export_stats).await;
    let mut report = snapshot();
    report.last = true;
    if console_on {
        let _ = console_tx
            .send(Signal::Stats(Box::new(report.clone())))
            .await;
    } else {
        stats_to_stderr(&report);
    }
    drop(console_tx);
    console.await.map_err(AgentError::Task)?;
    if let Some(server) = status_server {
        server.abort();
    }
    Ok(report)
}

/// One line saying what is being watched, and how much of it could be hooked.
fn announce(probes: &Probes, config: &Config) {
    let (attached, total) = probes.attached_count();
    let f = &config.filter;
    let mut parts = Vec::new();
    if !f.pids.is_empty() {
        parts.push(format!("pids {:?}", f.pids));
    }
    if !f.comms.is_empty() {
        parts.push(format!("processes named {:?}", f.comms));
    }
    if !f.namespaces.is_empty() {
        parts.push(format!("pods in namespaces {:?}", f.namespaces));
    }
    if !f.pods.is_empty() {
        parts.push(format!("pods named {:?}", f.pods));
    }
    if f.pod_selector.is_some() {
        parts.push("pods matching filter.pod_selector".into());
    }
    if !f.exclude_namespaces.is_empty() {
        parts.push(format!("not namespaces {:?}", f.exclude_namespaces));
    }
    if !f.exclude_comms.is_empty() {
        parts.push(format!("not processes named {:?}", f.exclude_comms));
    }
    let scope = if parts.is_empty() {
        "every process".to_string()
    } else {
        parts.join(", ")
    };
    let tls = match probes.tls().unavailable() {
        Some(why) => format!("TLS capture off ({why})"),
        None => {
            let hooked = probes
                .tls()
                .libraries()
                .filter(|(_, _, o)| matches!(o, LibraryOutcome::Hooked { .. }))
                .count();
            format!("{hooked} TLS libraries hooked")
        }
    };
    tracing::info!(
        "{attached} of {total} probes attached; tracing {scope}; payload prefix {} bytes; {tls}",
        config.capture.payload_bytes
    );
}

/// Where the reader sends lifecycle events, and where it counts those it could not.
struct Lifecycles {
    tx: SyncSender<Vec<Event<'static>>>,
    stats: Arc<LifecycleStats>,
}

impl Lifecycles {
    /// Copies the lifecycle events of a batch to the lifecycle thread; never waits.
    fn forward(&self, batch: &Batch) {
        if !batch.has_lifecycle() {
            return;
        }
        let events: Vec<Event<'static>> = batch.events().filter_map(|e| e.lifecycle()).collect();
        let n = events.len() as u64;
        match self.tx.try_send(events) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if self.stats.dropped.fetch_add(n, Relaxed) == 0 {
                    tracing::warn!(
                        "the lifecycle stage is behind; dropping process events (counted)"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(n, Relaxed);
            }
        }
    }
}

/// The reader's side of the batches: the one it fills, where full ones go, and the emptied
/// ones it takes back.
struct Batches {
    /// Filled until it has records to send; then replaced by a batch the tracker is done
    /// with, or a new one while all are in flight.
    filling: Batch,
    tx: mpsc::Sender<Batch>,
    spares: Receiver<Batch>,
    lifecycles: Lifecycles,
    stats: Arc<ReaderStats>,
}

impl Batches {
    /// Drains what the ring holds into batches and sends each on (its lifecycle records to the
    /// lifecycle stage too); false once the tracker is gone.
    async fn send_waiting(&mut self, ring: &mut RingReader) -> bool {
        loop {
            let (batch, stats) = (&mut self.filling, &self.stats);
            ring.drain(|record| {
                stats.records.fetch_add(1, Relaxed);
                if let Err(e) = batch.push(record)
                    && stats.decode_errors.fetch_add(1, Relaxed) == 0
                {
                    tracing::warn!(
                        "dropping an undecodable kernel record: {e} (counted as decode_errors)"
                    );
                }
                !batch.is_full()
            });
            let more = self.filling.is_full();
            if !self.filling.is_empty() {
                self.lifecycles.forward(&self.filling);
                let next = self.spares.try_recv().unwrap_or_default();
                let full = std::mem::replace(&mut self.filling, next);
                if self.tx.send(full).await.is_err() {
                    return false;
                }
            }
            if !more {
                return true;
            }
        }
    }
}

async fn read_ring(
    mut ring: RingReader,
    mut batches: Batches,
    batch_delay: Duration,
    mut stop: watch::Receiver<bool>,
) {
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
        if !batches.send_waiting(&mut ring).await {
            return;
        }
    }
    // Detached: whatever is left is all there will be.
    batches.send_waiting(&mut ring).await;
}

/// The blocking pool's thread that runs the reader for the agent's life shows as `ring-reader`
/// in `ps` and `top`.
fn name_reader_thread() {
    // SAFETY: PR_SET_NAME reads a NUL-terminated name of at most 16 bytes from the pointer.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"ring-reader".as_ptr()) };
}

/// The reader's thread goes ahead of ordinary threads (nice -10): it only moves records from
/// the kernel's ring into memory (about 2 % of a core at 80 000 events/s, by a profile), and
/// when it waits for a core the ring overflows (benchmarks/RESULTS.md, "Events lost: the ring
/// reader waited behind the other stages"). Without the privilege it keeps the default, said
/// once.
fn raise_reader_priority() {
    // SAFETY: plain syscalls on the calling thread, no memory passed.
    let raised = unsafe {
        let tid = libc::gettid() as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, READER_NICE)
    };
    if raised != 0 {
        tracing::info!(
            "the ring reader keeps the default priority: raising it needs CAP_SYS_NICE ({}); \
             under load the ring may overflow sooner",
            io::Error::last_os_error()
        );
    }
}

async fn track(
    mut rx: mpsc::Receiver<Batch>,
    spares: SyncSender<Batch>,
    tx: mpsc::Sender<Signal>,
    config: TrackerConfig,
    stats: Arc<ConnectionStats>,
    clock: KernelClock,
    redaction: Redaction,
) {
    let mut tracker = Tracker::new(config, stats);
    let mut expiry = tokio::time::interval(Duration::from_secs(1));
    let mut observed = Vec::new();
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(mut batch) = batch else { break };
                tracker.handle_batch(batch.events(), &mut observed);
                // Back to the reader to fill again; when it has enough spares, freed here.
                batch.recycle();
                let _ = spares.try_send(batch);
                if send_exchanges(&mut observed, &tx, &clock, &redaction).await.is_err() {
                    break;
                }
                // A batch can take milliseconds, and tokio's budget counts receives, not
                // time: without a yield a backlog keeps this worker from the ring reader.
                tokio::task::yield_now().await;
            }
            _ = expiry.tick() => {
                tracker.expire(KernelClock::now_ktime(), &mut observed);
                if send_exchanges(&mut observed, &tx, &clock, &redaction).await.is_err()
                    || send_activity(&mut tracker, &tx).await.is_err()
                {
                    break;
                }
            }
        }
    }
    tracker.finish(&mut observed);
    let _ = send_exchanges(&mut observed, &tx, &clock, &redaction).await;
    let _ = send_activity(&mut tracker, &tx).await;
}

/// Room kept in the list of finished exchanges between batches: a ring-buffer batch's worth.
const KEPT_EXCHANGE_CAPACITY: usize = 1024;

/// Exchanges go on as records (redacted), a batch at a time.
async fn send_exchanges(
    observed: &mut Vec<crate::connections::ObservedExchange>,
    tx: &mpsc::Sender<Signal>,
    clock: &KernelClock,
    redaction: &Redaction,
) -> Result<(), ()> {
    if observed.is_empty() {
        return Ok(());
    }
    let records = observed
        .drain(..)
        .map(|o| ExchangeRecord::from_observed(o, clock, redaction))
        .collect();
    // A burst leaves no lasting high-water mark behind (the list lives as long as the agent).
    observed.shrink_to(KEPT_EXCHANGE_CAPACITY);
    tx.send(Signal::Exchanges(records)).await.map_err(|_| ())
}

/// Connection activity goes on once a second (bytes add up in between), and at the end.
async fn send_activity(tracker: &mut Tracker, tx: &mpsc::Sender<Signal>) -> Result<(), ()> {
    let mut activity = Vec::new();
    tracker.take_activity(&mut activity);
    if activity.is_empty() {
        return Ok(());
    }
    tx.send(Signal::Connections(activity)).await.map_err(|_| ())
}

/// Starts the Kubernetes watches when configured (or running in a pod). Without API access
/// netsonde carries on with process and container attributes, after one warning.
async fn start_kubernetes(config: &Config) -> Option<Watches> {
    let k = &config.kubernetes;
    if !k.on() {
        return None;
    }
    let node_name = k.node_name.clone().unwrap_or_else(|| {
        let host = attribution::host_name(None);
        tracing::info!(
            "kubernetes: NODE_NAME is not set; using the host name {host} as the node name"
        );
        host
    });
    let settings = WatchSettings {
        kubeconfig: k.kubeconfig.clone(),
        node_name,
        peers: k.peers,
    };
    let client = match k8s::watch::client(&settings).await {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(
                "kubernetes: {}; reporting process and container attributes only",
                crate::one_line(&e)
            );
            return None;
        }
    };
    let watches = Watches::start(client, &settings);
    let wait = Duration::from_secs(k.startup_wait_secs);
    match watches.wait_for_node_pods(wait).await {
        NodePods::Listed => {
            let pods = watches.index.read().map_or(0, |i| i.local_pods.len());
            tracing::info!("kubernetes: {pods} pods on node {}", settings.node_name);
        }
        // The watch said why, once.
        NodePods::ApiFails => {}
        NodePods::NotYet => tracing::warn!(
            "kubernetes: this node's pods ({}) are not listed after {wait:?}; carrying on, \
             workloads get their pod attributes once they are",
            settings.node_name
        ),
    }
    Some(watches)
}
