#!/usr/bin/env bash
# test_peers_ha.sh -- the Ruby and Python peers behind Redis Sentinel and on
# a Redis Cluster, with the C side's URLs.
#
# Sentinel: a master, a replica and three Sentinels (tests/lib/redis_ha.sh).
# A Ruby server (service rb) and a Python server (py) run with the
# redis+sentinel:// URL; `rrpc call` and long-lived Ruby and Python clients
# (each calling both services every 100 ms through the same URL) must get
# answers.  Then the master is SIGKILLed: once the Sentinels promote the
# replica, `rrpc call` to both services (which needs both peers' workers,
# blocked in BLPOP on the dead master, to have followed) and both
# long-lived clients must get answers again within a bound.  Then the old
# master's port comes back as a replica, the Sentinels promote it, and the
# master the peers are connected to is demoted under them (REPLICAOF):
# its UNBLOCKED and READONLY must count as a lost link, and servers and
# clients must reach the new master again.
#
# Cluster: 3 masters; services rb (Ruby server), py (Python server, with
# max_queue, so callers push with the max_queue script) and calc (the C
# calc-server) whose lists hash to three different masters, through a
# redis+cluster:// URL naming two seeds (the peers' lists away from the
# index of services, their S:dead and S:stats on two masters, so that a
# pipeline that spans them fails).  Ruby and Python clients call all
# three (add, a high-priority call, progress, a forward from one peer's
# server to the other's) and `rrpc call` calls the peers; the replies of a
# peer server must land on other masters than its requests (INFO
# commandstats: its RPUSHes on its list's master, the reply script's
# EVALSHAs on the others too).  The peers' registry (`rrpc ls`), a dead
# letter (its list and its count are in two slots) and the refusal of a
# Cluster URL with a db other than 0 (the same message as C's) are checked.
#
# Usage: test_peers_ha.sh BUILD_DIR
set -u
BUILD=$(cd "${1:?usage: test_peers_ha.sh BUILD_DIR}" && pwd)
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

# shellcheck source=tests/lib/redis_ha.sh
. "$(dirname "$0")/../lib/redis_ha.sh"

export PYTHONPATH="$rrpc_root/clients/python/src${PYTHONPATH:+:$PYTHONPATH}"
RUBYLIB_DIR="$rrpc_root/clients/ruby/lib"
RESUME_BOUND_MS=15000 # from the kill to the first answer, each caller

# ---- the peers' programs ---------------------------------------------------
# A long-lived client: calls add(i, 1) on every service every 100 ms with a
# 1 s timeout for SECONDS, printing "<ms> ok <service>" for a right answer
# and "<ms> err <service> <why>" for anything else.
cat >"$test_dir/loop.rb" <<'RUBY'
require 'rrpc'
url, seconds, *services = ARGV
client = RRPC::Client.new(url: url, timeout: 1)
$stdout.sync = true
ms = -> { (Time.now.to_f * 1000).to_i }
finish = Time.now + seconds.to_f
i = 0
while Time.now < finish
  services.each do |s|
    got = client.call(s, 'add', i, 1)
    puts got == i + 1 ? "#{ms.call} ok #{s}" : "#{ms.call} err #{s} wrong answer #{got}"
  rescue RRPC::Error => e
    puts "#{ms.call} err #{s} #{e.class}: #{e.message}"
  end
  i += 1
  sleep 0.1
end
RUBY
cat >"$test_dir/loop.py" <<'PY'
import sys, time
import rrpc
url, seconds, services = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
client = rrpc.Client(url, timeout=1)
finish, i = time.time() + seconds, 0
while time.time() < finish:
    for s in services:
        try:
            got = client.call(s, 'add', i, 1)
            print(f'{int(time.time() * 1000)} ' + (f'ok {s}' if got == i + 1 else f'err {s} wrong answer {got}'), flush=True)
        except rrpc.Error as exc:
            print(f'{int(time.time() * 1000)} err {s} {type(exc).__name__}: {exc}', flush=True)
    i += 1
    time.sleep(0.1)
PY

