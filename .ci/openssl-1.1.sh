#!/usr/bin/env bash
# Unpacks (does not install) Debian 11's OpenSSL 1.1.1 — libssl.so.1.1, libcrypto.so.1.1 and
# the openssl binary linked to them — into $1, for the TLS test that checks netsonde hooks
# OpenSSL 1.1 as well as 3 (Debian 12 ships only 3). Uses the machine's own Debian mirror, as
# configured for apt, with a throw-away apt state: the system's sources are not touched.
set -euo pipefail
dest="$1"
if [ -x "$dest/usr/bin/openssl" ]; then
    exit 0
fi
mirror=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | head -1)
if [ -z "$mirror" ]; then
    mirror=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | head -1)
fi
if [ -z "$mirror" ]; then
    echo "no Debian mirror configured for apt; the OpenSSL 1.1 test will be skipped" >&2
    exit 0
fi
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
mkdir -p "$state/lists/partial" "$state/archives/partial"
echo "deb $mirror bullseye main" > "$state/sources.list"
apt_state=(-o "Dir::Etc::SourceList=$state/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$state/lists" -o "Dir::Cache::Archives=$state/archives"
    -o APT::Sandbox::User=root)
# Debian 11 will leave the main mirror one day: then say so, and the test says it skipped.
if ! apt-get -q "${apt_state[@]}" update \
    || ! (cd "$state" && apt-get -q "${apt_state[@]}" download libssl1.1 openssl/bullseye); then
    echo "Debian 11's OpenSSL 1.1 could not be fetched; the OpenSSL 1.1 test will be skipped" >&2
    exit 0
fi
mkdir -p "$dest"
for deb in "$state"/*.deb; do
    dpkg -x "$deb" "$dest"
done
LD_LIBRARY_PATH="$dest/usr/lib/x86_64-linux-gnu" "$dest/usr/bin/openssl" version
