#!/usr/bin/env bash
# test_peers.sh -- cross-language tests of the Ruby and Python rrpc peers.
#
# The point of rrpc's protocol is that any peer can talk to any other, so
# this starts Python, Ruby and seed-style calc workers and drives each with
# every client: Ruby <-> Python both ways, each language with itself, the
# seed-style scripts, key prefixes, the wire-level checks of
# check_protocol.py (errors, batches, notifications, TTLs, dead letters),
# what the clients add (check_caller.py: deadlines, waiting on unregistered
# services, max_queue),
# a dropped Redis connection, a graceful SIGTERM (which removes the worker's
# registry record) and the clearing of a killed worker's record by a live
# worker of the other language.  (tests/interop/test_interop.sh checks the
# registry through the rrpc CLI.)
#
# Needs REDIS_URL, so run it as:
#   tests/harness/with-redis.sh clients/test_peers.sh
# Prints ok/FAIL per check, and exits 1 if anything failed.
set -u
: "${REDIS_URL:?run me under tests/harness/with-redis.sh}"
here=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3   # Debian's python, the one with python3-redis
logs=$(mktemp -d "${TMPDIR:-/tmp}/rrpc-peers.XXXXXX")
declare -A pid
failed=()

cleanup() {
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$logs"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME COMMAND...: a worker in the background, its output kept for failures.
start() {
  local name=$1; shift
  "$@" >"$logs/$name.log" 2>&1 &
  pid[$name]=$!
}

# run LABEL COMMAND...: one check; a hung peer must fail the check, not the run.
run() {
  local label=$1; shift
  local runner=(timeout 30)
  declare -F "$1" >/dev/null && runner=()  # shell functions run as they are
  if "${runner[@]}" "$@" >"$logs/out" 2>&1; then
    echo "ok   $label"
  else
    echo "FAIL $label"
    grep -v '^ok ' "$logs/out" | sed 's/^/     /'  # the failing sub-checks only
    failed+=("$label")
  fi
}

redis_py() { "$PY" -c "import os, sys, redis; r = redis.Redis.from_url(os.environ['REDIS_URL']); $1" "${@:2}"; }

start py   "$PY" "$here/python/calc_server.py" --service calc
start rb   ruby "$here/ruby/calc_server.rb" --service rbcalc
start seed "$PY" "$here/python/seed_server.py" --service seedcalc
start py1  "$PY" "$here/python/calc_server.py" --service calc --prefix app1:
start rb2  ruby "$here/ruby/calc_server.rb" --service calc --prefix app2:
# For the registry's clean-up of killed workers (near the end).
start prune-py "$PY" "$here/python/calc_server.py" --service prune1
start prune-rb-victim ruby "$here/ruby/calc_server.rb" --service prune1 --heartbeat-interval 0.5 --heartbeat-ttl 1
start prune-rb ruby "$here/ruby/calc_server.rb" --service prune2
start prune-py-victim "$PY" "$here/python/calc_server.py" --service prune2 --heartbeat-interval 0.5 --heartbeat-ttl 1

# The latency buckets of the per-method stats, by PROTOCOL.md 9's rule:
# bucket b >= 1 holds lower(b) <= t < lower(b+1) us, 0 below 1 us, 128 the rest.
run 'python latency buckets follow PROTOCOL.md 9' "$PY" -c '
import sys; sys.path.insert(0, sys.argv[1]); import rrpc
lower = lambda b: 2.0 ** ((b - 1) // 4) * (1 + ((b - 1) % 4) / 4)
for i in range(-200, 2400):
    t = 10 ** (i / 200)  # 0.1 us .. 1e12 us
    b = rrpc.registry.latency_bucket(t / 1e6)
    ok = t < 1 if b == 0 else lower(b) <= t * (1 + 1e-12) and (b == 128 or t < lower(b + 1) * (1 + 1e-12))
    assert ok and (b == 128) == (t >= lower(128)), (t, b)' "$here/python/src"
run 'ruby latency buckets follow PROTOCOL.md 9' ruby -e '
require_relative ARGV[0]
lower = ->(b) { 2.0**((b - 1) / 4) * (1 + ((b - 1) % 4) / 4.0) }
(-200...2400).each do |i|
  t = 10**(i / 200.0)
  b = RRPC.const_get(:Stats).bucket(t / 1e6)
  ok = b.zero? ? t < 1 : lower.(b) <= t * (1 + 1e-12) && (b == 128 || t < lower.(b + 1) * (1 + 1e-12))
  raise "t=#{t} b=#{b}" unless ok && (b == 128) == (t >= lower.(128))
end' "$here/ruby/lib/rrpc"

# Each client against each worker.  Requests wait in the lists, so there is
# no need to wait for the workers to be up.
run 'python client -> python server' "$PY" "$here/python/calc_client.py" --service calc
run 'python client -> ruby server'   "$PY" "$here/python/calc_client.py" --service rbcalc
run 'ruby client -> python server'   ruby "$here/ruby/calc_client.rb" --service calc
run 'ruby client -> ruby server'     ruby "$here/ruby/calc_client.rb" --service rbcalc
run 'seed-style ruby caller -> python server' ruby "$here/ruby/seed_client.rb" --service calc
run 'seed-style ruby caller -> ruby server'   ruby "$here/ruby/seed_client.rb" --service rbcalc
run 'python client -> seed-style python worker' "$PY" "$here/python/calc_client.py" --service seedcalc
run 'ruby client -> seed-style python worker'   ruby "$here/ruby/calc_client.rb" --service seedcalc
run 'ruby client -> python server, prefix app1:' ruby "$here/ruby/calc_client.rb" --prefix app1:
run 'python client -> ruby server, prefix app2:' "$PY" "$here/python/calc_client.py" --prefix app2:

# What the clients add for callers (PROTOCOL.md 7 and 9), Python and Ruby at
# once: a deadline on Redis's clock in every request, an unregistered service
# waited on (for the whole timeout, and answered by a worker that starts
# late), max_queue refused as overloaded.  Fail fast against a stopped C
# server is in tests/interop/test_interop.sh.
callers() { # callers CHECK: check_caller.py CHECK for the Python and Ruby clients
  "$PY" "$here/check_caller.py" "$1" python &
  local p=$!
  "$PY" "$here/check_caller.py" "$1" ruby || { wait $p; return 1; }
  wait $p
}
run 'python + ruby clients: deadline within [now, now + timeout]' callers deadline
run 'python + ruby clients: an unregistered service is waited on' callers late-worker
run 'python + ruby clients: max_queue refuses with Overloaded' callers overloaded

# Protocol details, each worker held to PROTOCOL.md on the wire.
run 'protocol + python client vs python server' "$PY" "$here/check_protocol.py" --service calc --client
run 'protocol + python client vs ruby server'   "$PY" "$here/check_protocol.py" --service rbcalc --client
run 'ruby client API vs python server' ruby "$here/check_client.rb" --service calc
run 'ruby client API vs ruby server'   ruby "$here/check_client.rb" --service rbcalc

# What an operator would look at after the garbage check_protocol.py pushed.
run 'garbage went to calc:dead and was counted' redis_py '
import json
letters = [json.loads(x) for x in r.lrange("calc:dead", 0, -1)]
assert any(l["message"] == "garbage" and l["reason"].startswith("parse error") for l in letters), letters
assert int(r.hget("calc:stats", "dead")) == len(letters), r.hgetall("calc:stats")'
run 'prefixed workers used only prefixed keys' redis_py '
keys = set(r.keys("*"))
assert b"app1:calc" not in keys and not any(k.startswith(b"app1:rrpc:reply") for k in keys), keys
for p in ("app1:", "app2:"):  # registry keys: <prefix>rrpc:services, {<prefix>calc}:...
    assert r.smembers(p + "rrpc:services") == {b"calc"}, p
    assert r.zcard("{%scalc}:workers" % p) == 1 and r.hlen("{%scalc}:info" % p) == 1, p
assert not r.sismember("rrpc:services", "app1:calc") and b"{calc}:workers" in keys, keys'

# Drop every client connection: the workers must reconnect and keep serving.
redis_py 'r.execute_command("CLIENT", "KILL", "TYPE", "normal")'
run 'python server answers after its connection was killed' "$PY" "$here/python/calc_client.py" --service calc
run 'ruby server answers after its connection was killed'   ruby "$here/ruby/calc_client.rb" --service rbcalc

# SIGTERM while a request is in hand: it is still answered, and the exit is 0.
graceful() {
  local name=$1 service=$2 key
  key=$(redis_py '
import json, secrets, time
key = "rrpc:reply:" + secrets.token_hex(16)
r.rpush(sys.argv[1], json.dumps({"jsonrpc": "2.0", "method": "sleep", "params": [700], "id": key}))
while r.llen(sys.argv[1]):
    time.sleep(0.01)
print(key)' "$service") || return 1
  kill -TERM "${pid[$name]}"
  redis_py '
import json
popped = r.blpop([sys.argv[1]], timeout=5)
assert popped and json.loads(popped[1])["result"] == 700, popped' "$key" || return 1
  wait "${pid[$name]}"
  local rc=$?
  unset "pid[$name]"
  [ "$rc" = 0 ] || { echo "exit status $rc"; return 1; }
  # A graceful stop removes the record at once; the service stays registered.
  redis_py '
L = sys.argv[1]
assert r.zcard("{%s}:workers" % L) == 0 and r.hlen("{%s}:info" % L) == 0, r.zrange("{%s}:workers" % L, 0, -1)
assert r.exists("{%s}:config" % L) and r.sismember("rrpc:services", L)' "$service"
}
run 'python server: SIGTERM finishes the request in hand, exits 0' graceful py calc
run 'ruby server: SIGTERM finishes the request in hand, exits 0'   graceful rb rbcalc

# A killed worker cannot remove its record: a live worker of the service
# clears it once its heartbeat has run out (PROTOCOL.md 9), Python clearing
# Ruby's and Ruby clearing Python's.  The victims (started at the top) beat
# every 0.5 s, valid 1 s; both are killed first, so the two waits overlap.
victim_id() { # victim_id SERVICE PID: the worker id of a registered process
  redis_py '
import json, time
end = time.monotonic() + 10
while time.monotonic() < end:
    for rec in r.hvals("{%s}:info" % sys.argv[1]):
        rec = json.loads(rec)
        if rec["pid"] == int(sys.argv[2]):
            sys.exit(print(rec["id"]))
    time.sleep(0.05)' "$1" "$2"
}
pruned() { # pruned SERVICE WORKER_ID: the survivor cleared the victim's record
  [ -n "$2" ] || { echo "the victim never registered"; return 1; }
  redis_py '
import time
L, victim = sys.argv[1], sys.argv[2]
end = time.monotonic() + 5
while (r.zscore("{%s}:workers" % L, victim) is not None or r.hexists("{%s}:info" % L, victim)) \
        and time.monotonic() < end:
    time.sleep(0.05)
assert r.zscore("{%s}:workers" % L, victim) is None, "still in {L}:workers"
assert not r.hexists("{%s}:info" % L, victim), "record still in {L}:info"
assert r.zcard("{%s}:workers" % L) == 1, "the survivor is gone too"' "$1" "$2"
}
rb_victim=$(victim_id prune1 "${pid[prune-rb-victim]}")
py_victim=$(victim_id prune2 "${pid[prune-py-victim]}")
for name in prune-rb-victim prune-py-victim; do
  kill -KILL "${pid[$name]}"; wait "${pid[$name]}" 2>/dev/null; unset "pid[$name]"
done
run 'python worker clears a killed ruby worker from the registry' pruned prune1 "$rb_victim"
run 'ruby worker clears a killed python worker from the registry' pruned prune2 "$py_victim"

# Bad input must be handled, never crash a handler or the worker loop.
for name in py rb py1 rb2; do
  if grep -E -q 'Traceback|failed to handle|\.[a-z]+ failed: ' "$logs/$name.log"; then
    echo "FAIL $name worker logged an unexpected exception"
    sed 's/^/     /' "$logs/$name.log"
    failed+=("$name log")
  fi
done

if [ ${#failed[@]} -ne 0 ]; then
  echo "test_peers.sh: ${#failed[@]} failed: ${failed[*]}"
  exit 1
fi
echo 'test_peers.sh: all passed'
