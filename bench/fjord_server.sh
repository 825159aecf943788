# Sourced by bench scripts: start and stop one `fjord server` on free loopback ports.
#
#   start_fjord DIR [WRAPPER...]  # runs [WRAPPER...] $FJORD server with data in DIR/data;
#                                 # sets SERVER_PID and BOOT (host:port) once it is ready
#   stop_fjord                    # SIGTERM, wait for it to exit (also from an EXIT trap)

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_fjord() {
  local dir=$1
  shift
  local port admin deadline
  port=$(free_port)
  admin=$(free_port)
  rm -rf "$dir/data"
  : > "$dir/server.out"
  FJORD_LOG=warn NO_COLOR=1 "$@" "$FJORD" server --log-dirs "$dir/data" \
    --listeners "PLAINTEXT://127.0.0.1:$port" --admin-listener "127.0.0.1:$admin" \
    >"$dir/server.out" 2>"$dir/server.err" &
  SERVER_PID=$!
  BOOT=127.0.0.1:$port
  # Under valgrind the broker takes many seconds to start.
  deadline=$((SECONDS + 300))
  until grep -q "fjord ready" "$dir/server.out"; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "fjord server did not start; $dir/server.err:" >&2
      tail -20 "$dir/server.err" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}

stop_fjord() {
  if [ -n "${SERVER_PID:-}" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
