#!/usr/bin/env bash
# test_amqp.sh -- the Node peer over AMQP 0-9-1 (ctest: node_amqp), against
# the private RabbitMQ of tests/harness/with-rabbitmq.sh ($RRPC_TEST_AMQP_URL):
#   * the package's own AMQP suite (node --test test/amqp.test.js): calls,
#     errors, notifications, raw bodies (-32700/-32600 to reply_to), the
#     call's properties, no queue, timeouts, aborts, refusals, $RRPC_URL, a
#     refused login, a redelivered request, reconnecting after the broker
#     closed every connection;
#   * interop with C: `rrpc call --url` and `rrpc describe` against the Node
#     calc server, and the Node calc client against calc-server --url;
#   * the registry: test/amqp_registry.test.js (the answers: record, counters,
#     per-method stats; heartbeat off; gone when stopped), and `rrpc ls`/
#     `rrpc info` list calc_server.js with its methods and lose it when it
#     stops; a user without the registry's names (tests/amqp/definitions.json)
#     serves unregistered;
#   * the queue shared with C: a Node --reliable worker and calc-server
#     --reliable serve one durable queue (test/amqp.test.js: a plain one refuses
#     it); bad input lands in <service>:dead (`rrpc dead`); a reliable Node
#     worker killed mid-call (SIGKILL) leaves its message to the next one.
# Usage: with-rabbitmq.sh clients/node/test_amqp.sh BUILD_DIR
#        (amqplib through $NODE_PATH or clients/node/node_modules)
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/lib/common.sh
. "$root/tests/lib/common.sh"
build=$1
rrpc=$build/rrpc
url=${RRPC_TEST_AMQP_URL:?run me under tests/harness/with-rabbitmq.sh}

# ---- the package's suite ------------------------------------------------------
if (cd "$here" && node --test --test-concurrency=1 test/amqp.test.js test/amqp_registry.test.js) \
  >"$test_dir/suite.log" 2>&1; then
  ok "node --test test/amqp.test.js test/amqp_registry.test.js: $(grep -E '^# (pass|fail|skipped)' "$test_dir/suite.log" | tr '\n' ' ')"
else
  cat "$test_dir/suite.log" >&2
  fail "node --test test/amqp.test.js test/amqp_registry.test.js"
fi

# ---- rrpc call (C) against the Node calc server ----------------------------
spawn ccalc "$build/calc-server" --url "$url" --service ccalc --workers 1
wait_until 10 grep -q "serving queue 'ccalc'" "$test_dir/ccalc.log" || die "calc-server did not start"
spawn nodecalc node "$here/calc_server.js" --url "$url" --service nodecalc
nodecalc_pid=$spawned
wait_until 10 grep -q "serving queue 'nodecalc'" "$test_dir/nodecalc.log" || die "the Node calc server did not start"
out=$("$rrpc" call --url "$url" nodecalc add '[1,2]' 2>&1)
[ "$out" = 3 ] && ok "rrpc call --url amqp:// nodecalc add [1,2]: 3 (a Node server)" || fail "rrpc call: $out"
out=$("$rrpc" call --url "$url" nodecalc divide '[1,0]' 2>&1)
st=$?
[ "$st" = 1 ] && [[ $out == *"division by zero"* ]] && ok "an error result from the Node server: exit 1" ||
  fail "divide: $st $out"
out=$(RRPC_URL=$url "$rrpc" describe nodecalc 2>&1)
[[ $out == *add* && $out == *forward* ]] && ok "rrpc describe (rpc.discover) over AMQP, a Node server" ||
  fail "describe: $out"
# forward: C calls the Node server, whose own client calls calc-server (C).
out=$("$rrpc" call --url "$url" --timeout 10 nodecalc forward \
  '{"service": "ccalc", "method": "multiply", "params": [6, 7]}' 2>&1)
[ "$out" = 42 ] && ok "rrpc call -> Node server -> Node client -> calc-server, over AMQP: 42" || fail "forward: $out"

# ---- the Node calc client against calc-server (C) ---------------------------
out=$(node "$here/calc_client.js" --url "$url" --service ccalc 2>&1)
st=$?
[ "$st" = 0 ] && [[ $out == *"add(1, 2) = 3"* && $out != *WRONG* ]] &&
  ok "the Node calc client calls calc-server over AMQP" || fail "node calc_client: $st $out"
