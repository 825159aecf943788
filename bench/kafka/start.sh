#!/usr/bin/env bash
# Apache Kafka in KRaft mode on loopback, as a reference to compare Fjord with.
#
#   bench/kafka/start.sh [--nodes N] [--racks a,b,c] [--port 9092] [--controller-port 9093]
#                        [--base-dir DIR] [--version V] [--heap OPTS] [--set KEY=VALUE]...
#                        [--timeout SECONDS]
#
# Node i (1..N) is a combined broker and controller listening on 127.0.0.i (Linux routes all of
# 127.0.0.0/8 to loopback): PLAINTEXT on --port, CONTROLLER on --controller-port, data in
# <base-dir>/node<i>/data, output in <base-dir>/node<i>/server.log. Storage is formatted once
# with a random cluster id; starting again on the same base dir keeps the data. The JVMs run in
# the background (PIDs in <base-dir>/pids); once every broker answers ApiVersions this prints one
# line on stdout:
#
#   kafka ready bootstrap=127.0.0.1:9092 version=4.4.0 nodes=1 base-dir=/tmp/fjord-kafka
#
# bench/kafka/stop.sh [--base-dir DIR] [--clean] stops them. The Kafka jars come from
# bench/kafka/fetch.sh (run here; fast when cached). See bench/kafka/README.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
nodes=1
racks=""
port=9092
controller_port=9093
base="${TMPDIR:-/tmp}/fjord-kafka"
version="${FJORD_KAFKA_VERSION:-$(tr -d '[:space:]' <"$here/VERSION")}"
heap="-Xmx512m -Xms256m"
timeout=120
sets=()

log() { echo "start.sh: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}
usage() {
    sed -n '4,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,3\}//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) nodes="$2"; shift 2 ;;
        --racks) racks="$2"; shift 2 ;;
        --port) port="$2"; shift 2 ;;
        --controller-port) controller_port="$2"; shift 2 ;;
        --base-dir) base="$2"; shift 2 ;;
        --version) version="$2"; shift 2 ;;
        --heap) heap="$2"; shift 2 ;;
        --set) sets+=("$2"); shift 2 ;;
        --timeout) timeout="$2"; shift 2 ;;
        -h | --help) usage ;;
        *) log "unknown argument '$1'"; usage ;;
    esac
done

[[ "$nodes" =~ ^[1-9][0-9]?$ ]] || die "--nodes must be 1..99"
IFS=, read -r -a rack_list <<<"$racks"
if [ -n "$racks" ] && [ "${#rack_list[@]}" -ne "$nodes" ]; then
    die "--racks lists ${#rack_list[@]} racks for $nodes nodes"
fi
for kv in "${sets[@]+"${sets[@]}"}"; do
    [[ "$kv" == *=* ]] || die "--set wants KEY=VALUE, got '$kv'"
done

home="$("$here/fetch.sh" "$version")"
mkdir -p "$base"
base="$(cd "$base" && pwd)"
pids_file="$base/pids"

# Refuse to start twice on one base dir.
if [ -s "$pids_file" ]; then
    while read -r _ pid; do
        if kill -0 "$pid" 2>/dev/null; then
            die "Kafka already running from $base (pid $pid): bench/kafka/stop.sh --base-dir $base"
        fi
    done <"$pids_file"
fi

# The layout is fixed by the first format (voters, node ids); a different one needs a clean dir.
layout="version=$version nodes=$nodes racks=$racks port=$port controller_port=$controller_port"
if [ -f "$base/layout" ] && [ "$(cat "$base/layout")" != "$layout" ]; then
    die "$base holds a cluster started as '$(cat "$base/layout")'; to start '$layout' run bench/kafka/stop.sh --base-dir $base --clean first (or pick another --base-dir)"
fi

ip() { echo "127.0.0.$1"; }
voters=""
bootstrap=""
for i in $(seq 1 "$nodes"); do
    voters+="${voters:+,}$i@$(ip "$i"):$controller_port"
    bootstrap+="${bootstrap:+,}$(ip "$i"):$port"
done
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }

