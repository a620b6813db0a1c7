#!/usr/bin/env bash
# test_acl.sh -- the ACL recipe of docs/SECURITY.md, against a real Redis.
#
# Reads the recipe block out of docs/SECURITY.md (so the documented rules
# are the tested ones), applies it as an admin user, then checks that the
# worker user can serve (C, Python and Ruby workers; the C one registered,
# with heartbeat and stats, and in reliable mode, where a killed worker's
# request is redelivered), the caller user can call (rrpc call/notify/
# ping/bench --async, calc-client, Python and Ruby clients; fail fast and
# max_queue included), the operator user can run rrpc ls/info/stats/top/
# dead/forget, each is refused what its role does not need, a request that
# names a foreign key or the service list as reply_to is dead-lettered
# instead of written there, and bad or missing credentials fail with exit
# status 4 and rrpc's AUTH message.
#
# Usage (under tests/harness/with-redis.sh with RRPC_REDIS_TCP=1):
#   test_acl.sh BUILD_DIR
set -u
: "${RRPC_TEST_REDIS_PORT:?run me under tests/harness/with-redis.sh with RRPC_REDIS_TCP=1}"
BUILD=$(cd "${1:?usage: test_acl.sh BUILD_DIR}" && pwd)
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
root=$rrpc_root
port=$RRPC_TEST_REDIS_PORT
sock=$RRPC_TEST_REDIS_SOCK
logs=$test_dir
server_pid=
secret() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }

# 1. An admin user first, since the recipe switches the default user off.
ADMIN_PASS=$(secret) WORKER_PASS=$(secret) CALLER_PASS=$(secret) OPERATOR_PASS=$(secret)
command redis-cli -s "$sock" ACL SETUSER admin on ">$ADMIN_PASS" '~*' '&*' +@all >/dev/null
redis-cli() { command redis-cli -s "$sock" --user admin --pass "$ADMIN_PASS" --no-auth-warning "$@"; }
as_user() { # as_user USER PASS COMMAND...: one command as that user over TCP
  local user=$1 pass=$2; shift 2
  command redis-cli -h 127.0.0.1 -p "$port" --user "$user" --pass "$pass" --no-auth-warning "$@" 2>&1
}
recipe=$(sed -n '/<!-- acl-recipe:begin -->/,/<!-- acl-recipe:end -->/p' "$root/docs/SECURITY.md" |
  grep -v '^<!--\|^```')
[ -n "$recipe" ] || { echo "FAIL no ACL recipe block in docs/SECURITY.md"; exit 1; }
if out=$(eval "$recipe" 2>&1) && ! echo "$out" | grep -qv '^OK$'; then
  ok "applied the ACL recipe of docs/SECURITY.md"
else
  echo "FAIL applying the recipe: $out"; exit 1
fi
worker_url="redis://calc-worker:$WORKER_PASS@127.0.0.1:$port/0"
caller_url="redis://calc-caller:$CALLER_PASS@127.0.0.1:$port/0"
operator_url="redis://calc-operator:$OPERATOR_PASS@127.0.0.1:$port/0"

start_worker() { # start_worker NAME COMMAND...: runs it, waits until calc answers
  local name=$1; shift
  spawn "$name" "$@"
  server_pid=$spawned
  for _ in $(seq 100); do
    "$BUILD/rrpc" call --redis "$caller_url" --timeout 0.2 calc add '[0, 0]' >/dev/null 2>&1 &&
      { ok "$name serves as calc-worker"; return 0; }
    sleep 0.1
  done
  fail "$name never answered as calc-worker"; cat "$logs/$name.log"; return 1
}
stop_worker() { kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; server_pid=; }
registry_failed() { # registry_failed LOG: the server logged a refused heartbeat or reaper
  grep -E 'heartbeat failed|reaper failed|cannot' "$1" && return 0; return 1
}

