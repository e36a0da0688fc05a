#!/usr/bin/env bash
# Every figure of the README's Performance section, measured on this machine in one run:
#
#   ycsb     rangekv against etcd side by side: a release build of rangekv, a 3-store
#            playground (3 PD members) and a 3-member etcd on loopback, the same YCSB loads
#            through `rangekv bench` against each, alternating;
#   hotspot  a fresh playground under sequential inserts (`bench --workload i --insert-order
#            ordered`) and then under Zipfian reads of one region (`--workload c`), each with
#            `--watch-regions`: time to the first (load) split and to leaders spread evenly;
#   engine   replicated writes against synced RocksDB group commit (`--bench engine_efficiency`);
#   pd       TSO latency while PD takes heartbeats from 100,000 regions (`--bench pd_scale`);
#   idle     idle CPU and memory of 5,000 regions, hibernation off and on (`--bench idle_regions`).
#
# Each part prints a Markdown table (the README keeps them).
#
#   scripts/perf.sh                          # every part
#   PARTS="ycsb hotspot" scripts/perf.sh     # some of them
#   WORKLOADS="a c" DURATION=30 scripts/perf.sh
#   REGIONS=8 scripts/perf.sh                # split rangekv's key space into 8 regions first
#   SERVER_CONFIG=f.toml scripts/perf.sh     # every store of the playgrounds with this config
#
# Raw results (one JSON object per run) go to $OUT (default target/perf/<time>.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

PARTS=${PARTS:-"ycsb hotspot engine pd idle"}
WORKLOADS=${WORKLOADS:-"c a b w"}
DURATION=${DURATION:-15}
HOT_DURATION=${HOT_DURATION:-30}
CONCURRENCY=${CONCURRENCY:-64}
VALUE_SIZE=${VALUE_SIZE:-1024}
RECORDS=${RECORDS:-10000}
REGIONS=${REGIONS:-1}
IDLE_REGIONS=${IDLE_REGIONS:-5000}
part() { [[ " $PARTS " == *" $1 "* ]]; }

timed "build (release)" cargo build --release -p rangekv >&2
B="$CARGO_TARGET_DIR/release/rangekv"
work=$(mktemp -d -t rangekv-perf.XXXXXX)
OUT=${OUT:-$CARGO_TARGET_DIR/perf/$(date -u +%Y%m%dT%H%M%SZ).jsonl}
mkdir -p "$(dirname "$OUT")"
: >"$OUT"

pg_pid=""
etcd_dir=""
cleanup() {
  [ -n "$pg_pid" ] && { kill -INT "$pg_pid" 2>/dev/null && wait "$pg_pid" 2>/dev/null || true; }
  [ -n "$etcd_dir" ] && scripts/etcd-cluster.sh stop "$etcd_dir" || true
  rm -rf "$work"
}
trap cleanup EXIT

# Starts a playground in $1 (a directory), sets pg_pid.
start_playground() {
  local extra=()
  [ -n "${SERVER_CONFIG:-}" ] && extra=(--server-config "$SERVER_CONFIG")
  "$B" playground --data-dir "$1" "${extra[@]}" >"$1.log" 2>&1 &
  pg_pid=$!
  for _ in $(seq 1 300); do
    grep -q "press Ctrl-C" "$1.log" && return 0
    kill -0 "$pg_pid" 2>/dev/null || { cat "$1.log" >&2; exit 1; }
    sleep 0.2
  done
  echo "playground did not start" >&2
  exit 1
}
stop_playground() {
  kill -INT "$pg_pid" 2>/dev/null && wait "$pg_pid" 2>/dev/null || true
  pg_pid=""
}

common=(--records "$RECORDS" --concurrency "$CONCURRENCY" --value-size "$VALUE_SIZE" --json)

if part ycsb; then
  start_playground "$work/rangekv"
  etcd_dir=$(scripts/etcd-cluster.sh start "$work/etcd")
  # Optional pre-split: hashed record keys are "user" + 20 digits, spread over 00..18.
  if [ "$REGIONS" -gt 1 ]; then
    for i in $(seq 1 $((REGIONS - 1))); do
      "$B" ctl --pd 127.0.0.1:2379 region split "$(printf 'user%02d' $((i * 18 / REGIONS)))" >/dev/null
    done
  fi
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
  stop_playground
  scripts/etcd-cluster.sh stop "$etcd_dir" || true
  etcd_dir=""
  python3 - "$OUT" "$CONCURRENCY" "$VALUE_SIZE" "$RECORDS" "$DURATION" "$REGIONS" <<'PY'
import json, sys
path, conc, vsize, records, duration, regions = sys.argv[1:]
runs = {}
for line in open(path):
    r = json.loads(line)
    if "regions" not in r:
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
print()
PY
fi

if part hotspot; then
  hot=$(mktemp -t rangekv-hot.XXXXXX.jsonl)
  echo "==> hotspot: sequential inserts" >&2
  start_playground "$work/hot-insert"
  "$B" bench --records 1000 --concurrency "$CONCURRENCY" --value-size "$VALUE_SIZE" --json \
    --workload i --insert-order ordered \
    --duration "$HOT_DURATION" --watch-regions >>"$hot"
  stop_playground
  echo "==> hotspot: Zipfian reads of one region" >&2
  start_playground "$work/hot-read"
  "$B" bench "${common[@]}" --workload c --duration "$HOT_DURATION" --watch-regions >>"$hot"
  stop_playground
  cat "$hot" >>"$OUT"
  python3 - "$hot" "$CONCURRENCY" "$HOT_DURATION" <<'PY'
import json, sys
path, conc, duration = sys.argv[1:]
print(f"3-store playground, {conc} workers, {duration} s, default `[split]` (3,000 requests/s "
      "for 3 s); times from the start of the load")
print()
print("| load | ops/s | regions (start → end) | first split | leaders even | leaders per store at the end |")
print("|---|---|---|---|---|---|")
names = {"i": "sequential inserts", "c": "Zipfian reads"}
for line in open(path):
    r = json.loads(line)
    g = r["regions"]
    secs = lambda v: "never" if v is None else f"{v:.1f} s"
    leaders = ", ".join(f"{n}" for _, n in sorted(g["leaders_at_end"].items()))
    print(f'| {names.get(r["workload"], r["workload"])} | {r["ops_per_sec"]:,.0f} | '
          f'{g["regions_at_start"]} → {g["regions_at_end"]} | {secs(g["first_split_secs"])} | '
          f'{secs(g["leaders_even_secs"])} | {leaders} |')
print()
PY
  rm -f "$hot"
fi

if part engine; then
  echo "==> engine efficiency" >&2
  cargo bench -q -p benches --bench engine_efficiency 2>/dev/null
  echo
fi
if part pd; then
  echo "==> PD at scale" >&2
  cargo bench -q -p benches --bench pd_scale 2>/dev/null
  echo
fi
if part idle; then
  echo "==> idle regions" >&2
  IDLE_REGIONS=$IDLE_REGIONS cargo bench -q -p benches --bench idle_regions 2>/dev/null
  echo
fi
echo "raw results: $OUT" >&2
