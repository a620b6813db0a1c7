#!/usr/bin/env bash
# test_amqp_reliable.sh -- the guarantees rrpc takes from RabbitMQ's own
# mechanisms, against the private node of tests/harness/with-rabbitmq.sh:
#   * reliable mode: a worker killed (-9) mid-call leaves its message
#     unacked, another worker runs it and the caller gets the answer;
#   * dedup: a copy of an answered call (same correlation_id) is answered
#     from the process's memory, not run again;
#   * a request redelivered max_deliveries times becomes a dead letter
#     with the reason in the header x-rrpc-reason;
#   * a notification whose body is not JSON is a dead letter, not dropped;
#     a request that expired in the queue is dead-lettered by the broker;
#   * the queue is durable with rrpc's arguments, and a plain
#     (tutorial-style) declaration of it is refused; a server asked for
#     other settings than the queue has says why and exits (no hang);
#   * max_queue: x-max-length with reject-publish, the caller gets
#     "overloaded" (exit 7) from the broker's basic.nack;
#   * fail fast: a queue without consumers fails the call at once (exit 6);
#   * a broker restart (stop_app/start_app): the reliable server and a
#     resending caller (chaos_caller) come back; no call is lost.
# Usage: with-rabbitmq.sh test_amqp_reliable.sh BUILD_DIR
set -u
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
build=$1
rrpc=$build/rrpc
calc=$build/calc-server
url=$RRPC_TEST_AMQP_URL
ctl=$RRPC_TEST_AMQP_CTL
here=$(cd "$(dirname "$0")" && pwd)
tool() { /usr/bin/python3 "$here/amqp_tool.py" "$url" "$@"; }
counts_are() { [ "$(tool count "$1")" = "$2" ]; } # QUEUE "READY CONSUMERS"
no_consumer() { [[ "$(tool count "$1")" == *" 0" ]]; }
serve() { # NAME ARGS...: a calc-server, waited for
  local name=$1
  shift
  spawn "$name" "$calc" --url "$url" --workers 1 "$@"
  wait_until 10 grep -q "serving queue" "$test_dir/$name.log" || die "$name did not start: $(tail -2 "$test_dir/$name.log")"
}

# ---- a worker killed mid-call: its message goes to another worker ---------
serve a1 --service rel --reliable
a1=$spawned
"$rrpc" call --url "$url" --timeout 20 rel sleep '[2500]' >"$test_dir/killed.out" 2>&1 &
call_pid=$!
sleep 0.8 # a1 holds it, unacked
serve a2 --service rel --reliable
kill -9 "$a1"
started=$(now_ms)
wait "$call_pid"
st=$?
[ "$st" = 0 ] && [ "$(cat "$test_dir/killed.out")" = 2500 ] &&
  ok "reliable: a worker killed mid-call, another ran it ($(($(now_ms) - started)) ms later)" ||
  fail "killed mid-call: status $st, $(cat "$test_dir/killed.out")"

# ---- dedup: the same correlation_id twice runs once ------------------------
body='{"jsonrpc": "2.0", "method": "sleep", "params": [3000], "id": 1}'
first=$(tool call rel "$body" corr-dedup-1 5)
started=$(now_ms)
second=$(tool call rel "$body" corr-dedup-1 5)
took=$(($(now_ms) - started))
[ "$first" = "$second" ] && [[ $first == *'"result":3000'* ]] && [ "$took" -lt 2000 ] &&
  ok "dedup: a copy of an answered call is answered from memory (${took} ms, not 3000)" ||
  fail "dedup: $first / $second in $took ms"

# ---- queue declarations ----------------------------------------------------
out=$(tool declare rel)
[[ $out == *406* && $out == *PRECONDITION_FAILED* ]] &&
  ok "the reliable queue is durable with arguments: a plain declaration is refused" ||
  fail "plain declare of rel: $out"
out=$(timeout 15 "$calc" --url "$url" --workers 1 --service rel 2>&1)
st=$?
[ "$st" != 0 ] && [ "$st" != 124 ] && [[ $out == *"exists with other settings"* ]] &&
  ok "a server asked for other settings than the queue has says why and exits" ||
  fail "mismatch: status $st, $(tail -c 400 <<<"$out")"

