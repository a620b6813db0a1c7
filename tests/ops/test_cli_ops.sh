#!/usr/bin/env bash
# test_cli_ops.sh -- the operator commands against running calc-servers.
#
# Starts two calc-server processes for one service (so the registry has two
# records and stats merge across workers), makes calls, then checks the
# --json output of rrpc ls, info, ping, stats and dead list/requeue/purge,
# that rrpc top renders refreshes, and that a call to the service fails
# fast (exit status 6) once both servers are stopped.
#
# Usage (under tests/harness/with-redis.sh): test_cli_ops.sh BUILD_DIR
set -u
: "${REDIS_URL:?run me under tests/harness/with-redis.sh}"
BUILD=$(cd "${1:?usage: test_cli_ops.sh BUILD_DIR}" && pwd)
RRPC=$BUILD/rrpc
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
logs=$test_dir

check() { # check NAME PYTHON-EXPRESSION-ON-j < JSON
  local name=$1 expr=$2 doc
  doc=$(cat)
  if printf '%s' "$doc" | "$PY" -c "import json,sys; j=json.load(sys.stdin); sys.exit(0 if ($expr) else 1)" 2>/dev/null; then
    ok "$name"
  else
    fail "$name: $expr"; echo "     got: $doc" | head -c 2000; echo
  fi
}

expect_status() { # expect_status NAME WANT COMMAND...
  local name=$1 want=$2; shift 2
  "$@" >"$logs/out" 2>&1
  local got=$?
  if [ "$got" = "$want" ]; then ok "$name"; else
    fail "$name: exit $got, wanted $want"; sed 's/^/     /' "$logs/out"; fi
}

spawn s1 "$BUILD/calc-server" --service ops --workers 2 --heartbeat-interval 0.2 \
  --heartbeat-ttl 1 --max-queue 50
s1=$spawned
spawn s2 "$BUILD/calc-server" --service ops --workers 1 --heartbeat-interval 0.2 \
  --heartbeat-ttl 1 --max-queue 50
s2=$spawned
for _ in $(seq 100); do
  [ "$("$RRPC" ls --json 2>/dev/null | "$PY" -c 'import json,sys; print(sum(s["workers"] for s in json.load(sys.stdin)))' 2>/dev/null)" = 2 ] && break
  sleep 0.05
done

for i in 1 2 3 4 5; do "$RRPC" call ops add "[$i, 1]" >/dev/null; done
"$RRPC" call ops divide '[1, 0]' >/dev/null 2>&1
redis-cli -s "$RRPC_TEST_REDIS_SOCK" rpush ops 'not json' >/dev/null
sleep 0.8 # two heartbeats: the counts are flushed

"$RRPC" ls --json | check "ls: ops with 2 workers, 3 threads, max_queue 50" \
  'any(s["service"]=="ops" and s["workers"]==2 and s["threads"]==3 and s["max_queue"]==50 and s["queue"]==0 for s in j)'
"$RRPC" ls | grep -q '^ops ' && ok "ls table" || fail "ls table"

"$RRPC" info --json ops | check "info: workers and methods" \
  'j["registered"] and len(j["workers"])==2 and sorted(w["threads"] for w in j["workers"])==[1,2] and {"add","divide","sleep","rpc.ping"} <= {m["name"] for m in j["methods"]} and [m for m in j["methods"] if m["name"]=="add"][0]["params"]=={"a":"number","b":"number"}'
"$RRPC" info ops | grep -q 'add(a, b)' && ok "info table" || fail "info table"

# --priority (PROTOCOL.md section 7, "Priorities"), and the priority lists in rrpc info.
# (sleep, not add: the stats below count the adds)
[ "$("$RRPC" call --priority high ops sleep '[1]')" = 1 ] &&
  [ "$("$RRPC" call --priority low ops sleep '[2]')" = 2 ] &&
  [ "$("$RRPC" call --priority normal ops sleep '[3]')" = 3 ] &&
  ok "call --priority high|low|normal" || fail "call --priority"
