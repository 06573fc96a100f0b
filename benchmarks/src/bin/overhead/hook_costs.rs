//! `--hook-costs`: what each eBPF program costs per run, with no-op bodies (the floor: the
//! kernel's price for calling a program on that hook) and with netsonde's (the agent), under
//! the same saturating load. The numbers are the kernel's own (BPF run-time statistics), read
//! by `netsonde probes --stats` while wrk runs; the difference is netsonde's work per run.

use std::{collections::BTreeMap, process::Command, thread, time::Duration};

use super::{AgentProcess, Arm, Options, Rotel, median, wrk};

/// (runs, ns per run) of each program, from one `probes --stats` table.
fn parse(table: &str) -> BTreeMap<String, (u64, f64)> {
    table
        .lines()
        .skip_while(|l| !l.starts_with("PROGRAM"))
        .skip(1)
        .take_while(|l| !l.starts_with("all programs"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.to_string(),
                (f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?),
            ))
        })
        .collect()
}

pub fn run(o: &Options, url: &str, collector: &Rotel) {
    let measured = o.secs.saturating_sub(2).max(1);
    // Per arm, per program: runs per second and ns per run of each round.
    let mut seen: BTreeMap<(usize, String), Vec<(f64, f64)>> = BTreeMap::new();
    let arms = [Arm::Floor, Arm::Agent];
    for round in 0..o.rounds {
        for (i, arm) in arms.iter().enumerate() {
            let agent = AgentProcess::start(*arm, &o.netsonde, collector);
            let netsonde = o.netsonde.clone();
            let stats = thread::spawn(move || {
                thread::sleep(Duration::from_secs(1));
                let out = Command::new(netsonde)
                    .args(["probes", "--stats", &measured.to_string()])
                    .output()
                    .expect("run netsonde probes --stats");
                String::from_utf8_lossy(&out.stdout).into_owned()
            });
            let rps = wrk(url, o.secs);
            let table = stats.join().unwrap();
            let usage = agent.map(AgentProcess::stop);
            let parsed = parse(&table);
            println!(
                "round {} {:<5} {rps:>10.0} req/s, {} programs ran{}",
                round + 1,
                arm.name(),
                parsed.len(),
                super::usage_text(usage)
            );
            for (name, (runs, ns)) in parsed {
                seen.entry((i, name))
                    .or_default()
                    .push((runs as f64 / measured as f64, ns));
            }
        }
    }
    let names: std::collections::BTreeSet<&String> = seen.keys().map(|(_, n)| n).collect();
    println!(
        "\n| program | runs/s (agent) | floor ns/run | agent ns/run | netsonde's work ns/run |"
    );
    println!("|---|---:|---:|---:|---:|");
    let mut rows: Vec<(f64, String)> = Vec::new();
    for name in names {
        let med = |arm: usize, pick: fn(&(f64, f64)) -> f64| {
            seen.get(&(arm, name.clone()))
                .map(|v| median(v.iter().map(pick).collect()))
        };
        let (Some(floor), Some(agent), Some(rate)) =
            (med(0, |v| v.1), med(1, |v| v.1), med(1, |v| v.0))
        else {
            continue;
        };
        // Loaded but idle under this load (or not attached on this kernel).
        if rate < 1.0 {
            continue;
        }
        rows.push((
            rate * agent,
            format!(
                "| {name} | {rate:.0} | {floor:.0} | {agent:.0} | {:.0} |",
                agent - floor
            ),
        ));
    }
    // Most total time first.
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, row) in rows {
        println!("{row}");
    }
}
