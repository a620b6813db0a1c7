#!/usr/bin/env bash
# test_amqp_ops.sh -- the operations commands over RabbitMQ (PROTOCOL.md
# section 12, "Operations over AMQP"), against the private node of
# tests/harness/with-rabbitmq.sh ($RRPC_TEST_AMQP_URL):
#   * two calc-servers over amqp:// answer the registry: rrpc ls, info,
#     stats (calls counted), top and ping see them, with their methods;
#   * a stopped worker (SIGTERM) and a killed one (kill -9) disappear at once;
#   * dead letters: requests that expired in a queue with a dead-letter
#     exchange, and one filed with rrpc's headers, are listed (reason, ref)
#     without being taken, one is requeued by ref
#     (back in the queue as its caller sent it), and purged;
#   * forget and limits set refuse with their reason;
#   * rrpc web over amqp:// serves its API, /metrics and its page (headless
#     Chromium).
# Usage: with-rabbitmq.sh test_amqp_ops.sh BUILD_DIR
set -u
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
build=$1
rrpc=$build/rrpc
calc=$build/calc-server
url=$RRPC_TEST_AMQP_URL
pika_python=/usr/bin/python3
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

spawn one "$calc" --url "$url" --service calc --workers 2
one_pid=$spawned
spawn two "$calc" --url "$url" --service calc --workers 1
two_pid=$spawned
spawn other "$calc" --url "$url" --service other --workers 1
other_pid=$spawned
for s in one two other; do
  wait_until 10 grep -q "serving queue" "$test_dir/$s.log" || die "$s did not start"
done
for i in 1 2 3 4 5; do "$rrpc" call --url "$url" calc add "[$i, 1]" >/dev/null || fail "call $i"; done
"$rrpc" call --url "$url" calc divide '[1, 0]' >/dev/null 2>&1

# ---- ls, info, stats, top, ping ------------------------------------------------
out=$("$rrpc" ls --url "$url" 2>&1)
row=$(grep '^calc ' <<<"$out")
[[ $(awk '{print $2, $3}' <<<"$row") == "2 3" ]] && grep -q '^other ' <<<"$out" &&
  ok "rrpc ls: calc has 2 workers, 3 threads; other is listed" || fail "ls: $out"
[[ $(awk '{print $7, $8}' <<<"$row") == "6 1" ]] && ok "rrpc ls counts calc's calls and errors: 6, 1" ||
  fail "ls calls/errors: $row"
out=$("$rrpc" info --url "$url" calc 2>&1)
[[ $out == *"service calc: registered, queue 0"* && $out == *"pid $one_pid"* || $out == *" $one_pid "* ]] &&
  [[ $out == *" $two_pid "* && $out == *"rpc.ping"* && $out == *"add(a, b)"* ]] &&
  ok "rrpc info: both workers (pids) and the methods" || fail "info: $out"
out=$("$rrpc" stats --url "$url" calc 2>&1)
[[ $out == *"2 live worker(s)"* ]] && grep -Eq '^add +5 +0 ' <<<"$out" && grep -Eq '^divide +1 +1 ' <<<"$out" &&
  ok "rrpc stats: add 5 calls, divide 1 error" || fail "stats: $out"
out=$("$rrpc" stats --url "$url" --json nobody 2>&1)
[[ $out == *'"workers":0'* ]] && ok "rrpc stats of a service nobody serves: no workers" || fail "stats nobody: $out"
out=$("$rrpc" top --url "$url" --iterations 1 2>&1)
[[ $out == *calc* && $out == *other* ]] && ok "rrpc top --iterations 1 shows both services" || fail "top: $out"
out=$("$rrpc" ping --url "$url" calc 2>&1) && [[ $out == *"reply from calc"* ]] &&
  ok "rrpc ping over AMQP" || fail "ping: $out"

# ---- a stopped and a killed worker disappear -----------------------------------
kill -TERM "$two_pid"
wait "$two_pid" 2>/dev/null
out=$("$rrpc" info --url "$url" --json calc 2>&1)
[[ $out != *"\"pid\":$two_pid"* && $out == *"\"pid\":$one_pid"* ]] &&
  ok "a stopped worker is gone from rrpc info at once" || fail "after SIGTERM: $out"
kill -9 "$other_pid"
wait "$other_pid" 2>/dev/null
gone() { ! "$rrpc" ls --url "$url" | grep -q '^other '; }
wait_until 5 gone && ok "a killed worker (kill -9) is gone from rrpc ls" || fail "after kill -9: $("$rrpc" ls --url "$url")"

# ---- dead letters --------------------------------------------------------------
# A queue with a dead-letter exchange (as a service's in reliable mode): a
# request that expires there lands in dlq:dead with x-death's reason.
"$pika_python" - "$url" <<'PY' || fail "seeding a dead letter"
import json, sys, time, pika
ch = pika.BlockingConnection(pika.URLParameters(sys.argv[1])).channel()
ch.queue_declare("dlq:dead")
ch.queue_declare("dlq", arguments={"x-dead-letter-exchange": "",
                                   "x-dead-letter-routing-key": "dlq:dead"})