expect_status "call --priority urgent is a usage error" 2 "$RRPC" call --priority urgent ops add '[1, 2]'
grep -q "high, normal or low, not 'urgent'" "$logs/out" && ok "--priority names the bad value" ||
  fail "--priority message: $(cat "$logs/out")"
"$RRPC" call --help | grep -q -- '--priority high|normal|low' && ok "call --help has --priority" ||
  fail "call --help lacks --priority"
redis-cli -s "$RRPC_TEST_REDIS_SOCK" rpush opsq x >/dev/null
redis-cli -s "$RRPC_TEST_REDIS_SOCK" rpush '{opsq}:high' y >/dev/null
redis-cli -s "$RRPC_TEST_REDIS_SOCK" rpush '{opsq}:low' z w >/dev/null
"$RRPC" info --json opsq | check "info: queue counts the priority lists" \
  'j["queue"]==4 and j["queue_high"]==1 and j["queue_low"]==2'
"$RRPC" info opsq | grep -q 'queue 4 (high 1, normal 1, low 2)' && ok "info table per priority" ||
  fail "info table per priority: $("$RRPC" info opsq | head -1)"
redis-cli -s "$RRPC_TEST_REDIS_SOCK" del opsq '{opsq}:high' '{opsq}:low' >/dev/null

"$RRPC" ping --json --count 3 ops | check "ping: 3 round trips with latency and worker" \
  'len(j["pings"])==3 and all(p["latency_ms"]>0 and p["worker"] for p in j["pings"]) and j["max_ms"]>=j["min_ms"]>0'
"$RRPC" ping ops | grep -q '^reply from ops (worker .*) in [0-9.]* ms$' && ok "ping line" ||
  fail "ping line"

"$RRPC" stats --json ops | check "stats: calls, errors, percentiles, dead letters" \
  'j["methods"]["add"]["calls"]==5 and j["methods"]["add"]["errors"]==0 and j["methods"]["divide"]["errors"]==1 and 0 < j["methods"]["add"]["p50_ms"] <= j["methods"]["add"]["p99_ms"] and j["dead"]==1 and j["queue"]==0'

"$RRPC" dead --json ops list | check "dead list" \
  'len(j)==1 and j[0]["message"]=="not json" and j[0]["reason"].startswith("parse error")'
"$RRPC" dead ops | grep -q 'parse error' && ok "dead table" || fail "dead table"
# A dead letter whose cause is fixed: a request with no reply key, requeued.
redis-cli -s "$RRPC_TEST_REDIS_SOCK" rpush ops:dead \
  '{"reason":"test","time":1,"service":"ops","message":"{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,1],\"id\":\"requeued-reply\"}"}' >/dev/null
"$RRPC" dead --json ops requeue | check "dead requeue" 'j["requeued"]==2'
for _ in $(seq 50); do
  [ "$(redis-cli -s "$RRPC_TEST_REDIS_SOCK" llen requeued-reply)" = 1 ] && break; sleep 0.05
done
[ "$(redis-cli -s "$RRPC_TEST_REDIS_SOCK" llen requeued-reply)" = 1 ] && ok "requeued request answered" ||
  fail "requeued request answered"
sleep 0.2 # the requeued garbage is a dead letter again
"$RRPC" dead --json ops purge | check "dead purge" 'j["purged"]==1'
"$RRPC" dead --json ops | check "dead list empty after purge" 'j==[]'
expect_status "dead: unknown action is a usage error" 2 "$RRPC" dead ops frobnicate
# requeue --ref: only the dead letter of that ref (the second) is requeued.
for id in one-a one-b; do
  redis-cli -s "$RRPC_TEST_REDIS_SOCK" rpush ops:dead \
    "{\"reason\":\"test\",\"time\":1,\"service\":\"ops\",\"message\":\"{\\\"jsonrpc\\\":\\\"2.0\\\",\\\"method\\\":\\\"add\\\",\\\"params\\\":[1,1],\\\"id\\\":\\\"$id\\\"}\"}" >/dev/null
