# redis_ha.sh -- throw-away Redis Clusters and Sentinel groups for tests.
#
# Sourced after tests/lib/common.sh (it uses free_ports, redis_node,
# spawn, wait_until and die).  Every test that runs rrpc or a peer on a
# Cluster or behind Sentinels starts them the same way, so the waits that
# make a fresh group usable (cluster_state:ok, replicas synced, a Sentinel
# quorum that knows the replica) live here once.
#
#   start_cluster MASTERS [REPLICAS_PER_MASTER] [NODE-ARGS..]
#       MASTERS masters (and replicas) with cluster-node-timeout 1 s;
#       sets cluster_ports (masters first as redis-cli assigns them),
#       cluster_pids, and cluster_url (redis+cluster:// naming two seeds).
#   start_sentinels NAME
#       a master, one replica and three Sentinels (down-after 1 s,
#       failover-timeout 4 s) monitoring it as NAME; sets sentinel_master,
#       sentinel_master_pid, sentinel_replica, sentinel_ports and
#       sentinel_url (redis+sentinel://.../NAME).
#   cluster_ok PORT..        every PORT says cluster_state:ok
#   sentinel_promoted        the Sentinels name the replica as master
#   sentinel_kill_master     SIGKILLs the master and waits (20 s at most)
#                            for the Sentinels to promote the replica; sets
#                            killed (now_ms at the kill)

start_cluster() {
  local masters=$1 replicas=${2:-0} p
  shift 2 2>/dev/null || shift $#
  mapfile -t cluster_ports < <(free_ports $((masters * (replicas + 1))) bus)
  cluster_pids=()
  for p in "${cluster_ports[@]}"; do
    redis_node "node-$p" "$p" --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-node-timeout 1000 --repl-diskless-sync-delay 0 "$@"
    cluster_pids+=("$spawned")
  done
  wait_until 10 cluster_nodes_up || die "the cluster's nodes did not start"
  local addrs=()
  for p in "${cluster_ports[@]}"; do addrs+=("127.0.0.1:$p"); done
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas "$replicas" --cluster-yes \
    >"$test_dir/cluster-create.log" 2>&1 || die "redis-cli --cluster create failed"
  wait_until 20 cluster_ok "${cluster_ports[@]}" || die "the cluster never reached cluster_state:ok"
  # A replica that never finished its first sync cannot take over.
  cluster_want_synced=$((masters * replicas))
  wait_until 20 cluster_replicas_synced || die "the cluster's replicas never synced"
  cluster_url="redis+cluster://127.0.0.1:${cluster_ports[0]},127.0.0.1:${cluster_ports[1]}"
}

cluster_nodes_up() {
  local p
  for p in "${cluster_ports[@]}"; do redis_up -p "$p" || return 1; done
}

cluster_ok() {
  local p
  for p in "$@"; do redis-cli -p "$p" cluster info | grep -q 'cluster_state:ok' || return 1; done
}

cluster_replicas_synced() {
  local p synced
  synced=$(for p in "${cluster_ports[@]}"; do redis-cli -p "$p" info replication; done |
    grep -c 'master_link_status:up')
  [ "$synced" = "$cluster_want_synced" ]
}

start_sentinels() {
  local name=$1 s ports
  mapfile -t ports < <(free_ports 5)
  sentinel_master=${ports[0]} sentinel_replica=${ports[1]}
  sentinel_ports=("${ports[2]}" "${ports[3]}" "${ports[4]}")
  sentinel_name=$name
  redis_node master "$sentinel_master"
  sentinel_master_pid=$spawned
  redis_node replica "$sentinel_replica" --replicaof 127.0.0.1 "$sentinel_master"
  # Sentinels started after the sync see the replica in their first INFO.
  wait_until 10 sentinel_replica_synced || die "the replica never synced"
  for s in "${sentinel_ports[@]}"; do
    cat >"$test_dir/sentinel-$s.conf" <<CONF
port $s
bind 127.0.0.1
dir $test_dir
sentinel monitor $name 127.0.0.1 $sentinel_master 2
sentinel down-after-milliseconds $name 1000
sentinel failover-timeout $name 4000
sentinel parallel-syncs $name 1
CONF
    spawn "sentinel-$s" redis-sentinel "$test_dir/sentinel-$s.conf"
  done
  wait_until 15 sentinel_quorum_ok || die "the Sentinels never reached a quorum"
  sentinel_url="redis+sentinel://127.0.0.1:${sentinel_ports[0]},127.0.0.1:${sentinel_ports[1]}"
  sentinel_url+=",127.0.0.1:${sentinel_ports[2]}/$name"
}

sentinel_replica_synced() {
  redis-cli -p "$sentinel_replica" info replication | grep -q 'master_link_status:up'
}

# Every Sentinel knows the others and the replica.
sentinel_quorum_ok() {
  local s
  for s in "${sentinel_ports[@]}"; do
    redis-cli -p "$s" sentinel ckquorum "$sentinel_name" | grep -q '^OK' || return 1
    [ "$(redis-cli -p "$s" sentinel replicas "$sentinel_name" | grep -c "^$sentinel_replica\$")" = 1 ] ||
      return 1
  done
}

sentinel_promoted() {
  redis-cli -p "${sentinel_ports[0]}" sentinel get-master-addr-by-name "$sentinel_name" |
    grep -qx "$sentinel_replica"
}

sentinel_kill_master() {
  kill -9 "$sentinel_master_pid"
  wait "$sentinel_master_pid" 2>/dev/null
  killed=$(now_ms)
  ok "SIGKILLed the master at :$sentinel_master"
  wait_until 20 sentinel_promoted || die "the Sentinels did not promote the replica"
  ok "the Sentinels promoted :$sentinel_replica after $(($(now_ms) - killed)) ms"
}
