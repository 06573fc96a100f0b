//! The kernel matrix: netsonde on Debian's 6.1 and 6.12 cloud kernels, booted in qemu under
//! software emulation (TCG, one CPU; this host has no usable KVM, see
//! ../shared/reference/vm-kernels). Those kernels allow kprobes and fentry, which this host
//! refuses, so this is where the function layers (TCP, IP, netfilter, ARP) are exercised.
//!
//! Each guest runs `netsonde probes`, then `netsonde run` while one HTTP exchange crosses a
//! veth pair between two network namespaces, with a netem delay on the client's side, an
//! nftables rule set on both sides, and the client's neighbour entry flushed before it sends
//! (tests/support/vm/init.sh), then a burst of requests over IPv4 and IPv6 loopback. The test
//! reports which method attached for each probe point on each kernel, and checks the exchange
//! and its kernel times, and that every request of the burst was seen once on each side. The
//! fentry pass reads `read`/`write` at the socket layer; the kprobe pass (fentry off) at the
//! syscall tracepoints.
//!
//! Kernel packages are downloaded once with apt and kept outside the repository
//! (`NETSONDE_VM_CACHE`, default /var/cache/netsonde/vm-kernels).
//!
//! `NETSONDE_VM_DD=COUNT` adds a measurement, not a check: in each guest, `dd` makes 2 x COUNT
//! reads and writes on no socket, three times (`NETSONDE_VM_DD_ROUNDS`) under each arm (no agent, the no-op programs,
//! netsonde monitoring another process, netsonde monitoring every process, then the no-op
//! programs and every process monitored with socket-layer capture off: `floor-tp`,
//! `agent-tp`), and the test prints the medians beside the floor (benchmarks/RESULTS.md).
//! Under emulation only the ratios mean something.

mod support;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use support::{
    otlp_json::{histogram, points},
    parse_line, serial, skip_reason, support_file, wait_timeout,
};

