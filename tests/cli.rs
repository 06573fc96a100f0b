//! What a user sees at the command line: clear one-line errors for what is missing or wrong,
//! the probe table, and a run that stops by itself.

mod support;

use std::process::{Command, Output};

use support::{NETSONDE, serial};

fn netsonde(args: &[&str]) -> Output {
    Command::new(NETSONDE)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run netsonde")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_unknown_config_key_is_named_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("netsonde.yaml");
    std::fs::write(&path, "capture:\n  payload_byte: 512\n").unwrap();
    let out = netsonde(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "netsonde: config file {}: line 2 column 3: unknown field `payload_byte`, expected one of payload_bytes, ring_buffer_bytes, batch_delay_ms, kernel_layer, fentry, tp_btf, socket_layer\n",
            path.display()
        )
    );
}

#[test]
fn a_bad_value_names_its_key() {
    let out = netsonde(&["run", "--comm", "a-name-longer-than-fifteen"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "netsonde: config key filter.comms: \"a-name-longer-than-fifteen\": process names are 1 to 15 bytes (the kernel cuts them there)\n"
    );
}

#[test]
fn a_bad_value_in_the_file_names_its_key_value_and_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("netsonde.yaml");
    std::fs::write(&path, "capture:\n  payload_bytes: \"lots\"\n").unwrap();
    let out = netsonde(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "netsonde: config file {}: key capture.payload_bytes (line 2 column 18): invalid type: string \"lots\", expected u32\n",
            path.display()
        )
    );
}