for i in $(seq 1 "$nodes"); do
    dir="$base/node$i"
    mkdir -p "$dir/data"
    {
        echo "# written by bench/kafka/start.sh"
        echo "process.roles=broker,controller"
        echo "node.id=$i"
        echo "controller.quorum.voters=$voters"
        echo "listeners=PLAINTEXT://$(ip "$i"):$port,CONTROLLER://$(ip "$i"):$controller_port"
        echo "advertised.listeners=PLAINTEXT://$(ip "$i"):$port"
        echo "controller.listener.names=CONTROLLER"
        echo "inter.broker.listener.name=PLAINTEXT"
        echo "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        echo "log.dirs=$dir/data"
        if [ -n "$racks" ]; then echo "broker.rack=${rack_list[$((i - 1))]}"; fi
        echo "offsets.topic.replication.factor=$(min "$nodes" 3)"
        echo "transaction.state.log.replication.factor=$(min "$nodes" 3)"
        echo "transaction.state.log.min.isr=$(min "$nodes" 2)"
        echo "share.coordinator.state.topic.replication.factor=$(min "$nodes" 3)"
        echo "share.coordinator.state.topic.min.isr=$(min "$nodes" 2)"
        for kv in "${sets[@]+"${sets[@]}"}"; do echo "$kv"; done
    } >"$dir/server.properties"
done

# A Kafka Uuid: 16 random bytes in URL-safe base64 without padding, not starting with '-'.
random_uuid() {
    local id
    while :; do
        id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
        [ "${id:0:1}" != "-" ] && echo "$id" && return
    done
}

if [ ! -f "$base/cluster-id" ]; then
    random_uuid >"$base/cluster-id"
fi
cluster_id="$(cat "$base/cluster-id")"
export KAFKA_HEAP_OPTS="$heap"

format_pids=()
for i in $(seq 1 "$nodes"); do
    dir="$base/node$i"
    if [ ! -f "$dir/data/meta.properties" ]; then
        "$home/bin/kafka-storage.sh" format -t "$cluster_id" -c "$dir/server.properties" \
            >"$dir/format.log" 2>&1 &
        format_pids+=("$!:$i")
    fi
done
for fp in "${format_pids[@]+"${format_pids[@]}"}"; do
    if ! wait "${fp%%:*}"; then
        cat "$base/node${fp##*:}/format.log" >&2
        die "kafka-storage format failed for node ${fp##*:}"
    fi
done
echo "$layout" >"$base/layout"

: >"$pids_file"
started=()
cleanup_on_failure() {
    for pid in "${started[@]+"${started[@]}"}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
trap 'cleanup_on_failure' INT TERM

for i in $(seq 1 "$nodes"); do
    dir="$base/node$i"
    nohup "$home/bin/kafka-server-start.sh" "$dir/server.properties" \
        >"$dir/server.log" 2>&1 </dev/null &
    pid=$!
    started+=("$pid")
    echo "$i $pid" >>"$pids_file"
done

# ApiVersions v0 (api key 18, correlation id 1, null client id) over bash's /dev/tcp; the answer
# carries correlation id 1 and error code 0 once the broker serves requests.
api_versions_ok() {
    local out
    # shellcheck disable=SC2016 # $0 and $1 are the inner shell's arguments
    out=$(timeout 3 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "\x00\x00\x00\x0a\x00\x12\x00\x00\x00\x00\x00\x01\xff\xff" >&3
        head -c 10 <&3 | od -An -tx1 | tr -d " \n"' "$1" "$2" 2>/dev/null) || return 1
    [ "${out:8:12}" = "000000010000" ]
}

deadline=$(($(date +%s) + timeout))
for i in $(seq 1 "$nodes"); do
    pid="${started[$((i - 1))]}"
    until api_versions_ok "$(ip "$i")" "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$base/node$i/server.log" >&2
            cleanup_on_failure
            die "node $i (pid $pid) exited before it served requests; log: $base/node$i/server.log"
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            tail -n 30 "$base/node$i/server.log" >&2
            cleanup_on_failure
            die "node $i did not answer ApiVersions on $(ip "$i"):$port within ${timeout}s"
        fi
        sleep 0.5
    done
done
trap - INT TERM

echo "kafka ready bootstrap=$bootstrap version=$version nodes=$nodes base-dir=$base"
