#!/usr/bin/env bash
# Builds the reference points for bench/compare.sh under target/bench-work:
#   - librdkafka (from the rdkafka-sys crate on crates.io, fetched by cargo),
#     its load tool examples/rdkafka_performance, and bench/mock_broker.c;
# Nothing is downloaded except through cargo (crates.io) and apt (Debian).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${FJORD_BENCH_WORK:-$ROOT/target/bench-work}
mkdir -p "$WORK"

log() { printf '[build-reference] %s\n' "$*" >&2; }

# Debian packages librdkafka's build needs.
need=()
for pkg in build-essential pkg-config zlib1g-dev libssl-dev libzstd-dev liblz4-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  log "installing ${need[*]}"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# 1. librdkafka source: rdkafka-sys's bundled copy, pinned in tests/clients/librdkafka (also
#    what scripts/setup-librdkafka-tests.sh builds librdkafka's test suite from); cargo fetches it.
PKG=$(cargo metadata --manifest-path "$ROOT/tests/clients/librdkafka/Cargo.toml" --format-version 1 --locked 2>/dev/null |
  python3 -c 'import json,sys; m=json.load(sys.stdin); print([p["manifest_path"] for p in m["packages"] if p["name"]=="rdkafka-sys"][0])')
UPSTREAM=$(dirname "$PKG")/librdkafka
[ -f "$UPSTREAM/configure" ] || { log "librdkafka source not found at $UPSTREAM"; exit 1; }

# 2. Build a private copy (the registry copy stays pristine).
BUILD=$WORK/librdkafka
if [ ! -f "$BUILD/.fjord-built" ]; then
  log "building librdkafka from $UPSTREAM (a few minutes on 2 cores)"
  rm -rf "$BUILD" && cp -r "$UPSTREAM" "$BUILD"
  (cd "$BUILD" && ./configure --disable-curl --disable-gssapi --disable-debug-symbols >"$WORK/configure.log" 2>&1 &&
    make -j"$(nproc)" -C src lib >"$WORK/make.log" 2>&1) || { log "build failed, see $WORK/configure.log / make.log"; exit 1; }
  touch "$BUILD/.fjord-built"
fi

# 3. rdkafka_performance and our mock broker, statically linked against librdkafka.a.
LIBS=$(sed -n 's/^LIBS+*=//p' "$BUILD/Makefile.config" | tr '\n' ' ')
if [ ! -x "$WORK/rdkafka_performance" ] || [ "$BUILD/src/librdkafka.a" -nt "$WORK/rdkafka_performance" ]; then
  log "building rdkafka_performance"
  cc -O2 -I"$BUILD/src" "$BUILD/examples/rdkafka_performance.c" -o "$WORK/rdkafka_performance" \
    "$BUILD/src/librdkafka.a" $LIBS -lpthread -lm
fi
if [ ! -x "$WORK/mock_broker" ] || [ "$ROOT/bench/mock_broker.c" -nt "$WORK/mock_broker" ]; then
  log "building mock_broker"
  cc -O2 -I"$BUILD/src" "$ROOT/bench/mock_broker.c" -o "$WORK/mock_broker" \
    "$BUILD/src/librdkafka.a" $LIBS -lpthread -lm
fi
log "ready: $WORK/rdkafka_performance $WORK/mock_broker"
