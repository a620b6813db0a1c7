#!/usr/bin/env bash
# test_priority_progress.sh -- priorities and progress (PROTOCOL.md 7)
# across the C, Ruby, Python and Node peers.
#
# Progress: every client (rrpc call --stream, call_peer.rb/.py/.js) streams
# calc's count(3, 20) from every calc server (C, Ruby, Python, Node): the
# values 1, 2, 3 in order, one per line, then the result 3, once.
#
# Priorities: for each server language, one worker made busy by a long
# sleep (rrpc call, cancelled with SIGINT -- Ctrl-C -- once the queue is
# set up, which also shows every server stopping a cancelled handler), then
# a normal, a low and a high call queued in that order by three different
# languages' clients (the normal one makes the backlog the priority lists
# need); the worker serves them high, normal, low, which the order of its
# replies shows (seen with MONITOR: each level's call sleeps a different
# number of ms, 201 for high, 202 for normal, 203 for low, which its
# response carries as its result).  The C client and server
# take part only if `rrpc call --help` mentions --priority (the C side of
# priorities comes from another branch); without it the three peers are
# covered among themselves.
#
# Usage (under tests/harness/with-redis.sh): test_priority_progress.sh BUILD_DIR
set -u
: "${REDIS_URL:?run me under tests/harness/with-redis.sh}"
BUILD=$(cd "${1:?usage: test_priority_progress.sh BUILD_DIR}" && pwd)
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
root=$rrpc_root
here=$root/tests/interop
node_ready || die "the Node peer's dependencies are missing (scripts/node-deps.sh)"
cli() { # redis-cli on $REDIS_URL: a unix socket (with-redis.sh's) or a TCP URL
  case $REDIS_URL in
    unix://*) local sock=${REDIS_URL#unix://} && redis-cli -s "${sock%%\?*}" "$@" ;;
    *) redis-cli -u "$REDIS_URL" "$@" ;;
  esac
}

llen_is() { [ "$(cli llen "$1")" = "$2" ]; } # llen_is LIST N

client() { # client LANG ARGS...: one call from LANG's client
  local lang=$1
  shift
  case $lang in
    c) "$BUILD/rrpc" call "$@" ;;
    rb) ruby "$here/call_peer.rb" "$@" ;;
    py) "$PY" "$here/call_peer.py" "$@" ;;
    js) node "$here/call_peer.js" "$@" ;;
  esac
}

spawn c-server "$BUILD/calc-server" --service pp_c --workers 1
spawn rb-server ruby "$root/clients/ruby/calc_server.rb" --service pp_rb
spawn py-server "$PY" "$root/clients/python/calc_server.py" --service pp_py
spawn js-server node "$root/clients/node/calc_server.js" --service pp_js
for s in pp_c pp_rb pp_py pp_js; do
  wait_until 10 "$BUILD/rrpc" call --timeout 0.2 "$s" add '[0, 0]' || die "service $s never answered"
done

# ---- progress: every client from every server ----------------------------
want=$'1\n2\n3\n3'
for lang in c rb py js; do
  for s in pp_c pp_rb pp_py pp_js; do
    got=$(client "$lang" --stream "$s" count '[3, 20]' 2>&1)
    if [ "$got" = "$want" ]; then ok "$lang client streams count from $s"; else
      fail "$lang client streams count from $s: got '$got'"; fi
  done
done

# ---- priorities ------------------------------------------------------------
langs=(rb py js c)
servers=(pp_rb pp_py pp_js pp_c)
n=${#langs[@]}

ms_of() { case $1 in high) echo 201 ;; normal) echo 202 ;; low) echo 203 ;; esac; }
ended() { grep -q '^20[123]$' "$1"; } # ended LOG: the call logged there has its answer

for i in "${!servers[@]}"; do
  s=${servers[$i]}
  by_normal=${langs[$((i % n))]} by_low=${langs[$(((i + 1) % n))]} by_high=${langs[$(((i + 2) % n))]}
  spawn "busy-$s" "$BUILD/rrpc" call --timeout 60 "$s" sleep '[30000]'
  busy=$spawned
  sleep 0.3
  wait_until 10 llen_is "$s" 0 || die "$s: the busy call was not taken"
  spawn "monitor-$s" cli monitor
  monitor=$spawned
  queue() { # queue LEVEL LANG LIST: queues a call, waits until it is on LIST
    local level=$1 lang=$2 list=$3
    spawn "$level-$s" bash -c "$(declare -f client); BUILD='$BUILD' PY='$PY' here='$here'; \
      client $lang --priority $level --timeout 30 $s sleep '[$(ms_of "$level")]'"
    wait_until 15 llen_is "$list" 1 || die "$s: the $level call from $lang never queued on $list"
  }
  queue normal "$by_normal" "$s"
  queue low "$by_low" "{$s}:low"
  queue high "$by_high" "{$s}:high"
  kill -INT "$busy"
  wait "$busy"
  status=$?
  [ "$status" = 130 ] || fail "$s: the busy call, cancelled, should exit 130 (got $status)"
  for level in high normal low; do
    wait_until 15 ended "$test_dir/$level-$s.log" || die "$s: the $level call never ended"
  done
  kill "$monitor"
  # The replies in the order the worker pushed them: their results (each
  # twice in a row: the script's call, then its RPUSH inside).
  order=$(grep -o 'result\\": *20[123]' "$test_dir/monitor-$s.log" | grep -o '20[123]$' | uniq | tr '\n' ' ')
  if [ "$order" = "201 202 203 " ]; then
    ok "$s serves high ($by_high), normal ($by_normal), low ($by_low) in that order"
  else
    fail "$s served out of order: '$order' (201 high by $by_high, 202 normal by $by_normal, 203 low by $by_low)"
  fi
done
finish
