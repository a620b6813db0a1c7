#!/usr/bin/env bash
# test_reliable_cluster.sh -- reliable mode on a 3-master Redis Cluster, and
# sharded (on the cluster and on a single Redis).  Seconds, for make test;
# the long run with failovers is make chaos (tests/chaos/chaos.py).
#
# - calc-server --reliable on a redis+cluster:// URL answers calls whose
#   reply keys live on other masters than the service's list;
# - a calc-server --reliable killed (SIGKILL) in the middle of `sleep`: the
#   request is answered once by another worker (one response on its reply
#   key, which lives on another master), counted as redelivered;
# - chaos_worker --reliable with an effect in the service's slot
#   ({S}:effects), killed in the middle of a call: the effect happens once;
# - a sharded reliable service on the cluster (3 shards on 2+ masters): a
#   request of shard 1 held by a killed worker is answered once, and its
#   memory is in shard 1's slot; and on a single Redis, the same with an
#   effect applied once;
# - limits (not supported on a Cluster yet): calc-server --rate refuses to
#   start there, and a limits field set by hand is logged as not enforced.
#
# Usage: test_reliable_cluster.sh BUILD_DIR
set -u
BUILD=$(cd "${1:?usage: test_reliable_cluster.sh BUILD_DIR}" && pwd)
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

# shellcheck source=tests/lib/redis_ha.sh
. "$(dirname "$0")/../lib/redis_ha.sh"

start_cluster 3 0
ports=("${cluster_ports[@]}")
ok "cluster of 3 masters: ${ports[*]}"
url=$cluster_url
rc() { redis-cli -c -p "${ports[0]}" "$@"; }
# The port of the master owning KEY.
owner_of() {
  local slot
  slot=$(rc cluster keyslot "$1")
  rc cluster slots | "$PY" -c '
import sys
lines = sys.stdin.read().split()
slot = int(sys.argv[1])
i = 0
while i + 4 < len(lines):
    if lines[i].isdigit() and lines[i + 1].isdigit() and int(lines[i]) <= slot <= int(lines[i + 1]):
        print(lines[i + 3]); break
    i += 1' "$slot"
}
# A reply key on another master than KEY's.
elsewhere() {
  local home n
  home=$(owner_of "$1")
  for n in $(seq 0 100); do
    [ "$(owner_of "$2-$n")" != "$home" ] && { echo "$2-$n"; return; }
  done
}
# A request TEXT for METHOD with PARAMS, id ID, reply key REPLY.
request() { printf '{"jsonrpc":"2.0","method":"%s","params":%s,"id":"%s","reply_to":"%s"}' "$@"; }
# Whether LIST's in-flight hashes hold anything (the keys are in its slot).
held() {
  local k n=0
  for k in $(redis-cli -p "$(owner_of "$1")" keys "{$1}:inflight:*"); do
    n=$(( n + $(redis-cli -p "$(owner_of "$1")" hlen "$k") ))
  done
  [ "$n" -gt 0 ]
}

# ---- calls --------------------------------------------------------------
svc=rcl
spawn server-a "$BUILD/calc-server" --redis "$url" --service "$svc" --workers 2 --reliable \
  --heartbeat-ttl 1
a=$spawned
call() { [ "$("$BUILD/rrpc" call --redis "$url" --timeout 2 "$svc" add "[$1, 2]")" = $(( $1 + 2 )) ]; }
wait_until 10 call 0 || die "the reliable service did not answer on the cluster"
good=0
for i in $(seq 1 20); do call "$i" && good=$(( good + 1 )); done
[ "$good" = 20 ] && ok "20 reliable calls on the cluster" || fail "reliable calls: $good of 20"
[ -z "$(rc keys "{$svc}:dead")$(rc llen "$svc:dead" | grep -v '^0$')" ] ||
  fail "dead letters after plain calls: $(rc lrange "$svc:dead" 0 -1)"

