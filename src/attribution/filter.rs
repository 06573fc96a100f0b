//! Which processes to trace, by process and by pod: `filter.*` turned into one decision per
//! process. The kernel keeps the answer (the monitored set); this decides it — at start for
//! running processes, at each exec, and for children of traced processes at fork.
//!
//! A process is traced when it passes every rule that is set:
//! - `pids`/`comms`: in a `--pid` tree or named in `comms` (either; neither set passes all);
//! - `exclude_comms`: not named there;
//! - `namespaces`, `pods`, `pod_selector`: in a pod, of one of those namespaces, with a name
//!   matching one of the patterns, with labels the selector matches;
//! - `exclude_namespaces`: not in a pod of those namespaces (processes outside pods pass).

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt as _};

use super::kube::meta::PodMeta;

/// Why a filter cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("filter.pod_selector: {0}")]
    Selector(String),
    #[error("filter.pods: {pattern:?} is not a valid pattern")]
    Pattern {
        pattern: String,
        #[source]
        source: glob::PatternError,
    },
}

/// The process-side facts a decision reads.
#[derive(Debug, Clone, Copy)]
pub struct ProcessFacts<'a> {
    /// `/proc/PID/comm` (at most 15 bytes).
    pub comm: &'a str,
    /// In a `--pid` tree (selected, or a child the kernel inherited).
    pub in_tree: bool,
}

/// What is known of the process's pod.
#[derive(Debug, Clone, Copy)]
pub enum PodFacts<'a> {
    /// Not in a container, or in one outside Kubernetes.
    None,
    /// In a Kubernetes container whose pod the watches do not know (yet).
    Unknown,
    Pod(&'a PodMeta),
}

/// A decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Trace,
    Skip,
    /// It depends on a pod not known yet: ask again when the watches have moved on.
    Wait,
}

/// The rules, compiled.
#[derive(Debug, Clone, Default)]
pub struct ProcessFilter {
    pids: bool,
    comms: Vec<String>,
    exclude_comms: Vec<String>,
    namespaces: Vec<String>,
    exclude_namespaces: Vec<String>,
    pods: Vec<glob::Pattern>,
    selector: Option<Arc<Selector>>,
}

/// The filter settings this module reads (`filter.*`).
#[derive(Debug, Clone, Default)]
pub struct FilterRules<'a> {
    pub pids: &'a [u32],
    pub comms: &'a [String],
    pub exclude_comms: &'a [String],
    pub namespaces: &'a [String],
    pub exclude_namespaces: &'a [String],
    pub pods: &'a [String],
    pub pod_selector: Option<&'a LabelSelector>,
}

