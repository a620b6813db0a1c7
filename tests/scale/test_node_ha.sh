#!/usr/bin/env bash
# test_node_ha.sh -- the Node peer behind Redis Sentinel and on a Redis Cluster.
#
# Sentinel (tests/lib/redis_ha.sh: a master, a replica, three Sentinels):
# a Node server answers `rrpc call` and Node clients through the
# redis+sentinel:// URL; then the master is SIGKILLed and, once the
# Sentinels promote the replica, calls through the same URL must work again
# within a bound, both to the Node server (its worker followed the new
# master) and from a Node client that was connected to the old one.
# Cluster (3 masters): Node servers of services whose lists live on
# different masters answer `rrpc call` and Node clients (priorities,
# progress, notifications included), a Node client calls the C
# calc-server, and the replies land on other masters than the requests.
# Refused on a Cluster: a db other than 0 in the URL, and (as everywhere
# for the Node server) a service with limits.
#
# Usage: test_node_ha.sh BUILD_DIR
set -u
BUILD=$(cd "${1:?usage: test_node_ha.sh BUILD_DIR}" && pwd)
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
# shellcheck source=tests/lib/redis_ha.sh
. "$(dirname "$0")/../lib/redis_ha.sh"
node_ready || die "the Node peer's dependencies are missing"
calls=$rrpc_root/tests/scale/node_ha_calls.js

# ---- Sentinel --------------------------------------------------------------
start_sentinels nodemaster
url=$sentinel_url
ok "master :$sentinel_master, replica :$sentinel_replica, Sentinels ${sentinel_ports[*]}"

spawn js-server node "$calls" serve "$url" ha_js
call() { "$BUILD/rrpc" call --redis "$url" --timeout 1 ha_js add '[1, 2]'; }
wait_until 10 call || die "no answer from the Node server through $url"
[ "$(call)" = 3 ] || die "add [1, 2] did not give 3"
ok "rrpc call -> Node server through the Sentinel URL"
out=$(node "$calls" once "$url" ha_js) || die "Node client through the Sentinel URL: $out"
[ "$out" = '{"add":3,"multiply":20,"high":5,"progress":3,"seen":[1,2,3]}' ] || die "Node client got $out"
ok "Node client -> Node server through the Sentinel URL: $out"

# A refused master password ends the search at once, not a wait for Redis.
out=$(timeout 8 node "$calls" serve "${url/redis+sentinel:\/\//redis+sentinel://:wrong@}" ha_js 2>&1)
case $out in *'refused RedisError: ha_js: cannot start:'*AUTH*) ;; *) die "a wrong master password: $out" ;; esac
ok "a wrong master password is refused at once: ${out:0:110}..."

# A long-lived Node client calls all along (every 100 ms, timeout 1 s).
spawn js-loop node "$calls" loop "$url" ha_js 10
loop_pid=$spawned
wait_until 5 grep -q '^ok' "$test_dir/js-loop.log" || die "the long-lived Node client made no call"

sentinel_kill_master
wait_until 15 call || die "rrpc call -> Node server did not resume after the failover"
ok "rrpc call -> Node server works again $(($(now_ms) - killed)) ms after the kill (the worker followed)"
for i in 1 2 3; do [ "$(call)" = 3 ] || die "call $i after the failover failed"; done
out=$(node "$calls" once "$url" ha_js) || die "a new Node client after the failover: $out"
ok "a new Node client after the failover: $out"
# The long-lived client: successful calls after the kill, within 8 s of it.
wait "$loop_pid" 2>/dev/null
back=$(awk -v k="$killed" '$1 == "ok" && $2 > k { print $2 - k; exit }' "$test_dir/js-loop.log")
[ -n "$back" ] || die "the long-lived Node client made no call after the kill"
[ "$back" -le 8000 ] || die "the long-lived Node client came back only $back ms after the kill"
after=$(awk -v k="$killed" '$1 == "ok" && $2 > k' "$test_dir/js-loop.log" | wc -l)
[ "$after" -ge 10 ] || die "the long-lived Node client made only $after calls after the kill"
ok "the long-lived Node client calls again $back ms after the kill ($after calls since," \
  "$(grep -c '^err' "$test_dir/js-loop.log") failed during the failover)"

# A master demoted under the worker rather than killed: the old master comes
# back as a replica, a forced failover promotes it again, and the master the
# worker is on becomes a replica.  The Node server's BLPOP there ends with
# UNBLOCKED (and writes with READONLY): a lost link, so it asks the
# Sentinels again.  (The Sentinels' own reconfiguration also kills normal
# clients, CLIENT KILL TYPE normal, a second later: this check cannot tell
# the two apart, only that the worker leaves the demoted master.)
redis_node master-again "$sentinel_master" --replicaof 127.0.0.1 "$sentinel_replica"
back_synced() { redis-cli -p "$sentinel_master" info replication | grep -q 'master_link_status:up'; }
wait_until 10 back_synced || die "the old master did not sync as a replica"
# The Sentinels must see it up again before they can promote it.
known() { ! redis-cli -p "${sentinel_ports[0]}" sentinel replicas nodemaster | grep -q 's_down'; }
wait_until 10 known || die "the Sentinels did not see the old master come back"
redis-cli -p "${sentinel_ports[0]}" sentinel failover nodemaster >/dev/null
demoted=$(now_ms)
named_again() {
  redis-cli -p "${sentinel_ports[0]}" sentinel get-master-addr-by-name nodemaster | grep -qx "$sentinel_master"
}
wait_until 15 named_again || die "the forced failover did not promote :$sentinel_master"
# The Sentinels demote the old master only once they see it still claims the
# role (seconds later): done here at once, as they will.
redis-cli -p "$sentinel_replica" replicaof 127.0.0.1 "$sentinel_master" >/dev/null
wait_until 10 call || die "rrpc call -> Node server did not resume after the demotion"
ok "after a forced failover back to :$sentinel_master, rrpc call -> Node server works again" \
  "$(($(now_ms) - demoted)) ms after it began (the worker left the demoted master)"

