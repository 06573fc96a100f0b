//! `--memory`: does the agent give memory back after a burst? For each binary (this build and
//! `--baseline`), the `agent` arm's RSS idle, right after `--secs` of connection churn (wrk,
//! a new connection per request), and 30 and 60 s after the churn stopped.

use std::{path::Path, process::Command, thread, time::Duration};

use super::{AgentProcess, Arm, Options, Rotel, status_kib};

pub fn run(o: &Options, url: &str, collector: &Rotel) {
    let mut binaries = vec![("this build", o.netsonde.clone())];
    if let Some(baseline) = &o.baseline {
        binaries.insert(0, ("baseline", baseline.clone()));
    }
    println!(
        "churn: wrk -t1 -c32 -d{}s -H 'Connection: close' {url}",
        o.secs
    );
    println!(
        "{:<11} {:>11} {:>13} {:>11} {:>11} {:>12}",
        "binary", "idle MiB", "after churn", "+30 s", "+60 s", "connections"
    );
    for round in 0..o.rounds {
        for (name, binary) in &binaries {
            let row = measure(binary, url, o.secs, collector);
            println!(
                "{:<11} {:>11.1} {:>13.1} {:>11.1} {:>11.1} {:>12}   (round {})",
                name,
                row.idle,
                row.after,
                row.plus30,
                row.plus60,
                row.connections,
                round + 1
            );
        }
    }
}

struct Row {
    idle: f64,
    after: f64,
    plus30: f64,
    plus60: f64,
    connections: u64,
}

fn measure(binary: &Path, url: &str, secs: u64, collector: &Rotel) -> Row {
    let agent = AgentProcess::start(Arm::Agent, binary, collector).expect("an agent arm");
    let pid = agent.child.id();
    let mib = |pid| status_kib(pid, "VmRSS:") as f64 / 1024.0;
    // Settled after start.
    thread::sleep(Duration::from_secs(12));
    let idle = mib(pid);
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
    let connections = text
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .map(|(n, _)| n.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    let after = mib(pid);
    thread::sleep(Duration::from_secs(30));
    let plus30 = mib(pid);
    thread::sleep(Duration::from_secs(30));
    let plus60 = mib(pid);
    agent.stop();
    Row {
        idle,
        after,
        plus30,
        plus60,
        connections,
    }
}
