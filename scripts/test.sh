#!/usr/bin/env bash
# The single test command: installs test dependencies (kcat, Python clients in .venv), then
# runs every workspace test, including the integration tests that drive a real `fjord`
# process with real Kafka clients. Extra arguments go to nextest / cargo test.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

"$repo/scripts/setup-test-deps.sh"
export FJORD_PYTHON="${FJORD_PYTHON:-$repo/.venv/bin/python}"

status=0
if cargo nextest --version >/dev/null 2>&1; then
    # Integration tests each run a broker plus clients; two at a time suits a 2-core box.
    cargo nextest run --workspace --no-fail-fast \
        --test-threads "${FJORD_TEST_THREADS:-2}" "$@" || status=$?
else
    cargo test --workspace --no-fail-fast "$@" -- --test-threads "${FJORD_TEST_THREADS:-2}" || status=$?
fi

# The control plane's criterion benchmark as a smoke run (a few seconds): every operation once
# at 30,000 replicas, failing if one allocates past its budget (issue 22's regression guard).
cargo test -p fjord-metadata --bench control_plane -- --test || status=$?
exit "$status"
