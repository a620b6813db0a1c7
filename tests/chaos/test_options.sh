#!/usr/bin/env bash
# test_options.sh -- the option numbers of calc-server, chaos_worker and
# chaos_caller, parsed by examples/parse_number.h: what it refuses is a
# usage error (exit 2) before anything connects; what it takes gets as far
# as connecting to a closed port (so no Redis is needed or touched), where
# a program fails or waits for Redis: either is not a usage error.
#
# Usage: test_options.sh BUILD_DIR
set -u
BUILD=$(cd "${1:?usage: test_options.sh BUILD_DIR}" && pwd)
NOWHERE=redis://127.0.0.1:1
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
out=$test_dir/caller.out

expect() { # expect WANT COMMAND... (WANT: an exit status, or !2 for "not a usage error")
  local want=$1; shift
  timeout 2 "$@" >/dev/null 2>&1
  local got=$? # 124: still waiting for Redis after 2 s
  if [ "$want" = '!2' ] && [ "$got" != 2 ] || [ "$got" = "$want" ]; then
    ok "$* -> $got"
  else
    fail "$* -> $got, wanted $want"
  fi
}

server=$BUILD/calc-server worker=$BUILD/tests/chaos_worker caller=$BUILD/tests/chaos_caller
expect 2 "$server" --redis $NOWHERE --workers 1025
expect 2 "$server" --redis $NOWHERE --workers 2x
expect 2 "$server" --redis $NOWHERE --heartbeat-ttl 0
expect 2 "$server" --redis $NOWHERE --heartbeat-ttl nan
expect 2 "$server" --redis $NOWHERE --dedup-window 2e9
expect '!2' "$server" --redis $NOWHERE --workers 1 --heartbeat-ttl 2.5
expect 2 "$worker" --redis $NOWHERE --workers 0
expect 2 "$worker" --redis $NOWHERE --heartbeat-ttl -1
expect '!2' "$worker" --redis $NOWHERE --workers 3 --max-deliveries 1000
expect 2 "$worker" --redis $NOWHERE --reply-ttl 0
expect '!2' "$worker" --redis $NOWHERE --reliable --effects-log --reply-ttl 3600
# strtod reads "nan" and NaN fails every comparison: it used to pass.
expect 2 "$caller" --redis $NOWHERE --out "$out" --seconds nan
# A thread count is a whole number: 2.5 used to mean 2.
expect 2 "$caller" --redis $NOWHERE --out "$out" --threads 2.5
expect 2 "$caller" --redis $NOWHERE --out "$out" --timeout 0
expect '!2' "$caller" --redis $NOWHERE --out "$out" --threads 1 --seconds 0.1 --work-ms 0
finish
