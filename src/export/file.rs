//! The file exporter: OTLP JSON, one request per line, as the OpenTelemetry Collector's file
//! exporter writes it (and its otlpjsonfile receiver reads it).

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::Path,
    sync::Arc,
};

use tokio::sync::mpsc;

use crate::{
    export::{ExportStats, OnceLog},
    telemetry::otlp::Payload,
};

/// Opens (creates or appends to) `path` and writes what arrives until the queue closes.
pub fn spawn(
    path: &Path,
    queue: usize,
    stats: Arc<ExportStats>,
) -> io::Result<(mpsc::Sender<Arc<Payload>>, std::thread::JoinHandle<()>)> {
    let file = File::options().create(true).append(true).open(path)?;
    let (tx, mut rx) = mpsc::channel::<Arc<Payload>>(queue);
    let path = path.display().to_string();
    let thread = std::thread::Builder::new()
        .name("netsonde-file".into())
        .spawn(move || {
            let mut out = BufWriter::new(file);
            let mut log = OnceLog::default();
            while let Some(payload) = rx.blocking_recv() {
                let items = payload.items();
                let written = payload
                    .to_json_line()
                    .map_err(io::Error::other)
                    .and_then(|line| {
                        out.write_all(line.as_bytes())?;
                        out.write_all(b"\n")?;
                        // One flush per batch: a reader sees whole lines.
                        out.flush()
                    });
                match written {
                    Ok(()) => stats.sent(payload.signal(), items),
                    Err(e) => {
                        stats.failure(payload.signal());
                        stats.dropped(payload.signal(), items);
                        if log.first(&e.to_string()) {
                            tracing::warn!(
                                "writing to {path} failed: {e} (batch counted as dropped)"
                            );
                        }
                    }
                }
                stats.dequeued(payload.signal(), items);
            }
        })?;
    Ok((tx, thread))
}
