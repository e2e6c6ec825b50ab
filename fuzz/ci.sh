#!/usr/bin/env bash
# Runs every fuzz target for a bounded time on its corpus (for CI).
# Needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz).
# Usage: fuzz/ci.sh [seconds-per-target]   (default 20)
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-20}"
# New inputs go to a scratch directory; the kept corpus is read as seed only,
# so a CI run leaves the repository unchanged.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in wire_parsers tcp_segment udp_datagram listener_input established_input app_protocols capture_filter; do
    echo "fuzz: $t for ${secs}s"
    mkdir -p "$scratch/$t"
    cargo +nightly fuzz run "$t" "$scratch/$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048
done
