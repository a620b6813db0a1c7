#!/usr/bin/env bash
# demo.sh -- the main job: calc-server answering C, Ruby, Python and Node callers.
#
# Starts a private redis-server on a unix socket (unless REDIS_URL is set),
# starts build/calc-server, calls it from the C example, the rrpc CLI, Ruby,
# Python and Node, shows what happens to garbage and notifications, what the
# operator commands see, how a reliable service survives a kill -9, one
# call over RabbitMQ (scripts/demo-amqp.sh), and stops every process it
# started, whatever happens.
set -u
BUILD=${1:-build}
here=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "$BUILD" && pwd)
# The Python with redis-py ($RRPC_PYTHON, else scripts/find-python.sh's pick).
RRPC_PYTHON=$("$here/scripts/find-python.sh") || exit 1
export RRPC_PYTHON
PY=$RRPC_PYTHON
if [ -z "${REDIS_URL:-}" ] && [ -z "${RRPC_DEMO_INNER:-}" ]; then
  export RRPC_DEMO_INNER=1
  exec "$here/tests/harness/with-redis.sh" "$0" "$BUILD"
fi
cd "$here"
service=calc
server_pid=
other_pids=()
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  for pid in "${other_pids[@]}"; do kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
rcli() { "$PY" -c 'import os,sys,redis; r=redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True); print(getattr(r, sys.argv[1])(*sys.argv[2:]))' "$@"; }

step "Redis at $REDIS_URL; starting calc-server"
"$BUILD/calc-server" --redis "$REDIS_URL" --service "$service" --workers 2 &
server_pid=$!
for _ in $(seq 50); do "$BUILD/rrpc" call --timeout 0.2 "$service" echo '[]' >/dev/null 2>&1 && break; sleep 0.1; done

failures=0
run() { echo "\$ $*"; "$@" || { echo "  -> FAILED (exit $?)"; failures=$((failures + 1)); }; }

step "C: examples/calc-client (the post's client calls, in C)"
run "$BUILD/calc-client" --redis "$REDIS_URL" --service "$service"

step "C: the rrpc command line"
run "$BUILD/rrpc" call "$service" add '[2, 3]'
run "$BUILD/rrpc" call "$service" multiply '{"a": 6, "b": 7}'
echo "\$ $BUILD/rrpc call $service divide '[1, 0]'   (an application error: exit 1)"
"$BUILD/rrpc" call "$service" divide '[1, 0]'; echo "  -> exit $?"

step "Ruby: clients/ruby/calc_client.rb"
run ruby clients/ruby/calc_client.rb --redis "$REDIS_URL" --service "$service"

step "Python: clients/python/calc_client.py"
run "$PY" clients/python/calc_client.py --redis "$REDIS_URL" --service "$service"

step "Node: clients/node/calc_client.js"
if "$here/scripts/node-deps.sh" >/dev/null; then
  run node clients/node/calc_client.js --redis "$REDIS_URL" --service "$service"
else
  echo "  -> FAILED: the Node peer's dependencies could not be installed"; failures=$((failures + 1))
fi

step "A nested call: forward asks another service from inside its handler, within the caller's deadline and W3C trace"
run "$BUILD/rrpc" call --traceparent 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 \
  "$service" forward "[\"$service\", \"add\", [20, 22]]"

step "Garbage on the request list goes to $service:dead, and the server carries on"
rcli rpush "$service" 'this is not JSON' >/dev/null
sleep 0.3
echo "dead letters: $(rcli llen "$service:dead")"
rcli lindex "$service:dead" -1
run "$BUILD/rrpc" call "$service" add '[40, 2]'

step "A notification runs but leaves no key behind"
before=$(rcli dbsize)
run "$BUILD/rrpc" notify "$service" echo '["fire and forget"]'
sleep 0.3
echo "keys before: $before, after: $(rcli dbsize)"

step "What operators see: the registry, a ping through the request list, per-method stats"
run "$BUILD/rrpc" ls
run "$BUILD/rrpc" ping --count 3 "$service"
run "$BUILD/rrpc" stats "$service"

step "Stopping calc-server with SIGTERM (graceful); callers now fail fast (exit 6)"
kill -TERM "$server_pid"; wait "$server_pid"; echo "calc-server exited with $?"; server_pid=
echo "\$ $BUILD/rrpc call --timeout 10 $service add '[1, 2]'"
t0=$(date +%s.%N)
"$BUILD/rrpc" call --timeout 10 "$service" add '[1, 2]'; status=$?
echo "  -> exit $status after $("$PY" -c "print(round($(date +%s.%N) - $t0, 2))") s, not 10 s"
[ "$status" = 6 ] || { echo "  -> FAILED (expected exit 6)"; failures=$((failures + 1)); }
"$BUILD/rrpc" forget "$service" >/dev/null

step "Reliable mode: a request held by a worker killed with SIGKILL is answered by another"
"$BUILD/calc-server" --redis "$REDIS_URL" --service safe --workers 1 --reliable \
  --heartbeat-ttl 1 2>/dev/null &
doomed=$!; other_pids+=("$doomed")
for _ in $(seq 50); do "$BUILD/rrpc" call --timeout 0.2 safe echo '[]' >/dev/null 2>&1 && break; sleep 0.1; done
echo "\$ $BUILD/rrpc call --timeout 20 safe sleep '[2000]'   (in the background)"
answer=$(mktemp)
"$BUILD/rrpc" call --timeout 20 safe sleep '[2000]' > "$answer" 2>&1 &
caller=$!
sleep 0.5
echo "kill -9 the worker while it runs the call; start another one"
kill -9 "$doomed"; wait "$doomed" 2>/dev/null
"$BUILD/calc-server" --redis "$REDIS_URL" --service safe --workers 1 --reliable \
  --heartbeat-ttl 1 2>/dev/null &
other_pids+=("$!")
if wait "$caller"; then echo "the call returned: $(cat "$answer")"
else echo "  -> FAILED: $(cat "$answer")"; failures=$((failures + 1)); fi
rm -f "$answer"

step "RabbitMQ (AMQP 0-9-1): the same calc-server on a private RabbitMQ node, called over amqp://"
if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  "$here/tests/harness/with-rabbitmq.sh" "$here/scripts/demo-amqp.sh" "$BUILD" ||
    failures=$((failures + 1))
else
  echo "  -> skipped: rabbitmq-server is not installed (scripts/install-deps.sh)"
fi

if [ "$failures" -ne 0 ]; then echo "demo: $failures step(s) failed" >&2; exit 1; fi
echo; echo "demo: all steps passed"
