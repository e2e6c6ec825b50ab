#!/usr/bin/env bash
# test-topology.sh: self-test of scripts/topology.sh.
#
# Brings up, in parallel, four topologies with unique names:
#   plain       one veth pair
#   queues      --queues 2 --mtu 9000
#   router      --router --netem "loss 1%"
#   loss        one veth pair with --netem "loss 50%" (checks loss really happens)
# then checks each (show output, addresses, sysctls, queues, MTU, ping from a
# to b's kernel address, across the router too), checks that `up` refuses an
# existing NAME and that --force replaces it, that `down` kills processes left
# in the namespaces, and that `down` leaves no namespace or interface behind.
# Every ping and every topology.sh call has a timeout; an EXIT trap removes
# whatever is left. Needs root (re-runs itself through sudo -n if possible).
#
# Prints "N passed, N failed" last; exits 0 only if nothing failed.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
XS_PROG=test-topology.sh
# shellcheck source=scripts/lib.sh
source "${SCRIPT_DIR}/lib.sh"

TOPO="${SCRIPT_DIR}/topology.sh"
TOPO_TIMEOUT=60

usage() {
    cat <<'EOF'
Usage: test-topology.sh [--help]

Self-test of scripts/topology.sh (needs root). Uses only network namespaces
it creates (xs-<name>-*) and addresses in 198.18.0.0/15, and removes them on
exit. Prints "N passed, N failed" and exits non-zero on any failure.
EOF
}

for arg in "$@"; do
    case "${arg}" in
        -h | --help)
            usage
            exit 0
            ;;
        *) xs_usage_die "unknown argument '${arg}'" ;;
    esac
done

xs_ensure_root "${SCRIPT_DIR}/test-topology.sh" "$@"
for tool in ip ethtool ping timeout sysctl awk; do
    xs_have "${tool}" || xs_die "'${tool}' not found: run scripts/setup.sh"
done

# Unique names: variant letter + up to 6 digits of our pid, 8 chars at most.
ID=$(($$ % 1000000))
N_PLAIN="tp${ID}"
N_QUEUES="tq${ID}"
N_ROUTER="tr${ID}"
N_LOSS="tl${ID}"
ALL_NAMES=("${N_PLAIN}" "${N_QUEUES}" "${N_ROUTER}" "${N_LOSS}")

TMP=$(mktemp -d /tmp/xstack-test-topology.XXXXXX)
SLEEPER_PID=""
PASSED=0
FAILED=0

