#!/usr/bin/env bash
# test_cluster.sh -- rrpc on a Redis Cluster, across a master failover.
#
# Starts 3 masters + 3 replicas (cluster-node-timeout 1 s) on free
# loopback ports, picks three service names whose lists hash to three
# different masters, and runs a calc-server for each with a
# redis+cluster:// URL naming only two seed nodes.  Calls from `rrpc call`
# must reach all three (their random reply keys land on any node, so the
# request and the reply of one call usually live on different nodes), and
# so must async benches (`rrpc bench --async`), without a single error.
# A service sharded over 3 lists (calc-server --shards 3) must have them on
# two masters or more, and calls queued while its server is frozen must
# land on more than one of them and all be answered after it resumes.
# Then the second service's slot is migrated live to another master under
# an async bench and sync calls (calls during the move need ASK followed,
# after it MOVED; the bench must see 0 errors), and the master owning the
# first service's list is SIGKILLed under a long-lived sync client and a
# long-lived async one; once its replica is promoted, calls to every
# service must work again, within a bounded time, through the same URL,
# and both long-lived clients too.
#
# Usage: test_cluster.sh BUILD_DIR
set -u
BUILD=$(cd "${1:?usage: test_cluster.sh BUILD_DIR}" && pwd)
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

# shellcheck source=tests/lib/redis_ha.sh
. "$(dirname "$0")/../lib/redis_ha.sh"

start_cluster 3 1
ports=("${cluster_ports[@]}") pids=("${cluster_pids[@]}")
ok "cluster of 6 nodes: ${ports[*]}"

# The master port that owns SLOT, from CLUSTER SLOTS as redis-cli prints it.
owner() {
  redis-cli -p "$1" cluster slots | awk -v s="$2" '
    NR % 1 == 0 { line[NR] = $0 }
    END {
      for (i = 1; i <= NR; i++)
        if (line[i] ~ /^[0-9]+$/ && line[i+1] ~ /^[0-9]+$/ && s + 0 >= line[i] + 0 &&
            s + 0 <= line[i+1] + 0) { print line[i+3]; exit }
    }'
}
# One service name per master: svc-<n> for the smallest n landing there.
declare -A by_master
services=()
for n in $(seq 0 200); do
  name="svc-$n"
  slot=$(redis-cli -p "${ports[0]}" cluster keyslot "$name")
  m=$(owner "${ports[0]}" "$slot")
  if [ -n "$m" ] && [ -z "${by_master[$m]:-}" ]; then
    by_master[$m]=$name
    services+=("$name")
    masters+=("$m")
  fi
  [ "${#services[@]}" = 3 ] && break
done
[ "${#services[@]}" = 3 ] || die "could not find service names on three masters"
ok "services ${services[*]} live on masters ${masters[*]}"

url=$cluster_url
for s in "${services[@]}"; do
  spawn "server-$s" "$BUILD/calc-server" --redis "$url" --service "$s" --workers 2
done
call() { [ "$("$BUILD/rrpc" call --redis "$url" --timeout 1 "$1" add '[1, 2]')" = 3 ]; }
all_answer() { for s in "${services[@]}"; do call "$s" || return 1; done; }
wait_until 10 all_answer || die "not every service answered through $url"
for i in 1 2 3 4 5; do
  all_answer || die "round $i of calls failed"
done
ok "$(( 6 * ${#services[@]} )) calls to services on three masters"

# rrpc dead on a Cluster: a service's dead letters live on their own key's
# master (S:dead has no hash tag), whichever node the client asks first.
# purge once sent MULTI/EXEC to the node of slot 0 and LLEN and DEL to the
# key's: one service whose S:dead is on each master.
declare -A dead_by_master
dead_services=()
for n in $(seq 0 300); do
  m=$(owner "${ports[0]}" "$(redis-cli -p "${ports[0]}" cluster keyslot "dl-$n:dead")")
  if [ -n "$m" ] && [ -z "${dead_by_master[$m]:-}" ]; then
    dead_by_master[$m]=1
    dead_services+=("dl-$n")
  fi
  [ "${#dead_services[@]}" = 3 ] && break
