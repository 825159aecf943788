#!/usr/bin/env bash
# Apache Kafka (broker and command-line tools) from Maven Central, laid out like Kafka's binary
# distribution:
#
#   bench/kafka/fetch.sh [VERSION]      # default: bench/kafka/VERSION (or $FJORD_KAFKA_VERSION)
#
#   $FJORD_KAFKA_HOME (default ~/.cache/fjord/kafka-VERSION)/
#     libs/      kafka_2.13, kafka-tools and every jar they need at run time (mvn copy-dependencies)
#     bin/       kafka-run-class.sh and kafka-topics.sh, kafka-configs.sh, ... kafka-server-start.sh
#     config/    tools-log4j2.properties (WARN to stderr), log4j2.properties (broker: INFO to
#                stdout), server.properties (a single-node KRaft example)
#
# Prints the directory on stdout (nothing else), so `KAFKA_HOME=$(bench/kafka/fetch.sh)` works.
# Idempotent: a stamp file records the version and a hash of this script and pom.xml; when it
# matches, nothing runs (a few milliseconds). Any Maven failure stops with its output.
#
# The release matching the kafka-protocol crate Fjord is built on (Kafka 4.1):
#   FJORD_KAFKA_HOME=~/.cache/fjord/kafka-4.1.2 bench/kafka/fetch.sh 4.1.2
# (the default home already depends on the version, so `bench/kafka/fetch.sh 4.1.2` is enough).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="${1:-${FJORD_KAFKA_VERSION:-$(tr -d '[:space:]' <"$here/VERSION")}}"
home="${FJORD_KAFKA_HOME:-$HOME/.cache/fjord/kafka-$version}"

log() { echo "fetch.sh: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

case "$version" in
    [0-9]*.[0-9]*.[0-9]*) ;;
    *) die "bad Kafka version '$version' (expected e.g. 4.4.0)" ;;
esac

key="kafka=$version recipe=$(cat "$here/pom.xml" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)"
stamp="$home/.fjord-fetched"
fresh() { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && [ -d "$home/libs" ]; }

if fresh; then
    echo "$home"
    exit 0
fi

mkdir -p "$home"
# One fetch at a time per directory (two test runs starting together).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$home/.lock"
    flock 9
    if fresh; then
        echo "$home"
        exit 0
    fi
fi

command -v mvn >/dev/null 2>&1 || die "mvn not found (Debian: apt-get install maven)"
command -v java >/dev/null 2>&1 || [ -x "${JAVA_HOME:-/nonexistent}/bin/java" ] \
    || die "java not found (Kafka 4.x needs Java 17+; Debian: apt-get install openjdk-17-jre-headless)"

log "resolving org.apache.kafka:kafka_2.13:$version and kafka-tools:$version with Maven into $home/libs"
t0=$(date +%s)
rm -rf "$home/libs.new"
if ! mvn -B -q -Dstyle.color=never -f "$here/pom.xml" -Dkafka.version="$version" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$home/libs.new" \
    >"$home/maven.log" 2>&1; then
    tail -n 40 "$home/maven.log" >&2
    rm -rf "$home/libs.new"
    die "Maven could not resolve Kafka $version (full output: $home/maven.log)"
fi
for jar in "kafka_2.13-$version.jar" "kafka-tools-$version.jar"; do
    [ -f "$home/libs.new/$jar" ] || die "Maven succeeded but $home/libs.new has no $jar"
done
rm -rf "$home/libs"
mv "$home/libs.new" "$home/libs"

# Every class in Kafka's own jars, to pick each tool's main class: some moved between 4.x
# releases (kafka.admin.ConfigCommand became org.apache.kafka.tools.ConfigCommand).
classes="$home/.classes"
: >"$classes"
for jar in "$home"/libs/kafka*.jar; do
    if command -v unzip >/dev/null 2>&1; then
        unzip -Z1 "$jar" '*.class' >>"$classes" 2>/dev/null || true
    else
        "${JAVA_HOME:+$JAVA_HOME/bin/}jar" tf "$jar" | grep '\.class$' >>"$classes" || true
    fi
