#!/usr/bin/env bash
# setup.sh: install and check everything xstack's build and tests need on a
# Debian 12 (bookworm) machine. Idempotent and non-interactive: a second run
# installs nothing and takes a few seconds. Run `setup.sh --help` for options.
#
# What it does (as root, or through password-less sudo):
#   1. Debian packages: installs the missing ones (apt-get update only when
#      something is missing).
#   2. Rust: checks cargo/rustc (PATH, ~/.cargo/bin) against the workspace's
#      rust-version, and rustfmt/clippy (added through rustup if missing).
#      Never downloads a toolchain by itself.
#   3. Mounts bpffs at /sys/fs/bpf if it is not mounted.
#   4. Kernel: version, config options, and real probes in a throwaway network
#      namespace (veth, multi-queue veth, AF_XDP socket, XDP attach in native
#      and generic mode, tc netem, the BPF loss emulation of topology.sh).
# Exit status: 0 ready (maybe with warnings), 1 something is missing, 2 usage.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "${SCRIPT_DIR}/.." && pwd)
XS_PROG=setup.sh
# shellcheck source=scripts/lib.sh
source "${SCRIPT_DIR}/lib.sh"

export DEBIAN_FRONTEND=noninteractive

# Packages the build and the tests need. Build: clang/llvm compile the BPF
# programs; libxdp-sys builds libxdp from source (clang, llvm, libelf-dev,
# zlib1g-dev, pkg-config, m4, make); libbpf-sys needs gcc and the kernel
# headers. Tests: iproute2 (ip, tc), ethtool, ping/arping, tcpdump, nc, curl,
# wrk, ab (apache2-utils; wrk and ab load the HTTP service), iperf, python3,
# procps (sysctl, ps), psmisc (fuser, killall is not used by the scripts),
# util-linux (flock, unshare, nsenter).
REQUIRED_PKGS=(
    clang llvm libelf-dev zlib1g-dev pkg-config m4 make gcc libc6-dev linux-libc-dev
    libbpf-dev bpftool
    iproute2 ethtool iputils-ping iputils-arping tcpdump netcat-openbsd curl wrk apache2-utils iperf
    sockperf python3 procps psmisc util-linux
    tshark python3-prometheus-client
    redis-server redis-tools nginx-light memcached socat
)
# Installed when the release has them (checked with apt-cache), skipped with a
# warning otherwise. Bookworm has both in main: iperf3 3.12 (the throughput
# figures in shared/afxdp-on-this-machine.md) and shellcheck 0.9.0 (lints
# these scripts). sockperf (3.7-1 in bookworm) is required: the tests and the
# demo run it against the stack.
OPTIONAL_PKGS=(iperf3 shellcheck)

MIN_KERNEL=5.10
PROBE_NS="xs-probe-$$"

CHECK_ONLY=0
REQUIRE_NETEM=0
OKS=()
WARNS=()
FAILS=()
TMP=""

usage() {
    cat <<'EOF'
Usage: setup.sh [--check-only] [--quiet] [--require-netem] [--help]

Installs (apt) and checks everything xstack's build and tests need on Debian
12: build packages (clang, llvm, libbpf-dev, libelf-dev, ...), test tools
(iproute2, ethtool, tcpdump, wrk, ab, iperf, sockperf, ...), a Rust toolchain with
rustfmt and clippy, bpffs at /sys/fs/bpf, and kernel support for XDP, AF_XDP,
veth, network namespaces and tc netem (probed in a throwaway namespace).
Safe to run again and again; a second run installs nothing.

Options:
  --check-only     install and mount nothing, only check and report
  --quiet          print only warnings and errors
  --require-netem  fail (instead of warning) if tc netem is not available
  -h, --help       this text

Needs root; re-runs itself through "sudo -n" if it is not root.
Exit status: 0 ready (warnings are printed), 1 something missing, 2 usage.
EOF
}

ok() { OKS+=("$*"); }
warn_item() {
    WARNS+=("$*")
    xs_warn "$*"
}
# Failures are listed together at the end (after any apt output).
fail_item() {
    FAILS+=("$*")
}

