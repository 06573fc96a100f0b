//! A Kubernetes API server stand-in on loopback: it serves the recorded lists in
//! tests/fixtures/kube and watch streams the test scripts, over real HTTP/1.1, so netsonde's
//! kube client, watcher and index run exactly as against a cluster. (No API server can run on
//! the test machines; see tests/fixtures/kube/README.md.)
//!
//! What it does like the API server: lists with a `resourceVersion`, `fieldSelector=
//! spec.nodeName=…` on pods, metadata-only answers when the client asks for
//! `PartialObjectMetadata`, chunked watch streams of `{"type","object"}` lines, `ERROR` events
//! (410 Gone), and error statuses. It records every request line for assertions.

use std::{
    collections::{HashMap, VecDeque},
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    sync::{Arc, Condvar, Mutex},
    thread,
    time::Duration,
};

use serde_json::{Value, json};

/// The collections netsonde watches, by API path.
pub const PODS: &str = "/api/v1/pods";
pub const SERVICES: &str = "/api/v1/services";
pub const NODES: &str = "/api/v1/nodes";
pub const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
pub const REPLICASETS: &str = "/apis/apps/v1/replicasets";
pub const JOBS: &str = "/apis/batch/v1/jobs";

pub const ALL: [(&str, &str); 6] = [
    (PODS, "pods.json"),
    (SERVICES, "services.json"),
    (NODES, "nodes.json"),
    (SLICES, "endpointslices.json"),
    (REPLICASETS, "replicasets.json"),
    (JOBS, "jobs.json"),
];

#[derive(Default)]
struct Collection {
    list: Value,
    /// Error statuses to answer the next requests with (any verb), first first.
    failures: VecDeque<u16>,
    /// Event lines for open watches; `None` ends the streams open now.
    events: Vec<Option<String>>,
}

#[derive(Default)]
struct State {
    collections: HashMap<String, Collection>,
    requests: Vec<String>,
}

/// The running stand-in. Dropping it leaves its threads serving until the test exits.
pub struct FakeApi {
    pub addr: SocketAddr,
    state: Arc<(Mutex<State>, Condvar)>,
}

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kube")
}

pub fn fixture(file: &str) -> Value {
    let text = std::fs::read_to_string(fixture_dir().join(file)).expect(file);
    serde_json::from_str(&text).expect("fixture JSON")
}

impl FakeApi {
    /// Serves the recorded fixtures.
    pub fn start() -> FakeApi {
        FakeApi::serve(
            ALL.iter()
                .map(|(path, file)| (path.to_string(), fixture(file)))
                .collect(),
        )
    }

    /// Serves these lists, by collection path.
    pub fn serve(lists: Vec<(String, Value)>) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let mut state = State::default();
        for (path, list) in lists {
            state.collections.insert(
                path,
                Collection {
                    list,
                    ..Default::default()
                },
            );
        }
        let state = Arc::new((Mutex::new(state), Condvar::new()));
        let shared = state.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                thread::spawn(move || serve(stream, &state));
            }
        });
        FakeApi { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig naming this server (no credentials: it checks none).
    pub fn write_kubeconfig(&self, dir: &std::path::Path) -> PathBuf {
        write_kubeconfig(&self.url(), dir)
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (lock, cvar) = &*self.state;
        let r = f(&mut lock.lock().unwrap());
        cvar.notify_all();
        r
    }

    /// Replaces a collection's list (what the next list request returns).
    pub fn set_list(&self, path: &str, list: Value) {
        self.with(|s| s.collections.get_mut(path).unwrap().list = list);
    }

    pub fn list(&self, path: &str) -> Value {
        self.with(|s| s.collections[path].list.clone())
    }

    /// Sends a watch event (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR`) to the open
    /// watches of `path`, and to those opened later.
    pub fn event(&self, path: &str, kind: &str, object: Value) {
        let line = json!({"type": kind, "object": object}).to_string();
        self.with(|s| s.collections.get_mut(path).unwrap().events.push(Some(line)));
    }

    /// A raw line on the watch stream (to send something malformed).
    pub fn raw_event(&self, path: &str, line: &str) {
        self.with(|s| {
            s.collections
                .get_mut(path)
                .unwrap()
                .events
                .push(Some(line.to_string()))
        });
    }

    /// Ends the watch streams of `path` open now (as the API server does at its timeout).
    pub fn end_watches(&self, path: &str) {
        self.with(|s| s.collections.get_mut(path).unwrap().events.push(None));
    }

    /// The next `n` requests for `path` fail with `status`.
    pub fn fail_next(&self, path: &str, status: u16, n: usize) {
        self.with(|s| {
            let c = s.collections.get_mut(path).unwrap();
            c.failures.extend(std::iter::repeat_n(status, n));
        });
    }

    /// Every request line so far (`GET /api/v1/pods?…`).
    pub fn requests(&self) -> Vec<String> {
        self.with(|s| s.requests.clone())
    }

    /// Watch requests for `path` so far. An event reaches only the watches open when it is
    /// sent (as a real API server's events reach a watch started "from now"): a test waits for
    /// the watches it expects before it sends one.
    pub fn watches(&self, path: &str) -> usize {
        self.requests_for(path)
            .iter()
            .filter(|r| r.contains("watch=true"))
            .count()
    }

    /// Requests for `path` so far.
    pub fn requests_for(&self, path: &str) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| r.split(['?', ' ']).nth(1) == Some(path))
            .collect()
    }
}

