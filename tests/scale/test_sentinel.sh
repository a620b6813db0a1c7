#!/usr/bin/env bash
# test_sentinel.sh -- rrpc follows a Redis Sentinel failover.
#
# Starts a master, one replica and three Sentinels (down-after 1 s) on free
# loopback ports, runs calc-server with a redis+sentinel:// URL, and checks
# calls through the same URL.  Then it SIGKILLs the master and checks that,
# within a bounded time, (1) the Sentinels promote the replica, (2) one-shot
# calls (`rrpc call`) work again, which needs the server's workers to have
# followed the new master, and (3) long-lived sync and async clients
# (`rrpc bench`), connected to the old master when it died, make successful
# calls again afterwards.
#
# Usage: test_sentinel.sh BUILD_DIR
set -u
BUILD=$(cd "${1:?usage: test_sentinel.sh BUILD_DIR}" && pwd)
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

# shellcheck source=tests/lib/redis_ha.sh
. "$(dirname "$0")/../lib/redis_ha.sh"

start_sentinels calcmaster
url=$sentinel_url
ok "master :$sentinel_master, replica :$sentinel_replica, Sentinels ${sentinel_ports[*]}"

spawn server "$BUILD/calc-server" --redis "$url" --workers 4
call() { "$BUILD/rrpc" call --redis "$url" --timeout 1 calc add '[1, 2]'; }
wait_until 10 call || die "no answer through the Sentinel URL"
[ "$(call)" = 3 ] || die "add [1, 2] did not give 3"
ok "calls through $url"

# Long-lived clients across the failover.  Each call sleeps 100 ms in the
# server, so a sync client makes at most ~10 calls per second, an async one
# with a window of 2 at most ~20; 4 workers serve both without a queue.
bench() { # bench NAME MODE...
  local name=$1; shift
  spawn "$name" "$BUILD/rrpc" bench --redis "$url" "$@" --duration 12 --timeout 2 \
    --method sleep --params '[100]' --expect 100 --json calc
}
bench bench-sync --sync
sync_pid=$spawned
bench bench-async --async --window 2
async_pid=$spawned
sleep 1

sentinel_kill_master
wait_until 15 call || die "calls did not resume after the failover"
resumed=$(( $(now_ms) - killed ))
for i in 1 2 3 4 5 6; do
  [ "$(call)" = 3 ] || die "call $i after the failover failed"
done
ok "rrpc call works again $resumed ms after the kill (workers followed)"

wait "$sync_pid" "$async_pid" 2>/dev/null
# Before the kill there was about 1 s: at most ~10 sync or ~20 async calls.
# More than 2.5 times that needs the client to have come back.
for b in bench-sync:25 bench-async:50; do
  ok=$("$PY" -c 'import json,sys; print(json.loads(sys.stdin.read().splitlines()[-1])["calls"])' \
       <"$test_dir/${b%:*}.log" 2>/dev/null) || die "${b%:*} gave no report"
  [ "$ok" -ge "${b#*:}" ] ||
    die "${b%:*} made only $ok successful calls: it did not follow the failover"
  ok "${b%:*}: $ok successful calls across the failover"
done
finish
