//! Linker settings for the eBPF object.
//!
//! bpf-linker passes `--bpf-expand-memcpy-in-order` to LLVM unless told otherwise. That option
//! keeps a `memcpy`'s loads and stores in order for the kernel JITs' copy pattern matchers, but
//! it also sets LLVM's store limits for `memset` and `memmove` to zero: every struct zeroed or
//! moved (an event's header, the network layer's findings) became a call into the exported
//! byte-at-a-time loop, four instructions per byte, on every syscall and packet. Without it
//! LLVM writes them as a few word-sized stores in place (benchmarks/RESULTS.md, "Zeroing and
//! copying in place").

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Only for the eBPF target: a host `cargo check` of this crate links with the host linker.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("bpf") {
        println!("cargo:rustc-link-arg=--disable-expand-memcpy-in-order");
    }
}
