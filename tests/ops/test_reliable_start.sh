#!/usr/bin/env bash
# test_reliable_start.sh -- calc-server refuses, at start and with a clear
# message, what reliable mode cannot keep its promises on: a key prefix +
# service name too long for its keys (with --shards, the last shard's), and
# a Redis whose maxmemory-policy may evict (at-most-once only warns, once).
# Redis Cluster and --shards are served (tests/scale/test_reliable_cluster.sh).
#
# Usage (under tests/harness/with-redis.sh): test_reliable_start.sh BUILD_DIR
set -u
: "${REDIS_URL:?run me under tests/harness/with-redis.sh}"
BUILD=$(cd "${1:?usage: test_reliable_start.sh BUILD_DIR}" && pwd)
SERVER=$BUILD/calc-server
logs=$(mktemp -d "${TMPDIR:-/tmp}/rrpc-relstart.XXXXXX")
failed=0
trap 'redis-cli -u "$REDIS_URL" CONFIG SET maxmemory-policy noeviction >/dev/null 2>&1; rm -rf "$logs"' EXIT

rcli() { if [ -n "${RRPC_TEST_REDIS_SOCK:-}" ]; then redis-cli -s "$RRPC_TEST_REDIS_SOCK" "$@"; else redis-cli -u "$REDIS_URL" "$@"; fi; }

refused() { # refused NAME MESSAGE-PATTERN ARGS...: exits non-zero at once, saying why
  local name=$1 pattern=$2; shift 2
  timeout 10 "$SERVER" "$@" >"$logs/out" 2>&1
  local status=$?
  if [ "$status" != 0 ] && [ "$status" != 124 ] && grep -q -- "$pattern" "$logs/out"; then
    echo "ok   $name (exit $status)"
  else
    echo "FAIL $name: exit $status"; sed 's/^/     /' "$logs/out"; failed=1
  fi
}

long=$(printf 'n%.0s' $(seq 1 400))
refused "--reliable with a 400-byte service name" "too long" --reliable --service "$long"
short=$(printf 'n%.0s' $(seq 1 359)) # 361 bytes at most: fits alone, not with "#10"
refused "--reliable --shards 11 with a 359-byte service name" "with the shard suffix" \
  --reliable --shards 11 --service "$short"

rcli CONFIG SET maxmemory-policy allkeys-lru >/dev/null
refused "--reliable on maxmemory-policy allkeys-lru" "maxmemory-policy noeviction, not allkeys-lru" \
  --reliable
# At-most-once serves, and says so once.
"$SERVER" --workers 2 >"$logs/amo" 2>&1 &
pid=$!
sleep 1
if kill -0 "$pid" 2>/dev/null && [ "$(grep -c 'maxmemory-policy is allkeys-lru' "$logs/amo")" = 1 ]; then
  echo "ok   at-most-once on allkeys-lru: serves, warns once"
else
  echo "FAIL at-most-once on allkeys-lru"; sed 's/^/     /' "$logs/amo"; failed=1
fi
kill "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rcli CONFIG SET maxmemory-policy noeviction >/dev/null
exit $failed
