//! Settings: defaults, overlaid by the YAML file (`--config`), overlaid by command-line flags.
//! Immutable once built; each stage receives the part it needs. Every key is documented in
//! docs/configuration.md, whose example is checked against [`Config::default`] by a test.

pub mod export;
pub mod kubernetes;
pub mod otel_env;
pub mod proxy;

use std::{path::Path, time::Duration};

use serde::Deserialize;

/// Everything netsonde can be told.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub capture: CaptureConfig,
    pub filter: FilterConfig,
    pub connections: ConnectionsConfig,
    pub http1: Http1Config,
    pub output: OutputConfig,
    pub redaction: RedactionConfig,
    pub export: export::ExportConfig,
    pub kubernetes: kubernetes::KubernetesConfig,
}

/// What the kernel side copies and how it hands it over.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Bytes of payload copied per syscall (the rest is counted, not copied).
    pub payload_bytes: u32,
    /// Size of the kernel-to-user ring buffer in bytes: a power of two, at least 4096.
    pub ring_buffer_bytes: u32,
    /// Longest a record waits in the ring buffer before user space collects it, in ms. The
    /// programs wake user space early only when an eighth of the ring buffer is in use.
    pub batch_delay_ms: u64,
    /// Follow traced syscalls' packets through the kernel's network layer (packets, device and
    /// receive-path times, retransmits, drops, handshakes). Off: syscalls only.
    pub kernel_layer: bool,
    /// Hook kernel functions with fentry when the kernel allows it (the cheapest way); false
    /// goes straight to kprobes.
    pub fentry: bool,
    /// Read syscalls at the BTF-typed `sys_enter`/`sys_exit` tracepoints (`tp_btf`) when the
    /// kernel has its own BTF (the cheaper way: kernel fields are plain loads); false uses the
    /// raw tracepoints, where every kernel read is a helper call.
    pub tp_btf: bool,
    /// Read `read`, `write`, `recvfrom` and `sendto` on sockets inside the socket layer
    /// (fentry on `inet_recvmsg`/`inet_sendmsg` and their IPv6 twins) where the kernel allows
    /// fentry, so the same syscalls on files, pipes and terminals are not hooked at all; false
    /// (or no fentry) reads them at the syscall tracepoints.
    pub socket_layer: bool,
}

/// Which processes are traced. Nothing set: every process but netsonde itself. Each rule
/// that is set must pass (`pids` and `comms` together are one rule: either).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// Process ids: these processes and their descendants.
    pub pids: Vec<u32>,
    /// Process names as in /proc/PID/comm (the kernel keeps 15 characters).
    pub comms: Vec<String>,
    /// Process names never traced.
    pub exclude_comms: Vec<String>,
    /// Only processes in pods of these namespaces.
    pub namespaces: Vec<String>,
    /// Never processes in pods of these namespaces (processes outside pods pass).
    pub exclude_namespaces: Vec<String>,
    /// Only processes in pods whose name matches one of these patterns (`*`, `?`, `[…]`).
    pub pods: Vec<String>,
    /// Only processes in pods whose labels this Kubernetes label selector matches.
    pub pod_selector: Option<PodSelector>,
}

impl FilterConfig {
    /// Rules on pods (they need the Kubernetes API).
    pub fn has_pod_rules(&self) -> bool {
        !self.namespaces.is_empty()
            || !self.exclude_namespaces.is_empty()
            || !self.pods.is_empty()
            || self.pod_selector.is_some()
    }
}

/// A Kubernetes label selector, written as in a NetworkPolicy or a Deployment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct PodSelector {
    pub match_labels: std::collections::BTreeMap<String, String>,
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorRequirement {
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

/// The connection table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionsConfig {
    /// Most connections tracked at once; the least recently active is evicted beyond that.
    pub max_connections: usize,
    /// Seconds without traffic after which a connection is forgotten.
    pub idle_timeout_secs: u64,
}

/// HTTP/1 parsing limits (per connection).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http1Config {
    /// Largest request or response head accepted, in bytes.
    pub max_head_bytes: usize,
    /// Most pipelined requests waiting for responses.
    pub max_pending_requests: usize,
}

