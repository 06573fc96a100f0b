//! A real OTLP collector for the tests: rotel (`pip install rotel`, the Rust OpenTelemetry
//! collector) receives on gRPC and HTTP and forwards everything over OTLP/HTTP to
//! `otlp_sink.py`, which decodes it with the official `opentelemetry-proto` Python package and
//! appends it as JSON lines. The tests read those lines: what the collector accepted and passed
//! on, not what netsonde thinks it sent.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{free_port, python, support_file, wait_for_port};

/// The rotel binary inside the Python package.
fn rotel_agent() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = Command::new(python())
            .args([
                "-c",
                "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
            ])
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "rotel is not installed: pip install rotel opentelemetry-proto ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

/// otlp_sink.py: an OTLP/HTTP receiver that records what it gets.
pub struct Sink {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Sink {
    /// Starts otlp_sink.py with extra options (see its usage).
    pub fn start(options: &[&str]) -> Sink {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(python())
            .arg(support_file("otlp_sink.py"))
            .arg(port.to_string())
            .arg(dir.path().join("received.jsonl"))
            .args(options)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start otlp_sink.py");
        wait_for_port(&format!("127.0.0.1:{port}"));
        Sink { child, dir, port }
    }

    /// Every request received so far, as recorded: {"signal", "request", "headers"}.
    pub fn lines(&self) -> Vec<Value> {
        let text =
            std::fs::read_to_string(self.dir.path().join("received.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    pub fn received(&self) -> Vec<(String, Value)> {
        self.lines()
            .into_iter()
            .map(|v| {
                (
                    v["signal"].as_str().unwrap_or("").to_string(),
                    v["request"].clone(),
                )
            })
            .collect()
    }

    /// Waits until `done` holds for what was received (or panics after 30 s).
    pub fn wait_until(&self, what: &str, done: impl Fn(&Received) -> bool) -> Received {
        self.wait_until_for(what, Duration::from_secs(30), done)
    }

    /// Waits until `done` holds for what was received (or panics after `limit`).
    pub fn wait_until_for(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&Received) -> bool,
    ) -> Received {
        let deadline = Instant::now() + limit;
        loop {
            let received = Received::from(self.received());
            if done(&received) {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "the collector did not receive {what} in {limit:?}; it has {} spans, {} logs, {} metric points",
                received.spans.len(),
                received.logs.len(),
                received.metrics.len()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Collector {
    rotel: Option<Child>,
    sink: Sink,
    pub grpc_port: u16,
    pub http_port: u16,
}

impl Collector {
    pub fn start() -> Collector {
        Self::start_on(free_port(), free_port())
    }

    /// Starts the sink now and rotel on the given ports.
    pub fn start_on(grpc_port: u16, http_port: u16) -> Collector {
        let mut collector = Collector {
            rotel: None,
            sink: Sink::start(&[]),
            grpc_port,
            http_port,
        };
        collector.start_rotel();
        collector
    }

    /// An endpoint where nothing listens yet; [`Collector::start_rotel`] brings it up later.
    pub fn start_later() -> Collector {
        let mut c = Self::start();
        c.kill_rotel();
        c
    }

    pub fn start_rotel(&mut self) {
        assert!(self.rotel.is_none(), "rotel already runs");
        let rotel = Command::new(rotel_agent())
            .arg("start")
            .args([
                "--otlp-grpc-endpoint",
                &format!("127.0.0.1:{}", self.grpc_port),
            ])
            .args([
                "--otlp-http-endpoint",
                &format!("127.0.0.1:{}", self.http_port),
            ])
            .args(["--exporter", "otlp"])
            .args([
                "--otlp-exporter-endpoint",
                &format!("http://127.0.0.1:{}", self.sink.port),
            ])
            .args(["--otlp-exporter-protocol", "http"])
            // The sink decodes in Python: a burst (a backlog drained after an outage) can keep
            // it busy for seconds, and a request rotel times out it sends again, twice received.
            .args(["--otlp-exporter-request-timeout", "120s"])
            .args(["--batch-timeout", "100ms"])
            .arg("--pid-file")
            .arg(self.sink.dir.path().join("rotel.pid"))
            .arg("--log-file")
            .arg(self.sink.dir.path().join("rotel.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rotel");
        self.rotel = Some(rotel);
        wait_for_port(&format!("127.0.0.1:{}", self.grpc_port));
        wait_for_port(&format!("127.0.0.1:{}", self.http_port));
    }

    /// Kills rotel as a crash would (SIGKILL).
    pub fn kill_rotel(&mut self) {
        if let Some(mut rotel) = self.rotel.take() {
            let _ = rotel.kill();
            let _ = rotel.wait();
        }
    }

    /// Stops rotel as a rollout would (SIGTERM: it flushes what it accepted, then exits).
    pub fn stop_rotel(&mut self) {
        if let Some(mut rotel) = self.rotel.take() {
            // SAFETY: signalling a process we started.
            unsafe { libc::kill(rotel.id() as i32, libc::SIGTERM) };
            let _ = rotel.wait();
        }
    }

    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// What the collector passed on so far.
    pub fn received(&self) -> Vec<(String, Value)> {
        self.sink.received()
    }

    /// Waits until `done` holds for what the collector passed on (or panics after 30 s).
    pub fn wait_until(&self, what: &str, done: impl Fn(&Received) -> bool) -> Received {
        self.sink.wait_until(what, done)
    }

    /// Waits until `done` holds for what the collector passed on (or panics after `limit`).
    pub fn wait_until_for(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&Received) -> bool,
    ) -> Received {
        self.sink.wait_until_for(what, limit, done)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill_rotel();
    }
}

/// A flattened view: every span, log record and metric data point, each with its resource's
/// attributes.
#[derive(Debug, Default)]
pub struct Received {
    pub spans: Vec<Item>,
    pub logs: Vec<Item>,
    /// One per data point; `body` is the point, `name` its metric's name.
    pub metrics: Vec<Item>,
}

#[derive(Debug, Clone)]
pub struct Item {
    pub resource: Value,
    pub scope: Value,
    pub name: String,
    pub body: Value,
}

impl Item {
    /// A resource attribute as a string (ints as their decimal form).
    pub fn resource_attr(&self, key: &str) -> Option<String> {
        attr(&self.resource["attributes"], key)
    }

    pub fn attr(&self, key: &str) -> Option<String> {
        attr(&self.body["attributes"], key)
    }

    /// A bytes field (trace or span id) as lower-case hex (the sink's JSON has base64).
    pub fn id(&self, field: &str) -> String {
        base64_to_hex(self.body[field].as_str().unwrap_or(""))
    }
}

pub fn attr(attributes: &Value, key: &str) -> Option<String> {
    attributes.as_array()?.iter().find_map(|kv| {
        if kv["key"] != key {
            return None;
        }
        let v = &kv["value"];
        v["stringValue"]
            .as_str()
            .map(str::to_string)
            .or_else(|| v["intValue"].as_str().map(str::to_string))
            .or_else(|| v["intValue"].as_i64().map(|i| i.to_string()))
            .or_else(|| v["boolValue"].as_bool().map(|b| b.to_string()))
            .or_else(|| v["doubleValue"].as_f64().map(|d| d.to_string()))
    })
}

fn base64_to_hex(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = String::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64") as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push_str(&format!("{:02x}", (bits >> nbits) & 0xff));
        }
    }
    out
}

impl From<Vec<(String, Value)>> for Received {
    fn from(requests: Vec<(String, Value)>) -> Self {
        let mut r = Received::default();
        for (signal, request) in requests {
            let (outer, middle, inner) = match signal.as_str() {
                "traces" => ("resourceSpans", "scopeSpans", "spans"),
                "logs" => ("resourceLogs", "scopeLogs", "logRecords"),
                _ => ("resourceMetrics", "scopeMetrics", "metrics"),
            };
            for rs in request[outer].as_array().into_iter().flatten() {
                for ss in rs[middle].as_array().into_iter().flatten() {
                    for item in ss[inner].as_array().into_iter().flatten() {
                        let mk = |name: String, body: Value| Item {
                            resource: rs["resource"].clone(),
                            scope: ss["scope"].clone(),
                            name,
                            body,
                        };
                        match signal.as_str() {
                            "traces" => r
                                .spans
                                .push(mk(item["name"].as_str().unwrap_or("").into(), item.clone())),
                            "logs" => r.logs.push(mk(String::new(), item.clone())),
                            _ => {
                                let name = item["name"].as_str().unwrap_or("").to_string();
                                for kind in ["sum", "gauge", "histogram"] {
                                    for p in
                                        item[kind]["dataPoints"].as_array().into_iter().flatten()
                                    {
                                        let mut body = p.clone();
                                        body["kind"] = Value::from(kind);
                                        body["unit"] = item["unit"].clone();
                                        body["temporality"] =
                                            item[kind]["aggregationTemporality"].clone();
                                        r.metrics.push(mk(name.clone(), body));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        r
    }
}

impl Received {
    /// Requests counted by cumulative histogram `metric` for the workload with `process.pid`:
    /// the latest (largest) count of each series, summed over series.
    pub fn histogram_count(&self, metric: &str, pid: u32) -> u64 {
        let mut latest: std::collections::HashMap<String, u64> = Default::default();
        for m in self
            .metrics
            .iter()
            .filter(|m| m.name == metric && m.resource_attr("process.pid") == Some(pid.to_string()))
        {
            let count = m.body["count"]
                .as_str()
                .and_then(|c| c.parse().ok())
                .or(m.body["count"].as_u64())
                .unwrap_or(0);
            let series = m.body["attributes"].to_string();
            let e = latest.entry(series).or_default();
            *e = (*e).max(count);
        }
        latest.values().sum()
    }

    pub fn spans_of(&self, pid: u32) -> Vec<&Item> {
        self.spans
            .iter()
            .filter(|s| s.resource_attr("process.pid") == Some(pid.to_string()))
            .collect()
    }
}
