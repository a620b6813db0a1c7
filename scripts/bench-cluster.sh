#!/usr/bin/env bash
# bench-cluster.sh -- calls/s of calc-server on a 3-master Redis Cluster
# (a sharded service) against a single Redis, as ratios measured in one run.
#
# Starts, through the test harness (tests/lib/common.sh), a private
# redis-server and a private Redis Cluster of 3 masters (no replicas), all on
# loopback TCP ports below the kernel's ephemeral range, and serves on them:
#   - on the single Redis: calc-server as bench.sh runs it (one list, one
#     worker per core), and the same sharded as on the cluster (--shards
#     RRPC_BENCH_SHARDS, default 3, --workers RRPC_BENCH_WORKERS, default 6);
#   - on the cluster: that sharded calc-server, its service named so that
#     its shards' lists spread evenly over the three masters;
# each in at-most-once and in --reliable mode.  Then RRPC_BENCH_ROUNDS
# (default 3) rounds of, for each mode and for 32 sync callers and
# `rrpc bench --async` 4 x 256: the single Redis, the single Redis sharded,
# and the cluster (last in odd rounds, first in even ones),
# RRPC_BENCH_SECONDS (default 4) each.  Each cluster run is
# paired with the two single-Redis runs of its round and the ratios are the
# medians of the per-round ratios (the machines are shared and their speed
# drifts).  It accounts the CPU time of the caller, of calc-server and of
# Redis (summed over the masters) per call, prints the markdown table on
# stdout and progress on stderr, keeps every raw output in
# BUILD_DIR/bench-cluster, and stops every process it started, whatever
# happens.  On a 2-core machine three masters share the cores of one, so the
# cluster is not expected to be faster there: the figure says what the
# cluster's routing and the spread over shards cost, not what it scales to.
#
# Usage: scripts/bench-cluster.sh [BUILD_DIR]     (about 3 minutes)
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
# With the tests' harness: free_ports, redis_node, redis_up, wait_until.
# shellcheck source=scripts/lib/bench-common.sh
. "$here/scripts/lib/bench-common.sh"
SHARDS=${RRPC_BENCH_SHARDS:-3}
WORKERS=${RRPC_BENCH_WORKERS:-6}
need rrpc calc-server
clear_out
cd "$here" || exit 1

# ---- the two Redis deployments --------------------------------------------
mapfile -t ports < <(free_ports 4 bus)
[ "${#ports[@]}" = 4 ] || die "no free loopback ports"
single=${ports[0]}
masters=("${ports[@]:1}")
redis_node single "$single"
redis_pids=("$spawned")
cluster_pids=()
for p in "${masters[@]}"; do
  redis_node "node-$p" "$p" --cluster-enabled yes --cluster-config-file nodes.conf
  cluster_pids+=("$spawned")
done
up() { for p in "${ports[@]}"; do redis_up -p "$p" || return 1; done; }
wait_until 10 up || die "redis-server did not start"
addrs=()
for p in "${masters[@]}"; do addrs+=("127.0.0.1:$p"); done
redis-cli --cluster create "${addrs[@]}" --cluster-yes >"$out/create.txt" 2>&1 ||
  die "redis-cli --cluster create failed (see $out/create.txt)"
cluster_ok() {
  for p in "${masters[@]}"; do redis-cli -p "$p" cluster info | grep -q 'cluster_state:ok' || return 1; done
}
wait_until 20 cluster_ok || die "the cluster never reached cluster_state:ok"
single_url="redis://127.0.0.1:$single"
cluster_url="redis+cluster://127.0.0.1:${masters[0]},127.0.0.1:${masters[1]}"

# spread PREFIX: the first name PREFIX-N whose SHARDS lists (N, N#1, ...)
# land evenly on the three masters (no master with two lists more than
# another), and how many lists each master holds.
spread() {
  "$PY" - "${masters[0]}" "$1" "$SHARDS" <<'PYEOF'
import sys
import redis
from redis.crc import key_slot

port, prefix, shards = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
ranges = [(s[0], s[1], s[2][1]) for s in redis.Redis(port=port).execute_command("CLUSTER SLOTS")]
owner = lambda key: next(p for a, b, p in ranges if a <= key_slot(key.encode()) <= b)
masters = sorted({p for _, _, p in ranges})
for n in range(1000):
    name = f"{prefix}-{n}"
    lists = [name] + [f"{name}#{k}" for k in range(1, shards)]
    count = [sum(owner(l) == m for l in lists) for m in masters]
    if max(count) - min(count) <= 1:
        print(name, "/".join(map(str, count)))
        break
PYEOF
}
read -r cl_amo cl_amo_spread < <(spread cl)
read -r cl_rel cl_rel_spread < <(spread rcl)
if [ -z "${cl_amo_spread:-}" ] || [ -z "${cl_rel_spread:-}" ]; then
  die "no service name spreads $SHARDS shards over the masters"
fi

