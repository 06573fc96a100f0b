//! Where telemetry goes: exporters, the OTLP connection, metric timing, resource attributes.
//!
//! Three layers set these, in increasing priority: the YAML file (`export:`), the standard
//! OpenTelemetry environment variables ([`apply_otel_env`]), and command-line flags. Each layer
//! checks its own values, so an error names the key, variable or flag it came from. The
//! environment is passed in as a map: no component reads it.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{ConfigError, proxy::ProxyConfig};

/// An output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ExporterKind {
    /// One line per exchange and per stats report on standard output.
    Console,
    /// OTLP to a collector.
    Otlp,
    /// OTLP JSON lines to a file (the Collector file exporter's format).
    File,
}

impl ExporterKind {
    /// Its name in the file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ExporterKind::Console => "console",
            ExporterKind::Otlp => "otlp",
            ExporterKind::File => "file",
        }
    }
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Protocol {
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl Protocol {
    pub fn parse(text: &str) -> Result<Protocol, String> {
        match text.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "http/json" => Err("http/json is not supported; use grpc or http/protobuf".into()),
            other => Err(format!("{other:?} is not grpc or http/protobuf")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }

    /// The collector's standard local endpoint for this protocol.
    pub fn default_endpoint(self) -> &'static str {
        match self {
            Protocol::Grpc => "http://localhost:4317",
            Protocol::HttpProtobuf => "http://localhost:4318",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

impl Compression {
    pub(super) fn parse(text: &str) -> Result<Compression, String> {
        match text.trim() {
            "gzip" => Ok(Compression::Gzip),
            "none" | "" => Ok(Compression::None),
            other => Err(format!("{other:?} is not gzip or none")),
        }
    }
}

/// Metric temporality preference (`OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TemporalityPreference {
    /// Every point covers the time since the series started.
    #[default]
    Cumulative,
    /// Counters and histograms cover one export interval; gauges and up-down counters stay
    /// cumulative (they have no meaningful delta).
    Delta,
    /// As delta (netsonde has no asynchronous counters, where the two differ).
    LowMemory,
}

impl TemporalityPreference {
    pub(super) fn parse(text: &str) -> Result<TemporalityPreference, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "cumulative" => Ok(TemporalityPreference::Cumulative),
            "delta" => Ok(TemporalityPreference::Delta),
            "lowmemory" => Ok(TemporalityPreference::LowMemory),
            other => Err(format!("{other:?} is not cumulative, delta or lowmemory")),
        }
    }

    pub fn is_delta(self) -> bool {
        self != TemporalityPreference::Cumulative
    }
}

/// Which attributes an access log record carries (`export.access_log_attributes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogAttributes {
    /// Every attribute of the exchange's span: the record can be filtered on its own.
    #[default]
    All,
    /// Those a log backend filters access logs by; the rest stay on the span the record names
    /// by its trace and span ids. A third fewer bytes sent with all three signals.
    Lean,
}

/// Settings one signal's OTLP exporter may override.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SignalOverride {
    /// Used exactly as given (no `/v1/...` appended).
    pub endpoint: Option<String>,
    pub protocol: Option<Protocol>,
    pub headers: Option<BTreeMap<String, String>>,
    pub timeout_ms: Option<u64>,
    pub compression: Option<Compression>,
    pub certificate: Option<PathBuf>,
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// Retry of failed exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// After this long a batch is given up (counted as dropped).
    pub max_elapsed_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_backoff_ms: 1000,
            max_backoff_ms: 30_000,
            max_elapsed_ms: 60_000,
        }
    }
}

