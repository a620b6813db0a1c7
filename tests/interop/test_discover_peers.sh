#!/usr/bin/env bash
# test_discover_peers.sh -- `rrpc describe` (C) against the C, Ruby,
# Python and Node calc servers: each answers rpc.discover with an OpenRPC document
# of its methods (PROTOCOL.md section 11), and the C one with JSON Schemas
# it enforces before its handlers run.
#
# Usage (under tests/harness/with-redis.sh): test_discover_peers.sh BUILD_DIR
set -u
: "${REDIS_URL:?run me under tests/harness/with-redis.sh}"
BUILD=$(cd "${1:?usage: test_discover_peers.sh BUILD_DIR}" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
PY=${RRPC_PYTHON:-$("$root/scripts/find-python.sh")}
logs=$(mktemp -d "${TMPDIR:-/tmp}/rrpc-discover.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$logs"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; cat "$logs"/*.log >&2; exit 1; }

start() { # start NAME COMMAND...
  local name=$1; shift
  "$@" >"$logs/$name.log" 2>&1 &
  pids+=($!)
}

start c "$BUILD/calc-server" --service disc_c --workers 1
start rb ruby "$root/clients/ruby/calc_server.rb" --service disc_rb
start py "$PY" "$root/clients/python/calc_server.py" --service disc_py
start js node "$root/clients/node/calc_server.js" --service disc_js
for service in disc_c disc_rb disc_py disc_js; do
  for _ in $(seq 100); do
    "$BUILD/rrpc" call --timeout 0.2 "$service" add '[0, 0]' >/dev/null 2>&1 && continue 2
    sleep 0.1
  done
  fail "service $service never answered"
done

# The document of every peer: OpenRPC, the calc methods with their
# parameter names, rpc.discover itself implied.
for service in disc_c disc_rb disc_py disc_js; do
  "$BUILD/rrpc" describe --json "$service" >"$logs/$service.json" || fail "describe --json $service"
  "$PY" - "$service" "$logs/$service.json" <<'PYEOF' || fail "the document of $service"
import json, sys
service, path = sys.argv[1], sys.argv[2]
doc = json.load(open(path))
assert doc['openrpc'].startswith('1.') and doc['info']['title'] == service, doc
m = {x['name']: x for x in doc['methods']}
assert {'add', 'subtract', 'multiply', 'divide', 'echo', 'sleep', 'count', 'rpc.ping'} <= set(m), m
assert 'rpc.discover' not in m
assert [p['name'] for p in m['add']['params']] == ['a', 'b'], m['add']
assert [p['name'] for p in m['sleep']['params']] == ['ms'], m['sleep']
assert [p['name'] for p in m['count']['params']] == ['n', 'ms'], m['count']
if service == 'disc_js':
    assert doc['info']['version'].startswith('node-'), doc['info']
    assert m['add']['params'][0]['schema'] == {'type': 'number'}, m['add']
assert m['add']['description'].startswith('add(a, b)'), m['add']
if service == 'disc_c':  # schemas and errors the C server registered
    assert m['add']['params'][0]['schema']['type'] == 'number'
    assert m['add']['params'][0]['required'] is True
    assert m['sleep']['params'][0]['schema'] == {
        'type': 'integer', 'minimum': 0, 'maximum': 60000, 'description': 'milliseconds'}
    assert {'code': 1, 'message': 'division by zero'} in m['divide']['errors']
PYEOF
  # The readable form names every method with its parameters.
  out=$("$BUILD/rrpc" describe "$service") || fail "describe $service"
  echo "$out" | grep -q "^service $service: " || fail "describe $service header: $out"
  echo "$out" | grep -q '^add(a?\{0,1\}: .*, b?\{0,1\}: .*) -> ' || fail "describe $service add: $out"
done

# The C server's schema is enforced before the handler: -32602 naming the path.
out=$("$BUILD/rrpc" call disc_c sleep '{"ms": 70000}' 2>&1)
[ $? = 1 ] && echo "$out" | grep -q 'params.ms: above the maximum 60000' ||
  fail "schema check: $out"
# A worker that does not know rpc.discover: method not found, exit 1.
"$BUILD/rrpc" describe --timeout 0.5 nobody_serves_this >/dev/null 2>&1
[ $? = 3 ] || fail "describe of a service nobody serves should time out (3)"
echo "ok: rrpc describe against the C, Ruby, Python and Node calc servers"
