//! The HTTP/2 modes: 1 MiB downloads (`--h2-download`) and mixed sizes (`--h2-mixed`), both over
//! h2c against the same nginx.

use std::process::Command;

use super::{
    AgentProcess, Arm, Nginx, Options, Rotel, Usage, median, rotation, usage_columns, usage_text,
};

/// `--h2-download`: MB/s of 1 MiB downloads over h2c, per arm, in alternating rounds.
pub fn downloads(o: &Options, nginx: &Nginx, collector: &Rotel) {
    let url = format!("http://127.0.0.1:{}/big.bin", nginx.h2_port);
    let mut runs: Vec<(Arm, f64, Option<Usage>)> = Vec::new();
    for round in 0..o.rounds {
        for arm in rotation(&o.arms, round) {
            let agent = AgentProcess::start(arm, &o.netsonde, collector);
            let out = Command::new("h2load")
                .args(["-n", "400", "-c", "4", "-m", "1", "-t", "1", &url])
                .output()
                .expect("run h2load");
            let usage = agent.map(AgentProcess::stop);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("400 succeeded"), "h2load: {text}");
            // "finished in 1.23s, 325.20 req/s, 325.27MB/s"
            let mbps: f64 = text
                .lines()
                .find(|l| l.starts_with("finished in"))
                .and_then(|l| l.rsplit(", ").next())
                .and_then(|v| v.trim_end_matches("MB/s").parse().ok())
                .unwrap_or_else(|| panic!("no MB/s in h2load output:\n{text}"));
            println!(
                "h2 download round {} {:<5} {:>8.1} MB/s{}",
                round + 1,
                arm.name(),
                mbps,
                usage_text(usage)
            );
            runs.push((arm, mbps, usage));
        }
    }
    println!(
        "\n## 1 MiB downloads over h2c (h2load -n400 -c4 -m1), mean of {} rounds",
        o.rounds
    );
    println!("| arm | MB/s | vs bare | agent CPU |");
    println!("|---|---:|---:|---:|");
    let mean = |arm: Arm| {
        let v: Vec<f64> = runs.iter().filter(|r| r.0 == arm).map(|r| r.1).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let bare = mean(Arm::Bare);
    for &arm in &o.arms {
        let cpu: Vec<f64> = runs
            .iter()
            .filter(|r| r.0 == arm)
            .filter_map(|r| r.2.map(|u| u.cpu_percent))
            .collect();
        let cpu = if cpu.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1} %", cpu.iter().sum::<f64>() / cpu.len() as f64)
        };
        println!(
            "| {} | {:.1} | {:.3} | {cpu} |",
            arm.name(),
            mean(arm),
            if bare > 0.0 { mean(arm) / bare } else { 0.0 }
        );
    }
}

/// Response sizes of `--h2-mixed`: tiny to four HTTP/2 frames, each from a file (`sendfile`) and
/// from memory (`/nosf/`, `writev`).
pub const MIXED_SIZES: [usize; 5] = [100, 1_000, 3_000, 12_000, 60_000];

fn mixed_urls(nginx: &Nginx) -> Vec<String> {
    MIXED_SIZES
        .iter()
        .flat_map(|size| {
            ["", "nosf/"].map(|dir| format!("http://127.0.0.1:{}/{dir}s{size}.bin", nginx.h2_port))
        })
        .collect()
}

/// Runs h2load over h2c (8 connections, 8 streams each) with `args`; returns requests/s and
/// the requests that succeeded.
fn h2load_h2c(args: &[String], urls: &[String]) -> (f64, u64) {
    let out = Command::new("h2load")
        .args(["-t1", "-c8", "-m8"])
        .args(args)
        .args(urls)
        .output()
        .expect("run h2load");
    let text = String::from_utf8_lossy(&out.stdout);
    // "finished in 10.00s, 15986.73 req/s, 78.29MB/s"
    let rps = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|v| v.trim_end_matches(" req/s").parse().ok())
        .unwrap_or_else(|| panic!("no req/s in h2load output:\n{text}"));
    // "requests: 160000 total, 160000 started, 160000 done, 160000 succeeded, 0 failed, ..."
    let ok = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .and_then(|l| l.split(", ").find(|p| p.ends_with("succeeded")))
        .and_then(|p| p.split(' ').next()?.parse().ok())
        .unwrap_or(0);
    (rps, ok)
}

/// `--h2-mixed`: saturation and a fixed rate over h2c with responses of mixed sizes.
pub fn mixed(o: &Options, nginx: &Nginx, collector: &Rotel) {
    let urls = mixed_urls(nginx);
    let mut saturation: Vec<(Arm, f64)> = Vec::new();
    for round in 0..o.rounds {
        for arm in rotation(&o.arms, round) {
            let agent = AgentProcess::start(arm, &o.netsonde, collector);
            let (rps, _) = h2load_h2c(&[format!("-D{}", o.secs)], &urls);
            let usage = agent.map(AgentProcess::stop);
            println!(
                "h2c saturation round {} {:<8} {:>10.0} req/s{}",
                round + 1,
                arm.name(),
                rps,
                usage_text(usage)
            );
            saturation.push((arm, rps));
        }
    }
    let mut fixed: Vec<(Arm, f64, u64, Option<Usage>)> = Vec::new();
    let total = u64::from(o.rate) * o.secs;
    for round in 0..o.rounds {
        for arm in rotation(&o.arms, round) {
            let agent = AgentProcess::start(arm, &o.netsonde, collector);
            let args = [format!("-n{total}"), format!("--rps={}", o.rate / 8)];
            let (rps, ok) = h2load_h2c(&args, &urls);
            let usage = agent.map(AgentProcess::stop);
            println!(
                "h2c fixed-rate round {} {:<8} {ok} of {total} ok, {rps:.0} req/s{}",
                round + 1,
                arm.name(),
                usage_text(usage)
            );
            fixed.push((arm, rps, ok, usage));
        }
    }
    let mean = |arm: Arm| {
        let v: Vec<f64> = saturation
            .iter()
            .filter(|(a, _)| *a == arm)
            .map(|(_, r)| *r)
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let (bare, floor) = (mean(Arm::Bare), mean(Arm::Floor));
    println!(
        "\n## h2c, mixed sizes (h2load -c8 -m8, {} URLs), saturation, mean of {} rounds",
        urls.len(),
        o.rounds
    );
    println!("| arm | req/s | vs bare | vs floor |");
    println!("|---|---:|---:|---:|");
    for &arm in &o.arms {
        let v = mean(arm);
        let ratio = |base: f64| if base > 0.0 { v / base } else { f64::NAN };
        println!(
            "| {} | {:.0} | {:.3} | {:.3} |",
            arm.name(),
            v,
            ratio(bare),
            ratio(floor)
        );
    }
    println!(
        "\n## h2c, mixed sizes, fixed rate {} req/s, median over rounds",
        o.rate
    );
    println!(
        "| arm | achieved req/s | agent CPU | agent RSS | agent peak RSS | events lost / export items dropped |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for &arm in &o.arms {
        let rows: Vec<_> = fixed.iter().filter(|r| r.0 == arm).collect();
        let rps = median(rows.iter().map(|r| r.1).collect());
        let usages: Vec<Option<Usage>> = rows.iter().map(|r| r.3).collect();
        println!(
            "| {} | {:.0} | {} |",
            arm.name(),
            rps,
            usage_columns(&usages)
        );
    }
}
