//! Overhead of netsonde on a loopback web server, three arms measured in alternating rounds in
//! one run:
//!
//! * `bare`  — nginx alone;
//! * `floor` — netsonde with no-op programs on the same hooks (`run --noop-probes`): the
//!   unavoidable cost of hooking those syscalls at all;
//! * `syscalls` — netsonde with the syscall layer only (`capture.kernel_layer: false`): the
//!   kernel layer's cost is `agent` minus this;
//! * `agent` — netsonde as shipped (`run`, every process traced, console output to /dev/null);
//! * `otlp` — the same, exporting spans, logs and metrics over OTLP/gRPC to a real collector
//!   (rotel, discarding what it receives) instead of printing lines;
//! * `outage` — the same, but the collector's port is closed: retries, a full queue, drops.
//!
//! rotel comes from `pip install rotel`; it runs on the same cores as everything else.
//!
//! Two phases: (a) saturation with wrk over keep-alive connections, reporting requests/s;
//! (b) a fixed rate with `h2load --h1 --rps`, reporting per-request latency percentiles from
//! h2load's own log, and the agent's CPU and memory.
//!
//! With `--tls`, nginx serves HTTPS (a self-signed certificate) and both clients speak TLS:
//! the agent arms then also run netsonde's OpenSSL uprobes, in nginx and in the client.
//!
//! With `--go-https PROGRAM`, the same two phases against the Go HTTPS server of
//! tests/support/go_tls instead of nginx: netsonde's Go `crypto/tls` uprobes in the server
//! (and its OpenSSL ones in wrk and h2load).
//!
//! With `--h2-download`, both phases are replaced by downloads of a 1 MiB file over HTTP/2
//! (h2c, `h2load -c4 -m1`), reporting MB/s: reads far past the captured prefix, whose frames
//! the kernel follows piece by piece.
//!
//! With `--h2-mixed`, both phases run over HTTP/2 (h2c, `h2load -c8 -m8`) with responses of
//! mixed sizes (100 B to 60 kB), half sent by nginx with `sendfile` (frame headers by `writev`)
//! and half from memory (`writev` of whole frames): saturation in requests/s, then a fixed rate
//! with the agent's CPU and memory.
//!
//! With `--hook-costs`, the saturation phase runs under the floor and the agent while
//! `netsonde probes --stats` reads the kernel's BPF run-time statistics: each program's cost
//! per run with no-op bodies and with netsonde's, on the same hooks (see `hook_costs.rs`).
//!
//! With `--stopping`, the time from SIGTERM to exit (see `stopping.rs`).
//!
//! With `--unmonitored`, what netsonde costs a process it does not monitor, or syscalls that
//! touch no socket: `dd` copying `--dd-count` bytes one at a time (see `unmonitored.rs`).
//!
//! With `--outage-minutes M`, the agent exports over OTLP with the disk queue while h2load
//! sends `--rate` requests/s; the collector is stopped for M minutes, then started again: how
//! much the queue held, and whether every exchange was delivered once it drained.
//!
//! With `--soak-minutes M`, the agent exports over OTLP while h2load sends `--rate` requests/s
//! for M minutes, then wrk churns connections for `--secs`: nginx's own counts beside the
//! agent's, and what was lost or dropped.
//!
//! Usage (as root, after `cargo build --release`):
//!   cargo run --release -p netsonde-benchmarks --bin overhead -- [--rounds N] [--secs S] [--rate R]
//!       [--arms bare,floor,agent,otlp,outage] [--tls | --go-https PROGRAM] [--h2-download]
//!       [--h2-mixed] [--hook-costs]
//!       [--memory] [--stopping] [--unmonitored [--dd-count N]] [--outage-minutes M]
//!       [--soak-minutes M] [--baseline OTHER/netsonde]

mod h2;
mod hook_costs;
mod memory;
mod outage;
mod soak;
mod stopping;
mod unmonitored;
mod web;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum Arm {
    Bare,
    Floor,
    /// The agent with the syscall layer only (`capture.kernel_layer: false`).
    Syscalls,
    Agent,
    Otlp,
    Outage,
}

