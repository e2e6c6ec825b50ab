#!/usr/bin/env bash
# Load generators side by side against the same kernel servers: wrk and
# redis-benchmark (the usual tools, on kernel sockets) against
# xstack-bench's http and redis workloads on kernel sockets (kernel-spin)
# and on the stack (xstack, AF_XDP on the client's interface), one after
# the other in one run on one topology.
#
#   nginx  1 KiB file, worker_processes 1:  wrk -t1 -c32 -d5s
#   redis  GET, 50 connections:              redis-benchmark -t get -c 50
#
# Placement (two cores): the servers on core 1 (--server-core), every load
# generator on core 0, one thread each: the question is what one core of
# load generation drives. Each figure is requests/s and p50 latency; the
# ratio column is each generator against the usual tool. Needs root, the
# release binaries (cargo build --release) and the servers
# (scripts/setup.sh). Bounded: every run has a timeout; the topology and
# every process it starts are removed on exit.
#
# usage: scripts/compare-loadgen.sh [--duration S] [--server-core C]
#            [--only nginx|redis]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cd "$root"
# shellcheck source=scripts/lib.sh
source "$here/lib.sh"
bin=$root/target/release
duration=5
server_core=1
only=""
while (($#)); do
    case $1 in
        --duration) duration=$2; shift 2 ;;
        --server-core) server_core=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        -h|--help) sed -n 2,21p "$0"; exit 0 ;;
        *) echo "compare-loadgen: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ $duration =~ ^[1-9][0-9]*$ && $duration -le 60 ]] || { echo "compare-loadgen: --duration 1..60" >&2; exit 2; }
[[ -x $bin/xstack-bench ]] || { echo "compare-loadgen: $bin/xstack-bench missing: cargo build --release first" >&2; exit 2; }
for t in redis-server redis-benchmark nginx wrk; do
    command -v "$t" >/dev/null || { echo "compare-loadgen: $t missing: scripts/setup.sh installs it" >&2; exit 2; }
done
name=clg$(($$ % 100000))
out=$(mktemp -d)
# nginx's worker runs as an unprivileged user: it must reach the files
# (mktemp makes the directory 0700; every request would be a 403).
chmod 755 "$out"
facts=$(scripts/topology.sh up "$name" --force 2>"$out/topology.log") || { cat "$out/topology.log" >&2; exit 1; }
eval "$facts"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    scripts/topology.sh down "$name" >/dev/null 2>&1 || true
    rm -rf "$out"
}
trap cleanup EXIT

# The servers listen on the kernel in NS_A; the load comes from NS_B:
# the usual tools from its kernel address, xstack-bench on the stack from
# IP_STACK on IF_B (the XDP program passes everything else to the kernel).
serving() { # addr port
    xs_wait_serving "$NS_B" "$1" "$2"
}

declare -A fig
record() { # key value
    fig[$1]=$2
    printf '%-40s %12s\n' "$1" "$2"
}

# xstack-bench with one thread on core 0; prints "<requests/s> <p50 us>
# <errors>" from its JSON.
ours() { # stack workload args...
    local stack=$1
    shift
    local xs=()
    if [[ $stack == xstack ]]; then
        xs=(--xstack-if "$IF_B" --xstack-addr "$IP_STACK/$PREFIX" --xstack-neighbour "$IP_A=$MAC_A")
    fi
    ip netns exec "$NS_B" timeout $((duration + 60)) "$bin/xstack-bench" run "$@" --stack "$stack" "${xs[@]}" \
        --threads 1 --cpus 0 --warmup 1 --duration "$duration" --out "$out/run.json" --quiet \
        >"$out/run.log" 2>&1 || { echo "compare-loadgen: xstack-bench $stack $1 failed:" >&2; cat "$out/run.log" >&2; echo "- - -"; return; }
    python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
lat = r.get("latency") or {}
print("%.0f %.0f %d" % (r["ops_per_s"], lat.get("p50_ns", 0) / 1000, r["errors"]))
if r["errors"]:
    print("first error:", r.get("first_error"), (r.get("app") or {}).get("errors"), file=sys.stderr)' "$out/run.json"
}

ours_round() { # label stack workload args...
    local label=$1
    shift
    read -r rps p50 errors < <(ours "$@")
    record "$label requests/s" "$rps"
    record "$label p50 us" "$p50"
    [[ $errors == 0 || $errors == - ]] || echo "compare-loadgen: $label: $errors errors" >&2
}

