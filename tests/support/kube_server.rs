//! A real Kubernetes API server for the tests: kube-apiserver and etcd of one pinned release
//! (tests/support/k8s, built from the Go module proxy), started on loopback with TLS, RBAC
//! authorization and service account tokens, and stopped (processes killed, files removed)
//! when dropped. No kubelet, scheduler or controllers run: the tests create pods, Services and
//! EndpointSlices through the API and write pod status (IPs, container ids) through the status
//! subresource, as controllers would.
//!
//! Users: an administrator (a client certificate in the `system:masters` group) that the tests
//! use to create objects, and service accounts whose tokens the agent runs with, bound to
//! whatever roles a test grants (the chart's, or less).

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use kube::{
    Client,
    config::{KubeConfigOptions, Kubeconfig},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};

use super::{free_port, go_program, pki::Pki, pki::openssl};

/// The user the chart's service account is (release and namespace `netsonde`).
pub const AGENT_USER: &str = "system:serviceaccount:netsonde:netsonde";

/// The Service ClusterIP range the API server allocates from.
pub const SERVICE_RANGE: &str = "10.96.0.0/16";

pub struct KubeServer {
    dir: tempfile::TempDir,
    program: PathBuf,
    etcd: Child,
    apiserver: Option<Child>,
    /// More API servers over the same etcd ([`KubeServer::second_apiserver`]).
    others: Vec<Child>,
    etcd_url: String,
    pub port: u16,
    pki: Pki,
}