impl Arm {
    fn name(self) -> &'static str {
        match self {
            Arm::Bare => "bare",
            Arm::Floor => "floor",
            Arm::Syscalls => "syscalls",
            Arm::Agent => "agent",
            Arm::Otlp => "otlp",
            Arm::Outage => "outage",
        }
    }
}

/// netsonde's overhead on a loopback nginx, arms measured in alternating rounds.
#[derive(clap::Parser)]
struct Options {
    /// Arms to run, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "bare,floor,syscalls,agent,otlp,outage"
    )]
    arms: Vec<Arm>,
    /// Rounds per arm.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Requests per second in the fixed-rate phase.
    #[arg(long, default_value_t = 20_000)]
    rate: u32,
    /// The netsonde binary.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/netsonde"))]
    netsonde: PathBuf,
    /// HTTPS instead of HTTP.
    #[arg(long)]
    tls: bool,
    /// The default run against this Go HTTPS server (tests/support/go_tls, built by
    /// tests/go-programs.sh into target/tmp/go-go_tls) instead of nginx: Go's crypto/tls.
    #[arg(long, value_name = "PROGRAM", conflicts_with_all = ["tls", "h2_download", "h2_mixed", "hook_costs", "memory", "outage_minutes", "soak_minutes", "stopping", "unmonitored"])]
    go_https: Option<PathBuf>,
    /// 1 MiB downloads over h2c instead of both phases.
    #[arg(long, conflicts_with_all = ["h2_mixed", "hook_costs"])]
    h2_download: bool,
    /// Both phases over h2c with responses of mixed sizes.
    #[arg(long, conflicts_with = "hook_costs")]
    h2_mixed: bool,
    /// The programs' own cost per run, from BPF run-time statistics.
    #[arg(long)]
    hook_costs: bool,
    /// RSS idle, after connection churn and a minute later (see memory.rs).
    #[arg(long, conflicts_with_all = ["h2_download", "h2_mixed", "hook_costs"])]
    memory: bool,
    /// A collector outage of this many minutes under `--rate` requests/s, with the disk
    /// queue (see outage.rs).
    #[arg(long, value_name = "MINUTES", conflicts_with_all = ["h2_download", "h2_mixed", "hook_costs", "memory"])]
    outage_minutes: Option<u64>,
    /// A soak of this many minutes under `--rate` requests/s over OTLP, then `--secs` of
    /// connection churn, counted against nginx's own counters (see soak.rs).
    #[arg(long, value_name = "MINUTES", conflicts_with_all = ["h2_download", "h2_mixed", "hook_costs", "memory", "outage_minutes"])]
    soak_minutes: Option<u64>,
    /// Time from SIGTERM to exit, and the perf events held (see stopping.rs).
    #[arg(long, conflicts_with_all = ["h2_download", "h2_mixed", "hook_costs", "memory", "outage_minutes"])]
    stopping: bool,
    /// What a process pays that netsonde does not monitor, or whose syscalls touch no socket:
    /// `dd` copying one byte at a time, timed (see unmonitored.rs).
    #[arg(long, conflicts_with_all = ["h2_download", "h2_mixed", "hook_costs", "memory", "outage_minutes", "soak_minutes", "stopping"])]
    unmonitored: bool,
    /// Bytes `dd` copies, one per read and write, in `--unmonitored`.
    #[arg(long, default_value_t = 3_000_000)]
    dd_count: u64,
    /// Another netsonde binary measured beside --netsonde (the default run, `--memory`,
    /// `--stopping`, `--unmonitored`).
    #[arg(long)]
    baseline: Option<PathBuf>,
}

/// The binaries to measure: `--baseline` first when given, then this build.
fn binaries(o: &Options) -> Vec<(&'static str, PathBuf)> {
    let mut binaries = vec![("this build", o.netsonde.clone())];
    if let Some(baseline) = &o.baseline {
        binaries.insert(0, ("baseline", baseline.clone()));
    }
    binaries
}

