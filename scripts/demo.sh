#!/usr/bin/env bash
# The main job: brings up a test topology (two network namespaces joined by
# a veth), starts the stack's server on one end (echo, discard, HTTP,
# sockperf), shows real Linux clients on the other end talking to it
# (arping, ping, curl, nc, sockperf next to the kernel's own sockperf
# server), prints the stack's counters, then runs a short bench comparison
# (RR and CRR: our stack against the kernel and the raw AF_XDP floor), runs
# the unmodified Debian redis-server on the kernel and on the stack
# (xstack-run) side by side under redis-benchmark, drives the same kernel
# nginx with wrk and with xstack-bench (kernel sockets and our stack) side
# by side, and tears it all down.
#
# usage: scripts/demo.sh [--no-setup] [--keep] [--no-bench] [--no-apps]
#   --no-setup  skip scripts/setup.sh (packages already installed)
#   --keep      leave the topology and the stack running (stop: Ctrl-C)
#   --no-bench  skip the bench comparison at the end
#   --no-apps   skip redis on the kernel and on the stack, and the load
#               generators against nginx
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cd "$root"
setup=1
keep=0
bench=1
apps=1
for a in "$@"; do
    case "$a" in
        --no-setup) setup=0 ;;
        --keep) keep=1 ;;
        --no-bench) bench=0 ;;
        --no-apps) apps=0 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "demo.sh: unknown option $a" >&2; exit 2 ;;
    esac
done

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [[ $setup == 1 ]]; then
    say "Set-up (packages, bpffs, kernel checks)"
    bash "$here/setup.sh" --quiet
fi
[[ -f "$HOME/.cargo/env" ]] && source "$HOME/.cargo/env"

say "Building (release)"
cargo build --release --locked -p xstack-control -p xstack-bench -p xstack-preload 2>&1 | tail -n 2
bin="${CARGO_TARGET_DIR:-$root/target}/release"

name="demo$(printf '%04x' $(( $$ & 0xffff )))"
out=$(mktemp -d)
daemon_pid=""
ksp_pid=""
cleanup() {
    for p in $daemon_pid $ksp_pid; do
        if kill -0 "$p" 2>/dev/null; then
            kill -TERM "$p" 2>/dev/null || true
            wait "$p" 2>/dev/null || true
        fi
    done
    bash "$here/topology.sh" down "$name" >/dev/null 2>&1 || true
    rm -rf "$out"
}
trap cleanup EXIT

say "Topology $name"
eval "$(bash "$here/topology.sh" up "$name")"
echo "  $NS_A ($IF_A $IP_A)  <--veth-->  $NS_B ($IF_B kernel $IP_B_KERNEL, stack $IP_STACK)"

say "Starting the stack on $IF_B: echo 7, discard 9, http 80 (1 KiB body), sockperf 11111"
ip netns exec "$NS_B" "$bin/xstackd" -i "$IF_B" -a "$IP_STACK/$PREFIX" --poll adaptive --instance "$name" \
    --metrics 127.0.0.1:9464 --echo 7 --discard 9 --http 80:1024 --sockperf 11111 >"$out/stdout" 2>"$out/stderr" &
daemon_pid=$!
for _ in $(seq 1 300); do
    grep -q '^xstackd ready' "$out/stdout" 2>/dev/null && break
    kill -0 "$daemon_pid" 2>/dev/null || { cat "$out/stderr"; echo "demo: the stack failed to start" >&2; exit 1; }
    sleep 0.1
done
grep '^xstackd ready' "$out/stdout" || { cat "$out/stderr"; echo "demo: the stack is not ready after 30 s" >&2; exit 1; }
sed 's/^/  log: /' "$out/stderr" | sed 's/\x1b\[[0-9;]*m//g'

say "arping $IP_STACK from the kernel side"
ip netns exec "$NS_A" arping -c 3 -w 5 -I "$IF_A" "$IP_STACK"

say "ping: 500 echo requests 1 ms apart, to the stack and to the kernel on the same link"
ping_summary() {
    ip netns exec "$NS_A" ping -q -c 500 -i 0.001 -W 2 "$1" | tail -n 2
}
echo "  stack  $IP_STACK:"; ping_summary "$IP_STACK" | sed 's/^/    /'
echo "  kernel $IP_B_KERNEL:"; ping_summary "$IP_B_KERNEL" | sed 's/^/    /'
echo "  (ping's RTT includes the kernel client's own wakeups on both; the bench compares TCP latency)"

say "curl: two requests on one keep-alive connection to the stack's HTTP responder"
ip netns exec "$NS_A" curl -sS -v -o /dev/null -o /dev/null "http://$IP_STACK/" "http://$IP_STACK/again" 2>&1 \
    | grep -E '^(< HTTP|< Content-Length|\* Re-using|\* Connected)' | sed 's/^/  /'

say "nc: echo with half-close (nc shuts down its sending side, still reads the echo)"
echo "  sent:     hello from the kernel side"
printf 'hello from the kernel side\n' | ip netns exec "$NS_A" timeout 10 nc -N "$IP_STACK" 7 | sed 's/^/  received: /'