/// The console output.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Seconds between stats lines; 0 prints only the final one.
    pub stats_interval_secs: u64,
    /// Address of the status endpoint (`/healthz`, `/readyz`, `/metrics`), e.g.
    /// `0.0.0.0:9464`; unset: none.
    pub status_listen: Option<std::net::SocketAddr>,
}

/// What is hidden on every output (console, file, OTLP). Only a few request headers are
/// ever kept (host, user-agent, traceparent, tracestate, content-type, x-forwarded-for):
/// Authorization, Cookie and bodies are never captured into records at all.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionConfig {
    /// Query parameters whose values become `REDACTED` (case-insensitive, after
    /// percent-decoding). Setting the list replaces the defaults.
    pub query_keys: Vec<String>,
    /// Kept request headers whose values become `REDACTED`.
    pub headers: Vec<String>,
    /// Show every value in clear: for local debugging only.
    pub show_everything: bool,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        RedactionConfig {
            // Semantic conventions' list for `url.query`, and common credential names.
            query_keys: [
                "AWSAccessKeyId",
                "Signature",
                "sig",
                "X-Goog-Signature",
                "X-Amz-Signature",
                "X-Amz-Credential",
                "X-Amz-Security-Token",
                "access_token",
                "refresh_token",
                "id_token",
                "token",
                "api_key",
                "apikey",
                "key",
                "password",
                "passwd",
                "pwd",
                "secret",
                "client_secret",
                "code",
                "auth",
                "session",
                "sessionid",
                "jwt",
            ]
            .map(String::from)
            .to_vec(),
            headers: Vec::new(),
            show_everything: false,
        }
    }
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            payload_bytes: netsonde_common::DEFAULT_CAPTURE,
            ring_buffer_bytes: 8 << 20,
            batch_delay_ms: 10,
            kernel_layer: true,
            fentry: true,
            tp_btf: true,
            socket_layer: true,
        }
    }
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        ConnectionsConfig {
            max_connections: 65536,
            idle_timeout_secs: 300,
        }
    }
}