/// One arm of one binary, for the modes that put the baseline's arms beside this build's.
struct Variant<T> {
    /// The arm's name, `baseline …` for the baseline binary's.
    label: String,
    netsonde: PathBuf,
    baseline: bool,
    arm: T,
}

/// Each of `arms` (name, arm) for each binary, the baseline's first; an arm that runs no agent
/// (`has_agent`) once, as this build's.
fn variants<T: Copy>(
    o: &Options,
    arms: &[(&str, T)],
    has_agent: impl Fn(T) -> bool,
) -> Vec<Variant<T>> {
    let mut variants = Vec::new();
    for (binary, path) in binaries(o) {
        let baseline = binary == "baseline";
        for &(name, arm) in arms {
            if baseline && !has_agent(arm) {
                continue;
            }
            variants.push(Variant {
                label: if baseline {
                    format!("baseline {name}")
                } else {
                    name.to_string()
                },
                netsonde: path.clone(),
                baseline,
                arm,
            });
        }
    }
    variants
}

fn main() {
    let o = <Options as clap::Parser>::parse();
    // SAFETY: no preconditions.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "run as root: the agent arms load eBPF programs"
    );
    for tool in ["nginx", "wrk", "h2load"] {
        assert!(
            which(tool),
            "{tool} is missing (apt-get install nginx-light wrk nghttp2-client)"
        );
    }
    assert!(
        o.netsonde.exists(),
        "{} is missing: cargo build --release",
        o.netsonde.display()
    );

    let collector = Rotel::start();
    if let Some(program) = &o.go_https {
        let server = GoHttps::start(program);
        let url = format!("https://127.0.0.1:{}/index.html", server.port);
        println!(
            "# netsonde overhead, Go HTTPS ({}), {} rounds x {} s per arm",
            program.display(),
            o.rounds,
            o.secs
        );
        println!("machine: {}", machine());
        println!("Go server pid {}; url {url}\n", server.child.id());
        web::run(&o, &url, &collector);
        return;
    }
    let nginx = Nginx::start(o.tls);
    let scheme = if o.tls { "https" } else { "http" };
    let url = format!("{scheme}://127.0.0.1:{}/index.html", nginx.port);
    println!(
        "# netsonde overhead, {} rounds x {} s per arm",
        o.rounds, o.secs
    );
    println!("machine: {}", machine());
    println!("nginx worker pid {}; url {url}\n", nginx.worker);
    if o.h2_download {
        h2::downloads(&o, &nginx, &collector);
        return;
    }
    if o.h2_mixed {
        h2::mixed(&o, &nginx, &collector);
        return;
    }
    if o.hook_costs {
        hook_costs::run(&o, &url, &collector);
        return;
    }
    if o.stopping {
        stopping::run(&o, &url, &collector);
        return;
    }
    if o.unmonitored {
        unmonitored::run(&o, &collector);
        return;
    }
    if o.memory {
        memory::run(&o, &url, &collector);
        memory::run_idle(&o, &url, &collector);
        return;
    }
    if let Some(minutes) = o.outage_minutes {
        drop(collector);
        outage::run(&o, nginx.worker, &url, minutes);
        return;
    }
    if let Some(minutes) = o.soak_minutes {
        drop(collector);
        soak::run(&o, &nginx, minutes);
        return;
    }

    web::run(&o, &url, &collector);
}

/// Each round starts with a different arm, so drift (thermal, page cache) spreads evenly.
fn rotation(arms: &[Arm], round: usize) -> Vec<Arm> {
    (0..arms.len())
        .map(|i| arms[(i + round) % arms.len()])
        .collect()
}

/// rotel (the Rust OpenTelemetry collector from PyPI) on a free port, discarding what it gets.
struct Rotel {
    child: Child,
    port: u16,
    /// A port nothing listens on (the `outage` arm's endpoint).
    closed_port: u16,
    _dir: tempfile::TempDir,
}