# ---- Cluster ---------------------------------------------------------------
start_cluster 3 0
url=$cluster_url
ok "Cluster of 3 masters: ${cluster_ports[*]}"
# Which master owns KEY.
owner() {
  local slot p
  slot=$(redis-cli -p "${cluster_ports[0]}" cluster keyslot "$1")
  for p in "${cluster_ports[@]}"; do
    redis-cli -p "$p" cluster nodes | grep -q "myself.*connected.*\b$slot\b" && { echo "$p"; return; }
    redis-cli -p "$p" cluster nodes | awk -v s="$slot" '/myself/ { for (i = 9; i <= NF; i++) {
      split($i, r, "-"); if (s >= r[1] && s <= (r[2] == "" ? r[1] : r[2])) found = 1 } } END { exit !found }' &&
      { echo "$p"; return; }
  done
}
# Three service names whose lists live on three different masters.
services=() seen=""
for i in $(seq 0 200); do
  p=$(owner "hsvc$i")
  case " $seen " in *" $p "*) continue ;; esac
  services+=("hsvc$i") seen+=" $p"
  [ ${#services[@]} = 3 ] && break
done
[ ${#services[@]} = 3 ] || die "found no services on three masters"
ok "services ${services[*]} on masters$seen"

for s in "${services[@]}"; do spawn "js-$s" node "$calls" serve "$url" "$s"; done
spawn c-calc "$BUILD/calc-server" --redis "$url" --service hcalc --workers 2
for s in "${services[@]}"; do
  wait_until 10 "$BUILD/rrpc" call --redis "$url" --timeout 1 "$s" add '[1, 2]' ||
    die "no answer from the Node server of $s on the Cluster"
done
ok "rrpc call -> the three Node servers on the Cluster"
for s in "${services[@]}"; do
  out=$(node "$calls" once "$url" "$s") || die "Node client -> $s on the Cluster: $out"
  [ "$out" = '{"add":3,"multiply":20,"high":5,"progress":3,"seen":[1,2,3]}' ] || die "Node client -> $s got $out"
done
ok "Node client -> the three Node servers on the Cluster (named params, high priority, progress, notify)"
wait_until 10 "$BUILD/rrpc" call --redis "$url" --timeout 1 hcalc add '[1, 2]' || die "the C calc-server is not up"
out=$(node "$calls" once "$url" hcalc 2>&1)
[ "$out" = '{"add":3,"multiply":20,"high":5,"progress":3,"seen":[1,2,3]}' ] || die "Node client -> C calc-server: $out"
ok "Node client -> C calc-server on the Cluster"

# Replies on other masters than the requests: 20 calls of a long-lived
# client, each one's reply key's master counted.  Meanwhile the same client
# waits 1.5 s for the C calc-server's sleep: its BLPOP blocks one node's
# connection, so if the 20 shared it they would wait behind it.
spread=$(node -e '
const rrpc = require(process.argv[1]);
(async () => {
  const c = new rrpc.Client({ url: process.argv[2], timeout: 5 });
  await c.call(process.argv[3], "add", [0, 0]);
  const keys = [];
  const push = c.push.bind(c);
  c.push = (conn, queue, text, ...rest) => { keys.push(JSON.parse(text).reply_to); return push(conn, queue, text, ...rest); };
  let slept = false;
  const slow = c.call("hcalc", "sleep", [1500]).then(() => { slept = true; });
  await new Promise((resolve) => setTimeout(resolve, 100));
  for (let i = 0; i < 20; i++) if (await c.call(process.argv[3], "add", [i, 1]) !== i + 1) throw new Error("wrong");
  if (slept) throw new Error("the 20 calls waited for the sleeping one");
  await slow;
  await c.close();
  console.log(keys.slice(1).join("\n"));
})().catch((e) => { console.error(e); process.exit(1); });' "$rrpc_root/clients/node" "$url" "${services[0]}") ||
  die "20 calls from one Node client beside a slow one failed: $spread"
req=$(owner "${services[0]}")
other=0
for k in $spread; do [ "$(owner "$k")" != "$req" ] && other=$((other + 1)); done
[ "$other" -ge 5 ] || die "only $other of 20 replies lived on another master than the requests (:$req)"
ok "$other of 20 replies lived on other masters than the requests (:$req), none waiting behind" \
  "another call's BLPOP"

# Refused on a Cluster, clearly.
out=$(node "$calls" once "${url}/1" "${services[0]}" 2>&1)
case $out in *'TypeError: rrpc: a Redis Cluster has only db 0'*) ;; *) die "a db in a Cluster URL: $out" ;; esac
ok "a Cluster URL with a db is refused: $out"
redis-cli -c -p "${cluster_ports[0]}" hset "{hlimited}:config" limits '{"*":{"rate":10}}' >/dev/null
out=$(timeout 20 node "$calls" serve "$url" hlimited 2>&1)
case $out in *'refused Unsupported: hlimited: {hlimited}:config field limits is set'*) ;;
  *) die "a Node server of a service with limits on the Cluster: $out" ;; esac
ok "a Node server of a service with limits is refused on the Cluster too: ${out:0:120}..."
finish