impl Default for Http1Config {
    fn default() -> Self {
        Http1Config {
            max_head_bytes: 64 * 1024,
            max_pending_requests: 128,
        }
    }
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            stats_interval_secs: 10,
            status_listen: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config key {key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{flag}: {message}")]
    Flag { flag: &'static str, message: String },
}

impl Config {
    /// Reads and validates a YAML config file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_yaml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates YAML text (an empty document gives the defaults).
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
                path: "<text>".into(),
                message: keyed_message(text, &one_line(&e.to_string())),
            })?
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let max = netsonde_common::MAX_CAPTURE as u32;
        if self.capture.payload_bytes > max {
            return Err(ConfigError::Invalid {
                key: "capture.payload_bytes",
                message: format!(
                    "{} is more than the maximum {max}",
                    self.capture.payload_bytes
                ),
            });
        }
        let ring = self.capture.ring_buffer_bytes;
        if ring < 4096 || !ring.is_power_of_two() {
            return Err(ConfigError::Invalid {
                key: "capture.ring_buffer_bytes",
                message: format!("{ring} must be a power of two and at least 4096"),
            });
        }
        if !(1..=1000).contains(&self.capture.batch_delay_ms) {
            return Err(ConfigError::Invalid {
                key: "capture.batch_delay_ms",
                message: format!("{} is not between 1 and 1000", self.capture.batch_delay_ms),
            });
        }
        if self.connections.max_connections == 0 {
            return Err(ConfigError::Invalid {
                key: "connections.max_connections",
                message: "must be at least 1".into(),
            });
        }
        if self.http1.max_head_bytes < 64 {
            return Err(ConfigError::Invalid {
                key: "http1.max_head_bytes",
                message: format!(
                    "{} is too small to hold a request line",
                    self.http1.max_head_bytes
                ),
            });
        }
        if self.http1.max_pending_requests == 0 {
            return Err(ConfigError::Invalid {
                key: "http1.max_pending_requests",
                message: "must be at least 1".into(),
            });
        }
        if self.filter.pids.contains(&0) {
            return Err(ConfigError::Invalid {
                key: "filter.pids",
                message: "0 is not a process id (they start at 1)".into(),
            });
        }
        if let Some(long) = self
            .filter
            .comms
            .iter()
            .find(|c| c.is_empty() || c.len() > 15)
        {
            return Err(ConfigError::Invalid {
                key: "filter.comms",
                message: format!(
                    "{long:?}: process names are 1 to 15 bytes (the kernel cuts them there)"
                ),
            });
        }
        self.validate_filter()?;
        self.validate_redaction()?;
        self.kubernetes.validate()?;
        self.export.validate()
    }

    fn validate_filter(&self) -> Result<(), ConfigError> {
        let f = &self.filter;
        if let Some(long) = f
            .exclude_comms
            .iter()
            .find(|c| c.is_empty() || c.len() > 15)
        {
            return Err(ConfigError::Invalid {
                key: "filter.exclude_comms",
                message: format!(
                    "{long:?}: process names are 1 to 15 bytes (the kernel cuts them there)"
                ),
            });
        }
        if let Some(bad) = f.pods.iter().find(|p| glob::Pattern::new(p).is_err()) {
            return Err(ConfigError::Invalid {
                key: "filter.pods",
                message: format!("{bad:?} is not a valid pattern"),
            });
        }
        for r in f.pod_selector.iter().flat_map(|s| &s.match_expressions) {
            let needs_values = match r.operator.as_str() {
                "In" | "NotIn" => true,
                "Exists" | "DoesNotExist" => false,
                other => {
                    return Err(ConfigError::Invalid {
                        key: "filter.pod_selector",
                        message: format!(
                            "operator {other:?} of key {:?} is not In, NotIn, Exists or DoesNotExist",
                            r.key
                        ),
                    });
                }
            };
            if needs_values == r.values.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "filter.pod_selector",
                    message: format!(
                        "{} on key {:?} {}",
                        r.operator,
                        r.key,
                        if needs_values {
                            "needs values"
                        } else {
                            "takes no values"
                        }
                    ),
                });
            }
        }
        if f.has_pod_rules() && self.kubernetes.enabled == kubernetes::KubeMode::Off {
            return Err(ConfigError::Invalid {
                key: "filter",
                message: "namespace, pod and label rules need the Kubernetes API, and \
                          kubernetes.enabled is off (or netsonde is not in a pod and has no \
                          kubernetes.kubeconfig)"
                    .into(),
            });
        }
        Ok(())
    }

    fn validate_redaction(&self) -> Result<(), ConfigError> {
        let r = &self.redaction;
        if let Some(bad) = r
            .query_keys
            .iter()
            .find(|k| k.trim().is_empty() || k.contains(['&', '=']))
        {
            return Err(ConfigError::Invalid {
                key: "redaction.query_keys",
                message: format!("{bad:?} is not a query key (empty, or holds `&` or `=`)"),
            });
        }
        if let Some(bad) = r
            .headers
            .iter()
            .find(|h| http::HeaderName::from_bytes(h.as_bytes()).is_err())
        {
            return Err(ConfigError::Invalid {
                key: "redaction.headers",
                message: format!("{bad:?} is not an HTTP header name"),
            });
        }
        Ok(())
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.connections.idle_timeout_secs)
    }
}

