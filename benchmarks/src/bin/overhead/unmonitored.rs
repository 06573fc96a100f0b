//! `--unmonitored`: what netsonde costs the syscalls it has no business with. `dd if=/dev/zero
//! of=/dev/null bs=1` makes two syscalls per byte (a read and a write), on no socket. It runs
//! under four arms in alternating rounds:
//!
//! * `bare`: no agent;
//! * `floor`: no-op programs on the same hooks (`run --noop-probes`);
//! * `agent`: netsonde as shipped, every process monitored (dd included, but its fds are no
//!   sockets);
//! * `not mine`: netsonde monitoring only a `sleep` the harness started (`run --pid PID`): dd
//!   is not monitored at all. (`--pid 1` would not do: every process descends from pid 1,
//!   and `--pid` takes a process's descendants too.)
//!
//! With `--baseline`, the baseline binary's floor, agent and not-mine arms run in the same rounds.
//!
//! Reported: dd's time, and the cost per syscall beyond bare and beyond this build's floor
//! (nanoseconds).

use std::{process::Command, time::Instant};

use super::{AgentProcess, Arm, Options, Rotel, median, variants};

/// (name, (the agent's arm, whether it monitors only another process)); `None`: no agent.
const ARMS: [(&str, Option<(Arm, bool)>); 4] = [
    ("bare", None),
    ("floor", Some((Arm::Floor, false))),
    ("agent", Some((Arm::Agent, false))),
    ("not mine", Some((Arm::Agent, true))),
];

pub fn run(o: &Options, collector: &Rotel) {
    let syscalls = 2 * o.dd_count;
    println!(
        "dd if=/dev/zero of=/dev/null bs=1 count={}: {syscalls} syscalls on no socket\n",
        o.dd_count
    );
    // The process the `not mine` arm monitors: no ancestor of dd.
    let mut other = Command::new("sleep").arg("3600").spawn().expect("sleep");
    let other_pid = other.id().to_string();
    let runs = variants(o, &ARMS, |arm| arm.is_some());
    let mut times: Vec<(&str, f64)> = Vec::new();
    for round in 0..o.rounds {
        for i in 0..runs.len() {
            let run = &runs[(i + round) % runs.len()];
            let only_other = run.arm.is_some_and(|(_, only_other)| only_other);
            let extra: &[&str] = if only_other {
                &["--pid", &other_pid]
            } else {
                &[]
            };
            let agent = run
                .arm
                .and_then(|(a, _)| AgentProcess::start_with(a, &run.netsonde, collector, extra));
            let seconds = dd(o.dd_count);
            if let Some(agent) = agent {
                agent.stop();
            }
            println!("round {} {:<17} {seconds:>7.3} s", round + 1, run.label);
            times.push((&run.label, seconds));
        }
    }
    let _ = other.kill();
    let _ = other.wait();
    let of = |name: &str| median(times.iter().filter(|t| t.0 == name).map(|t| t.1).collect());
    let (bare, floor) = (of("bare"), of("floor"));
    let per_syscall = |s: f64, base: f64| (s - base) * 1e9 / syscalls as f64;
    println!(
        "\n## dd, {syscalls} syscalls on no socket, median of {} rounds",
        o.rounds
    );
    println!("| arm | seconds | vs floor | ns per syscall over bare | over the floor |");
    println!("|---|---:|---:|---:|---:|");
    for run in &runs {
        let s = of(&run.label);
        println!(
            "| {} | {s:.3} | {:.2} | {:.0} | {:.0} |",
            run.label,
            s / floor,
            per_syscall(s, bare),
            per_syscall(s, floor)
        );
    }
}

/// Seconds `dd` takes to copy `count` bytes one at a time.
fn dd(count: u64) -> f64 {
    let started = Instant::now();
    let status = Command::new("dd")
        .args(["if=/dev/zero", "of=/dev/null", "bs=1"])
        .arg(format!("count={count}"))
        .stderr(std::process::Stdio::null())
        .status()
        .expect("dd");
    assert!(status.success(), "dd failed");
    started.elapsed().as_secs_f64()
}
