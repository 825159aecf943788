#!/usr/bin/env bash
# Runs one fixed sequence of Kafka's command-line tools against a broker and saves what each
# printed, so Fjord and Apache Kafka can be compared side by side:
#
#   bench/kafka/compare-tools.sh BOOTSTRAP OUTDIR
#
#   bench/kafka/start.sh --port 39092 --controller-port 39093 --base-dir /tmp/ref
#   bench/kafka/compare-tools.sh 127.0.0.1:39092 /tmp/tools-kafka
#   bench/kafka/stop.sh --base-dir /tmp/ref --clean
#   fjord server --listeners PLAINTEXT://127.0.0.1:29092 --admin-listener 127.0.0.1:29644 \
#       --log-dirs /tmp/fj --set group.initial.rebalance.delay.ms=0 &
#   bench/kafka/compare-tools.sh 127.0.0.1:29092 /tmp/tools-fjord
#   diff -r /tmp/tools-kafka /tmp/tools-fjord
#
# Each step writes OUTDIR/NN-name.txt: the command, its exit status, stdout, then stderr (with
# Java stack frames removed). Topic ids, cluster ids, timestamps and rates differ on every run.
# Uses a fresh set of topic and group names (cmp-*), so run it against an empty broker.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ $# -eq 2 ] || { sed -n '5p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2; exit 2; }
b="$1"
out="$2"
mkdir -p "$out"
home="$("$here/fetch.sh")" || exit 1
bin="$home/bin"
export KAFKA_JVM_PERFORMANCE_OPTS="${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1}"
n=0

