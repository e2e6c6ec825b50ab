#!/usr/bin/env bash
# install.sh: builds the release binaries and installs them, the preload
# library, the systemd unit, the example configuration and the shell
# completions.
#
# usage: scripts/install.sh [--prefix DIR] [--destdir DIR] [--no-build]
#   --prefix DIR   where things go (default /usr/local): DIR/bin/{xstackd,
#                  xstackctl,xstack-run,xstack-bench},
#                  DIR/lib/xstack/libxstack_preload.so, DIR/share/doc/xstack
#   --destdir DIR  stage everything under DIR (packaging; nothing is enabled)
#   --no-build     install what target/release already holds
#
# Also installs /etc/systemd/system/xstackd@.service (start an instance
# with `systemctl enable --now xstackd@IFACE` after writing
# /etc/xstack/IFACE.toml from the example), /etc/xstack/example.toml and
# bash completions. Safe to run again.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
prefix=/usr/local
destdir=""
build=1
while (($#)); do
    case $1 in
        --prefix) prefix=$2; shift 2 ;;
        --destdir) destdir=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) sed -n 2,17p "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if ((build)); then
    [[ -f "$HOME/.cargo/env" ]] && source "$HOME/.cargo/env"
    (cd "$root" && cargo build --release --locked -p xstack-control -p xstack-preload -p xstack-bench)
fi
# XSTACK_BIN_DIR: install from another build directory (the test installs
# the debug build it just made).
rel="${XSTACK_BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/release}"
for f in xstackd xstackctl xstack-run xstack-bench libxstack_preload.so; do
    [[ -e "$rel/$f" ]] || { echo "install.sh: $rel/$f missing (build first, or drop --no-build)" >&2; exit 1; }
done
d="$destdir"
install -d "$d$prefix/bin" "$d$prefix/lib/xstack" "$d$prefix/share/doc/xstack" \
    "$d/etc/systemd/system" "$d/etc/xstack" "$d/usr/share/bash-completion/completions"
install -m 755 "$rel/xstackd" "$rel/xstackctl" "$rel/xstack-run" "$rel/xstack-bench" "$d$prefix/bin/"
install -m 755 "$rel/libxstack_preload.so" "$d$prefix/lib/xstack/"
install -m 644 "$root/README.md" "$root/ARCHITECTURE.md" "$d$prefix/share/doc/xstack/"
install -m 644 "$root/control/xstackd.example.toml" "$d/etc/xstack/example.toml"
sed "s|@PREFIX@|$prefix|g" "$root/control/xstackd@.service" >"$d/etc/systemd/system/xstackd@.service"
chmod 644 "$d/etc/systemd/system/xstackd@.service"
"$rel/xstackctl" completions bash >"$d/usr/share/bash-completion/completions/xstackctl"
"$rel/xstackd" --completions bash >"$d/usr/share/bash-completion/completions/xstackd"
if [[ -z $destdir ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
fi
echo "installed under $d$prefix (unit: $d/etc/systemd/system/xstackd@.service)"
echo "next: write /etc/xstack/IFACE.toml (see /etc/xstack/example.toml), then: systemctl enable --now xstackd@IFACE"
