#!/usr/bin/env bash
# demo-amqp.sh -- demo.sh's RabbitMQ step, run under
# tests/harness/with-rabbitmq.sh (a private node at $RRPC_TEST_AMQP_URL):
# calc-server over amqp://, called by rrpc and by a caller written from
# RabbitMQ's RPC tutorial.  Exit status: the number of failed steps.
set -u
BUILD=$1
here=$(cd "$(dirname "$0")/.." && pwd)
url=$RRPC_TEST_AMQP_URL
"$BUILD/calc-server" --url "$url" --service calc --workers 2 2>/dev/null &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null' EXIT
for _ in $(seq 50); do "$BUILD/rrpc" call --url "$url" --timeout 0.2 calc echo '[]' >/dev/null 2>&1 && break; sleep 0.1; done
failures=0
shown=$(sed -E 's#(//[^:/@]*:)[^@]*@#\1****@#' <<<"$url") # the password masked
export RRPC_URL=$url
echo "RRPC_URL=$shown"
run() { echo "\$ $*"; "$@" || { echo "  -> FAILED (exit $?)"; failures=$((failures + 1)); }; }
run "$BUILD/rrpc" call calc add '[2, 3]'
echo "(a caller written only from RabbitMQ's RPC tutorial: exclusive callback queue, correlation_id)"
body='{"jsonrpc": "2.0", "method": "multiply", "params": [6, 7], "id": 1}'
echo "\$ python3 tests/amqp/tutorial_client.py \$RRPC_URL calc '$body'"
/usr/bin/python3 "$here/tests/amqp/tutorial_client.py" "$url" calc "$body" ||
  { echo "  -> FAILED"; failures=$((failures + 1)); }
exit "$failures"