expect() { # expect NAME WANT COMMAND...: the command's output (stdout+stderr) is WANT
  local name=$1 want=$2 got; shift 2
  got=$("$@" 2>&1)
  [ "$got" = "$want" ] && ok "$name" || fail "$name: expected '$want', got '$got'"
}
refused() { # refused NAME USER PASS COMMAND...: Redis answers NOPERM
  local name=$1 out; shift
  out=$(as_user "$@")
  case $out in *NOPERM*) ok "refused: $name" ;; *) fail "$name was allowed: $out" ;; esac
}
script_refused() { # script_refused NAME USER PASS EVAL...: a command inside the script is refused
  local name=$1 out; shift
  out=$(as_user "$@")
  case $out in *"user executing the script can't"*) ok "refused: $name" ;;
    *) fail "$name was allowed: $out" ;; esac
}

# 2. The C worker, and every C way of calling, as the ACL users.
start_worker "C calc-server" "$BUILD/calc-server" --redis "$worker_url" --workers 2 || exit 1
expect "rrpc call as calc-caller" 3 "$BUILD/rrpc" call --redis "$caller_url" calc add '[1, 2]'
expect "rrpc notify as calc-caller" "" "$BUILD/rrpc" notify --redis "$caller_url" calc sleep '[1]'
if out=$("$BUILD/calc-client" --redis "$caller_url" 2>&1); then ok "calc-client (C) as calc-caller"
else fail "calc-client as calc-caller: $out"; fi
if out=$("$BUILD/rrpc" bench --async --calls 200 --redis "$caller_url" calc 2>&1); then
  ok "rrpc bench --async (BLMPOP) as calc-caller"
else fail "rrpc bench --async as calc-caller: $out"; fi
# A call that times out while both workers are busy is withdrawn (LREM).
"$BUILD/rrpc" notify --redis "$caller_url" calc sleep '[1000]'; sleep 0.1
"$BUILD/rrpc" notify --redis "$caller_url" calc sleep '[1000]'; sleep 0.1
"$BUILD/rrpc" call --redis "$caller_url" --timeout 0.3 calc add '[1, 2]' >/dev/null 2>&1
status=$?
[ "$status" = 3 ] && [ "$(redis-cli LLEN calc)" = 0 ] &&
  ok "a timed-out call exits 3 and is withdrawn with LREM" ||
  fail "timed-out call: exit $status, $(redis-cli LLEN calc) left on the list"
sleep 0.7 # until both workers are free again
# Priorities: behind a backlog a low and a high call go to {calc}:low and
# {calc}:high (the push script), the workers pop all three lists (BLPOP,
# LMPOP), and a high call that times out is withdrawn from {calc}:high.
# Each step waits for the lists to show the state it needs (a loaded machine
# is slow to start processes); the workers stay busy for 3 s.
llen_is() { # llen_is KEY N: waits up to 2 s for LLEN KEY to be N
  for _ in $(seq 40); do [ "$(redis-cli LLEN "$1")" = "$2" ] && return 0; sleep 0.05; done
  return 1
}
"$BUILD/rrpc" notify --redis "$caller_url" calc sleep '[3000]'
"$BUILD/rrpc" notify --redis "$caller_url" calc sleep '[3000]'
llen_is calc 0 # both workers took one
"$BUILD/rrpc" call --redis "$caller_url" --timeout 8 calc add '[1, 2]' >/dev/null 2>&1 &
p0=$!
llen_is calc 1 # the backlog
"$BUILD/rrpc" call --redis "$caller_url" --timeout 8 --priority low calc add '[1, 2]' >/dev/null 2>&1 &
p1=$!
"$BUILD/rrpc" call --redis "$caller_url" --timeout 8 --priority high calc add '[1, 2]' >/dev/null 2>&1 &
p2=$!
llen_is '{calc}:high' 1 && llen_is '{calc}:low' 1
"$BUILD/rrpc" call --redis "$caller_url" --timeout 0.2 --priority high calc add '[1, 2]' >/dev/null 2>&1
withdrawn=$?
[ "$(redis-cli LLEN '{calc}:high')" = 1 ] && [ "$(redis-cli LLEN '{calc}:low')" = 1 ] &&
  ok "priority calls as calc-caller queue on {calc}:high and {calc}:low behind a backlog" ||
  fail "priority lists: high $(redis-cli LLEN '{calc}:high'), low $(redis-cli LLEN '{calc}:low')"