rb_server() { spawn "$1" ruby -I "$RUBYLIB_DIR" "$rrpc_root/clients/ruby/calc_server.rb" "${@:2}"; }
py_server() { spawn "$1" "$PY" -m rrpc.examples.calc_server "${@:2}"; }
c_call() { # c_call URL SERVICE: add [1, 2] gives 3
  [ "$("$BUILD/rrpc" call --redis "$1" --timeout 1 "$2" add '[1, 2]' 2>/dev/null)" = 3 ]
}
# answered_since LOG SERVICE MS: LOG has an "ok SERVICE" line stamped after MS.
answered_since() { awk -v s="$2" -v t="$3" '$2 == "ok" && $3 == s && $1 > t { f = 1 } END { exit !f }' "$1"; }
# first_answer_after LOG SERVICE MS: "<ms after MS> (<n> failed calls)" of
# the first answer after MS, and the calls that failed before it.
first_answer_after() {
  awk -v s="$2" -v t="$3" '$3 == s && $1 > t && $2 == "err" { n++ }
    $3 == s && $1 > t && $2 == "ok" { print $1 - t " ms (" n + 0 " failed calls)"; exit }' "$1"
}

# ---- Sentinel --------------------------------------------------------------
start_sentinels peerha
url=$sentinel_url
ok "master :$sentinel_master, replica :$sentinel_replica, Sentinels ${sentinel_ports[*]}"

rb_server sentinel-rb --redis "$url" --service rb
py_server sentinel-py --url "$url" --service py
both_c() { c_call "$url" rb && c_call "$url" py; }
wait_until 15 both_c || die "the peers' servers did not answer rrpc call through $url"
ok "Ruby and Python servers answer rrpc call through $url"

spawn sentinel-loop-rb ruby -I "$RUBYLIB_DIR" "$test_dir/loop.rb" "$url" 60 rb py
spawn sentinel-loop-py "$PY" "$test_dir/loop.py" "$url" 60 rb py
loops_answered() { # loops_answered SINCE: both clients got both services since SINCE
  local l s
  for l in sentinel-loop-rb sentinel-loop-py; do
    for s in rb py; do answered_since "$test_dir/$l.log" "$s" "$1" || return 1; done
  done
}
wait_until 15 loops_answered 0 || die "the peers' clients got no answers through $url"
ok "Ruby and Python clients call both servers through $url"

sentinel_kill_master

wait_until 20 both_c || die "rrpc call to the peers' servers did not resume after the failover"
resumed=$(($(now_ms) - killed))
[ "$resumed" -le "$RESUME_BOUND_MS" ] || fail "the peers' servers took $resumed ms to follow"
for i in 1 2 3; do both_c || die "call $i to the peers' servers after the failover failed"; done
ok "rrpc call -> Ruby and Python servers works again $resumed ms after the kill (their workers followed)"

wait_until 20 loops_answered "$killed" || die "a peer client did not resume after the failover"
for l in sentinel-loop-rb sentinel-loop-py; do
  for s in rb py; do
    took=$(first_answer_after "$test_dir/$l.log" "$s" "$killed")
    [ "${took%% *}" -le "$RESUME_BOUND_MS" ] || fail "$l -> $s resumed only after $took"
    ok "$l -> $s: answered again $took after the kill"
  done
done

# A failover back to the old master's port, restarted as a replica: the
# Sentinels promote it (SENTINEL FAILOVER), and the master the peers are
# still connected to is demoted under them (REPLICAOF, as the Sentinels do
# later by themselves): their blocked BLPOPs are cut with UNBLOCKED, their
# writes refused with READONLY, which must count as a lost link.
redis_node master-again "$sentinel_master" --replicaof 127.0.0.1 "$sentinel_replica"
replica_up() { redis-cli -p "$sentinel_master" info replication | grep -q 'master_link_status:up'; }
wait_until 15 replica_up || die "the restarted node never synced with :$sentinel_replica"
failover() { redis-cli -p "${sentinel_ports[0]}" sentinel failover peerha | grep -q OK; }
wait_until 15 failover || die "SENTINEL FAILOVER was refused"
named() { redis-cli -p "${sentinel_ports[0]}" sentinel get-master-addr-by-name peerha | grep -qx "$sentinel_master"; }
wait_until 15 named || die "the Sentinels did not promote :$sentinel_master"
redis-cli -p "$sentinel_replica" replicaof 127.0.0.1 "$sentinel_master" >/dev/null
demoted=$(now_ms)
ok "the Sentinels promoted :$sentinel_master; demoted :$sentinel_replica under the peers"
wait_until 20 both_c || die "rrpc call to the peers' servers did not resume after the demotion"
resumed=$(($(now_ms) - demoted))
[ "$resumed" -le "$RESUME_BOUND_MS" ] || fail "the peers' servers took $resumed ms to leave the demoted master"
ok "rrpc call -> Ruby and Python servers works again $resumed ms after the demotion"
# A call answered just as the demotion came may print after it: only
# answers a second later prove that the client left the demoted node.
wait_until 20 loops_answered $((demoted + 1000)) || die "a peer client did not leave the demoted master"
for l in sentinel-loop-rb sentinel-loop-py; do
  for s in rb py; do
    took=$(first_answer_after "$test_dir/$l.log" "$s" "$demoted")
    ok "$l -> $s: answered again $took after the demotion"
  done