impl KubeServer {
    /// Starts etcd and kube-apiserver and waits until the API server is ready. The reason when
    /// the program cannot be built (no Go), for the test to say why it skips.
    pub fn start() -> Result<KubeServer, String> {
        let program = go_program("k8s", ".", &[])?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let pki = Pki::with_client(dir.path(), "/O=system:masters/CN=netsonde-test-admin");
        // The key service account tokens are signed with.
        openssl(
            dir.path(),
            &["genrsa", "-out", "service-accounts.key", "2048"],
        );
        openssl(
            dir.path(),
            &[
                "rsa",
                "-in",
                "service-accounts.key",
                "-pubout",
                "-out",
                "service-accounts.pub",
            ],
        );
        std::fs::write(
            dir.path().join("audit-policy.yaml"),
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n\
             rules:\n- level: Metadata\n",
        )
        .map_err(|e| e.to_string())?;
        let (client_port, peer_port) = (free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = Command::new(&program)
            .arg("etcd")
            .arg(format!("--data-dir={}", dir.path().join("etcd").display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=default={peer_url}"))
            .arg("--log-level=warn")
            // The data of a test outlives no test: no need to wait for the disk on each write.
            .arg("--unsafe-no-fsync")
            .stdout(Stdio::null())
            .stderr(log_file(dir.path(), "etcd.log"))
            .spawn()
            .map_err(|e| format!("starting etcd: {e}"))?;
        let mut server = KubeServer {
            port: free_port(),
            dir,
            program,
            etcd,
            apiserver: None,
            others: Vec::new(),
            etcd_url,
            pki,
        };
        server.start_apiserver();
        Ok(server)
    }

    /// Starts the API server on its port and waits until it is ready.
    pub fn start_apiserver(&mut self) {
        let child = self.spawn_apiserver(self.port, "kube-apiserver.log");
        self.apiserver = Some(child);
        let port = self.port;
        self.wait_ready(port, |s| s.apiserver.as_mut());
    }

    /// A kube-apiserver on `port` over this etcd, logging to `log`.
    fn spawn_apiserver(&self, port: u16, log: &str) -> Child {
        let path = |name: &str| self.dir.path().join(name).display().to_string();
        Command::new(&self.program)
            .arg(format!("--etcd-servers={}", self.etcd_url))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            // The `kubernetes` Service's endpoints would name the advertised address, which
            // may not be a loopback one; nothing here needs them.
            .arg("--endpoint-reconciler-type=none")
            .arg(format!("--secure-port={port}"))
            .arg(format!("--tls-cert-file={}", self.pki.server_cert))
            .arg(format!("--tls-private-key-file={}", self.pki.server_key))
            .arg(format!("--client-ca-file={}", self.pki.ca))
            .arg("--authorization-mode=RBAC")
            .arg("--anonymous-auth=false")
            .arg(format!(
                "--service-account-key-file={}",
                path("service-accounts.pub")
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                path("service-accounts.key")
            ))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!("--service-cluster-ip-range={SERVICE_RANGE}"))
            // No controller manager creates each namespace's "default" service account, which
            // this admission plugin would require of every pod.
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg(format!("--cert-dir={}", path("apiserver-certs")))
            // Every request, as the server saw it (user, verb, URI, answer): what the tests
            // read to say what netsonde asked.
            .arg(format!("--audit-policy-file={}", path("audit-policy.yaml")))
            .arg(format!(
                "--audit-log-path={}",
                path(&format!("audit-{port}.log"))
            ))
            .arg("--audit-log-mode=blocking")
            .arg("--v=1")
            .stdout(Stdio::null())
            .stderr(log_file(self.dir.path(), log))
            .spawn()
            .expect("kube-apiserver starts")
    }

    /// Waits for `/readyz` of the server on `port` (etcd reached, RBAC bootstrap roles in
    /// place), failing at once if its process (`child`) exits.
    fn wait_ready(&mut self, port: u16, child: impl Fn(&mut Self) -> Option<&mut Child>) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(Ok(Some(status))) = child(self).map(|c| c.try_wait()) {
                panic!("kube-apiserver exited ({status}): {}", self.log_tail());
            }
            let ready = Command::new("curl")
                .args(["-sf", "-o", "/dev/null", "--cacert", &self.pki.ca])
                .args([
                    "--cert",
                    &self.pki.client_cert,
                    "--key",
                    &self.pki.client_key,
                ])
                .arg(format!("https://127.0.0.1:{port}/readyz"))
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready after 120 s: {}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// A second API server over the same etcd (as in a control plane of several), on its own
    /// port, running until this one is dropped; returns a client of its administrator.
    pub async fn second_apiserver(&mut self) -> Client {
        let port = free_port();
        let child = self.spawn_apiserver(port, "kube-apiserver-2.log");
        self.others.push(child);
        self.wait_ready(port, |s| s.others.last_mut());
        let kubeconfig = self.write_kubeconfig(
            "admin-2.kubeconfig",
            &format!("https://127.0.0.1:{port}"),
            &self.admin_user(),
        );
        client_of(kubeconfig).await
    }

    /// The last lines of the API server's and etcd's logs, for a failing assertion.
    pub fn log_tail(&self) -> String {
        let tail = |name: &str| {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        format!(
            "\n--- kube-apiserver ---\n{}\n--- etcd ---\n{}",
            tail("kube-apiserver.log"),
            tail("etcd.log")
        )
    }

    /// The audit log's events so far (one per request, at its end) of the first API server:
    /// `user.username`, `verb`, `requestURI`, `responseStatus.code`…
    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join(format!("audit-{}.log", self.port)))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The request URIs of `user`'s requests, in order.
    pub fn requests_of(&self, user: &str) -> Vec<String> {
        self.audit()
            .iter()
            .filter(|e| e["user"]["username"] == user)
            .map(|e| {
                format!(
                    "{} {}",
                    e["verb"].as_str().unwrap_or(""),
                    e["requestURI"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Stops the API server (etcd keeps its data) and starts it again on the same port: open
    /// watches end, and clients reconnect to a server whose watch cache starts afresh.
    pub fn restart_apiserver(&mut self) {
        self.stop_apiserver();
        self.start_apiserver();
    }

    /// Stops the API server; [`KubeServer::start_apiserver`] brings it back.
    pub fn stop_apiserver(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Until the port is free, a new server cannot bind it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Compacts etcd's history up to now: a watch resuming from an older resourceVersion (once
    /// outside the API server's watch cache) is answered 410 Gone. Returns the revision.
    pub fn compact(&self) -> u64 {
        let out = Command::new(&self.program)
            .args(["compact", "--endpoint", &self.etcd_url])
            .output()
            .expect("kubeapi compact runs");
        assert!(
            out.status.success(),
            "compact: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    fn admin_user(&self) -> String {
        format!(
            "client-certificate: {}\n    client-key: {}",
            self.pki.client_cert, self.pki.client_key
        )
    }

    /// A kubeconfig with the administrator's client certificate.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.write_kubeconfig("admin.kubeconfig", &self.url(), &self.admin_user())
    }

    /// A kubeconfig with a bearer token (a service account's).
    pub fn token_kubeconfig(&self, name: &str, token: &str) -> PathBuf {
        self.write_kubeconfig(
            &format!("{name}.kubeconfig"),
            &self.url(),
            &format!("token: {token}"),
        )
    }

    fn write_kubeconfig(&self, file: &str, url: &str, user: &str) -> PathBuf {
        let path = self.dir.path().join(file);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    \
             certificate-authority: {}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    \
             user: test\ncurrent-context: test\nusers:\n- name: test\n  user:\n    {user}\n",
            self.pki.ca
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A client acting as the administrator.
    pub async fn admin(&self) -> Client {
        client_of(self.admin_kubeconfig()).await
    }
}

async fn client_of(kubeconfig: PathBuf) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("admin kubeconfig");
    Client::try_from(config).expect("admin client")
}

impl Drop for KubeServer {
    fn drop(&mut self) {
        self.stop_apiserver();
        for mut other in self.others.drain(..) {
            let _ = other.kill();
            let _ = other.wait();
        }
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    std::fs::File::create(dir.join(name))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// The collection URL of an object, from its `apiVersion`, `kind` and namespace.
fn collection_of(object: &Value) -> String {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().expect("kind");
    let plural = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind)).plural;
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{prefix}/namespaces/{ns}/{plural}"),
        None => format!("{prefix}/{plural}"),
    }
}

async fn send(client: &Client, method: &str, url: &str, content_type: &str, body: &Value) -> Value {
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", content_type)
        .body(serde_json::to_vec(body).unwrap())
        .unwrap();
    client
        .request::<Value>(request)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// Creates `object` (its server-set fields dropped; unknown fields refused, as `kubectl
/// --validate=strict` does) and then writes its `status` through the status subresource, as
/// the kubelet or a controller would. Returns the stored object.
pub async fn create(client: &Client, object: &Value) -> Value {
    let mut object = object.clone();
    let status = object.as_object_mut().unwrap().remove("status");
    if let Some(meta) = object["metadata"].as_object_mut() {
        for field in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            meta.remove(field);
        }
    }
    let url = format!("{}?fieldValidation=Strict", collection_of(&object));
    let created = send(client, "POST", &url, "application/json", &object).await;
    match status.filter(|s| s.as_object().is_some_and(|m| !m.is_empty())) {
        Some(status) => patch_status(client, &created, status).await,
        None => created,
    }
}

/// The URL of a stored object.
fn object_url(object: &Value) -> String {
    let name = object["metadata"]["name"].as_str().expect("a named object");
    format!("{}/{name}", collection_of(object))
}

/// Merge-patches `object`'s status.
pub async fn patch_status(client: &Client, object: &Value, status: Value) -> Value {
    let url = format!("{}/status", object_url(object));
    let patch = json!({ "status": status });
    send(
        client,
        "PATCH",
        &url,
        "application/merge-patch+json",
        &patch,
    )
    .await
}

/// Deletes `object`, at once with `grace_seconds` 0 (no kubelet confirms a pod's end), else
/// leaving a pod terminating (its `deletionTimestamp` set) as a node would see it.
pub async fn delete(client: &Client, object: &Value, grace_seconds: u32) {
    let url = object_url(object);
    let options = json!({"apiVersion": "v1", "kind": "DeleteOptions",
                         "gracePeriodSeconds": grace_seconds});
    send(client, "DELETE", &url, "application/json", &options).await;
}

/// Binds an unscheduled pod to `node`, as the scheduler does.
pub async fn bind(client: &Client, pod: &Value, node: &str) {
    let name = pod["metadata"]["name"].as_str().unwrap();
    let url = format!("{}/binding", object_url(pod));
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                         "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    send(client, "POST", &url, "application/json", &binding).await;
}

/// Creates a namespace.
pub async fn namespace(client: &Client, name: &str) {
    create(
        client,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    .await;
}

/// A token of the service account `ns/name`, from the TokenRequest API (what the kubelet
/// mounts into a pod), valid for an hour.
pub async fn service_account_token(client: &Client, ns: &str, name: &str) -> String {
    let url = format!("/api/v1/namespaces/{ns}/serviceaccounts/{name}/token");
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                         "spec": {"expirationSeconds": 3600}});
    let answer = send(client, "POST", &url, "application/json", &request).await;
    answer["status"]["token"]
        .as_str()
        .expect("a token")
        .to_string()
}
