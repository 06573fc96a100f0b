//! Every probe point netsonde uses, and the ways it can be attached, best first.
//!
//! A probe point is something netsonde wants to observe; a candidate is one way of hooking it.
//! At start the candidates are tried in order and the first that attaches wins; why the others
//! failed is kept for `netsonde probes`. The syscall layer exists as tracepoints on every kernel
//! netsonde targets, so each of its points has one candidate.

/// How a candidate hooks the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// A classic tracepoint: `category/name` in tracefs. `args` is how many syscall arguments
    /// the program reads (their layout is checked against tracefs first); `None` when the
    /// program reads no record field.
    Tracepoint {
        category: &'static str,
        name: &'static str,
        args: Option<usize>,
    },
}

impl Hook {
    /// Short method name for reports: "tracepoint".
    pub fn method(&self) -> &'static str {
        match self {
            Hook::Tracepoint { .. } => "tracepoint",
        }
    }

    /// Where it attaches, e.g. `syscalls/sys_enter_read`.
    pub fn target(&self) -> String {
        match self {
            Hook::Tracepoint { category, name, .. } => format!("{category}/{name}"),
        }
    }
}

/// One way to attach a probe point: the program in the eBPF object and its hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub program: &'static str,
    pub hook: Hook,
}

/// Something netsonde observes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbePoint {
    /// Stable name, e.g. `syscall.read.enter`.
    pub name: &'static str,
    /// What is lost when it cannot be attached.
    pub purpose: &'static str,
    /// Exit programs attach before entry programs, so no entry is left waiting for an exit
    /// that was not yet hooked.
    pub phase: Phase,
    pub candidates: &'static [Candidate],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Exit,
    Entry,
}

macro_rules! syscall_pair {
    ($sc:literal, $enter_prog:literal, $exit_prog:literal, $args:literal, $purpose:literal) => {
        [
            ProbePoint {
                name: concat!("syscall.", $sc, ".exit"),
                purpose: $purpose,
                phase: Phase::Exit,
                candidates: &[Candidate {
                    program: $exit_prog,
                    hook: Hook::Tracepoint {
                        category: "syscalls",
                        name: concat!("sys_exit_", $sc),
                        args: Some(0),
                    },
                }],
            },
            ProbePoint {
                name: concat!("syscall.", $sc, ".enter"),
                purpose: $purpose,
                phase: Phase::Entry,
                candidates: &[Candidate {
                    program: $enter_prog,
                    hook: Hook::Tracepoint {
                        category: "syscalls",
                        name: concat!("sys_enter_", $sc),
                        args: Some($args),
                    },
                }],
            },
        ]
    };
}

/// The syscall layer.
pub fn syscall_layer() -> Vec<ProbePoint> {
    let pairs = [
        syscall_pair!(
            "read",
            "enter_read",
            "exit_read",
            2,
            "payload received on sockets (read)"
        ),
        syscall_pair!(
            "write",
            "enter_write",
            "exit_write",
            2,
            "payload sent on sockets (write)"
        ),
        syscall_pair!(
            "readv",
            "enter_readv",
            "exit_readv",
            3,
            "payload received on sockets (readv)"
        ),
        syscall_pair!(
            "writev",
            "enter_writev",
            "exit_writev",
            3,
            "payload sent on sockets (writev)"
        ),
        syscall_pair!(
            "recvfrom",
            "enter_recvfrom",
            "exit_recvfrom",
            4,
            "payload received on sockets (recv, recvfrom)"
        ),
        syscall_pair!(
            "sendto",
            "enter_sendto",
            "exit_sendto",
            2,
            "payload sent on sockets (send, sendto)"
        ),
        syscall_pair!(
            "recvmsg",
            "enter_recvmsg",
            "exit_recvmsg",
            3,
            "payload received on sockets (recvmsg)"
        ),
        syscall_pair!(
            "sendmsg",
            "enter_sendmsg",
            "exit_sendmsg",
            2,
            "payload sent on sockets (sendmsg)"
        ),
        syscall_pair!(
            "recvmmsg",
            "enter_recvmmsg",
            "exit_recvmmsg",
            3,
            "payload received on sockets (recvmmsg)"
        ),
        syscall_pair!(
            "sendmmsg",
            "enter_sendmmsg",
            "exit_sendmmsg",
            3,
            "payload sent on sockets (sendmmsg)"
        ),
        syscall_pair!(
            "sendfile64",
            "enter_sendfile",
            "exit_sendfile",
            1,
            "bytes sent from files (sendfile): body sizes of static files"
        ),
        syscall_pair!(
            "connect",
            "enter_connect",
            "exit_connect",
            1,
            "client connections and their addresses"
        ),
        syscall_pair!(
            "accept",
            "enter_accept_",
            "exit_accept_",
            1,
            "server connections and their addresses (accept)"
        ),
        syscall_pair!(
            "accept4",
            "enter_accept4",
            "exit_accept4",
            1,
            "server connections and their addresses (accept4)"
        ),
    ];
    let mut points: Vec<ProbePoint> = pairs.into_iter().flatten().collect();
    points.push(ProbePoint {
        name: "syscall.close.enter",
        purpose: "connection ends (close), and responses that end at close",
        phase: Phase::Entry,
        candidates: &[Candidate {
            program: "enter_close",
            hook: Hook::Tracepoint {
                category: "syscalls",
                name: "sys_enter_close",
                args: Some(1),
            },
        }],
    });
    points.push(ProbePoint {
        name: "process.fork",
        purpose: "following children of --pid processes from their first syscall",
        phase: Phase::Entry,
        candidates: &[Candidate {
            program: "task_newtask",
            hook: Hook::Tracepoint {
                category: "task",
                name: "task_newtask",
                args: None,
            },
        }],
    });
    points.push(ProbePoint {
        name: "process.exec",
        purpose: "re-applying --comm filters, and hooking TLS libraries, when a process runs a new program",
        phase: Phase::Entry,
        candidates: &[Candidate {
            program: "process_exec",
            hook: Hook::Tracepoint {
                category: "sched",
                name: "sched_process_exec",
                args: None,
            },
        }],
    });
    points.push(ProbePoint {
        name: "process.exit",
        purpose: "connections that end because their process exits",
        phase: Phase::Entry,
        candidates: &[Candidate {
            program: "process_exit",
            hook: Hook::Tracepoint {
                category: "sched",
                name: "sched_process_exit",
                args: None,
            },
        }],
    });
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_has_a_unique_name_and_program() {
        let points = syscall_layer();
        let mut names: Vec<_> = points.iter().map(|p| p.name).collect();
        let mut programs: Vec<_> = points
            .iter()
            .flat_map(|p| p.candidates.iter().map(|c| c.program))
            .collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        programs.sort_unstable();
        programs.dedup();
        assert_eq!(names.len(), n);
        assert_eq!(programs.len(), n);
        assert_eq!(n, 32, "14 syscall pairs, close, fork, exec, exit");
    }
}
