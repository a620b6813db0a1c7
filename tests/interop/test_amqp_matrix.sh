#!/usr/bin/env bash
# test_amqp_matrix.sh -- the four languages peer to peer over RabbitMQ
# (PROTOCOL.md section 12), on one private node: the calc servers of C
# (calc-server), Ruby, Python and Node each serve a queue of their own, and
# each is called by the client of every language -- C (`rrpc call`), Ruby,
# Python and Node (tests/interop/call_peer.*, which take $RRPC_URL) -- 4 x 4:
#   * add(i, j) with a result only that pair would give (each client's
#     params differ), so an answer from the wrong call cannot pass;
#   * divide(1, 0): each server's error reaches the C client, and the C
#     server's error reaches every client, as an error with the server's
#     message (each prints it its own way).
# The tutorial-style peers (a caller and a worker written only from
# RabbitMQ's RPC tutorial) are in tests/amqp/test_amqp.sh (ctest amqp_calls).
# Usage: tests/harness/with-rabbitmq.sh test_amqp_matrix.sh BUILD_DIR
set -u
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
: "${RRPC_TEST_AMQP_URL:?run me under tests/harness/with-rabbitmq.sh}"
build=$(cd "$1" && pwd)
here=$rrpc_root/tests/interop
export RRPC_URL=$RRPC_TEST_AMQP_URL
unset REDIS_URL
py=/usr/bin/python3 # Debian's python3-pika lives there
"$py" -c 'import pika' 2>/dev/null || die "python3-pika is missing"
node_ready || die "the Node peer's dependencies are missing (scripts/node-deps.sh)"

# ---- the four servers -----------------------------------------------------------
spawn c "$build/calc-server" --url "$RRPC_URL" --service m_c --workers 2
spawn rb ruby "$rrpc_root/clients/ruby/calc_server.rb" --url "$RRPC_URL" --service m_rb
spawn py "$py" "$rrpc_root/clients/python/calc_server.py" --url "$RRPC_URL" --service m_py
spawn js node "$rrpc_root/clients/node/calc_server.js" --url "$RRPC_URL" --service m_js
servers=(m_c m_rb m_py m_js)
for s in "${servers[@]}"; do
  wait_until 20 "$build/rrpc" call --timeout 0.5 "$s" add '[0, 0]' ||
    die "the server of $s does not answer over AMQP"
done

# ---- every client calls every server -------------------------------------------
# client_call LANG SERVICE METHOD PARAMS: the client's output on stdout.
client_call() {
  local lang=$1
  shift
  case $lang in
  c) "$build/rrpc" call --timeout 10 "$@" ;;
  rb) ruby "$here/call_peer.rb" --timeout 10 "$@" ;;
  py) "$py" "$here/call_peer.py" --timeout 10 "$@" ;;
  js) node "$here/call_peer.js" --timeout 10 "$@" ;;
  esac
}
langs=(c rb py js)
for ci in "${!langs[@]}"; do
  lang=${langs[$ci]}
  for si in "${!servers[@]}"; do
    s=${servers[$si]}
    a=$((100 * (ci + 1))) b=$((si + 1))
    out=$(client_call "$lang" "$s" add "[$a, $b]" 2>&1)
    [ "$out" = $((a + b)) ] && ok "$lang client -> ${s#m_} server: add($a, $b) = $out" ||
      fail "$lang client -> ${s#m_} server: add($a, $b) gave: $out"
    # An error crosses once per server (its encoding) and once per client
    # (its decoding): the C client's row and the C server's column.
    [ "$lang" = c ] || [ "$s" = m_c ] || continue
    out=$(client_call "$lang" "$s" divide '[1, 0]' 2>&1)
    st=$?
    [ "$st" != 0 ] && [[ ${out,,} == *division* ]] &&
      ok "$lang client -> ${s#m_} server: divide(1, 0) is an error ($out)" ||
      fail "$lang client -> ${s#m_} server: divide(1, 0): status $st, $out"
  done
done
finish