# ---- a worker killed in the middle of sleep -------------------------------
reply=$(elsewhere "$svc" rcl-reply)
[ -n "$reply" ] || die "no reply key on another master"
rc rpush "$svc" "$(request sleep '[1500]' k1 "$reply")" >/dev/null
wait_until 5 held "$svc" || die "the sleep request was never held"
{ kill -9 "$a"; wait "$a"; } 2>/dev/null
spawn server-b "$BUILD/calc-server" --redis "$url" --service "$svc" --workers 2 --reliable \
  --heartbeat-ttl 1
got=$(redis-cli -c -p "$(owner_of "$reply")" blpop "$reply" 10 | tail -1)
case "$got" in
*'"result":1500'*'"id":"k1"'* | *'"id":"k1"'*'"result":1500'*) ok "killed mid-call: answered by another worker" ;;
*) fail "killed mid-call: got '$got'" ;;
esac
sleep 0.5
[ "$(redis-cli -p "$(owner_of "$reply")" llen "$reply")" = 0 ] &&
  ok "killed mid-call: answered once" || fail "a second answer on $reply"
redelivered=$(rc hget "$svc:stats" redelivered)
[ "${redelivered:-0}" -ge 1 ] && ok "counted as redelivered ($redelivered)" ||
  fail "redelivered not counted: '$redelivered'"
held "$svc" && fail "something is still held after the answer" || ok "nothing left in flight"

# ---- effects in the service's slot, exactly once ------------------------
svc2=rce
spawn chaos-a "$BUILD/tests/chaos_worker" --redis "$url" --service "$svc2" --workers 1 --reliable \
  --heartbeat-ttl 1 --effects-key "{$svc2}:effects"
ca=$spawned
reply2=$(elsewhere "$svc2" rce-reply)
rc rpush "$svc2" "$(request effect '["e1", 21, 1500]' e1 "$reply2")" >/dev/null
wait_until 5 held "$svc2" || die "the effect request was never held"
{ kill -9 "$ca"; wait "$ca"; } 2>/dev/null
spawn chaos-b "$BUILD/tests/chaos_worker" --redis "$url" --service "$svc2" --workers 2 --reliable \
  --heartbeat-ttl 1 --effects-key "{$svc2}:effects"
got=$(redis-cli -c -p "$(owner_of "$reply2")" blpop "$reply2" 10 | tail -1)
case "$got" in *'"result":42'*) ok "effect call answered after the kill" ;;
*) fail "effect call after the kill: got '$got'" ;; esac
rc rpush "$svc2" "$(request effect '["e1", 21, 0]' e1 "$reply2")" >/dev/null # a resend
got=$(redis-cli -c -p "$(owner_of "$reply2")" blpop "$reply2" 10 | tail -1)
case "$got" in *'"result":42'*) ok "a resend is answered from memory" ;;
*) fail "resend: got '$got'" ;; esac
n=$(rc hget "{$svc2}:effects" e1)
[ "$n" = 1 ] && ok "the effect happened once (kill, redelivery, resend)" || fail "effect count $n"

# ---- sharded on the cluster ---------------------------------------------
svc3=rcs
spawn shard-a "$BUILD/calc-server" --redis "$url" --service "$svc3" --shards 3 --reliable \
  --heartbeat-ttl 1
sa=$spawned
homes=$(for k in "$svc3" "$svc3#1" "$svc3#2"; do owner_of "$k"; done | sort -u | wc -l)
[ "$homes" -ge 2 ] && ok "the shards of $svc3 live on $homes masters" || fail "shards on one master"
shard_call() { [ "$("$BUILD/rrpc" call --redis "$url" --timeout 2 "$svc3" add '[2, 3]')" = 5 ]; }
wait_until 10 shard_call || die "the sharded reliable service did not answer"
good=0
for i in $(seq 1 9); do shard_call && good=$(( good + 1 )); done
[ "$good" = 9 ] && ok "9 calls over 3 reliable shards" || fail "sharded calls: $good of 9"
reply3=$(elsewhere "$svc3#1" rcs-reply)
rc rpush "$svc3#1" "$(request sleep '[1500]' s1 "$reply3")" >/dev/null
wait_until 5 held "$svc3#1" || die "shard 1's request was never held"
{ kill -9 "$sa"; wait "$sa"; } 2>/dev/null
spawn shard-b "$BUILD/calc-server" --redis "$url" --service "$svc3" --shards 3 --reliable \
  --heartbeat-ttl 1