/// The kernel series in the matrix and how their Debian packages are named.
const KERNELS: [(&str, &str); 2] = [
    ("6.1", r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64$"),
    ("6.12", r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64$"),
];

/// Modules the guest loads (with their dependencies): the veth pair, nftables, netem.
const MODULES: [&str; 3] = ["veth", "nf_tables", "sch_netem"];

/// The `dd` measurement: bytes per run (each a read and a write), runs per arm.
#[derive(Clone, Copy)]
struct Dd {
    count: u64,
    rounds: usize,
}

/// Requests per address family in each pass's loopback burst (`BURST` in init.sh).
const BURST: usize = 20;

/// Host programs copied into the guest, with their libraries.
const HOST_PROGRAMS: [&str; 3] = ["/usr/sbin/ip", "/usr/sbin/tc", "/usr/sbin/nft"];

fn cache_dir() -> PathBuf {
    std::env::var_os("NETSONDE_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/netsonde/vm-kernels"))
}

fn sh(command: &str) -> Result<String, String> {
    let out = Command::new("sh")
        .args(["-c", command])
        .output()
        .map_err(|e| format!("{command}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{command}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why the matrix cannot run here, if it cannot.
fn missing() -> Option<String> {
    if let Some(why) = skip_reason() {
        return Some(why);
    }
    for (tool, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("cpio", "cpio"),
        ("xz", "xz-utils"),
        ("strip", "binutils"),
        ("gcc", "gcc and libc6-dev"),
        ("apt-get", "apt"),
    ]
    .into_iter()
    .chain(HOST_PROGRAMS.iter().map(|p| (*p, "iproute2 and nftables")))
    {
        if sh(&format!("command -v {tool}")).is_err() {
            return Some(format!(
                "`{tool}` is not installed (Debian package {package})"
            ));
        }
    }
    None
}

/// The newest package matching `pattern`, by version.
fn newest_package(pattern: &str) -> Result<String, String> {
    let list = sh(&format!("apt-cache search --names-only '{pattern}'"))?;
    let version = |name: &str| -> Vec<u64> {
        name.split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect()
    };
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .max_by_key(|name| version(name))
        .map(str::to_string)
        .ok_or_else(|| format!("apt knows no package matching {pattern}"))
}

/// The kernel's version and its unpacked package, downloaded once into the cache.
fn fetch_kernel(package: &str) -> Result<(String, PathBuf), String> {
    let version = package.trim_start_matches("linux-image-").to_string();
    let root = cache_dir().join("k").join(&version);
    let vmlinuz = root.join(format!("boot/vmlinuz-{version}"));
    if !vmlinuz.exists() {
        let debs = cache_dir().join("debs");
        fs::create_dir_all(&debs).map_err(|e| e.to_string())?;
        // dpkg-deb creates the directory it unpacks into, but not its parents.
        fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        sh(&format!(
            "cd '{}' && apt-get download -q {package} 2>&1",
            debs.display()
        ))?;
        sh(&format!(
            "dpkg-deb -x \"$(ls '{}'/{package}_*.deb | tail -1)\" '{}'",
            debs.display(),
            root.display()
        ))?;
    }
    Ok((version, root))
}

/// The `depends=` of a kernel module, from its `.modinfo` section.
fn module_depends(ko: &[u8]) -> Vec<String> {
    use object::{Object, ObjectSection};
    let Ok(file) = object::File::parse(ko) else {
        return Vec::new();
    };
    let Some(data) = file.section_by_name(".modinfo").and_then(|s| s.data().ok()) else {
        return Vec::new();
    };
    data.split(|b| *b == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok()?.strip_prefix("depends="))
        .flat_map(|deps| {
            deps.split(',')
                .filter(|d| !d.is_empty())
                .map(str::to_string)
        })
        .collect()
}

/// Copies module `name` and its dependencies (dependencies first) into `dir`, listing them in
/// `order`. Built-in modules are skipped.
fn add_module(
    root: &Path,
    version: &str,
    name: &str,
    dir: &Path,
    order: &mut Vec<String>,
) -> Result<(), String> {
    let name = name.replace('-', "_");
    let file = format!("{name}.ko");
    if order.contains(&file) {
        return Ok(());
    }
    let modules = root.join("lib/modules").join(version);
    let builtin = fs::read_to_string(modules.join("modules.builtin")).unwrap_or_default();
    if builtin.lines().any(|l| l.ends_with(&format!("/{file}"))) {
        return Ok(());
    }
    let found = sh(&format!(
        "find '{}' -name '{name}.ko' -o -name '{name}.ko.xz' -o -name '{}.ko' -o -name '{}.ko.xz' | head -1",
        modules.join("kernel").display(),
        name.replace('_', "-"),
        name.replace('_', "-")
    ))?;
    let found = found.trim();
    if found.is_empty() {
        return Err(format!("module {name} is not in the {version} package"));
    }
    let bytes = if found.ends_with(".xz") {
        Command::new("xz")
            .args(["-dc", found])
            .output()
            .map_err(|e| e.to_string())?
            .stdout
    } else {
        fs::read(found).map_err(|e| e.to_string())?
    };
    for dep in module_depends(&bytes) {
        add_module(root, version, &dep, dir, order)?;
    }
    fs::write(dir.join(&file), &bytes).map_err(|e| e.to_string())?;
    order.push(file);
    Ok(())
}

/// Copies a host program and every library it loads into the guest tree.
fn add_program(tree: &Path, program: &str, at: &str) -> Result<(), String> {
    let target = tree.join(at.trim_start_matches('/'));
    fs::create_dir_all(target.parent().unwrap()).map_err(|e| e.to_string())?;
    fs::copy(program, &target).map_err(|e| format!("{program}: {e}"))?;
    for lib in sh(&format!("ldd '{program}'"))?
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let dest = tree.join(lib.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap()).map_err(|e| e.to_string())?;
        sh(&format!("cp -L '{lib}' '{}'", dest.display()))?;
    }
    Ok(())
}

/// The guest's initramfs: busybox, netsonde (stripped), the host tools, the modules, /init.
fn initramfs(root: &Path, version: &str, work: &Path) -> Result<PathBuf, String> {
    let tree = work.join(format!("tree-{version}"));
    let _ = fs::remove_dir_all(&tree);
    for dir in [
        "bin",
        "sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "lib/modules",
    ] {
        fs::create_dir_all(tree.join(dir)).map_err(|e| e.to_string())?;
    }
    fs::copy(sh("command -v busybox")?.trim(), tree.join("bin/busybox"))
        .map_err(|e| e.to_string())?;
    let agent = tree.join("netsonde");
    sh(&format!(
        "strip -o '{}' '{}'",
        agent.display(),
        env!("CARGO_BIN_EXE_netsonde")
    ))?;
    // Its libraries (glibc) come with the host tools below, and once more here for certainty.
    add_program(
        &tree,
        env!("CARGO_BIN_EXE_netsonde"),
        "/usr/lib/netsonde-unstripped",
    )?;
    fs::remove_file(tree.join("usr/lib/netsonde-unstripped")).map_err(|e| e.to_string())?;
    for program in HOST_PROGRAMS {
        add_program(&tree, program, program)?;
    }
    let mut order = Vec::new();
    for module in MODULES {
        add_module(root, version, module, &tree.join("lib/modules"), &mut order)?;
    }
    fs::write(tree.join("lib/modules/load-order"), order.join("\n")).map_err(|e| e.to_string())?;
    fs::copy(support_file("vm/init.sh"), tree.join("init")).map_err(|e| e.to_string())?;
    sh(&format!(
        "gcc -static -O2 -o '{}' '{}'",
        tree.join("tiny_httpd").display(),
        support_file("vm/tiny_httpd.c").display()
    ))?;
    sh(&format!("chmod 755 '{}'", tree.join("init").display()))?;
    let image = work.join(format!("initrd-{version}.gz"));
    sh(&format!(
        "cd '{}' && find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
        tree.display(),
        image.display()
    ))?;
    Ok(image)
}

/// Boots the kernel with the initramfs; returns what the guest printed.
fn boot(
    root: &Path,
    version: &str,
    initrd: &Path,
    work: &Path,
    dd: Option<Dd>,
) -> Result<String, String> {
    let mut append = "console=ttyS0 panic=-1 quiet loglevel=3".to_string();
    if let Some(Dd { count, rounds }) = dd {
        append.push_str(&format!(" netsonde.dd={count} netsonde.dd_rounds={rounds}"));
    }
    let log = work.join(format!("serial-{version}.log"));
    let out = fs::File::create(&log).map_err(|e| e.to_string())?;
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg,thread=single",
            "-cpu",
            "max",
            "-smp",
            "1",
            "-m",
            "1024",
        ])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(root.join(format!("boot/vmlinuz-{version}")))
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &append])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("qemu: {e}"))?;
    let started = Instant::now();
    let status = wait_timeout(&mut qemu, Duration::from_secs(900));
    let serial =
        String::from_utf8_lossy(&fs::read(&log).map_err(|e| e.to_string())?).replace('\r', "");
    eprintln!(
        "{version}: qemu exited ({status}) after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(serial)
}

