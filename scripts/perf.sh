#!/usr/bin/env bash
# rangekv against etcd on this machine, side by side in one run: a release build of rangekv,
# a 3-store playground (3 PD members) and a 3-member etcd on loopback, then the same YCSB loads
# through `rangekv bench` against each, alternating, and one Markdown table of the results
# (the README's Performance section keeps it). Every figure in the table comes from this run.
#
#   scripts/perf.sh                          # workloads a b c w, 64 workers, 1 KiB values, 15 s
#   WORKLOADS="a c" DURATION=30 scripts/perf.sh
#   REGIONS=8 scripts/perf.sh                # split rangekv's key space into 8 regions first
#
# Raw results (one JSON object per run) go to $OUT (default target/perf/<time>.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

WORKLOADS=${WORKLOADS:-"c a b w"}
DURATION=${DURATION:-15}
CONCURRENCY=${CONCURRENCY:-64}
VALUE_SIZE=${VALUE_SIZE:-1024}
RECORDS=${RECORDS:-10000}
REGIONS=${REGIONS:-1}

timed "build (release)" cargo build --release -p rangekv
B="$CARGO_TARGET_DIR/release/rangekv"
work=$(mktemp -d -t rangekv-perf.XXXXXX)
OUT=${OUT:-$CARGO_TARGET_DIR/perf/$(date -u +%Y%m%dT%H%M%SZ).jsonl}
mkdir -p "$(dirname "$OUT")"
: >"$OUT"

pg_pid=""
etcd_dir=""
cleanup() {
  [ -n "$pg_pid" ] && kill -INT "$pg_pid" 2>/dev/null && wait "$pg_pid" 2>/dev/null || true
  [ -n "$etcd_dir" ] && scripts/etcd-cluster.sh stop "$etcd_dir" || true
  rm -rf "$work"
}
trap cleanup EXIT

"$B" playground --data-dir "$work/rangekv" >"$work/playground.log" 2>&1 &
pg_pid=$!
for _ in $(seq 1 300); do
  grep -q "press Ctrl-C" "$work/playground.log" && break
  kill -0 "$pg_pid" 2>/dev/null || { cat "$work/playground.log" >&2; exit 1; }
  sleep 0.2
done
grep -q "press Ctrl-C" "$work/playground.log" || { echo "playground did not start" >&2; exit 1; }
etcd_dir=$(scripts/etcd-cluster.sh start "$work/etcd")

# Optional pre-split: hashed record keys are "user" + 20 digits, spread over 00..18.
if [ "$REGIONS" -gt 1 ]; then
  for i in $(seq 1 $((REGIONS - 1))); do
    "$B" ctl --pd 127.0.0.1:2379 region split "$(printf 'user%02d' $((i * 18 / REGIONS)))" >/dev/null
  done
fi

common=(--records "$RECORDS" --concurrency "$CONCURRENCY" --value-size "$VALUE_SIZE" --json)
# Load both (and warm them up) first; the measured runs then only read and write.
"$B" bench --target rangekv "${common[@]}" --workload c --duration 1 >/dev/null
"$B" bench --target etcd "${common[@]}" --workload c --duration 1 >/dev/null
for w in $WORKLOADS; do
  for target in rangekv etcd; do
    echo "==> workload $w against $target" >&2
    "$B" bench --target "$target" "${common[@]}" --workload "$w" --duration "$DURATION" \
      --skip-load >>"$OUT"
  done
done

python3 - "$OUT" "$CONCURRENCY" "$VALUE_SIZE" "$RECORDS" "$DURATION" "$REGIONS" <<'PY'
import json, sys
path, conc, vsize, records, duration, regions = sys.argv[1:]
runs = {}
for line in open(path):
    r = json.loads(line)
    runs[(r["workload"], r["target"])] = r
def cell(r):
    kinds = ", ".join(f'{k} {v["p50_us"]/1000:.1f}/{v["p99_us"]/1000:.1f}'
                      for k, v in r["by_kind"].items())
    errs = f', {r["errors"]} errors' if r["errors"] else ""
    return f'{r["ops_per_sec"]:,.0f} ({kinds}{errs})'
print(f"{conc} workers, {vsize} B values, {records} records, {duration} s a load, "
      f"{regions} rangekv region(s); latencies p50/p99 in ms")
print()
print("| YCSB | rangekv ops/s (p50/p99) | etcd ops/s (p50/p99) | ratio |")
print("|---|---|---|---|")
for w in sorted({w for w, _ in runs}, key=lambda w: "cabwdef".index(w) if w in "cabwdef" else 9):
    rk, et = runs.get((w, "rangekv")), runs.get((w, "etcd"))
    if not rk or not et:
        continue
    print(f'| {w} | {cell(rk)} | {cell(et)} | {rk["ops_per_sec"]/max(et["ops_per_sec"],1e-9):.2f} |')
PY
echo "raw results: $OUT" >&2