done
for p in "${spawned_pids[@]}"; do kill -9 "$p" 2>/dev/null; done # the Sentinel part is over
for p in "${spawned_pids[@]}"; do wait "$p" 2>/dev/null; done
spawned_pids=()

# ---- Cluster ---------------------------------------------------------------
start_cluster 3 0
curl=$cluster_url
masters=("${cluster_ports[@]}")
ok "cluster of 3 masters: ${masters[*]}"

# The master that owns KEY: the others answer MOVED.
owner() {
  local m
  for m in "${masters[@]}"; do
    case "$(redis-cli -p "$m" exists "$1" 2>&1)" in MOVED*) ;; *) echo "$m"; return ;; esac
  done
}
# Three service names on three masters, in order: rb-N, py-N, calc-N; the
# peers' away from the index of services (rrpc:services, which a heartbeat
# writes too) and with their dead letters (S:dead) and stats (S:stats) on
# two different masters, as a dead letter writes both.
declare -A taken
index=$(owner rrpc:services)
services=()
for kind in rb py calc; do
  for n in $(seq 0 100); do
    m=$(owner "$kind-$n")
    if [ "$kind" = calc ]; then
      [ "$m" = "$index" ] || continue
    else
      { [ "$m" != "$index" ] && [ -z "${taken[$m]:-}" ]; } || continue
      [ "$(owner "$kind-$n:dead")" != "$(owner "$kind-$n:stats")" ] || continue
    fi
    taken[$m]=1 services+=("$kind-$n") homes+=("$m")
    break
  done
done
[ "${#services[@]}" = 3 ] || die "could not place three services on three masters"
rb=${services[0]} py=${services[1]} calc=${services[2]}
ok "services $rb, $py, $calc live on masters ${homes[*]}"

rb_server cluster-rb --redis "$curl" --service "$rb"
py_server cluster-py --url "$curl" --service "$py" --max-queue 100
spawn cluster-calc "$BUILD/calc-server" --redis "$curl" --service "$calc" --workers 2
all_c() { c_call "$curl" "$rb" && c_call "$curl" "$py" && c_call "$curl" "$calc"; }
wait_until 15 all_c || die "not every server answered rrpc call through $curl"
ok "rrpc call -> Ruby, Python and C servers through $curl"

stat() { # stat PORT COMMAND: calls of COMMAND on the node since the reset
  redis-cli -p "$1" info commandstats | tr -d '\r' |
    awk -F'[=,:]' -v c="cmdstat_$2" '$1 == c { print $3; f = 1 } END { if (!f) print 0 }'
}
reset_stats() { local m; for m in "${masters[@]}"; do redis-cli -p "$m" config resetstat >/dev/null; done; }
# replies_elsewhere HOME: the reply script ran on a master other than HOME.
replies_elsewhere() {
  local m
  for m in "${masters[@]}"; do
    [ "$m" != "$1" ] && [ "$(stat "$m" evalsha)" -gt 0 ] && return 0
  done
  return 1
}