done
[ "${#dead_services[@]}" = 3 ] || die "could not find dead-letter keys on three masters"
for s in "${dead_services[@]}"; do
  redis-cli -c -p "${ports[0]}" rpush "$s:dead" '{"reason":"test","time":1,"message":"x"}' \
    '{"reason":"test","time":2,"message":"y"}' '{"reason":"test","time":3}' >/dev/null
  n=$("$BUILD/rrpc" dead --redis "$url" --json "$s" list |
    "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)))')
  [ "$n" = 3 ] || die "rrpc dead list $s on the cluster: $n dead letters, not 3"
  out=$("$BUILD/rrpc" dead --redis "$url" --json "$s" purge 2>&1)
  [ "$out" = '{"service":"'"$s"'","purged":3}' ] || die "rrpc dead purge $s on the cluster: $out"
  [ "$(redis-cli -c -p "${ports[0]}" llen "$s:dead")" = 0 ] || die "purge left dead letters of $s"
done
ok "rrpc dead list and purge on every master's dead letters"

# The async client: one bench per service, so pushes go to three masters.
# Each client's pop link blocks in BLMPOP on the master that owns its
# random reply key; CLIENT LIST (only the async client sends BLMPOP) shows
# where, so the test knows calls whose reply list lives on another master
# than the service list were among them -- the usual case, which a bench
# falls into with probability 8/9; a few more benches make it certain.
# abench NAME SERVICE ARGS...: an async bench in the background ($spawned).
abench() {
  local name=$1 svc=$2; shift 2
  spawn "$name" "$BUILD/rrpc" bench --redis "$url" --async --connections 2 --window 64 \
    --json "$@" "$svc"
}
# bench_field NAME FIELD: a field of bench NAME's JSON report.
bench_field() {
  "$PY" -c 'import json,sys; print(json.loads(sys.stdin.read().splitlines()[-1])[sys.argv[1]])' \
    "$2" <"$test_dir/$1.log" 2>/dev/null
}
# pops_away I: async pop links blocked on masters other than masters[I].
pops_away() {
  local n=0 m
  for m in "${masters[@]}"; do
    [ "$m" = "${masters[$1]}" ] || n=$(( n + $(redis-cli -p "$m" client list | grep -c 'cmd=blmpop') ))
  done
  echo "$n"
}
away=0 rounds=0
for i in 0 1 2 0 1 2 0 1 2; do
  [ "$rounds" -ge 3 ] && [ "$away" -gt 0 ] && break
  rounds=$(( rounds + 1 )) s=${services[$i]}
  abench "abench-$rounds" "$s" --duration 2
  pid=$spawned
  sleep 1
  away=$(( away + $(pops_away "$i") ))
  wait "$pid" || die "async bench of $s failed"
  calls=$(bench_field "abench-$rounds" calls) errors=$(bench_field "abench-$rounds" errors)
  [ "$errors" = 0 ] && [ "${calls:-0}" -ge 100 ] ||
    die "async bench of $s: $calls calls, $errors errors"
  ok "async bench of $s (master :${masters[$i]}): $calls calls in 2 s, 0 errors"
done
[ "$away" -gt 0 ] || die "no async reply list ever lived on another master than its service"
ok "$away async reply list(s) lived on another master than the service they called"

# One service sharded over 3 lists ("calc", "calc#1", "calc#2": no hash
# tag, so their slots are unrelated).  With this cluster's slot layout they
# live on two or three masters; the sync clients spread calls over them.
shard_keys=(calc 'calc#1' 'calc#2')
shard_masters=$(for k in "${shard_keys[@]}"; do
  owner "${ports[0]}" "$(redis-cli -c -p "${ports[0]}" cluster keyslot "$k")"; done | sort -u)
[ "$(echo "$shard_masters" | wc -l)" -ge 2 ] ||
  die "the shards of calc all live on one master: $shard_masters"
spawn server-sharded "$BUILD/calc-server" --redis "$url" --service calc --shards 3 \
  --heartbeat-ttl 10
sharded_pid=$spawned
wait_until 10 call calc || die "the sharded service did not answer"
# Freeze the server; once its blocked pops have timed out (0.5 s), calls
# queue up where the clients put them.
kill -STOP "$sharded_pid"
sleep 1
spawn bench-sharded "$BUILD/rrpc" bench --redis "$url" --sync --connections 12 --calls 12 \
  --timeout 15 --json calc
sharded_bench=$spawned
shard_len() { redis-cli -c -p "${ports[0]}" llen "$1"; }
queued() {
  local total=0 used=0 n
  for k in "${shard_keys[@]}"; do
    n=$(shard_len "$k"); total=$(( total + n )); [ "$n" -gt 0 ] && used=$(( used + 1 ))
  done
  [ "$total" = 12 ] && [ "$used" -ge 2 ]
}
wait_until 10 queued || { kill -CONT "$sharded_pid"
  die "12 calls were not queued over 2+ shards: $(for k in "${shard_keys[@]}"; do
    echo -n "$k=$(shard_len "$k") "; done)"; }
lens=$(for k in "${shard_keys[@]}"; do echo -n "$k=$(shard_len "$k") "; done)
info_json=$("$BUILD/rrpc" info --redis "$url" --json calc)
echo "$info_json" | "$PY" -c 'import json,sys; d=json.load(sys.stdin); sys.exit(not (d["queue"] == 12 and d["shards"] == 3))' ||
  { kill -CONT "$sharded_pid"; die "rrpc info does not sum the shards: $info_json"; }
kill -CONT "$sharded_pid"
wait "$sharded_bench" 2>/dev/null
answered=$("$PY" -c 'import json,sys; d=json.loads(sys.stdin.read().splitlines()[-1]); print(d["calls"] if d["errors"] == 0 else -1)' \
     <"$test_dir/bench-sharded.log" 2>/dev/null) || die "rrpc bench gave no report"
[ "$answered" = 12 ] || die "only $answered of 12 queued calls were answered"
for i in 1 2 3; do call calc || die "call $i to the sharded service failed"; done
ok "calc over 3 shards on masters $(echo $shard_masters): 12 calls queued ($lens), all answered"
kill "$sharded_pid"
# Fail fast over the Cluster, async: the stopped server took its entry out,
# so calc is registered with no live worker and async calls end at once as
# unavailable, nothing queued (the registry read's TIME goes to another
# master than its {calc} keys).
wait "$sharded_pid" 2>/dev/null
"$BUILD/rrpc" bench --redis "$url" --async --calls 5 --timeout 10 --json calc \
  >"$test_dir/abench-gone.log" 2>&1
[ "$(bench_field abench-gone errors)" = 5 ] && grep -q unavailable "$test_dir/abench-gone.log" &&
  [ "$(shard_len calc)$(shard_len 'calc#1')$(shard_len 'calc#2')" = 000 ] ||
  die "async calls to the stopped sharded service: $(tail -1 "$test_dir/abench-gone.log")"
ok "async calls to the stopped sharded service failed fast as unavailable, nothing queued"

# Live slot migration of the second service's list to the third master.
# While the slot is MIGRATING, commands for a key the old owner lacks are
# answered with ASK (the CLI's RPUSH, the workers' next BLPOP); once it is
# moved, the workers' pops on the old owner get MOVED.  Calls must go on
# working throughout, which needs both redirections followed.
slot=$(redis-cli -p "${ports[0]}" cluster keyslot "${services[1]}")
src=${masters[1]} dst=${masters[2]}
src_id=$(redis-cli -p "$src" cluster myid) dst_id=$(redis-cli -p "$dst" cluster myid)
# An async bench runs across the whole move: its pipelined RPUSHes get ASK
# while the slot migrates and MOVED once it has moved, and must lose no
# call (no error of any kind is accepted: nothing is down, only redirected).
abench abench-migrate "${services[1]}" --duration 8 --timeout 5
migrate_bench=$spawned
sleep 1
redis-cli -p "$dst" cluster setslot "$slot" importing "$src_id" >/dev/null
redis-cli -p "$src" cluster setslot "$slot" migrating "$dst_id" >/dev/null
call_slow() { [ "$("$BUILD/rrpc" call --redis "$url" --timeout 3 "$1" add '[1, 2]')" = 3 ]; }
for i in 1 2 3; do
  call_slow "${services[1]}" || die "call $i during the migration of slot $slot failed"
done
ok "calls to ${services[1]} while its slot $slot migrates :$src -> :$dst (ASK)"
for k in $(redis-cli -p "$src" cluster getkeysinslot "$slot" 100); do
  redis-cli -p "$src" migrate 127.0.0.1 "$dst" "$k" 0 5000 >/dev/null
done
for p in "$dst" "$src" "${masters[0]}"; do
  redis-cli -p "$p" cluster setslot "$slot" node "$dst_id" >/dev/null
done
for i in 1 2 3; do
  call_slow "${services[1]}" || die "call $i after the migration of slot $slot failed"
done
[ "$(owner "${ports[0]}" "$slot")" = "$dst" ] || die "slot $slot did not move"
ok "calls to ${services[1]} after its slot moved to :$dst (MOVED)"
kill -0 "$migrate_bench" 2>/dev/null || die "the async bench ended before the slot moved"
wait "$migrate_bench"
calls=$(bench_field abench-migrate calls) errors=$(bench_field abench-migrate errors)
[ "$errors" = 0 ] && [ "${calls:-0}" -ge 100 ] ||
  die "async bench across the migration: $calls calls, $errors errors"
ok "an async bench across the migration (ASK, then MOVED): $calls calls, 0 errors"

# A long-lived sync client across the failover: each call sleeps 100 ms in
# the server, so ~1 s before the kill allows at most ~10 successful calls.
spawn bench "$BUILD/rrpc" bench --redis "$url" --sync --duration 9 --timeout 2 \
  --method sleep --params '[100]' --expect 100 --json "${services[0]}"
bench_pid=$spawned
# And a long-lived async client, on the third service so the two do not
# share workers.  Its links reach every master, so it loses them too and
# must reconnect to the new map by itself.  Each call sleeps 20 ms and two
# workers serve it: at most ~100 calls/s, so ~1 s before the kill allows
# ~110 successful calls; 200 or more mean it resumed after the failover.
# Errors while the master is down are expected, as for the sync client.
spawn abench-failover "$BUILD/rrpc" bench --redis "$url" --async --connections 1 --window 8 \
  --duration 10 --timeout 2 --method sleep --params '[20]' --expect 20 --json "${services[2]}"
abench_pid=$spawned
sleep 1

victim=${masters[0]}
for i in "${!ports[@]}"; do [ "${ports[$i]}" = "$victim" ] && victim_pid=${pids[$i]}; done
{ kill -9 "$victim_pid"; wait "$victim_pid"; } 2>/dev/null
killed=$(now_ms)
ok "SIGKILLed master :$victim (it owns ${services[0]})"

live=()
for p in "${ports[@]}"; do [ "$p" != "$victim" ] && live+=("$p"); done
promoted() {
  local m
  m=$(owner "${live[0]}" "$(redis-cli -p "${live[0]}" cluster keyslot "${services[0]}")")
  [ -n "$m" ] && [ "$m" != "$victim" ] && cluster_ok "${live[@]}"
}
wait_until 20 promoted || { redis-cli -p "${live[0]}" cluster nodes; die "no replica took over from :$victim"; }
ok "a replica took over after $(( $(now_ms) - killed )) ms"
wait_until 20 all_answer || die "calls did not resume after the failover"
ok "every service answers again $(( $(now_ms) - killed )) ms after the kill"
for i in 1 2 3 4 5; do
  all_answer || die "round $i of calls after the failover failed"
done
ok "15 more calls after the failover"
wait "$bench_pid" 2>/dev/null
ok=$("$PY" -c 'import json,sys; print(json.loads(sys.stdin.read().splitlines()[-1])["calls"])' \
     <"$test_dir/bench.log" 2>/dev/null) || die "rrpc bench gave no report"
[ "$ok" -ge 25 ] || die "a long-lived client made only $ok calls: it did not follow the failover"
ok "a long-lived sync client made $ok successful calls across the failover"
wait "$abench_pid" 2>/dev/null
calls=$(bench_field abench-failover calls) errors=$(bench_field abench-failover errors)
[ "${calls:-0}" -ge 200 ] ||
  die "a long-lived async client made only $calls calls ($errors errors): it did not resume"
ok "a long-lived async client made $calls successful calls across the failover ($errors failed during it)"
finish