wait "$p0" && wait "$p1" && wait "$p2" && [ "$withdrawn" = 3 ] &&
  ok "the C worker (calc-worker) pops the priority lists; a timed-out high call is withdrawn" ||
  fail "priority calls were not all answered, or the timed-out one exited $withdrawn"

# 3. Bad credentials: exit status 4 and rrpc's message.
out=$("$BUILD/rrpc" call --redis "redis://calc-caller:wrong@127.0.0.1:$port" calc add '[1, 2]' 2>&1)
status=$?
[ "$status" = 4 ] && echo "$out" | grep -q 'AUTH failed: WRONGPASS' &&
  ok "wrong password: exit 4, '$out'" || fail "wrong password: exit $status, '$out'"
out=$("$BUILD/rrpc" call --redis "redis://127.0.0.1:$port" calc add '[1, 2]' 2>&1)
status=$?
[ "$status" = 4 ] && echo "$out" | grep -q 'NOAUTH' &&
  ok "no credentials: exit 4, '$out'" || fail "no credentials: exit $status, '$out'"
out=$("$BUILD/calc-server" --redis "redis://calc-worker:wrong@127.0.0.1:$port" 2>&1)
status=$?
[ "$status" != 0 ] && echo "$out" | grep -q 'WRONGPASS' &&
  ok "calc-server with a wrong password exits $status" || fail "calc-server wrong password: $status '$out'"
out=$("$BUILD/rrpc" call --redis "$caller_url" other add '[1, 2]' 2>&1)
status=$?
[ "$status" = 4 ] && echo "$out" | grep -q NOPERM &&
  ok "calc-caller calling another service: exit 4, NOPERM" || fail "other service: $status '$out'"

out=$("$BUILD/rrpc" ping --redis "$caller_url" --count 2 calc 2>&1) &&
  ok "rrpc ping as calc-caller" || fail "rrpc ping as calc-caller: $out"

# 4. What each user must not do.
C=(calc-caller "$CALLER_PASS") W=(calc-worker "$WORKER_PASS") O=(calc-operator "$OPERATOR_PASS")
refused "caller LRANGE on the service list" "${C[@]}" LRANGE calc 0 -1
refused "caller BLPOP on the service list" "${C[@]}" BLPOP calc 0.1
refused "caller LPOP (worker-only) on the service list" "${C[@]}" LPOP calc
refused "caller GET of a random key" "${C[@]}" GET "rrpc:reply:$(secret)"
refused "caller KEYS" "${C[@]}" KEYS '*'
refused "caller RPUSH onto a reply key (forging a reply)" "${C[@]}" RPUSH "rrpc:reply:$(secret)" x
refused "caller EXPIRE (worker-only)" "${C[@]}" EXPIRE "rrpc:reply:$(secret)" 60
refused "caller HINCRBY calc:stats (worker-only)" "${C[@]}" HINCRBY calc:stats dead 1
refused "caller LTRIM calc:dead (worker-only)" "${C[@]}" LTRIM calc:dead 0 -1
refused "worker reading a reply key" "${W[@]}" BLPOP "rrpc:reply:$(secret)" 0.1
refused "worker GET of a random key" "${W[@]}" GET somekey
refused "worker RPUSH onto another list" "${W[@]}" RPUSH other x
refused "worker RPUSH onto its own service list" "${W[@]}" RPUSH calc x
refused "worker reading its dead letters" "${W[@]}" LRANGE calc:dead 0 -1
refused "worker LPOP of a reply key" "${W[@]}" LPOP "rrpc:reply:$(secret)"
script_refused "worker EVAL reading a reply key (scripts are checked command by command)" "${W[@]}" \
  EVAL "return redis.call('LRANGE', KEYS[1], 0, -1)" 1 "rrpc:reply:$(secret)"
