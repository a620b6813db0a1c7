#!/usr/bin/env bash
# test_web_metrics.sh -- rrpc web's /metrics, /livez and /readyz, checked by
# promtool and scraped by a real Prometheus server.
#
# The C, Python, Ruby and Node calc servers answer calls; the test makes a
# call wait behind a busy worker (oldest request age; for the peers, each
# language's own client's call behind its own worker), one refused by
# max_queue (shed), one whose deadline passed (expired; on every worker) and
# an error, then
# reads them back from /metrics, runs `promtool check metrics` on it, and
# lets a private Prometheus (port of its own, no other target) scrape a
# token-protected rrpc web and answers a query for rrpc_requests_total.
# Last, the chart history's cap and its survival across a restart, and
# /readyz once Redis is gone.  A missing promtool or prometheus is a
# failure, not a skip.
#
# Usage (under tests/harness/with-redis.sh): test_web_metrics.sh BUILD_DIR
set -u
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
: "${REDIS_URL:?run me under tests/harness/with-redis.sh}"
BUILD=$(cd "${1:?usage: test_web_metrics.sh BUILD_DIR}" && pwd)
for tool in promtool prometheus curl redis-cli; do
  command -v "$tool" >/dev/null || die "$tool is missing (scripts/install-deps.sh installs it)"
done
cli() { redis-cli -s "$RRPC_TEST_REDIS_SOCK" "$@"; }
rrpc() { "$BUILD/rrpc" "$@"; }

# One worker taking one request at a time; a queue of one is full.
spawn c-server "$BUILD/calc-server" --service calc --workers 1 --batch-max 1 --max-queue 1
spawn py-server "$PY" "$rrpc_root/clients/python/calc_server.py" --service calc_py
spawn rb-server ruby "$rrpc_root/clients/ruby/calc_server.rb" --service calc_rb
node_ready || die "the Node peer's dependencies are missing (scripts/node-deps.sh)"
spawn js-server node "$rrpc_root/clients/node/calc_server.js" --service calc_js
peers="calc_py calc_rb calc_js"
for s in calc $peers; do
  wait_until 20 rrpc call --timeout 0.5 "$s" add '[1, 2]' >/dev/null || die "service $s never answered"
done
rrpc call calc divide '[1, 0]' >/dev/null 2>&1 # an error

start_web() { # start_web NAME ARGS...: spawns rrpc web on a free port; $url, $web_pid
  local name=$1; shift
  # Spawned here, not in a $(...) subshell, so that the exit trap kills it.
  spawn "$name" "$BUILD/rrpc" web --redis "$REDIS_URL" --listen 127.0.0.1:0 "$@"
  web_pid=$spawned
  wait_until 10 grep -q "listening on" "$test_dir/$name.log" || die "$name did not start"
  url=$(sed -n 's|.*listening on \(http://127.0.0.1:[0-9]*\)/.*|\1|p' "$test_dir/$name.log")
}
start_web web
web=$url
first_web=$web_pid
metric() { # metric 'NAME{LABELS}': its value in a fresh scrape, or nothing
  curl -s "$web/metrics" | awk -v k="$1" '$1 == k { print $2 }'
}
status_of() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