# ---- the services ---------------------------------------------------------
# serve NAME URL ARGS...: calc-server as service NAME in the background, its
# pid in server_pid[NAME] (killed on exit); waits until it answers.
declare -A server_pid
serve() {
  local name=$1 url=$2
  shift 2
  spawn "$name" "$BUILD/calc-server" --redis "$url" --service "$name" "$@"
  server_pid[$name]=$spawned
  await_service "$name" "$BUILD/rrpc" --redis "$url" --timeout 0.2
}
sharded=(--shards "$SHARDS" --workers "$WORKERS")
serve calc "$single_url"
serve scalc "$single_url" "${sharded[@]}"
serve "$cl_amo" "$cluster_url" "${sharded[@]}"
serve relcalc "$single_url" --reliable
serve srelcalc "$single_url" --reliable "${sharded[@]}"
serve "$cl_rel" "$cluster_url" --reliable "${sharded[@]}"
say "single Redis on $single, cluster masters on ${masters[*]}; $SHARDS shards with" \
  "$WORKERS workers; cluster services $cl_amo ($cl_amo_spread lists per master)," \
  "$cl_rel ($cl_rel_spread); ${SECONDS_EACH}s per run, $ROUNDS rounds"

# bench NAME SERVICE URL REDIS_PIDS ARGS...: `rrpc bench` of SERVICE on URL,
# measured (bench-common.sh's measure) with the CPU of calc-server and of
# the redis-servers REDIS_PIDS.
bench() {
  local name=$1 service=$2 url=$3 rpids=$4
  shift 4
  local -a rrpc_args=(--redis "$url") side_cpu
  # shellcheck disable=SC2206 # RPIDS is a list of pids
  side_cpu=(cpu_of $rpids)
  rrpc_bench "$name" "${server_pid[$service]}" "$@" "$service"
}

for r in $(seq 1 "$ROUNDS"); do
  for mode in amo rel; do
    if [ "$mode" = amo ]; then
      one=calc two=scalc three=$cl_amo
    else
      one=relcalc two=srelcalc three=$cl_rel
    fi
    for load in sync32 async4; do
      if [ "$load" = sync32 ]; then args=(--connections 32); else
        args=(--async --connections 4 --window 256)
      fi
      # Odd rounds run the cluster last, even rounds first: a machine
      # that speeds up or slows down during a round favours neither side.
      [ $((r % 2)) = 0 ] &&
        bench "$mode.$load.cluster.r$r" "$three" "$cluster_url" "${cluster_pids[*]}" "${args[@]}"
      bench "$mode.$load.single.r$r" "$one" "$single_url" "${redis_pids[*]}" "${args[@]}"
      bench "$mode.$load.sharded.r$r" "$two" "$single_url" "${redis_pids[*]}" "${args[@]}"
      [ $((r % 2)) = 1 ] &&
        bench "$mode.$load.cluster.r$r" "$three" "$cluster_url" "${cluster_pids[*]}" "${args[@]}"
    done
  done
done
for name in "$cl_amo" "$cl_rel"; do
  grep -h -i 'error\|warn' "$out/$name.log" | head -5 | sed "s/^/bench-cluster: $name: /" >&2
done

report "$SHARDS" "$WORKERS" "$(nproc)" "$cl_amo_spread" <<'PYEOF'
import sys

from bench_report import Runs, errors, lat, listed, rate, x

R = Runs(sys.argv[1], int(sys.argv[2]))
rounds, shards, workers, cores, spread = R.rounds, *sys.argv[3:]


def cpus(runs, k):
    return " / ".join("-" if r is None or "cpu" not in r else f"{r['cpu'][k]:.1f}" for r in runs)


print(f"| mode, load | 1 Redis, 1 list: calls/s | 1 Redis, {shards} shards | 3 masters, {shards} "
      f"shards | 3 masters / 1 Redis | 3 masters / 1 Redis, {shards} shards "
      "| p50: 1 Redis / 3 masters | Redis CPU us/call: 1 Redis / sharded / 3 masters "
      "| calc-server CPU us/call: same |")
print("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |")
notes = []
for mode, mname in (("amo", "at-most-once"), ("rel", "reliable")):
    for load, lname in (("sync32", "32 sync callers"), ("async4", "async 4 x 256")):
        name = f"{mode}.{load}"
        runs = [R.combined(f"{name}.{setup}") for setup in ("single", "sharded", "cluster")]
        rates = [f"{rate(r['rate'])}{errors(r)}" if r else "(failed)" for r in runs]
        v1, all1 = R.paired(f"{name}.cluster", f"{name}.single")
        v2, all2 = R.paired(f"{name}.cluster", f"{name}.sharded")
        one, _, three = runs
        p50 = f"{lat(one['p50'])} / {lat(three['p50'])}" if one and three else "-"
        print(f"| {mname}, {lname} | {' | '.join(rates)} | **{x(v1)}** | {x(v2)} | {p50} "
              f"| {cpus(runs, 2)} | {cpus(runs, 1)} |")
        notes.append(f"{mname}, {lname}: {listed(all1, 2)} (to 1 Redis), {listed(all2, 2)} "
                     "(to 1 Redis sharded)")
print()
print(f"Medians of {rounds} rounds on {cores} cores. The ratios are calls/s on the 3-master "
      "cluster over calls/s on the single Redis, each the median of the per-round ratios (every "
      f"cluster run paired with the two single-Redis runs just before it in odd rounds, just "
      "after it in even ones). calc-server runs one "
      f"worker per core on 1 list, and {workers} workers on {shards} shards ({spread} lists "
      "per master on the cluster); Redis CPU is summed over the three masters. Per round: " +
      "; ".join(notes) + ".")
PYEOF