# ---- dead letters ----------------------------------------------------------
tool publish rel 'not JSON at all'
wait_until 5 grep -q "dead letter: parse error" "$test_dir/a2.log" || true
serve b1 --service rel1 --reliable --max-deliveries 1
b1=$spawned
"$rrpc" call --url "$url" --timeout 2 rel1 sleep '[3000]' >/dev/null 2>&1 &
call_pid=$!
sleep 0.8 # b1 holds it
serve b2 --service rel1 --reliable --max-deliveries 1
kill -9 "$b1"
wait "$call_pid"
# An expired request: rel1's only worker is busy for 1.2 s, a 0.5 s call waits behind it.
"$rrpc" call --url "$url" --timeout 5 rel1 sleep '[1200]' >/dev/null 2>&1 &
busy_pid=$!
sleep 0.3
"$rrpc" call --url "$url" --timeout 0.5 rel1 add '[1, 1]' >/dev/null 2>&1
wait "$busy_pid"
dead=$(tool dead rel:dead; tool dead rel1:dead)
grep -q "^parse error.*not JSON at all" <<<"$dead" &&
  ok "a notification that is not JSON is a dead letter (x-rrpc-reason)" || fail "dead (parse): $dead"
grep -q "^taken by 1 workers that died (max_deliveries 1).*sleep" <<<"$dead" &&
  ok "redelivered max_deliveries times: a dead letter" || fail "dead (deliveries): $dead"
grep -q "^x-death expired.*add" <<<"$dead" &&
  ok "a request that expired in the queue is dead-lettered by the broker (x-death)" ||
  fail "dead (expired): $dead"

# ---- max_queue: the broker refuses, the caller is told "overloaded" -----------
serve m1 --service mq --max-queue 1
m1=$spawned
# Published in this order, 20 ms apart (notifications: no race between
# callers): the sleep runs, at most once acks on receipt, so the worker's
# prefetch window (16, server_amqp.c) holds the first adds (unacked, not
# counted by x-max-length), the next is the queue's one, and the rest are
# refused.
tool publish mq '{"jsonrpc": "2.0", "method": "sleep", "params": [8000]}'
tool publish mq '{"jsonrpc": "2.0", "method": "add", "params": [1, 1]}' 20
wait_until 10 counts_are mq "1 1" || fail "max_queue: the queue did not fill: $(tool count mq)"
out=$("$rrpc" call --url "$url" --timeout 10 mq add '[2, 2]' 2>&1)
st=$?
[ "$st" = 7 ] && [[ $out == *overloaded* ]] && ok "max_queue: a full queue refuses (basic.nack), exit 7" ||
  fail "max_queue: status $st, $out"

# ---- fail fast ------------------------------------------------------------
kill -9 "$m1" # its sleep is lost (at most once); the adds stay queued
wait_until 5 no_consumer mq
started=$(now_ms)
out=$("$rrpc" call --url "$url" --timeout 10 mq add '[1, 2]' 2>&1)
st=$?
took=$(($(now_ms) - started))
[ "$st" = 6 ] && [ "$took" -lt 2000 ] && [[ $out == *"no worker"* ]] &&
  ok "fail fast: a queue without consumers (${took} ms, exit 6)" || fail "fail fast: $st in $took ms: $out"

# ---- a broker restart under load ---------------------------------------------
spawn w1 "$build/tests/chaos_worker" --redis "$url" --service crel --reliable --workers 2 --effects-log
wait_until 10 grep -q "serving queue" "$test_dir/w1.log" || die "chaos_worker did not start: $(tail -2 "$test_dir/w1.log")"
spawn caller "$build/tests/chaos_caller" --redis "$url" --service crel --run restart --threads 2 \
  --seconds 8 --timeout 25 --work-ms 20 --reliable --out "$test_dir/calls.out"
caller=$spawned
sleep 1
"$ctl" -q stop_app >/dev/null 2>&1 || fail "rabbitmqctl stop_app"
sleep 1
"$ctl" -q start_app >/dev/null 2>&1 || fail "rabbitmqctl start_app"
wait_until 10 grep -q "reconnected" "$test_dir/w1.log"
wait "$caller"
calls=$(wc -l <"$test_dir/calls.out")
bad=$(awk '$2 != 0 || $5 != 1' "$test_dir/calls.out" | wc -l)
dups=$(grep '^effect ' "$test_dir/w1.log" | sort | uniq -d | wc -l)
reconnected=$(grep -c "reconnected" "$test_dir/w1.log")
# Calls that lived through the restart (waited, then got their answer).
through=$(awk '$2 == 0 && $5 == 1 && $4 > 0.5' "$test_dir/calls.out" | wc -l)
[ "$calls" -gt 20 ] && [ "$bad" = 0 ] && [ "$reconnected" -ge 1 ] && [ "$through" -ge 1 ] &&
  ok "a broker restart: $calls calls ($through through the restart), 0 lost, $dups duplicated" ||
  fail "broker restart: $calls calls, $bad failed ($(awk '$2 != 0' "$test_dir/calls.out" | head -3)), reconnected $reconnected, $through through the restart"
[ "$dups" = 0 ] || fail "broker restart: $dups calls ran twice in one server process"
finish