refused "worker HSET of another service's registry" "${W[@]}" HSET '{other}:info' x y
script_refused "caller EVAL reading the service list" "${C[@]}" \
  EVAL "return redis.call('LRANGE', KEYS[1], 0, -1)" 1 calc
refused "caller writing the registry" "${C[@]}" HSET '{calc}:config' max_queue 0
refused "caller reading the in-flight lists" "${C[@]}" SMEMBERS '{calc}:inflight'
refused "operator reading the service list" "${O[@]}" LRANGE calc 0 -1
refused "operator popping the service list" "${O[@]}" LPOP calc
refused "operator reading a reply key" "${O[@]}" LPOP "rrpc:reply:$(secret)"
refused "operator writing the registry" "${O[@]}" HSET '{calc}:info' x y
refused "operator writing stats" "${O[@]}" HINCRBY calc:stats dead 1

# 5. Confused deputy: reply_to naming a foreign key (refused by the ACL), or
#    the service list itself (refused by the worker before any ACL: it would
#    answer itself forever).
#    A proper reply key in the same pop is answered all the same: the reply
#    script call that the ACL refused as a whole is sent again key by key.
before=$(redis-cli HGET calc:stats dead)
as_user "${C[@]}" RPUSH calc \
  '{"jsonrpc":"2.0","method":"add","params":[1,2],"id":"x","reply_to":"victim"}' \
  '{"jsonrpc":"2.0","method":"add","params":[1,2],"id":"calc","reply_to":"calc"}' \
  '{"jsonrpc":"2.0","method":"add","params":[2,2],"id":"y","reply_to":"rrpc:reply:acl-neighbour"}' >/dev/null