/// The lines between `VMTEST <what> begin` and `VMTEST <what> end`.
fn section<'a>(serial: &'a str, what: &str) -> Vec<&'a str> {
    serial
        .lines()
        .skip_while(|l| !l.ends_with(&format!("VMTEST {what} begin")))
        .skip(1)
        .take_while(|l| !l.ends_with(&format!("VMTEST {what} end")))
        .collect()
}

/// Runs one kernel: both passes (fentry allowed, then kprobes only). Returns the probe table
/// rows of the function layers for the report.
fn run_kernel(
    series: &str,
    pattern: &str,
    work: &Path,
    dd: Option<Dd>,
) -> Result<Vec<String>, String> {
    let package = newest_package(pattern)?;
    let (version, root) = fetch_kernel(&package)?;
    let initrd = initramfs(&root, &version, work)?;
    let serial = boot(&root, &version, &initrd, work, dd)?;
    assert!(
        serial.contains("VMTEST done"),
        "{series} ({version}) serial log:\n{serial}"
    );
    assert!(
        !serial
            .lines()
            .any(|l| l.starts_with("VMTEST") && l.contains("failed")),
        "{series} ({version}): a guest setup step failed; serial log:\n{serial}"
    );
    let mut rows = Vec::new();
    for method in ["fentry", "kprobe"] {
        rows.extend(check_pass(series, &version, &serial, method));
    }
    if let Some(dd) = dd {
        rows.extend(dd_report(series, &version, &serial, dd.rounds));
    }
    Ok(rows)
}

