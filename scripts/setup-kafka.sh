#!/usr/bin/env bash
# Installs what crates/fjord/tests/kafka_tools.rs needs: Apache Kafka's command-line tools (and
# broker) from Maven Central, laid out by bench/kafka/fetch.sh in
# ${FJORD_KAFKA_HOME:-~/.cache/fjord/kafka-VERSION}, VERSION from $FJORD_KAFKA_VERSION or
# bench/kafka/VERSION (the one the tests look for). Needs java (17+) and mvn; installs them with
# apt when missing (as root or with sudo). Fast when cached (a stamp file); fails loudly when
# Maven cannot resolve Kafka.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="${FJORD_KAFKA_VERSION:-$(tr -d '[:space:]' <"$repo/bench/kafka/VERSION")}"

log() { echo "setup-kafka: $*" >&2; }

# shellcheck source=lib/apt.sh
. "$repo/scripts/lib/apt.sh"

missing=()
command -v java >/dev/null 2>&1 || [ -x "${JAVA_HOME:-/nonexistent}/bin/java" ] \
    || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    apt_install "${missing[@]}" || exit 1
fi

if ! home="$("$repo/bench/kafka/fetch.sh" "$version")"; then
    log "FAILED: could not fetch Apache Kafka $version from Maven Central (see above)"
    exit 1
fi
for tool in kafka-topics kafka-configs kafka-consumer-groups kafka-console-producer \
    kafka-console-consumer kafka-storage kafka-server-start; do
    [ -x "$home/bin/$tool.sh" ] || { log "FAILED: $home/bin/$tool.sh missing"; exit 1; }
done
log "ok: Apache Kafka $version in $home"
