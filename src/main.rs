//! The command line. Parses arguments, sets up logging, and hands over to the library.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};
use netsonde::{
    agent::{self, RunOptions},
    config::{
        Config, ConfigError,
        export::{ExporterKind, Protocol, check_endpoint},
        otel_env::apply_otel_env,
        proxy::apply_proxy_env,
    },
    probes::{
        EBPF_SOURCE, Probes,
        tls::{LibraryOutcome, ObjectKind, TlsStack},
    },
};
use tracing_subscriber::EnvFilter;

/// jemalloc instead of glibc's malloc: after a burst (connection churn, thousands of idle
/// connections closing) glibc kept the agent's peak resident for good, its free memory pinned
/// by long-lived allocations in the same pages and arenas; jemalloc hands unused pages back
/// within seconds (its background thread purges them). Measured in benchmarks/RESULTS.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings: a background thread purges dirty pages after 5 s unused, so an idle
/// agent gives memory back without waiting for its next allocations.
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8] = b"background_thread:true,dirty_decay_ms:5000,muzzy_decay_ms:5000\0";

#[derive(Parser)]
#[command(
    name = "netsonde",
    version,
    about = "Watches the network traffic of every process through eBPF and reports it as telemetry"
)]
struct Cli {
    /// Log verbosity: error, warn, info, debug or trace (overrides RUST_LOG). Logs go to stderr.
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<tracing::Level>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Capture traffic and print one line per HTTP exchange until SIGINT/SIGTERM or --duration.
    Run(RunArgs),
    /// List every probe point, how it attached on this kernel and why better ways failed (exit status 1 if a required one fails).
    Probes(ProbesArgs),
}

#[derive(Args)]
struct ConfigArg {
    /// YAML configuration file (see docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// BTF describing the running kernel, for kernels without /sys/kernel/btf/vmlinux.
    #[arg(long, value_name = "FILE")]
    btf: Option<PathBuf>,
}

#[derive(Args)]
struct ProbesArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Instead of attaching: measure the programs of the netsonde running now for SECS seconds
    /// with the kernel's BPF run-time statistics (runs, nanoseconds per run, CPU share).
    #[arg(long, value_name = "SECS", value_parser = whole_seconds, allow_hyphen_values = true)]
    stats: Option<u64>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = whole_seconds, allow_hyphen_values = true)]
    duration: Option<u64>,
    /// Trace this process and its descendants (repeatable; adds to filter.pids).
    #[arg(long, value_name = "PID")]
    pid: Vec<u32>,
    /// Trace processes with this name, as in /proc/PID/comm (repeatable; adds to filter.comms).
    #[arg(long, value_name = "NAME")]
    comm: Vec<String>,
    /// Where telemetry goes: console, otlp or file (repeatable; replaces export.exporters).
    #[arg(long = "exporter", value_name = "KIND", value_enum)]
    exporters: Vec<ExporterKind>,
    /// OTLP collector endpoint, e.g. http://127.0.0.1:4317 (overrides
    /// OTEL_EXPORTER_OTLP_ENDPOINT and export.otlp.endpoint).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// OTLP transport: grpc or http/protobuf (overrides OTEL_EXPORTER_OTLP_PROTOCOL).
    #[arg(long, value_name = "PROTOCOL")]
    otlp_protocol: Option<String>,
    /// File the `file` exporter writes OTLP JSON lines to (overrides export.file_path).
    #[arg(long, value_name = "PATH")]
    file_path: Option<PathBuf>,
    /// Directory where OTLP batches wait on disk through a collector outage (overrides
    /// export.otlp.disk_queue.path).
    #[arg(long, value_name = "DIR")]
    disk_queue: Option<PathBuf>,
    /// Serve /healthz, /readyz and /metrics on ADDRESS:PORT (overrides output.status_listen).
    #[arg(long, value_name = "ADDRESS:PORT")]
    status_listen: Option<String>,
    /// Attach no-op programs to the same hooks and report nothing (overhead benchmarks).
    #[arg(long, hide = true)]
    noop_probes: bool,
}

/// A count of seconds, with a message that says what is wanted (clap's own for `-1` would be
/// "unexpected argument").
fn whole_seconds(text: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a whole number of seconds (0 or more)"))
}

/// A `--pid` must name a process that exists now: a mistyped pid would otherwise trace
/// nothing, silently.
fn check_pids(pids: &[u32]) -> Result<(), ConfigError> {
    for &pid in pids {
        let message = if pid == 0 {
            "0 is not a process id (they start at 1)".to_string()
        } else if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            format!(
                "no process {pid} is running (see `ps`; a process that starts later can be traced by name with --comm)"
            )
        } else {
            continue;
        };
        return Err(ConfigError::Flag {
            flag: "--pid",
            message,
        });
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_level);
    match cli.command {
        Command::Run(args) => run(args),
        Command::Probes(args) => probes(args),
    }
}