impl Rotel {
    fn start() -> Rotel {
        Self::start_on(None)
    }

    /// rotel on `port` (a free one if `None`).
    fn start_on(port: Option<u16>) -> Rotel {
        let out = Command::new("python3")
            .args([
                "-c",
                "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
            ])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "rotel is missing: pip install rotel==0.0.1a15"
        );
        let binary = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (port, http_port, closed_port) = (port.unwrap_or_else(free), free(), free());
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(binary)
            .arg("start")
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{port}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
            .args(["--exporter", "blackhole"])
            .arg("--pid-file")
            .arg(dir.path().join("rotel.pid"))
            .arg("--log-file")
            .arg(dir.path().join("rotel.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rotel");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "rotel did not start");
            thread::sleep(Duration::from_millis(50));
        }
        Rotel {
            child,
            port,
            closed_port,
            _dir: dir,
        }
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({cpu}), kernel {}", kernel.trim())
}

#[derive(Clone, Copy)]
struct Usage {
    cpu_percent: f64,
    rss_kib: u64,
    peak_rss_kib: u64,
    /// Kernel events lost and export items dropped, from the agent's final stats line: a run
    /// that drops what it should report is cheaper than one that does not, so it is said.
    lost: u64,
    dropped: u64,
    /// The collector's CPU over the same time, for the arms that export to it (it shares the
    /// machine's cores with nginx, wrk and the agent).
    collector_cpu_percent: Option<f64>,
}

/// The agent CPU (median), RSS and peak RSS (largest) columns of a table row, over the rounds'
/// usages (`-` where no agent ran).
fn usage_columns(usages: &[Option<Usage>]) -> String {
    let cpu = median(
        usages
            .iter()
            .filter_map(|u| u.map(|u| u.cpu_percent))
            .collect(),
    );
    let rss = usages.iter().filter_map(|u| u.map(|u| u.rss_kib)).max();
    let peak = usages
        .iter()
        .filter_map(|u| u.map(|u| u.peak_rss_kib))
        .max();
    let mib = |k: Option<u64>| k.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    let cpu = if cpu.is_nan() {
        "-".into()
    } else {
        format!("{cpu:.1} %")
    };
    format!("{cpu} | {} | {} | {}", mib(rss), mib(peak), losses(usages))
}

/// Events lost and export items dropped over the rounds (`-` where no agent ran).
fn losses(usages: &[Option<Usage>]) -> String {
    let ran: Vec<Usage> = usages.iter().flatten().copied().collect();
    if ran.is_empty() {
        return "-".into();
    }
    let lost: u64 = ran.iter().map(|u| u.lost).sum();
    let dropped: u64 = ran.iter().map(|u| u.dropped).sum();
    format!("{lost} / {dropped}")
}

fn usage_text(u: Option<Usage>) -> String {
    u.map_or(String::new(), |u| {
        let collector = u
            .collector_cpu_percent
            .map_or(String::new(), |c| format!(", collector CPU {c:.1} %"));
        format!(
            ", agent CPU {:.1} %, RSS {} KiB (peak {} KiB), lost {}, dropped {}{collector}",
            u.cpu_percent, u.rss_kib, u.peak_rss_kib, u.lost, u.dropped
        )
    })
}

struct AgentProcess {
    child: Child,
    started: Instant,
    ticks_at_start: u64,
    /// The collector the arm exports to, and its CPU ticks when the agent was ready.
    collector: Option<(u32, u64)>,
    /// Reads the agent's stderr; returns its final stats line.
    stderr: thread::JoinHandle<Option<String>>,
}

impl AgentProcess {
    /// Starts the arm's netsonde (none for `bare`) and waits until its probes are attached.
    fn start(arm: Arm, netsonde: &Path, collector: &Rotel) -> Option<AgentProcess> {
        AgentProcess::start_with(arm, netsonde, collector, &[])
    }

