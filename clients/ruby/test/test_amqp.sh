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

# ---- servers, started while the suite runs --------------------------------------
spawn rbcalc ruby "$ruby_dir/calc_server.rb" --url "$url" --service rbcalc
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
wait_until 15 grep -q "serving queue 'rbcalc'" "$test_dir/rbcalc.log" || die "calc_server.rb did not start"
wait_until 15 grep -q "serving queue 'calc'" "$test_dir/calc.log" || die "calc-server did not start"
out=$("$rrpc" call --url "$url" rbcalc add '[1, 2]' 2>&1)
[ "$out" = 3 ] && ok "rrpc call -> Ruby server: add = 3" || fail "rrpc call add: $out"
out=$("$rrpc" call --url "$url" rbcalc divide '[1, 0]' 2>&1)
st=$?
[ "$st" = 1 ] && [[ $out == *"division by zero"* ]] && ok "rrpc call -> Ruby server: an error result, exit 1" ||
  fail "divide: status $st, $out"
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
spawn crel "$build/calc-server" --url "$url" --service rbshared --workers 1 --reliable
wait_until 10 grep -q "serving queue 'rbshared'" "$test_dir/crel.log" || die "calc-server --reliable did not start"
spawn rbrel ruby "$ruby_dir/calc_server.rb" --url "$url" --service rbshared --reliable
rbrel_pid=$spawned
wait_until 15 grep -q "serving queue 'rbshared' over AMQP (reliable" "$test_dir/rbrel.log" &&
  (for i in 1 2 3 4; do [ "$("$rrpc" call --url "$url" rbshared add "[$i, 1]" 2>&1)" = $((i + 1)) ] || exit 1; done) &&
  grep -Eq '^rbshared +2 ' <<<"$("$rrpc" ls --url "$url" 2>&1)" &&
  ok "a Ruby reliable worker and calc-server --reliable serve one durable queue" ||
  fail "shared queue: $(tail -3 "$test_dir/rbrel.log"; "$rrpc" ls --url "$url" 2>&1)"
kill -TERM "$rbrel_pid"
wait "$rbrel_pid" 2>/dev/null
# A reliable Ruby worker killed mid-call: the broker gives the message to the next one.
spawn rbk1 ruby "$ruby_dir/calc_server.rb" --url "$url" --service rbkill --reliable
rbk1_pid=$spawned
wait_until 15 grep -q "serving queue 'rbkill'" "$test_dir/rbk1.log" || die "rbkill did not start"
spawn killcall "$rrpc" call --url "$url" --timeout 20 rbkill sleep '[600]'
killcall_pid=$spawned
sleep 0.3
kill -KILL "$rbk1_pid"
wait "$rbk1_pid" 2>/dev/null
spawn rbk2 ruby "$ruby_dir/calc_server.rb" --url "$url" --service rbkill --reliable
wait "$killcall_pid"
st=$?
[ "$st" = 0 ] && [ "$(cat "$test_dir/killcall.log")" = 600 ] &&
  ok "a reliable Ruby worker killed mid-call (SIGKILL): redelivered to the next one" ||
  fail "SIGKILL mid-call: status $st, $(cat "$test_dir/killcall.log"), $(tail -3 "$test_dir/rbk2.log")"
# Bad input, to the reliable worker that took over: kept as the C server keeps it.
/usr/bin/python3 -c 'import pika, sys
c = pika.BlockingConnection(pika.URLParameters(sys.argv[1])); ch = c.channel()
ch.basic_publish("", "rbkill", b"{not json", pika.BasicProperties(correlation_id="bad1"))
ch.basic_publish("", "rbkill", b"{\"jsonrpc\": \"2.0\", \"method\": 1, \"id\": null}")
c.close()' "$url"
wait_until 5 grep -q "no reply key" <<<"$("$rrpc" dead --url "$url" rbkill 2>&1)"
out=$("$rrpc" dead --url "$url" rbkill 2>&1)
[[ $out == *"parse error"* && $out == *"no reply key"* ]] &&
  [[ $("$rrpc" info --url "$url" --json rbkill) == *'"dead":2'* ]] &&
  ok "bad input to a Ruby worker lands in rbkill:dead with its reason" || fail "rrpc dead rbkill: $out"

# ---- the registry: rrpc ls and info see the Ruby server (rejoined after the break) ----
seen() { "$rrpc" ls --url "$url" | grep -Eq '^rbcalc +1 +1 '; }
wait_until 5 seen && ok "rrpc ls lists the Ruby server (1 worker, 1 thread), after the break too" ||
  fail "rrpc ls: $("$rrpc" ls --url "$url" 2>&1)"
out=$("$rrpc" info --url "$url" rbcalc 2>&1)
[[ $out == *"service rbcalc: registered"* && $out == *" $rbcalc_pid "* && $out == *ruby-* ]] &&
  [[ $out == *multiply* && $out == *rpc.discover* ]] &&
  ok "rrpc info rbcalc: the Ruby worker (its pid, version) and its methods" || fail "rrpc info: $out"
kill -TERM "$rbcalc_pid"
wait "$rbcalc_pid" 2>/dev/null
out=$("$rrpc" ls --url "$url" 2>&1)
! grep -q '^rbcalc ' <<<"$out" && [[ $("$rrpc" info --url "$url" --json rbcalc) == *'"registered":false'* ]] &&
  ok "the stopped Ruby server is gone from rrpc ls and info at once" || fail "after SIGTERM: $out"
# tests/amqp/definitions.json (ctest sets RRPC_RABBITMQ_DEFINITIONS): user
# calc-server may use only the queue calc in vhost rrpc, not the registry's names.
if [ -n "${RRPC_RABBITMQ_DEFINITIONS:-}" ]; then
  hostport=${url#amqp://*@}
  hostport=${hostport%%/*}
  spawn acl ruby "$ruby_dir/calc_server.rb" --url "amqp://calc-server:calc-secret@$hostport/rrpc" --service calc
  wait_until 15 grep -q "serving queue 'calc' over AMQP" "$test_dir/acl.log" &&
    grep -q "not in the registry.*ACCESS_REFUSED" "$test_dir/acl.log" &&
    [ "$("$rrpc" call --url "amqp://caller:caller-secret@$hostport/rrpc" calc add '[20, 22]' 2>&1)" = 42 ] &&
    ok "ACL: refused the registry's names, the Ruby server serves unregistered and says why" ||
    fail "ACL: $(tail -3 "$test_dir/acl.log")"
fi
finish
