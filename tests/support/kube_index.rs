//! Reading netsonde's Kubernetes index in the watch tests (stand-in and real API server alike).

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use netsonde::attribution::kube::{NamingRules, Peer, Watches};

const RULES: NamingRules = NamingRules { use_labels: true };

/// Waits until `check` holds on the index (the watches run on their own tasks).
pub async fn until(watches: &Watches, what: &str, check: impl Fn(&Watches) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check(watches) {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// This node's pods, by name, sorted.
pub fn local_pod_names(w: &Watches) -> Vec<String> {
    let index = w.index.read().unwrap();
    let mut names: Vec<String> = index
        .local_pods
        .iter()
        .map(|p| p.name.to_string())
        .collect();
    names.sort();
    names
}

/// What the index calls the peer at `ip`: `pod NAME`, `service NAME`, `node NAME`, `outside`.
pub fn peer_name(w: &Watches, ip: &str) -> Option<String> {
    let ip: IpAddr = ip.parse().unwrap();
    let index = w.index.read().unwrap();
    index.peer(ip, RULES).map(|p| match p {
        Peer::Pod { identity, .. } => format!("pod {}", identity.pod.name),
        Peer::Service { service, .. } => format!("service {}", service.name),
        Peer::Node(n) => format!("node {}", n.name),
        Peer::Outside => "outside".into(),
    })
}
