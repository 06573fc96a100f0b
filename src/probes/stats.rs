//! What netsonde's programs cost, from the kernel's own accounting (BPF run-time statistics:
//! `run_cnt` and `run_time_ns` per program). Statistics are switched on only while measuring:
//! the kernel then times every BPF program run, which costs a little itself.

use std::{collections::BTreeMap, time::Duration};

use aya::programs::loaded_programs;

use super::{attach, catalog, tls};

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error(
        "switching on BPF run-time statistics failed (needs CAP_SYS_ADMIN, Linux 5.8 or later)"
    )]
    Enable {
        #[source]
        source: aya::sys::SyscallError,
    },
    #[error("listing the kernel's BPF programs failed")]
    List {
        #[source]
        source: aya::programs::ProgramError,
    },
}

/// One program's runs over a measurement window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramRuns {
    /// The program's name as the kernel keeps it (15 characters at most).
    pub name: String,
    /// Loaded copies of it (one per running netsonde).
    pub copies: u32,
    pub runs: u64,
    pub run_ns: u64,
}

impl ProgramRuns {
    pub fn ns_per_run(&self) -> f64 {
        if self.runs == 0 {
            0.0
        } else {
            self.run_ns as f64 / self.runs as f64
        }
    }
}

/// The kernel keeps program names to `BPF_OBJ_NAME_LEN - 1` bytes.
fn kernel_name(name: &str) -> String {
    name.chars().take(15).collect()
}

/// Names of every program netsonde attaches, as the kernel shows them.
pub fn program_names() -> Vec<String> {
    let mut names: Vec<String> = catalog::syscall_layer()
        .into_iter()
        .chain(catalog::kernel_layer())
        .flat_map(|p| p.candidates.iter())
        .flat_map(|c| std::iter::once(c.program).chain(c.exit))
        .chain(
            attach::SYSCALL_HOOKS
                .iter()
                .flat_map(|hook| hook.dispatchers.iter().map(|(program, _)| *program)),
        )
        .chain(
            tls::FUNCTIONS
                .iter()
                .flat_map(|(_, entry, exit, _)| [*entry, *exit]),
        )
        .map(kernel_name)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Run totals so far of the loaded programs named in `names`, summed over their copies.
fn snapshot(names: &[String]) -> Result<BTreeMap<String, ProgramRuns>, StatsError> {
    let mut out = BTreeMap::new();
    for info in loaded_programs() {
        let info = info.map_err(|source| StatsError::List { source })?;
        let Some(name) = info.name_as_str() else {
            continue;
        };
        if !names.iter().any(|n| n == name) {
            continue;
        }
        let entry = out.entry(name.to_string()).or_insert(ProgramRuns {
            name: name.to_string(),
            copies: 0,
            runs: 0,
            run_ns: 0,
        });
        entry.copies += 1;
        entry.runs += info.run_count();
        entry.run_ns += info.run_time().as_nanos() as u64;
    }
    Ok(out)
}

/// Measures netsonde's loaded programs (of any running netsonde) for `window`: how often each
/// ran and for how long. Most runs first.
pub fn measure(window: Duration) -> Result<Vec<ProgramRuns>, StatsError> {
    let names = program_names();
    let _enabled = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map_err(|source| StatsError::Enable { source })?;
    let before = snapshot(&names)?;
    std::thread::sleep(window);
    let after = snapshot(&names)?;
    let mut runs: Vec<ProgramRuns> = after
        .into_values()
        .map(|mut p| {
            if let Some(b) = before.get(&p.name) {
                p.runs = p.runs.saturating_sub(b.runs);
                p.run_ns = p.run_ns.saturating_sub(b.run_ns);
            }
            p
        })
        .collect();
    runs.sort_by(|a, b| b.run_ns.cmp(&a.run_ns).then_with(|| a.name.cmp(&b.name)));
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_names_are_the_kernels_and_cover_every_layer() {
        let names = program_names();
        assert!(names.iter().all(|n| n.len() <= 15));
        for expected in [
            "exit_read",
            "net_dev_queue",
            "skb_copy_datagr",
            "tcp_sendmsg_fen",
            "nf_hook_slow_kr",
            "ssl_read_enter",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
        }
    }
}
