#!/usr/bin/env bash
# The test command: installs what the tests need on Debian 12 (as root; each step is skipped
# when what it installs is already there, so running it again costs seconds), then runs
# `cargo test` with any arguments given. Not root: nothing is installed, and the tests that
# need what is missing print `skipped: …` and pass.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
# Go (for the gRPC-Go test peer) lives here on these machines.
command -v go >/dev/null || export PATH="/usr/local/go/bin:$PATH"

say() { printf '\n== %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    say "not root: installing nothing (capture tests will say what they skip)"
    exec cargo test "$@"
fi

say "system packages"
# nginx-light, curl: real servers and clients for the capture tests; nghttp2-client: h2load
# for the HTTP/2 tests; openssl: certificates for the OTLP TLS test; gcc: builds the
# sendmmsg/recvmmsg test client; g++: libFuzzer for the fuzz targets; util-linux: setpriv;
# iproute2, nftables: the kernel-layer tests' network namespaces and packet drops; qemu,
# busybox-static, cpio, xz-utils, binutils: the kernel matrix (Debian kernels booted in qemu,
# their packages fetched with apt into /var/cache/netsonde/vm-kernels); python3-pip: the
# Python packages below; make: the agent's allocator (jemalloc) builds from C sources;
# tinyproxy: a real HTTP proxy for the exports through a proxy; openjdk-17-jre-headless, maven,
# postgresql: SkyWalking OAP (its jars fetched by Maven) with its storage, for the OAP test;
# nodejs: a Node.js HTTPS peer for the TLS tests; libssl-dev: a client linked with OpenSSL
# statically, for the TLS tests.
packages=(nginx-light curl nghttp2-client openssl gcc g++ libc6-dev make util-linux ca-certificates
    iproute2 nftables qemu-system-x86 busybox-static cpio xz-utils binutils python3-pip tinyproxy
    openjdk-17-jre-headless maven postgresql nodejs libssl-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # Installing nginx must not start the system's nginx service (the tests start their own,
    # and a failed service start would fail the install): forbid service starts while apt runs.
    created_policy=no
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        created_policy=yes
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get install -y -q --no-install-recommends "${missing[@]}"
    if [ "$created_policy" = yes ]; then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
else
    echo "all there"
fi

say "python packages"
# rotel: a real OpenTelemetry collector (the OTLP tests export to it); opentelemetry-proto:
# decodes what it forwards. Pinned: rotel is pre-release. grpcio: real gRPC server and client
# for the gRPC tests. hypercorn: a server that answers `Upgrade: h2c` (nginx does not); h2 pinned
# because hypercorn 0.17.3 breaks on h2 4.2+.
PY_PACKAGES="rotel==0.0.1a15 opentelemetry-proto==1.45.2 grpcio==1.85.3 hypercorn==0.17.3 h2==4.1.0"
# shellcheck disable=SC2086
if python3 -m pip install -q --dry-run $PY_PACKAGES 2>/dev/null | grep -q "Would install"; then
    python3 -m pip install -q $PY_PACKAGES 2>/dev/null \
        || python3 -m pip install -q --break-system-packages $PY_PACKAGES
elif ! python3 -c 'import rotel, grpc, hypercorn, h2, opentelemetry.proto' 2>/dev/null; then
    python3 -m pip install -q $PY_PACKAGES 2>/dev/null \
        || python3 -m pip install -q --break-system-packages $PY_PACKAGES
else
    echo "all there"
fi

say "Go programs of the tests"
tests/go-programs.sh

say "SkyWalking OAP (Maven Central)"
tests/oap.sh

say "OpenSSL 1.1 (unpacked for the TLS test, not installed)"
.ci/openssl-1.1.sh /opt/netsonde-test/openssl-1.1

say "tracefs"
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing

say "cargo test $*"
exec cargo test "$@"
