#!/usr/bin/env bash
# Unmodified servers on the kernel and on the stack, side by side in one
# run on one topology: the same Debian binary started on the kernel's
# address in the stack's namespace, then preloaded (xstack-run) on the
# stack's address; the same load generator from the peer namespace.
#
#   redis   redis-benchmark -t set,get -n N -c C (--clients, default 50)
#           and -t get -c 1 (p50)
#   nginx   wrk -t1 -c32 -d5s on a 1 KiB file (worker_processes 1)
#
# --loadgen xstack-bench drives redis with xstack-bench instead (GET, 50
# connections, then one connection for the p50; 5 s each) on the stack
# itself (an address of its own on the peer's interface): redis-benchmark
# on the kernel saturates its core at about the rate one redis serves,
# and the kernel peer's receive path runs on the server's core (veth
# delivers in the sender's context), so those figures bound the client
# as much as the server. For this round the stack's interface sends with
# checksums filled in (tx offload off), as the peer's stack needs.
#
# Placement (two cores), each side at its best by default: load generators
# on core 0; the kernel's server on core 1 (--kernel-core); on the stack,
# xstackd's worker busy-polls core 1 and the server runs on core 0 beside
# the load generator (--app-core; on the worker's core the two would take
# turns in scheduler slices). Prints one line per figure and the ratio
# stack/kernel. Needs root and the release binaries (cargo build
# --release). Bounded: every run has a timeout; the topology and the
# processes it starts are removed on exit.
#
# usage: scripts/compare-apps.sh [--requests N] [--poll busy|adaptive]
#            [--app-core C] [--kernel-core C] [--only redis|nginx]
#            [--clients C] [--loadgen redis-benchmark|xstack-bench]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cd "$root"
# shellcheck source=scripts/lib.sh
source "$here/lib.sh"
bin=$root/target/release
requests=100000
poll=busy
app_core=0
kernel_core=1
only=""
clients=50
loadgen=redis-benchmark
while (($#)); do
    case $1 in
        --requests) requests=$2; shift 2 ;;
        --poll) poll=$2; shift 2 ;;
        --app-core) app_core=$2; shift 2 ;;
        --kernel-core) kernel_core=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        --clients) clients=$2; shift 2 ;;
        --loadgen) loadgen=$2; shift 2 ;;
        -h|--help) sed -n 2,33p "$0"; exit 0 ;;
        *) echo "compare-apps: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ $loadgen == redis-benchmark || $loadgen == xstack-bench ]] || { echo "compare-apps: --loadgen is redis-benchmark or xstack-bench" >&2; exit 2; }
for b in xstackd xstack-run libxstack_preload.so xstack-bench; do
    [[ -e $bin/$b ]] || { echo "compare-apps: $bin/$b missing: cargo build --release first" >&2; exit 2; }
done
for t in redis-server redis-benchmark nginx wrk; do
    command -v "$t" >/dev/null || { echo "compare-apps: $t missing: scripts/setup.sh installs it" >&2; exit 2; }
done
name=cmp$(($$ % 100000))
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

serving() { # addr port
    xs_wait_serving "$NS_A" "$1" "$2"
}

declare -A fig
record() { # key value
    fig[$1]=$2
    printf '%-34s %12s\n' "$1" "$2"
}

redis_round() { # label addr core wrapper...
    local label=$1 addr=$2 core=$3
    shift 3
    ip netns exec "$NS_B" taskset -c "$core" "$@" redis-server --bind "$addr" --port 6379 --save "" \
        --appendonly no --protected-mode no >"$out/redis-$label.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    serving "$addr" 6379
    if [[ $loadgen == xstack-bench ]]; then
        redis_by_xstack_bench "$label" "$addr"
    else
        redis_by_redis_benchmark "$label" "$addr"
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
}

redis_by_redis_benchmark() { # label addr
    local label=$1 addr=$2
    ip netns exec "$NS_A" timeout 300 taskset -c 0 redis-benchmark -h "$addr" -t set,get -n "$requests" -c "$clients" -q \
        >"$out/rb.txt" 2>&1 || true
    record "redis $label SET/s ($clients conns)" "$(tr '\r' '\n' <"$out/rb.txt" | awk '/^SET: .*requests per second/ {print $2}' | tail -1)"
    record "redis $label GET/s ($clients conns)" "$(tr '\r' '\n' <"$out/rb.txt" | awk '/^GET: .*requests per second/ {print $2}' | tail -1)"
    ip netns exec "$NS_A" timeout 300 taskset -c 0 redis-benchmark -h "$addr" -t get -n $((requests / 5)) -c 1 \
        >"$out/rb1.txt" 2>&1 || true
    record "redis $label GET p50 us (1 conn)" "$(tr '\r' '\n' <"$out/rb1.txt" | awk '/latency summary/ {getline; getline; print $3 * 1000; exit}')"
}

