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
url=$RRPC_TEST_AMQP_URL
py=/usr/bin/python3
"$py" -c 'import pika' 2>/dev/null || die "python3-pika is missing (Debian package python3-pika)"
peer=Python
peer_cmd=("$py" "$here/calc_server.py")
peer_wait=10
# shellcheck source=tests/lib/amqp_peer.sh
. "$here/../../tests/lib/amqp_peer.sh"

# ---- C calls the Python server ------------------------------------------------
peer_server pycalc pycalc
pycalc_pid=$spawned
says pycalc 10 "serving queue 'pycalc' over AMQP" ||
  die "the Python calc server did not start: $(tail -3 "$test_dir/pycalc.log")"
c_calls pycalc
out=$("$rrpc" call --url "$url" pycalc nosuch '[]' 2>&1)
[[ $out == *-32601* ]] && ok "C -> Python: unknown method -32601" || fail "C -> Python nosuch: $out"
out=$("$rrpc" ping --url "$url" pycalc 2>&1) && [[ $out == *"reply from pycalc"* ]] &&
  ok "rrpc ping -> Python server: $out" || fail "ping: $out"
out=$("$rrpc" describe --url "$url" pycalc 2>&1) && [[ $out == *methods* ]] &&
  ok "rrpc describe -> Python server (rpc.discover)" || fail "describe: $out"
out=$(RRPC_URL=$url REDIS_URL=redis://127.0.0.1:1 "$rrpc" call pycalc multiply '[6, 7]' 2>&1)
[ "$out" = 42 ] && ok "C via \$RRPC_URL -> Python server: 42" || fail "RRPC_URL: $out"

# ---- Python calls the C server --------------------------------------------------
c_server ccalc ccalc
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
registry pycalc "$pycalc_pid" "add(a, b): a + b" rpc.discover
acl

# ---- sharing a queue with C, dead letters, reliable redelivery (PROTOCOL.md 12) ---------
# A Python reliable worker joins calc-server --reliable's durable queue (same
# declaration); a reliable worker killed mid-call; bad input kept as C keeps it.
shared_queue shared
redelivery pykill
dead_letters pykill

# ---- the Python peer's own tests -----------------------------------------------------
if (cd "$here" && "$py" -m pytest -p no:cacheprovider -q tests/test_amqp.py tests/test_amqp_registry.py) >"$test_dir/pytest.log" 2>&1; then
  ok "pytest tests/test_amqp.py: $(tail -1 "$test_dir/pytest.log")"
else
  fail "pytest tests/test_amqp.py: $(tail -30 "$test_dir/pytest.log")"
fi
finish