cleanup() {
    local rc=$? name
    if [[ -n "${SLEEPER_PID}" ]]; then
        kill -KILL "${SLEEPER_PID}" 2>/dev/null || true
        wait "${SLEEPER_PID}" 2>/dev/null || true
    fi
    for name in "${ALL_NAMES[@]}"; do
        XS_QUIET=1 timeout "${TOPO_TIMEOUT}" "${TOPO}" down "${name}" >/dev/null 2>&1 || true
    done
    rm -rf "${TMP}"
    exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() {
    PASSED=$((PASSED + 1))
    xs_log "ok: $*"
}

fail() {
    FAILED=$((FAILED + 1))
    xs_err "FAILED: $*"
}

# check DESCRIPTION COMMAND... : run COMMAND, record pass or fail.
check() {
    local what=$1
    shift
    if "$@" >"${TMP}/check.out" 2>&1; then
        pass "${what}"
    else
        fail "${what}"
        sed 's/^/    | /' "${TMP}/check.out" >&2 || true
    fi
}

topo() {
    timeout "${TOPO_TIMEOUT}" "${TOPO}" "$@"
}

F_NAME="" F_ROUTER="" F_NS_A="" F_NS_B="" F_NS_R="" F_IF_A="" F_IF_B="" F_IF_RA="" F_IF_RB=""
F_SUBNET="" F_PREFIX="" F_IP_A="" F_IP_B_KERNEL="" F_IP_STACK="" F_IP_RA="" F_IP_RB="" F_GW_A=""
F_GW_B="" F_MAC_A="" F_MAC_B="" F_MAC_RA="" F_MAC_RB="" F_QUEUES="" F_MTU="" F_OFFLOADS="" F_NETEM=""
F_NETEM_IMPL=""

# facts NAME : load the KEY=VALUE output of `show NAME` into F_* variables.
facts() {
    local out line key
    for key in NAME ROUTER NS_A NS_B NS_R IF_A IF_B IF_RA IF_RB SUBNET PREFIX IP_A IP_B_KERNEL \
        IP_STACK IP_RA IP_RB GW_A GW_B MAC_A MAC_B MAC_RA MAC_RB QUEUES MTU OFFLOADS NETEM NETEM_IMPL; do
        printf -v "F_${key}" '%s' ""
    done
    out=$(topo show "$1") || return 1
    while IFS= read -r line; do
        [[ "${line}" =~ ^([A-Z_]+)=(.*)$ ]] || return 1
        key=${BASH_REMATCH[1]}
        local value=${BASH_REMATCH[2]}
        if [[ "${value}" == \'*\' ]]; then
            value=${value:1:${#value}-2}
        fi
        printf -v "F_${key}" '%s' "${value}"
    done <<<"${out}"
}

eq() {
    if [[ "$1" != "$2" ]]; then
        echo "expected '$2', got '$1'"
        return 1
    fi
}

is_mac() {
    [[ "$1" =~ ^[0-9a-f]{2}(:[0-9a-f]{2}){5}$ ]] || {
        echo "not a MAC address: '$1'"
        return 1
    }
}

ns_sysctl_eq() {
    local ns=$1 key=$2 want=$3 got
    got=$(ip netns exec "${ns}" sysctl -n "${key}")
    eq "${got}" "${want}"
}

# ping_ok NS DST COUNT MIN_REPLIES [extra ping args...]
ping_ok() {
    local ns=$1 dst=$2 count=$3 min=$4 out got
    shift 4
    out=$(timeout 30 ip netns exec "${ns}" ping -n -q -c "${count}" -i 0.2 -W 1 "$@" "${dst}" 2>&1 || true)
    got=$(awk '/packets transmitted/ { print $4 }' <<<"${out}")
    echo "${out}"
    [[ -n "${got}" ]] && ((got >= min))
}

ping_ttl() {
    local ns=$1 dst=$2
    timeout 10 ip netns exec "${ns}" ping -n -c 1 -W 2 "${dst}" | awk -F'ttl=' '/ttl=/ { split($2, a, " "); print a[1]; exit }'
}

no_leftovers() {
    local name=$1 left=0
    if ip netns list | grep -E "^xs-${name}-[abr]( |$)"; then
        echo "namespaces of ${name} still exist"
        left=1
    fi
    if ip -o link show | grep -E ": (xa|xb|ra|rb)-${name}[@:]"; then
        echo "interfaces of ${name} exist in the root namespace"
        left=1
    fi
    if timeout "${TOPO_TIMEOUT}" "${TOPO}" show "${name}" >/dev/null 2>&1; then
        echo "show ${name} still succeeds"
        left=1
    fi
    return "${left}"
}

common_checks() {
    local name=$1 router=$2 queues=$3 mtu=$4 netem=$5
    local net_b_prefix
    if ! facts "${name}"; then
        fail "${name}: show prints KEY=VALUE lines"
        return
    fi
    pass "${name}: show prints KEY=VALUE lines"
    check "${name}: NAME/NS/IF names" bash -c "
        [[ '${F_NAME}' == '${name}' && '${F_NS_A}' == 'xs-${name}-a' && '${F_NS_B}' == 'xs-${name}-b' &&
           '${F_IF_A}' == 'xa-${name}' && '${F_IF_B}' == 'xb-${name}' && '${F_PREFIX}' == 24 ]]"
    check "${name}: ROUTER=${router}" eq "${F_ROUTER}" "${router}"
    check "${name}: QUEUES=${queues}" eq "${F_QUEUES}" "${queues}"
    check "${name}: MTU=${mtu}" eq "${F_MTU}" "${mtu}"
    check "${name}: NETEM='${netem}'" eq "${F_NETEM}" "${netem}"
    check "${name}: OFFLOADS=off" eq "${F_OFFLOADS}" off
    check "${name}: MAC_A is a MAC" is_mac "${F_MAC_A}"
    check "${name}: MAC_B is a MAC" is_mac "${F_MAC_B}"
    check "${name}: IP_A=198.18.SUBNET.1" eq "${F_IP_A}" "198.18.${F_SUBNET}.1"
    if [[ "${router}" == 1 ]]; then
        net_b_prefix="198.19.${F_SUBNET}"
    else
        net_b_prefix="198.18.${F_SUBNET}"
    fi
    check "${name}: IP_B_KERNEL=${net_b_prefix}.2" eq "${F_IP_B_KERNEL}" "${net_b_prefix}.2"
    check "${name}: IP_STACK=${net_b_prefix}.3" eq "${F_IP_STACK}" "${net_b_prefix}.3"
    check "${name}: stack address is not assigned to the kernel" \
        bash -c "! ip -n '${F_NS_B}' -4 -o addr show | grep -F ' ${F_IP_STACK}/'"
    check "${name}: IPv6 off on ${F_IF_A}" ns_sysctl_eq "${F_NS_A}" "net.ipv6.conf.${F_IF_A}.disable_ipv6" 1
    check "${name}: IPv6 off on ${F_IF_B}" ns_sysctl_eq "${F_NS_B}" "net.ipv6.conf.${F_IF_B}.disable_ipv6" 1
    check "${name}: rp_filter off in ${F_NS_B}" ns_sysctl_eq "${F_NS_B}" net.ipv4.conf.all.rp_filter 0
    check "${name}: loopback up in ${F_NS_A}" \
        bash -c "ip -n '${F_NS_A}' -o link show lo | grep -q 'LOWER_UP'"
    check "${name}: ${F_IF_B} has ${queues} rx queues" \
        bash -c "[[ \$(ip netns exec '${F_NS_B}' ls /sys/class/net/'${F_IF_B}'/queues | grep -c '^rx-') == ${queues} ]]"
    check "${name}: ${F_IF_A} tx checksum offload off" \
        bash -c "ip netns exec '${F_NS_A}' ethtool -k '${F_IF_A}' | grep -q '^tx-checksumming: off'"
}

# ------------------------------------------------------------ bring-up

xs_log "bringing up 4 topologies in parallel: ${ALL_NAMES[*]}"
topo up "${N_PLAIN}" >"${TMP}/up.plain" 2>"${TMP}/err.plain" &
p1=$!
topo up "${N_QUEUES}" --queues 2 --mtu 9000 >"${TMP}/up.queues" 2>"${TMP}/err.queues" &
p2=$!
topo up "${N_ROUTER}" --router --netem "loss 1%" >"${TMP}/up.router" 2>"${TMP}/err.router" &
p3=$!
topo up "${N_LOSS}" --netem "loss 50%" --subnet 250 >"${TMP}/up.loss" 2>"${TMP}/err.loss" &
p4=$!
for v in "plain:${p1}" "queues:${p2}" "router:${p3}" "loss:${p4}"; do
    if wait "${v#*:}"; then
        pass "up (${v%%:*})"
    else
        fail "up (${v%%:*})"
        sed 's/^/    | /' "${TMP}/err.${v%%:*}" >&2 || true
    fi
done

check "up output equals show output (plain)" \
    bash -c "diff <('${TOPO}' show '${N_PLAIN}' 2>/dev/null) '${TMP}/up.plain'"
check "up output can be eval'ed (router)" \
    bash -c "set -u; eval \"\$(cat '${TMP}/up.router')\"; [[ \"\${NETEM}\" == 'loss 1%' && -n \"\${GW_B}\" ]]"

# ------------------------------------------------------------ plain

common_checks "${N_PLAIN}" 0 1 1500 ""
check "${N_PLAIN}: no router keys" bash -c "[[ -z '${F_NS_R}${F_GW_A}${F_GW_B}${F_IF_RA}${F_IP_RA}' ]]"
check "${N_PLAIN}: ping a -> b kernel" ping_ok "${F_NS_A}" "${F_IP_B_KERNEL}" 3 3
check "${N_PLAIN}: ping b -> a" ping_ok "${F_NS_B}" "${F_IP_A}" 3 3
check "${N_PLAIN}: up on an existing NAME fails" bash -c "! timeout ${TOPO_TIMEOUT} '${TOPO}' up '${N_PLAIN}'"
check "${N_PLAIN}: still works after the refused up" ping_ok "${F_NS_A}" "${F_IP_B_KERNEL}" 1 1
check "${N_PLAIN}: up --force replaces it" bash -c "timeout ${TOPO_TIMEOUT} '${TOPO}' up '${N_PLAIN}' --force --queues 3 | grep -qx QUEUES=3"
check "${N_PLAIN}: ping after --force" ping_ok "${F_NS_A}" "${F_IP_B_KERNEL}" 3 3

# A process left in a namespace must be killed by down.
ip netns exec "${F_NS_A}" sleep 600 &
SLEEPER_PID=$!
sleep 0.2
check "${N_PLAIN}: down succeeds" topo down "${N_PLAIN}"
sleeper_gone() {
    local i st
    for ((i = 0; i < 50; i++)); do
        st=$(ps -o stat= -p "${SLEEPER_PID}" 2>/dev/null || true)
        if [[ -z "${st}" || "${st}" == Z* ]]; then
            return 0
        fi
        sleep 0.1
    done
    echo "process ${SLEEPER_PID} (state ${st}) survived down"
    return 1
}
check "${N_PLAIN}: down killed the process left in ${F_NS_A}" sleeper_gone
kill -KILL "${SLEEPER_PID}" 2>/dev/null || true
wait "${SLEEPER_PID}" 2>/dev/null || true
SLEEPER_PID=""
check "${N_PLAIN}: nothing left after down" no_leftovers "${N_PLAIN}"
check "${N_PLAIN}: down again succeeds" topo down "${N_PLAIN}"

# ------------------------------------------------------------ queues + mtu

common_checks "${N_QUEUES}" 0 2 9000 ""
check "${N_QUEUES}: ${F_IF_A} has 2 rx queues too" \
    bash -c "[[ \$(ip netns exec '${F_NS_A}' ls /sys/class/net/'${F_IF_A}'/queues | grep -c '^rx-') == 2 ]]"
check "${N_QUEUES}: ethtool -l reports 2 rx/2 tx channels" \
    bash -c "ip netns exec '${F_NS_B}' ethtool -l '${F_IF_B}' | awk '/Current/ { c = 1 } c && /^RX:/ { rx = \$2 } c && /^TX:/ { tx = \$2 } END { exit !(rx == 2 && tx == 2) }'"
check "${N_QUEUES}: MTU 9000 on ${F_IF_A}" bash -c "ip -n '${F_NS_A}' -o link show '${F_IF_A}' | grep -q 'mtu 9000 '"
check "${N_QUEUES}: ping a -> b kernel" ping_ok "${F_NS_A}" "${F_IP_B_KERNEL}" 3 3
check "${N_QUEUES}: 8972-byte ping, don't fragment" ping_ok "${F_NS_A}" "${F_IP_B_KERNEL}" 2 2 -s 8972 -M "do"
check "${N_QUEUES}: down" topo down "${N_QUEUES}"
check "${N_QUEUES}: nothing left after down" no_leftovers "${N_QUEUES}"

# ------------------------------------------------------------ router + netem

common_checks "${N_ROUTER}" 1 1 1500 "loss 1%"
check "${N_ROUTER}: NS_R=xs-${N_ROUTER}-r" eq "${F_NS_R}" "xs-${N_ROUTER}-r"
check "${N_ROUTER}: GW_A=198.18.SUBNET.254" eq "${F_GW_A}" "198.18.${F_SUBNET}.254"
check "${N_ROUTER}: GW_B=198.19.SUBNET.254" eq "${F_GW_B}" "198.19.${F_SUBNET}.254"
check "${N_ROUTER}: MAC_RA is a MAC" is_mac "${F_MAC_RA}"
check "${N_ROUTER}: MAC_RB is a MAC" is_mac "${F_MAC_RB}"
check "${N_ROUTER}: IP_RA=GW_A, IP_RB=GW_B" bash -c "[[ '${F_IP_RA}' == '${F_GW_A}' && '${F_IP_RB}' == '${F_GW_B}' ]]"
check "${N_ROUTER}: NETEM_IMPL is netem or bpf" bash -c "[[ '${F_NETEM_IMPL}' == netem || '${F_NETEM_IMPL}' == bpf ]]"
check "${N_ROUTER}: ip_forward on in the router" ns_sysctl_eq "${F_NS_R}" net.ipv4.ip_forward 1
check "${N_ROUTER}: default route via the router in b" \
    bash -c "ip -n '${F_NS_B}' route show default | grep -q 'via ${F_GW_B} '"
check "${N_ROUTER}: loss shaping on both router interfaces" bash -c "
    for dev in '${F_IF_RA}' '${F_IF_RB}'; do
        tc -n '${F_NS_R}' qdisc show dev \"\${dev}\" | grep -q netem ||
            tc -n '${F_NS_R}' filter show dev \"\${dev}\" egress | grep -q bytecode || exit 1
    done"
check "${N_ROUTER}: ping a -> b kernel across the router" ping_ok "${F_NS_A}" "${F_IP_B_KERNEL}" 5 1
check "${N_ROUTER}: ping b -> a across the router" ping_ok "${F_NS_B}" "${F_IP_A}" 5 1
routed_ttl() {
    local ttl i
    for ((i = 0; i < 5; i++)); do
        ttl=$(ping_ttl "${F_NS_A}" "${F_IP_B_KERNEL}" || true)
        if [[ -n "${ttl}" ]]; then
            eq "${ttl}" 63
            return
        fi
    done
    echo "no reply"
    return 1
}
check "${N_ROUTER}: replies come through one hop (ttl 63)" routed_ttl
check "${N_ROUTER}: down" topo down "${N_ROUTER}"
check "${N_ROUTER}: nothing left after down" no_leftovers "${N_ROUTER}"

# ------------------------------------------------------------ loss emulation

common_checks "${N_LOSS}" 0 1 1500 "loss 50%"
check "${N_LOSS}: SUBNET=250" eq "${F_SUBNET}" 250
loss_in_range() {
    local out pct
    out=$(timeout 60 ip netns exec "${F_NS_A}" ping -n -q -f -c 300 -W 1 "${F_IP_B_KERNEL}" 2>&1 || true)
    echo "${out}"
    pct=$(awk '/packet loss/ { for (i = 1; i <= NF; i++) if ($i ~ /%$/) { sub(/%/, "", $i); print int($i); exit } }' <<<"${out}")
    [[ -n "${pct}" ]] && ((pct >= 25 && pct <= 75))
}
check "${N_LOSS}: 'loss 50%' drops 25-75% of 300 pings" loss_in_range
check "${N_LOSS}: down" topo down "${N_LOSS}"
check "${N_LOSS}: nothing left after down" no_leftovers "${N_LOSS}"

# ------------------------------------------------------------ errors

check "invalid NAME is refused with exit 2" bash -c "'${TOPO}' up 'Bad_Name' 2>/dev/null; [[ \$? == 2 ]]"
check "too long NAME is refused" bash -c "! '${TOPO}' up 'abcdefghi' 2>/dev/null"
check "show of a missing NAME fails" bash -c "! '${TOPO}' show '${N_PLAIN}' 2>/dev/null"

printf '%d passed, %d failed\n' "${PASSED}" "${FAILED}"
if ((FAILED > 0)); then
    exit 1
fi
