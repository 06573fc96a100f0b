//! Every probe point netsonde uses, and the ways it can be attached, best first.
//!
//! A probe point is something netsonde wants to observe; a candidate is one way of hooking it.
//! At start the candidates are tried in order and the first that attaches wins; why the others
//! failed is kept for `netsonde probes`. The syscall layer is read at the `sys_enter` and
//! `sys_exit` tracepoints on every kernel netsonde targets: each of its points has a slot in a
//! dispatch table for its syscall number, first the BTF-typed tracepoint's (cheaper: kernel
//! fields are plain loads, see `ebpf/probes/src/regs.rs`), then the raw tracepoint's (for a
//! kernel whose BTF is only a file given with `--btf`).

/// How a candidate hooks the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// A raw tracepoint: the program gets the tracepoint's own arguments, not a record (none
    /// is built for it), and detaches without waiting for an RCU grace period, as a classic
    /// tracepoint's perf event does.
    RawTracepoint { name: &'static str },
    /// One syscall's entry or exit, read at the `sys_enter`/`sys_exit` tracepoint: the
    /// program goes in the dispatch table's slot for the syscall's number on this
    /// architecture. `typed`: the BTF-typed tracepoint's table (`tp_btf`), else the raw
    /// tracepoint's.
    Syscall {
        name: &'static str,
        nr: u32,
        exit: bool,
        typed: bool,
    },
    /// fentry on a kernel function, with the candidate's `exit` program as its fexit.
    FEntry { function: &'static str },
    /// A kprobe on a kernel function, with the candidate's `exit` program as its kretprobe.
    KProbe { function: &'static str },
    /// Read by the socket layer's fentry/fexit programs on `functions` (see
    /// [`socket_layer`]): a syscall point these cover has no program of its own.
    SocketLayer { functions: &'static str },
}

impl Hook {
    /// Short method name for reports: "tp_btf", "raw_tracepoint".
    pub fn method(&self) -> &'static str {
        match self {
            Hook::Syscall { typed: true, .. } => "tp_btf",
            Hook::Syscall { .. } | Hook::RawTracepoint { .. } => "raw_tracepoint",
            Hook::FEntry { .. } | Hook::SocketLayer { .. } => "fentry",
            Hook::KProbe { .. } => "kprobe",
        }
    }

    /// Where it attaches, e.g. `sys_enter[read=0]`, `sched_process_exit`.
    pub fn target(&self) -> String {
        match self {
            Hook::RawTracepoint { name } => (*name).to_string(),
            Hook::Syscall { name, nr, exit, .. } => {
                let at = if *exit { "sys_exit" } else { "sys_enter" };
                format!("{at}[{name}={nr}]")
            }
            Hook::FEntry { function } | Hook::KProbe { function } => (*function).to_string(),
            Hook::SocketLayer { functions } => (*functions).to_string(),
        }
    }
}

/// One way to attach a probe point: the program in the eBPF object and its hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub program: &'static str,
    pub hook: Hook,
    /// The program for the function's return (fexit or kretprobe), if the point times calls.
    pub exit: Option<&'static str>,
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

/// Points netsonde does not start without: the syscalls every exchange passes through.
/// Everything else only adds detail, and a node that lacks it gets the rest.
const REQUIRED: [&str; 5] = [
    "syscall.read.enter",
    "syscall.read.exit",
    "syscall.write.enter",
    "syscall.write.exit",
    "syscall.close.enter",
];

impl ProbePoint {
    pub fn required(&self) -> bool {
        REQUIRED.contains(&self.name)
    }

    /// What reads this point's data when it is not attached, if something else does: nothing
    /// is lost then.
    pub fn fallback(&self) -> Option<&'static str> {
        SOCKET_LAYER
            .iter()
            .any(|p| p.name == self.name)
            .then_some("the syscall tracepoints read this instead")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Exit,
    Entry,
}

/// The two ways of hooking one syscall's entry or exit: the BTF-typed tracepoint's program
/// (`<program>_btf`), then the raw tracepoint's (`<program>`).
macro_rules! syscall_candidates {
    ($sc:literal, $nr:expr, $program:literal, $exit:literal) => {
        &[
            Candidate {
                exit: None,
                program: concat!($program, "_btf"),
                hook: Hook::Syscall {
                    name: $sc,
                    nr: $nr as u32,
                    exit: $exit,
                    typed: true,
                },
            },
            Candidate {
                exit: None,
                program: $program,
                hook: Hook::Syscall {
                    name: $sc,
                    nr: $nr as u32,
                    exit: $exit,
                    typed: false,
                },
            },
        ]
    };
}

macro_rules! syscall_pair {
    ($sc:literal, $nr:expr, $enter_prog:literal, $exit_prog:literal, $purpose:literal) => {
        [
            ProbePoint {
                name: concat!("syscall.", $sc, ".exit"),
                purpose: $purpose,
                phase: Phase::Exit,
                candidates: syscall_candidates!($sc, $nr, $exit_prog, true),
            },
            ProbePoint {
                name: concat!("syscall.", $sc, ".enter"),
                purpose: $purpose,
                phase: Phase::Entry,
                candidates: syscall_candidates!($sc, $nr, $enter_prog, false),
            },
        ]
    };
}

/// The syscall layer.
pub fn syscall_layer() -> Vec<ProbePoint> {
    let pairs = [
        syscall_pair!(
            "read",
            libc::SYS_read,
            "enter_read",
            "exit_read",
            "payload received on sockets (read)"
        ),
        syscall_pair!(
            "write",
            libc::SYS_write,
            "enter_write",
            "exit_write",
            "payload sent on sockets (write)"
        ),
        syscall_pair!(
            "readv",
            libc::SYS_readv,
            "enter_readv",
            "exit_readv",
            "payload received on sockets (readv)"
        ),
        syscall_pair!(
            "writev",
            libc::SYS_writev,
            "enter_writev",
            "exit_writev",
            "payload sent on sockets (writev)"
        ),
        syscall_pair!(
            "recvfrom",
            libc::SYS_recvfrom,
            "enter_recvfrom",
            "exit_recvfrom",
            "payload received on sockets (recv, recvfrom)"
        ),
        syscall_pair!(
            "sendto",
            libc::SYS_sendto,
            "enter_sendto",
            "exit_sendto",
            "payload sent on sockets (send, sendto)"
        ),
        syscall_pair!(
            "recvmsg",
            libc::SYS_recvmsg,
            "enter_recvmsg",
            "exit_recvmsg",
            "payload received on sockets (recvmsg)"
        ),
        syscall_pair!(
            "sendmsg",
            libc::SYS_sendmsg,
            "enter_sendmsg",
            "exit_sendmsg",
            "payload sent on sockets (sendmsg)"
        ),
        syscall_pair!(
            "recvmmsg",
            libc::SYS_recvmmsg,
            "enter_recvmmsg",
            "exit_recvmmsg",
            "payload received on sockets (recvmmsg)"
        ),
        syscall_pair!(
            "sendmmsg",
            libc::SYS_sendmmsg,
            "enter_sendmmsg",
            "exit_sendmmsg",
            "payload sent on sockets (sendmmsg)"
        ),
        syscall_pair!(
            "sendfile64",
            libc::SYS_sendfile,
            "enter_sendfile",
            "exit_sendfile",
            "bytes sent from files (sendfile): body sizes of static files"
        ),
        syscall_pair!(
            "connect",
            libc::SYS_connect,
            "enter_connect",
            "exit_connect",
            "client connections and their addresses"
        ),
        syscall_pair!(
            "accept",
            libc::SYS_accept,
            "enter_accept",
            "exit_accept",
            "server connections and their addresses (accept)"
        ),
        syscall_pair!(
            "accept4",
            libc::SYS_accept4,
            "enter_accept4",
            "exit_accept4",
            "server connections and their addresses (accept4)"
        ),
    ];
    let mut points: Vec<ProbePoint> = pairs.into_iter().flatten().collect();
    points.push(ProbePoint {
        name: "syscall.close.enter",
        purpose: "connection ends (close), and responses that end at close",
        phase: Phase::Entry,
        candidates: syscall_candidates!("close", libc::SYS_close, "enter_close", false),
    });
    // Exits only: they close what was at the fd they return, and only when they succeed.
    points.push(ProbePoint {
        name: "syscall.dup2.exit",
        purpose: "connection ends when dup2 puts another file at a socket's fd",
        phase: Phase::Exit,
        candidates: syscall_candidates!("dup2", libc::SYS_dup2, "exit_dup2", true),
    });
    points.push(ProbePoint {
        name: "syscall.dup3.exit",
        purpose: "connection ends when dup3 puts another file at a socket's fd",
        phase: Phase::Exit,
        candidates: syscall_candidates!("dup3", libc::SYS_dup3, "exit_dup3", true),
    });
    points.push(ProbePoint {
        name: "process.fork",
        purpose: "following children of --pid processes from their first syscall",
        phase: Phase::Entry,
        candidates: &[Candidate {
            exit: None,
            program: "task_newtask",
            hook: Hook::RawTracepoint {
                name: "task_newtask",
            },
        }],
    });
    points.push(ProbePoint {
        name: "process.exec",
        purpose: "re-applying --comm filters, and hooking TLS libraries, when a process runs a new program",
        phase: Phase::Entry,
        candidates: &[Candidate {
            exit: None,
            program: "process_exec",
            hook: Hook::RawTracepoint {
                name: "sched_process_exec",
            },
        }],
    });
    points.push(ProbePoint {
        name: "process.exit",
        purpose: "connections that end because their process exits",
        phase: Phase::Entry,
        candidates: &[Candidate {
            exit: None,
            program: "process_exit",
            hook: Hook::RawTracepoint {
                name: "sched_process_exit",
            },
        }],
    });
    points
}

/// The syscalls the socket layer reads, when all of its points attach: their tracepoint
/// programs are then not attached (processes doing them on files pay nothing).
pub const SOCKET_LAYER_SYSCALLS: [&str; 4] = ["read", "write", "recvfrom", "sendto"];

/// How a syscall point covered by the socket layer is reported (`receive`: a read-like one).
pub fn socket_layer_cover(receive: bool) -> Candidate {
    if receive {
        Candidate {
            program: "inet_recvmsg_fentry",
            hook: Hook::SocketLayer {
                functions: "inet_recvmsg, inet6_recvmsg",
            },
            exit: Some("inet_recvmsg_fexit"),
        }
    } else {
        Candidate {
            program: "inet_sendmsg_fentry",
            hook: Hook::SocketLayer {
                functions: "inet_sendmsg, inet6_sendmsg",
            },
            exit: Some("inet_sendmsg_fexit"),
        }
    }
}

/// An fentry/fexit pair on a socket-layer function.
macro_rules! socket_point {
    ($name:literal, $function:literal, $fentry:literal, $fexit:literal, $purpose:literal) => {
        ProbePoint {
            name: $name,
            purpose: $purpose,
            phase: Phase::Entry,
            candidates: &[Candidate {
                program: $fentry,
                hook: Hook::FEntry {
                    function: $function,
                },
                exit: Some($fexit),
            }],
        }
    };
}

/// Socket-layer capture: `read`, `write`, `recvfrom` and `sendto` on IPv4 and IPv6 sockets,
/// read inside the syscall, so that the same syscalls on anything else are not hooked at all.
/// Used only when all four attach (`ebpf/probes/src/socket_layer.rs`). fentry only: through
/// kprobes, a kprobe and a kretprobe per socket call would replace two tail calls, a trade
/// not measured (the kernels with kprobes here run under emulation).
pub const SOCKET_LAYER: &[ProbePoint] = &[
    socket_point!(
        "socket.receive.ipv4",
        "inet_recvmsg",
        "inet_recvmsg_fentry",
        "inet_recvmsg_fexit",
        "payload received on IPv4 sockets by read and recvfrom, not hooked on other files"
    ),
    socket_point!(
        "socket.receive.ipv6",
        "inet6_recvmsg",
        "inet6_recvmsg_fentry",
        "inet6_recvmsg_fexit",
        "payload received on IPv6 sockets by read and recvfrom, not hooked on other files"
    ),
    socket_point!(
        "socket.send.ipv4",
        "inet_sendmsg",
        "inet_sendmsg_fentry",
        "inet_sendmsg_fexit",
        "payload sent on IPv4 sockets by write and sendto, not hooked on other files"
    ),
    socket_point!(
        "socket.send.ipv6",
        "inet6_sendmsg",
        "inet6_sendmsg_fentry",
        "inet6_sendmsg_fexit",
        "payload sent on IPv6 sockets by write and sendto, not hooked on other files"
    ),
];

/// The syscall point `name` (`syscall.read.enter`) if the socket layer reads it: whether it
/// is a read-like one.
pub fn covered_by_socket_layer(name: &str) -> Option<bool> {
    let syscall = name.strip_prefix("syscall.")?.split('.').next()?;
    SOCKET_LAYER_SYSCALLS
        .contains(&syscall)
        .then_some(matches!(syscall, "read" | "recvfrom"))
}

/// A raw tracepoint of the network layer (which later arguments it passes: see `netlayer`).
const fn traced_at(program: &'static str, name: &'static str) -> Candidate {
    Candidate {
        program,
        hook: Hook::RawTracepoint { name },
        exit: None,
    }
}

/// The network layer under the syscalls: what the kernel did with the packets.
const KERNEL_LAYER: &[ProbePoint] = &[
    ProbePoint {
        name: "net.device.queue",
        purpose: "packets and bytes sent per syscall; start of device-queue time",
        phase: Phase::Entry,
        candidates: &[traced_at("net_dev_queue", "net_dev_queue")],
    },
    ProbePoint {
        name: "net.device.start_xmit",
        purpose: "device-queue (qdisc) time of sent packets",
        phase: Phase::Entry,
        candidates: &[traced_at("net_dev_start_xmit", "net_dev_start_xmit")],
    },
    ProbePoint {
        name: "net.device.enqueue",
        purpose: "packets a qdisc keeps: their record moves to a shared map (else every sent packet's does)",
        phase: Phase::Entry,
        candidates: &[traced_at("qdisc_enqueue", "qdisc_enqueue")],
    },
    ProbePoint {
        name: "net.device.xmit",
        purpose: "driver send time of sent packets",
        phase: Phase::Entry,
        candidates: &[traced_at("net_dev_xmit", "net_dev_xmit")],
    },
    ProbePoint {
        name: "net.receive",
        purpose: "arrival of received packets: start of receive-path time",
        phase: Phase::Entry,
        candidates: &[traced_at("netif_receive_skb", "netif_receive_skb")],
    },
    ProbePoint {
        name: "net.copy_to_user",
        purpose: "packets and bytes received per syscall; receive-path time",
        phase: Phase::Entry,
        candidates: &[traced_at(
            "skb_copy_datagram_iovec",
            "skb_copy_datagram_iovec",
        )],
    },
    ProbePoint {
        name: "tcp.retransmit",
        purpose: "TCP retransmits per connection",
        phase: Phase::Entry,
        candidates: &[traced_at("tcp_retransmit_skb", "tcp_retransmit_skb")],
    },
    ProbePoint {
        name: "net.drop",
        purpose: "dropped packets by reason, per connection and on the node",
        phase: Phase::Entry,
        candidates: &[traced_at("kfree_skb", "kfree_skb")],
    },
    ProbePoint {
        name: "tcp.state",
        purpose: "TCP handshake time of connects; accept-queue time of accepts",
        phase: Phase::Entry,
        candidates: &[traced_at("inet_sock_set_state", "inet_sock_set_state")],
    },
];

/// A kernel function, timed from entry to return: fentry/fexit first, then kprobe/kretprobe
/// (`exit` None: entry only).
macro_rules! function_ladder {
    ($function:literal, $fentry:literal, $fexit:expr, $kprobe:literal, $kretprobe:expr) => {
        &[
            Candidate {
                program: $fentry,
                hook: Hook::FEntry {
                    function: $function,
                },
                exit: $fexit,
            },
            Candidate {
                program: $kprobe,
                hook: Hook::KProbe {
                    function: $function,
                },
                exit: $kretprobe,
            },
        ]
    };
}

/// The layers only kernel functions show (fentry or kprobes).
const FUNCTION_LAYER: &[ProbePoint] = &[
    ProbePoint {
        name: "net.l4.send",
        purpose: "TCP send time (tcp_sendmsg) per syscall",
        phase: Phase::Exit,
        candidates: function_ladder!(
            "tcp_sendmsg",
            "tcp_sendmsg_fentry",
            Some("tcp_sendmsg_fexit"),
            "tcp_sendmsg_kprobe",
            Some("tcp_sendmsg_kretprobe")
        ),
    },
    ProbePoint {
        name: "net.l3.send",
        purpose: "IP send time (__ip_queue_xmit) per syscall",
        phase: Phase::Exit,
        candidates: function_ladder!(
            "__ip_queue_xmit",
            "ip_queue_xmit_fentry",
            Some("ip_queue_xmit_fexit"),
            "ip_queue_xmit_kprobe",
            Some("ip_queue_xmit_kretprobe")
        ),
    },
    ProbePoint {
        name: "net.l3.receive",
        purpose: "IPv4 receive time (ip_rcv) of packets a traced syscall reads",
        phase: Phase::Exit,
        candidates: function_ladder!(
            "ip_rcv",
            "ip_rcv_fentry",
            Some("ip_rcv_fexit"),
            "ip_rcv_kprobe",
            Some("ip_rcv_kretprobe")
        ),
    },
    ProbePoint {
        name: "net.l4.receive",
        purpose: "TCP receive time (tcp_v4_rcv) of packets a traced syscall reads",
        phase: Phase::Exit,
        candidates: function_ladder!(
            "tcp_v4_rcv",
            "tcp_v4_rcv_fentry",
            Some("tcp_v4_rcv_fexit"),
            "tcp_v4_rcv_kprobe",
            Some("tcp_v4_rcv_kretprobe")
        ),
    },
    ProbePoint {
        name: "net.netfilter",
        purpose: "netfilter time and hook runs (nf_hook_slow), sending and receiving",
        phase: Phase::Exit,
        candidates: function_ladder!(
            "nf_hook_slow",
            "nf_hook_slow_fentry",
            Some("nf_hook_slow_fexit"),
            "nf_hook_slow_kprobe",
            Some("nf_hook_slow_kretprobe")
        ),
    },
    ProbePoint {
        name: "net.arp",
        purpose: "neighbour (ARP/NDP) resolution count and wait (neigh_resolve_output)",
        phase: Phase::Entry,
        candidates: function_ladder!(
            "neigh_resolve_output",
            "neigh_resolve_output_fentry",
            None,
            "neigh_resolve_output_kprobe",
            None
        ),
    },
];

/// The network layer's points.
pub fn kernel_layer() -> Vec<ProbePoint> {
    KERNEL_LAYER.iter().chain(FUNCTION_LAYER).copied().collect()
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
        assert_eq!(
            n, 34,
            "14 syscall pairs, close, dup2, dup3, fork, exec, exit"
        );
        // Each syscall point: its BTF-typed program, then its raw one.
        assert_eq!(programs.len(), 2 * 31 + 3);
        for point in points.iter().filter(|p| p.name.starts_with("syscall.")) {
            let [typed, raw] = point.candidates else {
                panic!("{}: {:?}", point.name, point.candidates);
            };
            assert!(
                matches!(typed.hook, Hook::Syscall { typed: true, .. })
                    && matches!(raw.hook, Hook::Syscall { typed: false, .. })
                    && typed.program == format!("{}_btf", raw.program),
                "{}: {typed:?} {raw:?}",
                point.name
            );
        }
    }

    #[test]
    fn the_socket_layer_covers_four_syscalls_and_their_directions() {
        let cases = [
            ("syscall.read.enter", Some(true)),
            ("syscall.read.exit", Some(true)),
            ("syscall.recvfrom.exit", Some(true)),
            ("syscall.write.enter", Some(false)),
            ("syscall.sendto.exit", Some(false)),
            ("syscall.readv.enter", None),
            ("syscall.recvmsg.exit", None),
            ("syscall.sendfile64.exit", None),
            ("syscall.close.enter", None),
            ("syscall.dup3.exit", None),
            ("net.l4.send", None),
        ];
        for (name, expected) in cases {
            assert_eq!(covered_by_socket_layer(name), expected, "{name}");
        }
        // Every covered syscall has both its points in the syscall layer.
        let names: Vec<_> = syscall_layer().iter().map(|p| p.name).collect();
        for syscall in SOCKET_LAYER_SYSCALLS {
            for end in ["enter", "exit"] {
                assert!(names.contains(&format!("syscall.{syscall}.{end}").as_str()));
            }
        }
        // One fentry/fexit pair per function, receive and send for each family.
        let functions: Vec<_> = SOCKET_LAYER
            .iter()
            .map(|p| match p.candidates {
                [
                    Candidate {
                        hook: Hook::FEntry { function },
                        exit: Some(_),
                        ..
                    },
                ] => *function,
                other => panic!("{}: {other:?}", p.name),
            })
            .collect();
        assert_eq!(
            functions,
            [
                "inet_recvmsg",
                "inet6_recvmsg",
                "inet_sendmsg",
                "inet6_sendmsg"
            ]
        );
    }

    #[test]
    fn kernel_layer_points_are_distinct_from_the_syscall_layer() {
        let mut points = syscall_layer();
        points.extend(kernel_layer());
        points.extend(SOCKET_LAYER);
        let mut names: Vec<_> = points.iter().map(|p| p.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 34 + 15 + 4);
    }
}