/// The OTLP exporter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// Base endpoint; unset means the protocol's local default. For http/protobuf,
    /// `/v1/traces`, `/v1/metrics` and `/v1/logs` are appended.
    pub endpoint: Option<String>,
    pub protocol: Protocol,
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: u64,
    pub compression: Compression,
    /// PEM file of the CA that signs the collector's certificate (else the system's roots).
    pub certificate: Option<PathBuf>,
    /// PEM files of netsonde's own certificate and its private key, for collectors that ask
    /// clients for one (mutual TLS). Both or neither.
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Proxies to the collector (`HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`); none by default.
    pub proxy: ProxyConfig,
    pub retry: RetryConfig,
    /// Export batches waiting per signal; beyond that new batches are dropped and counted.
    pub queue_batches: usize,
    /// Requests of one signal on their way at once (without the disk queue).
    pub max_concurrent_requests: usize,
    /// Keep waiting batches on disk, so a collector outage loses nothing (off when unset).
    pub disk_queue: DiskQueueConfig,
    pub traces: SignalOverride,
    pub metrics: SignalOverride,
    pub logs: SignalOverride,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            endpoint: None,
            protocol: Protocol::Grpc,
            headers: BTreeMap::new(),
            timeout_ms: 10_000,
            compression: Compression::None,
            certificate: None,
            client_certificate: None,
            client_key: None,
            proxy: ProxyConfig::default(),
            retry: RetryConfig::default(),
            queue_batches: 32,
            max_concurrent_requests: 4,
            disk_queue: DiskQueueConfig::default(),
            traces: SignalOverride::default(),
            metrics: SignalOverride::default(),
            logs: SignalOverride::default(),
        }
    }
}

/// The OTLP exporter's queue on disk: batches are written there as they are made and removed
/// once the collector took them (or refused them for good), so they wait out an outage of any
/// length the bound allows, and an agent restart.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiskQueueConfig {
    /// Directory of the queue files (one per signal); unset keeps the queue in memory only.
    pub path: Option<PathBuf>,
    /// Most bytes of batches held on disk, all signals together; beyond that new batches are
    /// dropped and counted.
    pub max_bytes: u64,
}

impl Default for DiskQueueConfig {
    fn default() -> Self {
        DiskQueueConfig {
            path: None,
            max_bytes: 1 << 30,
        }
    }
}

/// Which signals the OTLP and file exporters get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Signals {
    pub traces: bool,
    pub metrics: bool,
    pub logs: bool,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            traces: true,
            metrics: true,
            logs: true,
        }
    }
}

impl Signals {
    pub fn get(&self, signal: SignalKind) -> bool {
        match signal {
            SignalKind::Traces => self.traces,
            SignalKind::Metrics => self.metrics,
            SignalKind::Logs => self.logs,
        }
    }

    pub(super) fn set(&mut self, signal: SignalKind, on: bool) {
        match signal {
            SignalKind::Traces => self.traces = on,
            SignalKind::Metrics => self.metrics = on,
            SignalKind::Logs => self.logs = on,
        }
    }
}