done
ref=$("$RRPC" dead --json ops list | "$PY" -c 'import json, sys; print(json.load(sys.stdin)[1]["ref"])')
"$RRPC" dead --json ops requeue --ref "$ref" | check "dead requeue --ref" 'j["requeued"]==1'
for _ in $(seq 50); do
  [ "$(redis-cli -s "$RRPC_TEST_REDIS_SOCK" llen one-b)" = 1 ] && break; sleep 0.05
done
[ "$(redis-cli -s "$RRPC_TEST_REDIS_SOCK" llen one-b)" = 1 ] &&
  [ "$(redis-cli -s "$RRPC_TEST_REDIS_SOCK" llen one-a)" = 0 ] &&
  "$RRPC" dead --json ops | "$PY" -c 'import json, sys; j = json.load(sys.stdin); assert len(j) == 1 and "one-a" in j[0]["message"]' &&
  ok "requeue --ref: that one answered, the other still dead" || fail "requeue --ref: that one answered, the other still dead"
"$RRPC" dead ops requeue --ref "$ref" >"$logs/ref.txt" 2>&1 && fail "requeue --ref of a gone record fails" ||
  { grep -q "no dead letter with ref" "$logs/ref.txt" && ok "requeue --ref of a gone record fails" ||
    fail "requeue --ref of a gone record says why: $(cat "$logs/ref.txt")"; }
expect_status "dead: --ref with list is a usage error" 2 "$RRPC" dead ops list --ref "$ref"
redis-cli -s "$RRPC_TEST_REDIS_SOCK" del ops:dead >/dev/null
# strtoull reads " -5" as 2^64 - 5: a count must be digits only.
expect_status "bench: a signed --calls is a usage error" 2 timeout 5 "$RRPC" bench --calls ' -5' ops
expect_status "ping: a --count with a blank is a usage error" 2 "$RRPC" ping --count ' 2' ops

"$RRPC" top --json --iterations 2 --interval 0.2 >"$logs/top.json"
"$PY" - "$logs/top.json" <<'PYEOF' && ok "top --json refreshes" || { fail "top --json"; cat "$logs/top.json"; }
import json, sys
lines = open(sys.argv[1]).read().splitlines()
docs = [json.loads(l) for l in lines]
assert len(docs) == 2
assert all(any(s["service"] == "ops" and "calls_per_s" in s for s in d["services"]) for d in docs)
PYEOF
n=$("$RRPC" top --iterations 2 --interval 0.2 | grep -c '^rrpc top')
[ "$n" = 2 ] && ok "top table refreshes" || fail "top table: $n refreshes"

# Graceful stop of both servers: the records go, calls fail fast.
kill -TERM "$s1" "$s2"; wait "$s1" "$s2" 2>/dev/null
"$RRPC" ls --json | check "ls after stop: 0 workers" 'any(s["service"]=="ops" and s["workers"]==0 for s in j)'
start=$(date +%s%N)
expect_status "call after stop fails fast (exit 6)" 6 "$RRPC" call --timeout 20 ops add '[1, 2]'
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ "$elapsed_ms" -lt 2000 ] && ok "...within ${elapsed_ms} ms" || fail "took ${elapsed_ms} ms"
expect_status "ping after stop fails fast (exit 6)" 6 "$RRPC" ping --timeout 20 ops
# Handed over to a worker that does not register: forget, and calls wait again.
"$RRPC" forget --json ops | check "forget" 'j["forgotten"]'
expect_status "forgotten service is waited on (timeout, exit 3)" 3 "$RRPC" call --timeout 0.3 ops add '[1, 2]'
"$RRPC" ls --json | check "ls after forget" 'all(s["service"]!="ops" for s in j)'