/// The `dd` arms' medians (centiseconds in the guest's clock) beside the floor's.
fn dd_report(series: &str, version: &str, serial: &str, rounds: usize) -> Vec<String> {
    let arms = ["bare", "floor", "not-mine", "agent", "floor-tp", "agent-tp"];
    // (arm, its rounds in centiseconds, their median)
    let measured: Vec<(&str, Vec<u64>, u64)> = arms
        .iter()
        .map(|&arm| {
            let times: Vec<u64> = serial
                .lines()
                .filter_map(|l| l.trim().strip_prefix(&format!("VMTEST dd {arm} ")))
                .filter_map(|t| t.trim().parse().ok())
                .collect();
            assert_eq!(
                times.len(),
                rounds,
                "{series} ({version}): dd rounds of {arm}; serial log:\n{serial}"
            );
            let mut sorted = times.clone();
            sorted.sort_unstable();
            (arm, times, sorted[rounds / 2])
        })
        .collect();
    let median = |name: &str| {
        measured
            .iter()
            .find(|(arm, ..)| *arm == name)
            .map(|(.., cs)| *cs as f64)
            .expect("every arm is measured")
    };
    // The floor with the socket layer, and the tracepoints' floor (socket layer off).
    let (floor, floor_tp) = (median("floor"), median("floor-tp"));
    let agents_said = serial
        .lines()
        .filter(|l| l.starts_with("DDLOG"))
        .map(|l| format!("{series} ({version}) {l}"));
    measured
        .iter()
        .map(|(arm, times, cs)| {
            format!(
                "{series} ({version}) dd {arm:<8} {:>7.2} s  {:.2} x the floor  {:.2} x floor-tp  \
                 (rounds, cs: {times:?})",
                *cs as f64 / 100.0,
                *cs as f64 / floor,
                *cs as f64 / floor_tp,
            )
        })
        .chain(agents_said)
        .collect()
}

