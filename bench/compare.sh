#!/usr/bin/env bash
# One command: build the reference tools and Fjord, fetch Apache Kafka from Maven Central, then run
# Fjord, Kafka, librdkafka's mock broker and the machine's raw limits side by side and print the
# table (see docs/performance.md). --no-kafka / --no-mock leave a column out.
#
#   bench/compare.sh            # full run: 3 rounds, ~20 minutes on 2 cores
#   bench/compare.sh --quick    # 1/10 of the data, 2 rounds, a few minutes
#   bench/compare.sh --rounds 5 --only "1p,catch-up"
#   bench/compare.sh --rounds 3 --only catch-up --no-mock   # both consumers' catch-up rows
#                                                           # (rdkafka_performance and
#                                                           # kafka-consumer-perf-test), ~6 min
#   bench/compare.sh --targets --rounds 2   # issue 14's targets in one run (~20 min): their
#                                           # single-node rows, then the three-node RF 3 runs
#                                           # (bench/replication.py, 1 KB, at full speed and at
#                                           # 50 % of it), and a table of ratio vs bound
#   bench/compare.sh --rf3                  # all rows, plus the RF 3 runs and the targets table
#   bench/compare.sh --only "(Java" --no-mock --rounds 3    # transactional produce ÷ plain
#   bench/compare.sh --tls --rounds 3 --raw-dir bench/results/security/raw
#                                           # issue 16: Fjord and Kafka over PLAINTEXT and over
#                                           # TLS (one-way, certificates made with openssl),
#                                           # produce and catch-up rows, TLS ÷ plaintext (~15 min)
# Three nodes (RF 3 acks=all etc.), Fjord vs Kafka: python3 bench/replication.py --only produce
# --kafka (bench/kafka/README.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/bench/build-reference.sh"
# The Java client scenarios' jar: its txn-perf scenario drives the transactional rows.
"$ROOT/scripts/setup-java-clients.sh"
case " $* " in
  *" --no-kafka "*) ;;
  *) "$ROOT/bench/kafka/fetch.sh" >&2 ;;
esac
WORK=${FJORD_BENCH_WORK:-$ROOT/target/bench-work}
cc -O2 -Wall -o "$WORK/rawlimits" "$ROOT/bench/rawlimits.c" -lpthread
(cd "$ROOT" && cargo build --release -q -p fjord)
exec python3 "$ROOT/bench/compare.py" --work "$WORK" "$@"
