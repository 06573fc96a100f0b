//! The cluster of tests/fixtures/kube in a real API server ([`super::kube_server`]), with the
//! chart's objects applied and a kubeconfig of the chart's service account for the agent.

use std::path::PathBuf;

use kube::Client;
use serde_json::{Value, json};

use super::kube_server::{KubeServer, create, namespace, service_account_token};

/// The fixtures' objects in an order the API server accepts (owners before what they own),
/// without the `default/kubernetes` Service the API server makes itself.
pub fn fixture_objects() -> Vec<Value> {
    let mut objects = Vec::new();
    for file in [
        "nodes.json",
        "replicasets.json",
        "jobs.json",
        "services.json",
        "endpointslices.json",
        "pods.json",
    ] {
        let list = super::kube_api::fixture(file);
        let api_version = list["apiVersion"].clone();
        let kind = list["kind"]
            .as_str()
            .unwrap()
            .trim_end_matches("List")
            .to_string();
        for mut item in list["items"].as_array().unwrap().iter().cloned() {
            if item["metadata"]["namespace"] == "default"
                && item["metadata"]["name"] == "kubernetes"
            {
                continue;
            }
            item["apiVersion"] = api_version.clone();
            item["kind"] = json!(kind);
            objects.push(item);
        }
    }
    objects
}

/// The chart's objects, rendered by the real helm with its default values.
pub fn chart_objects() -> Vec<Value> {
    super::helm::render(&json!({}))
        .iter()
        .map(|r| serde_saphyr::from_str(&r.text).expect("a rendered object"))
        .collect()
}

/// The fixtures' cluster in a real API server, with the chart applied.
pub struct Cluster {
    pub server: KubeServer,
    pub admin: Client,
    /// The agent's kubeconfig: the chart's service account's token.
    pub kubeconfig: PathBuf,
    /// The stored objects (with the UIDs the server gave them).
    pub objects: Vec<Value>,
}

impl Cluster {
    pub fn object(&self, name: &str) -> Value {
        self.objects
            .iter()
            .find(|o| o["metadata"]["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no object {name}"))
    }
}

/// The fixtures' cluster and the chart in a real API server, each object edited by `edit`
/// first (a pod's IP, the chart's ClusterRole…).
pub async fn cluster(server: KubeServer, edit: impl Fn(&mut Value)) -> Cluster {
    let admin = server.admin().await;
    for ns in ["shop", "netsonde"] {
        namespace(&admin, ns).await;
    }
    let mut objects = Vec::new();
    for mut object in fixture_objects() {
        edit(&mut object);
        objects.push(create(&admin, &object).await);
    }
    for mut object in chart_objects() {
        edit(&mut object);
        // Every object of the chart, created with strict field validation: a field the API
        // server does not know fails here.
        create(&admin, &object).await;
    }
    let token = service_account_token(&admin, "netsonde", "netsonde").await;
    let kubeconfig = server.token_kubeconfig("agent", &token);
    Cluster {
        server,
        admin,
        kubeconfig,
        objects,
    }
}
