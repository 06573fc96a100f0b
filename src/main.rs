//! Interim entry point: loads the probes and prints what attached. The CLI comes next.
fn main() {
    tracing_subscriber::fmt()
        .with_env_filter("netsonde=info")
        .init();
    let settings = netsonde::probes::ProbeSettings {
        capture_bytes: netsonde_common::DEFAULT_CAPTURE,
        ring_buffer_bytes: 8 << 20,
        btf_path: netsonde::probes::offsets::VMLINUX_BTF.into(),
        ..Default::default()
    };
    match netsonde::probes::Probes::load(&settings) {
        Ok(probes) => {
            for status in probes.report() {
                let how = status.attached.map(|c| c.hook.target()).unwrap_or_default();
                println!("{:<24} {how}", status.point.name);
            }
        }
        Err(e) => eprintln!("netsonde: {e}"),
    }
}