# ---- issue 9: text from Redis cannot drive the operator's terminal ---------
# A dead letter whose reason and message carry ESC sequences (retitle,
# clear screen), BEL, a C1 CSI, a bidi override and a byte that is not
# UTF-8; a registered service and worker host with the like.  Tables show
# escapes; --json gives back the exact strings.
rcli() { redis-cli -s "$RRPC_TEST_REDIS_SOCK" "$@"; }
raw_ok() { # raw_ok NAME FILE: no ESC, BEL, C1 CSI or RLO bytes in FILE
  if LC_ALL=C grep -q $'\e\|\a\|\xc2\x9b\|\xe2\x80\xae' "$2"; then
    fail "$1: raw control characters reach the terminal"; od -c "$2" | head -20
  else ok "$1"; fi
}
# A service name may hold no C0 control (rrpc refuses it) but a C1 CSI
# and a right-to-left override.
evil=$'x\xc2\x9b2J\xe2\x80\xaey'
rcli rpush ops:dead "{\"reason\":\"parse error \\u001b[2J\\u0007\",\"time\":1,\"service\":\"ops\",\"message\":\"hi \\u001b]0;PWNED\\u0007 \\u009b31m \\u202e \\u007f\"}" >/dev/null
"$RRPC" dead ops list >"$logs/dead.txt" 2>&1
raw_ok "dead list escapes control characters" "$logs/dead.txt"
grep -qF 'hi \x1b]0;PWNED\x07 \u009b31m \u202e \x7f' "$logs/dead.txt" && ok "...shown as escapes" ||
  { fail "dead list escapes"; cat -v "$logs/dead.txt"; }
"$RRPC" dead --json ops list >"$logs/dead.json"
raw_ok "dead --json has no raw control characters" "$logs/dead.json"
check "dead --json is exact" \
  'j[-1]["message"]=="hi \x1b]0;PWNED\x07 \x9b31m \u202e \x7f" and j[-1]["reason"]=="parse error \x1b[2J\x07"' <"$logs/dead.json"
# Not UTF-8 at all: a record that is not a JSON object.
rcli rpush ops:dead $'\xff\e[2J' >/dev/null
"$RRPC" dead ops list >"$logs/dead2.txt" 2>&1
raw_ok "dead list escapes a non-UTF-8 record" "$logs/dead2.txt"
rcli del ops:dead >/dev/null

future=$(( ($(date +%s) + 3600) * 1000 ))
rcli sadd rrpc:services "$evil" >/dev/null
rcli zadd "{$evil}:workers" "$future" "w$evil" >/dev/null
rcli hset "{$evil}:config" max_queue 0 shards 1 ttl_ms 1000 >/dev/null
rcli hset "{$evil}:info" "w$evil" "{\"id\":\"w\\u001b[2J\",\"service\":\"s\",\"host\":\"h\\u001b]0;PWNED\\u0007\",\"pid\":1,\"version\":\"v\\u009b1m\",\"threads\":1,\"methods\":[{\"name\":\"m\\u001b[2J\",\"description\":\"d\\u202e\"}]}" >/dev/null
"$RRPC" ls >"$logs/ls.txt" 2>&1
raw_ok "ls escapes a service name" "$logs/ls.txt"
"$RRPC" info "$evil" >"$logs/info.txt" 2>&1
raw_ok "info escapes names, host, version, methods" "$logs/info.txt"
grep -qF 'h\x1b]0;PWNED\x07' "$logs/info.txt" && grep -qF 'x\u009b2J\u202ey' "$logs/info.txt" &&
  ok "...host and service shown escaped" ||
  { fail "info host"; cat -v "$logs/info.txt"; }
"$RRPC" stats "$evil" >"$logs/stats.txt" 2>&1
raw_ok "stats escapes a service name" "$logs/stats.txt"
"$RRPC" top --iterations 1 >"$logs/top.txt" 2>&1
raw_ok "top escapes a service name" "$logs/top.txt"
"$RRPC" ls --json >"$logs/ls.json"
raw_ok "ls --json has no raw C1 characters" "$logs/ls.json"
EVIL="$evil" check "ls --json is exact" \
  'any(s["service"].encode("utf-8","surrogateescape")==__import__("os").environb[b"EVIL"] for s in j)' <"$logs/ls.json"
"$RRPC" info --json "$evil" | check "info --json is exact" \
  'j["workers"][0]["host"]=="h\x1b]0;PWNED\x07" and j["workers"][0]["version"]=="v\x9b1m"'
