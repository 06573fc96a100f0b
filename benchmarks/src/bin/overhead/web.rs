//! The default run: nginx under (a) saturation (`wrk`, keep-alive) and (b) a fixed rate
//! (`h2load --h1`), once per arm, arms alternating from round to round. With `--baseline`,
//! every arm but `bare` also runs the baseline binary, in the same rounds.

use super::{
    AgentProcess, Arm, Latency, Options, Rotel, Usage, h2load, losses, median, usage_columns,
    usage_text, variants, wrk,
};

/// Indices of `count` variants, each round starting with a different one (see
/// `super::rotation`).
fn rotation(count: usize, round: usize) -> Vec<usize> {
    (0..count).map(|i| (i + round) % count).collect()
}

pub fn run(o: &Options, url: &str, collector: &Rotel) {
    let arms: Vec<(&str, Arm)> = o.arms.iter().map(|&arm| (arm.name(), arm)).collect();
    let variants = variants(o, &arms, |arm| arm != Arm::Bare);
    // (a) Saturation.
    let mut saturation: Vec<(usize, f64, Option<Usage>)> = Vec::new();
    for round in 0..o.rounds {
        for i in rotation(variants.len(), round) {
            let v = &variants[i];
            let agent = AgentProcess::start(v.arm, &v.netsonde, collector);
            let rps = wrk(url, o.secs);
            let usage = agent.map(AgentProcess::stop);
            println!(
                "saturation round {} {:<14} {:>10.0} req/s{}",
                round + 1,
                v.label,
                rps,
                usage_text(usage)
            );
            saturation.push((i, rps, usage));
        }
    }

    // (b) Fixed rate.
    let mut fixed: Vec<(usize, Latency, Option<Usage>)> = Vec::new();
    for round in 0..o.rounds {
        for i in rotation(variants.len(), round) {
            let v = &variants[i];
            let agent = AgentProcess::start(v.arm, &v.netsonde, collector);
            let latency = h2load(url, o.rate, o.secs);
            let usage = agent.map(AgentProcess::stop);
            println!(
                "fixed-rate round {} {:<14} {:>8} req ok, p50 {:>7.1} us, p99 {:>7.1} us, {:.0} req/s{}",
                round + 1,
                v.label,
                latency.ok,
                latency.p50_us,
                latency.p99_us,
                latency.achieved_rps,
                usage_text(usage)
            );
            fixed.push((i, latency, usage));
        }
    }

    let mean = |i: usize| {
        let v: Vec<f64> = saturation
            .iter()
            .filter(|(a, ..)| *a == i)
            .map(|(_, r, _)| *r)
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    // This build's bare and floor arms (NaN when not run).
    let index_of = |arm: Arm| variants.iter().position(|v| v.arm == arm && !v.baseline);
    let (bare, floor) = (
        index_of(Arm::Bare).map_or(f64::NAN, mean),
        index_of(Arm::Floor).map_or(f64::NAN, mean),
    );
    println!(
        "\n## Saturation (wrk, keep-alive), mean of {} rounds",
        o.rounds
    );
    println!("| arm | req/s | vs bare | vs floor | events lost / export items dropped |");
    println!("|---|---:|---:|---:|---:|");
    for (i, variant) in variants.iter().enumerate() {
        let v = mean(i);
        let usages: Vec<Option<Usage>> = saturation
            .iter()
            .filter(|(a, ..)| *a == i)
            .map(|(.., u)| *u)
            .collect();
        println!(
            "| {} | {:.0} | {:.3} | {:.3} | {} |",
            variant.label,
            v,
            v / bare,
            v / floor,
            losses(&usages)
        );
    }

    println!(
        "\n## Fixed rate {} req/s (h2load --h1), median over rounds",
        o.rate
    );
    println!(
        "| arm | p50 latency | p99 latency | achieved req/s | agent CPU | agent RSS | agent peak RSS | events lost / export items dropped |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (i, variant) in variants.iter().enumerate() {
        let rows: Vec<&(usize, Latency, Option<Usage>)> =
            fixed.iter().filter(|(a, _, _)| *a == i).collect();
        let p50 = median(rows.iter().map(|r| r.1.p50_us).collect());
        let p99 = median(rows.iter().map(|r| r.1.p99_us).collect());
        let rps = median(rows.iter().map(|r| r.1.achieved_rps).collect());
        let usages: Vec<Option<Usage>> = rows.iter().map(|r| r.2).collect();
        println!(
            "| {} | {:.1} µs | {:.1} µs | {:.0} | {} |",
            variant.label,
            p50,
            p99,
            rps,
            usage_columns(&usages)
        );
    }
}
