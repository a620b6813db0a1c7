#!/usr/bin/env bash
# test_start_wait.sh -- a server started before its Redis waits for it.
#
# Workers are started together with Redis (supervisors, compose files,
# Kubernetes), so rrpc_server_run must not give up when Redis is not there
# yet: it waits with backoff, logs that once, and serves as soon as Redis
# answers.  Checked here against real redis-servers started by the test on
# free loopback ports and a unix socket in a temp dir:
#   1. TCP: calc-server first, redis-server 2 s later -> calls answered; one
#      "waiting" line and one "answered" line in the log, not one per try;
#      a client with no Redis still fails at once with its connection error
#   2. unix socket, --reliable: the same
#   3. --start-timeout 1 with no Redis: exit 1 within 1-2.5 s, a clear message
#   4. Redis loading its data (LOADING) at start: waits, then serves
#   5. refusals do not heal by waiting: WRONGPASS and NOPERM exit at once
#   6. SIGTERM while waiting: a clean exit 0
#   7. a Redis Cluster still forming (nodes up later, no slot map yet)
#
# Usage: test_start_wait.sh BUILD_DIR
set -u
BUILD=$(cd "${1:?usage: test_start_wait.sh BUILD_DIR}" && pwd)
. "$(dirname "$0")/../scale/lib.sh"

ok() { echo "ok   $*"; }
elapsed_since() { echo $(( $(now_ms) - $1 )); }
call() { # call URL -> prints the answer of add [1, 2]
  "$BUILD/rrpc" call --redis "$1" --timeout 1 calc add '[1, 2]' 2>&1
}
answers() { [ "$(call "$1")" = 3 ]; }
# count PATTERN LOG: lines of LOG matching PATTERN
count() { grep -c -- "$1" "$scale_dir/$2.log"; }
# running PID: the process is still alive (not a zombie either)
running() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

mapfile -t ports < <(free_ports 3)

# --- 1. TCP, Redis 2 s late ---------------------------------------------
url="redis://127.0.0.1:${ports[0]}"
spawn server-tcp "$BUILD/calc-server" --redis "$url" --workers 2 --heartbeat-interval 0.2
server=$spawned
started=$(now_ms)
out=$("$BUILD/rrpc" call --redis "$url" --timeout 5 calc add '[1, 2]' 2>&1)
status=$? took=$(elapsed_since "$started")
[ "$status" != 0 ] && [ "$took" -lt 1000 ] && echo "$out" | grep -q 'cannot connect' ||
  fail "a client with no Redis: exit $status after $took ms: $out"
ok "a client with no Redis fails at once ($took ms): $out"
sleep 2
running "$server" || fail "calc-server exited while Redis was not there"
redis_node redis-tcp "${ports[0]}"
wait_until 10 answers "$url" || fail "calc-server never answered after Redis came up"
ok "calc-server started 2 s before Redis answers add [1, 2] = $(call "$url")"
[ "$(count 'waiting for Redis' server-tcp)" = 1 ] && [ "$(count 'Redis answered after' server-tcp)" = 1 ] ||
  fail "the log should say once that it waits and once that Redis answered"
ok "logged once: $(grep -h 'waiting for Redis\|Redis answered' "$scale_dir/server-tcp.log" | tr '\n' '|')"
kill -TERM "$server"; wait "$server"; status=$?
[ "$status" = 0 ] || fail "calc-server did not stop cleanly: $status"

# --- 2. unix socket, reliable ------------------------------------------
sock="$scale_dir/redis.sock"
url="unix://$sock"
spawn server-unix "$BUILD/calc-server" --redis "$url" --workers 2 --reliable --heartbeat-ttl 1
server=$spawned
sleep 2
running "$server" || fail "calc-server --reliable exited while the socket was not there"
redis_node redis-unix 0 --unixsocket "$sock" --unixsocketperm 700
wait_until 10 answers "$url" || fail "calc-server --reliable never answered on the socket"
ok "calc-server --reliable started 2 s before Redis answers on $url"
kill -TERM "$server"; wait "$server" || fail "calc-server --reliable did not stop cleanly"

# --- 3. a bound on the wait ---------------------------------------------
url="redis://127.0.0.1:${ports[1]}"
started=$(now_ms)
out=$("$BUILD/calc-server" --redis "$url" --workers 1 --start-timeout 1 2>&1)
status=$? took=$(elapsed_since "$started")
[ "$status" = 1 ] && [ "$took" -ge 900 ] && [ "$took" -le 2500 ] &&
  echo "$out" | grep -q 'Redis did not answer within the start timeout (1 s): cannot connect' ||
  fail "--start-timeout 1: exit $status after $took ms: $out"
ok "--start-timeout 1 with no Redis: exit 1 after $took ms: $(echo "$out" | tail -1)"

