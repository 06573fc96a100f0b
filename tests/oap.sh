#!/usr/bin/env bash
# Apache SkyWalking OAP for tests/skywalking.rs: the jars of tests/support/oap/pom.xml (OAP's
# server-starter and all its modules, from Maven Central) copied once into
# ${CARGO_TARGET_DIR:-target}/tmp/oap-<version>/lib. A second run finds them and does nothing.
# Maven's own cache (~/.m2) keeps the downloads (132 MiB, about a minute on a fresh machine).
set -euo pipefail
cd "$(dirname "$0")/.."
pom=tests/support/oap/pom.xml
version=$(sed -n 's:.*<skywalking.version>\(.*\)</skywalking.version>.*:\1:p' "$pom")
dir="${CARGO_TARGET_DIR:-target}/tmp/oap-$version"
if [ -f "$dir/complete" ]; then
    echo "OAP $version: there ($dir)"
    exit 0
fi
command -v mvn >/dev/null || { echo "OAP: Maven (mvn) is not installed" >&2; exit 1; }
rm -rf "$dir"
mkdir -p "$dir"
mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DoutputDirectory="$(realpath "$dir")/lib" -DincludeScope=runtime
touch "$dir/complete"
echo "OAP $version: $(ls "$dir/lib" | wc -l) jars in $dir/lib"