    /// As `start`, with more arguments for `run`.
    fn start_with(
        arm: Arm,
        netsonde: &Path,
        collector: &Rotel,
        extra: &[&str],
    ) -> Option<AgentProcess> {
        let mut cmd = Command::new(netsonde);
        cmd.arg("run").args(extra);
        match arm {
            Arm::Bare => return None,
            Arm::Floor => {
                cmd.arg("--noop-probes");
            }
            Arm::Syscalls => {
                let config = std::env::temp_dir().join("netsonde-bench-syscalls.yaml");
                std::fs::write(&config, "capture:\n  kernel_layer: false\n").unwrap();
                cmd.arg("--config").arg(config);
            }
            Arm::Agent => {}
            Arm::Otlp => {
                cmd.args(["--exporter", "otlp", "--otlp-endpoint"])
                    .arg(format!("http://127.0.0.1:{}", collector.port));
            }
            Arm::Outage => {
                cmd.args(["--exporter", "otlp", "--otlp-endpoint"])
                    .arg(format!("http://127.0.0.1:{}", collector.closed_port));
            }
        }
        let mut child = cmd
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let stderr = thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("probes attached") {
                    let _ = tx.send(());
                }
                if line.contains("stats(final)") {
                    last = Some(line);
                }
            }
            last
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("netsonde attached");
        thread::sleep(Duration::from_millis(500));
        let ticks_at_start = cpu_ticks(child.id());
        let collector = matches!(arm, Arm::Otlp).then(|| {
            let pid = collector.child.id();
            (pid, cpu_ticks(pid))
        });
        Some(AgentProcess {
            child,
            started: Instant::now(),
            ticks_at_start,
            collector,
            stderr,
        })
    }

    /// Stops the agent as Kubernetes does (SIGTERM) and returns how long it took to exit.
    fn stop_on_sigterm(mut self) -> Duration {
        let sent = Instant::now();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        sent.elapsed()
    }

    fn stop(mut self) -> Usage {
        let wall = self.started.elapsed().as_secs_f64();
        let ticks = cpu_ticks(self.child.id()) - self.ticks_at_start;
        // SAFETY: no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let collector_cpu_percent = self.collector.map(|(pid, at_start)| {
            100.0 * cpu_ticks(pid).saturating_sub(at_start) as f64 / hz / wall
        });
        let rss_kib = status_kib(self.child.id(), "VmRSS:");
        let peak_rss_kib = status_kib(self.child.id(), "VmHWM:");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let last = self.stderr.join().ok().flatten().unwrap_or_default();
        Usage {
            cpu_percent: 100.0 * ticks as f64 / hz / wall,
            rss_kib,
            peak_rss_kib,
            lost: stat(&last, "lost"),
            dropped: stat(&last, "export_dropped"),
            collector_cpu_percent,
        }
    }
}

/// The value of `key` on a stats line (`… key=N …`), 0 when absent.
fn stat(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields after the comm start at "state" (field 3): utime is field 14, stime 15.
    let get = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

/// Saturation: wrk, one thread, 32 keep-alive connections; returns requests/s.
fn wrk(url: &str, secs: u64) -> f64 {
    let out = Command::new("wrk")
        .args(["-t1", "-c32", &format!("-d{secs}s"), url])
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("Requests/sec:")
                .map(|v| v.trim().parse().unwrap_or(0.0))
        })
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"))
}

#[derive(Clone, Copy)]
struct Latency {
    ok: usize,
    p50_us: f64,
    p99_us: f64,
    achieved_rps: f64,
}

