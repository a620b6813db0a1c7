#!/usr/bin/env bash
# test_interop.sh -- C against Ruby and Python, in both directions.
#
# The protocol is only worth something if peers written against it alone
# work together, so this starts the C calc-server next to the Ruby, Python
# and seed-style workers and drives every one of them with every caller:
# the rrpc CLI and calc-client (C), calc_client.rb (Ruby), calc_client.py
# (Python) and the post's own style of client.  Then it runs the wire-level
# checks (clients/check_protocol.py) and the conformance vectors
# (tests/vectors) against the C server too.
#
# Usage (under tests/harness/with-redis.sh): test_interop.sh BUILD_DIR
set -u
: "${REDIS_URL:?run me under tests/harness/with-redis.sh}"
BUILD=$(cd "${1:?usage: test_interop.sh BUILD_DIR}" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
PY=/usr/bin/python3
logs=$(mktemp -d "${TMPDIR:-/tmp}/rrpc-interop.XXXXXX")
pids=()
failed=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$logs"; }
trap cleanup EXIT

start() { # start NAME COMMAND...
  local name=$1; shift
  "$@" >"$logs/$name.log" 2>&1 &
  pids+=($!)
}

# wait_for SERVICE: until the service answers echo (seed workers: add).
wait_for() {
  for _ in $(seq 100); do
    "$BUILD/rrpc" call --timeout 0.2 "$1" add '[0, 0]' >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "service $1 never answered" >&2; cat "$logs"/*.log >&2; return 1
}

check() { # check NAME COMMAND...: records a failure with the command's output
  local name=$1; shift
  if out=$("$@" 2>&1); then
    echo "ok   $name"
  else
    echo "FAIL $name"; echo "$out" | sed 's/^/     /' | tail -20
    failed+=("$name")
  fi
}

expect_output() { # expect_output NAME EXPECTED COMMAND...
  local name=$1 want=$2; shift 2
  local got
  got=$("$@" 2>&1)
  if [ "$got" = "$want" ]; then echo "ok   $name"; else
    echo "FAIL $name: expected '$want', got '$got'"; failed+=("$name"); fi
}

start c-server "$BUILD/calc-server" --service calc_c --workers 2
start py-server "$PY" "$root/clients/python/calc_server.py" --service calc_py
start rb-server ruby "$root/clients/ruby/calc_server.rb" --service calc_rb
start py-seed "$PY" "$root/clients/python/seed_server.py" --service seed_py
for s in calc_c calc_py calc_rb seed_py; do wait_for "$s" || exit 1; done

for s in calc_c calc_py calc_rb; do
  check "C calc-client -> $s" "$BUILD/calc-client" --service "$s"
  check "Ruby calc_client -> $s" ruby "$root/clients/ruby/calc_client.rb" --service "$s"
  check "Python calc_client -> $s" "$PY" "$root/clients/python/calc_client.py" --service "$s"
  check "seed-style Ruby client -> $s" ruby "$root/clients/ruby/seed_client.rb" --service "$s"
  expect_output "rrpc call -> $s add" 3 "$BUILD/rrpc" call "$s" add '[1, 2]'
  expect_output "rrpc call -> $s echo unicode" '["héllo ✓ 🚀"]' \
    "$BUILD/rrpc" call "$s" echo '["héllo ✓ 🚀"]'
  expect_output "rrpc call -> $s divide by zero (exit 1)" "error 1: division by zero
1" bash -c "'$BUILD/rrpc' call '$s' divide '[1, 0]'; echo \$?"
done

# The post's Python worker knows nothing of rrpc: it replies to the id.
expect_output "rrpc call -> seed-style Python server" 7 "$BUILD/rrpc" call seed_py add '[3, 4]'
check "C calc-client -> seed-style Python server (add/subtract/multiply/divide)" \
  bash -c "'$BUILD/rrpc' call seed_py multiply '[6, 7]' | grep -qx 42"

# The same wire-level checks the Ruby and Python workers pass.
check "check_protocol.py against the C server" "$PY" "$root/clients/check_protocol.py" --service calc_c
check "conformance vectors against the C server" \
  "$PY" "$root/tests/vectors/run_vectors.py" --service calc_c --settle 0.2
check "conformance vectors against the Python server" \
  "$PY" "$root/tests/vectors/run_vectors.py" --service calc_py
check "conformance vectors against the Ruby server" \
  "$PY" "$root/tests/vectors/run_vectors.py" --service calc_rb

if [ ${#failed[@]} -ne 0 ]; then
  echo "${#failed[@]} interop check(s) failed: ${failed[*]}" >&2
  exit 1
fi
echo "all interop checks passed"
