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
peer=Node
peer_cmd=(node "$here/calc_server.js")
peer_wait=15
# shellcheck source=tests/lib/amqp_peer.sh
. "$root/tests/lib/amqp_peer.sh"

# ---- the package's suite ------------------------------------------------------
if (cd "$here" && node --test --test-concurrency=1 test/amqp.test.js test/amqp_registry.test.js) \
  >"$test_dir/suite.log" 2>&1; then
  ok "node --test test/amqp.test.js test/amqp_registry.test.js: $(grep -E '^# (pass|fail|skipped)' "$test_dir/suite.log" | tr '\n' ' ')"
else
  cat "$test_dir/suite.log" >&2
  fail "node --test test/amqp.test.js test/amqp_registry.test.js"
fi

# ---- rrpc call (C) against the Node calc server ----------------------------
c_server ccalc ccalc
peer_server nodecalc nodecalc
nodecalc_pid=$spawned
says nodecalc 10 "serving queue 'nodecalc'" || die "the Node calc server did not start"
c_calls nodecalc
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
registry nodecalc "$nodecalc_pid" forward rpc.discover
acl
# ---- sharing a queue with C, dead letters, reliable redelivery (PROTOCOL.md 12) ---------
shared_queue nodeshared
redelivery nodekill
# Bad input, to the reliable worker that took over: kept as the C server keeps it.
dead_letters nodekill

finish
