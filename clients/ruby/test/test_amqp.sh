#!/usr/bin/env bash
# test_amqp.sh -- the Ruby peer over RabbitMQ (PROTOCOL.md 12), against the
# private node of tests/harness/with-rabbitmq.sh ($RRPC_TEST_AMQP_URL), in
# one broker start (ctest ruby_amqp):
#   * the peer's own suite, test/test_amqp.rb (calls, errors, fail fast,
#     expiration, cancel, raw bodies, notifications, redelivery, refusals);
#   * interop with the C side: rrpc call/describe and a tutorial-style pika
#     caller against calc_server.rb; calc_client.rb against calc-server;
#     forward hops Ruby -> C and C -> Ruby;
#   * after the broker closes every connection, the Ruby server and an idle
#     Ruby client work again (bunny's recovery);
#   * the registry: test/test_amqp_registry.rb (the answers: record,
#     counters, per-method stats; heartbeat off), and `rrpc ls`/`rrpc info`
#     list calc_server.rb with its methods (after the break too) and lose it
#     when it stops; a user without the registry's names
#     (tests/amqp/definitions.json) serves unregistered;
#   * the queue shared with C: a Ruby --reliable worker and calc-server
#     --reliable serve one durable queue (test_amqp.rb: a plain one refuses
#     it); bad input lands in <service>:dead (`rrpc dead`); a reliable Ruby
#     worker killed mid-call (SIGKILL) leaves its message to the next one.
# Usage: with-rabbitmq.sh test_amqp.sh BUILD_DIR
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
# shellcheck source=tests/lib/common.sh
. "$root/tests/lib/common.sh"
build=$(cd "${1:?usage: test_amqp.sh BUILD_DIR}" && pwd)
rrpc=$build/rrpc
url=$RRPC_TEST_AMQP_URL
ruby_dir=$root/clients/ruby
peer=Ruby
peer_cmd=(ruby "$ruby_dir/calc_server.rb")
peer_wait=15
# shellcheck source=tests/lib/amqp_peer.sh
. "$root/tests/lib/amqp_peer.sh"

# ---- servers, started while the suite runs --------------------------------------
peer_server rbcalc rbcalc
rbcalc_pid=$spawned
spawn calc "$build/calc-server" --url "$url" --service calc --workers 1

# ---- the peer's own suite ------------------------------------------------------
if (cd "$ruby_dir" && ruby -Ilib -Itest -e 'ARGV.each { |f| require_relative f }' test/test_amqp.rb \
  test/test_amqp_registry.rb) >"$test_dir/suite.log" 2>&1 &&
  grep -q ' 0 failures, 0 errors, 0 skips' "$test_dir/suite.log"; then
  ok "test_amqp.rb, test_amqp_registry.rb: $(grep -o '[0-9]* runs, [0-9]* assertions' "$test_dir/suite.log")"
else
  fail "test_amqp.rb"
  tail -40 "$test_dir/suite.log"
fi

# ---- the Ruby server, called from C ---------------------------------------------
says rbcalc 15 "serving queue 'rbcalc'" || die "calc_server.rb did not start"
says calc 15 "serving queue 'calc'" || die "calc-server did not start"
c_calls rbcalc
out=$("$rrpc" describe --url "$url" rbcalc 2>&1)
[[ $out == *"version ruby-"* && $out == *multiply* ]] && ok "rrpc describe -> Ruby server (rpc.discover)" ||
  fail "describe: $out"
out=$(/usr/bin/python3 "$root/tests/amqp/tutorial_client.py" "$url" rbcalc 'not JSON' 2>&1)
[[ $out == *'"code":-32700'* && $out == *'"id":null'* ]] &&
  ok "a tutorial-style pika caller -> Ruby server: -32700 at reply_to" || fail "tutorial: $out"

# ---- the Ruby client, calling C ----------------------------------------------------
out=$(ruby "$ruby_dir/calc_client.rb" --url "$url" --service calc 2>&1)
[ $? = 0 ] && ok "calc_client.rb -> calc-server over AMQP" || fail "calc_client.rb: $out"
out=$(RRPC_URL=$url REDIS_URL=redis://127.0.0.1:1 ruby -I"$ruby_dir/lib" -e \
  'require "rrpc"; puts RRPC::Client.new.call("calc", "multiply", 6, 7)' 2>&1)
[ "$out" = 42 ] && ok "Ruby client: \$RRPC_URL before \$REDIS_URL" || fail "RRPC_URL: $out"

# ---- hops across both -------------------------------------------------------------
out=$("$rrpc" call --url "$url" rbcalc forward '{"service": "calc", "method": "add", "params": [4, 5]}' 2>&1)
[ "$out" = 9 ] && ok "C -> Ruby server -> (Ruby client) -> calc-server" || fail "Ruby forward: $out"
out=$("$rrpc" call --url "$url" calc forward '{"service": "rbcalc", "method": "add", "params": [5, 6]}' 2>&1)
[ "$out" = 11 ] && ok "C -> calc-server -> (C client) -> Ruby server" || fail "C forward: $out"

# ---- the broker closes every connection: both mend their links ----------------------
"$RRPC_TEST_AMQP_CTL" close_all_connections test >/dev/null 2>&1 || fail "rabbitmqctl close_all_connections"
rb_add() { [ "$("$rrpc" call --url "$url" --timeout 1 rbcalc add '[2, 2]' 2>/dev/null)" = 4 ]; }
wait_until 15 rb_add && grep -q reconnected "$test_dir/rbcalc.log" &&
  ok "after the broker closed every connection the Ruby server serves again (and says so)" ||
  fail "Ruby server after close_all_connections: $(tail -3 "$test_dir/rbcalc.log")"
# calc-server's forward client is a C one; rbcalc's forward client (Ruby) was idle through the break.
fwd() {
  [ "$("$rrpc" call --url "$url" --timeout 2 rbcalc forward \
    '{"service": "calc", "method": "add", "params": [1, 1]}' 2>/dev/null)" = 2 ]
}
wait_until 15 fwd && ok "an idle Ruby client (forward's) mends its link after the break" ||
  fail "Ruby forward after the break: $("$rrpc" call --url "$url" rbcalc forward \
    '{"service": "calc", "method": "add", "params": [1, 1]}' 2>&1)"

# ---- sharing a queue with C, dead letters, reliable redelivery (PROTOCOL.md 12) ---------
shared_queue rbshared
redelivery rbkill
# Bad input, to the reliable worker that took over: kept as the C server keeps it.
dead_letters rbkill

# ---- the registry: rrpc ls and info see the Ruby server (rejoined after the break) ----
seen() { "$rrpc" ls --url "$url" | grep -Eq '^rbcalc +1 +1 '; }
wait_until 5 seen # registry checks it once more
registry rbcalc "$rbcalc_pid" multiply rpc.discover
acl
finish
