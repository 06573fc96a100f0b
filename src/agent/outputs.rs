//! The agent's outputs: the OTLP and file exporters started and finished, the telemetry
//! stage's task, the console thread, and the stats lines when the console is off.

use super::*;
use crate::export::otlp::disk_queue::{DiskBudget, DiskQueue};

/// How long exporters get at exit to deliver what they hold.
const EXPORT_GRACE: Duration = Duration::from_secs(5);

/// The exporters that take OTLP payloads, started.
pub(super) struct OtlpExporters {
    pub(super) fanout: Fanout,
    pub(super) tasks: Vec<tokio::task::JoinHandle<()>>,
    pub(super) threads: Vec<std::thread::JoinHandle<()>>,
}

pub(super) fn start_exporters(
    config: &Config,
    stats: &Arc<ExportStats>,
) -> Result<OtlpExporters, AgentError> {
    let export = &config.export;
    let mut exporters = OtlpExporters {
        fanout: Fanout::new(stats.clone()),
        tasks: Vec::new(),
        threads: Vec::new(),
    };
    if export.sdk_disabled {
        let off: Vec<&str> = [ExporterKind::Otlp, ExporterKind::File]
            .into_iter()
            .filter(|kind| export.exporters.contains(kind))
            .map(ExporterKind::as_str)
            .collect();
        if !off.is_empty() {
            tracing::warn!(
                "OTEL_SDK_DISABLED=true: the {} exporter{} sends nothing (the console and stats lines stay)",
                off.join(" and "),
                if off.len() > 1 { "s" } else { "" }
            );
        }
    }
    if export.enabled(ExporterKind::Otlp) {
        let disk = &export.otlp.disk_queue;
        let budget = DiskBudget::new(disk.max_bytes);
        if let Some(dir) = &disk.path {
            tracing::info!(
                "export batches wait on disk in {} (at most {} MiB)",
                dir.display(),
                disk.max_bytes >> 20
            );
        }
        for signal in SignalKind::ALL
            .into_iter()
            .filter(|&s| export.signals.get(s))
        {
            let target = export.otlp.target(signal);
            let mut how = String::new();
            if let Some(client) = &target.client_identity {
                how += &format!(
                    " with the client certificate {}",
                    client.certificate.display()
                );
            }
            if let Some(via) = otlp::proxy::route(&target)? {
                how += &format!(" through the proxy {}", via.uri());
            }
            tracing::info!(
                "exporting {} over OTLP/{} to {}{how}",
                signal.as_str(),
                target.protocol.as_str(),
                target.endpoint,
            );
            let disk_queue = disk
                .path
                .as_deref()
                .map(|dir| DiskQueue::open(dir, signal, budget.clone()))
                .transpose()?;
            let (queue, task) = otlp::spawn(
                target,
                export.otlp.retry,
                export.otlp.queue_batches,
                export.otlp.max_concurrent_requests,
                disk_queue,
                stats.clone(),
            )?;
            exporters.fanout.add_otlp(signal, queue);
            exporters.tasks.push(task);
        }
    }
    if export.enabled(ExporterKind::File) {
        let (queue, thread) =
            file::spawn(&export.file_path, export.otlp.queue_batches, stats.clone()).map_err(
                |source| AgentError::File {
                    path: export.file_path.display().to_string(),
                    source,
                },
            )?;
        tracing::info!("writing OTLP JSON lines to {}", export.file_path.display());
        exporters.fanout.add_file(queue);
        exporters.threads.push(thread);
    }
    Ok(exporters)
}

/// Without the console exporter the stats lines go to standard error, so whatever the
/// exporters an operator sees what was captured, lost and dropped.
pub(super) fn stats_to_stderr(report: &StatsReport) {
    use std::io::Write as _;
    let mut line = String::new();
    crate::export::console::format_stats(&mut line, report, std::time::SystemTime::now());
    line.push('\n');
    let _ = io::stderr().lock().write_all(line.as_bytes());
}

/// Closes the exporters' queues and gives them [`EXPORT_GRACE`] to deliver; what is left after
/// that is counted as dropped, except what the disk queue keeps for the next run.
pub(super) async fn finish_exporters(exporters: OtlpExporters, stats: &ExportStats) {
    let OtlpExporters {
        fanout,
        tasks,
        threads,
    } = exporters;
    drop(fanout);
    let deadline = tokio::time::Instant::now() + EXPORT_GRACE;
    for mut task in tasks {
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            task.abort();
        }
    }
    for thread in threads {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    let totals = stats.totals();
    let in_memory = totals.queued.iter().sum::<u64>();
    let kept = stats.abandon_pending();
    if kept.iter().any(|&n| n > 0) {
        tracing::info!(
            "exiting with {} spans, {} data points and {} log records in the disk queue: the next run sends them",
            kept[0],
            kept[1],
            kept[2]
        );
    } else if in_memory > 0 {
        tracing::warn!("exiting with {in_memory} export batches undelivered (counted as dropped)");
    }
}

pub(super) struct TelemetryTiming {
    pub(super) batch_delay: Duration,
    pub(super) batch_exchanges: usize,
    pub(super) metric_interval: Duration,
}

/// The telemetry stage's task: forwards exchanges to the console, builds OTLP spans and logs
/// (sent every `batch_delay` or `batch_exchanges`) and metrics (every `metric_interval`).
pub(super) async fn telemetry_stage(
    mut rx: mpsc::Receiver<Signal>,
    console: Option<mpsc::Sender<Signal>>,
    mut otel: Option<(Telemetry, Fanout)>,
    timing: TelemetryTiming,
) {
    let start = tokio::time::Instant::now();
    let mut batch_timer = tokio::time::interval_at(start + timing.batch_delay, timing.batch_delay);
    let mut metric_timer =
        tokio::time::interval_at(start + timing.metric_interval, timing.metric_interval);
    let flush = |otel: &mut Option<(Telemetry, Fanout)>| {
        if let Some((telemetry, fanout)) = otel
            && let Some((spans, logs)) = telemetry.take_spans_and_logs()
        {
            fanout.send(spans);
            fanout.send(logs);
        }
    };
    let send_metrics = |otel: &mut Option<(Telemetry, Fanout)>| {
        if let Some((telemetry, fanout)) = otel {
            for metrics in telemetry.collect_metrics(std::time::SystemTime::now()) {
                fanout.send(metrics);
            }
        }
    };
    loop {
        tokio::select! {
            signal = rx.recv() => {
                let Some(mut signal) = signal else { break };
                let now = std::time::SystemTime::now();
                if let Some((telemetry, _)) = &mut otel {
                    match &mut signal {
                        Signal::Exchanges(records) => telemetry.add_exchanges(records, now),
                        Signal::Connections(activity) => telemetry.add_activity(activity, now),
                        Signal::Stats(_) => {}
                    }
                    if telemetry.pending_exchanges() >= timing.batch_exchanges {
                        flush(&mut otel);
                    }
                }
                if let (Some(console), Signal::Exchanges(_)) = (&console, &signal) {
                    let _ = console.send(signal).await;
                }
                // As the tracker does: the ring reader must not wait behind a backlog here.
                tokio::task::yield_now().await;
            }
            _ = batch_timer.tick() => flush(&mut otel),
            _ = metric_timer.tick() => send_metrics(&mut otel),
        }
    }
    flush(&mut otel);
    send_metrics(&mut otel);
}

/// The console exporter: a plain thread, because writing to stdout blocks. Buffered: one write
/// per batch of lines, not one per line.
pub(super) fn export_console(mut rx: mpsc::Receiver<Signal>) {
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
