#!/usr/bin/env bash
# Builds the Go programs the tests run, with the machine's Go from modules pinned by each
# go.sum (the Go module proxy), into target/tmp where the tests look for them. Go's build cache
# keeps them: a program already there and up to date is left alone, so the tests do not link it
# again, and a second run of this script takes seconds.
#
#   tests/go-programs.sh                          every program (tests/run.sh runs this)
#   tests/go-programs.sh one OUT MODULE TAGS PKG  one program into OUT (what the tests call)
#
# They are built without the compiler's optimizations (-N -l) and without symbol tables
# (-s -w): on a fresh 2-core machine that compiles in two thirds of the time (measured
# 2026-12-04: gRPC-Go peer and Collector 130 s instead of 186 s), and none of them is measured
# for speed. Overlapping this with the Rust builds in .ci/run was tried and made CI slower.
# - tests/support/grpc_go: a real grpc-go server and client for the gRPC tests;
# - tests/support/go_tls: a Go HTTPS server and client (standard library only) for the TLS
#   tests, built with its symbol table and optimized, and a stripped copy;
# - tests/support/otelcol: the OpenTelemetry Collector at one pinned release, with the
#   components of otel-config/ and of the tests' pipelines;
# - tests/support/prometheus: Prometheus (its service discovery plugins left out);
# - tests/support/k8s: kube-apiserver and etcd of one Kubernetes release (the real API server
#   of tests/kube_apiserver.rs and tests/kubernetes.rs), and Helm v4, which renders and lints
#   the chart in tests/chart.rs: one module, so the k8s.io packages they share compile once.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH="/usr/local/go/bin:$PATH"
if ! command -v go >/dev/null; then
    echo "no Go here: the gRPC-Go, Collector, Prometheus, Kubernetes and chart tests will say they skip" >&2
    [ "${1:-}" = one ] && exit 1
    exit 0
fi
build() { # OUT MODULE TAGS PACKAGE
    if [ "$2" = go_tls ]; then
        # The Go TLS peer keeps its symbol table (netsonde finds crypto/tls by it) and the
        # compiler's optimizations (the code netsonde probes is a release build's); its stripped
        # copy is the program netsonde must say it cannot read.
        (cd tests/support/go_tls && go build -buildvcs=false -trimpath -o "$1" . \
            && go build -buildvcs=false -trimpath -ldflags="-s -w" -o "$1-stripped" .)
        # The same program by a second Go release (the approved newer toolchain, which the go
        # command fetches from the module proxy): the TLS tests run against each one built.
        (cd tests/support/go_tls && GOTOOLCHAIN=go1.27.3 go build -buildvcs=false -trimpath \
            -o "$1-go1.27" .) || echo "go1.27.3 could not build the Go TLS peer: its tests use one Go release" >&2
        return
    fi
    (cd "tests/support/$2" && go build -buildvcs=false -trimpath -gcflags="all=-N -l" \
        -ldflags="-s -w" -tags="$3" -o "$1" "$4")
}
if [ "${1:-}" = one ]; then
    shift
    build "$@"
    exit
fi
out="${CARGO_TARGET_DIR:-target}/tmp"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
all() { # MODULE TAGS PACKAGE, named as tests/support/mod.rs names them
    local name="go-$1"
    [ "$3" = . ] || name="go-$1-${3##*/}"
    build "$out/$name" "$@"
}
all grpc_go "" .
all go_tls "" .
all otelcol "" .
all prometheus remove_all_sd github.com/prometheus/prometheus/cmd/prometheus
all k8s "" .
all k8s "" helm.sh/helm/v4/cmd/helm
