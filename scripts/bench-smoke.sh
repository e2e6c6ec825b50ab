#!/usr/bin/env bash
# bench-smoke.sh: a short `xstack-bench compare` (about a second per stack
# and workload) on fresh namespace topologies, then checks its outputs:
# every stack produced non-empty, sane results (operations done, latency
# percentiles in order, few errors), the HdrHistogram logs and the report
# JSON parse, and every chart is a valid PNG / SVG image.
#
# usage: scripts/bench-smoke.sh [--release] [--keep] [--out DIR]
#   --release  use (and build) the release binary instead of the debug one
#   --keep     keep the output directory (default: removed on success)
#   --out DIR  write the outputs there (default: a temporary directory)
# Needs root (namespaces, XDP). Exit status 0 when every check passed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cd "$root"
profile=debug
keep=0
out=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --release) profile=release ;;
        --keep) keep=1 ;;
        --out) out=$2; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "bench-smoke.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [[ $EUID -ne 0 ]]; then
    echo "bench-smoke.sh: must run as root (network namespaces, XDP)" >&2
    exit 1
fi
# shellcheck source=/dev/null
[[ -f "$HOME/.cargo/env" ]] && source "$HOME/.cargo/env"

bin=${CARGO_TARGET_DIR:-target}/$profile/xstack-bench
if [[ $profile == release ]]; then
    cargo build --release -p xstack-bench --locked
else
    cargo build -p xstack-bench --locked
fi

if [[ -z "$out" ]]; then
    out=$(mktemp -d /tmp/xstack-bench-smoke.XXXXXX)
fi
mkdir -p "$out"
# Leave nothing behind when the run fails before writing anything.
trap 'rmdir "$out" 2>/dev/null || true' EXIT

echo "bench-smoke: compare run into $out"
status=0
timeout 300 "$bin" compare \
    --workloads rr,crr,rate --rates 1000,3000 --rate-connections 4 \
    --warmup 0.3 --duration 1 --out "$out" --quiet --check || status=$?
if [[ $status -ne 0 ]]; then
    echo "bench-smoke: compare failed (status $status); logs in $out/logs" >&2
    exit 1
fi

rc=0
python3 - "$out" <<'EOF' || rc=$?
import json, os, sys, xml.etree.ElementTree as ET

out = sys.argv[1]
passed = failed = 0

def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"bench-smoke: FAIL: {what}", file=sys.stderr)

rep = json.load(open(os.path.join(out, "report.json")))
results = rep["results"]
stacks = {r["stack"] for r in results}
for s in ("kernel-default", "kernel-spin", "xstack", "floor"):
    check(s in stacks, f"stack {s} has results")
for w in ("rr", "crr", "rate"):
    check(any(r["stack"] == "xstack" and r["label"].startswith(w) for r in results), f"xstack ran {w}")
for r in results:
    name = f'{r["stack"]} / {r["label"]}'
    check(r["ops"] > 0 and r["ops_per_s"] > 0, f"{name}: operations completed")
    lat = r.get("latency")
    check(lat is not None and lat["count"] > 0, f"{name}: non-empty latency histogram")
    if lat:
        check(0 < lat["min_ns"] <= lat["p50_ns"] <= lat["p90_ns"] <= lat["p99_ns"] <= lat["p999_ns"]
              <= lat["p9999_ns"] <= lat["max_ns"] < 10e9, f"{name}: percentiles ordered and below 10 s")
        # A round trip on a veth takes at least a microsecond and, median, under 50 ms.
        check(1_000 <= lat["p50_ns"] <= 50_000_000, f"{name}: plausible median {lat['p50_ns']} ns")
    check(r["errors"] <= max(1, r["ops"] // 100), f"{name}: errors {r['errors']} under 1% ({r.get('first_error')})")
    cpu = r.get("cpu")
    check(cpu is not None and cpu["client_proc_s"] >= 0 and cpu["server_proc_s"] >= 0, f"{name}: CPU time measured")
    h = r.get("hlog")
    check(h is not None and os.path.getsize(os.path.join(out, h)) > 0, f"{name}: HdrHistogram log written")
    if h:
        text = open(os.path.join(out, h)).read()
        check("#[StartTime:" in text and any(l.startswith("Tag=") for l in text.splitlines()), f"{name}: log is a V2 interval log")
        check(os.path.getsize(os.path.join(out, h[:-len(".hlog")] + ".hgrm")) > 0, f"{name}: percentile distribution written")

charts = [f for f in os.listdir(out) if f.endswith((".png", ".svg"))]
check(any(f.startswith("rr_") and f.endswith(".percentiles.png") for f in charts), "RR percentile chart (PNG)")
check(any(f.startswith("rr_") and f.endswith(".percentiles.svg") for f in charts), "RR percentile chart (SVG)")
check("rate.latency-vs-load.png" in charts and "rate.latency-vs-load.svg" in charts, "latency-vs-load chart")
for f in charts:
    data = open(os.path.join(out, f), "rb").read()
    if f.endswith(".png"):
        ok = data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and data.endswith(b"IEND\xaeB`\x82")
        w, hgt = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        check(ok and w >= 400 and hgt >= 300, f"{f}: valid PNG ({w}x{hgt})")
    else:
        try:
            ok = ET.fromstring(data).tag.endswith("svg")
        except ET.ParseError as e:
            ok = False
        check(ok, f"{f}: valid SVG")
check(os.path.getsize(os.path.join(out, "report.txt")) > 0, "text report written")
print(f"bench-smoke: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
EOF
if command -v file >/dev/null 2>&1; then
    file "$out"/*.png "$out"/*.svg | sed 's/^/bench-smoke: /'
fi
if [[ $rc -eq 0 && $keep -eq 0 ]]; then
    rm -rf "$out"
fi
exit $rc
