#!/usr/bin/env bash
# Instructions per produced record on the broker (issue 14), counted by valgrind's callgrind:
# repeatable on a noisy, shared machine, unlike a wall-clock rate.
#
# Starts `fjord server` (release build) under callgrind with instrumentation off, creates a
# one-partition topic, switches instrumentation on, produces N records with `fjord perf produce`
# (run natively, not under valgrind), switches it off and dumps, stops the broker, and prints the
# instructions (Ir) counted while producing divided by the records, and the top functions by
# self cost. Startup, topic creation and shutdown are not counted; background work (timers,
# metadata ticks) during the produce window is, and is small next to N records.
#
#   bench/callgrind_produce.sh                               # 1 KB and 100 B, acks=1
#   bench/callgrind_produce.sh --sizes 1024 --records 50000
#   bench/callgrind_produce.sh --fjord /tmp/old/fjord --out bench/results/hot-path/cg-before
#
# Needs valgrind (apt-get install valgrind); CI does not run this.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FJORD=$ROOT/target/release/fjord
SIZES="1024 100"
RECORDS=""
ACKS=1
OUT=""
TOP=15
while [ $# -gt 0 ]; do
  case "$1" in
    --fjord) FJORD=$2; shift 2 ;;
    --sizes) SIZES=$2; shift 2 ;;
    --records) RECORDS=$2; shift 2 ;;
    --acks) ACKS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --top) TOP=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || { echo "valgrind missing: apt-get install valgrind" >&2; exit 1; }
[ -x "$FJORD" ] || { echo "$FJORD missing: cargo build --release -p fjord" >&2; exit 1; }
WORK=$(mktemp -d /tmp/fjord-callgrind.XXXXXX)
OUT=${OUT:-$WORK/out}
mkdir -p "$OUT"
. "$ROOT/bench/fjord_server.sh"
cleanup() {
  stop_fjord
  rm -rf "$WORK/data"
}
trap cleanup EXIT

# Total Ir of a callgrind output file.
total_ir() {
  callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n {gsub(",", "", $1); print $1; n = 1}'
}

echo "fjord: $FJORD (built $(date -u -r "$FJORD" '+%F %T UTC'); this tree's HEAD is" \
  "$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo "valgrind: $(valgrind --version); host: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for SIZE in $SIZES; do
  N=${RECORDS:-$(( SIZE >= 1000 ? 200000 : 1000000 ))}
  CG=$OUT/callgrind.produce-${SIZE}B-acks${ACKS}.out
  rm -f "$CG"
  start_fjord "$WORK" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$CG"
  "$FJORD" --bootstrap-server "$BOOT" topic create "cg$SIZE" --partitions 1 >/dev/null
  # A short warm-up outside the measurement (first-use allocations, connection setup).
  "$FJORD" --bootstrap-server "$BOOT" perf produce --topic "cg$SIZE" --record-size "$SIZE" \
    --num-records 2000 --acks "$ACKS" >/dev/null
  callgrind_control -i on "$SERVER_PID" >/dev/null 2>&1
  T0=$SECONDS
  "$FJORD" --bootstrap-server "$BOOT" perf produce --topic "cg$SIZE" --record-size "$SIZE" \
    --num-records "$N" --acks "$ACKS" | tail -1 | tee "$OUT/perf-${SIZE}B-acks${ACKS}.txt"
  callgrind_control -i off "$SERVER_PID" >/dev/null 2>&1
  SECS=$((SECONDS - T0))
  stop_fjord
  IR=$(total_ir "$CG")
  echo "produce ${SIZE} B acks=${ACKS}: $N records in ${SECS} s under callgrind;" \
    "total Ir $IR; Ir per record $(( IR / N )); Ir per KB $(( IR * 1024 / (N * SIZE) ))"
  echo "top functions by self Ir (inlined code summed into its function) — $CG:"
  callgrind_annotate --inclusive=no --auto=no --threshold=100 "$CG" 2>/dev/null | python3 -c '
import re, sys, collections
top, total, cost = int(sys.argv[1]), int(sys.argv[2]), collections.Counter()
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*?)(?: \[.*\])?$", line)
    if m and "PROGRAM TOTALS" not in line:
        # "file:function": the file may be an inlined callee'"'"'s, the function is where it ran.
        cost[re.sub(r"^[^:]*:(?!:)", "", m.group(2), count=1)] += int(m.group(1).replace(",", ""))
for fn, ir in cost.most_common(top):
    print(f"{ir:>14,} {100 * ir / total:5.1f} %  {fn[:160]}")
' "$TOP" "$IR"
  echo
done
