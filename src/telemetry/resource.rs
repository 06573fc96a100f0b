//! Resources: one per observed workload (a process, with its container and pod when it has
//! them), and one for the agent itself.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::{
    attribution::{ProcessInfo, kube::PodIdentity},
    telemetry::otlp::kv,
};

/// What produced the telemetry (semconv `telemetry.sdk.*`): netsonde, which is not the
/// OpenTelemetry SDK, so it names itself, as semconv asks of other SDKs; written in Rust.
const TELEMETRY_SDK: [(&str, &str); 3] = [
    ("telemetry.sdk.name", "netsonde"),
    ("telemetry.sdk.language", "rust"),
    ("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
];

/// Builds resources; holds what every resource shares.
#[derive(Debug, Clone)]
pub struct Resources {
    host: String,
    /// Configured attributes (`export.resource_attributes`, `OTEL_RESOURCE_ATTRIBUTES`).
    extra: BTreeMap<String, String>,
    /// `k8s.cluster.name` (`kubernetes.cluster_name`).
    cluster_name: Option<String>,
}

impl Resources {
    pub fn new(host: String, extra: BTreeMap<String, String>) -> Self {
        Resources {
            host,
            extra,
            cluster_name: None,
        }
    }

    pub fn with_cluster_name(mut self, name: Option<String>) -> Self {
        self.cluster_name = name;
        self
    }

    /// A workload's resource. In a pod, `service.*` follows the OpenTelemetry Kubernetes
    /// conventions and `k8s.*` names the pod and its controllers; otherwise `service.name`
    /// is the executable. Configured `service.*` attributes describe the agent, not the
    /// workloads, so they are left out here; the rest (an environment, a cluster name) apply.
    pub fn workload(&self, process: &ProcessInfo, pod: Option<&PodIdentity>) -> Resource {
        let mut attributes = Vec::with_capacity(24);
        match pod {
            Some(id) => {
                let p = &id.pod;
                attributes.push(kv("service.name", &*id.service.name));
                attributes.push(kv("service.namespace", &*id.service.namespace));
                let skywalking = id.service.skywalking(self.cluster_name.as_deref());
                attributes.push(kv("netsonde.skywalking.service", skywalking));
                if let Some(v) = &id.service.version {
                    attributes.push(kv("service.version", &**v));
                }
                let container = id.container.as_ref().map(|c| &*c.name);
                let instance = match container {
                    Some(c) => format!("{}.{}.{c}", p.namespace, p.name),
                    None => format!("{}.{}", p.namespace, p.name),
                };
                attributes.push(kv("service.instance.id", instance));
                attributes.push(kv("k8s.namespace.name", &*p.namespace));
                attributes.push(kv("k8s.pod.name", &*p.name));
                attributes.push(kv("k8s.pod.uid", &*p.uid));
                if let Some(c) = container {
                    attributes.push(kv("k8s.container.name", c));
                }
                if let Some(node) = &p.node {
                    attributes.push(kv("k8s.node.name", &**node));
                }
                let w = &id.workload;
                for (key, value) in [
                    ("k8s.deployment.name", &w.deployment),
                    ("k8s.replicaset.name", &w.replicaset),
                    ("k8s.statefulset.name", &w.statefulset),
                    ("k8s.daemonset.name", &w.daemonset),
                    ("k8s.cronjob.name", &w.cronjob),
                    ("k8s.job.name", &w.job),
                ] {
                    if let Some(v) = value {
                        attributes.push(kv(key, &**v));
                    }
                }
            }
            None => {
                attributes.push(kv("service.name", &*process.executable_name));
                attributes.push(kv("service.instance.id", self.instance_id(process)));
            }
        }
        if let Some(name) = &self.cluster_name {
            attributes.push(kv("k8s.cluster.name", name.as_str()));
        }
        if let Some(c) = &process.container {
            attributes.push(kv("container.id", c.id.as_str()));
        }
        attributes.push(kv("process.pid", i64::from(process.pid)));
        attributes.push(kv("process.executable.name", &*process.executable_name));
        if let Some(path) = &process.executable_path {
            attributes.push(kv("process.executable.path", &**path));
        }
        attributes.push(kv("host.name", self.host.as_str()));
        for (key, value) in TELEMETRY_SDK {
            attributes.push(kv(key, value));
        }
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
        attrs.extend(TELEMETRY_SDK.map(|(k, v)| KeyValue::new(k, v)));
        if let Some(name) = &self.cluster_name {
            attrs.push(KeyValue::new("k8s.cluster.name", name.clone()));
        }
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

/// `resource` without the attributes of one process (`process.*`): the resource of what all
/// the processes of a container report together.
pub fn without_process(resource: &Resource) -> Resource {
    Resource {
        attributes: resource
            .attributes
            .iter()
            .filter(|a| !a.key.starts_with("process."))
            .cloned()
            .collect(),
        ..resource.clone()
    }
}
