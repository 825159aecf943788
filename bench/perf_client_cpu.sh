#!/usr/bin/env bash
# CPU the load generator itself spends per MB produced (issue 14 item 5): runs
# `/usr/bin/time -v fjord perf produce` against a running `fjord server` and prints user + system
# CPU seconds of the perf process per MB of record values, next to its throughput. Several
# clients (--client, repeatable) run in turn against the same fresh broker, alternating over
# --rounds, so an old and a new build of the load generator meet the same broker and noise.
#
#   bench/perf_client_cpu.sh --client /tmp/old/fjord --client target/release/fjord
#   bench/perf_client_cpu.sh --server target/release/fjord --sizes "100 1024" --rounds 3
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SERVER=$ROOT/target/release/fjord
CLIENTS=()
SIZES="1024 100"
ROUNDS=3
MB_PER_RUN=500
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --server) SERVER=$2; shift 2 ;;
    --client) CLIENTS+=("$2"); shift 2 ;;
    --sizes) SIZES=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --mb) MB_PER_RUN=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#CLIENTS[@]} -gt 0 ] || CLIENTS=("$ROOT/target/release/fjord")
WORK=$(mktemp -d /tmp/fjord-client-cpu.XXXXXX)
OUT=${OUT:-$WORK}
mkdir -p "$OUT"
FJORD=$SERVER
. "$ROOT/bench/fjord_server.sh"
cleanup() {
  stop_fjord
  rm -rf "$WORK/data"
}
trap cleanup EXIT
start_fjord "$WORK"
echo "server $SERVER on $BOOT; host $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for SIZE in $SIZES; do
  N=$((MB_PER_RUN * 1000000 / SIZE))
  for ROUND in $(seq 1 "$ROUNDS"); do
    for i in "${!CLIENTS[@]}"; do
      # Alternate which client goes first.
      C=${CLIENTS[$(( (i + ROUND) % ${#CLIENTS[@]} ))]}
      LOG=$OUT/time-${SIZE}B-r$ROUND-$(( (i + ROUND) % ${#CLIENTS[@]} )).txt
      # A topic per run, deleted after it: the data never piles up on the disk.
      TOPIC=cpu$SIZE-r$ROUND-$i
      "${CLIENTS[0]}" --bootstrap-server "$BOOT" topic create "$TOPIC" --partitions 1 >/dev/null
      /usr/bin/time -v "$C" --bootstrap-server "$BOOT" perf produce --topic "$TOPIC" \
        --record-size "$SIZE" --num-records "$N" --acks 1 >"$LOG" 2>&1 || true
      "${CLIENTS[0]}" --bootstrap-server "$BOOT" topic delete "$TOPIC" >/dev/null
      python3 - "$LOG" "$C" "$SIZE" "$N" <<'EOF'
import re, sys
log, client, size, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t = open(log).read()
if "Exit status: 0" not in t:
    sys.exit(f"{client} failed, see {log}:\n{t[:300]}")
user = float(re.search(r"User time \(seconds\): ([\d.]+)", t).group(1))
sys_ = float(re.search(r"System time \(seconds\): ([\d.]+)", t).group(1))
m = re.findall(r"records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\)", t)
mb = n * size / 1e6
print(f"{size:>5} B  {client}: {n} records, {mb:.0f} MB, {m[-1][0]} records/s, "
      f"user {user:.2f} s + sys {sys_:.2f} s = {(user + sys_) * 1000 / mb:.2f} ms CPU per MB")
EOF
    done
  done
done
