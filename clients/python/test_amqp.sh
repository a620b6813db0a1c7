#!/usr/bin/env bash
# test_amqp.sh -- the Python peer over RabbitMQ (AMQP 0-9-1, PROTOCOL.md 12),
# against the private node of tests/harness/with-rabbitmq.sh
# ($RRPC_TEST_AMQP_URL), in one broker for all its checks:
#   * interop with C both ways: `rrpc call --url amqp://...` calls the Python
#     calc server (results, an error, rpc.ping, rpc.discover), the Python
#     calc client calls the C calc-server, and forward chains them (C caller
#     -> Python worker -> Python client -> C worker, and back);
#   * the Python peer's own pytest suite for AMQP (tests/test_amqp.py:
#     results, fail fast, expiration, the tutorial's properties, raw bodies,
#     notifications, redelivered messages, refusals, a refused login, links
#     the broker closed) and tests/test_amqp_registry.py (the registry's
#     answers: record, counters, per-method stats; heartbeat off; gone when stopped);
#   * the queue shared with C: a Python --reliable worker and calc-server
#     --reliable serve one durable queue (tests/test_amqp.py: a plain one refuses it);
#     bad input lands in <service>:dead with its reason (`rrpc dead`); a
#     reliable Python worker killed mid-call (SIGKILL) leaves its message to
#     the next worker;
#   * the registry: `rrpc ls` and `rrpc info` list the Python server with its
#     methods and lose it when it stops; a user without the registry's names
#     (tests/amqp/definitions.json) serves unregistered.
# pika is Debian's python3-pika, in /usr/bin/python3 (not in every python3).
# Usage: tests/harness/with-rabbitmq.sh clients/python/test_amqp.sh BUILD_DIR
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/lib/common.sh
. "$here/../../tests/lib/common.sh"
: "${RRPC_TEST_AMQP_URL:?run me under tests/harness/with-rabbitmq.sh}"
build=$1
rrpc=$build/rrpc
calc=$build/calc-server
url=$RRPC_TEST_AMQP_URL
py=/usr/bin/python3
"$py" -c 'import pika' 2>/dev/null || die "python3-pika is missing (Debian package python3-pika)"

# ---- C calls the Python server ------------------------------------------------
spawn pycalc "$py" "$here/calc_server.py" --url "$url" --service pycalc
pycalc_pid=$spawned
wait_until 10 grep -q "serving queue 'pycalc' over AMQP" "$test_dir/pycalc.log" ||
  die "the Python calc server did not start: $(tail -3 "$test_dir/pycalc.log")"
out=$("$rrpc" call --url "$url" pycalc add '[1, 2]' 2>&1)
[ "$out" = 3 ] && ok "rrpc call (C) -> Python server over AMQP: add = 3" || fail "C -> Python add: $out"
out=$("$rrpc" call --url "$url" pycalc divide '[1, 0]' 2>&1)
st=$?
[ "$st" = 1 ] && [[ $out == *"division by zero"* ]] && ok "C -> Python: an error result, exit 1" ||
  fail "C -> Python divide: status $st, $out"
out=$("$rrpc" call --url "$url" pycalc nosuch '[]' 2>&1)
[[ $out == *-32601* ]] && ok "C -> Python: unknown method -32601" || fail "C -> Python nosuch: $out"
out=$("$rrpc" ping --url "$url" pycalc 2>&1) && [[ $out == *"reply from pycalc"* ]] &&
  ok "rrpc ping -> Python server: $out" || fail "ping: $out"
out=$("$rrpc" describe --url "$url" pycalc 2>&1) && [[ $out == *methods* ]] &&
  ok "rrpc describe -> Python server (rpc.discover)" || fail "describe: $out"