cleanup() {
    local rc=$?
    if xs_netns_exists "${PROBE_NS}"; then
        ip netns del "${PROBE_NS}" 2>/dev/null || true
    fi
    if [[ -n "${TMP}" ]]; then
        rm -rf "${TMP}"
    fi
    exit "${rc}"
}

# ---------------------------------------------------------------- packages

has_candidate() {
    local cand
    cand=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2; exit }')
    [[ -n "${cand}" && "${cand}" != "(none)" ]]
}

apt_lists_present() {
    compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null
}

run_apt() {
    local -a cmd=(apt-get -y -q -o DPkg::Lock::Timeout=300 "$@")
    if [[ "${XS_QUIET}" == 1 ]]; then
        if ! "${cmd[@]}" </dev/null >"${TMP}/apt.log" 2>&1; then
            cat "${TMP}/apt.log" >&2
            return 1
        fi
    else
        "${cmd[@]}" </dev/null >&2
    fi
}

ensure_packages() {
    local p
    local -a missing=() missing_opt=() install=() unavailable=()
    xs_have dpkg-query || {
        fail_item "dpkg-query not found: this script supports Debian (12/bookworm) only"
        return
    }
    for p in "${REQUIRED_PKGS[@]}"; do
        xs_dpkg_installed "${p}" || missing+=("${p}")
    done
    for p in "${OPTIONAL_PKGS[@]}"; do
        xs_dpkg_installed "${p}" || missing_opt+=("${p}")
    done
    if ((${#missing[@]} == 0 && ${#missing_opt[@]} == 0)); then
        ok "Debian packages: all $((${#REQUIRED_PKGS[@]} + ${#OPTIONAL_PKGS[@]})) installed"
        return
    fi
    if ((CHECK_ONLY == 1)); then
        if ((${#missing[@]} > 0)); then
            fail_item "missing Debian packages: ${missing[*]} (run scripts/setup.sh without --check-only," \
                "or: apt-get install ${missing[*]})"
        fi
        if ((${#missing_opt[@]} > 0)); then
            warn_item "optional Debian packages not installed: ${missing_opt[*]}"
        fi
        return
    fi
    # apt-get update only when a required package is missing, or when the
    # package lists are empty (fresh image): an optional package that the
    # release lacks must not cause an update on every run.
    if ((${#missing[@]} > 0)) || ! apt_lists_present; then
        xs_log "apt-get update (missing: ${missing[*]} ${missing_opt[*]})"
        if ! run_apt update; then
            fail_item "apt-get update failed (see above); check the network and /etc/apt/sources.list*"
            return
        fi
    fi
    install=("${missing[@]}")
    for p in "${missing_opt[@]}"; do
        if has_candidate "${p}"; then
            install+=("${p}")
        else
            unavailable+=("${p}")
        fi
    done
    if ((${#unavailable[@]} > 0)); then
        warn_item "optional packages not in this release's apt sources, skipped: ${unavailable[*]}"
    fi
    if ((${#install[@]} > 0)); then
        # tshark's package asks whether non-root users may capture; the
        # tests read pcap files only, so the answer is no, asked of nobody.
        echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
        xs_log "apt-get install ${install[*]}"
        # The servers the preload tests run (redis, nginx, memcached) are
        # started by the tests inside namespaces, never as system services:
        # a policy-rc.d keeps their packages from starting them.
        local policy=/usr/sbin/policy-rc.d own_policy=0
        if [[ ! -e "${policy}" ]]; then
            printf '#!/bin/sh\nexit 101\n' >"${policy}" && chmod 755 "${policy}" && own_policy=1
        fi
        if ! run_apt install --no-install-recommends "${install[@]}"; then
            ((own_policy)) && rm -f "${policy}"
            fail_item "apt-get install ${install[*]} failed (see above)"
            return
        fi
        if ((own_policy)); then
            rm -f "${policy}"
        fi
    fi
    for p in "${missing[@]}"; do
        if ! xs_dpkg_installed "${p}"; then
            fail_item "package ${p} is still not installed after apt-get install"
            return
        fi
    done
    ok "Debian packages: installed ${install[*]:-nothing}"
}

# ---------------------------------------------------------------- rust

user_home() {
    getent passwd "$1" 2>/dev/null | cut -d: -f6
}

find_tool() {
    local tool=$1 dir home
    local -a dirs=()
    if [[ -n "${CARGO_HOME:-}" ]]; then dirs+=("${CARGO_HOME}/bin"); fi
    if [[ -n "${HOME:-}" ]]; then dirs+=("${HOME}/.cargo/bin"); fi
    if [[ -n "${SUDO_USER:-}" ]]; then
        home=$(user_home "${SUDO_USER}")
        if [[ -n "${home}" ]]; then dirs+=("${home}/.cargo/bin"); fi
    fi
    dirs+=(/root/.cargo/bin /usr/local/cargo/bin)
    if command -v "${tool}" >/dev/null 2>&1; then
        command -v "${tool}"
        return 0
    fi
    for dir in "${dirs[@]}"; do
        if [[ -x "${dir}/${tool}" ]]; then
            echo "${dir}/${tool}"
            return 0
        fi
    done
    return 1
}

# as_owner BIN CMD... : run CMD as the user who owns BIN, with BIN's directory
# first on PATH (a rustup installed in a user's home must run as that user,
# with that HOME).
as_owner() {
    local bin=$1 owner home
    shift
    owner=$(stat -c %U "${bin}")
    if [[ "${EUID}" -eq 0 && "${owner}" != root && "${owner}" != UNKNOWN ]] && xs_have runuser; then
        home=$(user_home "${owner}")
        runuser -u "${owner}" -- env HOME="${home}" PATH="$(dirname "${bin}"):${PATH}" "$@"
    else
        PATH="$(dirname "${bin}"):${PATH}" "$@"
    fi
}

workspace_rust_version() {
    local f="${REPO_DIR}/Cargo.toml"
    [[ -f "${f}" ]] || return 0
    awk -F'"' '/^[[:space:]]*rust-version[[:space:]]*=/ { print $2; exit }' "${f}"
}

check_rust() {
    local cargo rustc rustup want have comps missing=()
    if ! cargo=$(find_tool cargo); then
        fail_item "no Rust toolchain: cargo is neither on PATH nor in ~/.cargo/bin. This script" \
            "does not download toolchains; install one with rustup (https://rustup.rs, e.g." \
            "'curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy')" \
            "and re-run. Debian's own rustc is older than the workspace's rust-version."
        return
    fi
    rustc="$(dirname "${cargo}")/rustc"
    [[ -x "${rustc}" ]] || rustc=$(find_tool rustc || true)
    if [[ -z "${rustc}" ]]; then
        fail_item "cargo found at ${cargo} but no rustc next to it or on PATH"
        return
    fi
    have=$(as_owner "${rustc}" rustc --version 2>/dev/null | awk '{ print $2 }') || true
    want=$(workspace_rust_version)
    if [[ -z "${have}" ]]; then
        fail_item "${rustc} --version failed (is a default toolchain set? 'rustup default stable')"
        return
    fi
    if [[ -n "${want}" ]] && ! xs_version_ge "${have%%-*}" "${want}"; then
        fail_item "rustc ${have} is older than the workspace's rust-version ${want}:" \
            "'rustup update stable' (or install a newer toolchain)"
        return
    fi
    rustup="$(dirname "${cargo}")/rustup"
    [[ -x "${rustup}" ]] || rustup=$(find_tool rustup || true)
    if [[ -n "${rustup}" ]]; then
        comps=$(as_owner "${rustup}" rustup component list --installed 2>/dev/null || true)
        grep -q '^rustfmt' <<<"${comps}" || missing+=(rustfmt)
        grep -q '^clippy' <<<"${comps}" || missing+=(clippy)
        if ((${#missing[@]} > 0)); then
            if ((CHECK_ONLY == 1)); then
                fail_item "rustup components missing: ${missing[*]} ('rustup component add ${missing[*]}')"
                return
            fi
            xs_log "rustup component add ${missing[*]}"
            if ! as_owner "${rustup}" timeout 600 rustup component add "${missing[@]}" >&2; then
                fail_item "'rustup component add ${missing[*]}' failed (it downloads from the" \
                    "Rust distribution server): add them where that server is reachable"
                return
            fi
        fi
    else
        as_owner "${cargo}" cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
        as_owner "${cargo}" cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
        if ((${#missing[@]} > 0)); then
            warn_item "no rustup, and cargo lacks ${missing[*]}: formatting/lint checks will not run"
        fi
    fi
    ok "Rust: rustc ${have} (workspace needs >= ${want:-any}), cargo at ${cargo}${rustup:+, rustfmt and clippy present}"
}

# ---------------------------------------------------------------- bpffs

bpffs_mounted() {
    awk '$2 == "/sys/fs/bpf" && $3 == "bpf" { found = 1 } END { exit !found }' /proc/mounts
}

ensure_bpffs() {
    if bpffs_mounted; then
        ok "bpffs mounted at /sys/fs/bpf"
        return
    fi
    if ((CHECK_ONLY == 1)); then
        warn_item "bpffs is not mounted at /sys/fs/bpf (run without --check-only, or" \
            "'mount -t bpf bpf /sys/fs/bpf'; note that 'ip netns exec' hides it anyway)"
        return
    fi
    mkdir -p /sys/fs/bpf
    if mount -t bpf bpf /sys/fs/bpf && bpffs_mounted; then
        ok "bpffs mounted at /sys/fs/bpf (just now)"
    else
        fail_item "could not mount bpffs at /sys/fs/bpf (needs CONFIG_BPF_SYSCALL and root)"
    fi
}

# ---------------------------------------------------------------- kernel

kernel_config() {
    local rel
    rel=$(uname -r)
    if [[ -r /proc/config.gz ]] && xs_have zcat; then
        zcat /proc/config.gz
    elif [[ -r "/boot/config-${rel}" ]]; then
        cat "/boot/config-${rel}"
    else
        return 1
    fi
}

check_kernel_version() {
    local rel ver
    rel=$(uname -r)
    ver=${rel%%[!0-9.]*}
    if ! xs_version_ge "${ver}" "${MIN_KERNEL}"; then
        fail_item "kernel ${rel} is too old: xstack needs >= ${MIN_KERNEL} (AF_XDP need_wakeup" \
            "5.4, bpf_link XDP attach 5.9, SO_PREFER_BUSY_POLL 5.11); Debian 12's 6.1 or" \
            "bookworm-backports' linux-image-amd64 work"
        return
    fi
    ok "kernel ${rel} >= ${MIN_KERNEL}"
    if ! xs_version_ge "${ver}" 6.6; then
        warn_item "kernel ${rel} < 6.6: no AF_XDP multi-buffer (XDP_USE_SG, xdp.frags), so MTU" \
            "above 3506 with XDP attached is unavailable; use bookworm-backports' kernel for jumbo frames"
    fi
}

check_kernel_config() {
    local cfg opt val
    local -a bad=() soft=()
    if ! cfg=$(kernel_config); then
        ok "kernel config not readable (/proc/config.gz, /boot/config-$(uname -r)): relying on probes"
        return
    fi
    for opt in CONFIG_BPF_SYSCALL CONFIG_XDP_SOCKETS CONFIG_VETH CONFIG_NET_NS; do
        val=$(grep -m1 "^${opt}=" <<<"${cfg}" | cut -d= -f2 || true)
        [[ "${val}" == y || "${val}" == m ]] || bad+=("${opt}")
    done
    # CONFIG_NET_SCH_NETEM is left to the netem probe below, which also
    # knows about modules.
    for opt in CONFIG_BPF_JIT CONFIG_NET_CLS_BPF CONFIG_NET_SCH_INGRESS; do
        val=$(grep -m1 "^${opt}=" <<<"${cfg}" | cut -d= -f2 || true)
        [[ "${val}" == y || "${val}" == m ]] || soft+=("${opt}")
    done
    if ((${#bad[@]} > 0)); then
        fail_item "kernel config lacks ${bad[*]}: XDP/AF_XDP tests need them (build a kernel with" \
            "them =y, or boot Debian's stock linux-image-amd64)"
    else
        ok "kernel config: BPF_SYSCALL, XDP_SOCKETS, VETH, NET_NS enabled"
    fi
    if ((${#soft[@]} > 0)); then
        warn_item "kernel config lacks ${soft[*]} (BPF_JIT: speed; NET_CLS_BPF/NET_SCH_INGRESS:" \
            "topology.sh's loss emulation when tc netem is missing)"
    fi
}

write_xdp_probe() {
    cat >"${TMP}/xdp_probe.c" <<'EOF'
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xs_probe(struct xdp_md *ctx)
{
    (void)ctx;
    return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
EOF
}

probe_kernel() {
    local n out multiarch
    ip netns del "${PROBE_NS}" 2>/dev/null || true
    if ! ip netns add "${PROBE_NS}" 2>"${TMP}/err"; then
        fail_item "cannot create a network namespace ($(cat "${TMP}/err")): needs CONFIG_NET_NS and root"
        return
    fi
    if ! ip link add xsp0 netns "${PROBE_NS}" numtxqueues 2 numrxqueues 2 type veth \
        peer name xsp1 netns "${PROBE_NS}" numtxqueues 2 numrxqueues 2 2>"${TMP}/err"; then
        fail_item "cannot create a veth pair in a namespace ($(cat "${TMP}/err")): needs CONFIG_VETH"
        return
    fi
    ip -n "${PROBE_NS}" link set xsp0 up
    ip -n "${PROBE_NS}" link set xsp1 up
    n=$(ip netns exec "${PROBE_NS}" ls /sys/class/net/xsp0/queues | grep -c '^rx-' || true)
    if [[ "${n}" == 2 ]]; then
        ok "probe: netns + multi-queue veth (2 rx queues)"
    else
        warn_item "probe: veth created with 2 rx queues shows ${n}; topology.sh --queues may not work"
    fi

    # AF_XDP socket family (44).
    if out=$(ip netns exec "${PROBE_NS}" python3 -c \
        'import socket; socket.socket(44, socket.SOCK_RAW).close()' 2>&1); then
        ok "probe: AF_XDP sockets (CONFIG_XDP_SOCKETS)"
    else
        fail_item "probe: cannot create an AF_XDP socket (${out##*$'\n'}): the kernel needs CONFIG_XDP_SOCKETS=y"
    fi

    # BPF syscall, XDP program load and attach (native and generic) on veth.
    if ! xs_have clang || [[ ! -e /usr/include/bpf/bpf_helpers.h ]]; then
        if ((CHECK_ONLY == 1)); then
            warn_item "probe: XDP attach skipped (clang or libbpf-dev not installed)"
        else
            fail_item "probe: clang or libbpf-dev missing after install"
        fi
    else
        write_xdp_probe
        multiarch=$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)
        if ! clang -O2 -g -target bpf "-I/usr/include/${multiarch}" -c "${TMP}/xdp_probe.c" \
            -o "${TMP}/xdp_probe.o" 2>"${TMP}/err"; then
            fail_item "probe: clang cannot compile a BPF program: $(head -3 "${TMP}/err")"
        else
            local mode failed=()
            for mode in xdpdrv xdpgeneric; do
                if ip -n "${PROBE_NS}" link set dev xsp0 "${mode}" obj "${TMP}/xdp_probe.o" sec xdp 2>"${TMP}/err"; then
                    ip -n "${PROBE_NS}" link set dev xsp0 "${mode}" off 2>/dev/null || true
                else
                    failed+=("${mode}: $(head -1 "${TMP}/err")")
                fi
            done
            if ((${#failed[@]} == 0)); then
                ok "probe: XDP program attaches to veth in native and generic mode"
            elif ((${#failed[@]} == 1)); then
                warn_item "probe: XDP attach failed in one mode (${failed[*]})"
            else
                fail_item "probe: cannot attach an XDP program to a veth (${failed[*]}):" \
                    "needs CONFIG_BPF_SYSCALL and XDP support"
            fi
        fi
    fi

    # tc netem (may be a module on stock kernels: try modprobe first).
    if xs_have modprobe && [[ -d "/lib/modules/$(uname -r)" ]]; then
        modprobe -q sch_netem 2>/dev/null || true
    fi
    if ip netns exec "${PROBE_NS}" tc qdisc add dev xsp0 root netem delay 1ms loss 1% 2>"${TMP}/err"; then
        ip netns exec "${PROBE_NS}" tc qdisc del dev xsp0 root 2>/dev/null || true
        ok "probe: tc netem"
    else
        local msg
        msg="tc netem is not available ($(head -1 "${TMP}/err")): the kernel lacks sch_netem"
        msg+=" (CONFIG_NET_SCH_NETEM). topology.sh --netem then emulates only 'loss P%';"
        msg+=" delay/reorder/duplicate need a kernel with sch_netem (Debian's stock kernel has it as a module)"
        if ((REQUIRE_NETEM == 1)); then
            fail_item "${msg}"
        else
            warn_item "${msg}"
        fi
    fi

    # topology.sh's loss emulation: clsact + classic BPF filter in direct-action mode.
    if ip netns exec "${PROBE_NS}" tc qdisc add dev xsp0 clsact 2>"${TMP}/err" &&
        ip netns exec "${PROBE_NS}" tc filter add dev xsp0 egress prio 1 handle 1 bpf da \
            bytecode "4,32 0 0 4294963256,53 1 0 42949673,6 0 0 4,6 0 0 4294967295" 2>>"${TMP}/err"; then
        ok "probe: BPF loss emulation (clsact + cls_bpf)"
    else
        warn_item "probe: BPF loss emulation unavailable ($(head -1 "${TMP}/err")): needs" \
            "CONFIG_NET_SCH_INGRESS and CONFIG_NET_CLS_BPF"
    fi

    ip netns del "${PROBE_NS}" 2>/dev/null || true
}

check_memlock() {
    local lim
    lim=$(ulimit -l)
    if [[ "${EUID}" -eq 0 ]]; then
        ok "RLIMIT_MEMLOCK ${lim} KiB: root (CAP_IPC_LOCK) is exempt; a non-root stack needs" \
            "'ulimit -l unlimited' or CAP_IPC_LOCK for UMEMs larger than that"
    fi
}

# ---------------------------------------------------------------- main

main() {
    local -a orig_args=("$@")
    while (($# > 0)); do
        case "$1" in
            --check-only) CHECK_ONLY=1 ;;
            --quiet | -q) XS_QUIET=1 ;;
            --require-netem) REQUIRE_NETEM=1 ;;
            -h | --help)
                usage
                exit 0
                ;;
            *) xs_usage_die "unknown option '$1'" ;;
        esac
        shift
    done
    export XS_QUIET
    xs_ensure_root "${SCRIPT_DIR}/setup.sh" "${orig_args[@]}"

    TMP=$(mktemp -d /tmp/xstack-setup.XXXXXX)
    trap cleanup EXIT
    trap 'exit 130' INT TERM

    ensure_packages
    check_rust
    ensure_bpffs
    check_kernel_version
    check_kernel_config
    if xs_have ip && xs_have tc; then
        probe_kernel
    else
        fail_item "ip/tc (iproute2) not installed: cannot probe the kernel"
    fi
    check_memlock

    if ((${#FAILS[@]} > 0)); then
        xs_err "${#FAILS[@]} problem(s), this machine is not ready:"
        local f
        for f in "${FAILS[@]}"; do
            printf '  - %s\n' "${f}" >&2
        done
        exit 1
    fi
    if [[ "${XS_QUIET}" != 1 ]]; then
        local o
        for o in "${OKS[@]}"; do
            printf 'OK    %s\n' "${o}"
        done
        if ((${#WARNS[@]} > 0)); then
            printf 'setup.sh: ready (%d checks ok, %d warning(s) printed on stderr)\n' "${#OKS[@]}" "${#WARNS[@]}"
        else
            printf 'setup.sh: ready (%d checks ok)\n' "${#OKS[@]}"
        fi
    fi
}

main "$@"