out=$(cd "$here" && node -e '
const rrpc = require(".");
const c = new rrpc.Client({ url: process.argv[1], timeout: 5 });
c.call("nobody", "add", [1, 2]).then(() => process.exit(1), (e) => {
  console.log(e.constructor.name, e.message);
  return c.close();
});' "$url" 2>&1)
[[ $out == Unavailable*"no queue"* ]] && ok "a Node call to a service with no queue: Unavailable" || fail "no queue: $out"

# ---- the registry: rrpc ls and info see the Node server, until it stops ------------
out=$("$rrpc" ls --url "$url" 2>&1)
grep -Eq '^nodecalc +1 +1 ' <<<"$out" && ok "rrpc ls lists the Node server (1 worker, 1 thread)" ||
  fail "rrpc ls: $out"
out=$("$rrpc" info --url "$url" nodecalc 2>&1)
[[ $out == *"service nodecalc: registered"* && $out == *" $nodecalc_pid "* && $out == *node-* ]] &&
  [[ $out == *forward* && $out == *rpc.discover* ]] &&
  ok "rrpc info nodecalc: the Node worker (its pid, version) and its methods" || fail "rrpc info: $out"
kill -TERM "$nodecalc_pid"
wait "$nodecalc_pid" 2>/dev/null
out=$("$rrpc" ls --url "$url" 2>&1)
! grep -q '^nodecalc ' <<<"$out" && [[ $("$rrpc" info --url "$url" --json nodecalc) == *'"registered":false'* ]] &&
  ok "the stopped Node server is gone from rrpc ls and info at once" || fail "after SIGTERM: $out"
# tests/amqp/definitions.json (ctest sets RRPC_RABBITMQ_DEFINITIONS): user
# calc-server may use only the queue calc in vhost rrpc, not the registry's names.
if [ -n "${RRPC_RABBITMQ_DEFINITIONS:-}" ]; then
  hostport=${url#amqp://*@}
  hostport=${hostport%%/*}
  spawn acl node "$here/calc_server.js" --url "amqp://calc-server:calc-secret@$hostport/rrpc" --service calc
  wait_until 10 grep -q "serving queue 'calc' over AMQP" "$test_dir/acl.log" &&
    grep -q "not in the registry.*ACCESS_REFUSED" "$test_dir/acl.log" &&
    [ "$("$rrpc" call --url "amqp://caller:caller-secret@$hostport/rrpc" calc add '[20, 22]' 2>&1)" = 42 ] &&
    ok "ACL: refused the registry's names, the Node server serves unregistered and says why" ||
    fail "ACL: $(tail -3 "$test_dir/acl.log")"
fi
# ---- sharing a queue with C, dead letters, reliable redelivery (PROTOCOL.md 12) ---------
spawn crel "$build/calc-server" --url "$url" --service nodeshared --workers 1 --reliable
wait_until 10 grep -q "serving queue 'nodeshared'" "$test_dir/crel.log" || die "calc-server --reliable did not start"
spawn noderel node "$here/calc_server.js" --url "$url" --service nodeshared --reliable
noderel_pid=$spawned
wait_until 15 grep -q "serving queue 'nodeshared' over AMQP (reliable" "$test_dir/noderel.log" &&
  (for i in 1 2 3 4; do [ "$("$rrpc" call --url "$url" nodeshared add "[$i, 1]" 2>&1)" = $((i + 1)) ] || exit 1; done) &&
  grep -Eq '^nodeshared +2 ' <<<"$("$rrpc" ls --url "$url" 2>&1)" &&
  ok "a Node reliable worker and calc-server --reliable serve one durable queue" ||
  fail "shared queue: $(tail -3 "$test_dir/noderel.log"; "$rrpc" ls --url "$url" 2>&1)"
kill -TERM "$noderel_pid"
wait "$noderel_pid" 2>/dev/null
# A reliable Node worker killed mid-call: the broker gives the message to the next one.
spawn nodek1 node "$here/calc_server.js" --url "$url" --service nodekill --reliable
nodek1_pid=$spawned
wait_until 15 grep -q "serving queue 'nodekill'" "$test_dir/nodek1.log" || die "nodekill did not start"
spawn killcall "$rrpc" call --url "$url" --timeout 20 nodekill sleep '[600]'
killcall_pid=$spawned
sleep 0.3
kill -KILL "$nodek1_pid"
wait "$nodek1_pid" 2>/dev/null
spawn nodek2 node "$here/calc_server.js" --url "$url" --service nodekill --reliable
wait "$killcall_pid"
st=$?
[ "$st" = 0 ] && [ "$(cat "$test_dir/killcall.log")" = 600 ] &&
  ok "a reliable Node worker killed mid-call (SIGKILL): redelivered to the next one" ||
  fail "SIGKILL mid-call: status $st, $(cat "$test_dir/killcall.log"), $(tail -3 "$test_dir/nodek2.log")"
# Bad input, to the reliable worker that took over: kept as the C server keeps it.
/usr/bin/python3 -c 'import pika, sys
c = pika.BlockingConnection(pika.URLParameters(sys.argv[1])); ch = c.channel()
ch.basic_publish("", "nodekill", b"{not json", pika.BasicProperties(correlation_id="bad1"))
ch.basic_publish("", "nodekill", b"{\"jsonrpc\": \"2.0\", \"method\": 1, \"id\": null}")
c.close()' "$url"
wait_until 5 grep -q "no reply key" <<<"$("$rrpc" dead --url "$url" nodekill 2>&1)"
out=$("$rrpc" dead --url "$url" nodekill 2>&1)
[[ $out == *"parse error"* && $out == *"no reply key"* ]] &&
  [[ $("$rrpc" info --url "$url" --json nodekill) == *'"dead":2'* ]] &&
  ok "bad input to a Node worker lands in nodekill:dead with its reason" || fail "rrpc dead nodekill: $out"

finish
