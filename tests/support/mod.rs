//! Harness for tests that run the real agent against real servers and clients on loopback.
//!
//! The agent is the built `netsonde` binary, started with `run` and stopped with SIGINT like a
//! user would; its console output is parsed. Servers are nginx (from Debian) and a small Python
//! HTTP/1.1 server; clients are curl and Python sockets.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::{
    io::{BufRead, BufReader, Read},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, MutexGuard, OnceLock, mpsc},
    thread,
    time::{Duration, Instant},
};

pub mod collector;
pub mod helm;
pub mod kube_api;
pub mod kube_cluster;
pub mod kube_index;
pub mod kube_server;
pub mod netns;
pub mod oap;
pub mod otelcol;
pub mod otlp_json;
pub mod pki;
pub mod pods;
pub mod proxy;
pub mod registry;

pub const NETSONDE: &str = env!("CARGO_BIN_EXE_netsonde");

/// The proxy variables netsonde honours: a machine's own would send the tests' exports to
/// loopback collectors through its proxy. Tests of proxies set them again.
pub fn without_proxies(command: &mut Command) {
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"] {
        command.env_remove(name);
        command.env_remove(name.to_ascii_lowercase());
    }
}

/// Why privileged tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("loading eBPF programs needs root (CI runs these tests as root)".into());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("the kernel has no BTF (/sys/kernel/btf/vmlinux)".into());
    }
    None
}

/// Returns early from a test, saying why, when it cannot run here.
#[macro_export]
macro_rules! require_privileges {
    () => {
        if let Some(why) = support::skip_reason() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// Tests that load eBPF run one at a time: each agent traces every matching process.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The real Python interpreter (not a pyenv shim), so spawned pids are the interpreter's.
pub fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is installed");
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_string()
    })
}

/// The name the kernel gives a process that executed `path`: the file name, cut to 15 bytes
/// (what `--comm` matches).
pub fn comm_of(path: &str) -> String {
    let base = Path::new(path)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    base.chars().take(15).collect()
}

pub fn support_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(name)
}

/// One exchange line of the console output.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub role: String,
    pub pid: u32,
    pub method: String,
    pub target: String,
    pub status: u16,
    pub duration_ms: f64,
    pub client: String,
    pub server: String,
    pub req_body: u64,
    pub resp_body: u64,
    pub incomplete: Option<String>,
    /// gRPC status name and message counts (`?` when unknown), for gRPC calls.
    pub grpc: Option<(String, String, String)>,
    /// Seen as TLS plaintext.
    pub tls: bool,
    /// Packets the kernel layer saw sent and received for the exchange.
    pub packets: Option<(u64, u64)>,
    /// Kernel-layer nanoseconds by layer name.
    pub kernel_ns: Vec<(String, u64)>,
    pub retransmits: u64,
    pub drops: u64,
    pub comm: String,
}

impl Line {
    /// The fields the tests compare exactly.
    pub fn key(&self) -> (String, String, String, u16) {
        (
            self.role.clone(),
            self.method.clone(),
            self.target.clone(),
            self.status,
        )
    }
}