/// The YAML parser names a bad value's line and column and its type, not its key. The text is
/// read again as a plain YAML tree and given to the same `Config` through
/// serde_path_to_error, which knows the path of the key that failed: the message then names
/// the key, the value and what the key takes. (Only on this error path: the tree and the
/// direct parse could differ in corner cases, and the direct parse is what is kept.)
fn keyed_message(text: &str, message: &str) -> String {
    let Ok(tree) = serde_saphyr::from_str::<serde_json::Value>(text) else {
        return message.to_string();
    };
    let Err(e) = serde_path_to_error::deserialize::<_, Config>(&tree) else {
        return message.to_string();
    };
    let path = e.path().to_string();
    // A wrong key is named by the YAML parser already (with the keys it expected).
    if path == "." || message.contains("unknown field") {
        return message.to_string();
    }
    let position = message
        .split(": ")
        .next()
        .filter(|p| p.starts_with("line "))
        .map(|p| format!(" ({p})"))
        .unwrap_or_default();
    // Keys and values are the user's text: a control character in one (a quoted key with a
    // newline) is shown escaped, so the message stays on one line.
    format!("key {path}{position}: {}", e.inner())
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The YAML parser's message is a line with the position and the problem, then a source
/// excerpt; the user gets that first line.
fn one_line(message: &str) -> String {
    let first = message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An environment of these variables.
    pub(crate) fn env(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_documented_example_is_the_defaults() {
        let doc = include_str!("../../docs/configuration.md");
        let example = doc
            .split("```yaml")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("docs/configuration.md has a ```yaml example");
        assert_eq!(
            Config::from_yaml(example).expect("example parses"),
            Config::default()
        );
    }

    /// Every key of the file.
    const DOCUMENTED_KEYS: [&str; 63] = [
        "capture.payload_bytes",
        "capture.ring_buffer_bytes",
        "capture.batch_delay_ms",
        "capture.kernel_layer",
        "capture.fentry",
        "capture.tp_btf",
        "capture.socket_layer",
        "filter.pids",
        "filter.comms",
        "filter.exclude_comms",
        "filter.namespaces",
        "filter.exclude_namespaces",
        "filter.pods",
        "filter.pod_selector",
        "kubernetes.enabled",
        "kubernetes.kubeconfig",
        "kubernetes.node_name",
        "kubernetes.cluster_name",
        "kubernetes.cluster_domain",
        "kubernetes.peers",
        "kubernetes.service_name_from_labels",
        "kubernetes.startup_wait_secs",
        "connections.max_connections",
        "connections.idle_timeout_secs",
        "http1.max_head_bytes",
        "http1.max_pending_requests",
        "output.stats_interval_secs",
        "output.status_listen",
        "redaction.query_keys",
        "redaction.headers",
        "redaction.show_everything",
        "export.exporters",
        "export.signals",
        "export.file_path",
        "export.otlp.endpoint",
        "export.otlp.protocol",
        "export.otlp.headers",
        "export.otlp.timeout_ms",
        "export.otlp.compression",
        "export.otlp.certificate",
        "export.otlp.client_certificate",
        "export.otlp.client_key",
        "export.otlp.proxy.http",
        "export.otlp.proxy.https",
        "export.otlp.proxy.no_proxy",
        "export.otlp.retry",
        "export.otlp.queue_batches",
        "export.otlp.max_concurrent_requests",
        "export.otlp.disk_queue.path",
        "export.otlp.disk_queue.max_bytes",
        "export.otlp.traces",
        "export.metric_interval_ms",
        "export.metric_temporality",
        "export.batch_delay_ms",
        "export.batch_exchanges",
        "export.max_routes_per_workload",
        "export.max_series_per_metric",
        "export.resource_attributes",
        "export.agent_service_name",
        "export.rpc_legacy_attributes",
        "export.peer_addresses_on_metrics",
        "export.access_log_attributes",
        "export.metric_request_max_bytes",
    ];

    #[test]
    fn every_key_is_documented() {
        let doc = include_str!("../../docs/configuration.md");
        for key in DOCUMENTED_KEYS {
            assert!(doc.contains(&format!("`{key}`")), "{key} is not documented");
        }
    }

    #[test]
    fn an_unknown_key_is_named() {
        let err = Config::from_yaml("capture:\n  payload_byte: 10\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config file <text>: line 2 column 3: unknown field `payload_byte`, expected one of \
             payload_bytes, ring_buffer_bytes, batch_delay_ms, kernel_layer, fentry, tp_btf, \
             socket_layer"
        );
        let err = Config::from_yaml("captur: {}\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `captur`"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = Config::from_yaml("capture:\n  payload_bytes: 100000\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key capture.payload_bytes: 100000 is more than the maximum 16384"
        );
        let err = Config::from_yaml("capture:\n  ring_buffer_bytes: 5000\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("config key capture.ring_buffer_bytes:"),
            "{err}"
        );
        let err = Config::from_yaml("filter:\n  comms: [averyveryverylongname]\n").unwrap_err();
        assert!(
            err.to_string().starts_with("config key filter.comms:"),
            "{err}"
        );
        let err = Config::from_yaml("capture:\n  payload_bytes: lots\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config file <text>: key capture.payload_bytes (line 2 column 18): invalid type: \
             string \"lots\", expected u32"
        );
        let err = Config::from_yaml("connections:\n  max_connections: [1, 2]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config file <text>: key connections.max_connections (line 2 column 20): invalid \
             type: sequence, expected usize"
        );
        let err = Config::from_yaml("filter:\n  pids: [0]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key filter.pids: 0 is not a process id (they start at 1)"
        );
    }

    /// A key with a newline in it (found by the config fuzzer) is named on one line.
    #[test]
    fn a_key_with_control_characters_is_named_on_one_line() {
        let err = Config::from_yaml("[?\n)B'=%B\t-\t\r0>\n\nU]\n")
            .unwrap_err()
            .to_string();
        assert!(!err.contains('\n') && !err.contains('\r'), "{err}");
        assert!(err.contains("unknown field"), "{err}");
    }

    /// Every key, given a value no key takes (a list of lists), is named in the error.
    #[test]
    fn every_key_with_a_bad_value_is_named() {
        for key in DOCUMENTED_KEYS {
            let mut yaml = String::new();
            let parts: Vec<_> = key.split('.').collect();
            for (depth, part) in parts.iter().enumerate() {
                yaml.push_str(&"  ".repeat(depth));
                yaml.push_str(part);
                yaml.push(':');
                yaml.push(if depth + 1 == parts.len() { ' ' } else { '\n' });
            }
            yaml.push_str("[[1]]\n");
            let err = Config::from_yaml(&yaml)
                .expect_err(&format!("{key} took a list of lists"))
                .to_string();
            assert!(err.contains(&format!("key {key}")), "{key}: {err}");
            assert!(err.contains("invalid type: sequence"), "{key}: {err}");
        }
    }

    #[test]
    fn filter_rules_are_checked() {
        let err = |text: &str| Config::from_yaml(text).unwrap_err().to_string();
        assert_eq!(
            err("filter:\n  pods: ['web-[x']\n"),
            "config key filter.pods: \"web-[x\" is not a valid pattern"
        );
        assert_eq!(
            err(
                "filter:\n  pod_selector:\n    matchExpressions:\n    - {key: tier, operator: Sometimes}\n"
            ),
            "config key filter.pod_selector: operator \"Sometimes\" of key \"tier\" is not In, NotIn, Exists or DoesNotExist"
        );
        assert_eq!(
            err(
                "filter:\n  pod_selector:\n    matchExpressions:\n    - {key: tier, operator: In}\n"
            ),
            "config key filter.pod_selector: In on key \"tier\" needs values"
        );
        assert!(
            err("filter:\n  pod_selector:\n    matchLabel: {a: b}\n")
                .contains("unknown field `matchLabel`")
        );
        // Pod rules without the Kubernetes API.
        assert!(
            err("kubernetes:\n  enabled: off\nfilter:\n  namespaces: [shop]\n").starts_with(
                "config key filter: namespace, pod and label rules need the Kubernetes API"
            )
        );
        let ok = Config::from_yaml(
            "filter:\n  namespaces: [shop]\n  pod_selector:\n    matchLabels: {app: web}\n    \
             matchExpressions:\n    - {key: tier, operator: NotIn, values: [cache]}\n",
        )
        .unwrap();
        assert!(ok.filter.has_pod_rules());
    }

    #[test]
    fn partial_files_keep_the_other_defaults() {
        let c = Config::from_yaml("filter:\n  comms: [nginx, curl]\n").unwrap();
        assert_eq!(c.filter.comms, ["nginx", "curl"]);
        assert_eq!(c.capture, CaptureConfig::default());
        assert_eq!(Config::from_yaml("").unwrap(), Config::default());
    }
}
