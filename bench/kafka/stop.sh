#!/usr/bin/env bash
# Stops the Kafka nodes bench/kafka/start.sh started (by the PIDs it wrote), all at once so every
# broker's controlled shutdown still finds a controller quorum.
#
#   bench/kafka/stop.sh [--base-dir DIR] [--timeout SECONDS] [--clean]
#
# SIGTERM, then SIGKILL for a node still running after --timeout (default 60). --clean also
# removes the base dir (data, logs, cluster id), so the next start formats a new cluster.
set -euo pipefail

base="${TMPDIR:-/tmp}/fjord-kafka"
timeout=60
clean=0

log() { echo "stop.sh: $*" >&2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --base-dir) base="$2"; shift 2 ;;
        --timeout) timeout="$2"; shift 2 ;;
        --clean) clean=1; shift ;;
        -h | --help) sed -n '5p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2; exit 2 ;;
        *) log "unknown argument '$1'"; exit 2 ;;
    esac
done

pids_file="$base/pids"
# A PID is ours only if it is still a Kafka broker run from this base dir (PIDs get reused).
ours() {
    local cmdline
    cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
    [[ "$cmdline" == *kafka.Kafka* && "$cmdline" == *"$base/"* ]]
}

running=()
if [ -s "$pids_file" ]; then
    while read -r node pid; do
        if ours "$pid"; then
            running+=("$node:$pid")
            kill -TERM "$pid"
        fi
    done <"$pids_file"
fi

deadline=$(($(date +%s) + timeout))
for np in "${running[@]+"${running[@]}"}"; do
    pid="${np##*:}"
    while ours "$pid" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
    if ours "$pid"; then
        log "node ${np%%:*} (pid $pid) still running ${timeout}s after SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
done
rm -f "$pids_file"
log "stopped ${#running[@]} node(s) of $base"

if [ "$clean" -eq 1 ] && [ -d "$base" ]; then
    rm -rf "$base"
    log "removed $base"
fi
