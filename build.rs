//! Provides netsonde's eBPF object at `$OUT_DIR/netsonde.bpf.o`.
//!
//! * With the eBPF toolchain present (rustup, a nightly with rust-src, bpf-linker on PATH) the
//!   programs in `ebpf/probes` are built with aya-build.
//! * Without it, the committed object `ebpf/prebuilt/netsonde.bpf.o` is used, so a plain
//!   `cargo build` / `cargo install --path .` works on stable Rust alone. A warning says so.
//!
//! `NETSONDE_EBPF=build|prebuilt` forces one or the other (`auto` by default).
//! After a fresh build the object is compared with the committed one:
//! `NETSONDE_EBPF_UPDATE=1` copies the fresh object over it, `NETSONDE_EBPF_CHECK=1` makes a
//! difference an error (CI), otherwise a difference is a warning.
//!
//! The build is reproducible: cargo's `trim-paths` (enabled for the nested nightly build only)
//! rewrites the checkout, registry and toolchain paths in the debug info, so the object does not
//! depend on where the repository or `$HOME` lives.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

const OBJECT: &str = "netsonde.bpf.o";
const PREBUILT: &str = "ebpf/prebuilt/netsonde.bpf.o";
/// The toolchain that built the committed object: a different one cannot be expected to
/// produce the same bytes, so a mismatch is reported as such.
const PREBUILT_TOOLCHAIN: &str = "ebpf/prebuilt/toolchain.txt";
const EBPF_PACKAGE: &str = "netsonde-ebpf";
/// The bin target of the eBPF crate; aya-build copies it to `$OUT_DIR/<name>`.
const EBPF_BIN: &str = "netsonde";
/// The pinned nightly that built the committed object (ebpf/install-toolchain.sh installs it).
const TOOLCHAIN: &str = "nightly-2026-05-20";

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let prebuilt = manifest_dir.join(PREBUILT);
    let out = out_dir.join(OBJECT);

    for var in [
        "NETSONDE_EBPF",
        "NETSONDE_EBPF_UPDATE",
        "NETSONDE_EBPF_CHECK",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    for path in [
        "ebpf/common",
        "ebpf/probes",
        "Cargo.lock",
        PREBUILT,
        PREBUILT_TOOLCHAIN,
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            manifest_dir.join(path).display()
        );
    }

    let mode = env::var("NETSONDE_EBPF").unwrap_or_else(|_| "auto".into());
    let toolchain = match mode.as_str() {
        "prebuilt" => Err("NETSONDE_EBPF=prebuilt".to_string()),
        "auto" | "build" => ebpf_toolchain(),
        other => {
            return Err(format!(
                "NETSONDE_EBPF={other}: expected auto, build or prebuilt"
            ));
        }
    };
    match toolchain {
        Ok(()) => {
            build(&manifest_dir, &out_dir)?;
            strip_dwarf(&out_dir.join(EBPF_BIN), &out)?;
            println!("cargo:rustc-env=NETSONDE_EBPF_SOURCE=built from source");
            compare_with_prebuilt(&out, &prebuilt, &manifest_dir.join(PREBUILT_TOOLCHAIN))
        }
        Err(why) if mode == "build" => Err(format!("NETSONDE_EBPF=build but {why}")),
        Err(why) => {
            if !prebuilt.exists() {
                return Err(format!(
                    "cannot build the eBPF programs ({why}) and {PREBUILT} is missing"
                ));
            }
            if mode == "auto" {
                println!(
                    "cargo:warning=using the prebuilt eBPF object {PREBUILT} ({why}); \
                     run ebpf/install-toolchain.sh to build it from source"
                );
            }
            fs::copy(&prebuilt, &out).map_err(|e| format!("copy {PREBUILT}: {e}"))?;
            println!("cargo:rustc-env=NETSONDE_EBPF_SOURCE=prebuilt ({PREBUILT})");
            Ok(())
        }
    }
}

/// Checks that the pieces aya-build needs are installed; says which one is missing.
fn ebpf_toolchain() -> Result<(), String> {
    if find_in_path("rustup").is_none() {
        return Err("rustup is not on PATH".into());
    }
    if find_in_path("bpf-linker").is_none() {
        return Err("bpf-linker is not on PATH".into());
    }
    let sysroot = Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--print", "sysroot"])
        .output()
        .map_err(|e| format!("rustup run {TOOLCHAIN} failed: {e}"))?;
    if !sysroot.status.success() {
        return Err(format!("the {TOOLCHAIN} toolchain is not installed"));
    }
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    if !Path::new(&sysroot)
        .join("lib/rustlib/src/rust/library/core")
        .is_dir()
    {
        return Err(format!("rust-src is not installed for {TOOLCHAIN}"));
    }
    Ok(())
}