got=$(redis-cli -c -p "$(owner_of "$reply3")" blpop "$reply3" 10 | tail -1)
case "$got" in *'"result":1500'*) ok "shard 1's request answered after the kill" ;;
*) fail "shard 1 after the kill: got '$got'" ;; esac
sleep 0.5
[ "$(redis-cli -p "$(owner_of "$reply3")" llen "$reply3")" = 0 ] || fail "shard 1: a second answer"
[ -n "$(redis-cli -p "$(owner_of "$svc3#1")" keys "{$svc3#1}:done:*")" ] &&
  ok "shard 1's memory is in its own slot" || fail "no {$svc3#1}:done: key"
held "$svc3#1" && fail "shard 1 still holds a request" || ok "shard 1: nothing left in flight"

# ---- sharded on a single Redis --------------------------------------------
single=$(free_port)
redis_node single "$single"
wait_until 10 redis_up -p "$single" || die "the single Redis did not start"
surl="redis://127.0.0.1:$single"
sc() { redis-cli -p "$single" "$@"; }
spawn single-a "$BUILD/tests/chaos_worker" --redis "$surl" --service one --workers 2 --shards 2 \
  --reliable --heartbeat-ttl 1 --effects-key one:effects
xa=$spawned
wait_until 5 bash -c "[ \"\$(redis-cli -p $single scard '{one#1}:inflight')\" = 1 ]" ||
  die "shard 1's worker never registered"
sc rpush 'one#1' "$(request effect '["x1", 4, 1500]' x1 one-reply)" >/dev/null
single_held() { [ -n "$(sc keys '{one#1}:inflight:*')" ]; }
wait_until 5 single_held || die "the single Redis's shard 1 never held the request"
{ kill -9 "$xa"; wait "$xa"; } 2>/dev/null
spawn single-b "$BUILD/tests/chaos_worker" --redis "$surl" --service one --workers 2 --shards 2 \
  --reliable --heartbeat-ttl 1 --effects-key one:effects
got=$(sc blpop one-reply 10 | tail -1)
case "$got" in *'"result":8'*) ok "single Redis, shard 1: answered after the kill" ;;
*) fail "single Redis, shard 1: got '$got'" ;; esac
[ "$(sc hget one:effects x1)" = 1 ] && ok "single Redis, shard 1: the effect happened once" ||
  fail "single Redis: effect count $(sc hget one:effects x1)"
[ "$(sc llen one)" = 0 ] && [ "$(sc llen 'one#1')" = 0 ] && ok "redelivered to its own shard" ||
  fail "left on the lists: one=$(sc llen one) one#1=$(sc llen 'one#1')"

# ---- limits are not supported on a Cluster yet: refused, or said ------------
out=$(timeout 10 "$BUILD/calc-server" --redis "$url" --service lim --rate add=5/s 2>&1)
[ $? != 0 ] && grep -q "not supported on Redis Cluster" <<<"$out" &&
  ok "calc-server --rate on a cluster refuses to start, saying why" ||
  fail "calc-server --rate on a cluster: $out"
rc hset '{lim2}:config' limits '{"add": {"rate": 5}}' >/dev/null
spawn lim2 "$BUILD/calc-server" --redis "$url" --service lim2 --workers 1
wait_until 10 grep -q "NOT enforced" "$test_dir/lim2.log" &&
  ok "a limits field found on a cluster is logged as not enforced" ||
  fail "no word of the limits that a cluster cannot enforce"
out=$("$BUILD/rrpc" limits --redis "$url" lim2 set '{"add": {"rate": 9}}' 2>&1)
[ $? != 0 ] && grep -q "not supported on Redis Cluster" <<<"$out" &&
  ok "rrpc limits set on a cluster is refused, saying why" || fail "rrpc limits set on a cluster: $out"

finish
