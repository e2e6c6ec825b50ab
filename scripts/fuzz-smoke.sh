#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time on its corpus (CI's fuzz
# smoke). Needs a nightly toolchain (libFuzzer's sanitizer flags); installs
# cargo-fuzz from crates.io when it is missing.
#
# usage: scripts/fuzz-smoke.sh [seconds-per-target]   (default 15)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
secs=${1:-15}
[[ -f "$HOME/.cargo/env" ]] && source "$HOME/.cargo/env"
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz-smoke: SKIPPED, no nightly toolchain here (rustup toolchain install nightly)" >&2
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz >/dev/null
fi
exec bash "$root/fuzz/ci.sh" "$secs"