fn build(manifest_dir: &Path, out_dir: &Path) -> Result<(), String> {
    // The nested `cargo build` inherits this process's environment. Ask it for trim-paths so
    // the object is the same whatever the checkout, $HOME or target directory.
    // SAFETY: build scripts are single-threaded; nothing reads the environment concurrently.
    unsafe {
        env::set_var("CARGO_UNSTABLE_TRIM_PATHS", "true");
        env::set_var("CARGO_PROFILE_RELEASE_TRIM_PATHS", "all");
    }
    let root = manifest_dir.join("ebpf/probes");
    let root = root.to_str().ok_or("non-UTF-8 checkout path")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: EBPF_PACKAGE,
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(TOOLCHAIN),
    )
    .map_err(|e| format!("building the eBPF programs failed: {e:#}"))?;
    if !out_dir.join(EBPF_BIN).exists() {
        return Err("aya-build produced no eBPF object".into());
    }
    Ok(())
}

/// Drops the DWARF sections: aya reads only `.BTF`/`.BTF.ext` (which bpf-linker generated from
/// the DWARF), and DWARF is six sevenths of the object that gets committed.
fn strip_dwarf(input: &Path, output: &Path) -> Result<(), String> {
    let data = fs::read(input).map_err(|e| format!("read {}: {e}", input.display()))?;
    let mut builder = object::build::elf::Builder::read(data.as_slice())
        .map_err(|e| format!("parse the eBPF object: {e}"))?;
    for section in builder.sections.iter_mut() {
        let name = section.name.as_slice();
        if name.starts_with(b".debug_") || name.starts_with(b".rel.debug_") {
            section.delete = true;
        }
    }
    // LLVM's BPF objects keep section names in `.strtab`; the writer wants its own table.
    let shstrtab = builder.sections.add();
    shstrtab.name = b".shstrtab".to_vec().into();
    shstrtab.sh_type = object::elf::SHT_STRTAB;
    shstrtab.data = object::build::elf::SectionData::SectionString;
    let mut stripped = Vec::new();
    builder
        .write(&mut stripped)
        .map_err(|e| format!("write the eBPF object: {e}"))?;
    fs::write(output, stripped).map_err(|e| format!("write {}: {e}", output.display()))
}

fn compare_with_prebuilt(
    fresh: &Path,
    prebuilt: &Path,
    toolchain_file: &Path,
) -> Result<(), String> {
    let fresh_bytes = fs::read(fresh).map_err(|e| format!("read {}: {e}", fresh.display()))?;
    let toolchain = toolchain_description();
    let committed = fs::read(prebuilt).ok();
    let recorded = fs::read_to_string(toolchain_file).unwrap_or_default();
    if env::var_os("NETSONDE_EBPF_UPDATE").is_some_and(|v| v == "1") {
        if committed.as_deref() != Some(fresh_bytes.as_slice()) || recorded != toolchain {
            fs::create_dir_all(prebuilt.parent().expect("prebuilt has a parent"))
                .map_err(|e| e.to_string())?;
            fs::write(prebuilt, &fresh_bytes).map_err(|e| format!("update {PREBUILT}: {e}"))?;
            fs::write(toolchain_file, &toolchain)
                .map_err(|e| format!("update {PREBUILT_TOOLCHAIN}: {e}"))?;
            println!("cargo:warning=updated {PREBUILT} and {PREBUILT_TOOLCHAIN}; commit them");
        }
        return Ok(());
    }
    if committed.as_deref() == Some(fresh_bytes.as_slice()) {
        return Ok(());
    }
    let msg = if committed.is_none() {
        format!(
            "there is no committed eBPF object at {PREBUILT}: run `NETSONDE_EBPF_UPDATE=1 cargo build` and commit it"
        )
    } else if recorded.trim() != toolchain.trim() {
        format!(
            "the committed eBPF object was built with [{}], this build used [{}]: different compilers \
             give different bytes; rebuild it with `NETSONDE_EBPF_UPDATE=1 cargo build` if the new \
             toolchain is intended",
            recorded.trim().replace('\n', "; "),
            toolchain.trim().replace('\n', "; ")
        )
    } else {
        format!(
            "the freshly built eBPF object differs from {PREBUILT}: run `NETSONDE_EBPF_UPDATE=1 \
             cargo build` and commit the object"
        )
    };
    if env::var_os("NETSONDE_EBPF_CHECK").is_some_and(|v| v == "1") {
        return Err(msg);
    }
    println!("cargo:warning={msg}");
    Ok(())
}

/// `rustc -V` of the eBPF toolchain and `bpf-linker --version`, one per line.
fn toolchain_description() -> String {
    let version = |cmd: &mut Command| {
        cmd.output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let rustc = version(Command::new("rustup").args(["run", TOOLCHAIN, "rustc", "-V"]));
    let linker = version(Command::new("bpf-linker").arg("--version"));
    format!("{rustc}\n{linker}\n")
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