for i in (1, 2):
    body = json.dumps({"jsonrpc": "2.0", "method": "add", "params": [i, 40], "id": i})
    ch.basic_publish("", "dlq", body, pika.BasicProperties(
        content_type="application/json", expiration="1", reply_to="dlq-answers", correlation_id=str(i)))
ch.queue_declare("dlq-answers")
# One as an rrpc worker files it: its reason and time in rrpc's headers.
ch.basic_publish("", "dlq:dead", '{"jsonrpc": "2.0", "method": "nosuch", "id": 3}',
                 pika.BasicProperties(headers={"x-rrpc-reason": "taken by 3 workers that died",
                                               "x-rrpc-time": "1764057600.250"}))
time.sleep(0.5)
PY
out=$("$rrpc" dead --url "$url" dlq 2>&1)
[[ $(grep -c expired <<<"$out") == 2 && $out == *'[1, 40]'* && $out == *'[2, 40]'* ]] &&
  [[ $out == *"taken by 3 workers that died"* ]] &&
  ok "rrpc dead lists 2 expired dead letters and one an rrpc worker filed" || fail "dead list: $out"
out=$("$rrpc" dead --url "$url" dlq 2>&1)
[[ $(grep -c expired <<<"$out") == 2 ]] && ok "listing leaves them there" || fail "dead list again: $out"
out=$("$rrpc" dead --url "$url" --json dlq 2>&1)
[[ $out == *'"time":1764057600.25'* ]] && ok "its time is x-rrpc-time's" || fail "dead --json: $out"
ref=$("$rrpc" dead --url "$url" --json dlq | "$pika_python" -c 'import json, sys
print([d["ref"] for d in json.load(sys.stdin) if "[2, 40]" in d["message"]][0])')
out=$("$rrpc" dead --url "$url" dlq requeue --ref "$ref" 2>&1) || fail "requeue --ref: $out"
# Back in the service's queue with its caller's reply_to and correlation_id
# (no server here: the service's own queue arguments are the server's).
"$pika_python" - "$url" <<'PY' && ok "requeue --ref: that letter is back in dlq, reply_to and correlation_id kept" ||
import sys, pika
ch = pika.BlockingConnection(pika.URLParameters(sys.argv[1])).channel()
m, p, body = ch.basic_get("dlq", auto_ack=True)
sys.exit(0 if body and b'[2, 40]' in body and p.correlation_id == "2" and p.reply_to == "dlq-answers"
         and ch.basic_get("dlq")[0] is None else 1)
PY
  fail "the requeued letter is not in dlq as it was"
out=$("$rrpc" info --url "$url" dlq 2>&1)
[[ $out == *"dead letters 2"* ]] && ok "the others stay (rrpc info: dead letters 2)" || fail "info dlq: $out"
out=$("$rrpc" dead --url "$url" dlq purge 2>&1)
[[ $out == "purged 2 dead letters of dlq" ]] && ok "rrpc dead purge: $out" || fail "purge: $out"

# ---- what has no home in the broker -------------------------------------------
out=$("$rrpc" forget --url "$url" calc 2>&1)
[ $? != 0 ] && [[ $out == *"nothing is stored to forget"* ]] && ok "rrpc forget refuses, saying why" ||
  fail "forget: $out"
out=$("$rrpc" limits --url "$url" calc set '{"add": {"rate": 1}}' 2>&1)
[ $? != 0 ] && [[ $out == *"not supported over AMQP"* ]] && ok "rrpc limits set refuses, saying why" ||
  fail "limits set: $out"

# ---- rrpc web -------------------------------------------------------------------
spawn web "$rrpc" web --url "$url" --listen 127.0.0.1:0
wait_until 10 grep -q "listening on" "$test_dir/web.log" || die "rrpc web did not start: $(cat "$test_dir/web.log")"
web=$(sed -n 's|.*listening on \(http://127.0.0.1:[0-9]*\)/.*|\1|p' "$test_dir/web.log")
out=$(curl -s "$web/api/overview")
[[ $out == *'"service": "calc"'* || $out == *'"service":"calc"'* ]] && ok "rrpc web /api/overview over AMQP" ||
  fail "overview: $out"
out=$(curl -s "$web/api/services/calc")
[[ $out == *'"workers"'* && $out == *"$one_pid"* ]] && ok "rrpc web /api/services/calc: its worker" ||
  fail "service page: $out"
out=$(curl -s "$web/metrics")
grep -q '^rrpc_workers{service="calc"} 1' <<<"$out" && ok "rrpc web /metrics: rrpc_workers{service=\"calc\"} 1" ||
  fail "metrics: $(grep workers <<<"$out")"
if [ -x "$CHROMIUM" ]; then
  dom=$(timeout 30 "$CHROMIUM" --headless --no-sandbox --disable-gpu --virtual-time-budget=5000 \
    --dump-dom "$web/" 2>/dev/null)
  [[ $dom == *calc* ]] && ok "the page, rendered by headless Chromium, shows calc" || fail "chromium: ${dom:0:300}"
else
  fail "chromium is missing (scripts/install-deps.sh installs it)"
fi
finish