/// Fixed rate: h2load over HTTP/1.1, 20 connections sharing `rate` requests/s; latency from
/// h2load's per-request log.
fn h2load(url: &str, rate: u32, secs: u64) -> Latency {
    const CLIENTS: u32 = 20;
    let log = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("h2load")
        .args([
            "--h1",
            "-t1",
            &format!("-c{CLIENTS}"),
            &format!("--rps={}", rate / CLIENTS),
            &format!("-D{secs}"),
            &format!("--log-file={}", log.path().display()),
            url,
        ])
        .output()
        .expect("run h2load");
    assert!(
        out.status.success(),
        "h2load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(log.path()).unwrap();
    let mut durations: Vec<f64> = Vec::new();
    let mut starts: Vec<u64> = Vec::new();
    for line in text.lines() {
        let mut cols = line.split('\t');
        let (Some(start), Some(status), Some(duration)) = (cols.next(), cols.next(), cols.next())
        else {
            continue;
        };
        if status == "200" {
            durations.push(duration.parse().unwrap_or(0.0));
            starts.push(start.parse().unwrap_or(0));
        }
    }
    durations.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        durations
            .get(((durations.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let span = (starts.iter().max().unwrap_or(&0) - starts.iter().min().unwrap_or(&0)) as f64 / 1e6;
    Latency {
        ok: durations.len(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        achieved_rps: if span > 0.0 {
            durations.len() as f64 / span
        } else {
            0.0
        },
    }
}

struct Nginx {
    master: Child,
    worker: u32,
    port: u16,
    /// HTTP/2 without TLS (prior knowledge), for `--h2-download`.
    h2_port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(tls: bool) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let listen = if tls {
            self_signed(dir.path());
            format!(" ssl; ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem")
        } else {
            String::new()
        };
        std::fs::create_dir(dir.path().join("www")).unwrap();
        std::fs::write(
            dir.path().join("www/index.html"),
            format!("<html><body>{}</body></html>\n", "x".repeat(580)),
        )
        .unwrap();
        std::fs::write(dir.path().join("www/big.bin"), vec![b'b'; 1 << 20]).unwrap();
        std::fs::create_dir(dir.path().join("www/nosf")).unwrap();
        for size in h2::MIXED_SIZES {
            // Any bytes will do; these are not all alike.
            let body: Vec<u8> = (0..size).map(|i| (i * 7 + i / 251) as u8).collect();
            for sub in ["www", "www/nosf"] {
                std::fs::write(dir.path().join(format!("{sub}/s{size}.bin")), &body).unwrap();
            }
        }
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let port = free_port();
        let h2_port = free_port();
        let conf = format!(
            "user root;\nworker_processes 1;\nworker_rlimit_nofile 19000;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 15000; }}\n\
             http {{ access_log off; sendfile on; keepalive_requests 1000000;\n\
             server {{ listen 127.0.0.1:{port}{listen}; root {d}/www;\n\
             location = /nginx_status {{ stub_status; }} }}\n\
             server {{ listen 127.0.0.1:{h2_port} http2; root {d}/www;\n\
             location /nosf/ {{ sendfile off; }} }} }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let master = Command::new("nginx")
            .args([
                "-p",
                &d,
                "-c",
                "nginx.conf",
                "-e",
                &format!("{d}/error.log"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            thread::sleep(Duration::from_millis(20));
        }
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", master.id()))
            .unwrap_or_default();
        let worker = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        Nginx {
            master,
            worker,
            port,
            h2_port,
            _dir: dir,
        }
    }
}

/// A self-signed certificate and its key, `cert.pem` and `key.pem` in `dir`.
fn self_signed(dir: &Path) {
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(ok.success(), "openssl req failed");
}

/// The Go HTTPS server of tests/support/go_tls (`--go-https`), quiet: Go's crypto/tls under
/// the load nginx gets otherwise.
struct GoHttps {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl GoHttps {
    fn start(program: &Path) -> GoHttps {
        let dir = tempfile::tempdir().unwrap();
        self_signed(dir.path());
        let mut child = Command::new(program)
            .arg("server")
            .arg(dir.path().join("cert.pem"))
            .arg(dir.path().join("key.pem"))
            .env("GO_TLS_QUIET", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{} printed {line:?}", program.display()));
        GoHttps {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for GoHttps {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.master.kill();
        let _ = self.master.wait();
        // SAFETY: signalling the worker of the nginx we started.
        unsafe { libc::kill(self.worker as i32, libc::SIGKILL) };
    }
}