# --- 4. Redis still loading its data ------------------------------------
# An RDB of 20000 keys loaded at 100 us a key (key-load-delay), with events
# processed every KiB so that Redis answers LOADING meanwhile: ~2 s.
mkdir -p "$scale_dir/loading"
redis_node seed "${ports[2]}" --dir "$scale_dir/loading" --dbfilename dump.rdb
seed=$spawned
wait_until 10 redis-cli -p "${ports[2]}" ping || fail "seed redis did not start"
redis-cli -p "${ports[2]}" eval "for i = 1, 20000 do redis.call('SET', 'k' .. i, 'x') end" 0 >/dev/null
redis-cli -p "${ports[2]}" save >/dev/null
kill -9 "$seed"; wait "$seed" 2>/dev/null
url="redis://127.0.0.1:${ports[2]}"
redis_node loading "${ports[2]}" --dir "$scale_dir/loading" --dbfilename dump.rdb \
  --key-load-delay 100 --loading-process-events-interval-bytes 1024
loading_now() { redis-cli -p "${ports[2]}" ping | grep -q LOADING; }
wait_until 5 loading_now || fail "Redis never answered LOADING"
spawn server-loading "$BUILD/calc-server" --redis "$url" --workers 2 --heartbeat-interval 0.2
server=$spawned
wait_until 20 answers "$url" || fail "calc-server never answered after Redis loaded"
running "$server" || fail "calc-server exited"
grep -q 'waiting for Redis.*LOADING' "$scale_dir/server-loading.log" ||
  fail "calc-server did not say it waits for a loading Redis"
ok "calc-server started while Redis was loading waits and answers: $(grep -h 'waiting for Redis' "$scale_dir/server-loading.log")"
kill -TERM "$server"; wait "$server" || fail "calc-server (loading) did not stop cleanly"

# --- 5. refusals fail at once ---------------------------------------------
redis-cli -p "${ports[2]}" config set requirepass secret >/dev/null
redis-cli -p "${ports[2]}" -a secret --no-auth-warning \
  acl setuser popper on '>pw' '~*' +ping +time +blpop +lpop >/dev/null
for case in "wrong:WRONGPASS:redis://default:wrong@127.0.0.1:${ports[2]}" \
            "acl:NOPERM:redis://popper:pw@127.0.0.1:${ports[2]}"; do
  IFS=: read -r name want rest <<<"$case"
  u=${case#*:*:}
  started=$(now_ms)
  out=$(timeout 10 "$BUILD/calc-server" --redis "$u" --workers 1 2>&1)
  status=$? took=$(elapsed_since "$started")
  [ "$status" = 1 ] && [ "$took" -lt 2000 ] && echo "$out" | grep -q "$want" &&
    ! echo "$out" | grep -q 'waiting for Redis' ||
    fail "$name: exit $status after $took ms: $out"
  ok "$want at start: exit 1 at once ($took ms): $(echo "$out" | tail -1)"
done

# --- 6. stopped while waiting ---------------------------------------------
spawn server-stop "$BUILD/calc-server" --redis "redis://127.0.0.1:${ports[1]}" --workers 1
server=$spawned
sleep 1
started=$(now_ms)
kill -TERM "$server"; wait "$server"; status=$? took=$(elapsed_since "$started")
[ "$status" = 0 ] && [ "$took" -lt 1000 ] || fail "SIGTERM while waiting: exit $status after $took ms"
ok "SIGTERM while waiting for Redis: exit 0 after $took ms"

# --- 7. a Redis Cluster still forming -------------------------------------
mapfile -t cports < <(free_ports 3 bus)
url="redis+cluster://127.0.0.1:${cports[0]},127.0.0.1:${cports[1]}"
spawn server-cluster "$BUILD/calc-server" --redis "$url" --workers 2 --heartbeat-interval 0.2
server=$spawned
sleep 1 # no node at all yet
for p in "${cports[@]}"; do
  redis_node "node-$p" "$p" --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-node-timeout 1000
done
up() { for p in "${cports[@]}"; do redis-cli -p "$p" ping | grep -q PONG || return 1; done; }
wait_until 10 up || fail "the cluster nodes did not start"
sleep 1 # nodes up, no slot map yet
running "$server" || fail "calc-server exited while the cluster had no slot map"
addrs=()
for p in "${cports[@]}"; do addrs+=("127.0.0.1:$p"); done
redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes \
  >"$scale_dir/create.log" 2>&1 || fail "redis-cli --cluster create failed"
wait_until 30 answers "$url" || fail "calc-server never answered on the new cluster"
ok "calc-server started before its Redis Cluster formed answers through $url"
grep -h 'waiting for Redis\|Redis answered' "$scale_dir/server-cluster.log" | sed 's/^/     /'
kill -TERM "$server"; wait "$server" || fail "calc-server (cluster) did not stop cleanly"
echo "all start-wait checks passed"