done
main_class() {
    local c
    for c in "$@"; do
        if grep -qxF "${c//.//}.class" "$classes"; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

rm -rf "${home:?}/bin" "${home:?}/config"
mkdir -p "$home/bin" "$home/config"

cat >"$home/bin/kafka-run-class.sh" <<'EOF'
#!/usr/bin/env bash
# kafka-run-class.sh CLASS [ARGS...] — runs a class of this Kafka (written by Fjord's
# bench/kafka/fetch.sh; the environment variables are those of Kafka's own script).
#   JAVA_HOME                   java to use (default: java on PATH)
#   KAFKA_HEAP_OPTS             default -Xmx256M
#   KAFKA_JVM_PERFORMANCE_OPTS  default Kafka's (G1); tools start faster with
#                               "-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto"
#   KAFKA_LOG4J_OPTS            default config/tools-log4j2.properties (WARN and up, to stderr)
#   KAFKA_OPTS                  anything else (system properties)
#   LOG_DIR                     kafka.logs.dir (default <home>/logs)
set -eu
base_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 1 ]; then
    echo "usage: $0 CLASS [ARGS...]" >&2
    exit 1
fi
if [ -n "${JAVA_HOME:-}" ]; then JAVA="$JAVA_HOME/bin/java"; else JAVA=java; fi
LOG_DIR="${LOG_DIR:-$base_dir/logs}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx256M}"
KAFKA_JVM_PERFORMANCE_OPTS="${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true}"
KAFKA_LOG4J_OPTS="${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=$base_dir/config/tools-log4j2.properties}"
# shellcheck disable=SC2086 # the *_OPTS are lists of JVM options, split on spaces as Kafka's script does
exec "$JAVA" $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS "-Dkafka.logs.dir=$LOG_DIR" $KAFKA_LOG4J_OPTS \
    ${KAFKA_OPTS:-} -cp "$base_dir/libs/*${CLASSPATH:+:$CLASSPATH}" "$@"
EOF

cat >"$home/bin/kafka-server-start.sh" <<'EOF'
#!/usr/bin/env bash
# kafka-server-start.sh [-daemon] server.properties [--override key=value ...] — runs the broker
# (kafka.Kafka) in the foreground, logging to stdout; -daemon runs it in the background with its
# output in $LOG_DIR/kafkaServer.out. Written by Fjord's bench/kafka/fetch.sh.
set -eu
bin_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -lt 1 ]; then
    echo "usage: $0 [-daemon] server.properties [--override property=value]*" >&2
    exit 1
fi
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx1G -Xms1G}"
export KAFKA_LOG4J_OPTS="${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=$bin_dir/../config/log4j2.properties}"
if [ "$1" = "-daemon" ]; then
    shift
    export LOG_DIR="${LOG_DIR:-$bin_dir/../logs}"
    mkdir -p "$LOG_DIR"
    nohup "$bin_dir/kafka-run-class.sh" kafka.Kafka "$@" >"$LOG_DIR/kafkaServer.out" 2>&1 </dev/null &
    exit 0
fi
exec "$bin_dir/kafka-run-class.sh" kafka.Kafka "$@"
EOF