#[test]
fn a_pid_that_names_no_process_is_refused() {
    let out = netsonde(&["run", "--pid", "999999999"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "netsonde: --pid: no process 999999999 is running (see `ps`; a process that starts later can be traced by name with --comm)\n"
    );
    let out = netsonde(&["run", "--pid", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "netsonde: --pid: 0 is not a process id (they start at 1)\n"
    );
}

#[test]
fn a_negative_duration_says_what_is_wanted() {
    let out = netsonde(&["run", "--duration", "-1"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    assert!(
        stderr(&out).contains(
            "invalid value '-1' for '--duration <SECS>': \"-1\" is not a whole number of seconds (0 or more)"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_config_file_says_so() {
    let out = netsonde(&["run", "--config", "/nonexistent/netsonde.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "netsonde: cannot read config file /nonexistent/netsonde.yaml: No such file or directory (os error 2)\n"
    );
}

#[test]
fn without_privileges_it_says_what_is_missing() {
    // As root, drop to nobody with setpriv (util-linux); otherwise we already lack them.
    // SAFETY: no preconditions.
    let out = if unsafe { libc::geteuid() } == 0 {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                NETSONDE,
                "run",
            ])
            .output()
            .expect("setpriv (util-linux) drops root for this test")
    } else {
        netsonde(&["run"])
    };
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "netsonde: loading eBPF programs needs the capabilities CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN before Linux 5.8), which root holds unless its container dropped them; this process has neither\n"
    );
    // Root whose container dropped CAP_BPF: root alone is not enough.
    if unsafe { libc::geteuid() } == 0 {
        let out = Command::new("setpriv")
            .args([
                "--bounding-set=-all,+perfmon",
                "--inh-caps=-all",
                NETSONDE,
                "run",
            ])
            .output()
            .expect("setpriv");
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).ends_with("this process has only CAP_PERFMON\n"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn without_btf_it_says_what_is_missing() {
    require_privileges!();
    let out = netsonde(&["run", "--btf", "/nonexistent/vmlinux"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "netsonde: cannot read /nonexistent/vmlinux (given with --btf) as BTF: it must be the BTF of the running kernel, a raw .btf file such as `pahole --btf_encode_detached` writes: i/o error: No such file or directory (os error 2)\n"
    );
    // A file that is there but is not BTF: the same, with what was wrong with it.
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.btf");
    std::fs::write(&garbage, b"not BTF at all, only some bytes").unwrap();
    let out = netsonde(&["run", "--btf", garbage.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "netsonde: cannot read {} (given with --btf) as BTF: it must be the BTF of the running kernel",
            garbage.display()
        )) && !err.contains("pass a BTF file"),
        "{err}"
    );
}

/// With `capture.tp_btf: false` (as on a kernel whose BTF is only a file given with `--btf`)
/// the syscalls are read at the raw tracepoints instead, each point saying why not the typed
/// one, and exchanges are still found.
#[test]
fn syscalls_fall_back_to_raw_tracepoints() {
    require_privileges!();
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("netsonde.yaml");
    std::fs::write(&path, "capture:\n  tp_btf: false\n").unwrap();
    let out = netsonde(&["probes", "--config", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    let lines: Vec<&str> = text.lines().collect();
    let read = lines
        .iter()
        .position(|l| l.starts_with("syscall.read.enter"))
        .unwrap_or_else(|| panic!("syscall.read.enter missing:\n{text}"));
    assert!(
        lines[read].contains(" attached ")
            && lines[read].contains(&format!(
                "raw_tracepoint sys_enter[read={}]",
                libc::SYS_read
            )),
        "{}",
        lines[read]
    );
    assert!(
        lines[read + 1].contains("tried")
            && lines[read + 1].contains("tp_btf sys_enter[read=")
            && lines[read + 1].ends_with("switched off (capture.tp_btf: false)"),
        "{}",
        lines[read + 1]
    );
    // The raw programs find the exchanges too: curl's two requests, each seen from its side.
    let server = support::PyServer::start();
    let agent = support::Agent::start(&[
        "--config",
        path.to_str().unwrap(),
        "--pid",
        &server.pid.to_string(),
        "--comm",
        "curl",
    ]);
    for i in 0..2 {
        support::curl(&[&server.url(&format!("/items/{i}"))]);
    }
    let capture = agent.stop();
    let served: Vec<_> = capture.keys_of(server.pid);
    let want: Vec<_> = (0..2)
        .map(|i| ("server".into(), "GET".into(), format!("/items/{i}"), 200))
        .collect();
    assert_eq!(served, want, "{}", capture.stdout);
    let asked = capture.lines.iter().filter(|l| l.role == "client").count();
    assert_eq!(asked, 2, "{}", capture.stdout);
}

#[test]
fn probes_lists_every_point_and_how_it_attached() {
    require_privileges!();
    let _serial = serial();
    let out = netsonde(&["probes"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    let lines: Vec<&str> = text.lines().collect();
    // The socket layer: all four points attached by fentry, or (this host refuses fentry)
    // all four unused, each with its try and the kernel's reason, the tracepoints reading
    // their syscalls instead.
    let mut socket_layer_attached = 0;
    for (point, function) in [
        ("socket.receive.ipv4", "inet_recvmsg"),
        ("socket.receive.ipv6", "inet6_recvmsg"),
        ("socket.send.ipv4", "inet_sendmsg"),
        ("socket.send.ipv6", "inet6_sendmsg"),
    ] {
        let at = lines
            .iter()
            .position(|l| l.starts_with(point))
            .unwrap_or_else(|| panic!("{point} missing:\n{text}"));
        if lines[at].contains(" attached ") {
            socket_layer_attached += 1;
            assert!(lines[at].contains(&format!("fentry {function}")), "{text}");
        } else {
            assert!(
                lines[at].contains(" unused ")
                    && lines[at].contains("the syscall tracepoints read this instead"),
                "{text}"
            );
            assert!(
                lines[at + 1].trim_start().starts_with("tried")
                    && lines[at + 1].contains(&format!("fentry {function}")),
                "{text}"
            );
        }
    }
    assert!(
        [0, 4].contains(&socket_layer_attached),
        "the socket layer is used whole or not at all:\n{text}"
    );
    let socket_layer = socket_layer_attached == 4;
    for point in [
        "syscall.read.enter",
        "syscall.writev.exit",
        "syscall.accept4.exit",
        "syscall.close.enter",
        "syscall.dup3.exit",
        "process.exit",
        "net.device.queue",
        "net.device.start_xmit",
        "net.device.enqueue",
        "net.device.xmit",
        "net.receive",
        "net.copy_to_user",
        "tcp.retransmit",
        "net.drop",
        "tcp.state",
    ] {
        let row = text
            .lines()
            .find(|l| l.starts_with(point))
            .unwrap_or_else(|| panic!("{point} missing:\n{text}"));
        // The syscalls through the BTF-typed syscall tracepoints' dispatch tables, by number
        // (this kernel has its own BTF); the process lifecycle and the network layer at raw
        // tracepoints of their own.
        // With the socket layer, `read` is read there (`writev` and the others stay).
        let via = if point == "syscall.read.enter" && socket_layer {
            "fentry inet_recvmsg, inet6_recvmsg"
        } else if point.starts_with("syscall.") {
            "tp_btf sys_e"
        } else {
            "raw_tracepoint "
        };
        assert!(row.contains(" attached ") && row.contains(via), "{row}");
    }
    let read = text
        .lines()
        .find(|l| l.starts_with("syscall.read.enter"))
        .unwrap_or_default();
    assert!(
        socket_layer || read.contains(&format!("sys_enter[read={}]", libc::SYS_read)),
        "{read}"
    );
    // The layers only kernel functions show: fentry, else kprobes; where neither attaches
    // (this host refuses fentry and has no kprobes) both tries are listed with the kernel's
    // reason.
    let mut function_points_attached = 0;
    for (point, function) in [
        ("net.l4.send", "tcp_sendmsg"),
        ("net.l3.send", "__ip_queue_xmit"),
        ("net.l3.receive", "ip_rcv"),
        ("net.l4.receive", "tcp_v4_rcv"),
        ("net.netfilter", "nf_hook_slow"),
        ("net.arp", "neigh_resolve_output"),
    ] {
        let at = lines
            .iter()
            .position(|l| l.starts_with(point))
            .unwrap_or_else(|| panic!("{point} missing:\n{text}"));
        let tried: Vec<&str> = lines[at + 1..]
            .iter()
            .take_while(|l| l.trim_start().starts_with("tried"))
            .copied()
            .collect();
        if lines[at].contains(" attached ") {
            function_points_attached += 1;
            assert!(
                lines[at].contains(&format!("fentry {function}"))
                    || lines[at].contains(&format!("kprobe {function}")),
                "{}",
                lines[at]
            );
        } else {
            assert!(lines[at].contains(" failed ") && lines[at].contains("lost: "));
            assert_eq!(tried.len(), 2, "{text}");
            assert!(
                tried[0].contains(&format!("fentry {function}")),
                "{}",
                tried[0]
            );
            assert!(
                tried[1].contains(&format!("kprobe {function}")),
                "{}",
                tried[1]
            );
        }
    }
    // The socket layer's points count only where they are used (unused, they lose nothing).
    let last = lines.last().unwrap();
    assert!(
        last.starts_with(&format!(
            "{} of {} probe points attached",
            43 + function_points_attached + socket_layer_attached,
            49 + socket_layer_attached
        )),
        "{text}"
    );
    assert!(out.status.success(), "only optional points may fail");
}

#[test]
fn run_stops_by_itself_after_its_duration_with_final_stats() {
    require_privileges!();
    let _serial = serial();
    let out = netsonde(&["run", "--duration", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.contains(" stats(final) events="), "{stdout}");
    assert!(
        stderr(&out).contains(" of 49 probes attached; tracing every process")
            || stderr(&out).contains(" of 53 probes attached; tracing every process"),
        "{}",
        stderr(&out)
    );
}

/// Whether process `pid` has a handler for SIGINT (its `SigCgt` mask in /proc).
fn catches_sigint(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGINT - 1)) != 0)
}

/// A SIGINT that comes while the agent is still starting (loading and attaching its
/// programs) stops it once it has started, through its drain: exit 0 and a final stats line,
/// never killed by the signal. Its handlers are installed before anything slow, so the test
/// signals as soon as the process catches SIGINT, and checks that it had not attached its
/// probes yet (when the handlers came only with the agent's loop, they came after that line,
/// and a signal just before them killed the agent).
#[test]
fn a_signal_while_starting_stops_the_agent_through_its_drain() {
    require_privileges!();
    let _serial = serial();
    let mut child = Command::new(NETSONDE)
        .args(["run", "--comm", "no-such-program"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start netsonde");
    let pid = child.id();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let pipe = child.stderr.take().unwrap();
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !catches_sigint(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "never caught SIGINT:\n{}",
            log.lock().unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let before = log.lock().unwrap().clone();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    let log = log.lock().unwrap().clone();
    assert!(
        !before.contains("probes attached"),
        "the handler came only once the agent had started:\n{before}"
    );
    assert!(out.status.success(), "{}:\n{log}", out.status);
    assert!(log.contains("probes attached"), "{log}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.contains(" stats(final) events="), "{stdout}");
}

#[test]
fn help_names_the_commands() {
    let out = netsonde(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("run") && text.contains("probes"), "{text}");
    let out = netsonde(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("netsonde {}", env!("CARGO_PKG_VERSION"))
    );
}

fn netsonde_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(NETSONDE)
        .args(args)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .expect("run netsonde")
}

#[test]
fn bad_export_settings_name_the_flag_variable_or_key() {
    // These fail before anything is loaded, so they need no privileges.
    let out = netsonde(&[
        "run",
        "--exporter",
        "otlp",
        "--otlp-endpoint",
        "127.0.0.1:4317",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "netsonde: --otlp-endpoint: \"127.0.0.1:4317\" is not an http:// or https:// URL with a host\n"
    );
    let out = netsonde(&["run", "--otlp-protocol", "http/json"]);
    assert_eq!(
        stderr(&out),
        "netsonde: --otlp-protocol: http/json is not supported; use grpc or http/protobuf\n"
    );
    let out = netsonde_env(&["run"], &[("OTEL_EXPORTER_OTLP_HEADERS", "api-key")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "netsonde: environment variable OTEL_EXPORTER_OTLP_HEADERS: \"api-key\" is not key=value\n"
    );
    let out = netsonde_env(&["run"], &[("OTEL_METRIC_EXPORT_INTERVAL", "soon")]);
    assert_eq!(
        stderr(&out),
        "netsonde: environment variable OTEL_METRIC_EXPORT_INTERVAL: \"soon\" is not a whole number of milliseconds\n"
    );
    let out = netsonde(&["run", "--exporter", "kafka"]);
    assert_eq!(out.status.code(), Some(2), "clap rejects unknown exporters");
    assert!(
        stderr(&out).contains("possible values: console, otlp, file"),
        "{}",
        stderr(&out)
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("netsonde.yaml");
    std::fs::write(
        &path,
        "export:\n  otlp:\n    headers:\n      \"bad header\": x\n",
    )
    .unwrap();
    let out = netsonde(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(
        stderr(&out),
        "netsonde: config key export.otlp.headers: \"bad header\" is not a valid header name\n"
    );
}

#[test]
fn an_unwritable_output_file_stops_the_agent_with_its_path() {
    let _guard = serial();
    let out = netsonde(&[
        "run",
        "--exporter",
        "file",
        "--file-path",
        "/nonexistent/dir/out.jsonl",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "netsonde: cannot open the output file /nonexistent/dir/out.jsonl: No such file or directory (os error 2)\n"
    );
}

#[test]
fn probes_stats_measures_the_running_agents_programs() {
    require_privileges!();
    let _serial = serial();
    let out = netsonde(&["probes", "--stats", "1"]);
    assert_eq!(out.status.code(), Some(1), "no agent runs yet");
    assert_eq!(
        stderr(&out),
        "netsonde: no netsonde programs are loaded; start `netsonde run` first\n"
    );
    let server = support::PyServer::start();
    let agent = support::Agent::start(&["--pid", &server.pid.to_string(), "--comm", "curl"]);
    let stats = std::thread::spawn(|| netsonde(&["probes", "--stats", "3"]));
    std::thread::sleep(std::time::Duration::from_millis(500));
    for i in 0..20 {
        support::curl(&[&server.url(&format!("/items/{i}"))]);
    }
    let out = stats.join().unwrap();
    agent.stop();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    // Every request is a read and a write on each side (the syscall programs run, and are
    // counted, inside the syscall tracepoints' programs); every packet passes the device.
    for program in [
        "sys_exit_btf",
        "sys_enter_btf",
        "net_dev_queue",
        "skb_copy_datagr",
    ] {
        let row = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(program))
            .unwrap_or_else(|| panic!("{program} missing:\n{text}"));
        let f: Vec<&str> = row.split_whitespace().collect();
        let (runs, ns): (u64, f64) = (f[2].parse().unwrap(), f[3].parse().unwrap());
        assert!(runs >= 20 && ns > 0.0, "{row}");
    }
    assert!(
        text.lines().last().unwrap().starts_with("all programs: "),
        "{text}"
    );
}