impl ProcessFilter {
    pub fn new(rules: &FilterRules<'_>) -> Result<ProcessFilter, FilterError> {
        let selector = rules
            .pod_selector
            .map(|s| Selector::try_from(s.clone()).map_err(|e| FilterError::Selector(e.0)))
            .transpose()?
            .map(Arc::new);
        let pods = rules
            .pods
            .iter()
            .map(|p| {
                glob::Pattern::new(p).map_err(|source| FilterError::Pattern {
                    pattern: p.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ProcessFilter {
            pids: !rules.pids.is_empty(),
            comms: rules.comms.to_vec(),
            exclude_comms: rules.exclude_comms.to_vec(),
            namespaces: rules.namespaces.to_vec(),
            exclude_namespaces: rules.exclude_namespaces.to_vec(),
            pods,
            selector,
        })
    }

    /// Rules on pods (they need the Kubernetes watches).
    pub fn has_pod_rules(&self) -> bool {
        !self.namespaces.is_empty()
            || !self.exclude_namespaces.is_empty()
            || !self.pods.is_empty()
            || self.selector.is_some()
    }

    /// Rules the kernel cannot apply by itself (it knows pids and names, not pods or
    /// exclusions): user space then decides every new program, and the kernel only keeps the
    /// monitored set.
    pub fn user_decides(&self) -> bool {
        self.has_pod_rules() || !self.exclude_comms.is_empty()
    }

    /// Whether any rule is set (else every process is traced).
    pub fn selective(&self) -> bool {
        self.pids || !self.comms.is_empty() || self.user_decides()
    }

    pub fn decide(&self, process: ProcessFacts<'_>, pod: PodFacts<'_>) -> Verdict {
        let named = |list: &[String]| list.iter().any(|c| same_comm(c, process.comm));
        let included = (!self.pids && self.comms.is_empty())
            || (self.pids && process.in_tree)
            || named(&self.comms);
        if !included || named(&self.exclude_comms) {
            return Verdict::Skip;
        }
        if !self.has_pod_rules() {
            return Verdict::Trace;
        }
        let pod = match pod {
            PodFacts::Pod(p) => p,
            PodFacts::Unknown => return Verdict::Wait,
            PodFacts::None => {
                let includes_pods =
                    !self.namespaces.is_empty() || !self.pods.is_empty() || self.selector.is_some();
                return if includes_pods {
                    Verdict::Skip
                } else {
                    Verdict::Trace
                };
            }
        };
        let ns = &*pod.namespace;
        let passes = !self.exclude_namespaces.iter().any(|n| n == ns)
            && (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == ns))
            && (self.pods.is_empty() || self.pods.iter().any(|p| p.matches(&pod.name)))
            && self
                .selector
                .as_ref()
                .is_none_or(|s| s.matches(&pod.labels));
        if passes {
            Verdict::Trace
        } else {
            Verdict::Skip
        }
    }
}

/// The kernel keeps 15 bytes of a name.
fn same_comm(configured: &str, comm: &str) -> bool {
    let cut = |s: &str| s.as_bytes()[..s.len().min(15)].to_vec();
    cut(configured) == cut(comm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::kube::tests::fixture_index;

    fn pod(name: &str) -> Arc<PodMeta> {
        fixture_index()
            .local_pods
            .iter()
            .find(|p| &*p.name == name)
            .cloned()
            .unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const NGINX: ProcessFacts = ProcessFacts {
        comm: "nginx",
        in_tree: false,
    };

    #[test]
    fn no_rules_trace_everything() {
        let f = ProcessFilter::default();
        assert!(!f.selective());
        assert_eq!(f.decide(NGINX, PodFacts::None), Verdict::Trace);
    }

    #[test]
    fn namespaces_pods_and_labels() {
        let web = pod("web-7d4b9c6f5d-x2x9k");
        let proxy = pod("kube-proxy-4xk2p");
        let namespaces = strings(&["shop"]);
        let f = ProcessFilter::new(&FilterRules {
            namespaces: &namespaces,
            ..Default::default()
        })
        .unwrap();
        assert!(f.user_decides() && f.selective());
        assert_eq!(f.decide(NGINX, PodFacts::Pod(&web)), Verdict::Trace);
        assert_eq!(f.decide(NGINX, PodFacts::Pod(&proxy)), Verdict::Skip);
        assert_eq!(
            f.decide(NGINX, PodFacts::None),
            Verdict::Skip,
            "not in a pod"
        );
        assert_eq!(f.decide(NGINX, PodFacts::Unknown), Verdict::Wait);

        let excluded = strings(&["kube-system"]);
        let f = ProcessFilter::new(&FilterRules {
            exclude_namespaces: &excluded,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(f.decide(NGINX, PodFacts::Pod(&web)), Verdict::Trace);
        assert_eq!(f.decide(NGINX, PodFacts::Pod(&proxy)), Verdict::Skip);
        assert_eq!(
            f.decide(NGINX, PodFacts::None),
            Verdict::Trace,
            "host processes pass"
        );

        let patterns = strings(&["web-*"]);
        let f = ProcessFilter::new(&FilterRules {
            pods: &patterns,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(f.decide(NGINX, PodFacts::Pod(&web)), Verdict::Trace);
        assert_eq!(f.decide(NGINX, PodFacts::Pod(&proxy)), Verdict::Skip);

        let selector: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app.kubernetes.io/name": "web"},
            "matchExpressions": [{"key": "pod-template-hash", "operator": "Exists"}]
        }))
        .unwrap();
        let f = ProcessFilter::new(&FilterRules {
            pod_selector: Some(&selector),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(f.decide(NGINX, PodFacts::Pod(&web)), Verdict::Trace);
        assert_eq!(f.decide(NGINX, PodFacts::Pod(&proxy)), Verdict::Skip);
    }

    #[test]
    fn process_rules_come_first() {
        let web = pod("web-7d4b9c6f5d-x2x9k");
        let (comms, excluded, namespaces) =
            (strings(&["nginx"]), strings(&["sh"]), strings(&["shop"]));
        let f = ProcessFilter::new(&FilterRules {
            comms: &comms,
            exclude_comms: &excluded,
            namespaces: &namespaces,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(f.decide(NGINX, PodFacts::Pod(&web)), Verdict::Trace);
        let sh = ProcessFacts {
            comm: "sh",
            in_tree: true,
        };
        assert_eq!(f.decide(sh, PodFacts::Pod(&web)), Verdict::Skip);
        let curl = ProcessFacts {
            comm: "curl",
            in_tree: false,
        };
        assert_eq!(
            f.decide(curl, PodFacts::Unknown),
            Verdict::Skip,
            "no pod needed"
        );
        // A --pid tree or a name: either includes.
        let pids = [42];
        let f = ProcessFilter::new(&FilterRules {
            pids: &pids,
            comms: &comms,
            ..Default::default()
        })
        .unwrap();
        assert!(!f.user_decides(), "the kernel applies these alone");
        let child = ProcessFacts {
            comm: "python3",
            in_tree: true,
        };
        assert_eq!(f.decide(child, PodFacts::None), Verdict::Trace);
        assert_eq!(f.decide(curl, PodFacts::None), Verdict::Skip);
        // Names compare on the kernel's 15 bytes.
        assert!(same_comm("averyveryverylongname", "averyveryverylo"));
    }

    #[test]
    fn bad_rules_are_named() {
        let bad: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchExpressions": [{"key": "tier", "operator": "Sometimes", "values": ["a"]}]
        }))
        .unwrap();
        let e = ProcessFilter::new(&FilterRules {
            pod_selector: Some(&bad),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("filter.pod_selector:"), "{e}");
        let patterns = strings(&["web-[x"]);
        let e = ProcessFilter::new(&FilterRules {
            pods: &patterns,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "filter.pods: \"web-[x\" is not a valid pattern"
        );
    }
}
