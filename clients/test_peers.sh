#!/usr/bin/env bash
# test_peers.sh -- cross-language tests of the Ruby, Python and Node rrpc peers.
#
# The point of rrpc's protocol is that any peer can talk to any other, so
# this starts Python, Ruby, Node and seed-style calc workers and drives each
# with every client: every pair of Ruby, Python and Node both ways, each
# language with itself, the seed-style scripts, key prefixes, the wire-level
# checks of check_protocol.py (errors, batches, notifications, TTLs, dead
# letters), what the clients add (check_caller.py: deadlines, waiting on
# unregistered services, max_queue), a dropped Redis connection, a graceful
# SIGTERM (which removes the worker's registry record) and the clearing of a
# killed worker's record by a live worker of another language.
# (tests/interop/test_interop.sh adds C and checks the registry through the
# rrpc CLI.)
#
# Needs REDIS_URL, so run it as:
#   tests/harness/with-redis.sh clients/test_peers.sh
# Prints ok/FAIL per check and the closing "N passed, N failed" line
# (tests/lib/common.sh), and exits 1 if anything failed.
set -u
: "${REDIS_URL:?run me under tests/harness/with-redis.sh}"
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/lib/common.sh
. "$here/../tests/lib/common.sh"
node_ready || die "the Node peer's dependencies are missing (scripts/node-deps.sh)"
declare -A pid

# start NAME COMMAND...: a worker in the background, its output kept in
# $test_dir/NAME.log for failures (killed on exit by common.sh).
start() {
  local name=$1
  shift
  spawn "$name" "$@"
  pid[$name]=$spawned
}

# run LABEL COMMAND...: one check; a hung peer must fail the check, not the run.
run() {
  local label=$1
  shift
  local runner=(timeout 30)
  declare -F "$1" >/dev/null && runner=() # shell functions run as they are
  if "${runner[@]}" "$@" >"$test_dir/out" 2>&1; then
    ok "$label"
  else
    fail "$label"
    grep -v '^ok ' "$test_dir/out" | sed 's/^/     /' # the failing sub-checks only
  fi
}

redis_py() { "$PY" -c "import os, sys, redis; r = redis.Redis.from_url(os.environ['REDIS_URL']); $1" "${@:2}"; }

start py "$PY" "$here/python/calc_server.py" --service calc
start rb ruby "$here/ruby/calc_server.rb" --service rbcalc
start js node "$here/node/calc_server.js" --service jscalc
start seed "$PY" "$here/python/seed_server.py" --service seedcalc
start py1 "$PY" "$here/python/calc_server.py" --service calc --prefix app1:
start rb2 ruby "$here/ruby/calc_server.rb" --service calc --prefix app2:
start js3 node "$here/node/calc_server.js" --service calc --prefix app3:
# For the registry's clean-up of killed workers (near the end): in each
# service a survivor of one language and a victim of another.
start prune-py "$PY" "$here/python/calc_server.py" --service prune1
start prune-rb-victim ruby "$here/ruby/calc_server.rb" --service prune1 --heartbeat-interval 0.5 --heartbeat-ttl 1
start prune-rb ruby "$here/ruby/calc_server.rb" --service prune2
start prune-js-victim node "$here/node/calc_server.js" --service prune2 --heartbeat-interval 0.5 --heartbeat-ttl 1
start prune-js node "$here/node/calc_server.js" --service prune3
start prune-py-victim "$PY" "$here/python/calc_server.py" --service prune3 --heartbeat-interval 0.5 --heartbeat-ttl 1

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
run 'node latency buckets follow PROTOCOL.md 9' node -e '
const { latencyBucket } = require(process.argv[1]);
const lower = (b) => 2 ** Math.floor((b - 1) / 4) * (1 + ((b - 1) % 4) / 4);
for (let i = -200; i < 2400; i++) {
  const t = 10 ** (i / 200);
  const b = latencyBucket(t / 1e6);
  const ok = b === 0 ? t < 1 : lower(b) <= t * (1 + 1e-12) && (b === 128 || t < lower(b + 1) * (1 + 1e-12));
  if (!ok || (b === 128) !== (t >= lower(128))) throw new Error(`t=${t} b=${b}`);
}' "$here/node/lib/registry.js"

# Each client against each worker.  Requests wait in the lists, so there is
# no need to wait for the workers to be up.
declare -A client_of=(
  [python]="$PY $here/python/calc_client.py"
  [ruby]="ruby $here/ruby/calc_client.rb"
  [node]="node $here/node/calc_client.js")
for lang in python ruby node; do
  # shellcheck disable=SC2086 # client_of holds a command line
  for server in python:calc ruby:rbcalc node:jscalc seed-style-python:seedcalc; do
    run "$lang client -> ${server%%:*} server" ${client_of[$lang]} --service "${server#*:}"
  done