rcli del "{$evil}:workers" "{$evil}:info" "{$evil}:config" >/dev/null
rcli srem rrpc:services "$evil" >/dev/null
# A Redis error's text (here a key of the wrong type named by the caller).
rcli set "bad$evil" x >/dev/null 2>&1
"$RRPC" call --timeout 1 "bad"$'\e' m >"$logs/call.txt" 2>&1
raw_ok "call escapes a usage error" "$logs/call.txt"

# ---- rrpc notify --idempotency-key (PROTOCOL.md section 7) -------------------
# A reliable service runs the notifications sent with one key once; without
# a key every send runs.  Counted by the handler runs in the method stats.
spawn idem "$BUILD/calc-server" --service idem --reliable --workers 1 \
  --heartbeat-interval 0.2 --heartbeat-ttl 1
idem_pid=$spawned
for _ in $(seq 100); do "$RRPC" call --timeout 1 idem add '[1, 1]' >/dev/null 2>&1 && break; sleep 0.05; done
expect_status "notify --idempotency-key: accepted" 0 \
  "$RRPC" notify --idempotency-key tick-42 idem echo '["once"]'
expect_status "notify --idempotency-key again: accepted" 0 \
  "$RRPC" notify --idempotency-key tick-42 idem echo '["once"]'
"$RRPC" notify idem echo '["twice"]' && "$RRPC" notify idem echo '["twice"]'
expect_status "notify --idempotency-key '': usage error" 2 \
  "$RRPC" notify --idempotency-key '' idem echo '[]'
expect_status "call --idempotency-key: not an option of call" 2 \
  "$RRPC" call --idempotency-key k idem echo '[]'
for _ in $(seq 100); do
  [ "$(rcli llen idem)" = 0 ] && [ "$("$RRPC" stats --json idem | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["methods"].get("echo",{}).get("calls",0))')" -ge 3 ] && break
  sleep 0.05
done
sleep 0.5 # a fourth run would show in the next beats
"$RRPC" stats --json idem | check "notify: one key ran once, two sends without a key twice" \
  'j["methods"]["echo"]["calls"]==3'
kill "$idem_pid"; wait "$idem_pid" 2>/dev/null

# ---- issue 9: passwords are never printed ------------------------------------
pw_absent() { # pw_absent NAME FILE
  if grep -q 'hunter2' "$2"; then fail "$1: the password is printed"; cat "$2"
  else ok "$1"; fi
}
for url in 'redis://:p@ss-hunter2@127.0.0.1:1' 'redis://u:p@hunter2@127.0.0.1:1/0' \
    'http://user:hunter2@127.0.0.1:1' 'redis://u:12/hunter2@127.0.0.1' \
    'redis+cluster://:p@hunter2@127.0.0.1:1' 'redis+sentinel://:p@hunter2@127.0.0.1:1/mm' \
    'unix:///nonexistent.sock?password=hunter2' 'rdis://hunter2@127.0.0.1'; do
  for cmd in "ls" "ping svc" "call svc m" "bench --duration 0.2 svc m" "bench --async --duration 0.2 svc m"; do
    # shellcheck disable=SC2086
    "$RRPC" $cmd --redis "$url" >"$logs/pw.txt" 2>&1
    pw_absent "rrpc $cmd --redis $(printf '%s' "$url" | sed 's/hunter2/PASSWORD/')" "$logs/pw.txt"
  done
  timeout 2 "$BUILD/calc-server" --service pw --redis "$url" >"$logs/pw.txt" 2>&1
  pw_absent "calc-server --redis $(printf '%s' "$url" | sed 's/hunter2/PASSWORD/')" "$logs/pw.txt"
done
"$RRPC" ls --redis 'redis://u:12/hunter2@127.0.0.1' 2>&1 | grep -q "'/'.*%2F" &&
  ok "the error says how to percent-encode" ||
  fail "no percent-encoding hint"

if [ "$checks_failed" != 0 ]; then
  for f in "$logs"/s*.log; do echo "== $f"; cat "$f"; done
fi
finish