out=$(RRPC_URL=$url REDIS_URL=redis://127.0.0.1:1 "$rrpc" call pycalc multiply '[6, 7]' 2>&1)
[ "$out" = 42 ] && ok "C via \$RRPC_URL -> Python server: 42" || fail "RRPC_URL: $out"

# ---- Python calls the C server --------------------------------------------------
spawn ccalc "$calc" --url "$url" --service ccalc --workers 1
wait_until 10 grep -q "serving queue 'ccalc'" "$test_dir/ccalc.log" || die "calc-server did not start"
out=$("$py" "$here/calc_client.py" --url "$url" --service ccalc 2>&1) &&
  ok "Python client -> C calc-server over AMQP: every answer right" || fail "Python -> C: $out"
out=$(RRPC_URL=$url REDIS_URL=redis://127.0.0.1:1 "$py" "$here/calc_client.py" --service ccalc 2>&1) &&
  ok "Python client via \$RRPC_URL -> C calc-server" || fail "Python RRPC_URL -> C: $out"
out=$("$py" "$here/calc_client.py" --url "$url" --service nobody 2>&1)
[[ $out == *"has no queue"* ]] && ok "Python client: a service with no queue fails at once" ||
  fail "Python -> nobody: $out"

# ---- chains through forward -------------------------------------------------------
out=$("$rrpc" call --url "$url" pycalc forward '{"service": "ccalc", "method": "add", "params": [20, 22]}' 2>&1)
[ "$out" = 42 ] && ok "C -> Python worker -> Python client -> C worker: 42" || fail "chain to C: $out"
out=$("$rrpc" call --url "$url" ccalc forward '{"service": "pycalc", "method": "multiply", "params": [6, 7]}' 2>&1)
[ "$out" = 42 ] && ok "C -> C worker -> C client -> Python worker: 42" || fail "chain to Python: $out"

# ---- the registry: rrpc ls and info see the Python server, until it stops ---------------
out=$("$rrpc" ls --url "$url" 2>&1)
grep -Eq '^pycalc +1 +1 ' <<<"$out" && ok "rrpc ls lists the Python server (1 worker, 1 thread)" ||
  fail "rrpc ls: $out"
out=$("$rrpc" info --url "$url" pycalc 2>&1)
[[ $out == *"service pycalc: registered"* && $out == *" $pycalc_pid "* && $out == *python-* ]] &&
  [[ $out == *"add(a, b): a + b"* && $out == *rpc.discover* ]] &&
  ok "rrpc info pycalc: the Python worker (its pid, version) and its methods" || fail "rrpc info: $out"
kill -TERM "$pycalc_pid"
wait "$pycalc_pid" 2>/dev/null
out=$("$rrpc" ls --url "$url" 2>&1)
! grep -q '^pycalc ' <<<"$out" && [[ $("$rrpc" info --url "$url" --json pycalc) == *'"registered":false'* ]] &&
  ok "the stopped Python server is gone from rrpc ls and info at once" || fail "after SIGTERM: $out"
# tests/amqp/definitions.json (ctest sets RRPC_RABBITMQ_DEFINITIONS): user
# calc-server may use only the queue calc in vhost rrpc, not the registry's names.
if [ -n "${RRPC_RABBITMQ_DEFINITIONS:-}" ]; then
  hostport=${url#amqp://*@}
  hostport=${hostport%%/*}
  spawn acl "$py" "$here/calc_server.py" --url "amqp://calc-server:calc-secret@$hostport/rrpc" --service calc
  wait_until 10 grep -q "serving queue 'calc' over AMQP" "$test_dir/acl.log" &&
    grep -q "not in the registry.*ACCESS_REFUSED" "$test_dir/acl.log" &&
    [ "$("$rrpc" call --url "amqp://caller:caller-secret@$hostport/rrpc" calc add '[20, 22]' 2>&1)" = 42 ] &&
    ok "ACL: refused the registry's names, the Python server serves unregistered and says why" ||
    fail "ACL: $(tail -3 "$test_dir/acl.log")"
fi

# ---- sharing a queue with C, dead letters, reliable redelivery (PROTOCOL.md 12) ---------
# A Python reliable worker joins calc-server --reliable's durable queue (same
# declaration); a reliable worker killed mid-call; bad input kept as C keeps it.
spawn crel "$calc" --url "$url" --service shared --workers 1 --reliable
wait_until 10 grep -q "serving queue 'shared'" "$test_dir/crel.log" || die "calc-server --reliable did not start"
spawn pyrel "$py" "$here/calc_server.py" --url "$url" --service shared --reliable
pyrel_pid=$spawned
wait_until 10 grep -q "serving queue 'shared' over AMQP (reliable" "$test_dir/pyrel.log" &&
  (for i in 1 2 3 4; do [ "$("$rrpc" call --url "$url" shared add "[$i, 1]" 2>&1)" = $((i + 1)) ] || exit 1; done) &&
  grep -Eq '^shared +2 ' <<<"$("$rrpc" ls --url "$url" 2>&1)" &&
  ok "a Python reliable worker and calc-server --reliable serve one durable queue" ||
  fail "shared queue: $(tail -3 "$test_dir/pyrel.log"; "$rrpc" ls --url "$url" 2>&1)"
kill -TERM "$pyrel_pid"
wait "$pyrel_pid" 2>/dev/null
# A reliable Python worker killed mid-call: the broker gives the message to the next one.
spawn pyk1 "$py" "$here/calc_server.py" --url "$url" --service pykill --reliable
pyk1_pid=$spawned
wait_until 10 grep -q "serving queue 'pykill'" "$test_dir/pyk1.log" || die "pykill did not start"
spawn killcall "$rrpc" call --url "$url" --timeout 20 pykill sleep '[600]'
killcall_pid=$spawned
sleep 0.3
kill -KILL "$pyk1_pid"
wait "$pyk1_pid" 2>/dev/null
spawn pyk2 "$py" "$here/calc_server.py" --url "$url" --service pykill --reliable
wait "$killcall_pid"
st=$?
[ "$st" = 0 ] && [ "$(cat "$test_dir/killcall.log")" = 600 ] &&
  ok "a reliable Python worker killed mid-call (SIGKILL): redelivered to the next one" ||
  fail "SIGKILL mid-call: status $st, $(cat "$test_dir/killcall.log"), $(tail -3 "$test_dir/pyk2.log")"
# Bad input, to the reliable worker that took over: kept as the C server keeps it.
"$py" -c 'import pika, sys
c = pika.BlockingConnection(pika.URLParameters(sys.argv[1])); ch = c.channel()
ch.basic_publish("", "pykill", b"{not json", pika.BasicProperties(correlation_id="bad1"))
ch.basic_publish("", "pykill", b"{\"jsonrpc\": \"2.0\", \"method\": 1, \"id\": null}")
c.close()' "$url"
wait_until 5 grep -q "no reply key" <<<"$("$rrpc" dead --url "$url" pykill 2>&1)"
out=$("$rrpc" dead --url "$url" pykill 2>&1)
[[ $out == *"parse error"* && $out == *"no reply key"* ]] &&
  [[ $("$rrpc" info --url "$url" --json pykill) == *'"dead":2'* ]] &&
  ok "bad input to a Python worker lands in pykill:dead with its reason, counted" || fail "rrpc dead pykill: $out"

# ---- the Python peer's own tests -----------------------------------------------------
if (cd "$here" && "$py" -m pytest -p no:cacheprovider -q tests/test_amqp.py tests/test_amqp_registry.py) >"$test_dir/pytest.log" 2>&1; then
  ok "pytest tests/test_amqp.py: $(tail -1 "$test_dir/pytest.log")"
else
  fail "pytest tests/test_amqp.py: $(tail -30 "$test_dir/pytest.log")"
fi
finish