fn init_logging(level: Option<tracing::Level>) {
    let filter = match level {
        // Other crates (aya among them) only from warn up: their debug output is not ours.
        // kube's watcher warns on every retry of a forbidden watch; netsonde says it once.
        Some(level) => EnvFilter::new(format!("warn,kube_runtime=error,netsonde={level}")),
        None => EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("warn,kube_runtime=error,netsonde=info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Prints an error and its causes on one line.
fn fail(error: &dyn std::error::Error) -> ExitCode {
    eprintln!("netsonde: {}", netsonde::one_line(error));
    ExitCode::FAILURE
}

fn load_config(arg: &ConfigArg) -> Result<Config, netsonde::config::ConfigError> {
    match &arg.config {
        Some(path) => Config::from_file(path),
        None => Ok(Config::default()),
    }
}

fn run(args: RunArgs) -> ExitCode {
    let mut config = match load_config(&args.config) {
        Ok(config) => config,
        Err(e) => return fail(&e),
    };
    if let Err(e) = check_pids(&args.pid) {
        return fail(&e);
    }
    config.filter.pids.extend(&args.pid);
    config.filter.comms.extend(args.comm.iter().cloned());
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    config.kubernetes.apply_env(&env);
    if let Err(e) = apply_otel_env(&mut config.export, &env)
        .and_then(|()| apply_proxy_env(&mut config.export.otlp.proxy, &env))
        .and_then(|()| apply_flags(&mut config, &args))
    {
        return fail(&e);
    }
    if let Err(e) = config.validate() {
        return fail(&e);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&e),
    };
    let duration = args.duration.map(Duration::from_secs);
    let options = RunOptions {
        noop_probes: args.noop_probes,
        btf: args.config.btf.clone(),
    };
    let shutdown = {
        let _runtime = runtime.enter();
        match shutdown_signal(duration) {
            Ok(shutdown) => shutdown,
            Err(e) => return fail(&e),
        }
    };
    match runtime.block_on(agent::run(&config, options, shutdown)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// The export flags, which win over the file and the environment.
fn apply_flags(config: &mut Config, args: &RunArgs) -> Result<(), ConfigError> {
    let export = &mut config.export;
    if !args.exporters.is_empty() {
        export.exporters = args.exporters.clone();
        export.exporters.dedup();
    }
    if let Some(endpoint) = &args.otlp_endpoint {
        check_endpoint(Some(endpoint)).map_err(|message| ConfigError::Flag {
            flag: "--otlp-endpoint",
            message,
        })?;
        export.otlp.endpoint = Some(endpoint.clone());
    }
    if let Some(protocol) = &args.otlp_protocol {
        export.otlp.protocol = Protocol::parse(protocol).map_err(|message| ConfigError::Flag {
            flag: "--otlp-protocol",
            message,
        })?;
    }
    if let Some(path) = &args.file_path {
        export.file_path = path.clone();
    }
    if let Some(dir) = &args.disk_queue {
        export.otlp.disk_queue.path = Some(dir.clone());
    }
    if let Some(address) = &args.status_listen {
        let address = address.parse().map_err(|_| ConfigError::Flag {
            flag: "--status-listen",
            message: format!("{address:?} is not ADDRESS:PORT (e.g. 0.0.0.0:9464)"),
        })?;
        config.output.status_listen = Some(address);
    }
    Ok(())
}

/// Completes on SIGINT, SIGTERM, or after `duration`. Both handlers are installed here, at
/// once: installed when the future is first polled, they left a moment after the probes were
/// attached where a SIGINT killed the agent outright, without its drain (seen in a test that
/// stops the agent right after it starts). A signal that comes before the agent polls the
/// future stops it as soon as it does.
fn shutdown_signal(
    duration: Option<Duration>,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        let timer = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
            () = timer => {}
        }
    })
}

fn probes(args: ProbesArgs) -> ExitCode {
    if let Some(secs) = args.stats {
        return program_stats(Duration::from_secs(secs.max(1)));
    }
    let args = args.config;
    let config = match load_config(&args) {
        Ok(config) => config,
        Err(e) => return fail(&e),
    };
    let options = RunOptions {
        btf: args.btf.clone(),
        ..RunOptions::default()
    };
    let mut probes = match Probes::load(&agent::probe_settings(&config, &options)) {
        Ok(probes) => probes,
        Err(e) => return fail(&e),
    };
    probes.hook_system_tls();
    probes.hook_running_tls();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("kernel {}; eBPF object {EBPF_SOURCE}", kernel.trim());
    println!(
        "{:<24} {:<9} {:<42} PURPOSE / WHY NOT",
        "PROBE POINT", "STATUS", "VIA"
    );
    let report = probes.report();
    for status in report {
        match &status.attached {
            Some(c) => println!(
                "{:<24} {:<9} {:<42} {}",
                status.point.name,
                "attached",
                format!("{} {}", c.hook.method(), c.hook.target()),
                status.point.purpose
            ),
            None => match status.point.fallback() {
                Some(instead) => println!(
                    "{:<24} {:<9} {:<42} {instead}: {}",
                    status.point.name, "unused", "-", status.point.purpose
                ),
                None => println!(
                    "{:<24} {:<9} {:<42} lost: {}",
                    status.point.name, "failed", "-", status.point.purpose
                ),
            },
        }
        // Why each better way was not taken.
        for (candidate, why) in &status.failures {
            println!(
                "{:<24} {:<9} {:<42} {why}",
                "",
                "tried",
                format!("{} {}", candidate.hook.method(), candidate.hook.target()),
            );
        }
    }
    // TLS hooks are per file: the libraries on disk here and what running programs use
    // (programs started later are looked at as they start).
    match probes.tls().unavailable() {
        Some(why) => println!("{:<24} {:<9} {:<42} {why}", "tls.openssl", "failed", "-"),
        None => {
            let mut libraries: Vec<_> = probes.tls().libraries().collect();
            libraries.sort_by_key(|(path, ..)| path.to_path_buf());
            if libraries.is_empty() {
                println!(
                    "{:<24} {:<9} {:<42} no OpenSSL libssl in the system library directories",
                    "tls.openssl", "-", "-"
                );
            }
            for (path, kind, outcome) in libraries {
                let point = match (outcome, kind) {
                    (LibraryOutcome::Hooked(TlsStack::Go { .. }), _) => "tls.go",
                    (LibraryOutcome::Failed(_), ObjectKind::Executable) => "tls.executable",
                    _ => "tls.openssl",
                };
                let (state, note) = match outcome {
                    LibraryOutcome::Hooked(stack) => (
                        "attached",
                        format!("TLS plaintext ({})", stack.describe(kind)),
                    ),
                    LibraryOutcome::Failed(why) => ("failed", why.clone()),
                };
                println!(
                    "{:<24} {:<9} {:<42} {note}",
                    point,
                    state,
                    format!("uprobe {}", path.display())
                );
            }
        }
    }
    let (attached, total) = probes.attached_count();
    let failed = total - attached;
    if failed == 0 {
        println!("{attached} of {total} probe points attached");
    } else {
        // Required points that fail stop `Probes::load` before this.
        println!(
            "{attached} of {total} probe points attached; {failed} optional ones are not available on this kernel (their `tried` lines say why)"
        );
    }
    ExitCode::SUCCESS
}

/// `probes --stats`: what each of netsonde's programs costs while the node's traffic runs.
fn program_stats(window: Duration) -> ExitCode {
    let runs = match netsonde::probes::stats::measure(window) {
        Ok(runs) => runs,
        Err(e) => return fail(&e),
    };
    if runs.is_empty() {
        eprintln!("netsonde: no netsonde programs are loaded; start `netsonde run` first");
        return ExitCode::FAILURE;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "netsonde's programs over {} s (BPF run-time statistics, {} CPUs)",
        window.as_secs(),
        cpus
    );
    println!(
        "{:<16} {:>6} {:>12} {:>9} {:>10} {:>7}",
        "PROGRAM", "COPIES", "RUNS", "NS/RUN", "TOTAL MS", "CPU %"
    );
    let idle = runs.iter().filter(|p| p.runs == 0).count();
    for p in runs.iter().filter(|p| p.runs > 0) {
        println!(
            "{:<16} {:>6} {:>12} {:>9.0} {:>10.1} {:>7.3}",
            p.name,
            p.copies,
            p.runs,
            p.ns_per_run(),
            p.run_ns as f64 / 1e6,
            p.run_ns as f64 / window.as_nanos() as f64 / cpus * 100.0
        );
    }
    if idle > 0 {
        println!("{idle} more loaded programs did not run (no such traffic, or not attached here)");
    }
    let total: u64 = runs.iter().map(|p| p.run_ns).sum();
    println!(
        "all programs: {:.1} ms, {:.3} % of the machine's CPU",
        total as f64 / 1e6,
        total as f64 / window.as_nanos() as f64 / cpus * 100.0
    );
    ExitCode::SUCCESS
}
