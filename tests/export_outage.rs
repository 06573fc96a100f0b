//! A collector outage under load, with the disk queue: real traffic (curl, paced, against
//! nginx) captured by the real agent and exported to a real collector (rotel) that is stopped
//! for 25 s (five times the retry budget) and started again. The oracle is nginx's access log: every request it logged
//! must arrive as a span and an access-log record.

mod support;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use support::{Agent, Nginx, collector::Collector, serial};

/// Requests per second, and seconds of load: 8 s before the outage, 25 s of it, and after.
const RATE: u32 = 200;
const SECONDS: u32 = 40;
/// Five times the retry budget of the configuration: without the disk queue, batches would be
/// dropped several times over.
const OUTAGE: Duration = Duration::from_secs(25);

fn write_config(dir: &tempfile::TempDir, yaml: &str) -> String {
    let path = dir.path().join("netsonde.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

fn disk_queue_config(dir: &tempfile::TempDir) -> String {
    write_config(
        dir,
        &format!(
            "export:\n  batch_delay_ms: 200\n  otlp:\n    disk_queue:\n      path: {}\n      \
             max_bytes: 268435456\n    retry:\n      initial_backoff_ms: 200\n      \
             max_backoff_ms: 2000\n      max_elapsed_ms: 5000\n",
            dir.path().join("queue").display()
        ),
    )
}

/// netsonde tracing nginx's worker only, exporting over OTLP/gRPC to `collector`.
fn start_agent(nginx: &Nginx, config: &str, collector: &Collector) -> Agent {
    let worker = nginx.worker.to_string();
    let endpoint = collector.grpc_url();
    Agent::start(&[
        "--pid",
        &worker,
        "--config",
        config,
        "--exporter",
        "otlp",
        "--otlp-endpoint",
        &endpoint,
    ])
}

/// `GET /ka?n=1` … `/ka?n=N` from curl, one connection.
fn get_ka(nginx: &Nginx, n: u32) {
    let status = Command::new("curl")
        .args(["-s"])
        .arg(nginx.url(&format!("/ka?n=[1-{n}]")))
        .stdout(Stdio::null())
        .status()
        .expect("run curl");
    assert!(status.success());
}

/// The targets nginx logged, sorted.
fn logged_targets(nginx: &Nginx) -> Vec<String> {
    let mut targets: Vec<_> = nginx.access_keys().into_iter().map(|k| k.1).collect();
    targets.sort();
    targets
}

#[test]
fn an_outage_beyond_the_retry_budget_loses_no_span_with_the_disk_queue() {
    require_privileges!();
    let _guard = serial();
    let nginx = Nginx::start();
    let mut collector = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let config = disk_queue_config(&dir);
    // The retry budget (5 s) is far shorter than the outage: with the disk queue it does not
    // apply, batches wait on disk until the collector is back.
    let agent = start_agent(&nginx, &config, &collector);
    let total = RATE * SECONDS;
    let mut load = Command::new("curl")
        .args(["-s", "--rate", &format!("{RATE}/s")])
        .arg(nginx.url(&format!("/ka?n=[1-{total}]")))
        .stdout(Stdio::null())
        .spawn()
        .expect("run curl");
    std::thread::sleep(Duration::from_secs(8));
    collector.stop_rotel();
    std::thread::sleep(OUTAGE);
    let during = agent.stderr();
    collector.start_rotel();
    assert!(load.wait().unwrap().success());
    let logged = logged_targets(&nginx);
    assert_eq!(logged.len(), total as usize, "nginx logged every request");
    let received = collector.wait_until_for(
        "a span and a log record for every request nginx logged",
        Duration::from_secs(120),
        |r| r.spans_of(nginx.worker).len() >= logged.len() && r.logs.len() >= logged.len(),
    );
    let capture = agent.stop();
    let mut spans: Vec<_> = received
        .spans_of(nginx.worker)
        .iter()
        .filter_map(|s| s.attr("url.query").map(|q| format!("/ka?{q}")))
        .collect();
    spans.sort();
    let missing: Vec<_> = logged
        .iter()
        .filter(|t| spans.binary_search(t).is_err())
        .collect();
    let mut once = spans.clone();
    once.dedup();
    assert!(
        missing.is_empty() && once.len() == spans.len(),
        "{} of {} requests have no span (first: {:?}); {} spans are repeats; stats {:?}; log:\n{}",
        missing.len(),
        logged.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        spans.len() - once.len(),
        capture.stats.last(),
        capture.stderr
    );
    assert_eq!(received.logs.len(), logged.len());
    for name in [
        "export_dropped_spans",
        "export_dropped_points",
        "export_dropped_log_records",
        "lost",
    ] {
        assert_eq!(
            capture.final_stat(name),
            Some(0),
            "{name}: {:?}",
            capture.stats
        );
    }
    assert!(capture.final_stat("export_failures").unwrap() > 0);
    assert!(
        during.contains("retrying with backoff") && !during.contains("retries exhausted"),
        "{during}"
    );
    // Once drained, the queue files give their disk back.
    for signal in ["traces", "metrics", "logs"] {
        let file = dir.path().join("queue").join(format!("{signal}.queue"));
        let len = std::fs::metadata(&file).unwrap().len();
        assert!(
            len <= 4096,
            "{} is {len} bytes after draining",
            file.display()
        );
    }
}

#[test]
fn what_waits_on_disk_at_exit_is_sent_by_the_next_run() {
    require_privileges!();
    let _guard = serial();
    let nginx = Nginx::start();
    let mut collector = Collector::start_later();
    let dir = tempfile::tempdir().unwrap();
    let config = disk_queue_config(&dir);
    let agent = start_agent(&nginx, &config, &collector);
    get_ka(&nginx, 50);
    std::thread::sleep(Duration::from_secs(1));
    let first = agent.stop();
    assert!(
        first
            .stderr
            .contains("in the disk queue: the next run sends them"),
        "{}",
        first.stderr
    );
    assert_eq!(
        first.final_stat("export_dropped_spans"),
        Some(0),
        "{:?}",
        first.stats
    );
    assert!(
        first.final_stat("export_on_disk").unwrap() >= 100,
        "{:?}",
        first.stats
    );
    collector.start_rotel();
    let second = start_agent(&nginx, &config, &collector);
    let received = collector.wait_until("the first run's 50 spans", |r| {
        r.spans_of(nginx.worker).len() >= 50
    });
    let capture = second.stop();
    let mut spans: Vec<_> = received
        .spans_of(nginx.worker)
        .iter()
        .filter_map(|s| s.attr("url.query").map(|q| format!("/ka?{q}")))
        .collect();
    spans.sort();
    assert_eq!(spans, logged_targets(&nginx));
    assert!(
        capture.stderr.contains("left by an earlier run"),
        "{}",
        capture.stderr
    );
}

#[test]
fn without_the_disk_queue_drops_are_counted_per_signal() {
    require_privileges!();
    let _guard = serial();
    let nginx = Nginx::start();
    let collector = Collector::start_later();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        "export:\n  batch_delay_ms: 100\n  otlp:\n    retry:\n      initial_backoff_ms: 100\n      \
         max_backoff_ms: 200\n      max_elapsed_ms: 300\n",
    );
    let agent = start_agent(&nginx, &config, &collector);
    get_ka(&nginx, 40);
    std::thread::sleep(Duration::from_secs(2));
    let capture = agent.stop();
    // Nothing listens: every span and log record is dropped, and counted in items.
    let logged = nginx.access_log().len() as u64;
    assert_eq!(logged, 40);
    let spans = capture.final_stat("export_dropped_spans").unwrap();
    let logs = capture.final_stat("export_dropped_log_records").unwrap();
    let points = capture.final_stat("export_dropped_points").unwrap();
    assert_eq!((spans, logs), (logged, logged), "{:?}", capture.stats);
    assert_eq!(
        capture.final_stat("export_dropped"),
        Some(spans + logs + points)
    );
    drop(collector);
}
