#!/usr/bin/env bash
# test_amqp.sh -- rrpc over RabbitMQ (AMQP 0-9-1), against the private node
# of tests/harness/with-rabbitmq.sh ($RRPC_TEST_AMQP_URL):
#   * calc-server serves over amqp://: rrpc call gets a result, an error
#     result, -32601; a body that is not JSON gets -32700 and an invalid
#     request -32600 at its reply_to (published raw by a tutorial client);
#   * a caller written only from RabbitMQ's RPC tutorial (pika: exclusive
#     callback queue, correlation_id) calls calc-server;
#   * rrpc call calls a tutorial-style pika worker whose queue it declared
#     plainly, and so does calc-server's forward when notified (a message
#     without reply_to runs, unanswered);
#   * a call to a service with no queue fails fast (basic.return);
#   * after the broker closes every connection the workers connect again
#     and an idle client (forward's) mends its link before its next call;
#   * $RRPC_URL is used, a refused login says so with the password masked;
#   * rrpc bench --url amqp:// (sync) makes calls without errors;
#   * a server stopped (SIGTERM) under load runs the prefetch window it
#     holds: no dead letters, no failed calls;
#   * rrpc ping and describe work (calls of rpc.ping and rpc.discover);
#   * what this step lacks is refused, naming AMQP: limits, priorities,
#     calc-server --shards (the operations commands: test_amqp_ops.sh; the
#     async client: test_amqp_async.sh; reliable mode, max_queue, dead
#     letters: test_amqp_reliable.sh).
# Usage: with-rabbitmq.sh test_amqp.sh BUILD_DIR
set -u
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
build=$1
rrpc=$build/rrpc
calc=$build/calc-server
url=$RRPC_TEST_AMQP_URL
pika_python=/usr/bin/python3
here=$(cd "$(dirname "$0")" && pwd)

# ---- calc-server over AMQP, called by rrpc call -----------------------------
spawn calc "$calc" --url "$url" --service calc --workers 2
calc_pid=$spawned
wait_until 10 grep -q "serving queue 'calc'" "$test_dir/calc.log" || die "calc-server did not start"

out=$("$rrpc" call --url "$url" calc add '[1, 2]' 2>&1)
[ "$out" = 3 ] && ok "rrpc call add over AMQP: 3" || fail "rrpc call add: $out"
out=$("$rrpc" call --url "$url" calc divide '[1, 0]' 2>&1)
st=$?
[ "$st" = 1 ] && [[ $out == *"division by zero"* ]] && ok "an error result: exit 1, the service's message" ||
  fail "divide by zero: status $st, $out"