/// The `export:` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    pub exporters: Vec<ExporterKind>,
    /// Signals produced for the OTLP and file exporters (spans and access logs cost the most).
    pub signals: Signals,
    /// Where the `file` exporter writes.
    pub file_path: PathBuf,
    pub otlp: OtlpConfig,
    /// Milliseconds between metric exports.
    pub metric_interval_ms: u64,
    pub metric_temporality: TemporalityPreference,
    /// Longest spans and logs wait before they are sent, in ms.
    pub batch_delay_ms: u64,
    /// Most exchanges in one span or log batch.
    pub batch_exchanges: usize,
    /// Distinct route templates kept per workload; later ones are reported as `{overflow}`.
    pub max_routes_per_workload: usize,
    /// Distinct attribute sets per metric per workload; later ones are merged into one series
    /// marked `otel.metric.overflow=true`.
    pub max_series_per_metric: usize,
    /// Added to every resource netsonde reports (the agent's and each workload's).
    pub resource_attributes: BTreeMap<String, String>,
    /// `service.name` of the agent's own telemetry.
    pub agent_service_name: String,
    /// Also put the older, experimental RPC attributes on gRPC spans and logs (`rpc.system`,
    /// `rpc.service`, `rpc.grpc.status_code`) for dashboards built on them; set by
    /// `OTEL_SEMCONV_STABILITY_OPT_IN=rpc/dup` too.
    pub rpc_legacy_attributes: bool,
    /// Put the peer's IP address (`network.peer.address`) on connection and kernel metrics.
    /// Off: a server's metrics would get a series per client address, without bound.
    pub peer_addresses_on_metrics: bool,
    /// Which of the span's attributes the access log repeats.
    pub access_log_attributes: AccessLogAttributes,
    /// Largest metrics export request, in bytes: larger ones are split (a collector refuses
    /// what exceeds its limit, 4 MiB by default for gRPC, and would refuse it on every retry).
    pub metric_request_max_bytes: usize,
    /// `OTEL_SDK_DISABLED=true`: no OpenTelemetry output (the otlp and file exporters are
    /// off; the console and the stats line stay). Only from the environment.
    #[serde(skip)]
    pub sdk_disabled: bool,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            exporters: vec![ExporterKind::Console],
            signals: Signals::default(),
            file_path: PathBuf::from("netsonde.jsonl"),
            otlp: OtlpConfig::default(),
            metric_interval_ms: 60_000,
            metric_temporality: TemporalityPreference::Cumulative,
            batch_delay_ms: 1000,
            batch_exchanges: 512,
            max_routes_per_workload: 200,
            max_series_per_metric: 2000,
            resource_attributes: BTreeMap::new(),
            agent_service_name: "netsonde".into(),
            rpc_legacy_attributes: false,
            peer_addresses_on_metrics: false,
            access_log_attributes: AccessLogAttributes::All,
            metric_request_max_bytes: 3 << 20,
            sdk_disabled: false,
        }
    }
}

/// A telemetry signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignalKind {
    Traces,
    Metrics,
    Logs,
}

impl SignalKind {
    pub const ALL: [SignalKind; 3] = [SignalKind::Traces, SignalKind::Metrics, SignalKind::Logs];

    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Traces => "traces",
            SignalKind::Metrics => "metrics",
            SignalKind::Logs => "logs",
        }
    }

    pub(super) fn env_infix(self) -> &'static str {
        match self {
            SignalKind::Traces => "TRACES",
            SignalKind::Metrics => "METRICS",
            SignalKind::Logs => "LOGS",
        }
    }
}

/// One signal's OTLP destination, every layer applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpTarget {
    pub signal: SignalKind,
    /// The full URL: for http/protobuf including the path, for gRPC the server.
    pub endpoint: String,
    pub protocol: Protocol,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub compression: Compression,
    pub certificate: Option<PathBuf>,
    /// netsonde's certificate and key (mutual TLS).
    pub client_identity: Option<ClientIdentity>,
    pub proxy: ProxyConfig,
}

/// PEM files of a client certificate and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

impl OtlpConfig {
    fn signal(&self, signal: SignalKind) -> &SignalOverride {
        match signal {
            SignalKind::Traces => &self.traces,
            SignalKind::Metrics => &self.metrics,
            SignalKind::Logs => &self.logs,
        }
    }

    pub(super) fn signal_mut(&mut self, signal: SignalKind) -> &mut SignalOverride {
        match signal {
            SignalKind::Traces => &mut self.traces,
            SignalKind::Metrics => &mut self.metrics,
            SignalKind::Logs => &mut self.logs,
        }
    }

