#!/usr/bin/env bash
# test_interop.sh -- C against Ruby, Python and Node, in both directions.
#
# The protocol is only worth something if peers written against it alone
# work together, so this starts the C calc-server next to the Ruby, Python,
# Node and seed-style workers and drives every one of them with every
# caller: the rrpc CLI and calc-client (C), calc_client.rb (Ruby),
# calc_client.py (Python), calc_client.js (Node) and the post's own style of
# client.  Then it runs the wire-level checks (clients/check_protocol.py)
# and the conformance vectors (tests/vectors) against every server.  Last,
# what PROTOCOL.md adds to JSON-RPC, held the same for all four servers: the
# registry as the rrpc CLI shows it (ls, info, ping, stats, top), deadlines
# and the own-key rule (check_worker.py), and fail fast once a service's
# last worker stops, for the C, Ruby, Python and Node callers
# (check_caller.py), including callers that are already waiting when the
# last worker dies.
#
# Usage (under tests/harness/with-redis.sh): test_interop.sh BUILD_DIR
# Prints ok/FAIL per check and the closing "N passed, N failed" line.
set -u
: "${REDIS_URL:?run me under tests/harness/with-redis.sh}"
BUILD=$(cd "${1:?usage: test_interop.sh BUILD_DIR}" && pwd)
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
root=$rrpc_root
node_ready || die "the Node peer's dependencies are missing (scripts/node-deps.sh)"

declare -A pid_of
start() { # start NAME COMMAND...: logs in $test_dir/NAME.log, killed on exit
  local name=$1
  shift
  spawn "$name" "$@"
  pid_of[$name]=$spawned
}

# wait_for SERVICE: until the service answers add (seed workers too).
wait_for() {
  wait_until 10 "$BUILD/rrpc" call --timeout 0.2 "$1" add '[0, 0]' || die "service $1 never answered"
}

check() { # check NAME COMMAND...: records a failure with the command's output
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    ok "$name"
  else
    fail "$name"
    echo "$out" | sed 's/^/     /' | tail -20
  fi
}

expect_output() { # expect_output NAME EXPECTED COMMAND...
  local name=$1 want=$2 got
  shift 2
  got=$("$@" 2>&1)
  if [ "$got" = "$want" ]; then ok "$name"; else fail "$name: expected '$want', got '$got'"; fi
}

start c-server "$BUILD/calc-server" --service calc_c --workers 2
start py-server "$PY" "$root/clients/python/calc_server.py" --service calc_py
start rb-server ruby "$root/clients/ruby/calc_server.rb" --service calc_rb
start js-server node "$root/clients/node/calc_server.js" --service calc_js
start py-seed "$PY" "$root/clients/python/seed_server.py" --service seed_py
# One worker, one request at a time, a short heartbeat: killed while busy
# near the end, its record expires within a second.
start c-gone "$BUILD/calc-server" --service calc_gone --workers 1 --batch-max 1 \
  --heartbeat-interval 0.2 --heartbeat-ttl 1
for s in calc_c calc_py calc_rb calc_js seed_py calc_gone; do wait_for "$s"; done

for s in calc_c calc_py calc_rb calc_js; do
  check "C calc-client -> $s" "$BUILD/calc-client" --service "$s"
  check "Ruby calc_client -> $s" ruby "$root/clients/ruby/calc_client.rb" --service "$s"
  check "Python calc_client -> $s" "$PY" "$root/clients/python/calc_client.py" --service "$s"
  check "Node calc_client -> $s" node "$root/clients/node/calc_client.js" --service "$s"
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
check "conformance vectors against the Node server" \
  "$PY" "$root/tests/vectors/run_vectors.py" --service calc_js
check "check_protocol.py against the Node server" "$PY" "$root/clients/check_protocol.py" --service calc_js

# ---- Registry, rpc.ping, stats, deadlines, own keys (PROTOCOL.md 6, 7, 9)