out=$("$rrpc" call --url "$url" calc nosuch '[]' 2>&1)
st=$?
[ "$st" = 1 ] && [[ $out == *-32601* ]] && ok "an unknown method: -32601" || fail "nosuch: status $st, $out"
out=$(RRPC_URL=$url REDIS_URL=redis://127.0.0.1:1 "$rrpc" call calc multiply '[6, 7]' 2>&1)
[ "$out" = 42 ] && ok "\$RRPC_URL comes before \$REDIS_URL" || fail "RRPC_URL: $out"

# ---- raw bodies and a caller written from RabbitMQ's tutorial ---------------
tutorial() { "$pika_python" "$here/tutorial_client.py" "$url" "$@"; }
out=$(tutorial calc '{"jsonrpc": "2.0", "method": "add", "params": [2, 3], "id": 7}')
[ "$out" = '{"jsonrpc":"2.0","result":5,"id":7}' ] && ok "a tutorial-style pika caller calls calc-server" ||
  fail "tutorial caller: $out"
out=$(tutorial calc 'this is not JSON')
[[ $out == *'"code":-32700'* && $out == *'"id":null'* ]] && ok "a body that is not JSON: -32700 to reply_to" ||
  fail "not JSON: $out"
out=$(tutorial calc '{"method": "add"}')
[[ $out == *'"code":-32600'* ]] && ok "an invalid request: -32600 to reply_to" || fail "invalid request: $out"

# ---- rrpc call to a tutorial-style worker (it declared its queue plainly) ---
spawn worker "$pika_python" "$here/tutorial_worker.py" "$url" fibq
wait_until 10 grep -q ready "$test_dir/worker.log" || die "the tutorial worker did not start"
out=$("$rrpc" call --url "$url" fibq fib '[10]' 2>&1)
[ "$out" = 55 ] && ok "rrpc call calls a tutorial-style pika worker: fib(10) = 55" || fail "fib: $out"
# A notification (no reply_to) runs unanswered: calc's forward reaches the worker.
"$rrpc" notify --url "$url" calc forward '{"service": "fibq", "method": "fib", "params": [12]}' &&
  wait_until 5 grep -q "got fib \[12\]" "$test_dir/worker.log" &&
  ok "a notification (no reply_to) runs: forward called the worker" ||
  fail "notification: $(tail -3 "$test_dir/worker.log")"

# ---- fail fast, refused login -------------------------------------------------
started=$(now_ms)
out=$("$rrpc" call --url "$url" --timeout 10 nobody add '[1, 2]' 2>&1)
st=$?
took=$(($(now_ms) - started))
[ "$st" = 6 ] && [ "$took" -lt 2000 ] && [[ $out == *"no queue"* ]] &&
  ok "a service with no queue fails fast (${took} ms, exit 6)" || fail "no queue: status $st in $took ms: $out"
bad=${url/guest:guest@/guest:s3cr3t@}
out=$("$rrpc" call --url "$bad" calc add '[1, 2]' 2>&1)
st=$?
[ "$st" = 4 ] && [[ $out == *ACCESS_REFUSED* ]] && [[ $out != *s3cr3t* ]] &&
  ok "a refused login: exit 4, password masked" || fail "bad login: status $st, $out"

# ---- ping and describe: calls of rpc.ping and rpc.discover through the queue ----
out=$("$rrpc" ping --url "$url" calc 2>&1) && [[ $out == *"reply from calc"* ]] &&
  ok "rrpc ping over AMQP: $out" || fail "ping: $out"
out=$("$rrpc" describe --url "$url" calc 2>&1) && [[ $out == *"9 methods"* ]] &&
  ok "rrpc describe over AMQP (rpc.discover)" || fail "describe: $out"

# ---- bench (sync) -------------------------------------------------------------
out=$("$rrpc" bench --url "$url" --connections 2 --calls 400 calc 2>&1)
[[ $out == *"errors   0"* && $out == *"calls     400"* || $out == *"calls    400 "* ]] &&
  ok "rrpc bench --url amqp:// (sync): $(grep -o '[0-9]* calls/s' <<<"$out")" || fail "bench: $out"

# ---- a worker stopping under load runs its prefetch window, none dead-lettered --
# At most once, each worker holds a window of deliveries (server_amqp.c);
# one that stops cleanly must run them rather than leave them unacked: the
# broker would hand them to the other server marked redelivered, and it
# would file them as dead letters without running them.
spawn win1 "$calc" --url "$url" --service win --workers 2
win1=$spawned
spawn win2 "$calc" --url "$url" --service win --workers 2
wait_until 10 grep -q "serving queue 'win'" "$test_dir/win1.log" &&
  wait_until 10 grep -q "serving queue 'win'" "$test_dir/win2.log" || die "win servers did not start"
"$rrpc" bench --url "$url" --async --connections 2 --window 64 --duration 3 --timeout 10 win \
  >"$test_dir/win_bench.txt" 2>&1 &
win_bench=$!
sleep 1
kill -TERM "$win1"
wait_until 10 sh -c "! kill -0 $win1 2>/dev/null" || fail "calc-server did not stop on SIGTERM"
wait "$win_bench"
dead=$("$pika_python" "$here/amqp_tool.py" "$url" count win:dead)
out=$(cat "$test_dir/win_bench.txt")
[[ $dead == "0 "* && $out == *"errors   0"* ]] &&
  ok "a server stopped under load ran its window: 0 dead letters, bench errors 0" ||
  fail "stop under load: win:dead '$dead'; $out"

# ---- what this step refuses, naming AMQP ---------------------------------------
refused() { # WHAT CMD...: exits nonzero and says "not supported over AMQP yet"
  local what=$1 o s
  shift
  o=$("$@" 2>&1)
  s=$?
  [ "$s" != 0 ] && [[ $o == *"not supported over AMQP yet"* ]] && ok "refused: $what" ||
    fail "$what: status $s, $o"
}
refused "rrpc limits calc clear" "$rrpc" limits --url "$url" calc clear
refused "call --priority high" "$rrpc" call --url "$url" --priority high calc add '[1, 2]'
refused "calc-server --shards 2" timeout 10 "$calc" --url "$url" --service s --shards 2

# ---- links the broker closed: workers and an idle client connect again ---------
# relay's one worker keeps a client (forward's) between calls; the broker
# closes every connection; the workers must come back by themselves and the
# idle client must notice before its next call (needs_mend), not fail it.
spawn relay "$calc" --url "$url" --service relay --workers 1
wait_until 10 grep -q "serving queue 'relay'" "$test_dir/relay.log" || die "relay did not start"
fwd='{"service": "calc", "method": "add", "params": [20, 22]}'
out=$("$rrpc" call --url "$url" relay forward "$fwd" 2>&1)
[ "$out" = 42 ] && ok "forward over AMQP (a client inside a handler): 42" || fail "forward: $out"
"$RRPC_TEST_AMQP_CTL" -q close_all_connections "test: links closed" >/dev/null 2>&1 ||
  fail "rabbitmqctl close_all_connections failed"
wait_until 15 "$rrpc" call --url "$url" --timeout 1 relay echo '[]' &&
  wait_until 15 "$rrpc" call --url "$url" --timeout 1 calc echo '[]' &&
  ok "the workers connected again after the broker closed their links" ||
  fail "workers after close_all_connections: $(tail -3 "$test_dir/relay.log")"
out=$("$rrpc" call --url "$url" relay forward "$fwd" 2>&1)
[ "$out" = 42 ] && ok "the idle forward client mended its closed link before the call" ||
  fail "forward after close: $out"

kill -TERM "$calc_pid"
wait "$calc_pid" 2>/dev/null

# ---- users, vhosts and permissions (SECURITY.md's AMQP recipe) -----------------
# tests/amqp/definitions.json (loaded at boot when ctest sets
# RRPC_RABBITMQ_DEFINITIONS): vhost rrpc; calc-server may configure and read
# only the queue calc and write to the default exchange; caller may only write
# to the default exchange.
if [ -n "${RRPC_RABBITMQ_DEFINITIONS:-}" ]; then
  hostport=${url#amqp://*@}
  hostport=${hostport%%/*}
  srv_url="amqp://calc-server:calc-secret@$hostport/rrpc"
  caller_url="amqp://caller:caller-secret@$hostport/rrpc"
  spawn acl_calc "$calc" --url "$srv_url" --service calc --workers 1
  wait_until 10 grep -q "serving queue 'calc'" "$test_dir/acl_calc.log" ||
    fail "calc-server as user calc-server in vhost rrpc: $(tail -2 "$test_dir/acl_calc.log")"
  # The registry is declared after the queue is served: wait for its line too.
  wait_until 10 grep -q "not in the registry.*ACCESS_REFUSED" "$test_dir/acl_calc.log" &&
    ok "ACL: refused the registry's names, calc-server serves unregistered and says why" ||
    fail "ACL registry: $(tail -2 "$test_dir/acl_calc.log")"
  out=$("$rrpc" call --url "$caller_url" calc add '[20, 22]' 2>&1)
  [ "$out" = 42 ] && ok "ACL: caller (write amq.default only) calls calc in vhost rrpc" ||
    fail "ACL call: $out"
  # vhost / still has the queue calc of the first calc-server, unserved now:
  # no consumer, so the call fails fast (exit 6) instead of waiting there.
  out=$("$rrpc" call --url "$url" --timeout 5 calc add '[1, 2]' 2>&1)
  st=$?
  [ "$st" = 6 ] && [[ $out == *"no worker"* ]] &&
    ok "ACL: vhost rrpc's server does not serve vhost / (its queue there has no consumer: fail fast)" ||
    fail "vhosts: $st $out"
  out=$(timeout 10 "$calc" --url "$srv_url" --service other --workers 1 2>&1)
  [ $? != 0 ] && [[ $out == *ACCESS_REFUSED* && $out == *other* ]] &&
    ok "ACL: calc-server may not serve another queue" || fail "ACL other queue: $out"
  out=$(timeout 10 "$calc" --url "$caller_url" --service calc --workers 1 2>&1)
  [ $? != 0 ] && [[ $out == *ACCESS_REFUSED* ]] && [[ $out != *caller-secret* ]] &&
    ok "ACL: a caller may not serve (consume) calc" || fail "ACL caller serving: $out"
  out=$("$rrpc" call --url "amqp://caller:caller-secret@$hostport/" calc add '[1, 2]' 2>&1)
  st=$?
  [ "$st" = 4 ] && [[ $out == *NOT_ALLOWED* || $out == *ACCESS_REFUSED* ]] &&
    ok "ACL: a user without permissions on vhost / is refused (exit 4)" || fail "vhost /: $st $out"
fi
finish
