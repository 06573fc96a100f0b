//! The `kubernetes:` settings, and the two environment variables a DaemonSet sets for them
//! (`NODE_NAME` from the downward API; `KUBERNETES_SERVICE_HOST`, which the kubelet sets in
//! every pod).

use std::{collections::HashMap, path::PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// Whether to use the Kubernetes API: `auto`, `on` or `off` (`true` and `false` too: YAML 1.1
/// tools such as Helm turn an unquoted `on` into `true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KubeMode {
    /// On when running in a pod (`KUBERNETES_SERVICE_HOST` set) or given a kubeconfig.
    #[default]
    Auto,
    On,
    Off,
}

/// Pod, workload and peer attribution from the Kubernetes API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    pub enabled: KubeMode,
    /// A kubeconfig file (an agent outside the cluster); unset: the pod's service account.
    pub kubeconfig: Option<PathBuf>,
    /// This node's name as Kubernetes knows it; unset: `NODE_NAME`, else the host name.
    pub node_name: Option<String>,
    /// `k8s.cluster.name` on every resource (Kubernetes has no API for it).
    pub cluster_name: Option<String>,
    /// The cluster's DNS domain, for Service names in `server.address`.
    pub cluster_domain: String,
    /// Watch the whole cluster's pods, Services, EndpointSlices and nodes to name peers.
    pub peers: bool,
    /// Use the `app.kubernetes.io/{instance,name,version}` labels for `service.*`.
    pub service_name_from_labels: bool,
    /// Seconds to wait at start for this node's pods to be listed before tracing.
    pub startup_wait_secs: u64,
}

/// By hand rather than derived: a value of another type is then named with what the key takes
/// ("expected auto, on or off"), not as an untagged enum no variant matched.
impl<'de> Deserialize<'de> for KubeMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ModeVisitor;
        impl serde::de::Visitor<'_> for ModeVisitor {
            type Value = KubeMode;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("auto, on or off")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<KubeMode, E> {
                Ok(if v { KubeMode::On } else { KubeMode::Off })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KubeMode, E> {
                match v {
                    "auto" => Ok(KubeMode::Auto),
                    "on" | "true" => Ok(KubeMode::On),
                    "off" | "false" => Ok(KubeMode::Off),
                    other => Err(E::custom(format!("{other:?} is not auto, on or off"))),
                }
            }
        }
        deserializer.deserialize_any(ModeVisitor)
    }
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            enabled: KubeMode::Auto,
            kubeconfig: None,
            node_name: None,
            cluster_name: None,
            cluster_domain: "cluster.local".into(),
            peers: true,
            service_name_from_labels: true,
            startup_wait_secs: 5,
        }
    }
}

impl KubernetesConfig {
    /// Fills what the environment knows: the node name (`NODE_NAME`) unless configured, and
    /// `enabled: auto` → on or off.
    pub fn apply_env(&mut self, env: &HashMap<String, String>) {
        let get = |var: &str| env.get(var).map(String::as_str).filter(|v| !v.is_empty());
        // An empty value (a chart's default) is no value.
        for value in [&mut self.node_name, &mut self.cluster_name] {
            if value.as_deref() == Some("") {
                *value = None;
            }
        }
        if self.node_name.is_none() {
            self.node_name = get("NODE_NAME").map(str::to_string);
        }
        if self.enabled == KubeMode::Auto {
            let in_pod = get("KUBERNETES_SERVICE_HOST").is_some();
            self.enabled = if in_pod || self.kubeconfig.is_some() {
                KubeMode::On
            } else {
                KubeMode::Off
            };
        }
    }

    pub fn on(&self) -> bool {
        self.enabled == KubeMode::On
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(path) = &self.kubeconfig
            && path.as_os_str().is_empty()
        {
            return Err(ConfigError::Invalid {
                key: "kubernetes.kubeconfig",
                message: "is empty: give a path or leave it out".into(),
            });
        }
        if self.cluster_domain.is_empty() || self.cluster_domain.starts_with('.') {
            return Err(ConfigError::Invalid {
                key: "kubernetes.cluster_domain",
                message: format!("{:?} is not a DNS domain", self.cluster_domain),
            });
        }
        if self.startup_wait_secs > 300 {
            return Err(ConfigError::Invalid {
                key: "kubernetes.startup_wait_secs",
                message: format!("{} is more than 300", self.startup_wait_secs),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::env;

    #[test]
    fn auto_is_on_in_a_pod_or_with_a_kubeconfig() {
        let mut in_pod = KubernetesConfig::default();
        in_pod.apply_env(&env(&[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("NODE_NAME", "n1"),
        ]));
        assert!(in_pod.on());
        assert_eq!(in_pod.node_name.as_deref(), Some("n1"));

        let mut outside = KubernetesConfig::default();
        outside.apply_env(&env(&[]));
        assert!(!outside.on());

        let mut with_file = KubernetesConfig {
            kubeconfig: Some("/etc/kube/config".into()),
            node_name: Some("configured".into()),
            ..Default::default()
        };
        with_file.apply_env(&env(&[("NODE_NAME", "from-env")]));
        assert!(with_file.on());
        assert_eq!(
            with_file.node_name.as_deref(),
            Some("configured"),
            "the file wins"
        );

        let mut off = KubernetesConfig {
            enabled: KubeMode::Off,
            ..Default::default()
        };
        off.apply_env(&env(&[("KUBERNETES_SERVICE_HOST", "10.96.0.1")]));
        assert!(!off.on());
    }

    #[test]
    fn enabled_reads_words_and_booleans() {
        let read =
            |text: &str| crate::config::Config::from_yaml(text).map(|c| c.kubernetes.enabled);
        assert_eq!(read("kubernetes:\n  enabled: on\n").unwrap(), KubeMode::On);
        assert_eq!(
            read("kubernetes:\n  enabled: true\n").unwrap(),
            KubeMode::On
        );
        assert_eq!(
            read("kubernetes:\n  enabled: \"off\"\n").unwrap(),
            KubeMode::Off
        );
        assert_eq!(read("kubernetes: {}\n").unwrap(), KubeMode::Auto);
        let e = read("kubernetes:\n  enabled: sometimes\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("\"sometimes\" is not auto, on or off"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = KubernetesConfig {
            cluster_domain: ".local".into(),
            ..Default::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .starts_with("config key kubernetes.cluster_domain:")
        );
    }
}
