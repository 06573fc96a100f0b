//! The real OpenTelemetry Collector (tests/support/otelcol) and Prometheus
//! (tests/support/prometheus), both built with the machine's Go from pinned modules, started
//! per test on loopback and stopped (SIGTERM, so they flush) when dropped.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{free_port, go_program, wait_for_port};

/// Every collector module is at this release (tests/support/otelcol/go.mod).
pub const OTELCOL_RELEASE: &str = "v0.161.0";

fn built(module: &str, package: &str, tags: &[&str]) -> PathBuf {
    go_program(module, package, tags).unwrap_or_else(|e| panic!("{e}"))
}

/// Stops a child politely, then for sure.
fn terminate(child: &mut Child) {
    // SAFETY: signalling a process we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub struct Otelcol {
    child: Child,
    dir: tempfile::TempDir,
    pub grpc_port: u16,
    pub http_port: u16,
}

impl Otelcol {
    /// A collector that receives OTLP on gRPC and HTTP and writes all it receives, unchanged,
    /// to one file (the file exporter's OTLP JSON, a line per batch): what a backend would
    /// store.
    pub fn recording() -> Otelcol {
        Self::recording_with("", "")
    }

    /// A recording collector whose gRPC and HTTP receivers have `grpc` and `http` settings
    /// too (YAML lines, indented as the receiver's keys).
    pub fn recording_with(grpc: &str, http: &str) -> Otelcol {
        let dir = tempfile::tempdir().unwrap();
        let (grpc_port, http_port) = (free_port(), free_port());
        let config = dir.path().join("recording.yaml");
        std::fs::write(
            &config,
            format!(
                "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc_port}\n{grpc}      \
                 http:\n        endpoint: 127.0.0.1:{http_port}\n{http}\
                 exporters:\n  file:\n    path: {}\n    flush_interval: 100ms\n\
                 service:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n\
                 \x20   traces: {{receivers: [otlp], exporters: [file]}}\n\
                 \x20   metrics: {{receivers: [otlp], exporters: [file]}}\n\
                 \x20   logs: {{receivers: [otlp], exporters: [file]}}\n",
                dir.path().join("received.jsonl").display()
            ),
        )
        .unwrap();
        let child = Self::spawn(&config, &[]);
        let collector = Otelcol {
            child,
            dir,
            grpc_port,
            http_port,
        };
        wait_for_port(&format!("127.0.0.1:{grpc_port}"));
        wait_for_port(&format!("127.0.0.1:{http_port}"));
        collector
    }

    /// Runs the configuration file `config` as it is, with `env`; `ports` are where it
    /// listens (waited for).
    pub fn run(config: &Path, env: &[(&str, &str)], (grpc_port, http_port): (u16, u16)) -> Otelcol {
        let child = Self::spawn(config, env);
        wait_for_port(&format!("127.0.0.1:{grpc_port}"));
        wait_for_port(&format!("127.0.0.1:{http_port}"));
        Otelcol {
            child,
            dir: tempfile::tempdir().unwrap(),
            grpc_port,
            http_port,
        }
    }

    fn spawn(config: &Path, env: &[(&str, &str)]) -> Child {
        Command::new(built("otelcol", ".", &[]))
            .arg(format!("--config={}", config.display()))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the collector")
    }

    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Every batch the recording collector wrote so far.
    pub fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("received.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// What was received once `done` holds (within 20 s; the file is flushed every 100 ms).
    pub fn wait_until(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "the collector never received {what}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Otelcol {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// Prometheus with its OTLP receiver on (`--web.enable-otlp-receiver`).
pub struct Prometheus {
    child: Child,
    _dir: tempfile::TempDir,
    pub port: u16,
}

impl Prometheus {
    pub fn start(config: &Path) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // The service discovery plugins are left out (`remove_all_sd`): the tests push over
        // OTLP, and the build takes minutes less.
        let binary = built(
            "prometheus",
            "github.com/prometheus/prometheus/cmd/prometheus",
            &["remove_all_sd"],
        );
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-otlp-receiver")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus {
            child,
            _dir: dir,
            port,
        };
        wait_for_port(&format!("127.0.0.1:{port}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while prometheus.get("/-/ready").is_none() {
            assert!(Instant::now() < deadline, "prometheus never got ready");
            thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    /// Where OTLP/HTTP metrics go.
    pub fn otlp_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/otlp/v1/metrics", self.port)
    }

    fn get(&self, path: &str) -> Option<String> {
        let out = Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{}{path}", self.port)])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// An instant PromQL query: its result vector, `(labels, value)` per series.
    pub fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let out = Command::new("curl")
            .args([
                "-sfG",
                &format!("http://127.0.0.1:{}/api/v1/query", self.port),
            ])
            .arg("--data-urlencode")
            .arg(format!("query={promql}"))
            .output()
            .expect("curl");
        assert!(out.status.success(), "query {promql} failed");
        let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(answer["status"], "success", "{promql}: {answer}");
        answer["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let value = r["value"][1].as_str().unwrap().parse().unwrap();
                (r["metric"].clone(), value)
            })
            .collect()
    }

    /// Posts OTLP JSON metrics requests (a file exporter's lines) to the OTLP receiver, in
    /// order; each must be taken.
    pub fn push_otlp_json<'a>(&self, requests: impl Iterator<Item = &'a str>) {
        for request in requests {
            let out = Command::new("curl")
                .args([
                    "-sS",
                    "-f",
                    "-H",
                    "Content-Type: application/json",
                    "--data-binary",
                    "@-",
                ])
                .arg(self.otlp_url())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    use std::io::Write as _;
                    child.stdin.take().unwrap().write_all(request.as_bytes())?;
                    child.wait_with_output()
                })
                .expect("curl");
            assert!(
                out.status.success(),
                "prometheus refused OTLP JSON: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// The values of `label` on the series of `metric` (what Grafana's `label_values` asks).
    pub fn label_values(&self, label: &str, metric: &str) -> Vec<String> {
        self.strings(&format!("/api/v1/label/{label}/values?match[]={metric}"))
    }

    /// Every series name Prometheus holds.
    pub fn names(&self) -> Vec<String> {
        self.strings("/api/v1/label/__name__/values")
    }

    /// The list of strings an API `path` answers (empty when it fails).
    fn strings(&self, path: &str) -> Vec<String> {
        let body = self.get(path).unwrap_or_default();
        let answer: Value = serde_json::from_str(&body).unwrap_or_default();
        answer["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}