# ---- health -------------------------------------------------------------------
[ "$(status_of "$web/livez")" = 200 ] && ok "/livez 200" || fail "/livez 200"
# DNS rebinding: on a loopback address only loopback Host names are answered.
port=${web##*:}
[ "$(status_of -H "Host: rebound.example:$port" "$web/api/overview")" = 421 ] &&
  ok "a foreign Host name gets 421 (DNS rebinding)" || fail "a foreign Host name is answered"
[ "$(status_of -H "Host: localhost:$port" "$web/livez")" = 200 ] &&
  [ "$(status_of -H "Host: [::1]:$port" "$web/livez")" = 200 ] &&
  ok "localhost and [::1] Host names are answered" || fail "a loopback Host name is refused"
[ "$(status_of "$web/readyz")" = 200 ] && ok "/readyz 200 (Redis reachable)" || fail "/readyz 200"
[ "$(status_of "$web/readyz?service=calc_rb")" = 200 ] && ok "/readyz?service=calc_rb 200" ||
  fail "/readyz?service=calc_rb 200"
body=$(curl -s "$web/readyz?service=nobody")
[ "$(status_of "$web/readyz?service=nobody")" = 503 ] && echo "$body" | grep -q '"workers":0' &&
  ok "/readyz?service=nobody 503 with a JSON body" || fail "/readyz?service=nobody: $body"

# ---- the oldest request's age and shed calls: a busy worker -----------------------
# Its one worker takes a slow call (pushed here, so it is surely queued
# before it is taken); the next call waits in the queue meanwhile.
metric_is() { test "$(metric "$1")" = "$2"; } # evaluated at every try of wait_until
slow_key="rrpc:reply:$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cli RPUSH calc "{\"jsonrpc\":\"2.0\",\"method\":\"sleep\",\"params\":[4000],\"id\":9,\"reply_to\":\"$slow_key\"}" >/dev/null
llen_is() { test "$(cli LLEN calc)" = "$1"; }
wait_until 5 llen_is 0 || fail "the worker never took the slow call"
spawn waiting "$BUILD/rrpc" call --timeout 20 calc add '[40, 2]'
waiting_pid=$spawned
wait_until 5 metric_is 'rrpc_queue_depth{service="calc"}' 1 && ok "a call waits in the queue" ||
  fail "the call never queued"
sleep 1.2
age=$(metric 'rrpc_oldest_request_age_seconds{service="calc"}')
awk -v a="$age" 'BEGIN { exit !(a >= 1 && a < 20) }' && ok "oldest request age $age s (>= 1)" ||
  fail "oldest request age: '$age'"
rrpc call --timeout 2 calc add '[1, 1]' >/dev/null 2>&1
[ $? = 7 ] && ok "a call past max_queue is refused (exit 7)" || fail "max_queue refusal"
wait "$waiting_pid" && grep -qx 42 "$test_dir/waiting.log" && ok "the queued call was answered" ||
  fail "the queued call: $(cat "$test_dir/waiting.log")"
cli BLPOP "$slow_key" 10 | grep -q '"result":4000' && ok "the slow call was answered" ||
  fail "the slow call"
wait_until 5 metric_is 'rrpc_shed_requests_total{service="calc"}' 1 &&
  ok "rrpc_shed_requests_total 1" || fail "shed: '$(metric 'rrpc_shed_requests_total{service="calc"}')'"
[ "$(metric 'rrpc_oldest_request_age_seconds{service="calc"}')" = 0.000 ] &&
  ok "oldest request age 0 once the queue is empty" || fail "age after the queue emptied"

# ---- an expired request -----------------------------------------------------------
key="rrpc:reply:$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cli RPUSH calc "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,2],\"id\":1,\"deadline\":1,\"reply_to\":\"$key\"}" >/dev/null
cli BLPOP "$key" 5 | grep -q -- '-32000' && ok "a request past its deadline is answered -32000" ||
  fail "expired request answer"
wait_until 5 metric_is 'rrpc_expired_requests_total{service="calc"}' 1 &&
  ok "rrpc_expired_requests_total 1" || fail "expired: '$(metric 'rrpc_expired_requests_total{service="calc"}')'"

# ---- the peers: their clients' `sent` and their workers' `expired` ------------------
# Each peer worker is kept busy by a slow call (long enough for a slow
# start of the clients); meanwhile its own language's calc_client queues a
# call: the queue's head carries `sent`.  The expired counts are compared
# with those before: a call of the start-up loop above may have been
# taken after its deadline, before its caller withdrew it.
declare -A client_of=([calc_py]="$PY $rrpc_root/clients/python/calc_client.py"
  [calc_rb]="ruby $rrpc_root/clients/ruby/calc_client.rb" [calc_js]="node $rrpc_root/clients/node/calc_client.js")
peer_clients=()
for s in $peers; do
  cli RPUSH "$s" "{\"jsonrpc\":\"2.0\",\"method\":\"sleep\",\"params\":[8000],\"id\":9,\"reply_to\":\"$slow_key:$s\"}" >/dev/null
done
llen_of_is() { test "$(cli LLEN "$1")" = 0; }
for s in $peers; do
  wait_until 5 llen_of_is "$s" || fail "$s never took the slow call"
  # shellcheck disable=SC2086 # the command and its script
  spawn "client-$s" ${client_of[$s]} --service "$s" --timeout 20
  peer_clients+=("$spawned")
done
for s in $peers; do
  wait_until 5 metric_is "rrpc_queue_depth{service=\"$s\"}" 1 || fail "$s: the client's call never queued"
done
sleep 1.2
for s in $peers; do
  age=$(metric "rrpc_oldest_request_age_seconds{service=\"$s\"}")
  awk -v a="$age" 'BEGIN { exit !(a >= 1 && a < 20) }' &&
    ok "$s: oldest request age $age s (>= 1), from its client's sent" || fail "$s: oldest request age: '$age'"
done
for i in "${!peer_clients[@]}"; do
  wait "${peer_clients[$i]}" || fail "a peer calc_client failed: $(cat "$test_dir"/client-*.log)"
done
for s in $peers; do
  cli BLPOP "$slow_key:$s" 10 | grep -q '"result":8000' || fail "$s: the slow call"
  k="$key:$s"
  was=$(metric "rrpc_expired_requests_total{service=\"$s\"}")
  cli RPUSH "$s" "{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":[1,2],\"id\":1,\"deadline\":1,\"reply_to\":\"$k\"}" >/dev/null
  cli BLPOP "$k" 5 | grep -q -- '-32000' || fail "$s: expired request answer"
  wait_until 5 metric_is "rrpc_expired_requests_total{service=\"$s\"}" $((${was:-0} + 1)) &&
    ok "$s: rrpc_expired_requests_total one more (counted by its worker)" ||
    fail "$s: expired: '$(metric "rrpc_expired_requests_total{service=\"$s\"}")'"
done

# ---- the whole scrape ---------------------------------------------------------------
sleep 1.5 # every worker's stats flushed (heartbeat: 1 s)
curl -s "$web/metrics" >"$test_dir/metrics.txt"
if promtool check metrics <"$test_dir/metrics.txt" >"$test_dir/promtool.log" 2>&1 &&
  [ ! -s "$test_dir/promtool.log" ]; then
  ok "promtool check metrics: no problem"
else
  fail "promtool check metrics: $(cat "$test_dir/promtool.log")"
fi
m=$(cat "$test_dir/metrics.txt")
# As many adds as `rrpc stats` counts (the calls that found the service
# while it started are not known in advance).
adds=$(rrpc stats calc --json | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["methods"]["add"]["calls"])')
for want in "rrpc_requests_total{service=\"calc\",method=\"add\",outcome=\"ok\"} $adds" \
  'rrpc_requests_total{service="calc",method="divide",outcome="error"} 1' \
  'rrpc_workers{service="calc_py"} 1' 'rrpc_workers{service="calc_rb"} 1' 'rrpc_workers{service="calc_js"} 1' \
  'rrpc_dead_letters{service="calc"} 0' 'rrpc_redelivered_requests_total{service="calc"} 0' \
  "rrpc_request_duration_seconds_count{service=\"calc\",method=\"add\"} $adds" \
  "rrpc_request_duration_seconds_bucket{service=\"calc\",method=\"add\",le=\"+Inf\"} $adds" \
  'rrpc_redis_up 1'; do
  grep -qxF "$want" <<<"$m" && ok "/metrics has: $want" || fail "/metrics lacks: $want"
done
for s in $peers; do
  grep -q "^rrpc_requests_total{service=\"$s\",method=\"add\",outcome=\"ok\"} [1-9]" <<<"$m" &&
    ok "/metrics counts $s's calls (stats written by its own workers)" || fail "$s's calls"
done

# ---- a real Prometheus scrapes a token-protected rrpc web -----------------------------
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n' "$token" >"$test_dir/token"
start_web web-token --token-file "$test_dir/token" --read-only
secured=$url
[ "$(status_of "$secured/metrics")" = 401 ] && ok "/metrics without the token: 401" ||
  fail "/metrics without the token"
[ "$(status_of -H "Authorization: Bearer $token" "$secured/metrics")" = 200 ] &&
  ok "/metrics with the bearer token: 200" || fail "/metrics with the token"
prom_port=$(free_port)
cat >"$test_dir/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: rrpc
    authorization:
      type: Bearer
      credentials_file: $test_dir/token
    static_configs:
      - targets: ['${secured#http://}']
YAML
spawn prometheus prometheus --config.file="$test_dir/prometheus.yml" \
  --storage.tsdb.path="$test_dir/prom-data" --web.listen-address="127.0.0.1:$prom_port"
query() { curl -s --get "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1"; }
scraped() {
  query 'rrpc_requests_total{service="calc",method="add",outcome="ok"}' |
    "$PY" -c 'import json, sys
r = json.load(sys.stdin)["data"]["result"]
assert r and float(r[0]["value"][1]) == float(sys.argv[1]), r' "$adds"
}
if wait_until 30 scraped 2>/dev/null; then
  ok "Prometheus scraped rrpc web: rrpc_requests_total{service=calc,method=add,outcome=ok} = $adds"
else
  fail "Prometheus query: $(query rrpc_requests_total | head -c 400)"
fi
query 'up{job="rrpc"}' | grep -q '"value":\[[0-9.]*,"1"\]' && ok "Prometheus: up{job=rrpc} 1" ||
  fail "Prometheus up: $(query 'up{job="rrpc"}' | head -c 300)"

# ---- chart history: capped, and kept across a restart ----------------------------------
hkey="rrpc:web:history:calc"
[ "$(cli ZCARD "$hkey")" -ge 1 ] && [ "$(cli TTL "$hkey")" -gt 0 ] &&
  ok "rrpc web keeps a per-minute sample in Redis, with a TTL" || fail "history key $(cli ZCARD "$hkey")"
minute=$(($(cli TIME | head -1) / 60))
cli ZADD "$hkey" $((minute - 5)) "$((minute - 5)) {\"calls\":1,\"errors\":0,\"queue\":0}" >/dev/null
cli ZADD "$hkey" $((minute - 100)) "$((minute - 100)) {\"calls\":0,\"errors\":0,\"queue\":0}" >/dev/null
kill "$first_web"
start_web web-again
web=$url
history=$(curl -s "$web/api/services/calc")
"$PY" -c 'import json, sys
h = json.loads(sys.argv[1])["history"]
m = [e["minute"] // 60 for e in h]
assert int(sys.argv[2]) - 5 in m, m            # an earlier minute survived the restart
assert int(sys.argv[2]) - 100 not in m, m      # past --history-minutes: dropped
assert h[-1]["sample"]["calls"] >= 4 and h[-1]["minute"] // 60 >= int(sys.argv[2]), h[-1]
' "$history" "$minute" && ok "chart history survives a restart of rrpc web, capped at 60 minutes" ||
  fail "chart history: $(echo "$history" | head -c 300)"

# ---- Redis gone ---------------------------------------------------------------------------
cli SHUTDOWN NOSAVE >/dev/null 2>&1
[ "$(status_of "$web/readyz")" = 503 ] && ok "/readyz 503 once Redis is gone" || fail "/readyz without Redis"
[ "$(metric rrpc_redis_up)" = 0 ] && ok "/metrics says rrpc_redis_up 0" || fail "rrpc_redis_up without Redis"
[ "$(status_of "$web/livez")" = 200 ] && ok "/livez still 200" || fail "/livez without Redis"
finish