pub fn parse_line(text: &str) -> Option<Line> {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(
            r"^\S+ (server|client) pid=(\d+) (\S+) (\S+) (\d{3}) ([0-9.]+)ms client=(\S+) server=(\S+) req_body=(\d+) resp_body=(\d+)(?: incomplete=(\S+))?(?: grpc_status=(\S+) messages=(\S+)/(\S+))?( tls=true)?(?: packets=(\d+)/(\d+))?(?: kernel_ns=(\S+))?(?: retransmits=(\d+))?(?: drops=(\d+))? comm=(.*)$",
        )
        .unwrap()
    });
    let c = re.captures(text)?;
    Some(Line {
        role: c[1].to_string(),
        pid: c[2].parse().ok()?,
        method: c[3].to_string(),
        target: c[4].to_string(),
        status: c[5].parse().ok()?,
        duration_ms: c[6].parse().ok()?,
        client: c[7].to_string(),
        server: c[8].to_string(),
        req_body: c[9].parse().ok()?,
        resp_body: c[10].parse().ok()?,
        incomplete: c.get(11).map(|m| m.as_str().to_string()),
        grpc: c
            .get(12)
            .map(|s| (s.as_str().to_string(), c[13].to_string(), c[14].to_string())),
        tls: c.get(15).is_some(),
        packets: match (c.get(16), c.get(17)) {
            (Some(s), Some(r)) => Some((s.as_str().parse().ok()?, r.as_str().parse().ok()?)),
            _ => None,
        },
        kernel_ns: c
            .get(18)
            .map(|m| {
                m.as_str()
                    .split(',')
                    .filter_map(|kv| {
                        let (k, v) = kv.split_once(':')?;
                        Some((k.to_string(), v.parse().ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        retransmits: c.get(19).map_or(Some(0), |m| m.as_str().parse().ok())?,
        drops: c.get(20).map_or(Some(0), |m| m.as_str().parse().ok())?,
        comm: c[21].to_string(),
    })
}

/// What an agent run printed.
#[derive(Debug)]
pub struct Capture {
    pub lines: Vec<Line>,
    pub stats: Vec<String>,
    pub stdout: String,
    pub stderr: String,
}

impl Capture {
    /// Exchanges reported for process `pid`, in order.
    pub fn of(&self, pid: u32) -> Vec<&Line> {
        self.lines.iter().filter(|l| l.pid == pid).collect()
    }

    /// (role, method, target, status) of `pid`'s exchanges, sorted.
    pub fn keys_of(&self, pid: u32) -> Vec<(String, String, String, u16)> {
        let mut keys: Vec<_> = self.of(pid).iter().map(|l| l.key()).collect();
        keys.sort();
        keys
    }

    /// (method, target, status) of `pid`'s exchanges, sorted: what a server's access log says
    /// ([`Nginx::access_keys`]).
    pub fn served_by(&self, pid: u32) -> Vec<(String, String, u16)> {
        self.keys_of(pid)
            .into_iter()
            .map(|(_, method, target, status)| (method, target, status))
            .collect()
    }

    /// (role, method, target, status) and response body size of `pid`'s exchanges, in order.
    pub fn exchanges_with_bodies(&self, pid: u32) -> Vec<((String, String, String, u16), u64)> {
        self.of(pid)
            .iter()
            .map(|l| (l.key(), l.resp_body))
            .collect()
    }

    /// The final stats line's value for `name=`.
    pub fn final_stat(&self, name: &str) -> Option<u64> {
        let line = self
            .stats
            .iter()
            .rev()
            .find(|l| l.contains("stats(final)"))?;
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))?
            .parse()
            .ok()
    }
}

/// What a test peer printed per response, `METHOD TARGET STATUS BYTES`, as `role`'s exchange
/// keys with their body sizes (the form of [`Capture::exchanges_with_bodies`]).
#[allow(dead_code)]
pub fn printed_exchanges(role: &str, text: &str) -> Vec<((String, String, String, u16), u64)> {
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 4, "not METHOD TARGET STATUS BYTES: {l:?}");
            (
                key(role, f[0], f[1], f[2].parse().unwrap()),
                f[3].parse().unwrap(),
            )
        })
        .collect()
}

/// The row of `netsonde probes` for the TLS hook `kind` (`tls.go`, `tls.openssl`) on the file
/// at `path`; the whole listing as the error when there is none.
#[allow(dead_code)]
pub fn tls_probe_row(kind: &str, path: &std::path::Path) -> Result<String, String> {
    let probes = std::process::Command::new(NETSONDE)
        .arg("probes")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&probes.stdout);
    let uprobe = format!("uprobe {}", path.display());
    listing
        .lines()
        .find(|l| l.starts_with(kind) && l.contains(&uprobe))
        .map(str::to_string)
        .ok_or_else(|| listing.to_string())
}

