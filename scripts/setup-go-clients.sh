#!/usr/bin/env bash
# Builds the Go client test program (franz-go + kadm, IBM/sarama) that
# crates/fjord/tests/go_clients.rs drives: tests/clients/go -> tests/clients/go/bin/fjord-go-clients.
# Module versions are pinned in tests/clients/go/go.mod and go.sum; the Go module and build caches
# live under $HOME as usual. Idempotent: skipped when the binary was built from the current
# sources (a hash of go.mod, go.sum and *.go kept next to it). Fails loudly otherwise.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mod="$repo/tests/clients/go"
bin="$mod/bin/fjord-go-clients"
stamp="$mod/bin/.sources.sha256"

log() { echo "setup-go-clients: $*" >&2; }

sources_hash() {
    (cd "$mod" && cat go.mod go.sum $(ls *.go | LC_ALL=C sort)) | sha256sum | cut -d' ' -f1
}

want="$(sources_hash)"
if [ -x "$bin" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    # Same sources, maybe newer files (a checkout): the test compares modification times.
    touch "$bin"
    log "ok: $bin is current"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    if [ -x /usr/local/go/bin/go ]; then
        export PATH="/usr/local/go/bin:$PATH"
    else
        log "FAILED: the go command is not installed (Go >= 1.26 is needed for tests/clients/go)"
        exit 1
    fi
fi

log "building $bin with $(go version)"
t0=$(date +%s)
mkdir -p "$mod/bin"
# -mod=readonly: go.mod and go.sum are the pinned versions; a build never changes them.
if ! (cd "$mod" && go build -mod=readonly -o "$bin.tmp" .); then
    rm -f "$bin.tmp"
    log "FAILED: go build in $mod"
    exit 1
fi
mv "$bin.tmp" "$bin"
echo "$want" > "$stamp"
log "ok: built $bin in $(( $(date +%s) - t0 ))s"
