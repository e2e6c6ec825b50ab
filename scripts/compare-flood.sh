#!/usr/bin/env bash
# Connections under a SYN flood, the kernel and the stack side by side:
# `xstack-bench serve` on the kernel and on the stack (library mode) in
# turn on core 1; from the peer namespace, on core 0, `xstack-bench run
# crr` (a kernel client: connect, 64-byte request and response, the server
# closes) first alone, then while `xstack-bench flood syn` sends SYNs from
# random sources (198.19.0.0/16) at --rate (0: as fast as the peer's core
# sends them). The server's gateway is the peer, which does not forward:
# its answers to the random sources go nowhere, as on the Internet.
#
# Prints per server: connections/s and latency alone and under the flood,
# and the SYNs the flood offered per second. Needs root and the release
# binaries (cargo build --release). Bounded: every run has a timeout; the
# topology and every process it starts are removed on exit.
#
# usage: scripts/compare-flood.sh [--rate PPS] [--duration S]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cd "$root"
# shellcheck source=scripts/lib.sh
source "$here/lib.sh"
bench=$root/target/release/xstack-bench
rate=200000
duration=5
while (($#)); do
    case $1 in
        --rate) rate=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        -h|--help) sed -n 2,16p "$0"; exit 0 ;;
        *) echo "compare-flood: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ $rate =~ ^[0-9]+$ ]] || { echo "compare-flood: --rate PPS (0: as fast as possible)" >&2; exit 2; }
[[ $duration =~ ^[1-9][0-9]*$ && $duration -le 60 ]] || { echo "compare-flood: --duration 1..60" >&2; exit 2; }
xs_ensure_root "$0" "$@"
[[ -x $bench ]] || xs_die "no $bench: run cargo build --release first"

name="fl$$"
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    "$here/topology.sh" down "$name" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT
"$here/topology.sh" up "$name" >"$tmp/env"
# shellcheck disable=SC1091
source "$tmp/env"
# The kernel's answers take the same way as the stack's.
ip netns exec "$NS_B" ip route add default via "$IP_A"

# One crr run; prints "conn/s p50 p99 errors".
crr() { # server_ip label
    timeout $((duration + 30)) ip netns exec "$NS_A" "$bench" run crr --stack kernel-default \
        --target "$1" --port 7100 --duration "$duration" --warmup 1 --cpus 0 2>"$tmp/run.err" >"$tmp/run.out" || true
    python3 - "$tmp/run.out" "$2" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
try:
    r = json.loads(text[text.index("{"):])
except ValueError:
    print(f"{sys.argv[2]:<26} no result")
    sys.exit()
l = r.get("latency") or {}
err = f" (first: {r['first_error']})" if r.get("first_error") else ""
print(f"{sys.argv[2]:<26} {r['ops_per_s']:>9.0f} conn/s  p50 {l.get('p50_ns', 0) / 1e3:>8.1f} us"
      f"  p99 {l.get('p99_ns', 0) / 1e3:>9.1f} us  errors {r.get('errors', 0)}{err}")
EOF
}

echo "SYN flood: ${rate:-0} SYN/s offered (0: the peer's full rate); crr for ${duration} s"
for stack in kernel-default xstack; do
    if [[ $stack == xstack ]]; then
        server=$IP_STACK
        extra=(--xstack-if "$IF_B" --xstack-addr "$IP_STACK/$PREFIX" --xstack-gateway "$IP_A")
    else
        server=$IP_B_KERNEL
        extra=(--addr "$IP_B_KERNEL")
    fi
    ip netns exec "$NS_B" taskset -c 1 "$bench" serve --stack "$stack" --max-time $((4 * duration + 60)) \
        "${extra[@]}" >"$tmp/serve.out" 2>"$tmp/serve.err" &
    serve=$!
    pids+=("$serve")
    for _ in $(seq 100); do grep -q "phase ready" "$tmp/serve.out" "$tmp/serve.err" && break; sleep 0.1; done
    crr "$server" "$stack alone"
    ip netns exec "$NS_A" "$bench" flood syn --ifname "$IF_A" --dst-mac "$MAC_B" --target "$server:7101" \
        --duration $((duration + 30)) --rate "$rate" --cpu 0 >"$tmp/flood.json" 2>/dev/null &
    flood=$!
    pids+=("$flood")
    sleep 1
    crr "$server" "$stack under flood"
    kill -TERM "$flood" 2>/dev/null || true
    wait "$flood" 2>/dev/null || true
    python3 -c "import json,sys; f=json.load(open(sys.argv[1])); print(f'{\"\":<26} the flood: {f[\"per_second\"]:.0f} SYN/s sent for {f[\"seconds\"]:.1f} s')" "$tmp/flood.json"
    kill -TERM "$serve" 2>/dev/null || true
    wait "$serve" 2>/dev/null || true
done