/// What a test server printed per answer, `METHOD TARGET STATUS …`, as its exchange keys,
/// sorted (the form of [`Capture::keys_of`]).
#[allow(dead_code)]
pub fn printed_answers<'a>(
    lines: impl Iterator<Item = &'a str>,
) -> Vec<(String, String, String, u16)> {
    let mut keys: Vec<_> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            key("server", f[0], f[1], f[2].parse().unwrap())
        })
        .collect();
    keys.sort();
    keys
}

/// Checks a run of an HTTPS peer pair (tests/support/node_tls.js, go_tls) against what each
/// printed: the client's five exchanges in order with their body sizes, the server's answers,
/// every exchange over TLS, one HTTP/1.1 and one HTTP/2 connection per side (the HTTP/2 found
/// by its preface in the plaintext, the ciphertext never taken for HTTP), nothing dropped.
#[allow(dead_code)]
pub fn assert_https_peers(capture: &Capture, client: (u32, &str), server: (u32, &[String])) {
    let printed = printed_exchanges("client", client.1);
    assert_eq!(printed.len(), 5, "{}", client.1);
    assert_eq!(
        capture.exchanges_with_bodies(client.0),
        printed,
        "{}",
        capture.stdout
    );
    let answered = printed_answers(server.1.iter().map(String::as_str));
    assert_eq!(answered.len(), 5, "{:?}", server.1);
    assert_eq!(capture.keys_of(server.0), answered, "{}", capture.stdout);
    assert!(
        capture.lines.iter().all(|l| l.tls),
        "every exchange went over TLS:\n{}",
        capture.stdout
    );
    assert_eq!(capture.final_stat("h2_connections"), Some(2));
    assert_eq!(capture.final_stat("not_http"), Some(0));
    assert_eq!(capture.final_stat("tls_no_socket"), Some(0));
    // Two connections, both ends TLS on the wire and read in plaintext.
    assert_eq!(capture.final_stat("tls_connections"), Some(4));
    assert_eq!(capture.final_stat("tls_plaintext"), Some(4));
}

pub fn key(role: &str, method: &str, target: &str, status: u16) -> (String, String, String, u16) {
    (
        role.to_string(),
        method.to_string(),
        target.to_string(),
        status,
    )
}

/// A running `netsonde run`.
pub struct Agent {
    child: Child,
    stderr: Arc<Mutex<String>>,
    /// Its standard output, read as it comes: a pipe nobody drains would fill and stall the
    /// agent's console, and with it the whole pipeline back to the kernel's ring buffer.
    stdout: Option<thread::JoinHandle<String>>,
}

impl Agent {
    /// Starts `netsonde run ARGS` and waits until its probes are attached.
    pub fn start(args: &[&str]) -> Agent {
        Self::start_with_env(args, &[])
    }