# xstack-bench on the stack from the peer's namespace: its own address
# (.9 of the subnet) on the peer's interface, the server's MAC as its
# neighbour, and a permanent neighbour entry for it on the server's side
# (the kernel's ARP request would reach the peer's kernel, which does not
# own the address).
redis_by_xstack_bench() { # label addr
    local label=$1 addr=$2 me=${IP_A%.*}.9 conns
    ip netns exec "$NS_B" ip neigh replace "$me" lladdr "$MAC_A" dev "$IF_B" nud permanent
    ip netns exec "$NS_B" ethtool -K "$IF_B" tx off >/dev/null 2>&1 || true
    ip netns exec "$NS_A" timeout 60 redis-benchmark -h "$addr" -t set -n 10000 -r 1000 -q >/dev/null 2>&1 || true
    for conns in "$clients" 1; do
        ip netns exec "$NS_A" timeout 60 "$bin/xstack-bench" run redis --target "$addr" --connections "$conns" \
            --mix get=1 --keyspace 1000 --stack xstack --xstack-if "$IF_A" --xstack-addr "$me/$PREFIX" \
            --xstack-neighbour "$addr=$MAC_B" --threads 1 --cpus 0 --warmup 1 --duration 5 \
            --out "$out/xb.json" --quiet >"$out/xb.log" 2>&1 || { cat "$out/xb.log" >&2; continue; }
        read -r rps p50 < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
if r["errors"]:
    print("compare-apps: xstack-bench errors:", r["errors"], r.get("first_error"), file=sys.stderr)
    print("- -")
else:
    print("%.0f %.0f" % (r["ops_per_s"], (r.get("latency") or {}).get("p50_ns", 0) / 1000))' "$out/xb.json")
        if [[ $conns == 1 ]]; then
            record "redis $label GET p50 us (1 conn)" "$p50"
        else
            record "redis $label GET/s ($clients conns)" "$rps"
        fi
    done
}

nginx_round() { # label addr core wrapper...
    local label=$1 addr=$2 core=$3 dir=$out/nginx-$1
    shift 3
    mkdir -p "$dir/html" "$dir/logs"
    head -c 1024 /dev/zero | tr '\0' x >"$dir/html/1k.html"
    cat >"$dir/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/logs/error.log;
events { worker_connections 1024; }
http { access_log off; sendfile on; server { listen $addr:8080; root $dir/html; } }
EOF
    ip netns exec "$NS_B" taskset -c "$core" "$@" nginx -c "$dir/nginx.conf" -p "$dir" >"$dir/out.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    serving "$addr" 8080
    ip netns exec "$NS_A" timeout 60 taskset -c 0 wrk -t1 -c32 -d5s --latency "http://$addr:8080/1k.html" \
        >"$out/wrk.txt" 2>&1 || true
    # wrk counts every response; a figure of error pages is no figure.
    if grep -q "Non-2xx" "$out/wrk.txt"; then
        echo "compare-apps: wrk got error responses: $(grep Non-2xx "$out/wrk.txt")" >&2
        exit 1
    fi
    record "nginx $label requests/s" "$(awk '/Requests\/sec/ {print $2}' "$out/wrk.txt")"
    record "nginx $label p50 us" "$(awk '$1 == "50%" {v=$2; if (v ~ /ms$/) {sub(/ms/,"",v); v*=1000} else if (v ~ /us$/) {sub(/us/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1e6}; print v}' "$out/wrk.txt")"
    kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "# $(date -u +%FT%TZ) $(uname -r): $loadgen; clients on core 0; kernel servers on core $kernel_core; xstackd --poll $poll on core 1, its servers on core $app_core"
# The kernel's rounds first, with no daemon running (a busy-polling worker
# would take a core from them).
if [[ -z $only || $only == redis ]]; then
    redis_round kernel "$IP_B_KERNEL" "$kernel_core"
fi
if [[ -z $only || $only == nginx ]]; then
    nginx_round kernel "$IP_B_KERNEL" "$kernel_core"
fi
ip netns exec "$NS_B" "$bin/xstackd" -i "$IF_B" -a "$IP_STACK/$PREFIX" --instance "$name" --cores 1 \
    --poll "$poll" >"$out/xstackd.log" 2>&1 &
pids+=("$!")
for _ in $(seq 100); do grep -q "xstackd ready" "$out/xstackd.log" && break; sleep 0.1; done
grep -q "xstackd ready" "$out/xstackd.log" || { cat "$out/xstackd.log" >&2; exit 1; }
run=("$bin/xstack-run" --instance "$name" --quiet)

if [[ -z $only || $only == redis ]]; then
    redis_round stack "$IP_STACK" "$app_core" "${run[@]}"
fi
if [[ -z $only || $only == nginx ]]; then
    nginx_round stack "$IP_STACK" "$app_core" "${run[@]}"
fi
ratio() {
    python3 -c 'import sys; k, s = float(sys.argv[1] or 0), float(sys.argv[2] or 0); print("%.2fx" % (s / k) if k else "-")' "$1" "$2"
}
echo "# stack / kernel"
for k in "redis @ SET/s ($clients conns)" "redis @ GET/s ($clients conns)" "redis @ GET p50 us (1 conn)" "nginx @ requests/s" "nginx @ p50 us"; do
    kk=${k/@/kernel}
    ks=${k/@/stack}
    [[ -n ${fig[$kk]:-} ]] && printf '%-34s %12s\n' "${k/@ /}" "$(ratio "${fig[$kk]}" "${fig[$ks]:-}")"
done
exit 0
