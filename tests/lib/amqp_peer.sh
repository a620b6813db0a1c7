# shellcheck shell=bash
# amqp_peer.sh -- the checks every peer's test_amqp.sh (Node, Python, Ruby)
# makes of its calc server against the C side over RabbitMQ (PROTOCOL.md
# 12).  Sourced, not run, after tests/lib/common.sh (spawn, wait_until, ok,
# fail, die), once the test has set:
#   $peer          the peer's name in messages: Node, Python, Ruby; its
#                  version in `rrpc info` starts with it in lower case
#   $peer_cmd      (array) the command that runs its calc server, which
#                  takes --url URL --service NAME [--reliable]
#   $peer_wait     the seconds its server may take to start
#   $build $rrpc $url   the build dir, its rrpc, the broker's amqp:// URL
# The checks, each an ok or a fail:
#   c_calls SERVICE      rrpc call add [1, 2] = 3, and divide [1, 0] an
#                        error result ("division by zero", exit 1)
#   registry SERVICE PID TEXT..   `rrpc ls` lists it (1 worker, 1 thread);
#                        `rrpc info` shows PID, the peer's version and each
#                        TEXT (its methods); stopped with SIGTERM, it is
#                        gone from both at once
#   acl                  with tests/amqp/definitions.json (ctest sets
#                        $RRPC_RABBITMQ_DEFINITIONS): a user allowed only the
#                        queue calc in vhost rrpc, not the registry's names,
#                        serves unregistered and says why
#   shared_queue SERVICE a reliable peer worker and calc-server --reliable
#                        serve one durable queue
#   redelivery SERVICE   a reliable peer worker killed mid-call (SIGKILL):
#                        the broker gives its message to the next one
#   dead_letters SERVICE bad input to the reliable worker of SERVICE lands
#                        in SERVICE:dead with its reason, counted
# And the servers:
#   says NAME SECONDS TEXT   waits until $test_dir/NAME.log has TEXT (grep)
#   c_server NAME SERVICE ARGS..   calc-server (C) as SERVICE; dies if it
#                        does not start
#   peer_server NAME SERVICE ARGS..   the peer's calc server as SERVICE
#                        (spawned: its pid is $spawned; not waited for)
# shellcheck disable=SC2154 # $test_dir, $peer, $url... are the sourcing test's

says() { wait_until "$2" grep -q "$3" "$test_dir/$1.log"; }

c_server() {
  local name=$1 service=$2
  shift 2
  spawn "$name" "$build/calc-server" --url "$url" --service "$service" --workers 1 "$@"
  says "$name" 10 "serving queue '$service'" || die "calc-server $* ($service) did not start"
}

peer_server() {
  local name=$1 service=$2
  shift 2
  spawn "$name" "${peer_cmd[@]}" --url "$url" --service "$service" "$@"
}

c_calls() {
  local out st
  out=$("$rrpc" call --url "$url" "$1" add '[1, 2]' 2>&1)
  [ "$out" = 3 ] && ok "rrpc call (C) -> $peer server over AMQP: add = 3" ||
    fail "rrpc call add: $out"
  out=$("$rrpc" call --url "$url" "$1" divide '[1, 0]' 2>&1)
  st=$?
  [ "$st" = 1 ] && [[ $out == *"division by zero"* ]] &&
    ok "rrpc call (C) -> $peer server: an error result, exit 1" || fail "divide: status $st, $out"
}

registry() {
  local service=$1 pid=$2 out text has=1
  shift 2
  out=$("$rrpc" ls --url "$url" 2>&1)
  grep -Eq "^$service +1 +1 " <<<"$out" &&
    ok "rrpc ls lists the $peer server (1 worker, 1 thread)" || fail "rrpc ls: $out"
  out=$("$rrpc" info --url "$url" "$service" 2>&1)
  for text in "service $service: registered" " $pid " "${peer,,}-" "$@"; do
    [[ $out == *"$text"* ]] || has=0
  done
  [ "$has" = 1 ] && ok "rrpc info $service: the $peer worker (its pid, version) and its methods" ||
    fail "rrpc info: $out"
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null
  out=$("$rrpc" ls --url "$url" 2>&1)
  ! grep -q "^$service " <<<"$out" &&
    [[ $("$rrpc" info --url "$url" --json "$service") == *'"registered":false'* ]] &&
    ok "the stopped $peer server is gone from rrpc ls and info at once" ||
    fail "after SIGTERM: $out"
}