sleep 0.5
after=$(redis-cli HGET calc:stats dead)
[ "$(redis-cli EXISTS victim)" = 0 ] && [ "$(redis-cli LLEN calc)" = 0 ] &&
  [ $((after - ${before:-0})) = 2 ] &&
  redis-cli LRANGE rrpc:reply:acl-neighbour 0 -1 | grep -q '"result":4' &&
  [ "$(redis-cli LRANGE calc:dead -2 -1 | grep -c '"reply failed: NOPERM')" = 1 ] &&
  [ "$(redis-cli LRANGE calc:dead -2 -1 | grep -c "one of the service's own keys")" = 1 ] &&
  ok "reply_to a foreign key or the service list: dead letters, nothing written; the neighbour answered" ||
  fail "reply_to victim/calc: victim=$(redis-cli EXISTS victim) calc=$(redis-cli LLEN calc) dead +$((after - ${before:-0}))"

# 6. The operator's commands, as calc-operator.
sleep 1.2 # one heartbeat, which also sends the per-method stats
out=$("$BUILD/rrpc" ls --json --redis "$operator_url" 2>&1)
echo "$out" | grep -q '"service": *"calc"' && echo "$out" | grep -q '"workers": *1' &&
  ok "rrpc ls as calc-operator: calc with 1 live worker" || fail "rrpc ls as calc-operator: $out"
out=$("$BUILD/rrpc" stats --json --redis "$operator_url" calc 2>&1)
echo "$out" | grep -q '"add"' && ! echo "$out" | grep -q '"calls": *0,' &&
  ok "rrpc stats as calc-operator: add was counted" || fail "rrpc stats as calc-operator: $out"
out=$("$BUILD/rrpc" info --json --redis "$operator_url" calc 2>&1)
echo "$out" | grep -q '"rpc.ping"' && ok "rrpc info as calc-operator" ||
  fail "rrpc info as calc-operator: $out"
out=$("$BUILD/rrpc" top --json --iterations 1 --redis "$operator_url" 2>&1)
echo "$out" | grep -q '"calc"' && ok "rrpc top as calc-operator" || fail "rrpc top as calc-operator: $out"
out=$("$BUILD/rrpc" dead --json --redis "$operator_url" calc list 2>&1)
[ "$(echo "$out" | grep -o 'reply failed: NOPERM' | wc -l)" = 1 ] &&
  [ "$(echo "$out" | grep -o "one of the service's own keys" | wc -l)" = 1 ] &&
  ok "rrpc dead list as calc-operator" || fail "rrpc dead list as calc-operator: $out"
out=$("$BUILD/rrpc" dead --redis "$operator_url" calc purge 2>&1) && [ "$(redis-cli LLEN calc:dead)" = 0 ] &&
  ok "rrpc dead purge as calc-operator" || fail "rrpc dead purge as calc-operator: $out"
registry_failed "$logs/C calc-server.log" && fail "calc-server logged registry errors" ||
  ok "calc-server's heartbeat ran without a refusal"
stop_worker

# 7. Fail fast as calc-caller: the worker stopped, so the registered service
#    has no live worker; forgotten by the operator, it is waited on again.
out=$("$BUILD/rrpc" call --redis "$caller_url" --timeout 5 calc add '[1, 2]' 2>&1)
status=$?
[ "$status" = 6 ] && ok "calc-caller fails fast once the workers are gone (exit 6)" ||
  fail "fail fast as calc-caller: exit $status, '$out'"
out=$("$BUILD/rrpc" forget --redis "$operator_url" calc 2>&1) && [ "$(redis-cli EXISTS '{calc}:config')" = 0 ] &&
  ok "rrpc forget as calc-operator" || fail "rrpc forget as calc-operator: $out"
"$BUILD/rrpc" call --redis "$caller_url" --timeout 0.3 calc add '[1, 2]' >/dev/null 2>&1
status=$?
[ "$status" = 3 ] && ok "after forget the call waits again (exit 3)" || fail "after forget: exit $status"

# 8. Reliable mode as calc-worker: serve, max_queue, and a request held by
#    a killed worker redelivered by the reaper of the next one.
reliable=("$BUILD/calc-server" --redis "$worker_url" --reliable --workers 1 --heartbeat-ttl 1
  --max-queue 2)
if start_worker "C calc-server --reliable" "${reliable[@]}"; then
  expect "rrpc call -> reliable worker (max_queue check script)" 3 \
    "$BUILD/rrpc" call --redis "$caller_url" calc add '[1, 2]'
  "$BUILD/rrpc" notify --redis "$caller_url" calc sleep '[1000]'; sleep 0.2
  redis-cli RPUSH calc '{"jsonrpc":"2.0","method":"add","params":[0,0]}' \
    '{"jsonrpc":"2.0","method":"add","params":[0,0]}' >/dev/null
  out=$("$BUILD/rrpc" call --redis "$caller_url" --timeout 2 calc add '[1, 2]' 2>&1)
  status=$?
  [ "$status" = 7 ] && ok "a full queue (max_queue 2) refuses calc-caller: exit 7" ||
    fail "max_queue as calc-caller: exit $status, '$out'"
  sleep 1
  "$BUILD/rrpc" call --redis "$caller_url" --timeout 8 calc sleep '[1500]' >"$logs/held.out" 2>&1 &
  caller=$!
  sleep 0.5
  [ "$(redis-cli --scan --pattern '{calc}:inflight:*' | wc -l)" -ge 1 ] &&
    ok "the reliable worker holds the request in its in-flight list" ||
    fail "no in-flight list while a request is held"
  registry_failed "$logs/C calc-server --reliable.log" && fail "reliable worker logged errors"
  kill -9 "$server_pid"; wait "$server_pid" 2>/dev/null; server_pid=
  spawn reliable2 "${reliable[@]}"
  server_pid=$spawned
  wait "$caller"
  status=$?
  [ "$status" = 0 ] && [ "$(cat "$logs/held.out")" = 1500 ] &&
    ok "a killed worker's request is redelivered by the next one's reaper" ||
    { fail "redelivery: exit $status, '$(cat "$logs/held.out")'"; cat "$logs/reliable2.log"; }
  expect "rrpc call -> second reliable worker" 3 "$BUILD/rrpc" call --redis "$caller_url" calc add '[1, 2]'
  # A low call behind a backlog (max_queue script with a priority): the
  # take script takes it from {calc}:low.
  "$BUILD/rrpc" notify --redis "$caller_url" calc sleep '[500]'; sleep 0.2
  "$BUILD/rrpc" call --redis "$caller_url" --timeout 5 calc add '[1, 2]' >/dev/null 2>&1 &
  p0=$!; sleep 0.1
  expect "rrpc call --priority low -> reliable worker behind a backlog" 3 \
    "$BUILD/rrpc" call --redis "$caller_url" --timeout 5 --priority low calc add '[1, 2]'
  wait "$p0" || fail "the normal call before it failed"
  # The confused deputy again: the commit script is refused the foreign key.
  as_user "${C[@]}" RPUSH calc \
    '{"jsonrpc":"2.0","method":"add","params":[1,2],"id":"x","reply_to":"victim"}' \
    '{"jsonrpc":"2.0","method":"add","params":[1,2],"id":"calc","reply_to":"calc"}' >/dev/null
  # A refused reply key is dead-lettered by a second commit, after the
  # worker's next blocking take (up to 0.5 s).
  for _ in $(seq 30); do [ "$(redis-cli LLEN calc:dead)" -ge 2 ] && break; sleep 0.1; done
  [ "$(redis-cli EXISTS victim)" = 0 ] && [ "$(redis-cli LLEN calc)" = 0 ] &&
    [ "$(redis-cli LRANGE calc:dead 0 -1 | grep -c '"reply failed: NOPERM')" = 1 ] &&
    [ "$(redis-cli LRANGE calc:dead 0 -1 | grep -c "one of the service's own keys")" = 1 ] &&
    ok "reliable worker: reply_to a foreign key or the service list: dead letters, nothing written" ||
    fail "reliable reply_to victim/calc: victim=$(redis-cli EXISTS victim) calc=$(redis-cli LLEN calc) dead=$(redis-cli LLEN calc:dead)"
  registry_failed "$logs/reliable2.log" && fail "second reliable worker logged errors" ||
    ok "reliable workers ran heartbeat, take, commit and reap without a refusal"
  stop_worker
fi
"$BUILD/rrpc" forget --redis "$operator_url" calc >/dev/null 2>&1

# 9. The Ruby and Python peers as the same users.
expect_ok() { local name=$1 out; shift; if out=$("$@" 2>&1); then ok "$name"; else fail "$name: $out"; fi; }
if start_worker "Python calc_server.py" "$PY" "$root/clients/python/calc_server.py" --redis "$worker_url"; then
  expect "rrpc call -> Python worker" 3 "$BUILD/rrpc" call --redis "$caller_url" calc add '[1, 2]'
  expect_ok "Python calc_client.py as calc-caller" "$PY" "$root/clients/python/calc_client.py" --redis "$caller_url"
  expect_ok "Ruby calc_client.rb as calc-caller" ruby "$root/clients/ruby/calc_client.rb" --redis "$caller_url"
  sleep 1.2 # a heartbeat with stats
  stop_worker
  registry_failed "$logs/Python calc_server.py.log" && fail "Python worker logged a refused heartbeat" ||
    ok "Python worker: heartbeat, stats and unregistering as calc-worker"
fi
if start_worker "Ruby calc_server.rb" ruby "$root/clients/ruby/calc_server.rb" --redis "$worker_url"; then
  expect "rrpc call -> Ruby worker" 3 "$BUILD/rrpc" call --redis "$caller_url" calc add '[1, 2]'
  expect_ok "C calc-client -> Ruby worker" "$BUILD/calc-client" --redis "$caller_url"
  sleep 1.2 # a heartbeat with stats
  stop_worker
  registry_failed "$logs/Ruby calc_server.rb.log" && fail "Ruby worker logged a refused heartbeat" ||
    ok "Ruby worker: heartbeat, stats and unregistering as calc-worker"
  expect "rrpc call after the Ruby worker stopped (exit 6)" 6 \
    bash -c '"$0" call --redis "$1" --timeout 5 calc add "[1, 2]" >/dev/null 2>&1; echo $?' "$BUILD/rrpc" "$caller_url"
fi
finish