nginx_rounds() {
    local dir=$out/nginx
    mkdir -p "$dir/html" "$dir/logs"
    head -c 1024 /dev/zero | tr '\0' x >"$dir/html/1k.html"
    cat >"$dir/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/logs/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; server { listen $IP_A:8080; root $dir/html; } }
EOF
    ip netns exec "$NS_A" taskset -c "$server_core" nginx -c "$dir/nginx.conf" -p "$dir" >"$dir/out.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    serving "$IP_A" 8080
    local url=http://$IP_A:8080/1k.html
    ip netns exec "$NS_B" timeout $((duration + 30)) taskset -c 0 wrk -t1 -c32 -d"${duration}s" --latency "$url" \
        >"$out/wrk.txt" 2>&1 || true
    # wrk counts every response; a figure of error pages is no figure.
    if grep -q "Non-2xx" "$out/wrk.txt"; then
        echo "compare-loadgen: wrk got error responses: $(grep Non-2xx "$out/wrk.txt")" >&2
        exit 1
    fi
    record "nginx wrk requests/s" "$(awk '/Requests\/sec/ {print $2}' "$out/wrk.txt")"
    record "nginx wrk p50 us" "$(awk '$1 == "50%" {v=$2; if (v ~ /ms$/) {sub(/ms/,"",v); v*=1000} else if (v ~ /us$/) {sub(/us/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1e6}; print v}' "$out/wrk.txt")"
    ours_round "nginx xstack-bench/kernel-spin" kernel-spin http --url "$url" --connections 32 --expect-size 1024
    ours_round "nginx xstack-bench/xstack" xstack http --url "$url" --connections 32 --expect-size 1024
    kill "$pid"; wait "$pid" 2>/dev/null || true
}

redis_rounds() {
    ip netns exec "$NS_A" taskset -c "$server_core" redis-server --bind "$IP_A" --port 6379 --save "" \
        --appendonly no --protected-mode no >"$out/redis.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    serving "$IP_A" 6379
    # Keys first, so GETs find values (as redis-benchmark's own SET round
    # leaves key:__rand_int__).
    ip netns exec "$NS_B" timeout 60 redis-benchmark -h "$IP_A" -t set -n 10000 -r 1000 -q >/dev/null 2>&1 || true
    local n=$((duration * 40000))
    ip netns exec "$NS_B" timeout $((duration * 10 + 60)) taskset -c 0 redis-benchmark -h "$IP_A" -t get -n "$n" -c 50 \
        >"$out/rb.txt" 2>&1 || true
    record "redis redis-benchmark requests/s" "$(tr '\r' '\n' <"$out/rb.txt" | awk '/throughput summary/ {print $3; exit}')"
    record "redis redis-benchmark p50 us" "$(tr '\r' '\n' <"$out/rb.txt" | awk '/latency summary/ {getline; getline; print $3 * 1000; exit}')"
    ours_round "redis xstack-bench/kernel-spin" kernel-spin redis --target "$IP_A" --connections 50 --mix get=1 \
        --keyspace 1000
    ours_round "redis xstack-bench/xstack" xstack redis --target "$IP_A" --connections 50 --mix get=1 --keyspace 1000
    kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "# $(date -u +%FT%TZ) $(uname -r): servers on the kernel, core $server_core; every load generator one thread on core 0, ${duration} s"
if [[ -z $only || $only == nginx ]]; then
    nginx_rounds
fi
if [[ -z $only || $only == redis ]]; then
    redis_rounds
fi
ratio() {
    python3 -c 'import sys
try:
    k, s = float(sys.argv[1]), float(sys.argv[2])
    print("%.2fx" % (s / k) if k else "-")
except ValueError:
    print("-")' "$1" "$2"
}
echo "# against the usual tool (requests/s; p50: lower is better)"
for app in nginx redis; do
    base=wrk
    [[ $app == redis ]] && base=redis-benchmark
    for gen in kernel-spin xstack; do
        for m in "requests/s" "p50 us"; do
            k="$app $base $m"
            s="$app xstack-bench/$gen $m"
            [[ -n ${fig[$k]:-} ]] && printf '%-40s %12s\n' "$app xstack-bench/$gen $m" "$(ratio "${fig[$k]}" "${fig[$s]:-}")"
        done
    done
done
exit 0
