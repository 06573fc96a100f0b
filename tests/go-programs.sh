#!/usr/bin/env bash
# Builds the Go programs the tests run, with the machine's Go from modules pinned by each
# go.sum (the Go module proxy). Go's build cache keeps them: the tests build them again (into
# their target directory) in seconds, and so does a second run of this script. On a fresh
# machine this takes about 10 minutes on 2 cores (measured 2026-12-04: gRPC-Go peer and
# Collector 210 s, Prometheus 185 s, Helm 188 s), mostly compiling. Overlapping it with the
# Rust builds in .ci/run was tried and made CI slower, not faster.
# - tests/support/grpc_go: a real grpc-go server and client for the gRPC tests;
# - tests/support/otelcol: the OpenTelemetry Collector at one pinned release, with the
#   components of otel-config/ and of the tests' pipelines;
# - tests/support/prometheus: Prometheus (its service discovery plugins left out);
# - tests/support/k8s: kube-apiserver and etcd of one Kubernetes release (the real API server
#   of tests/kube_apiserver.rs and tests/kubernetes.rs), and Helm v4, which renders and lints
#   the chart in tests/chart.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH="/usr/local/go/bin:$PATH"
if ! command -v go >/dev/null; then
    echo "no Go here: the gRPC-Go, Collector, Prometheus and chart tests will fail to build their programs"
    exit 0
fi
# Where the tests look for them (tests/support/mod.rs, go_program): a program already there
# and up to date is left alone by `go build`, so the tests do not link it again.
out="${CARGO_TARGET_DIR:-target}/tmp"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
build() { # MODULE TAGS PACKAGE
    local name="go-$1"
    [ "$3" = . ] || name="go-$1-${3##*/}"
    (cd "tests/support/$1" && go build -buildvcs=false -trimpath -tags="$2" -o "$out/$name" "$3")
}
build grpc_go "" .
build otelcol "" .
build prometheus remove_all_sd github.com/prometheus/prometheus/cmd/prometheus
# kube-apiserver with etcd, and Helm: one module, so the k8s.io packages they share compile once.
build k8s "" .
build k8s "" helm.sh/helm/v4/cmd/helm
