#!/usr/bin/env bash
# with-redis.sh -- runs a command against a private, throw-away redis-server.
#
# Tests never rely on a Redis that happens to be running: this starts one on
# a unix socket in a fresh temp dir (no persistence), exports REDIS_URL and
# RRPC_TEST_REDIS_SOCK for the command, and removes everything afterwards,
# whatever the command's outcome.  With RRPC_REDIS_TCP=1 it listens on a
# free loopback TCP port instead and exports RRPC_TEST_REDIS_PORT.
#
# Usage: with-redis.sh COMMAND [ARGS...]   (exit status is the command's)
set -u
dir=$(mktemp -d "${TMPDIR:-/tmp}/rrpc-redis.XXXXXX")
sock="$dir/redis.sock"
port=0
if [ "${RRPC_REDIS_TCP:-0}" = 1 ]; then
  port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fi
redis-server --port "$port" --bind 127.0.0.1 --unixsocket "$sock" --unixsocketperm 700 \
  --save "" --appendonly no --dir "$dir" --daemonize no --loglevel warning \
  --logfile "$dir/redis.log" ${RRPC_REDIS_ARGS:-} &
pid=$!
cleanup() { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
for _ in $(seq 1 200); do
  redis-cli -s "$sock" ping >/dev/null 2>&1 && break
  sleep 0.05
done
if ! redis-cli -s "$sock" ping >/dev/null 2>&1; then
  echo "with-redis.sh: redis-server did not start" >&2; cat "$dir/redis.log" >&2; exit 1
fi
export RRPC_TEST_REDIS_SOCK="$sock"
if [ "$port" != 0 ]; then
  export RRPC_TEST_REDIS_PORT="$port"
  export REDIS_URL="redis://127.0.0.1:$port"
else
  export REDIS_URL="unix://$sock"
fi
"$@"
