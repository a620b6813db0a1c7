#!/usr/bin/env bash
# with-redis.sh -- runs a command against a private, throw-away redis-server.
#
# Tests never rely on a Redis that happens to be running: this starts one on
# a unix socket in a fresh temp dir (no persistence), exports REDIS_URL and
# RRPC_TEST_REDIS_SOCK for the command, and removes everything afterwards,
# whatever the command's outcome (tests/lib/common.sh's exit trap).  With
# RRPC_REDIS_TCP=1 it listens on a free loopback TCP port instead and
# exports RRPC_TEST_REDIS_PORT.  $RRPC_REDIS_ARGS: more redis-server
# arguments.  The command also inherits $RRPC_PYTHON (found if unset).
#
# Usage: with-redis.sh COMMAND [ARGS...]   (exit status is the command's)
set -u
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
sock="$test_dir/redis.sock"
port=0
if [ "${RRPC_REDIS_TCP:-0}" = 1 ]; then
  port=$(free_port)
fi
# shellcheck disable=SC2086 # RRPC_REDIS_ARGS is a list of arguments
redis_node redis "$port" --unixsocket "$sock" --unixsocketperm 700 ${RRPC_REDIS_ARGS:-}
wait_until 10 redis_up -s "$sock" || die "with-redis.sh: redis-server did not start"
export RRPC_TEST_REDIS_SOCK="$sock"
if [ "$port" != 0 ]; then
  export RRPC_TEST_REDIS_PORT="$port"
  export REDIS_URL="redis://127.0.0.1:$port"
else
  export REDIS_URL="unix://$sock"
fi
"$@"
