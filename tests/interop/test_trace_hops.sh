#!/usr/bin/env bash
# test_trace_hops.sh -- W3C Trace Context survives C -> Ruby -> Python ->
# Node -> C.
#
# Starts the C calc-server, the Ruby, Python and Node calc_server under
# services of their own and runs check_trace.py against them: one call
# forwarded across the four languages keeps its trace id, each hop with a
# parent id of its own (PROTOCOL.md section 7).
#
# Usage (under tests/harness/with-redis.sh): test_trace_hops.sh BUILD_DIR
set -u
: "${REDIS_URL:?run me under tests/harness/with-redis.sh}"
BUILD=$(cd "${1:?usage: test_trace_hops.sh BUILD_DIR}" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
PY=${RRPC_PYTHON:-$("$root/scripts/find-python.sh")}
# The Node peer's dependencies: ctest's node_deps fixture ($NODE_PATH), else
# clients/node/node_modules.
[ -n "${NODE_PATH:-}" ] && [ -f "${NODE_PATH%%:*}/redis/package.json" ] ||
  "$root/scripts/node-deps.sh" >/dev/null || exit 1
logs=$(mktemp -d "${TMPDIR:-/tmp}/rrpc-trace.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$logs"; }
trap cleanup EXIT

start() { # start NAME COMMAND...
  local name=$1; shift
  "$@" >"$logs/$name.log" 2>&1 &
  pids+=($!)
}

# The C service gets the outer forward and the inner add at once: two
# workers at least.
start c "$BUILD/calc-server" --service trace_c --workers 2
start rb ruby "$root/clients/ruby/calc_server.rb" --service trace_rb
start py "$PY" "$root/clients/python/calc_server.py" --service trace_py
start js node "$root/clients/node/calc_server.js" --service trace_js
for service in trace_c trace_rb trace_py trace_js; do
  for _ in $(seq 100); do
    "$BUILD/rrpc" call --timeout 0.2 "$service" add '[0, 0]' >/dev/null 2>&1 && continue 2
    sleep 0.1
  done
  echo "service $service never answered" >&2; cat "$logs"/*.log >&2; exit 1
done
if ! "$PY" "$root/tests/interop/check_trace.py" "$BUILD/rrpc" trace_c trace_rb trace_py trace_js; then
  cat "$logs"/*.log >&2
  exit 1
fi