/// A kubeconfig in `dir` naming the API server at `url`, without credentials.
pub fn write_kubeconfig(url: &str, dir: &std::path::Path) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n\
         contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n\
         current-context: test\nusers:\n- name: test\n  user: {{}}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A URL nothing answers at (a port just bound and released).
pub fn dead_url() -> String {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    drop(socket);
    format!("http://{addr}")
}

/// A 410 Gone watch event, as the API server sends it when a resource version is too old.
pub fn gone() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": "too old resource version: 1 (2000)", "reason": "Expired", "code": 410})
}

/// A bookmark at `rv` for a collection of `kind`.
pub fn bookmark(api_version: &str, kind: &str, rv: &str) -> Value {
    json!({"kind": kind, "apiVersion": api_version,
           "metadata": {"resourceVersion": rv,
                        "annotations": {"k8s.io/initial-events-end": "true"}}})
}

fn serve(stream: TcpStream, state: &Arc<(Mutex<State>, Condvar)>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let request_line = request_line.trim_end().to_string();
    let mut accept = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("accept")
        {
            accept = v.trim().to_string();
        }
    }
    let target = request_line.split(' ').nth(1).unwrap_or("").to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let params: HashMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    let node = params
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("spec.nodeName="))
        .map(str::to_string);
    let metadata_only = accept.contains("as=PartialObjectMetadata");
    let (lock, cvar) = &**state;
    let mut out = stream;
    let (list, failure, seen) = {
        let mut s = lock.lock().unwrap();
        s.requests.push(request_line.clone());
        let Some(c) = s.collections.get_mut(path) else {
            let _ = respond(
                &mut out,
                404,
                &status(404, "NotFound", "no such collection"),
            );
            return;
        };
        (c.list.clone(), c.failures.pop_front(), c.events.len())
    };
    if let Some(code) = failure {
        let reason = match code {
            403 => "Forbidden",
            410 => "Expired",
            500 => "InternalError",
            _ => "ServiceUnavailable",
        };
        let message = match code {
            403 => {
                "pods is forbidden: User \"system:serviceaccount:netsonde:netsonde\" cannot list resource"
            }
            _ => "the server is currently unable to handle the request",
        };
        let _ = respond(&mut out, code, &status(code, reason, message));
        return;
    }
    if params.get("watch").map(String::as_str) != Some("true") {
        let mut list = list;
        if let Some(items) = list.get_mut("items").and_then(Value::as_array_mut) {
            items.retain(|o| on_node(o, node.as_deref()));
            if metadata_only {
                for item in items.iter_mut() {
                    *item = partial(item);
                }
            }
        }
        if metadata_only {
            list["kind"] = json!("PartialObjectMetadataList");
            list["apiVersion"] = json!("meta.k8s.io/v1");
        }
        let _ = respond(&mut out, 200, &list.to_string());
        return;
    }
    // A watch: stream the events sent from now on, until the test ends the streams.
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    let mut next = seen;
    loop {
        let line = {
            let mut s = lock.lock().unwrap();
            loop {
                let events = &s.collections[path].events;
                if next < events.len() {
                    break;
                }
                s = cvar.wait_timeout(s, Duration::from_millis(200)).unwrap().0;
            }
            next += 1;
            s.collections[path].events[next - 1].clone()
        };
        let Some(line) = line else {
            let _ = out.write_all(b"0\r\n\r\n");
            return;
        };
        let line = match serde_json::from_str::<Value>(&line) {
            Ok(mut event) => {
                if event["type"] != "ERROR" && event["type"] != "BOOKMARK" {
                    if !on_node(&event["object"], node.as_deref()) {
                        continue;
                    }
                    if metadata_only {
                        event["object"] = partial(&event["object"]);
                    }
                }
                event.to_string()
            }
            Err(_) => line,
        };
        let chunk = format!("{}\n", line);
        let framed = format!("{:x}\r\n{chunk}\r\n", chunk.len());
        if out.write_all(framed.as_bytes()).is_err() {
            return;
        }
    }
}

fn on_node(object: &Value, node: Option<&str>) -> bool {
    node.is_none_or(|n| object["spec"]["nodeName"].as_str() == Some(n))
}

fn partial(object: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
           "metadata": object["metadata"].clone()})
}

fn status(code: u16, reason: &str, message: &str) -> String {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
    .to_string()
}

fn respond(out: &mut TcpStream, code: u16, body: &str) -> std::io::Result<()> {
    let text = match code {
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        410 => "Gone",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    write!(
        out,
        "HTTP/1.1 {code} {text}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
