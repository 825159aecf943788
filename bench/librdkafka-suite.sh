#!/usr/bin/env bash
# librdkafka's own test suite against Fjord: the tests/ directory of the librdkafka bundled in
# the rdkafka-sys crate (built as bench/build-reference.sh builds the library), run one test at
# a time against a 3-node `fjord dev cluster` shaped like the suite's default scenario (topics
# auto-created with 4 partitions and replication factor 3), with KAFKA_PATH pointing at Apache
# Kafka's tools from Maven Central (bench/kafka/fetch.sh) so the tests that shell out to
# kafka-topics.sh / kafka-configs.sh run too.
#
#   bench/librdkafka-suite.sh [--protocol classic|consumer] [--tests "0001 0002 ..."]
#                             [--timeout SECONDS-PER-TEST] [--out FILE]
#
# Prints one line per test (PASSED / FAILED / SKIPPED / TIMEOUT, seconds) and a summary; the
# full output of each failed test is kept under the work dir. The whole suite takes hours on
# 2 cores: it is a benchmark-style run, not part of CI.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${FJORD_BENCH_WORK:-$ROOT/target/bench-work}
protocol=classic
tests=""
timeout=600
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --protocol) protocol="$2"; shift 2 ;;
        --tests) tests="$2"; shift 2 ;;
        --timeout) timeout="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "librdkafka-suite: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
log() { printf '[librdkafka-suite] %s\n' "$*" >&2; }

"$ROOT/bench/build-reference.sh"
"$ROOT/bench/kafka/fetch.sh" >&2
version=$(tr -d '[:space:]' <"$ROOT/bench/kafka/VERSION")
kafka_path=${FJORD_KAFKA_HOME:-$HOME/.cache/fjord/kafka-$version}
BUILD=$WORK/librdkafka
if [ ! -x "$BUILD/tests/test-runner" ]; then
    log "building librdkafka's C++ library and test runner (several minutes on 2 cores)"
    make -C "$BUILD" -j"$(nproc)" libs >"$WORK/make-libs.log" 2>&1 ||
        { log "build failed, see $WORK/make-libs.log"; exit 1; }
    make -C "$BUILD/tests" -j"$(nproc)" build >"$WORK/make-tests.log" 2>&1 ||
        { log "build failed, see $WORK/make-tests.log"; exit 1; }
fi
(cd "$ROOT" && cargo build --release -q -p fjord)
fjord="$ROOT/target/release/fjord"

run_dir=$(mktemp -d "$WORK/librdkafka-suite-XXXX")
cluster="$run_dir/cluster"
cleanup() { "$fjord" dev cluster stop --dir "$cluster" >/dev/null 2>&1 || true; }
trap cleanup EXIT
ready=$(FJORD_NUM_PARTITIONS=4 FJORD_DEFAULT_REPLICATION_FACTOR=3 FJORD_LOG=warn \
    "$fjord" dev cluster --nodes 3 --dir "$cluster" --kafka-port 0 --controller-port 0 \
    --admin-port 0 --detach)
bootstrap=$(sed -n 's/.*bootstrap=\([^ ]*\).*/\1/p' <<<"$ready")
[ -n "$bootstrap" ] || { log "no ready line from fjord dev cluster: $ready"; exit 1; }
log "fjord cluster: $bootstrap; group.protocol=$protocol; KAFKA_PATH=$kafka_path"

cat >"$BUILD/tests/test.conf" <<CONF
bootstrap.servers=$bootstrap
CONF
if [ -z "$tests" ]; then
    tests=$(cd "$BUILD/tests" && ls 0[0-9][0-9][0-9]-*.c 0[0-9][0-9][0-9]-*.cpp 2>/dev/null |
        cut -c1-4 | sort -u | tr '\n' ' ')
fi
out=${out:-$run_dir/results.txt}
: >"$out"
passed=0 failed=0 skipped=0
for t in $tests; do
    start=$(date +%s)
    set +e
    (cd "$BUILD/tests" && LD_LIBRARY_PATH="$BUILD/src:$BUILD/src-cpp" TESTS=$t TEST_KAFKA_VERSION=$version KAFKA_PATH=$kafka_path \
        BROKERS=$bootstrap TEST_CONSUMER_GROUP_PROTOCOL=$protocol \
        timeout "$timeout" ./test-runner -p1 -E) >"$run_dir/$t.log" 2>&1
    rc=$?
    set -e
    secs=$(($(date +%s) - start))
    if [ "$rc" -eq 124 ]; then
        verdict=TIMEOUT
    elif grep -q "SKIPPED" "$run_dir/$t.log" && [ "$rc" -eq 0 ] &&
        ! grep -q "PASSED" "$run_dir/$t.log"; then
        verdict=SKIPPED
    elif [ "$rc" -eq 0 ]; then
        verdict=PASSED
    else
        verdict=FAILED
    fi
    case "$verdict" in
        PASSED) passed=$((passed + 1)); rm -f "$run_dir/$t.log" ;;
        SKIPPED) skipped=$((skipped + 1)); rm -f "$run_dir/$t.log" ;;
        *) failed=$((failed + 1)) ;;
    esac
    printf '%s %-8s %5ss\n' "$t" "$verdict" "$secs" | tee -a "$out"
done
printf 'summary: protocol=%s passed=%d failed=%d skipped=%d (logs of failures: %s)\n' \
    "$protocol" "$passed" "$failed" "$skipped" "$run_dir" | tee -a "$out"
