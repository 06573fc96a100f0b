#!/usr/bin/env bash
# Installs what building netsonde's eBPF programs from source needs, on Debian 12 (as root, or
# with sudo for apt): the pinned nightly toolchain with rust-src, LLVM 22, and bpf-linker built
# against it. Without these, `cargo build` uses the committed ebpf/prebuilt object.
#
# The nightly is pinned: it built ebpf/prebuilt/ (see toolchain.txt), and another one cannot be
# expected to produce the same bytes, which CI checks. build.rs names the same toolchain.
#
# Safe to run again: what is already there is kept.
set -euo pipefail

BPF_LINKER_VERSION=0.13.0
LLVM_MAJOR=22
NIGHTLY=nightly-2026-05-20

say() { printf 'install-toolchain: %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# gcc, g++, libc6-dev: bpf-linker's build compiles a C wrapper around LLVM; make: the agent's
# allocator (jemalloc) is built from its C sources.
packages=(llvm-${LLVM_MAJOR}-dev libpolly-${LLVM_MAJOR}-dev libzstd-dev zlib1g-dev gcc g++ libc6-dev make)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! rustup run "$NIGHTLY" rustc -V >/dev/null 2>&1; then
    say "installing the $NIGHTLY toolchain"
    rustup toolchain install "$NIGHTLY" --profile minimal
fi
if ! rustup component list --installed --toolchain "$NIGHTLY" | grep -q '^rust-src'; then
    say "adding rust-src to $NIGHTLY"
    rustup component add rust-src --toolchain "$NIGHTLY"
fi

if ! bpf-linker --version 2>/dev/null | grep -q "bpf-linker ${BPF_LINKER_VERSION}"; then
    say "building bpf-linker ${BPF_LINKER_VERSION} against LLVM ${LLVM_MAJOR}"
    LLVM_PREFIX=/usr/lib/llvm-${LLVM_MAJOR} cargo install bpf-linker \
        --version "${BPF_LINKER_VERSION}" --locked --force \
        --no-default-features --features "llvm-${LLVM_MAJOR}"
fi

say "ready: $(rustup run "$NIGHTLY" rustc -V), $(bpf-linker --version)"
