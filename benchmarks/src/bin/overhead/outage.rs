//! `--outage-minutes M`: the agent exports spans, logs and metrics over OTLP/gRPC to rotel
//! with the disk queue on, while h2load sends `--rate` requests/s (HTTP/1.1, keep-alive) to
//! nginx (traced alone). After a warm-up the collector is killed for M minutes, then started again on the same
//! port. Reported: the queue's peak size on disk and per exchange, the agent's RSS, how long
//! the backlog took to drain, and the agent's own accounting at exit (exchanges, items
//! dropped per signal, items left on disk) beside h2load's count of answered requests.

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use super::{Options, Rotel, h2load, status_kib};

const WARM_UP: Duration = Duration::from_secs(20);
const AFTER: Duration = Duration::from_secs(60);
/// Longest wait for the backlog to drain.
const DRAIN_LIMIT: Duration = Duration::from_secs(30 * 60);

pub fn run(o: &Options, nginx_worker: u32, url: &str, minutes: u64) {
    let outage = Duration::from_secs(minutes * 60);
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("queue");
    let config = dir.path().join("netsonde.yaml");
    // Stats every second, so the drain is timed to the second; a queue large enough for the
    // outage, so what is measured is what it holds, not where it stops.
    std::fs::write(
        &config,
        "output:\n  stats_interval_secs: 1\nexport:\n  otlp:\n    disk_queue:\n      max_bytes: 17179869184\n",
    )
    .unwrap();
    let rotel = Rotel::start_on(None);
    let port = rotel.port;
    let mut agent = WatchedAgent::start(
        o,
        nginx_worker,
        port,
        &config,
        &["--disk-queue".as_ref(), queue.as_os_str()],
    );
    let latest = |name: &str| agent.latest(name);
    println!(
        "outage: {minutes} min at {} req/s (h2load --h1, 20 connections), warm-up {} s, then {} s more load",
        o.rate,
        WARM_UP.as_secs(),
        AFTER.as_secs()
    );

    let total = WARM_UP + outage + AFTER + Duration::from_secs(5);
    let load_url = url.to_string();
    let rate = o.rate;
    let load = thread::spawn(move || h2load(&load_url, rate, total.as_secs()));
    thread::sleep(WARM_UP);
    drop(rotel);
    let down = Instant::now();
    let (mut peak_bytes, mut peak_rss_kib) = (0, 0);
    while down.elapsed() < outage {
        thread::sleep(Duration::from_secs(5));
        peak_bytes = peak_bytes.max(dir_bytes(&queue));
        peak_rss_kib = peak_rss_kib.max(status_kib(agent.pid(), "VmRSS:"));
    }
    let exchanges_in_outage = latest("exchanges").unwrap_or(0);
    let on_disk_at_recovery = latest("export_on_disk").unwrap_or(0);
    let _rotel = Rotel::start_on(Some(port));
    let back = Instant::now();
    let drained = loop {
        thread::sleep(Duration::from_secs(1));
        peak_rss_kib = peak_rss_kib.max(status_kib(agent.pid(), "VmRSS:"));
        if latest("export_on_disk").is_some_and(|n| n < on_disk_at_recovery / 100) {
            // What is left is the load still arriving, not the backlog.
            break Some(back.elapsed());
        }
        if back.elapsed() > DRAIN_LIMIT {
            break None;
        }
    };
    let latency = load.join().unwrap();
    thread::sleep(Duration::from_secs(5));
    let rss_after_kib = status_kib(agent.pid(), "VmRSS:");
    let last = agent.stop();
    let get = |name: &str| stat(&last, name).unwrap_or(u64::MAX);
    let exchanges = get("exchanges");
    println!(
        "\n## Collector outage of {minutes} min at {} req/s, disk queue",
        o.rate
    );
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| requests answered (h2load) | {} |", latency.ok);
    println!("| exchanges (agent) | {exchanges} |");
    println!("| exchanges when the collector came back | {exchanges_in_outage} |");
    println!("| items on disk when it came back | {on_disk_at_recovery} |");
    println!(
        "| queue peak on disk | {:.1} MiB ({:.0} bytes per exchange) |",
        peak_bytes as f64 / (1 << 20) as f64,
        peak_bytes as f64 / exchanges_in_outage.max(1) as f64
    );
    println!(
        "| backlog drained in | {} |",
        drained.map_or("not within 30 min".into(), |d| format!(
            "{:.0} s",
            d.as_secs_f64()
        ))
    );
    println!(
        "| agent RSS peak / after | {:.1} / {:.1} MiB |",
        peak_rss_kib as f64 / 1024.0,
        rss_after_kib as f64 / 1024.0
    );
    for name in [
        "export_dropped_spans",
        "export_dropped_points",
        "export_dropped_log_records",
        "export_on_disk",
        "export_failures",
        "lost",
    ] {
        println!("| {name} at exit | {} |", get(name));
    }
    agent.print_warnings();
}

/// netsonde tracing nginx alone (each request one exchange; h2load's side would make it two),
/// exporting over OTLP/gRPC to `otlp_port`, its stats lines and warnings kept as they come.
pub(super) struct WatchedAgent {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl WatchedAgent {
    /// Starts it with `config` and `args`, and waits until its probes are attached.
    pub(super) fn start(
        o: &Options,
        nginx_worker: u32,
        otlp_port: u16,
        config: &Path,
        args: &[&OsStr],
    ) -> WatchedAgent {
        let mut child = Command::new(&o.netsonde)
            .args(["run", "--pid", &nginx_worker.to_string()])
            .args(["--exporter", "otlp", "--otlp-endpoint"])
            .arg(format!("http://127.0.0.1:{otlp_port}"))
            .arg("--config")
            .arg(config)
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start netsonde");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let kept = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("probes attached") {
                    let _ = ready_tx.send(());
                }
                let is_stats = line
                    .split(' ')
                    .nth(1)
                    .is_some_and(|w| w.starts_with("stats"));
                if is_stats || line.contains("WARN") || line.contains("ERROR") {
                    kept.lock().unwrap().push(line);
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("netsonde attached");
        WatchedAgent { child, lines }
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `name` on the latest stats line that has it.
    pub(super) fn latest(&self, name: &str) -> Option<u64> {
        let lines = self.lines.lock().unwrap();
        lines.iter().rev().find_map(|l| stat(l, name))
    }

    /// Stops it (SIGINT) and returns its final stats line.
    pub(super) fn stop(&mut self) -> String {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .rev()
            .find(|l| l.contains("stats(final)"))
            .expect("a final stats line")
            .clone()
    }

    pub(super) fn print_warnings(&self) {
        println!("\nthe agent's warnings:");
        for line in self
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        {
            println!("    {line}");
        }
    }
}

/// `name=N` from a stats line.
pub(super) fn stat(line: &str, name: &str) -> Option<u64> {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
        .parse()
        .ok()
}

/// Bytes the files in `dir` take on disk.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
