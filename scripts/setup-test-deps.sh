#!/usr/bin/env bash
# Installs what the integration tests need: kcat (librdkafka CLI), nft (as root) and a Python
# virtualenv at <repo>/.venv with confluent-kafka, kafka-python and aiokafka.
# Idempotent: every step is skipped when its result is already present.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${FJORD_VENV:-$repo/.venv}"

# Python client versions, pinned so CI runs are reproducible (all ship
# manylinux wheels for CPython 3.11, so no compiler is needed).
CONFLUENT_KAFKA_VERSION="2.6.1"
KAFKA_PYTHON_VERSION="2.3.3"
AIOKAFKA_VERSION="0.12.0"

log() { echo "setup-test-deps: $*" >&2; }

# shellcheck source=lib/apt.sh
. "$repo/scripts/lib/apt.sh"

if ! command -v kcat >/dev/null 2>&1; then
    log "installing kcat"
    apt_install kcat
fi

# nft (nftables) for the network faults of the nemesis harness (crates/fjord-nemesis), which
# needs root for network namespaces anyway; without it the harness skips those faults.
if [ "$(id -u)" -eq 0 ] && ! command -v nft >/dev/null 2>&1; then
    log "installing nftables"
    apt_install nftables || log "nftables not installed: the nemesis harness will skip network faults"
fi

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    log "installing python3"
    apt_install python3 python3-venv
fi

if [ ! -x "$venv/bin/python" ]; then
    if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        log "installing python3-venv"
        apt_install python3-venv
    fi
    log "creating virtualenv $venv"
    "$python" -m venv "$venv"
fi

stamp="$venv/.fjord-deps-$CONFLUENT_KAFKA_VERSION-$KAFKA_PYTHON_VERSION-$AIOKAFKA_VERSION"
if [ ! -f "$stamp" ]; then
    log "installing python Kafka clients"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "confluent-kafka==$CONFLUENT_KAFKA_VERSION" \
        "kafka-python==$KAFKA_PYTHON_VERSION" \
        "aiokafka==$AIOKAFKA_VERSION"
    touch "$stamp"
fi

"$venv/bin/python" -c 'import confluent_kafka, kafka, aiokafka' \
    || { log "python clients failed to import"; exit 1; }
"$repo/scripts/setup-java-clients.sh"   # Java client scenarios, kafka-clients 4.x (crates/fjord/tests/java_client.rs)
"$repo/scripts/setup-go-clients.sh"   # Go clients franz-go and sarama (crates/fjord/tests/go_clients.rs)
"$repo/scripts/setup-kafka.sh"   # Apache Kafka's command-line tools (crates/fjord/tests/kafka_tools.rs)
"$repo/scripts/setup-librdkafka-tests.sh"   # librdkafka's own test suite (crates/fjord/tests/librdkafka_suite.rs)
log "ok: $(command -v kcat), venv $venv"
