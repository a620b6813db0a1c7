#!/usr/bin/env bash
# test_amqp_broker.sh -- rrpc over RabbitMQ when the broker itself fails, on
# the private node of tests/harness/with-rabbitmq.sh:
#   * a paused broker (SIGSTOP of its beam.smp, later SIGCONT): the async
#     and sync clients keep their deadlines and the async client's loop keeps
#     running, the heartbeat declares the links dead, clients and a
#     calc-server reconnect once the broker is back and serve again
#     (test_amqp_stall.c says what it checks on the clients' side);
#   * a handler that runs longer than the broker's heartbeat timeout keeps
#     its worker's link (the server's keeper sends heartbeats meanwhile);
#   * a broker killed with kill -9 and started again on the same data, with
#     a reliable server and callers in flight: both reconnect by
#     themselves, every call gets its right answer (resend on reconnect; no
#     deadline runs out here), each call returns once, none is lost; and 20
#     notifications the broker confirmed while the worker was frozen
#     (SIGSTOP), published once, are recovered from its disk and run.
# Usage: with-rabbitmq.sh test_amqp_broker.sh BUILD_DIR TEST_AMQP_STALL
set -u
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
build=$1
stall_bin=$2
url=$RRPC_TEST_AMQP_URL
beam=$(cat "$RRPC_TEST_AMQP_PIDFILE") || die "no pid file: $RRPC_TEST_AMQP_PIDFILE"
here=$(cd "$(dirname "$0")" && pwd)
tool() { /usr/bin/python3 "$here/amqp_tool.py" "$url" "$@"; }

# ---- a paused broker ----------------------------------------------------------
# The server's heartbeat is 1 s: the broker closes a link silent for 2-3 s.
spawn calc "$build/calc-server" --url "$url?heartbeat=1" --service calc --workers 2
calc=$spawned
wait_until 10 grep -q "serving queue 'calc'" "$test_dir/calc.log" || die "calc-server did not start"
if "$stall_bin" "$beam" >"$test_dir/stall.out" 2>"$test_dir/stall.err"; then
  ok "a paused broker: $(grep '^#' "$test_dir/stall.out" | sed 's/^# //' | paste -sd ';' -)"
else
  fail "test_amqp_stall: $(cat "$test_dir/stall.out") $(tail -20 "$test_dir/stall.err")"
fi
kill -CONT "$beam" 2>/dev/null # whatever happened above
grep -q "link lost" "$test_dir/calc.log" && grep -q "reconnected" "$test_dir/calc.log" &&
  out=$("$build/rrpc" call --url "$url" --timeout 5 calc add '[20, 22]' 2>&1) && [ "$out" = 42 ] &&
  ok "calc-server found the paused broker dead (heartbeat), reconnected and serves again" ||
  fail "calc-server and the paused broker: $out; $(grep -E 'link lost|reconnected' "$test_dir/calc.log" | head -4)"

# ---- a handler longer than the heartbeat timeout --------------------------------
lost_before=$(grep -c "link lost" "$test_dir/calc.log")
started=$(now_ms)
out=$("$build/rrpc" call --url "$url?heartbeat=1" --timeout 15 calc sleep '[4000]' 2>&1)
took=$(($(now_ms) - started))
lost_after=$(grep -c "link lost" "$test_dir/calc.log")
[ "$out" = 4000 ] && [ "$lost_after" = "$lost_before" ] &&
  ok "a 4 s handler with a 1 s heartbeat keeps its link (answered in ${took} ms)" ||
  fail "4 s handler, heartbeat 1: $out after ${took} ms; $(grep 'link lost' "$test_dir/calc.log" | tail -2)"
kill "$calc"
wait "$calc" 2>/dev/null

# ---- kill -9 of the broker, and a restart --------------------------------------
# One worker thread, 60 ms per call, six callers: requests wait in the
# durable queue when the node dies.
spawn w1 "$build/tests/chaos_worker" --redis "$url" --service k9 --reliable --workers 1 --effects-log
w1=$spawned
wait_until 10 grep -q "serving queue" "$test_dir/w1.log" || die "chaos_worker did not start: $(tail -2 "$test_dir/w1.log")"
spawn caller "$build/tests/chaos_caller" --redis "$url" --service k9 --run k9 --threads 6 \
  --seconds 9 --timeout 20 --work-ms 60 --reliable --out "$test_dir/k9.out"
caller=$spawned
sleep 2
# The worker freezes (its message in hand unacked): calls and 20 confirmed
# notifications wait in the durable queue when the node dies.
kill -STOP "$w1"
confirmed=$(tool confirm k9 '{"jsonrpc": "2.0", "method": "effect", "params": ["n9-{i}", {i}]}' 20)
before=$(tool count k9)
kill -9 "$beam" || fail "kill -9 $beam"
killed=$(now_ms)
sleep 0.5
"$RRPC_TEST_AMQP_START" || die "the node did not start again: $(tail -5 "$(dirname "$RRPC_TEST_AMQP_PIDFILE")/restarts.log")"
restarted=$(($(now_ms) - killed))
after=$(tool count k9)
kill -CONT "$w1"
wait "$caller"
wait_until 10 grep -q "reconnected" "$test_dir/w1.log"
notes_run() { [ "$(grep -c '^effect n9-' "$test_dir/w1.log")" -ge 20 ]; }
wait_until 10 notes_run
notes=$(grep '^effect n9-' "$test_dir/w1.log" | awk '{print $2}' | sort -u | wc -l)
echo "# kill -9: $confirmed notifications confirmed; the queue (ready consumers) before the kill: $before, after the restart: $after; $notes of them run"
[ "$confirmed" = 20 ] && [ "$notes" = 20 ] &&
  ok "kill -9: the 20 notifications the broker confirmed survived it and ran once the worker was back" ||
  fail "kill -9: $confirmed confirmed, $notes run (queue before $before, after $after)"
k9=$test_dir/k9.out
calls=$(wc -l <"$k9")
right=$(awk '$5 == 1' "$k9" | wc -l)
timeouts=$(awk '$2 == -7' "$k9" | wc -l)
other=$(awk '$5 != 1 && $2 != -7' "$k9" | wc -l)
twice=$(awk '{print $1}' "$k9" | sort | uniq -d | wc -l)
grep '^effect ' "$test_dir/w1.log" | awk '{print $2}' | sort >"$test_dir/effects"
no_effect=$(awk '$5 == 1 {print $1}' "$k9" | sort | comm -23 - <(sort -u "$test_dir/effects") | wc -l)
dups=$(uniq -d "$test_dir/effects" | wc -l)
# Calls that lived through the outage (a call takes 60 ms otherwise).
through=$(awk '$4 > 1' "$k9" | wc -l)
summary="$calls calls, $right right, $timeouts timed out, $other other errors, $through through the outage (> 1 s), $dups run twice, node back in ${restarted} ms"
echo "# kill -9: $summary"
[ "$calls" -gt 20 ] && [ "$right" = "$calls" ] && [ "$twice" = 0 ] && [ "$no_effect" = 0 ] &&
  [ "$through" -ge 1 ] && grep -q "reconnected" "$test_dir/w1.log" &&
  ok "kill -9 of the broker and a restart: $summary; 0 lost" ||
  fail "kill -9: $summary; $no_effect answered without effect, $twice ids twice; $(awk '$5 != 1' "$k9" | head -3)"
finish