json_check() { # json_check NAME PYTHON-ASSERTIONS COMMAND...: `doc` is the command's JSON output
  local name=$1 code=$2; shift 2
  check "$name" bash -c 'out=$("${@:2}") || exit 1; printf "%s" "$out" | "$0" -c "
import json, sys
doc = json.load(sys.stdin)
$1" || { echo "$out"; exit 1; }' "$PY" "$code" "$@"
}
declare -A version=([calc_c]="$("$BUILD/rrpc" --version | awk '{print $NF}')" \
                    [calc_py]=python-$(cat "$root/VERSION") [calc_rb]=ruby-$(cat "$root/VERSION")
                    [calc_js]=node-$(cat "$root/VERSION"))
for s in calc_py calc_rb calc_js calc_c; do
  json_check "rrpc ls lists $s with one live worker" "
s = [x for x in doc if x['service'] == '$s']
assert s and s[0]['workers'] == 1 and s[0]['threads'] >= 1, doc" "$BUILD/rrpc" ls --json
  json_check "rrpc info $s: the worker's record and methods" "
w = doc['workers']
assert doc['registered'] and len(w) == 1, doc
assert w[0]['version'] == '${version[$s]}' and w[0]['service'] == '$s' and w[0]['pid'] > 0, w
assert w[0]['id'].startswith(w[0]['host'] + ':' + str(w[0]['pid']) + ':'), w
assert 0 < w[0]['expires_in'] <= w[0]['ttl_s'] and w[0]['heartbeat_s'] > 0, w
m = {x['name']: x for x in doc['methods']}
assert {'add', 'subtract', 'multiply', 'divide', 'echo', 'sleep', 'rpc.ping'} <= set(m), m
assert m['add']['description'].startswith('add(a, b)') and m['add']['params'], m['add']
assert m['rpc.ping']['description'].startswith('built-in'), m" "$BUILD/rrpc" info "$s" --json
  json_check "rrpc ping $s reaches its worker" "
p = doc['pings']
assert len(p) == 2 and all(not x['method_not_found'] and x['worker'] for x in p), doc" \
    "$BUILD/rrpc" ping --json --count 2 "$s"
  check "$s refuses an expired request, runs a live one" "$PY" "$root/tests/interop/check_worker.py" deadline "$s"
  check "$s refuses its own keys as reply keys" "$PY" "$root/tests/interop/check_worker.py" ownkey "$s"
done

