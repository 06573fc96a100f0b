//! `--stopping`: how long the agent takes from SIGTERM to exit, for this build and
//! `--baseline`, each `--rounds` times. The `agent` arm (every process traced, console to
//! /dev/null) is started, serves a few requests, and is stopped 3 s later; beside the time,
//! how many perf links it held (classic tracepoints, uprobes, kprobes: the kernel detaches
//! each one after an RCU grace period, under one mutex, so they add up).

use std::{path::Path, process::Command, thread, time::Duration};

use super::{AgentProcess, Arm, Options, Rotel, binaries};

pub fn run(o: &Options, url: &str, collector: &Rotel) {
    println!(
        "{:<11} {:>16} {:>12}",
        "binary", "SIGTERM to exit", "perf links"
    );
    for round in 0..o.rounds {
        for (name, binary) in binaries(o) {
            let (seconds, perf_links) = measure(&binary, url, collector);
            println!(
                "{name:<11} {seconds:>14.2} s {perf_links:>12}   (round {})",
                round + 1
            );
        }
    }
}

fn measure(binary: &Path, url: &str, collector: &Rotel) -> (f64, usize) {
    let agent = AgentProcess::start(Arm::Agent, binary, collector).expect("an agent arm");
    for _ in 0..10 {
        let _ = Command::new("curl")
            .args(["-s", "-o", "/dev/null", url])
            .status();
    }
    thread::sleep(Duration::from_secs(3));
    let perf_links = perf_links(agent.child.id());
    let took = agent.stop_on_sigterm();
    (took.as_secs_f64(), perf_links)
}

/// The process's BPF links of type `perf` (a classic tracepoint, uprobe or kprobe through a
/// perf event), from /proc/PID/fdinfo.
fn perf_links(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter(|info| {
                    info.lines()
                        .any(|l| l.split_whitespace().eq(["link_type:", "perf"]))
                })
                .count()
        })
        .unwrap_or(0)
}
