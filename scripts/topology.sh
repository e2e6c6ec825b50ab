#!/usr/bin/env bash
# topology.sh: create, show and remove xstack test topologies made of veth
# pairs between network namespaces. Run `topology.sh --help` for the usage.
#
# Everything is derived from NAME so that tests running in parallel never
# collide: namespaces xs-NAME-a (kernel peer), xs-NAME-b (AF_XDP stack side)
# and xs-NAME-r (router). Interfaces are created directly inside their
# namespaces (never in the root namespace), so their names only need to be
# unique per namespace.
#
# Machine-readable facts go to stdout as KEY=VALUE lines, logs go to stderr.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
XS_PROG=topology.sh
# shellcheck source=scripts/lib.sh
source "${SCRIPT_DIR}/lib.sh"

LOCK_DIR=/run/xstack
MAX_QUEUES=64
IMPAIR_PY="${SCRIPT_DIR}/impair.py"
IMPAIR_READY_TIMEOUT=10

usage() {
    cat <<'EOF'
Usage:
  topology.sh up NAME [--queues N] [--mtu M] [--router] [--netem "SPEC"]
                      [--netem-impl auto|netem|bpf|user] [--subnet K]
                      [--keep-offloads] [--force]
  topology.sh down NAME
  topology.sh show NAME
  topology.sh stats NAME
  topology.sh --help

NAME is 1-8 characters of [a-z0-9], chosen by the caller and unique among
tests running at the same time.

Without --router (one veth pair, subnet 198.18.K.0/24):
  xs-NAME-a [xa-NAME 198.18.K.1] <--veth--> [xb-NAME 198.18.K.2] xs-NAME-b
  The AF_XDP stack attaches to xb-NAME and answers for 198.18.K.3, which is
  not assigned to the kernel.

With --router (ip_forward on in xs-NAME-r):
  xs-NAME-a [xa-NAME 198.18.K.1] <--> [ra-NAME 198.18.K.254] xs-NAME-r
  xs-NAME-r [rb-NAME 198.19.K.254] <--> [xb-NAME 198.19.K.2] xs-NAME-b
  Stack address 198.19.K.3; a and b have default routes via the router.

Options for "up":
  --queues N        veth pairs with N rx and N tx queues (default 1, max 64)
  --mtu M           MTU of every link (default 1500)
  --router          put a forwarding namespace between a and b
  --netem "SPEC"    tc netem SPEC (e.g. "loss 1% delay 5ms") on the egress of
                    both router interfaces (--router), else on xa-NAME's egress
                    (kernel peer -> stack direction only)
  --netem-impl I    auto (default): tc netem if the kernel has it, otherwise
                    emulate (user with --router, else bpf); netem: require
                    tc netem; bpf: a classic-BPF filter on clsact egress that
                    drops silently, as netem does: only "loss [random] P%";
                    user (--router only): scripts/impair.py, a user-space
                    forwarder in xs-NAME-r (ip_forward is then 0 there) that
                    applies SPEC to each direction independently:
                      loss [random] P% | duplicate P% | delay T [JITTER]
                      [distribution uniform|normal] | reorder P% [gap N] |
                      rate R | limit N | seed N     (correlations allowed)
                    reorder with a delay sends the chosen packets at once,
                    ahead of the delay queue (as netem); without one it holds
                    each chosen packet until the next one has gone (10 ms at
                    most). With "user" and no --netem it forwards unimpaired.
                    Its log, PID and counters are in /run/xstack/NAME/.
  --subnet K        third octet K (0-255) of the subnets; default: a hash of
                    NAME into 1..250
  --keep-offloads   keep tx checksum offload on the interfaces that send toward
                    the stack. By default it is turned off there, because a
                    veth forwards kernel TCP/UDP packets with partial
                    (pseudo-header only) checksums, which an AF_XDP receiver
                    would see as corrupt. Keep offloads for kernel-only
                    baselines.
  --force           remove an existing topology NAME first instead of failing

"up" and "show" print KEY=VALUE lines on stdout (values with spaces are in
single quotes, so the output can be eval'ed):
  NAME ROUTER NS_A NS_B NS_R IF_A IF_B IF_RA IF_RB SUBNET PREFIX IP_A
  IP_B_KERNEL IP_STACK IP_RA IP_RB GW_A GW_B MAC_A MAC_B MAC_RA MAC_RB
  QUEUES MTU OFFLOADS NETEM NETEM_IMPL IMPAIR_PID IMPAIR_LOG IMPAIR_STATS
Router-only keys are empty without --router; IMPAIR_* are empty unless
NETEM_IMPL=user.

"stats" (NETEM_IMPL=user only) prints the emulator's counters as KEY=VALUE
lines, per direction: A2B_* (a -> b, toward the stack) and B2A_*, e.g.
A2B_FORWARDED, A2B_DROPPED, A2B_DROPPED_LOSS, A2B_DUPLICATED,
A2B_REORDERED, A2B_DELAYED, A2B_SOCKET_DROPS; and SEED, SPEC.

"down" kills processes still running in the namespaces (the emulator too,
which then logs its counters), deletes them (which removes their
interfaces) and succeeds if NAME is already gone.

Exit status: 0 ok, 1 failure, 2 usage error.
EOF
}

# ---------------------------------------------------------------- naming

validate_name() {
    local name=$1
    if [[ ! "${name}" =~ ^[a-z0-9]{1,8}$ ]]; then
        xs_usage_die "invalid NAME '${name}': use 1 to 8 characters of [a-z0-9]" \
            "(interface names such as xa-NAME must fit in 15 characters)"
    fi
}

set_names() {
    local name=$1
    NAME=${name}
    NS_A="xs-${name}-a"
    NS_B="xs-${name}-b"
    NS_R="xs-${name}-r"
    IF_A="xa-${name}"
    IF_B="xb-${name}"
    IF_RA="ra-${name}"
    IF_RB="rb-${name}"
    RUN_DIR="${LOCK_DIR}/${name}"
}

default_subnet() {
    local sum
    sum=$(printf '%s' "$1" | cksum | cut -d' ' -f1)
    echo $((sum % 250 + 1))
}

# ---------------------------------------------------------------- helpers

in_ns() {
    local ns=$1
    shift
    ip netns exec "${ns}" "$@"
}

ns_sysctl() {
    local ns=$1
    shift
    in_ns "${ns}" sysctl -q -w "$@" >/dev/null
}

take_lock() {
    mkdir -p "${LOCK_DIR}"
    exec {LOCK_FD}>"${LOCK_DIR}/topology-${NAME}.lock"
    if ! flock -w 60 "${LOCK_FD}"; then
        xs_die "timed out waiting for the lock of topology '${NAME}' (${LOCK_DIR}/topology-${NAME}.lock)"
    fi
}

any_exists() {
    xs_netns_exists "${NS_A}" || xs_netns_exists "${NS_B}" || xs_netns_exists "${NS_R}"
}

rx_queue_count() {
    local ns=$1 dev=$2
    in_ns "${ns}" ls "/sys/class/net/${dev}/queues" | grep -c '^rx-' || true
}

tx_queue_count() {
    local ns=$1 dev=$2
    in_ns "${ns}" ls "/sys/class/net/${dev}/queues" | grep -c '^tx-' || true
}

# ---------------------------------------------------------------- down

kill_ns_pids() {
    local ns=$1 pid i
    local -a pids=()
    list_pids() {
        pids=()
        local p
        for p in $(ip netns pids "${ns}" 2>/dev/null || true); do
            # Never kill ourselves or our caller, should they run inside.
            if [[ "${p}" != "$$" && "${p}" != "${PPID}" && "${p}" != "${BASHPID}" ]]; then
                pids+=("${p}")
            fi
        done
    }
    list_pids
    if ((${#pids[@]} == 0)); then
        return 0
    fi
    xs_log "stopping processes still running in ${ns}: ${pids[*]}"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    # Up to 10 s: a stack daemon closes its connections (about a second)
    # and detaches its XDP program before it exits.
    for ((i = 0; i < 100; i++)); do
        list_pids
        if ((${#pids[@]} == 0)); then
            return 0
        fi
        sleep 0.1
    done
    xs_log "sending SIGKILL to processes in ${ns}: ${pids[*]}"
    kill -KILL "${pids[@]}" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
        list_pids
        if ((${#pids[@]} == 0)); then
            return 0
        fi
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        xs_warn "process ${pid} is still in ${ns} after SIGKILL (uninterruptible?)"
    done
}

delete_ns() {
    local ns=$1 i
    if ! xs_netns_exists "${ns}"; then
        return 0
    fi
    kill_ns_pids "${ns}"
    for ((i = 0; i < 20; i++)); do
        if ip netns del "${ns}" 2>/dev/null || ! xs_netns_exists "${ns}"; then
            return 0
        fi
        sleep 0.1
    done
    ip netns del "${ns}" || xs_die "could not delete network namespace ${ns}"
}

do_down() {
    local ns
    # Processes first, the stack's namespace first of all: deleting any
    # namespace takes the veth pair with it, and a daemon still running
    # on its end would lose its interface instead of stopping cleanly.
    for ns in "${NS_B}" "${NS_A}" "${NS_R}"; do
        if [[ -n "${ns}" ]] && xs_netns_exists "${ns}"; then
            kill_ns_pids "${ns}"
        fi
    done
    for ns in "${NS_R}" "${NS_A}" "${NS_B}"; do
        delete_ns "${ns}"
    done
    if [[ -f "${RUN_DIR}/impair.log" ]]; then
        # The emulator logged its counters when it was killed above.
        grep -F 'exiting' "${RUN_DIR}/impair.log" | sed 's/^impair.py: /emulator: /' |
            while IFS= read -r line; do xs_log "${line}"; done || true
    fi
    rm -rf "${RUN_DIR}"
}

# ---------------------------------------------------------------- netem

# loss_percent SPEC: print P if SPEC is exactly "loss [random] P[%]", else fail.
loss_percent() {
    local -a w
    read -r -a w <<<"$1"
    if ((${#w[@]} == 3)) && [[ "${w[0]}" == loss && "${w[1]}" == random ]]; then
        w=(loss "${w[2]}")
    fi
    if ((${#w[@]} != 2)) || [[ "${w[0]}" != loss ]]; then
        return 1
    fi
    if [[ ! "${w[1]}" =~ ^([0-9]+(\.[0-9]+)?)%?$ ]]; then
        return 1
    fi
    local p=${BASH_REMATCH[1]}
    if ! awk -v p="${p}" 'BEGIN { exit !(p >= 0 && p <= 100) }'; then
        return 1
    fi
    echo "${p}"
}

# Classic BPF program for cls_bpf in direct-action mode: draw a random u32
# (ld rand = SKF_AD_OFF + SKF_AD_RANDOM), return TC_ACT_STOLEN (4: freed, and
# the sender is told "sent", exactly like a netem loss) when it is below
# P% of 2^32, else TC_ACT_UNSPEC (-1: carry on).
loss_bytecode() {
    local p=$1 k
    k=$(awk -v p="${p}" 'BEGIN { k = p / 100 * 4294967296; if (k > 4294967295) k = 4294967295; printf "%.0f", k }')
    if awk -v p="${p}" 'BEGIN { exit !(p >= 100) }'; then
        echo "1,6 0 0 4"
    else
        echo "4,32 0 0 4294963256,53 1 0 ${k},6 0 0 4,6 0 0 4294967295"
    fi
}

apply_netem_bpf() {
    local ns=$1 dev=$2 spec=$3 p code
    if ! p=$(loss_percent "${spec}"); then
        xs_die "--netem '${spec}': without tc netem and without --router only random loss" \
            "can be emulated (BPF filter): use --netem \"loss P%\", or add --router (the" \
            "user-space emulator impair.py then does loss, duplicate, delay, reorder, rate)," \
            "or use a kernel with sch_netem (CONFIG_NET_SCH_NETEM, e.g. Debian's stock" \
            "kernel: modprobe sch_netem)"
    fi
    tc -n "${ns}" qdisc replace dev "${dev}" clsact
    if awk -v p="${p}" 'BEGIN { exit !(p > 0) }'; then
        code=$(loss_bytecode "${p}")
        tc -n "${ns}" filter replace dev "${dev}" egress prio 1 handle 1 bpf da bytecode "${code}"
    fi
}

# check_impair_spec SPEC: succeed if impair.py accepts SPEC, else print why.
check_impair_spec() {
    python3 "${IMPAIR_PY}" --check-spec --netem "$1" 2>&1 >/dev/null | sed -E "s/^impair\.py: error: (--netem '[^']*': )?//"
    return "${PIPESTATUS[0]}"
}

# start_impair SPEC KEEP_OFFLOADS: run scripts/impair.py in the router
# namespace, forwarding between IF_RA and IF_RB instead of the kernel, and
# wait until it is ready. Its PID, log, ready and stats files are in RUN_DIR.
start_impair() {
    local spec=$1 keep_offloads=$2 net_a net_b mac_a mac_b err i pid="" launcher
    local -a extra=()
    xs_have python3 || xs_die "'python3' not found: the user-space emulator (impair.py) needs it"
    if ! err=$(check_impair_spec "${spec}"); then
        xs_die "--netem '${spec}': ${err}"
    fi
    net_a=$(dev_ipv4 "${NS_A}" "${IF_A}")
    net_b=$(dev_ipv4 "${NS_B}" "${IF_B}")
    mac_a=$(dev_mac "${NS_A}" "${IF_A}")
    mac_b=$(dev_mac "${NS_B}" "${IF_B}")
    # The emulator forwards, the kernel of the router must not (it would
    # send every packet twice). Its addresses stay: it still answers ARP.
    ns_sysctl "${NS_R}" net.ipv4.ip_forward=0
    # The emulator must see wire-sized frames with complete checksums: no
    # GRO where it reads, no TSO and, unless --keep-offloads, no partial
    # checksums from the kernels of a and b (with --keep-offloads it
    # completes them itself, which costs CPU).
    in_ns "${NS_R}" ethtool -K "${IF_RA}" gro off >/dev/null 2>&1 || true
    in_ns "${NS_R}" ethtool -K "${IF_RB}" gro off >/dev/null 2>&1 || true
    if ((keep_offloads == 0)); then
        offloads_off "${NS_B}" "${IF_B}"
    else
        in_ns "${NS_A}" ethtool -K "${IF_A}" tso off >/dev/null 2>&1 || true
        in_ns "${NS_B}" ethtool -K "${IF_B}" tso off >/dev/null 2>&1 || true
        extra+=(--fix-checksums)
    fi
    mkdir -p "${RUN_DIR}"
    rm -f "${RUN_DIR}/impair.ready" "${RUN_DIR}/impair.pid" "${RUN_DIR}/impair.stats"
    # Detached: own session, no terminal, stdout/stderr to the log (so that
    # $(topology.sh up) returns), and without our lock descriptor.
    ip netns exec "${NS_R}" setsid python3 "${IMPAIR_PY}" --netem "${spec}" \
        --neigh "${net_a}=${mac_a}" --neigh "${net_b}=${mac_b}" --neigh "${net_b%.*}.3=${mac_b}" \
        --pid-file "${RUN_DIR}/impair.pid" --ready-file "${RUN_DIR}/impair.ready" \
        --stats-file "${RUN_DIR}/impair.stats" "${extra[@]}" "${IF_RA}" "${IF_RB}" \
        </dev/null >>"${RUN_DIR}/impair.log" 2>&1 {LOCK_FD}>&- &
    launcher=$!
    for ((i = 0; i < IMPAIR_READY_TIMEOUT * 20; i++)); do
        if [[ -s "${RUN_DIR}/impair.ready" ]]; then
            pid=$(<"${RUN_DIR}/impair.ready")
            break
        fi
        if [[ -s "${RUN_DIR}/impair.pid" ]]; then
            # Started: give up only if it died.
            kill -0 "$(<"${RUN_DIR}/impair.pid")" 2>/dev/null || break
        elif ((i > 40)) && ! kill -0 "${launcher}" 2>/dev/null; then
            break
        fi
        sleep 0.05
    done
    if [[ -z "${pid}" ]] || ! kill -0 "${pid}" 2>/dev/null; then
        sed 's/^/    | /' "${RUN_DIR}/impair.log" >&2 || true
        xs_die "the user-space emulator (impair.py) did not start in ${NS_R}"
    fi
    xs_log "user-space emulator running in ${NS_R} (pid ${pid}, log ${RUN_DIR}/impair.log):" \
        "$(grep -m1 'forwarding' "${RUN_DIR}/impair.log" | sed 's/^impair.py: forwarding //')"
}

# set_alias NS DEV IMPL SPEC: remember what was applied, for `show`; the
# alias dies with the device.
set_alias() {
    ip -n "$1" link set dev "$2" alias "xstack-netem $3${4:+ $4}"
}

# apply_router_netem SPEC IMPL KEEP_OFFLOADS: impair both directions across
# the router; sets NETEM_USED.
apply_router_netem() {
    local spec=$1 impl=$2 keep_offloads=$3 err dev
    if [[ "${impl}" == auto && -n "${spec}" ]]; then
        # Probe with a bare netem, so that SPEC errors are reported by the
        # implementation chosen rather than mistaken for a missing qdisc.
        if err=$(tc -n "${NS_R}" qdisc replace dev "${IF_RA}" root netem 2>&1); then
            impl=netem
            tc -n "${NS_R}" qdisc del dev "${IF_RA}" root 2>/dev/null || true
        elif [[ "${err}" == *"qdisc kind is unknown"* ]]; then
            xs_log "tc netem is not available in this kernel (CONFIG_NET_SCH_NETEM);" \
                "emulating '${spec}' with the user-space forwarder impair.py"
            impl=user
        else
            xs_die "tc netem '${spec}' on ${IF_RA} in ${NS_R} failed: ${err}"
        fi
    fi
    if [[ "${impl}" == user ]]; then
        start_impair "${spec}" "${keep_offloads}"
        NETEM_USED=user
        for dev in "${IF_RA}" "${IF_RB}"; do
            set_alias "${NS_R}" "${dev}" user "${spec}"
        done
        return 0
    fi
    apply_netem "${NS_R}" "${IF_RA}" "${spec}" "${impl}"
    apply_netem "${NS_R}" "${IF_RB}" "${spec}" "${impl}"
}

# apply_netem NS DEV SPEC IMPL: sets NETEM_USED to the implementation used.
apply_netem() {
    local ns=$1 dev=$2 spec=$3 impl=$4 err
    local -a words
    read -r -a words <<<"${spec}"
    if [[ "${impl}" == auto || "${impl}" == netem ]]; then
        if err=$(tc -n "${ns}" qdisc replace dev "${dev}" root netem "${words[@]}" 2>&1); then
            NETEM_USED=netem
        elif [[ "${impl}" == auto && "${err}" == *"qdisc kind is unknown"* ]]; then
            if loss_percent "${spec}" >/dev/null; then
                xs_log "tc netem is not available in this kernel (CONFIG_NET_SCH_NETEM);" \
                    "emulating '${spec}' with a BPF filter on ${dev}"
            fi
            apply_netem_bpf "${ns}" "${dev}" "${spec}"
            NETEM_USED=bpf
        else
            xs_die "tc netem '${spec}' on ${dev} in ${ns} failed: ${err}"
        fi
    else
        apply_netem_bpf "${ns}" "${dev}" "${spec}"
        NETEM_USED=bpf
    fi
    set_alias "${ns}" "${dev}" "${NETEM_USED}" "${spec}"
}

# ---------------------------------------------------------------- up

make_ns() {
    local ns=$1
    ip netns add "${ns}"
    # New devices in this namespace start with IPv6 off (no router
    # solicitations, no MLD); loopback keeps ::1. No reverse-path filtering.
    ns_sysctl "${ns}" net.ipv6.conf.default.disable_ipv6=1 \
        net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    ip -n "${ns}" link set lo up
}

# make_veth NS1 DEV1 NS2 DEV2: a veth pair created directly in its namespaces.
make_veth() {
    local ns1=$1 dev1=$2 ns2=$3 dev2=$4 ns dev
    ip link add "${dev1}" netns "${ns1}" numtxqueues "${QUEUES}" numrxqueues "${QUEUES}" mtu "${MTU}" \
        type veth peer name "${dev2}" netns "${ns2}" numtxqueues "${QUEUES}" numrxqueues "${QUEUES}" mtu "${MTU}"
    for ns in "${ns1}" "${ns2}"; do
        if [[ "${ns}" == "${ns1}" ]]; then dev=${dev1}; else dev=${dev2}; fi
        ns_sysctl "${ns}" "net.ipv6.conf.${dev}.disable_ipv6=1" "net.ipv4.conf.${dev}.rp_filter=0"
        # veth exposes separate rx/tx channels (no "combined"); creation with
        # numrxqueues/numtxqueues normally sets them already.
        if [[ "$(rx_queue_count "${ns}" "${dev}")" != "${QUEUES}" ||
            "$(tx_queue_count "${ns}" "${dev}")" != "${QUEUES}" ]]; then
            in_ns "${ns}" ethtool -L "${dev}" rx "${QUEUES}" tx "${QUEUES}"
        fi
    done
}

# tx checksum offload off: the kernel then computes full checksums before
# the frame crosses the veth (see --keep-offloads in the usage).
offloads_off() {
    local ns=$1 dev=$2
    if ! in_ns "${ns}" ethtool -K "${dev}" tx off >/dev/null 2>&1; then
        xs_die "could not turn off tx checksum offload on ${dev} in ${ns} (ethtool -K ${dev} tx off)"
    fi
}

wait_up() {
    local ns=$1 dev=$2 i
    for ((i = 0; i < 50; i++)); do
        if [[ "$(in_ns "${ns}" cat "/sys/class/net/${dev}/operstate" 2>/dev/null || true)" == up ]]; then
            return 0
        fi
        sleep 0.05
    done
    xs_die "${dev} in ${ns} did not come up"
}

UP_DONE=0
UP_STARTED=0
cleanup_failed_up() {
    local rc=$?
    if ((UP_STARTED == 1 && UP_DONE == 0)); then
        xs_err "bringing up topology '${NAME}' failed; removing what was created"
        XS_QUIET=1 do_down || true
    fi
    exit "${rc}"
}

do_up() {
    local router=$1 netem=$2 netem_impl=$3 subnet=$4 keep_offloads=$5
    local net_a net_b
    net_a="198.18.${subnet}"
    net_b=${net_a}
    if ((router == 1)); then
        net_b="198.19.${subnet}"
    fi

    trap cleanup_failed_up EXIT
    UP_STARTED=1

    make_ns "${NS_A}"
    make_ns "${NS_B}"
    if ((router == 1)); then
        make_ns "${NS_R}"
        ns_sysctl "${NS_R}" net.ipv4.ip_forward=1 \
            net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0
        make_veth "${NS_A}" "${IF_A}" "${NS_R}" "${IF_RA}"
        make_veth "${NS_R}" "${IF_RB}" "${NS_B}" "${IF_B}"
        ip -n "${NS_R}" addr add "${net_a}.254/24" dev "${IF_RA}"
        ip -n "${NS_R}" addr add "${net_b}.254/24" dev "${IF_RB}"
        ip -n "${NS_R}" link set "${IF_RA}" up
        ip -n "${NS_R}" link set "${IF_RB}" up
    else
        make_veth "${NS_A}" "${IF_A}" "${NS_B}" "${IF_B}"
    fi

    if ((keep_offloads == 0)); then
        offloads_off "${NS_A}" "${IF_A}"
        if ((router == 1)); then
            offloads_off "${NS_R}" "${IF_RB}"
        fi
    fi

    ip -n "${NS_A}" addr add "${net_a}.1/24" dev "${IF_A}"
    ip -n "${NS_B}" addr add "${net_b}.2/24" dev "${IF_B}"
    ip -n "${NS_A}" link set "${IF_A}" up
    ip -n "${NS_B}" link set "${IF_B}" up

    if ((router == 1)); then
        ip -n "${NS_A}" route add default via "${net_a}.254" dev "${IF_A}"
        ip -n "${NS_B}" route add default via "${net_b}.254" dev "${IF_B}"
    fi

    if ((router == 1)) && [[ -n "${netem}" || "${netem_impl}" == user ]]; then
        apply_router_netem "${netem}" "${netem_impl}" "${keep_offloads}"
    elif [[ -n "${netem}" ]]; then
        apply_netem "${NS_A}" "${IF_A}" "${netem}" "${netem_impl}"
    fi

    wait_up "${NS_A}" "${IF_A}"
    wait_up "${NS_B}" "${IF_B}"
    if ((router == 1)); then
        wait_up "${NS_R}" "${IF_RA}"
        wait_up "${NS_R}" "${IF_RB}"
    fi

    UP_DONE=1
    trap - EXIT
}

# ---------------------------------------------------------------- show

emit() {
    local key=$1 value=$2
    if [[ "${value}" =~ ^[A-Za-z0-9._:/%@+,-]*$ ]]; then
        printf '%s=%s\n' "${key}" "${value}"
    else
        printf "%s='%s'\n" "${key}" "${value//\'/}"
    fi
}

dev_ipv4() {
    ip -n "$1" -4 -o addr show dev "$2" | awk '$3 == "inet" { split($4, a, "/"); print a[1]; exit }'
}

dev_mac() {
    ip -n "$1" -o link show dev "$2" | awk '{ for (i = 1; i < NF; i++) if ($i == "link/ether") { print $(i + 1); exit } }'
}

dev_mtu() {
    ip -n "$1" -o link show dev "$2" | awk '{ for (i = 1; i < NF; i++) if ($i == "mtu") { print $(i + 1); exit } }'
}

dev_alias() {
    in_ns "$1" cat "/sys/class/net/$2/ifalias" 2>/dev/null || true
}

# impair_pid: the PID of the running emulator of NAME, or nothing.
impair_pid() {
    local pid
    pid=$(cat "${RUN_DIR}/impair.ready" 2>/dev/null || true)
    if [[ "${pid}" =~ ^[0-9]+$ ]] && kill -0 "${pid}" 2>/dev/null &&
        tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -qF impair.py; then
        echo "${pid}"
    fi
}

dev_tx_csum() {
    in_ns "$1" ethtool -k "$2" 2>/dev/null | awk -F': *' '$1 == "tx-checksumming" { split($2, a, " "); print a[1]; exit }'
}

print_facts() {
    local router=0 ip_a ip_b ip_stack subnet gw_a="" gw_b="" ip_ra="" ip_rb="" mac_ra="" mac_rb=""
    local ns_r="" if_ra="" if_rb="" netem="" netem_impl="" alias shaped_ns shaped_if
    local impair_pid_="" impair_log="" impair_stats=""
    if ! xs_netns_exists "${NS_A}" || ! xs_netns_exists "${NS_B}"; then
        xs_die "topology '${NAME}' does not exist (no namespaces ${NS_A} and ${NS_B})"
    fi
    if xs_netns_exists "${NS_R}"; then
        router=1
        ns_r=${NS_R}
        if_ra=${IF_RA}
        if_rb=${IF_RB}
    fi
    ip_a=$(dev_ipv4 "${NS_A}" "${IF_A}")
    ip_b=$(dev_ipv4 "${NS_B}" "${IF_B}")
    if [[ -z "${ip_a}" || -z "${ip_b}" ]]; then
        xs_die "topology '${NAME}' is incomplete (missing addresses on ${IF_A} or ${IF_B})"
    fi
    ip_stack="${ip_b%.*}.3"
    subnet=${ip_a#*.*.}
    subnet=${subnet%.*}
    shaped_ns=${NS_A}
    shaped_if=${IF_A}
    if ((router == 1)); then
        ip_ra=$(dev_ipv4 "${NS_R}" "${IF_RA}")
        ip_rb=$(dev_ipv4 "${NS_R}" "${IF_RB}")
        mac_ra=$(dev_mac "${NS_R}" "${IF_RA}")
        mac_rb=$(dev_mac "${NS_R}" "${IF_RB}")
        gw_a=${ip_ra}
        gw_b=${ip_rb}
        shaped_ns=${NS_R}
        shaped_if=${IF_RA}
    fi
    alias=$(dev_alias "${shaped_ns}" "${shaped_if}")
    if [[ "${alias}" == "xstack-netem "* ]]; then
        alias=${alias#xstack-netem }
        netem_impl=${alias%% *}
        if [[ "${alias}" == *" "* ]]; then
            netem=${alias#* }
        fi
    fi
    if [[ "${netem_impl}" == user ]]; then
        impair_pid_=$(impair_pid)
        if [[ -z "${impair_pid_}" ]]; then
            xs_warn "the user-space emulator of '${NAME}' is not running (see ${RUN_DIR}/impair.log)"
        fi
        impair_log="${RUN_DIR}/impair.log"
        impair_stats="${RUN_DIR}/impair.stats"
    fi

    emit NAME "${NAME}"
    emit ROUTER "${router}"
    emit NS_A "${NS_A}"
    emit NS_B "${NS_B}"
    emit NS_R "${ns_r}"
    emit IF_A "${IF_A}"
    emit IF_B "${IF_B}"
    emit IF_RA "${if_ra}"
    emit IF_RB "${if_rb}"
    emit SUBNET "${subnet}"
    emit PREFIX 24
    emit IP_A "${ip_a}"
    emit IP_B_KERNEL "${ip_b}"
    emit IP_STACK "${ip_stack}"
    emit IP_RA "${ip_ra}"
    emit IP_RB "${ip_rb}"
    emit GW_A "${gw_a}"
    emit GW_B "${gw_b}"
    emit MAC_A "$(dev_mac "${NS_A}" "${IF_A}")"
    emit MAC_B "$(dev_mac "${NS_B}" "${IF_B}")"
    emit MAC_RA "${mac_ra}"
    emit MAC_RB "${mac_rb}"
    emit QUEUES "$(rx_queue_count "${NS_B}" "${IF_B}")"
    emit MTU "$(dev_mtu "${NS_B}" "${IF_B}")"
    if [[ "$(dev_tx_csum "${NS_A}" "${IF_A}")" == on ]]; then
        emit OFFLOADS on
    else
        emit OFFLOADS off
    fi
    emit NETEM "${netem}"
    emit NETEM_IMPL "${netem_impl}"
    emit IMPAIR_PID "${impair_pid_}"
    emit IMPAIR_LOG "${impair_log}"
    emit IMPAIR_STATS "${impair_stats}"
}

# ---------------------------------------------------------------- stats

print_stats() {
    local pid i
    if ! xs_netns_exists "${NS_R}"; then
        xs_die "topology '${NAME}' has no router (stats need --router with the user-space emulator)"
    fi
    pid=$(impair_pid)
    if [[ -z "${pid}" ]]; then
        xs_die "no user-space emulator is running for '${NAME}' (NETEM_IMPL is not user?)"
    fi
    rm -f "${RUN_DIR}/impair.stats"
    kill -USR1 "${pid}"
    for ((i = 0; i < 100; i++)); do
        if [[ -s "${RUN_DIR}/impair.stats" ]]; then
            break
        fi
        sleep 0.05
    done
    [[ -s "${RUN_DIR}/impair.stats" ]] || xs_die "the emulator (pid ${pid}) wrote no counters"
    python3 - "${RUN_DIR}/impair.stats" <<'PY'
import json, re, sys
s = json.load(open(sys.argv[1]))
def emit(k, v):
    v = str(v)
    print(f"{k}={v}" if re.fullmatch(r"[A-Za-z0-9._:/%@+,-]*", v) else f"{k}='{v}'")
emit("SEED", s["seed"])
emit("SPEC", s["spec"])
emit("UPTIME_S", s["uptime_s"])
for d in ("a2b", "b2a"):
    for k, v in sorted(s[d].items()):
        emit(f"{d.upper()}_{k.upper()}", v)
PY
}

# ---------------------------------------------------------------- main

need_value() {
    if (($2 < 2)); then
        xs_usage_die "option $1 needs a value"
    fi
}

main() {
    local -a orig_args=("$@")
    if (($# == 0)); then
        usage >&2
        exit 2
    fi
    case "$1" in
        -h | --help | help)
            usage
            exit 0
            ;;
    esac
    local cmd=$1
    shift
    case "${cmd}" in
        up | down | show | stats) ;;
        *) xs_usage_die "unknown command '${cmd}' (expected up, down, show or stats)" ;;
    esac
    if (($# == 0)); then
        xs_usage_die "${cmd}: missing NAME"
    fi
    local name=$1
    shift
    if [[ "${name}" == -h || "${name}" == --help ]]; then
        usage
        exit 0
    fi
    validate_name "${name}"
    set_names "${name}"

    QUEUES=1
    MTU=1500
    local router=0 netem="" netem_impl=auto subnet="" force=0 keep_offloads=0
    while (($# > 0)); do
        if [[ "${cmd}" != up ]]; then
            xs_usage_die "${cmd} takes no options (got '$1')"
        fi
        case "$1" in
            --queues)
                need_value "$1" $#
                QUEUES=$2
                shift 2
                ;;
            --queues=*)
                QUEUES=${1#*=}
                shift
                ;;
            --mtu)
                need_value "$1" $#
                MTU=$2
                shift 2
                ;;
            --mtu=*)
                MTU=${1#*=}
                shift
                ;;
            --router)
                router=1
                shift
                ;;
            --netem)
                need_value "$1" $#
                netem=$2
                shift 2
                ;;
            --netem=*)
                netem=${1#*=}
                shift
                ;;
            --netem-impl)
                need_value "$1" $#
                netem_impl=$2
                shift 2
                ;;
            --netem-impl=*)
                netem_impl=${1#*=}
                shift
                ;;
            --subnet)
                need_value "$1" $#
                subnet=$2
                shift 2
                ;;
            --subnet=*)
                subnet=${1#*=}
                shift
                ;;
            --keep-offloads)
                keep_offloads=1
                shift
                ;;
            --force)
                force=1
                shift
                ;;
            -h | --help)
                usage
                exit 0
                ;;
            *) xs_usage_die "unknown option '$1'" ;;
        esac
    done

    if [[ ! "${QUEUES}" =~ ^[0-9]+$ ]] || ((10#${QUEUES} < 1 || 10#${QUEUES} > MAX_QUEUES)); then
        xs_usage_die "--queues must be an integer in 1..${MAX_QUEUES} (got '${QUEUES}')"
    fi
    QUEUES=$((10#${QUEUES}))
    if [[ ! "${MTU}" =~ ^[0-9]+$ ]] || ((10#${MTU} < 68 || 10#${MTU} > 65535)); then
        xs_usage_die "--mtu must be an integer in 68..65535 (got '${MTU}')"
    fi
    MTU=$((10#${MTU}))
    if [[ -z "${subnet}" ]]; then
        subnet=$(default_subnet "${NAME}")
    elif [[ ! "${subnet}" =~ ^[0-9]+$ ]] || ((10#${subnet} > 255)); then
        xs_usage_die "--subnet must be an integer in 0..255 (got '${subnet}')"
    fi
    subnet=$((10#${subnet}))
    case "${netem_impl}" in
        auto | netem | bpf | user) ;;
        *) xs_usage_die "--netem-impl must be auto, netem, bpf or user (got '${netem_impl}')" ;;
    esac
    if [[ "${netem}" == *"'"* ]]; then
        xs_usage_die "--netem SPEC must not contain quotes"
    fi
    if [[ -n "${netem}" && -z "${netem// /}" ]]; then
        netem=""
    fi
    if [[ "${netem_impl}" == bpf && -n "${netem}" ]] && ! loss_percent "${netem}" >/dev/null; then
        xs_usage_die "--netem-impl bpf supports only --netem \"loss [random] P%\" (got '${netem}')"
    fi
    if [[ "${netem_impl}" == user ]]; then
        if ((router == 0)); then
            xs_usage_die "--netem-impl user needs --router (the emulator forwards between" \
                "the router's interfaces)"
        fi
        xs_have python3 || xs_die "'python3' not found (needed by --netem-impl user)"
        local err
        if ! err=$(check_impair_spec "${netem}"); then
            xs_usage_die "--netem '${netem}': ${err}"
        fi
    fi

    xs_ensure_root "${SCRIPT_DIR}/topology.sh" "${orig_args[@]}"
    local tool
    for tool in ip tc ethtool sysctl flock awk cksum; do
        xs_have "${tool}" || xs_die "'${tool}' not found: run scripts/setup.sh"
    done

    take_lock
    case "${cmd}" in
        up)
            if any_exists; then
                if ((force == 1)); then
                    xs_log "topology '${NAME}' exists; --force: removing it first"
                    do_down
                else
                    xs_die "topology '${NAME}' already exists (namespaces xs-${NAME}-*):" \
                        "run 'topology.sh down ${NAME}' first, or pass --force"
                fi
            fi
            do_up "${router}" "${netem}" "${netem_impl}" "${subnet}" "${keep_offloads}"
            xs_log "topology '${NAME}' is up"
            print_facts
            ;;
        down)
            do_down
            # Lock files are per NAME; drop it (while still holding it) so
            # that /run/xstack does not fill up with one file per test run.
            rm -f "${LOCK_DIR}/topology-${NAME}.lock"
            xs_log "topology '${NAME}' is down"
            ;;
        show)
            print_facts
            ;;
        stats)
            print_stats
            ;;
    esac
}

main "$@"
