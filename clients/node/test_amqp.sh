#!/usr/bin/env bash
# test_amqp.sh -- the Node peer over AMQP 0-9-1 (ctest: node_amqp), against
# the private RabbitMQ of tests/harness/with-rabbitmq.sh ($RRPC_TEST_AMQP_URL):
#   * the package's own AMQP suite (node --test test/amqp.test.js): calls,
#     errors, notifications, raw bodies (-32700/-32600 to reply_to), the
#     call's properties, no queue, timeouts, aborts, refusals, $RRPC_URL, a
#     refused login, a redelivered request, reconnecting after the broker
#     closed every connection;
#   * interop with C: `rrpc call --url` and `rrpc describe` against the Node
#     calc server, and the Node calc client against calc-server --url.
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
if (cd "$here" && node --test --test-concurrency=1 test/amqp.test.js) >"$test_dir/suite.log" 2>&1; then
  ok "node --test test/amqp.test.js: $(grep -E '^# (pass|fail|skipped)' "$test_dir/suite.log" | tr '\n' ' ')"
else
  cat "$test_dir/suite.log" >&2
  fail "node --test test/amqp.test.js"
fi

# ---- rrpc call (C) against the Node calc server ----------------------------
spawn ccalc "$build/calc-server" --url "$url" --service ccalc --workers 1
wait_until 10 grep -q "serving queue 'ccalc'" "$test_dir/ccalc.log" || die "calc-server did not start"
spawn nodecalc node "$here/calc_server.js" --url "$url" --service nodecalc
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
finish
