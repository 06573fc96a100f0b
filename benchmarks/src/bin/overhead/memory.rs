//! `--memory`: does the agent give memory back after a burst? For each binary (this build and
//! `--baseline`), the `agent` arm's RSS idle, right after `--secs` of connection churn (wrk,
//! a new connection per request), and 30 and 60 s after the churn stopped; then the same with
//! [`IDLE_CONNECTIONS`] keep-alive connections opened (one request each), held, and closed.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::Command,
    thread,
    time::Duration,
};

use super::{AgentProcess, Arm, Options, Rotel, binaries, status_kib};

pub fn run(o: &Options, url: &str, collector: &Rotel) {
    println!(
        "churn: wrk -t1 -c32 -d{}s -H 'Connection: close' {url}",
        o.secs
    );
    rows(o, url, collector, Load::Churn, "after churn");
}

/// One row per round and binary (the baseline first) for `load`.
fn rows(o: &Options, url: &str, collector: &Rotel, load: Load, after: &str) {
    println!(
        "{:<11} {:>9} {:>12} {:>8} {:>8} {:>10} {:>10} {:>12}",
        "binary", "idle MiB", after, "+30 s", "+60 s", "idle anon", "+60 anon", "connections"
    );
    for round in 0..o.rounds {
        for (name, binary) in binaries(o) {
            let row = measure(&binary, url, o.secs, collector, load);
            println!(
                "{:<11} {:>9.1} {:>12.1} {:>8.1} {:>8.1} {:>10.1} {:>10.1} {:>12}   (round {})",
                name,
                row.idle,
                row.after,
                row.plus30,
                row.plus60,
                row.idle_anon,
                row.plus60_anon,
                row.connections,
                round + 1
            );
        }
    }
}

/// Connections held open in the idle-connections load.
const IDLE_CONNECTIONS: usize = 10_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Load {
    /// wrk, a new connection per request.
    Churn,
    /// [`IDLE_CONNECTIONS`] keep-alive connections, one request each, held 10 s, closed.
    Idle,
}

/// The idle-connections rows, after the churn ones.
pub fn run_idle(o: &Options, url: &str, collector: &Rotel) {
    raise_fd_limit();
    println!(
        "\nidle: {IDLE_CONNECTIONS} keep-alive connections to {url}, one GET each, held 10 s, closed"
    );
    rows(o, url, collector, Load::Idle, "while held");
}

/// Opens the idle connections, each answered once; returns them (closed when dropped).
fn open_idle(url: &str) -> Vec<TcpStream> {
    let authority = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("a host:port");
    let path = format!(
        "/{}",
        url.trim_start_matches("http://")
            .split_once('/')
            .map_or("", |(_, p)| p)
    );
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    let mut held = Vec::with_capacity(IDLE_CONNECTIONS);
    let mut buf = [0u8; 4096];
    for _ in 0..IDLE_CONNECTIONS {
        let mut s = TcpStream::connect(authority).expect("connect to nginx");
        s.write_all(request.as_bytes()).expect("send");
        // One read gets nginx's small answer whole on loopback.
        let _ = s.read(&mut buf).expect("read the answer");
        held.push(s);
    }
    held
}

/// The soft limit on open files up to the hard one (raising the hard one needs
/// CAP_SYS_RESOURCE, which containers often lack).
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_max as usize > IDLE_CONNECTIONS + 100,
        "{IDLE_CONNECTIONS} connections need a higher open-file limit than {}",
        limit.rlim_max
    );
}

struct Row {
    idle: f64,
    after: f64,
    plus30: f64,
    plus60: f64,
    /// Anonymous memory only (the heap), idle and at +60 s: the ring buffer's pages count in
    /// the RSS once touched, but they are the kernel's, allocated at start whatever the load.
    idle_anon: f64,
    plus60_anon: f64,
    connections: u64,
}

fn measure(binary: &Path, url: &str, secs: u64, collector: &Rotel, load: Load) -> Row {
    let agent = AgentProcess::start(Arm::Agent, binary, collector).expect("an agent arm");
    let pid = agent.child.id();
    let mib = |pid| status_kib(pid, "VmRSS:") as f64 / 1024.0;
    let anon = |pid| status_kib(pid, "RssAnon:") as f64 / 1024.0;
    // Settled after start.
    thread::sleep(Duration::from_secs(12));
    let idle = mib(pid);
    let idle_anon = anon(pid);
    let (after, connections) = match load {
        Load::Idle => {
            let held = open_idle(url);
            thread::sleep(Duration::from_secs(10));
            // Read with the connections open; they close as `held` goes, at the end of this arm.
            (mib(pid), held.len() as u64)
        }
        Load::Churn => {
            let connections = churn(url, secs);
            (mib(pid), connections)
        }
    };
    thread::sleep(Duration::from_secs(30));
    let plus30 = mib(pid);
    thread::sleep(Duration::from_secs(30));
    let plus60 = mib(pid);
    let plus60_anon = anon(pid);
    agent.stop();
    Row {
        idle,
        after,
        plus30,
        plus60,
        idle_anon,
        plus60_anon,
        connections,
    }
}

/// wrk making a new connection per request for `secs` (`-c32`, `Connection: close`); returns
/// the requests it completed.
pub(super) fn churn(url: &str, secs: u64) -> u64 {
    let out = Command::new("wrk")
        .args([
            "-t1",
            "-c32",
            &format!("-d{secs}s"),
            "-H",
            "Connection: close",
            url,
        ])
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .map(|(n, _)| n.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}