    /// Where one signal goes.
    pub fn target(&self, signal: SignalKind) -> OtlpTarget {
        let own = self.signal(signal);
        let protocol = own.protocol.unwrap_or(self.protocol);
        let endpoint = match (&own.endpoint, &self.endpoint, protocol) {
            (Some(exact), _, _) => exact.clone(),
            (None, base, Protocol::HttpProtobuf) => {
                let base = base.as_deref().unwrap_or(protocol.default_endpoint());
                format!("{}/v1/{}", base.trim_end_matches('/'), signal.as_str())
            }
            (None, base, Protocol::Grpc) => base
                .clone()
                .unwrap_or_else(|| protocol.default_endpoint().into()),
        };
        OtlpTarget {
            signal,
            endpoint,
            protocol,
            headers: own
                .headers
                .as_ref()
                .unwrap_or(&self.headers)
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            timeout: Duration::from_millis(own.timeout_ms.unwrap_or(self.timeout_ms)),
            compression: own.compression.unwrap_or(self.compression),
            certificate: own.certificate.clone().or_else(|| self.certificate.clone()),
            client_identity: own
                .client_certificate
                .as_ref()
                .or(self.client_certificate.as_ref())
                .zip(own.client_key.as_ref().or(self.client_key.as_ref()))
                .map(|(certificate, key)| ClientIdentity {
                    certificate: certificate.clone(),
                    key: key.clone(),
                }),
            proxy: self.proxy.clone(),
        }
    }
}

/// The smallest disk queue accepted: a batch of spans can take a few hundred KiB.
const MIN_DISK_QUEUE_BYTES: u64 = 1 << 20;
/// Most requests of one signal in flight at once: more only multiplies what a failing
/// collector is sent.
const MAX_CONCURRENT_REQUESTS: usize = 64;

impl ExportConfig {
    pub fn metric_interval(&self) -> Duration {
        Duration::from_millis(self.metric_interval_ms)
    }

    pub fn enabled(&self, kind: ExporterKind) -> bool {
        let opentelemetry = matches!(kind, ExporterKind::Otlp | ExporterKind::File);
        self.exporters.contains(&kind) && !(opentelemetry && self.sdk_disabled)
    }

    /// Checks what serde cannot; `origin` names where a bad value came from.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid { key, message };
        let s = self.signals;
        if !(s.traces || s.metrics || s.logs) {
            return Err(invalid(
                "export.signals",
                "turns off every signal; remove the otlp and file exporters instead".into(),
            ));
        }
        if self.exporters.is_empty() {
            return Err(invalid(
                "export.exporters",
                "must name at least one of console, otlp, file".into(),
            ));
        }
        check_endpoint(self.otlp.endpoint.as_deref())
            .map_err(|m| invalid("export.otlp.endpoint", m))?;
        check_headers(&self.otlp.headers).map_err(|m| invalid("export.otlp.headers", m))?;
        self.otlp.proxy.validate()?;
        for (signal, key) in [
            (SignalKind::Traces, "export.otlp.traces"),
            (SignalKind::Metrics, "export.otlp.metrics"),
            (SignalKind::Logs, "export.otlp.logs"),
        ] {
            let own = self.otlp.signal(signal);
            check_endpoint(own.endpoint.as_deref()).map_err(|m| invalid(key, m))?;
            if let Some(h) = &own.headers {
                check_headers(h).map_err(|m| invalid(key, m))?;
            }
            if own.timeout_ms == Some(0) {
                return Err(invalid(key, "timeout_ms must be at least 1".into()));
            }
            let certificate = own
                .client_certificate
                .as_ref()
                .or(self.otlp.client_certificate.as_ref());
            let client_key = own.client_key.as_ref().or(self.otlp.client_key.as_ref());
            if certificate.is_some() != client_key.is_some() {
                return Err(invalid(
                    "export.otlp.client_certificate",
                    format!(
                        "{} has a client {} but no client {} (mutual TLS needs both)",
                        signal.as_str(),
                        if certificate.is_some() {
                            "certificate"
                        } else {
                            "key"
                        },
                        if certificate.is_some() {
                            "key"
                        } else {
                            "certificate"
                        },
                    ),
                ));
            }
        }
        if self.otlp.timeout_ms == 0 {
            return Err(invalid(
                "export.otlp.timeout_ms",
                "must be at least 1".into(),
            ));
        }
        if self.otlp.queue_batches == 0 {
            return Err(invalid(
                "export.otlp.queue_batches",
                "must be at least 1".into(),
            ));
        }
        if !(1..=MAX_CONCURRENT_REQUESTS).contains(&self.otlp.max_concurrent_requests) {
            return Err(invalid(
                "export.otlp.max_concurrent_requests",
                format!(
                    "{} is not from 1 to {MAX_CONCURRENT_REQUESTS}",
                    self.otlp.max_concurrent_requests
                ),
            ));
        }
        if self.otlp.disk_queue.max_bytes < MIN_DISK_QUEUE_BYTES {
            return Err(invalid(
                "export.otlp.disk_queue.max_bytes",
                format!(
                    "{} is less than {MIN_DISK_QUEUE_BYTES} (1 MiB)",
                    self.otlp.disk_queue.max_bytes
                ),
            ));
        }
        let r = self.otlp.retry;
        if r.initial_backoff_ms == 0 || r.max_backoff_ms < r.initial_backoff_ms {
            return Err(invalid(
                "export.otlp.retry",
                "initial_backoff_ms must be at least 1 and at most max_backoff_ms".into(),
            ));
        }
        if self.metric_interval_ms < 100 {
            return Err(invalid(
                "export.metric_interval_ms",
                format!("{} is less than 100", self.metric_interval_ms),
            ));
        }
        if !(1..=60_000).contains(&self.batch_delay_ms) {
            return Err(invalid(
                "export.batch_delay_ms",
                format!("{} is not between 1 and 60000", self.batch_delay_ms),
            ));
        }
        for (key, value) in [
            ("export.batch_exchanges", self.batch_exchanges),
            (
                "export.max_routes_per_workload",
                self.max_routes_per_workload,
            ),
            ("export.max_series_per_metric", self.max_series_per_metric),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if self.metric_request_max_bytes < 64 << 10 {
            return Err(invalid(
                "export.metric_request_max_bytes",
                format!("{} is less than 65536", self.metric_request_max_bytes),
            ));
        }
        if self.agent_service_name.is_empty() {
            return Err(invalid(
                "export.agent_service_name",
                "must not be empty".into(),
            ));
        }
        Ok(())
    }
}

