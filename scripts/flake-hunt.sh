#!/usr/bin/env bash
# Runs every test many times over to find the ones that fail only now and
# then. Not part of the README's test command: a hunt takes long.
#
# usage: scripts/flake-hunt.sh [--runs N] [--budget SECONDS] [--release]
#                              [--only REGEX] [--no-namespace]
#   --runs N        runs of every test (default 50)
#   --budget S      wall-clock bound of the whole hunt (default 3600); a
#                   binary whose runs do not fit is reported with the runs
#                   it got
#   --release       hunt in release test binaries (as `cargo test --release`)
#   --only REGEX    only test binaries whose name matches (e.g. xstack_dataplane)
#   --no-namespace  skip the namespace tests (control/tests/*)
#
# Test binaries without namespaces run whole, N times, with --test-threads
# at twice the cores (contention is what brings races out). The namespace
# tests (control/tests/*: topologies, daemons) run one test at a time, N
# times each, so they neither compete for the machine's two cores nor
# hide their own flakes behind each other's load. Prints one line per
# binary (runs, failed runs, each failing test with its count) and the
# totals; exits non-zero if anything failed. Logs of failed runs are kept
# under target/flake-hunt/.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cd "$root"
[[ -f "$HOME/.cargo/env" ]] && source "$HOME/.cargo/env"

runs=50
budget=3600
profile=()
only=.
namespace=1
while (($#)); do
    case "$1" in
        --runs) runs=$2; shift ;;
        --budget) budget=$2; shift ;;
        --release) profile=(--release) ;;
        --only) only=$2; shift ;;
        --no-namespace) namespace=0 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "flake-hunt.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "flake-hunt.sh: --runs must be a positive integer" >&2; exit 2; }
[[ "$budget" =~ ^[1-9][0-9]*$ ]] || { echo "flake-hunt.sh: --budget must be a positive integer" >&2; exit 2; }

threads=$(($(nproc) * 2))
deadline=$((SECONDS + budget))
logs=target/flake-hunt
rm -rf "$logs"
mkdir -p "$logs"

echo "flake-hunt: building the test binaries" >&2
# Every binary first, as scripts/test.sh builds them: namespace tests run
# other packages' binaries (the install test stages xstack-bench), which
# `cargo test --no-run` alone does not build.
cargo build --workspace --all-targets --locked "${profile[@]}" >&2
# One line per test binary: "<src_path> <executable>".
cargo test --workspace --locked "${profile[@]}" --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["target"]["src_path"], m["executable"])
' >"$logs/binaries"

total_runs=0
total_failed=0
summary=()

# Runs "$@" once; on failure keeps the log and counts each failing test.
# Sets last_ok.
declare -A failures
run_once() {
    local tag=$1
    shift
    local log="$root/$logs/run.log"
    # stdin from /dev/null: a test's children (a server, a client, a
    # script) must not read the list of binaries this loop reads.
    if timeout 900 "$@" >"$log" 2>&1 </dev/null; then
        last_ok=1
    else
        last_ok=0
        local keep
        keep="$root/$logs/${tag//[^A-Za-z0-9_.-]/_}.$(date +%s%N).log"
        cp "$log" "$keep"
        local names
        names=$(grep -E '^test .* \.\.\. FAILED$' "$log" | sed -E 's/^test (.*) \.\.\. FAILED$/\1/' || true)
        [[ -n "$names" ]] || names="(no test named: exit status, timeout or crash; see $keep)"
        while IFS= read -r n; do
            failures["$tag :: $n"]=$((${failures["$tag :: $n"]:-0} + 1))
        done <<<"$names"
    fi
}

while read -r src exe; do
    name=$(basename "$exe")
    name=${name%-*}
    [[ "$name" =~ $only ]] || continue
    # Two binaries can share a name (a crate's library and its main): the
    # source they test tells them apart.
    name="$name:${src#"$root"/}"
    is_ns=0
    [[ "$src" == */control/tests/* ]] && is_ns=1
    if ((is_ns && !namespace)); then
        continue
    fi
    done_runs=0
    failed_runs=0
    # As cargo test does: the package's directory is the working directory.
    pushd "$(dirname "$(dirname "$src")")" >/dev/null
    if ((is_ns)); then
        # Each test alone, N times.
        mapfile -t tests < <("$exe" --list 2>/dev/null </dev/null | sed -n 's/: test$//p')
        for t in "${tests[@]}"; do
            for ((i = 0; i < runs; i++)); do
                ((SECONDS < deadline)) || break 2
                run_once "$name" "$exe" --exact "$t" --test-threads 1
                done_runs=$((done_runs + 1))
                ((last_ok)) || failed_runs=$((failed_runs + 1))
            done
        done
    else
        for ((i = 0; i < runs; i++)); do
            ((SECONDS < deadline)) || break
            run_once "$name" "$exe" --test-threads "$threads"
            done_runs=$((done_runs + 1))
            ((last_ok)) || failed_runs=$((failed_runs + 1))
        done
    fi
    popd >/dev/null
    summary+=("$(printf '%-56s runs %4d  failed %3d%s' "$name" "$done_runs" "$failed_runs" "$( ((is_ns)) && echo '  (one test at a time)')")")
    total_runs=$((total_runs + done_runs))
    total_failed=$((total_failed + failed_runs))
    echo "flake-hunt: ${summary[-1]}" >&2
done <"$logs/binaries"

echo
printf '%s\n' "${summary[@]}"
# (An empty associative array counts as unset under `set -u` in bash
# before 5.2: test the total instead of its size.)
if ((total_failed > 0)); then
    echo
    echo "failing tests (failed runs):"
    for k in "${!failures[@]}"; do
        printf '  %4d  %s\n' "${failures[$k]}" "$k"
    done | sort -rn
fi
((SECONDS < deadline)) || echo "flake-hunt: the budget of ${budget}s ran out; the runs above are what fitted" >&2
echo
echo "flake-hunt: ${total_runs} runs, ${total_failed} failed"
((total_failed == 0))