# Python client -> the Ruby server, alone, then the C server and a
# forward from the Python server to the Ruby one.
reset_stats
out=$("$PY" - "$curl" "$rb" "$py" "$calc" 2>&1 <<'PY'
import sys
import rrpc
url, rb, py, calc = sys.argv[1:]
client = rrpc.Client(url, timeout=3)
for i in range(20):
    assert client.call(rb, 'add', i, 1) == i + 1
assert client.call(rb, 'add', 2, 2, priority='high') == 4
seen = []
assert client.call(rb, 'count', 3, 1, progress=seen.append) == 3 and seen == [1, 2, 3], seen
assert client.call(calc, 'add', 5, 6) == 11
assert client.call(py, 'forward', rb, 'add', [7, 8]) == 15
print('done')
PY
) || fail "Python client on the Cluster: $out"
[ "$(stat "${homes[0]}" rpush)" -ge 20 ] || fail "the Python client's requests to $rb did not reach its master"
if replies_elsewhere "${homes[0]}"; then
  ok "Python client -> Ruby server on $curl: 20 calls, requests on :${homes[0]}, replies on other masters too"
else
  fail "no reply of the Ruby server landed on another master than its list's"
fi
if [ "${out##*$'\n'}" = 'done' ]; then
  ok "Python client: priority, progress, C server, Python server forwarding to Ruby"
fi

reset_stats
out=$(ruby -I "$RUBYLIB_DIR" - "$curl" "$rb" "$py" "$calc" 2>&1 <<'RUBY'
require 'rrpc'
url, rb, py, calc = ARGV
client = RRPC::Client.new(url: url, timeout: 3)
20.times { |i| raise "add #{i}" unless client.call(py, 'add', i, 1) == i + 1 }
raise 'high' unless client.call(py, 'add', 2, 2, priority: 'high') == 4
seen = []
raise "progress #{seen}" unless client.call(py, 'count', 3, 1, progress: ->(v) { seen << v }) == 3 && seen == [1, 2, 3]
raise 'calc' unless client.call(calc, 'add', 5, 6) == 11
raise 'forward' unless client.call(rb, 'forward', py, 'add', [7, 8]) == 15
puts 'done'
RUBY
) || fail "Ruby client on the Cluster: $out"
# The Python server has max_queue: the Ruby client pushes with EVAL.
[ "$(stat "${homes[1]}" eval)" -ge 20 ] || fail "the Ruby client's requests to $py did not reach its master"
if replies_elsewhere "${homes[1]}"; then
  ok "Ruby client -> Python server (max_queue) on $curl: 20 calls, requests on :${homes[1]}, replies on other masters too"
else
  fail "no reply of the Python server landed on another master than its list's"
fi
if [ "$out" = 'done' ]; then
  ok "Ruby client: priority, progress, C server, Ruby server forwarding to Python"
fi

# The registry: both peers' records, read by rrpc ls through the Cluster.
ls_out=$("$BUILD/rrpc" ls --redis "$curl" 2>&1)
echo "$ls_out"
for s in "$rb" "$py"; do
  grep -q "$s" <<<"$ls_out" || fail "rrpc ls does not list $s: $ls_out"
done
ok "rrpc ls lists the peers' services on the Cluster"

# A dead letter: S:dead and S:stats hash to different slots.
for s in "$rb" "$py"; do
  redis-cli -c -p "${masters[0]}" rpush "$s" 'not json' >/dev/null
done
dead_ok() {
  local s
  for s in "$rb" "$py"; do
    [ "$(redis-cli -c -p "${masters[0]}" llen "$s:dead")" = 1 ] || return 1
    [ "$(redis-cli -c -p "${masters[0]}" hget "$s:stats" dead)" = 1 ] || return 1
  done
}
if wait_until 5 dead_ok; then
  ok "Ruby and Python servers record dead letters and count them on the Cluster"
else
  fail "a peer's dead letter or its count is missing on the Cluster"
fi

# Refused: a Cluster has db 0 only, in all three languages alike.
db_url="$curl/1"
c_err=$("$BUILD/rrpc" call --redis "$db_url" "$rb" add '[1, 2]' 2>&1)
rb_err=$(ruby -I "$RUBYLIB_DIR" -e 'require "rrpc"; begin; RRPC::Client.new(url: ARGV[0]); rescue ArgumentError => e; puts e.message; end' "$db_url" 2>&1)
py_err=$("$PY" -c 'import sys, rrpc
try:
    rrpc.Client(sys.argv[1])
except ValueError as exc:
    print(exc)' "$db_url" 2>&1)
for e in "$c_err" "$rb_err" "$py_err"; do
  grep -q 'a Redis Cluster has only db 0' <<<"$e" || fail "a Cluster URL with db 1 was not refused clearly: $e"
done
ok "a Cluster URL with db 1 is refused by C, Ruby and Python: ${py_err}"

finish