# step NAME [--stdin FILE] TOOL ARGS...
step() {
    local name="$1" input=/dev/null
    shift
    if [ "$1" = "--stdin" ]; then
        input="$2"
        shift 2
    fi
    n=$((n + 1))
    local f
    f="$out/$(printf '%02d' "$n")-$name.txt"
    local so se rc
    so=$(mktemp)
    se=$(mktemp)
    timeout 120 "$bin/$1.sh" "${@:2}" <"$input" >"$so" 2>"$se"
    rc=$?
    {
        echo "\$ $* (exit $rc)"
        echo "--- stdout"
        cat "$so"
        echo "--- stderr"
        grep -v -E '^\s+at |^\s+\.\.\. [0-9]+ more' "$se"
    } >"$f"
    rm -f "$so" "$se"
    echo "$(printf '%02d' "$n") $name: exit $rc" >&2
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for i in $(seq 1 10); do echo "key$i:value$i"; done >"$tmp/keyed.txt"
echo '{"partitions":[{"topic":"cmp-lag","partition":0,"offset":3}],"version":1}' >"$tmp/delete.json"

step topics-create kafka-topics --bootstrap-server "$b" --create --topic cmp-t1 --partitions 3 \
    --replication-factor 1 --config retention.ms=3600000 --config cleanup.policy=compact
step topics-create-again kafka-topics --bootstrap-server "$b" --create --topic cmp-t1 --partitions 3
step topics-list kafka-topics --bootstrap-server "$b" --list
step topics-describe kafka-topics --bootstrap-server "$b" --describe --topic cmp-t1
step topics-alter kafka-topics --bootstrap-server "$b" --alter --topic cmp-t1 --partitions 5
step topics-alter-fewer kafka-topics --bootstrap-server "$b" --alter --topic cmp-t1 --partitions 2
step topics-describe-5 kafka-topics --bootstrap-server "$b" --describe --topic cmp-t1
step configs-describe kafka-configs --bootstrap-server "$b" --entity-type topics --entity-name cmp-t1 --describe
step configs-add kafka-configs --bootstrap-server "$b" --entity-type topics --entity-name cmp-t1 \
    --alter --add-config retention.ms=7200000,max.message.bytes=2000000
step configs-delete kafka-configs --bootstrap-server "$b" --entity-type topics --entity-name cmp-t1 \
    --alter --delete-config cleanup.policy
step configs-add-bad kafka-configs --bootstrap-server "$b" --entity-type topics --entity-name cmp-t1 \
    --alter --add-config no.such.config=1
step configs-describe-2 kafka-configs --bootstrap-server "$b" --entity-type topics --entity-name cmp-t1 --describe
step configs-broker kafka-configs --bootstrap-server "$b" --entity-type brokers --entity-name 1 --describe
step configs-broker-default kafka-configs --bootstrap-server "$b" --entity-type brokers --entity-default --describe
step topics-create-lag kafka-topics --bootstrap-server "$b" --create --topic cmp-lag --partitions 1
step console-produce --stdin "$tmp/keyed.txt" kafka-console-producer --bootstrap-server "$b" \
    --topic cmp-lag --property parse.key=true --property key.separator=:
step console-consume-4 kafka-console-consumer --bootstrap-server "$b" --topic cmp-lag \
    --from-beginning --max-messages 4 --group cmp-g1 --property print.key=true \
    --consumer-property max.poll.records=1
step groups-list kafka-consumer-groups --bootstrap-server "$b" --list
step groups-describe kafka-consumer-groups --bootstrap-server "$b" --describe --group cmp-g1
step groups-describe-state kafka-consumer-groups --bootstrap-server "$b" --describe --group cmp-g1 --state
step groups-reset kafka-consumer-groups --bootstrap-server "$b" --reset-offsets --to-earliest \
    --execute --group cmp-g1 --topic cmp-lag
step groups-describe-reset kafka-consumer-groups --bootstrap-server "$b" --describe --group cmp-g1
step groups-delete kafka-consumer-groups --bootstrap-server "$b" --delete --group cmp-g1
step groups-describe-deleted kafka-consumer-groups --bootstrap-server "$b" --describe --group cmp-g1
step get-offsets kafka-get-offsets --bootstrap-server "$b" --topic cmp-lag
step delete-records kafka-delete-records --bootstrap-server "$b" --offset-json-file "$tmp/delete.json"
step get-offsets-earliest kafka-get-offsets --bootstrap-server "$b" --topic cmp-lag --time -2
step get-offsets-max-timestamp kafka-get-offsets --bootstrap-server "$b" --topic cmp-lag --time -3
step console-consume-after-delete kafka-console-consumer --bootstrap-server "$b" --topic cmp-lag \
    --from-beginning --max-messages 7 --property print.key=true --property print.offset=true
step get-offsets-by-time kafka-get-offsets --bootstrap-server "$b" --topic-partitions 'cmp-t1:0,cmp-lag:0' \
    --time "$(($(date +%s) * 1000 - 3600000))"
step console-consume-848 kafka-console-consumer --bootstrap-server "$b" --topic cmp-lag \
    --from-beginning --max-messages 2 --group cmp-g848 --consumer-property group.protocol=consumer \
    --consumer-property max.poll.records=1
step groups-list-type kafka-consumer-groups --bootstrap-server "$b" --list --type
step groups-describe-848-state kafka-consumer-groups --bootstrap-server "$b" --describe --group cmp-g848 --state
step groups-describe-848 kafka-consumer-groups --bootstrap-server "$b" --describe --group cmp-g848
step groups-delete-offsets kafka-consumer-groups --bootstrap-server "$b" --delete-offsets --group cmp-g848 --topic cmp-lag
step groups-describe-848-after kafka-consumer-groups --bootstrap-server "$b" --describe --group cmp-g848
step configs-group kafka-configs --bootstrap-server "$b" --entity-type groups --entity-name cmp-g848 --describe
step configs-broker-alter kafka-configs --bootstrap-server "$b" --entity-type brokers --entity-default \
    --alter --add-config log.retention.ms=86400000
step configs-broker-all kafka-configs --bootstrap-server "$b" --entity-type brokers --entity-name 1 --describe --all
step configs-topic-all kafka-configs --bootstrap-server "$b" --entity-type topics --entity-name cmp-lag --describe --all
step perf-produce kafka-producer-perf-test --topic cmp-perf --num-records 10000 --record-size 100 \
    --throughput -1 --producer-props "bootstrap.servers=$b" acks=all
step perf-consume kafka-consumer-perf-test --bootstrap-server "$b" --topic cmp-perf --messages 10000
step api-versions kafka-broker-api-versions --bootstrap-server "$b"
step quorum-status kafka-metadata-quorum --bootstrap-server "$b" describe --status
step quorum-replication kafka-metadata-quorum --bootstrap-server "$b" describe --replication
step leader-election kafka-leader-election --bootstrap-server "$b" --election-type preferred --all-topic-partitions
step leader-election-one kafka-leader-election --bootstrap-server "$b" --election-type preferred \
    --topic cmp-t1 --partition 0
step acls-list kafka-acls --bootstrap-server "$b" --list
step reassign-list kafka-reassign-partitions --bootstrap-server "$b" --list
step log-dirs kafka-log-dirs --bootstrap-server "$b" --describe --topic-list cmp-lag
step features kafka-features --bootstrap-server "$b" describe
step cluster-id kafka-cluster cluster-id --bootstrap-server "$b"
step topics-delete kafka-topics --bootstrap-server "$b" --delete --topic cmp-t1
step topics-describe-deleted kafka-topics --bootstrap-server "$b" --describe --topic cmp-t1
step topics-list-end kafka-topics --bootstrap-server "$b" --list --exclude-internal