# name, then candidate main classes (first found wins; Kafka's bin/*.sh of that release).
tools=(
    "kafka-topics org.apache.kafka.tools.TopicCommand"
    "kafka-configs org.apache.kafka.tools.ConfigCommand kafka.admin.ConfigCommand"
    "kafka-consumer-groups org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
    "kafka-console-producer org.apache.kafka.tools.ConsoleProducer"
    "kafka-console-consumer org.apache.kafka.tools.consumer.ConsoleConsumer"
    "kafka-producer-perf-test org.apache.kafka.tools.ProducerPerformance"
    "kafka-consumer-perf-test org.apache.kafka.tools.ConsumerPerformance"
    "kafka-leader-election org.apache.kafka.tools.LeaderElectionCommand"
    "kafka-get-offsets org.apache.kafka.tools.GetOffsetShell"
    "kafka-metadata-quorum org.apache.kafka.tools.MetadataQuorumCommand"
    "kafka-delete-records org.apache.kafka.tools.DeleteRecordsCommand"
    "kafka-acls org.apache.kafka.tools.AclCommand kafka.admin.AclCommand"
    "kafka-storage kafka.tools.StorageTool org.apache.kafka.tools.StorageTool"
    "kafka-broker-api-versions org.apache.kafka.tools.BrokerApiVersionsCommand"
    "kafka-reassign-partitions org.apache.kafka.tools.reassign.ReassignPartitionsCommand"
)
# Present in most 4.x releases; written when the class exists, skipped quietly otherwise.
optional_tools=(
    "kafka-log-dirs org.apache.kafka.tools.LogDirsCommand"
    "kafka-features org.apache.kafka.tools.FeatureCommand"
    "kafka-transactions org.apache.kafka.tools.TransactionsCommand"
    "kafka-cluster org.apache.kafka.tools.ClusterTool"
    "kafka-dump-log org.apache.kafka.tools.DumpLogSegments kafka.tools.DumpLogSegments"
    "kafka-e2e-latency org.apache.kafka.tools.EndToEndLatency"
    "kafka-verifiable-producer org.apache.kafka.tools.VerifiableProducer"
    "kafka-verifiable-consumer org.apache.kafka.tools.VerifiableConsumer"
    "kafka-share-groups org.apache.kafka.tools.consumer.group.ShareGroupCommand"
    "kafka-streams-groups org.apache.kafka.tools.streams.StreamsGroupCommand"
    "kafka-client-metrics org.apache.kafka.tools.ClientMetricsCommand"
    "kafka-delegation-tokens org.apache.kafka.tools.DelegationTokenCommand"
)
write_wrapper() {
    local name="$1" class="$2"
    cat >"$home/bin/$name.sh" <<EOF
#!/usr/bin/env bash
# $name.sh — Kafka $version's $class (written by Fjord's bench/kafka/fetch.sh)
exec "\$(dirname "\${BASH_SOURCE[0]}")/kafka-run-class.sh" $class "\$@"
EOF
}
for entry in "${tools[@]}"; do
    read -r -a words <<<"$entry"
    class=$(main_class "${words[@]:1}") \
        || die "Kafka $version has none of ${words[*]:1} (the main class of ${words[0]}.sh)"
    write_wrapper "${words[0]}" "$class"
done
for entry in "${optional_tools[@]}"; do
    read -r -a words <<<"$entry"
    if class=$(main_class "${words[@]:1}"); then
        write_wrapper "${words[0]}" "$class"
    fi
done
main_class kafka.Kafka >/dev/null || die "Kafka $version has no kafka.Kafka (the broker's main class)"
chmod +x "$home"/bin/*.sh

cat >"$home/config/tools-log4j2.properties" <<'EOF'
# Command-line tools: warnings and errors only, to stderr (stdout is the tools' output).
status = error
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
EOF

cat >"$home/config/log4j2.properties" <<'EOF'
# The broker (kafka-server-start.sh): INFO to stdout, as Kafka's own configuration does.
status = error
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.zookeeper.name = org.apache.zookeeper
logger.zookeeper.level = WARN
EOF

cat >"$home/config/server.properties" <<'EOF'
# A single-node KRaft broker and controller on loopback (bench/kafka/start.sh writes its own).
# Format first:  bin/kafka-storage.sh format -t "$(bin/kafka-storage.sh random-uuid)" -c config/server.properties
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093
advertised.listeners=PLAINTEXT://127.0.0.1:9092
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=/tmp/kraft-combined-logs
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF

echo "$version" >"$home/VERSION"
echo "$key" >"$stamp"
jars=("$home"/libs/*.jar)
log "Kafka $version ready in $home (${#jars[@]} jars, $(($(date +%s) - t0)) s)"
echo "$home"
