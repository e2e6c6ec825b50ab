#!/usr/bin/env bash
# Runs every test of the project: formatting and lints, unit and property
# tests, the deterministic TCP simulations, the topology self-test and the
# namespace tests against the Linux kernel. Needs root (namespaces, XDP).
#
# usage: scripts/test.sh [--no-setup] [--quick]
#   --no-setup  skip scripts/setup.sh (packages already installed)
#   --quick     skip fmt/clippy and the bench and fuzz smoke runs
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cd "$root"
setup=1
quick=0
for a in "$@"; do
    case "$a" in
        --no-setup) setup=0 ;;
        --quick) quick=1 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "test.sh: unknown option $a" >&2; exit 2 ;;
    esac
done

step() { printf '\n=== %s\n' "$*"; }

if [[ $setup == 1 ]]; then
    step "set-up"
    bash "$here/setup.sh" --quiet
fi
[[ -f "$HOME/.cargo/env" ]] && source "$HOME/.cargo/env"

if [[ $quick == 0 ]]; then
    step "cargo fmt --check"
    cargo fmt --all -- --check
    step "cargo clippy -D warnings"
    cargo clippy --workspace --all-targets --locked -- -D warnings
fi

step "build"
cargo build --workspace --all-targets --locked

# From here on a failing suite does not stop the others: the run reports
# every failure, and the exit status says whether there was one.
status=0
step "topology self-test"
bash "$here/test-topology.sh" || status=1

step "cargo test (unit, property, simulation, namespace tests)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
((PIPESTATUS[0] == 0)) || status=1
set -e

if [[ $quick == 0 ]]; then
    step "bench smoke: a short compare run, outputs validated"
    bash "$here/bench-smoke.sh" || status=1
    step "fuzz smoke: every target for a bounded time"
    bash "$here/fuzz-smoke.sh" || status=1
fi

# One closing line over every test binary.
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '^test result: .* ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
echo
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