/// Checks one pass of the guest: every network point attached, the function layers by
/// `method`; the exchange from both sides with its kernel times; the connect time.
fn check_pass(series: &str, version: &str, serial: &str, method: &str) -> Vec<String> {
    let context = || format!("{series} ({version}), {method} pass; serial log:\n{serial}");
    let probes = section(serial, &format!("probes-{method}"));
    let mut rows = Vec::new();
    for point in [
        "net.l4.send",
        "net.l3.send",
        "net.l3.receive",
        "net.l4.receive",
        "net.netfilter",
        "net.arp",
    ] {
        let row = probes
            .iter()
            .find(|l| l.starts_with(point))
            .unwrap_or_else(|| panic!("{point} missing: {}", context()));
        assert!(
            row.contains(" attached ") && row.contains(&format!(" {method} ")),
            "{series}: {point} should attach by {method}: {row}\n{}",
            probes.join("\n")
        );
        rows.push(format!(
            "{series} {version}: {}",
            row.split_whitespace().take(4).collect::<Vec<_>>().join(" ")
        ));
    }
    // With fentry, read/write/recvfrom/sendto at the socket layer (the exchange below crosses
    // it: nc and tiny_httpd read and write); without, and for every other syscall, the
    // BTF-typed tracepoints (Debian's kernels carry their own BTF).
    let socket_layer = method == "fentry";
    for (point, at_socket_layer) in [
        ("syscall.read.enter", socket_layer),
        ("syscall.read.exit", socket_layer),
        ("syscall.write.exit", socket_layer),
        ("syscall.sendto.enter", socket_layer),
        ("syscall.readv.enter", false),
        ("syscall.sendfile64.exit", false),
        ("syscall.close.enter", false),
        ("syscall.dup2.exit", false),
    ] {
        let row = probes
            .iter()
            .find(|l| l.starts_with(point))
            .unwrap_or_else(|| panic!("{point} missing: {}", context()));
        let via = if at_socket_layer {
            " fentry inet_"
        } else {
            " tp_btf sys_e"
        };
        assert!(
            row.contains(" attached ") && row.contains(via),
            "{series}, {method} pass: {point} should attach by{via}: {row}\n{}",
            probes.join("\n")
        );
        rows.push(format!(
            "{series} {version}: {}",
            row.split_whitespace().take(5).collect::<Vec<_>>().join(" ")
        ));
    }
    assert!(
        probes
            .iter()
            .all(|l| !(l.starts_with("net.") || l.starts_with("tcp.")) || l.contains(" attached ")),
        "{series}: every network probe point attaches: {}",
        probes.join("\n")
    );

    // The exchange, from both sides, with its kernel times.
    let console = section(serial, &format!("console-{method}"));
    let lines: Vec<_> = console.iter().filter_map(|l| parse_line(l)).collect();
    let client = lines
        .iter()
        .find(|l| l.comm == "nc" && l.role == "client")
        .unwrap_or_else(|| panic!("no client exchange: {}", context()));
    let server = lines
        .iter()
        .find(|l| l.comm == "tiny_httpd" && l.role == "server")
        .unwrap_or_else(|| panic!("no server exchange: {}", context()));
    for l in [client, server] {
        assert_eq!(
            (l.method.as_str(), l.target.as_str(), l.status),
            ("GET", "/index.html", 200)
        );
    }
    // The loopback burst: every request seen once on each side, over each family.
    for target in ["/burst-v4", "/burst-v6"] {
        for (comm, role) in [("wget", "client"), ("tiny_httpd", "server")] {
            let seen = lines
                .iter()
                .filter(|l| l.comm == comm && l.role == role && l.target == target)
                .filter(|l| l.method == "GET" && l.status == 200)
                .count();
            assert_eq!(
                seen,
                BURST,
                "{series}, {method} pass: {comm} ({role}) exchanges for {target}: {}",
                context()
            );
        }
    }
    let ns = |l: &support::Line, layer: &str| {
        l.kernel_ns
            .iter()
            .find(|(k, _)| k == layer)
            .map_or(0, |(_, ns)| *ns)
    };
    // The client's request waits for ARP and leaves from softirq, after its write returned:
    // its device times are not the write's; its ARP wait is the connection's.
    for layer in ["l4", "l3", "netfilter", "arp", "receive"] {
        assert!(
            ns(client, layer) > 0,
            "{series}: client exchange lacks {layer}: {client:?}"
        );
    }
    for layer in [
        "l4",
        "l3",
        "netfilter",
        "device_queue",
        "device_send",
        "receive",
    ] {
        assert!(
            ns(server, layer) > 0,
            "{series}: server exchange lacks {layer}: {server:?}"
        );
    }
    // The ARP request waits 50 ms in netem on its way out, so the resolution takes that, plus
    // the reply and the emulated CPU's slowness.
    let arp = ns(client, "arp") as f64 / 1e9;
    assert!(
        (0.050..0.200).contains(&arp),
        "{series}: the request waited {arp} s for ARP behind a 50 ms netem delay: {client:?}\n{}",
        serial
            .lines()
            .filter(|l| l.starts_with("VMTEST"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // No neighbour entry at connect: the ARP request, then the SYN, each wait 50 ms in netem.
    let otlp = section(serial, &format!("otlp-{method}"));
    let (count, seconds) = histogram(&points(
        &otlp.join("\n"),
        client.pid,
        "netsonde.connection.connect.duration",
    ));
    assert_eq!(count, 1, "{series}: one connect: {}", context());
    assert!(
        (0.100..0.400).contains(&seconds),
        "{series}: connect took {seconds} s behind ARP and SYN, each delayed 50 ms"
    );
    eprintln!(
        "{series} ({version}), {method}: connect {:.1} ms (ARP and SYN behind 50 ms of netem each); \
         request's ARP wait {:.1} ms; client kernel_ns {:?}; server kernel_ns {:?}",
        seconds * 1e3,
        arp * 1e3,
        client.kernel_ns,
        server.kernel_ns
    );
    rows
}

#[test]
fn netsonde_on_debian_6_1_and_6_12_kernels() {
    if let Some(why) = missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let _guard = serial();
    let work = tempfile::tempdir().unwrap();
    let rounds = std::env::var("NETSONDE_VM_DD_ROUNDS").map_or(3, |v| {
        v.parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("NETSONDE_VM_DD_ROUNDS={v}: a number of rounds"))
    });
    let dd = std::env::var("NETSONDE_VM_DD").ok().map(|v| Dd {
        count: v
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("NETSONDE_VM_DD={v}: a count of bytes for dd")),
        rounds,
    });
    let mut report = Vec::new();
    for (series, pattern) in KERNELS {
        match run_kernel(series, pattern, work.path(), dd) {
            Ok(rows) => report.extend(rows),
            Err(why) => panic!("{series}: {why}"),
        }
    }
    eprintln!("kernel matrix:\n{}", report.join("\n"));
}
