#!/usr/bin/env bash
# The main job: brings up a test topology (two network namespaces joined by
# a veth), starts the stack on one end, shows the Linux kernel on the other
# end talking to it (arping, ping), prints a summary and tears it all down.
#
# usage: scripts/demo.sh [--no-setup] [--keep]
#   --no-setup  skip scripts/setup.sh (packages already installed)
#   --keep      leave the topology and the stack running (stop: Ctrl-C)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cd "$root"
setup=1
keep=0
for a in "$@"; do
    case "$a" in
        --no-setup) setup=0 ;;
        --keep) keep=1 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
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
cargo build --release --locked -p xstack-control 2>&1 | tail -n 2

name="demo$(printf '%04x' $(( $$ & 0xffff )))"
out=$(mktemp -d)
daemon_pid=""
cleanup() {
    if [[ -n "$daemon_pid" ]] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    bash "$here/topology.sh" down "$name" >/dev/null 2>&1 || true
    rm -rf "$out"
}
trap cleanup EXIT

say "Topology $name"
eval "$(bash "$here/topology.sh" up "$name")"
echo "  $NS_A ($IF_A $IP_A)  <--veth-->  $NS_B ($IF_B kernel $IP_B_KERNEL, stack $IP_STACK)"

say "Starting the stack on $IF_B"
ip netns exec "$NS_B" "${CARGO_TARGET_DIR:-$root/target}/release/xstackd" -i "$IF_B" -a "$IP_STACK/$PREFIX" \
    >"$out/stdout" 2>"$out/stderr" &
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

say "ping: 1000 echo requests 1 ms apart, to the stack and to the kernel on the same link"
ping_summary() {
    ip netns exec "$NS_A" ping -q -c 1000 -i 0.001 -W 2 "$1" | tail -n 2
}
echo "  stack  $IP_STACK:"; ping_summary "$IP_STACK" | sed 's/^/    /'
echo "  kernel $IP_B_KERNEL:"; ping_summary "$IP_B_KERNEL" | sed 's/^/    /'
echo "  (ping's RTT includes the kernel client's own wakeups on both; the bench compares TCP latency)"

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

say "Tearing down $name"