acl() {
  [ -n "${RRPC_RABBITMQ_DEFINITIONS:-}" ] || return 0
  local hostport=${url#amqp://*@} caller
  hostport=${hostport%%/*}
  caller=amqp://caller:caller-secret@$hostport/rrpc
  spawn acl "${peer_cmd[@]}" --url "amqp://calc-server:calc-secret@$hostport/rrpc" --service calc
  says acl "$peer_wait" "serving queue 'calc' over AMQP" &&
    grep -q "not in the registry.*ACCESS_REFUSED" "$test_dir/acl.log" &&
    [ "$("$rrpc" call --url "$caller" calc add '[20, 22]' 2>&1)" = 42 ] &&
    ok "ACL: refused the registry's names, the $peer server serves unregistered and says why" ||
    fail "ACL: $(tail -3 "$test_dir/acl.log")"
}

shared_queue() {
  local service=$1 pid
  c_server crel "$service" --reliable
  peer_server peerrel "$service" --reliable
  pid=$spawned
  says peerrel "$peer_wait" "serving queue '$service' over AMQP (reliable" &&
    (for i in 1 2 3 4; do
      [ "$("$rrpc" call --url "$url" "$service" add "[$i, 1]" 2>&1)" = $((i + 1)) ] || exit 1
    done) &&
    grep -Eq "^$service +2 " <<<"$("$rrpc" ls --url "$url" 2>&1)" &&
    ok "a $peer reliable worker and calc-server --reliable serve one durable queue" ||
    fail "shared queue: $(tail -3 "$test_dir/peerrel.log"; "$rrpc" ls --url "$url" 2>&1)"
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null
}

redelivery() {
  local service=$1 first call st
  peer_server kill1 "$service" --reliable
  first=$spawned
  says kill1 "$peer_wait" "serving queue '$service'" || die "$service did not start"
  spawn killcall "$rrpc" call --url "$url" --timeout 20 "$service" sleep '[600]'
  call=$spawned
  sleep 0.3
  kill -KILL "$first"
  wait "$first" 2>/dev/null
  peer_server kill2 "$service" --reliable
  wait "$call"
  st=$?
  [ "$st" = 0 ] && [ "$(cat "$test_dir/killcall.log")" = 600 ] &&
    ok "a reliable $peer worker killed mid-call (SIGKILL): redelivered to the next one" ||
    fail "SIGKILL mid-call: status $st, $(cat "$test_dir/killcall.log")," \
      "$(tail -3 "$test_dir/kill2.log")"
}

dead_has() { "$rrpc" dead --url "$url" "$1" 2>&1 | grep -q "$2"; }

dead_letters() {
  local service=$1 out
  /usr/bin/python3 -c 'import pika, sys
c = pika.BlockingConnection(pika.URLParameters(sys.argv[1])); ch = c.channel()
ch.basic_publish("", sys.argv[2], b"{not json", pika.BasicProperties(correlation_id="bad1"))
ch.basic_publish("", sys.argv[2], b"{\"jsonrpc\": \"2.0\", \"method\": 1, \"id\": null}")
c.close()' "$url" "$service"
  wait_until 5 dead_has "$service" "no reply key"
  out=$("$rrpc" dead --url "$url" "$service" 2>&1)
  [[ $out == *"parse error"* && $out == *"no reply key"* ]] &&
    [[ $("$rrpc" info --url "$url" --json "$service") == *'"dead":2'* ]] &&
    ok "bad input to a $peer worker lands in $service:dead with its reason, counted" ||
    fail "rrpc dead $service: $out"
}
