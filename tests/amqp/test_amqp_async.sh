#!/usr/bin/env bash
# test_amqp_async.sh -- the async client over AMQP: starts calc-server on the
# private node of tests/harness/with-rabbitmq.sh and runs test_amqp_async
# (tests/amqp/test_amqp_async.c says what it checks), then the async bench
# over amqp://.
# Usage: with-rabbitmq.sh test_amqp_async.sh BUILD_DIR TEST_AMQP_ASYNC
set -u
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
build=$1
test_bin=$2
url=$RRPC_TEST_AMQP_URL

spawn calc "$build/calc-server" --url "$url" --service calc --workers 8
wait_until 10 grep -q "serving queue 'calc'" "$test_dir/calc.log" || die "calc-server did not start"

if "$test_bin"; then
  ok "test_amqp_async: the async client over AMQP"
else
  fail "test_amqp_async"
fi
# The workers come back after test_amqp_async closed every connection.
wait_until 15 "$build/rrpc" call --url "$url" --timeout 1 calc echo '[]' >/dev/null ||
  fail "calc-server did not reconnect"
out=$("$build/rrpc" bench --url "$url" --async --connections 2 --window 32 --calls 2000 calc 2>&1)
[[ $out == *"errors   0"* && $out == *"calls    2000 "* ]] &&
  ok "rrpc bench --async --url amqp://: $(grep -o '[0-9]* calls/s' <<<"$out")" || fail "bench --async: $out"
finish
