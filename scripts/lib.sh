# shellcheck shell=bash
# Shared helpers for xstack's shell scripts (setup.sh, topology.sh,
# test-topology.sh). Source it; it does not run anything by itself:
#
#   # shellcheck source=scripts/lib.sh
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Conventions: machine-readable output goes to stdout, everything a person
# reads (progress, warnings, errors) goes to stderr prefixed by the script's
# name. Set XS_QUIET=1 to silence xs_log (warnings and errors still print).

if [[ -n "${XS_LIB_SOURCED:-}" ]]; then
    return 0
fi
XS_LIB_SOURCED=1

XS_PROG=${XS_PROG:-$(basename "${0:-xstack}")}
XS_QUIET=${XS_QUIET:-0}

# Tools like ip, tc, ethtool and sysctl live in sbin: make sure a non-login
# shell (CI, sudo with a reduced PATH) still finds them.
case ":${PATH}:" in
    *:/usr/sbin:*) ;;
    *) PATH="${PATH}:/usr/sbin" ;;
esac
case ":${PATH}:" in
    *:/sbin:*) ;;
    *) PATH="${PATH}:/sbin" ;;
esac
export PATH

xs_log() {
    if [[ "${XS_QUIET}" != 1 ]]; then
        printf '%s: %s\n' "${XS_PROG}" "$*" >&2
    fi
}

xs_warn() {
    printf '%s: warning: %s\n' "${XS_PROG}" "$*" >&2
}

xs_err() {
    printf '%s: error: %s\n' "${XS_PROG}" "$*" >&2
}

# xs_die MESSAGE... : print an error and exit 1.
xs_die() {
    xs_err "$@"
    exit 1
}

# xs_usage_die MESSAGE... : print an error plus a --help hint and exit 2.
xs_usage_die() {
    xs_err "$@"
    printf '%s: try "%s --help"\n' "${XS_PROG}" "${XS_PROG}" >&2
    exit 2
}

xs_have() {
    command -v "$1" >/dev/null 2>&1
}

# xs_ensure_root SCRIPT_PATH ARGS... : return if we are root; otherwise re-exec
# the script through non-interactive sudo, or die with a clear message.
xs_ensure_root() {
    local script=$1
    shift
    if [[ "${EUID}" -eq 0 ]]; then
        return 0
    fi
    if xs_have sudo && sudo -n true >/dev/null 2>&1; then
        xs_log "not root: re-running through sudo"
        exec sudo -n --preserve-env=XS_QUIET,CI,CARGO_HOME,RUSTUP_HOME -- "${BASH:-bash}" "${script}" "$@"
    fi
    xs_die "must run as root (network namespaces, veth, bpffs and apt need it), and" \
        "password-less sudo is not available: run it as root, e.g. 'sudo ${script} $*'"
}

# xs_dpkg_installed PKG : true if the Debian package is installed.
xs_dpkg_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == installed ]]
}

# xs_version_ge A B : true if dotted version A >= B (numeric components only).
xs_version_ge() {
    local IFS=.
    local -a a b
    read -r -a a <<<"$1"
    read -r -a b <<<"$2"
    local i x y
    for ((i = 0; i < ${#a[@]} || i < ${#b[@]}; i++)); do
        x=${a[i]:-0}
        y=${b[i]:-0}
        x=${x%%[!0-9]*}
        y=${y%%[!0-9]*}
        x=$((10#${x:-0}))
        y=$((10#${y:-0}))
        if ((x > y)); then return 0; fi
        if ((x < y)); then return 1; fi
    done
    return 0
}

# xs_netns_exists NS : true if the named network namespace exists.
xs_netns_exists() {
    [[ -e "/run/netns/$1" ]]
}

# Waits (up to 10 s) until something accepts TCP connections on ADDR:PORT
# as seen from namespace NS: a server just started may need a moment.
xs_wait_serving() { # ns addr port
    local _
    for _ in $(seq 200); do
        ip netns exec "$1" nc -z -w 1 "$2" "$3" 2>/dev/null && return 0
        sleep 0.05
    done
    xs_err "nothing serves $2:$3"
    return 1
}
