//! `--soak-minutes M`: netsonde as users run it, for a long while. It traces nginx alone and
//! exports spans, logs and metrics over OTLP/gRPC to rotel (default export settings: no disk
//! queue), while h2load sends `--rate` requests/s over 20 keep-alive connections for M minutes;
//! then wrk makes a new connection per request for `--secs` (connection churn). The oracle is
//! nginx's own count (`stub_status`: connections accepted, requests) beside the agent's
//! (connections opened, exchanges) for each phase; also reported: events lost, items dropped
//! by the exporter per signal, the agent's CPU and memory.

use std::{
    io::{Read, Write},
    net::TcpStream,
    thread,
    time::{Duration, Instant},
};

use super::{
    Nginx, Options, Rotel, cpu_ticks, h2load, memory,
    outage::{WatchedAgent, stat},
    status_kib,
};

/// How long the agent is given to take in what a phase sent before it is read.
const SETTLE: Duration = Duration::from_secs(3);
/// How often memory is sampled during the load.
const SAMPLE: Duration = Duration::from_secs(10);

/// nginx's counters (`stub_status`), read with a request of its own (which they include).
#[derive(Clone, Copy, Debug)]
struct NginxCounts {
    accepts: u64,
    requests: u64,
}

/// A phase's counts: nginx's and the agent's.
struct Phase {
    name: String,
    nginx: NginxCounts,
    exchanges: u64,
    opened: u64,
}

pub fn run(o: &Options, nginx: &Nginx, minutes: u64) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("netsonde.yaml");
    std::fs::write(&config, "output:\n  stats_interval_secs: 1\n").unwrap();
    let rotel = Rotel::start_on(None);
    let mut agent = WatchedAgent::start(o, nginx.worker, rotel.port, &config, &[]);
    let url = format!("http://127.0.0.1:{}/index.html", nginx.port);
    println!(
        "soak: {minutes} min at {} req/s (h2load --h1, 20 connections), then {} s of churn (wrk, Connection: close)",
        o.rate, o.secs
    );
    let pid = agent.pid();
    let rss_mib = || status_kib(pid, "VmRSS:") as f64 / 1024.0;
    let idle_rss = rss_mib();
    // The first status request is an exchange the agent sees: it counts on both sides.
    let start = stub_status(nginx.port);
    let ticks = cpu_ticks(pid);
    let began = Instant::now();
    let (rate, secs) = (o.rate, minutes * 60);
    let load_url = url.clone();
    let load = thread::spawn(move || h2load(&load_url, rate, secs));
    let mut peak_rss = idle_rss;
    while !load.is_finished() {
        thread::sleep(SAMPLE.min(Duration::from_secs(secs + 1)));
        peak_rss = peak_rss.max(rss_mib());
    }
    let answered = load.join().unwrap().ok;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (cpu_ticks(pid) - ticks) as f64 / hz / began.elapsed().as_secs_f64() * 100.0;
    thread::sleep(SETTLE);
    let after_soak = stub_status(nginx.port);
    thread::sleep(SETTLE);
    let soak = Phase {
        name: format!("keep-alive, {minutes} min at {rate} req/s"),
        nginx: after_soak.since(start, true),
        exchanges: agent.latest("exchanges").unwrap_or(0),
        opened: agent.latest("opened").unwrap_or(0),
    };
    let rss_after_soak = rss_mib();

    let completed = memory::churn(&url, o.secs);
    thread::sleep(SETTLE);
    let after_churn = stub_status(nginx.port);
    thread::sleep(SETTLE);
    let rss_after_churn = rss_mib();
    let peak_rss = peak_rss.max(rss_after_churn);
    let last = agent.stop();
    let get = |name: &str| stat(&last, name).unwrap_or(u64::MAX);
    let churn = Phase {
        name: format!("churn, {} s", o.secs),
        nginx: after_churn.since(after_soak, false),
        exchanges: get("exchanges") - soak.exchanges,
        opened: get("opened") - soak.opened,
    };

    println!("\nh2load answered {answered} requests; wrk completed {completed}");
    println!("\n## Soak: {minutes} min at {rate} req/s over OTLP, then churn");
    println!(
        "| phase | requests (nginx) | exchanges (agent) | connections (nginx) | opened (agent) |"
    );
    println!("|---|---:|---:|---:|---:|");
    for p in [&soak, &churn] {
        println!(
            "| {} | {} | {} | {} | {} |",
            p.name, p.nginx.requests, p.exchanges, p.nginx.accepts, p.opened
        );
    }
    println!("\n| measure | value |");
    println!("|---|---:|");
    println!("| agent CPU during the soak | {cpu:.1} % of a core |");
    println!(
        "| agent RSS idle / peak / after the soak / after the churn | {idle_rss:.1} / {peak_rss:.1} / {rss_after_soak:.1} / {rss_after_churn:.1} MiB |"
    );
    for name in [
        "lost",
        "export_sent",
        "export_dropped_spans",
        "export_dropped_points",
        "export_dropped_log_records",
        "export_failures",
    ] {
        println!("| {name} at exit | {} |", get(name));
    }
    agent.print_warnings();
}

impl NginxCounts {
    /// What happened since `earlier`, counting the request (and connection) that read
    /// `earlier` when `with_earlier` (the agent saw it), and always the one that read `self`.
    fn since(self, earlier: NginxCounts, with_earlier: bool) -> NginxCounts {
        let one = u64::from(with_earlier);
        NginxCounts {
            accepts: self.accepts - earlier.accepts + one,
            requests: self.requests - earlier.requests + one,
        }
    }
}

/// nginx's `stub_status` at `/nginx_status`, over a connection of its own.
fn stub_status(port: u16) -> NginxCounts {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
    conn.write_all(b"GET /nginx_status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    // "server accepts handled requests\n 16630948 16630948 31070465 \n"
    let numbers: Vec<u64> = text
        .lines()
        .skip_while(|l| !l.starts_with("server accepts"))
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let [accepts, _handled, requests] = numbers[..] else {
        panic!("no stub_status counters in:\n{text}");
    };
    NginxCounts { accepts, requests }
}
