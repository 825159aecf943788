#!/usr/bin/env bash
# Builds the Java client scenarios (tests/clients/java: org.apache.kafka:kafka-clients 4.x) into
# tests/clients/java/target/fjord-java-clients.jar, which crates/fjord/tests/java_client.rs runs.
# Needs a JDK 17+ and Maven (installed with apt when missing and root). Idempotent: nothing is
# done when the jar is newer than pom.xml and every source file. Quiet unless Maven fails, in
# which case its output is shown and the script exits non-zero.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$repo/tests/clients/java"
jar="$dir/target/fjord-java-clients.jar"

log() { echo "setup-java-clients: $*" >&2; }

if [ -f "$jar" ] && [ -z "$(find "$dir/pom.xml" "$dir/src" -newer "$jar" -print -quit)" ]; then
    log "up to date: $jar"
    exit 0
fi

if ! command -v mvn >/dev/null 2>&1 || ! command -v javac >/dev/null 2>&1; then
    log "installing a JDK and Maven"
    # shellcheck source=lib/apt.sh
    . "$repo/scripts/lib/apt.sh"
    apt_install openjdk-17-jdk-headless maven >/dev/null || {
        log "need a JDK (17+) and Maven on PATH: install openjdk-17-jdk-headless and maven"
        exit 1
    }
fi

log "building $jar with Maven"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
if ! (cd "$dir" && mvn -B -q -ntp -Dstyle.color=never package) >"$out" 2>&1; then
    cat "$out" >&2
    log "Maven build of $dir failed"
    exit 1
fi
if [ ! -f "$jar" ]; then
    cat "$out" >&2
    log "Maven finished but $jar is missing"
    exit 1
fi
log "ok: $jar"
