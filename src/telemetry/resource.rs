//! Resources: one per observed workload (a process, for now), and one for the agent itself.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::{attribution::ProcessInfo, telemetry::otlp::kv};

/// Builds resources; holds what every resource shares.
#[derive(Debug, Clone)]
pub struct Resources {
    host: String,
    /// Configured attributes (`export.resource_attributes`, `OTEL_RESOURCE_ATTRIBUTES`).
    extra: BTreeMap<String, String>,
}

impl Resources {
    pub fn new(host: String, extra: BTreeMap<String, String>) -> Self {
        Resources { host, extra }
    }

    /// A workload's resource. Configured `service.*` attributes describe the agent, not the
    /// workloads, so they are left out here; the rest (an environment, a cluster name) apply.
    pub fn workload(&self, process: &ProcessInfo) -> Resource {
        let mut attributes = vec![
            kv("service.name", &*process.executable_name),
            kv("service.instance.id", self.instance_id(process)),
            kv("process.pid", i64::from(process.pid)),
            kv("process.executable.name", &*process.executable_name),
        ];
        if let Some(path) = &process.executable_path {
            attributes.push(kv("process.executable.path", &**path));
        }
        attributes.push(kv("host.name", self.host.as_str()));
        for (k, v) in &self.extra {
            if !k.starts_with("service.") && !attributes.iter().any(|a| &a.key == k) {
                attributes.push(kv(k, v.as_str()));
            }
        }
        Resource {
            attributes,
            dropped_attributes_count: 0,
            entity_refs: Vec::new(),
        }
    }

    /// `host:pid:start-ticks`: unique per process instance, even when pids are reused.
    fn instance_id(&self, process: &ProcessInfo) -> String {
        match process.start_ticks {
            Some(t) => format!("{}:{}:{t}", self.host, process.pid),
            None => format!("{}:{}", self.host, process.pid),
        }
    }

    /// The agent's own resource, for the SDK that reports self-telemetry.
    pub fn agent(&self, service_name: &str) -> opentelemetry_sdk::Resource {
        use opentelemetry::KeyValue;
        let pid = std::process::id();
        let mut attrs = vec![
            KeyValue::new("service.name", service_name.to_string()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", format!("{}:{pid}", self.host)),
            KeyValue::new("process.pid", i64::from(pid)),
            KeyValue::new("process.executable.name", "netsonde"),
            KeyValue::new("host.name", self.host.clone()),
        ];
        for (k, v) in &self.extra {
            if k != "service.name" {
                attrs.push(KeyValue::new(k.clone(), v.clone()));
            }
        }
        opentelemetry_sdk::Resource::builder_empty()
            .with_attributes(attrs)
            .build()
    }
}
