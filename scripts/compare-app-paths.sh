#!/usr/bin/env bash
# Where should an application's connections live? Side by side on one
# topology, RR from a kernel client (xstack-bench run rr, peer namespace,
# core 0) against three servers on core 1:
#   kernel   the kernel stack, a blocking thread per connection
#   bridge   xstack-socket-echo: the daemon's workers own the connections,
#            the application's threads reach them through the socket bridge
#   library  xstack-bench serve --stack xstack: the stack in the server's
#            own thread (library mode)
# Prints one line per server and connection count. Needs root and the
# release binaries (cargo build --release). Bounded: 5 s per run; the
# topology and every process it starts are removed on exit.
#
# usage: scripts/compare-app-paths.sh [CONNECTIONS...]   (default: 1 32)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cd "$root"
bin=target/release
for b in xstack-bench xstack-socket-echo; do
    [[ -x $bin/$b ]] || { echo "compare-app-paths: $bin/$b missing: cargo build --release first" >&2; exit 2; }
done
conns=("$@")
((${#conns[@]})) || conns=(1 32)
name=cap$$
out=$(mktemp -d)
eval "$(scripts/topology.sh up "$name" --force 2>/dev/null)"
server=""
cleanup() {
    [[ -n $server ]] && kill -INT "$server" 2>/dev/null && wait "$server" 2>/dev/null
    scripts/topology.sh down "$name" >/dev/null 2>&1 || true
    rm -rf "$out"
}
trap cleanup EXIT

run() { # label target connections
    ip netns exec "$NS_A" taskset -c 0 "$bin/xstack-bench" run rr --stack kernel-default --target "$2" \
        --port 7100 --connections "$3" --duration 4 --warmup 1 --out "$out/r.json" >/dev/null 2>&1 || true
    python3 - "$1" "$3" "$out/r.json" <<'PY'
import json, sys
label, conns, path = sys.argv[1:]
try:
    d = json.load(open(path))
    print(f"{label:8} conns {conns:>3}: {d['ops_per_s']/1000:7.1f}k/s  p50 {d['latency']['p50_ns']/1000:7.1f} us  p99 {d['latency']['p99_ns']/1000:8.1f} us  errors {d['errors']}")
except Exception as e:
    print(f"{label:8} conns {conns:>3}: no result ({e})")
PY
}

start() { # wait for "$1" in the server's log
    for _ in $(seq 100); do grep -q "$1" "$out/server.log" 2>/dev/null && return; sleep 0.1; done
}

ip netns exec "$NS_B" taskset -c 1 "$bin/xstack-bench" serve --stack kernel-default --addr "$IP_B_KERNEL" \
    --max-time 60 >"$out/server.log" 2>&1 &
server=$!
ip netns exec "$NS_B" bash -c "for i in \$(seq 100); do ss -Hltn src $IP_B_KERNEL:7100 | grep -q . && exit; sleep 0.05; done"
for c in "${conns[@]}"; do run kernel "$IP_B_KERNEL" "$c"; done
kill -INT "$server"; wait "$server" 2>/dev/null || true; server=""

ip netns exec "$NS_B" "$bin/xstack-socket-echo" 7100 -i "$IF_B" -a "$IP_STACK/$PREFIX" --cores 1 >"$out/server.log" 2>&1 &
server=$!
start listening
for c in "${conns[@]}"; do run bridge "$IP_STACK" "$c"; done
kill -INT "$server"; wait "$server" 2>/dev/null || true; server=""

ip netns exec "$NS_B" taskset -c 1 "$bin/xstack-bench" serve --stack xstack --xstack-if "$IF_B" \
    --xstack-addr "$IP_STACK/$PREFIX" --max-time 60 >"$out/server.log" 2>&1 &
server=$!
sleep 2
for c in "${conns[@]}"; do run library "$IP_STACK" "$c"; done