done
run 'seed-style ruby caller -> python server' ruby "$here/ruby/seed_client.rb" --service calc
run 'seed-style ruby caller -> ruby server' ruby "$here/ruby/seed_client.rb" --service rbcalc
run 'seed-style ruby caller -> node server' ruby "$here/ruby/seed_client.rb" --service jscalc
run 'ruby client -> python server, prefix app1:' ruby "$here/ruby/calc_client.rb" --prefix app1:
run 'node client -> python server, prefix app1:' node "$here/node/calc_client.js" --prefix app1:
run 'python client -> ruby server, prefix app2:' "$PY" "$here/python/calc_client.py" --prefix app2:
run 'python client -> node server, prefix app3:' "$PY" "$here/python/calc_client.py" --prefix app3:
run 'ruby client -> node server, prefix app3:' ruby "$here/ruby/calc_client.rb" --prefix app3:

# What the clients add for callers (PROTOCOL.md 7 and 9), Python, Ruby and
# Node at once: a deadline on Redis's clock in every request, an unregistered service
# waited on (for the whole timeout, and answered by a worker that starts
# late), max_queue refused as overloaded.  Fail fast against a stopped C
# server is in tests/interop/test_interop.sh.
callers() { # callers CHECK: check_caller.py CHECK for the Python, Ruby and Node clients
  # One after the other: the checks time the calls, which three interpreters
  # starting at once on a small machine would slow down.
  local lang
  for lang in python ruby node; do
    "$PY" "$here/check_caller.py" "$1" "$lang" || return 1
  done
}
run 'python + ruby + node clients: deadline within [now, now + timeout]' callers deadline
run 'python + ruby + node clients: an unregistered service is waited on' callers late-worker
run 'python + ruby + node clients: max_queue refuses with Overloaded' callers overloaded

# Protocol details, each worker held to PROTOCOL.md on the wire.
run 'protocol + python client vs python server' "$PY" "$here/check_protocol.py" --service calc --client
run 'protocol + python client vs ruby server'   "$PY" "$here/check_protocol.py" --service rbcalc --client
run 'protocol + python client vs node server'   "$PY" "$here/check_protocol.py" --service jscalc --client
run 'ruby client API vs python server' ruby "$here/check_client.rb" --service calc
run 'ruby client API vs ruby server'   ruby "$here/check_client.rb" --service rbcalc
run 'ruby client API vs node server'   ruby "$here/check_client.rb" --service jscalc

# What an operator would look at after the garbage check_protocol.py pushed.
run 'garbage went to calc:dead and was counted' redis_py '
import json
letters = [json.loads(x) for x in r.lrange("calc:dead", 0, -1)]
assert any(l["message"] == "garbage" and l["reason"].startswith("parse error") for l in letters), letters
assert int(r.hget("calc:stats", "dead")) == len(letters), r.hgetall("calc:stats")'
run 'prefixed workers used only prefixed keys' redis_py '
keys = set(r.keys("*"))
assert b"app1:calc" not in keys and not any(k.startswith(b"app1:rrpc:reply") for k in keys), keys
for p in ("app1:", "app2:", "app3:"):  # registry keys: <prefix>rrpc:services, {<prefix>calc}:...
    assert r.smembers(p + "rrpc:services") == {b"calc"}, p
    assert r.zcard("{%scalc}:workers" % p) == 1 and r.hlen("{%scalc}:info" % p) == 1, p
assert not r.sismember("rrpc:services", "app1:calc") and b"{calc}:workers" in keys, keys'

# Drop every client connection: the workers must reconnect and keep serving.
redis_py 'r.execute_command("CLIENT", "KILL", "TYPE", "normal")'
run 'python server answers after its connection was killed' "$PY" "$here/python/calc_client.py" --service calc
run 'ruby server answers after its connection was killed'   ruby "$here/ruby/calc_client.rb" --service rbcalc
run 'node server answers after its connection was killed'   node "$here/node/calc_client.js" --service jscalc

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
run 'node server: SIGTERM finishes the request in hand, exits 0'   graceful js jscalc

# A killed worker cannot remove its record: a live worker of the service
# clears it once its heartbeat has run out (PROTOCOL.md 9): Python clearing
# Ruby's, Ruby clearing Node's, Node clearing Python's.  The victims (started
# at the top) beat every 0.5 s, valid 1 s; all are killed first, so the
# waits overlap.
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
js_victim=$(victim_id prune2 "${pid[prune-js-victim]}")
py_victim=$(victim_id prune3 "${pid[prune-py-victim]}")
for name in prune-rb-victim prune-js-victim prune-py-victim; do
  kill -KILL "${pid[$name]}"; wait "${pid[$name]}" 2>/dev/null; unset "pid[$name]"
done
run 'python worker clears a killed ruby worker from the registry' pruned prune1 "$rb_victim"
run 'ruby worker clears a killed node worker from the registry' pruned prune2 "$js_victim"
run 'node worker clears a killed python worker from the registry' pruned prune3 "$py_victim"

# Bad input must be handled, never crash a handler or the worker loop.
for name in py rb js py1 rb2 js3; do
  if grep -E -q 'Traceback|failed to handle|\.[a-z]+ failed: ' "$test_dir/$name.log"; then
    fail "$name worker logged an unexpected exception"
    sed 's/^/     /' "$test_dir/$name.log"
  fi
done
finish