say "The operator's view: xstackctl (ss, capture, stats) and the Prometheus endpoint"
ctl() { "$bin/xstackctl" --instance "$name" "$@"; }
# Two connections held open for a moment, so ss has something to show.
ip netns exec "$NS_A" python3 -c "
import socket,time
ss=[socket.create_connection(('$IP_STACK',7)) for _ in range(2)]
for s in ss: s.sendall(b'hi\n'); s.recv(10)
time.sleep(2)" &
held=$!
sleep 0.7
echo "  \$ xstackctl ss -i --port 7"
ctl ss -i --port 7 | sed 's/^/  /'
echo "  \$ xstackctl capture -w demo.pcap --port 80 -c 12   (while curl fetches 3 pages)"
ctl capture -w "$out/demo.pcap" --port 80 -c 12 2>"$out/capture" &
cap=$!
sleep 0.5
for _ in 1 2 3; do ip netns exec "$NS_A" curl -sS -o /dev/null "http://$IP_STACK/"; done
wait "$cap" || true
sed 's/^/  /' "$out/capture"
echo "  \$ tcpdump -nn -r demo.pcap"
tcpdump -nn -r "$out/demo.pcap" 2>/dev/null | sed 's/^/    /'
wait "$held" 2>/dev/null || true
echo "  \$ xstackctl stats   (first lines)"
ctl stats | sed -n '1,25p' | sed 's/^/  /'
echo "  \$ curl http://127.0.0.1:9464/metrics   ($(ip netns exec "$NS_B" curl -s http://127.0.0.1:9464/metrics | grep -vc '^#') samples), for example:"
ip netns exec "$NS_B" curl -s http://127.0.0.1:9464/metrics | grep -E '^xstack_tcp_passive_opens_total|^xstack_round_latency_seconds_count' | sed 's/^/    /'

say "sockperf ping-pong over TCP, 5 s each: the stack's server, then the kernel's on the same link"
ip netns exec "$NS_B" sockperf server --tcp -i "$IP_B_KERNEL" -p 11111 >"$out/ksp" 2>&1 &
ksp_pid=$!
sleep 0.5
sockperf_summary() {
    ip netns exec "$NS_A" timeout 30 sockperf ping-pong --tcp -i "$1" -p 11111 -t 5 -m 64 2>&1 \
        | sed 's/\x1b\[[0-9;]*m//g' | grep -E 'Summary: Latency|percentile (50|99|99\.9)[0.]* =|observations' \
        | sed 's/^sockperf: //'
}
echo "  stack  $IP_STACK:";  sockperf_summary "$IP_STACK" | sed 's/^/    /'
echo "  kernel $IP_B_KERNEL:"; sockperf_summary "$IP_B_KERNEL" | sed 's/^/    /'
kill -TERM "$ksp_pid" 2>/dev/null || true
wait "$ksp_pid" 2>/dev/null || true
ksp_pid=""
echo "  (the client is the kernel's sockperf in both runs; only the server side differs)"

if [[ $keep == 1 ]]; then
    say "Running; Ctrl-C to stop and tear down"
    trap 'cleanup; exit 0' INT
    wait "$daemon_pid"
fi

say "Stopping the stack"
kill -TERM "$daemon_pid"
wait "$daemon_pid" || true
daemon_pid=""
# The daemon's summary, without the counters that stayed at zero.
awk '/^summary / {
    out = " "
    for (i = 2; i <= NF; i++) {
        split($i, kv, "=")
        if (kv[2] == "0" && kv[1] != "worker") continue
        out = out " " $i
    }
    print out
}' "$out/stdout"
ip netns exec "$NS_B" ip -d link show dev "$IF_B" | grep -q xdp && { echo "demo: XDP program still attached" >&2; exit 1; }
echo "  XDP program detached, maps unpinned."

bash "$here/topology.sh" down "$name" >/dev/null

if [[ $bench == 1 ]]; then
    results="$root/bench-results/demo-$(date -u +%Y%m%d-%H%M%S)"
    say "Bench: RR and CRR (64 B, 3 s each) on our stack, the kernel (blocking and spinning) and the AF_XDP floor"
    "$bin/xstack-bench" compare --workloads rr,crr --warmup 1 --duration 3 --out "$results" --quiet
    echo "  plots and logs: $results (*.percentiles.png/svg, report.txt, report.json, *.hlog)"
fi

if [[ $apps == 1 ]]; then
    say "Unmodified redis-server 7 on the kernel, then preloaded on the stack (xstack-run), redis-benchmark from the peer"
    echo "  (the daemon's worker and redis share core 1 with --poll yield; redis-benchmark on core 0)"
    bash "$here/compare-apps.sh" --only redis --poll yield --app-core 1 --requests 50000 | sed 's/^/  /'
    say "Load generators side by side: wrk against xstack-bench (kernel sockets and our stack) on the same kernel nginx"
    echo "  (nginx on core 1, each generator one thread on core 0, 3 s each)"
    bash "$here/compare-loadgen.sh" --only nginx --duration 3 | sed 's/^/  /'
fi

say "Tearing down $name"