    /// Starts `netsonde run ARGS` with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut command = Command::new(NETSONDE);
        command.arg("run").args(args);
        without_proxies(&mut command);
        command.envs(env.iter().copied());
        Self::spawn(command)
    }

    /// Starts `WRAPPER… netsonde run ARGS` (a wrapper that execs netsonde, such as setpriv).
    pub fn start_with_wrapper(wrapper: &[&str], args: &[&str]) -> Agent {
        let mut command = Command::new(wrapper[0]);
        command
            .args(&wrapper[1..])
            .arg(NETSONDE)
            .arg("run")
            .args(args);
        without_proxies(&mut command);
        Self::spawn(command)
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn spawn(mut command: Command) -> Agent {
        let mut child = command
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start netsonde");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut out = child.stdout.take().unwrap();
        let stdout = thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let log = stderr.clone();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if line.contains("probes attached") {
                    let _ = ready_tx.send(());
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                return Agent {
                    child,
                    stderr,
                    stdout: Some(stdout),
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "netsonde exited ({status}) before attaching:\n{}",
                    stderr.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "netsonde did not attach in 60 s:\n{}",
                stderr.lock().unwrap()
            );
        }
    }

    /// What it logged so far.
    #[allow(dead_code)]
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until it has logged `what` (ten seconds at most, then fails with its log).
    #[allow(dead_code)]
    pub fn wait_for_log(&self, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !self.stderr().contains(what) {
            assert!(
                std::time::Instant::now() < deadline,
                "never logged {what:?}:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it with SIGINT, as Ctrl-C would, and returns what it printed.
    pub fn stop(mut self) -> Capture {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let stdout = self.stdout.take().unwrap().join().unwrap();
        let status = wait_timeout(&mut self.child, Duration::from_secs(60));
        thread::sleep(Duration::from_millis(50));
        let stderr = self.stderr.lock().unwrap().clone();
        assert!(status.success(), "netsonde exited with {status}:\n{stderr}");
        let lines = stdout.lines().filter_map(parse_line).collect();
        // Stats lines go to stderr when the console exporter is off.
        let stats = stdout
            .lines()
            .filter(|l| l.contains(" stats"))
            .chain(
                stderr
                    .lines()
                    .filter(|l| l.split(' ').nth(1).is_some_and(|w| w.starts_with("stats"))),
            )
            .map(str::to_string)
            .collect();
        Capture {
            lines,
            stats,
            stdout,
            stderr,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Compiles tests/support/NAME.c into `dir` with the system's C compiler, linked with `libs`
/// (`-lssl`: libssl-dev); returns the binary.
pub fn build_c_program(dir: &Path, name: &str, libs: &[&str]) -> PathBuf {
    let binary = dir.join(name);
    let built = Command::new("cc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&binary)
        .arg(support_file(&format!("{name}.c")))
        .args(libs)
        .status()
        .unwrap_or_else(|e| panic!("a C compiler (cc) builds {name}: {e}"));
    assert!(built.success(), "cc failed on {name}.c");
    binary
}

/// Runs a race program of tests/support (close_race.c, tls_close_race.c: a socket closed by
/// one thread while another's call on it waits, and its fd number taken by a new connection)
/// to its end with `args`, then stops `agent`: the program's pid, the lines it printed after
/// its first, and what the agent saw. Its first line must say that the new connection did take
/// the closed socket's fd ("same fd N"), or the race was not run.
pub fn run_fd_race(agent: Agent, program: &Path, args: &[String]) -> (u32, Vec<String>, Capture) {
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // Let the servers see the closes before the agent stops.
    std::thread::sleep(Duration::from_millis(300));
    let capture = agent.stop();
    let printed = String::from_utf8_lossy(&out.stdout);
    let mut lines = printed.lines().map(str::to_string);
    let first = lines.next().unwrap_or_default();
    assert!(
        first.starts_with("same fd ") && !first.ends_with("-1"),
        "the new connection took the closed socket's fd: {printed}"
    );
    (pid, lines.collect(), capture)
}

/// Reads lines (a child's output) until one equals `want`.
pub fn wait_for_line(out: &mut impl BufRead, want: &str) {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "ended before printing {want:?}"
        );
        if line.trim() == want {
            return;
        }
    }
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit in {timeout:?}", child.id());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a client to completion; returns its pid.
pub fn run_client(program: &str, args: &[&str]) -> u32 {
    run_client_env(program, args, &[])
}

/// [`run_client`] with extra environment variables.
pub fn run_client_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> u32 {
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    let pid = child.id();
    let status = wait_timeout(&mut child, Duration::from_secs(60));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        status.success(),
        "{program} {args:?} failed ({status}): {err}"
    );
    pid
}

/// curl with the given arguments (the body goes to /dev/null); returns its pid. A 4xx or 5xx
/// status is not a failure: the tests check statuses themselves.
pub fn curl(args: &[&str]) -> u32 {
    let mut all = vec!["-s", "-S", "-o", "/dev/null"];
    all.extend_from_slice(args);
    run_client("curl", &all)
}

pub fn wait_for_port(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        thread::sleep(Duration::from_millis(20));
    }
}

pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768 and up by default): a port from that range can
    // be taken by any outgoing connection (OAP opens dozens to its database) between this pick
    // and the server's bind. Each pick moves on, so two picks never give the same port.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    loop {
        let step = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(
            step < SPAN,
            "no free port between {FIRST} and {}",
            FIRST + SPAN
        );
        let port = (FIRST + (start + step) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// nginx serving static files on 127.0.0.1 and [::1], one worker.
pub struct Nginx {
    master: Child,
    pub worker: u32,
    pub port: u16,
    /// Serves HTTP/2 without TLS (h2c, prior knowledge).
    pub h2_port: u16,
    /// Serves HTTPS: HTTP/1.1 or HTTP/2 as ALPN decides (a self-signed certificate).
    pub tls_port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start() -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().join("www");
        std::fs::create_dir(&www).unwrap();
        std::fs::write(www.join("index.html"), "<h1>netsonde test page</h1>\n").unwrap();
        std::fs::write(www.join("ka"), "keep-alive\n").unwrap();
        std::fs::write(www.join("big.bin"), vec![b'b'; 1 << 20]).unwrap();
        // Mixed sizes, served with sendfile (`/`) and from memory with writev (`/nosf/`).
        let nosf = www.join("nosf");
        std::fs::create_dir(&nosf).unwrap();
        for size in MIXED_SIZES {
            let body = pseudo_random(size);
            std::fs::write(www.join(format!("s{size}.bin")), &body).unwrap();
            std::fs::write(nosf.join(format!("s{size}.bin")), &body).unwrap();
        }
        let port = free_port();
        let h2_port = free_port();
        let tls_port = free_port();
        let d = dir.path().display();
        let openssl = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(dir.path().join("key.pem"))
            .arg("-out")
            .arg(dir.path().join("cert.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run openssl (apt-get install openssl)");
        assert!(openssl.success(), "openssl req failed");
        let conf = format!(
            "user root;
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {d}/access.log;
    sendfile on;
    keepalive_requests 1000000;
    client_max_body_size 64m;
    if_modified_since before;
    types {{ text/html html; application/octet-stream bin; }}
    server {{
        listen 127.0.0.1:{port};
        listen [::1]:{port};
        listen 127.0.0.1:{h2_port} http2;
        listen 127.0.0.1:{tls_port} ssl http2;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        root {d}/www;
        location = /nocontent {{ return 204; }}
        location = /drop {{ return 444; }}
        location = /unavailable {{ return 503; }}
        location /nosf/ {{ sendfile off; }}
    }}
}}
"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let master = Command::new("nginx")
            .args([
                "-p",
                &d.to_string(),
                "-c",
                "nginx.conf",
                "-e",
                &format!("{d}/error.log"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx (apt-get install nginx-light)");
        wait_for_port(&format!("127.0.0.1:{port}"));
        wait_for_port(&format!("127.0.0.1:{h2_port}"));
        wait_for_port(&format!("127.0.0.1:{tls_port}"));
        let worker = children_of(master.id())
            .into_iter()
            .next()
            .expect("nginx worker");
        Nginx {
            master,
            worker,
            port,
            h2_port,
            tls_port,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn h2_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.h2_port)
    }

    pub fn tls_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.tls_port)
    }

    /// Lines of nginx's access log.
    pub fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// (method, target, status, body bytes sent) of each access-log line, sorted.
    pub fn access_with_bodies(&self) -> Vec<(String, String, u16, u64)> {
        let mut lines: Vec<_> = self
            .access_log()
            .iter()
            .filter_map(|l| {
                // 127.0.0.1 - - [date] "GET /x HTTP/2.0" 200 612 "-" "h2load nghttp2/1.52.0"
                let request = l.split('"').nth(1)?;
                let mut after = l.split('"').nth(2)?.split_whitespace();
                let status = after.next()?.parse().ok()?;
                let body = after.next()?.parse().ok()?;
                let mut parts = request.split(' ');
                let method = parts.next()?.to_string();
                Some((method, parts.next()?.to_string(), status, body))
            })
            .collect();
        lines.sort();
        lines
    }

    /// (method, target, status) of each access-log line, sorted.
    pub fn access_keys(&self) -> Vec<(String, String, u16)> {
        let mut keys: Vec<_> = self
            .access_log()
            .iter()
            .filter_map(|l| {
                // 127.0.0.1 - - [date] "GET /x HTTP/1.1" 200 612 "-" "curl/7.88.1"
                let request = l.split('"').nth(1)?;
                let status = l
                    .split('"')
                    .nth(2)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                let mut parts = request.split(' ');
                Some((parts.next()?.to_string(), parts.next()?.to_string(), status))
            })
            .collect();
        keys.sort();
        keys
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.master.kill();
        let _ = self.master.wait();
        // SAFETY: signalling a process we started.
        unsafe { libc::kill(self.worker as i32, libc::SIGKILL) };
    }
}

/// The gRPC-Go test peer (tests/support/grpc_go), built with the machine's Go; the reason when
/// it cannot be.
pub fn go_grpc_peer() -> Result<PathBuf, String> {
    go_program("grpc_go", ".", &[])
}

/// A Go program of the tests: `package` built by tests/go-programs.sh from the module in
/// tests/support/`module` (its go.sum pins every dependency, fetched from the Go module proxy)
/// with the machine's Go into `target/tmp/go-<module>[-<command>]`, once per test binary. Go's
/// own build cache makes later builds take seconds, and leaves an up-to-date program alone
/// (tests/run.sh builds each there first, so no test waits). The reason when it cannot be
/// built.
pub fn go_program(module: &str, package: &str, tags: &[&str]) -> Result<PathBuf, String> {
    static BUILT: Mutex<Vec<(String, Result<PathBuf, String>)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let name = match package.rsplit('/').next() {
        Some(".") | None => format!("go-{module}"),
        Some(command) => format!("go-{module}-{command}"),
    };
    if let Some((_, done)) = built.iter().find(|(n, _)| *n == name) {
        return done.clone();
    }
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(&name);
    // The script holds the build flags: the same as its own run, or Go would build again.
    let result = Command::new("bash")
        .arg(support_file("../go-programs.sh"))
        .arg("one")
        .arg(&out)
        .args([module, &tags.join(","), package])
        .output()
        .map_err(|e| format!("Go is needed to build tests/support/{module}: {e}"))
        .and_then(|build| {
            if build.status.success() {
                Ok(out)
            } else {
                Err(format!(
                    "building tests/support/{module} failed: {}",
                    String::from_utf8_lossy(&build.stderr)
                ))
            }
        });
    built.push((name, result.clone()));
    result
}

/// Sizes of the `s{size}.bin` files nginx serves: tiny to 1 MiB, across the captured prefix
/// and HTTP/2's 16 KiB frames.
pub const MIXED_SIZES: [usize; 7] = [100, 3_000, 12_000, 30_000, 60_000, 200_000, 1 << 20];

/// `n` bytes that look like a compressed file (no runs a parser could mistake for framing),
/// the same on every run.
pub fn pseudo_random(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            // xorshift64: any fixed, well-mixed sequence will do.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Direct children of a process.
pub fn children_of(pid: u32) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let path = format!("/proc/{pid}/task/{pid}/children");
        let kids: Vec<u32> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if !kids.is_empty() || Instant::now() > deadline {
            return kids;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// tests/support/http_server.py on 127.0.0.1.
pub struct PyServer {
    child: Child,
    pub pid: u32,
    pub port: u16,
}

impl PyServer {
    pub fn start() -> PyServer {
        let mut child = Command::new(python())
            .arg(support_file("http_server.py"))
            .args(["127.0.0.1", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the python test server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("ready ")
            .expect("ready PORT")
            .parse()
            .unwrap();
        PyServer {
            pid: child.id(),
            child,
            port,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