# Per-method stats: three calls of subtract (one an error) to each server
# reach {L}:mstats with its next heartbeat (about a second; the waits overlap).
stats_of() { "$PY" -c "import json, sys
m = json.load(sys.stdin)['methods'].get('subtract', {})
print(m.get('calls', 0), m.get('errors', 0))" < <("$BUILD/rrpc" stats --json "$1"); }
declare -A stats_before
for s in calc_py calc_rb calc_js calc_c; do
  stats_before[$s]=$(stats_of "$s")
  "$BUILD/rrpc" call "$s" subtract '[5, 3]' >/dev/null
  "$BUILD/rrpc" call "$s" subtract '[5, 3]' >/dev/null
  "$BUILD/rrpc" call "$s" subtract '[5, "x"]' >/dev/null 2>&1  # invalid params: an error
done
stats_count() { # stats_count SERVICE "CALLS ERRORS" (before)
  local s=$1 after calls errors c0 e0
  read -r c0 e0 <<<"$2"
  for _ in $(seq 40); do
    after=$(stats_of "$s")
    read -r calls errors <<<"$after"
    [ "${calls:-0}" -ge $((c0 + 3)) ] && break
    sleep 0.1
  done
  [ "$calls" = $((c0 + 3)) ] && [ "$errors" = $((e0 + 1)) ] ||
    { echo "subtract before: $2, after: $after (want +3 calls, +1 error)"; return 1; }
}
for s in calc_py calc_rb calc_js calc_c; do
  check "rrpc stats counts calls to $s" stats_count "$s" "${stats_before[$s]}"
  json_check "rrpc stats $s: latency percentiles from the histogram" "
m = doc['methods']['subtract']
assert 0 < m['p50_ms'] <= m['p99_ms'] < 1000, m" "$BUILD/rrpc" stats --json "$s"
done

json_check "rrpc top shows the four servers with their calls" "
s = {x['service']: x for x in doc['services']}
for name in ('calc_py', 'calc_rb', 'calc_js', 'calc_c'):
    assert s[name]['workers'] == 1 and s[name]['calls'] >= 3 and s[name]['errors'] >= 1, s" \
  "$BUILD/rrpc" top --json --iterations 1

# A graceful stop removes the record at once: a C caller of the service
# fails fast (exit status 6, unavailable) instead of waiting for a reply.
fails_fast() { # fails_fast SERVICE: a call exits 6 within a second
  local t0 rc ms
  t0=$(date +%s%N)
  "$BUILD/rrpc" call --timeout 10 "$1" add '[1, 2]' >/dev/null 2>&1; rc=$?
  ms=$((($(date +%s%N) - t0) / 1000000))
  [ "$rc" = 6 ] && [ "$ms" -lt 1000 ] || { echo "rrpc call: exit $rc after $ms ms"; return 1; }
}
# (check runs its command in a subshell, which cannot wait for the servers.)
kill -TERM "${pid_of[py-server]}" "${pid_of[rb-server]}" "${pid_of[js-server]}" "${pid_of[c-server]}"
for name in py-server rb-server js-server c-server; do
  wait "${pid_of[$name]}" || fail "$name: exit status $? after SIGTERM (want 0)"
done
check "Python server stopped: rrpc call calc_py exits 6 at once" fails_fast calc_py
check "Ruby server stopped: rrpc call calc_rb exits 6 at once" fails_fast calc_rb
check "Node server stopped: rrpc call calc_js exits 6 at once" fails_fast calc_js
check "C server stopped: rrpc call calc_c exits 6 at once" fails_fast calc_c
# The Ruby, Python and Node clients fail fast the same way (Unavailable).
for s in calc_c calc_py calc_rb calc_js; do
  for lang in python ruby node; do
    check "$s stopped: a $lang call fails at once with Unavailable" \
      "$PY" "$root/clients/check_caller.py" unavailable "$lang" "$s"
  done
done

# Callers already waiting give up when the last worker goes: calc_gone's
# one worker is kept busy, a Python and a Ruby call queue behind it, the
# worker is killed (its record expires within a second) and both calls end
# with Unavailable long before their 10 s timeout, their requests withdrawn.
redis_py() { "$PY" -c "import os, sys, time, redis; r = redis.Redis.from_url(os.environ['REDIS_URL']); $1"; }
gone() {
  redis_py 'r.rpush("calc_gone", "{\"jsonrpc\": \"2.0\", \"method\": \"sleep\", \"params\": [20000]}")
end = time.monotonic() + 5
while r.llen("calc_gone") and time.monotonic() < end: time.sleep(0.01)' || return 1
  "$PY" "$root/clients/check_caller.py" gone python calc_gone & local p1=$!
  "$PY" "$root/clients/check_caller.py" gone ruby calc_gone & local p2=$!
  "$PY" "$root/clients/check_caller.py" gone node calc_gone & local p3=$!
  redis_py 'end = time.monotonic() + 10
while r.llen("calc_gone") < 3 and time.monotonic() < end: time.sleep(0.01)
assert r.llen("calc_gone") == 3, "the calls were not queued behind the busy worker"' || return 1
  kill -KILL "${pid_of[c-gone]}"
  wait "$p1" && wait "$p2" && wait "$p3" || return 1
  redis_py 'assert r.llen("calc_gone") == 0, r.lrange("calc_gone", 0, -1)'
}
check "calc_gone killed: waiting python, ruby and node calls give up with Unavailable" gone
wait "${pid_of[c-gone]}" 2>/dev/null # reaped here, without the shell's "Killed"
finish