/// An OTLP endpoint must be an absolute http or https URL.
pub fn check_endpoint(endpoint: Option<&str>) -> Result<(), String> {
    let Some(endpoint) = endpoint else {
        return Ok(());
    };
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("{endpoint:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(()),
        _ => Err(format!(
            "{endpoint:?} is not an http:// or https:// URL with a host"
        )),
    }
}

pub(super) fn check_headers(headers: &BTreeMap<String, String>) -> Result<(), String> {
    for (name, value) in headers {
        http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{name:?} is not a valid header name"))?;
        http::HeaderValue::from_str(value)
            .map_err(|_| format!("the value of header {name:?} is not a valid header value"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_endpoints_get_the_signal_path_unless_given_per_signal() {
        let mut c = ExportConfig::default();
        c.otlp.protocol = Protocol::HttpProtobuf;
        assert_eq!(
            c.otlp.target(SignalKind::Traces).endpoint,
            "http://localhost:4318/v1/traces"
        );
        c.otlp.endpoint = Some("https://collector:4318/prefix/".into());
        assert_eq!(
            c.otlp.target(SignalKind::Metrics).endpoint,
            "https://collector:4318/prefix/v1/metrics"
        );
        c.otlp.logs.endpoint = Some("https://elsewhere/custom".into());
        assert_eq!(
            c.otlp.target(SignalKind::Logs).endpoint,
            "https://elsewhere/custom"
        );
        c.otlp.protocol = Protocol::Grpc;
        assert_eq!(
            c.otlp.target(SignalKind::Traces).endpoint,
            "https://collector:4318/prefix/"
        );
    }

    #[test]
    fn yaml_values_are_checked_with_their_key() {
        let mut c = ExportConfig::default();
        c.otlp.endpoint = Some("127.0.0.1:4317".into());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("config key export.otlp.endpoint: ")
        );
        let mut c = ExportConfig::default();
        c.exporters.clear();
        assert!(c.validate().is_err());
    }
}
