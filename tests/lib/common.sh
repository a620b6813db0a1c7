# common.sh -- the one library of rrpc's shell tests.  Sourced, not run:
#     . "$(dirname "$0")/../lib/common.sh"
#
# Every shell test starts processes of its own (redis-server, Sentinels,
# calc-servers, stunnel...), keeps their logs in a temp dir, checks things
# and reports them, so the bookkeeping lives here once:
#   $test_dir        a fresh temp dir, removed on exit
#   $RRPC_PYTHON $PY the Python with redis-py (scripts/find-python.sh's
#                    rule; ctest passes CMake's answer in $RRPC_PYTHON, so
#                    the finder runs only when a test is run by hand)
#   spawn NAME CMD.. runs CMD in the background, logging to
#                    $test_dir/NAME.log (or $spawn_dir/NAME.log, if set:
#                    the benchmarks keep their logs); its pid is $spawned
#                    and it is killed (SIGKILL) on exit, as is any other
#                    background job still running then
#   free_ports N [bus], free_port    free loopback TCP ports
#   redis_node NAME PORT [ARGS..]   a throw-away redis-server (spawned)
#   redis_up CLI-ARGS..             redis-cli CLI-ARGS ping answers PONG
#   wait_until SECONDS CMD..        retries CMD until it succeeds
#   now_ms                          milliseconds since the epoch
#   node_ready                      the Node peer's dependencies are there
#                                   (ctest's node_deps fixture in $NODE_PATH,
#                                   else clients/node/node_modules, installed
#                                   from the lockfile if missing)
#   ok MSG, fail MSG                 a passed / failed check ("ok   MSG",
#                                    "FAIL MSG" on stdout); fail goes on
#   die MSG                          a failure the test cannot go on from:
#                                    "FAIL: MSG" and each log's last lines
#                                    on stderr, exit 1
#   finish                           the closing line "N passed, N failed"
#                                    (and what failed); exit 0 or 1
# On exit, whatever the cause, the spawned processes are killed, a
# sanitizer report in any $test_dir/*.log fails the test (an instrumented
# program's report would otherwise go unseen), and $test_dir is removed.
# The test's own exit status is kept otherwise.

rrpc_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
test_dir=$(mktemp -d "${TMPDIR:-/tmp}/rrpc-$(basename "$0" .sh).XXXXXX") || exit 1
spawned_pids=()
checks_passed=0
checks_failed=0
failed_checks=()

# ---- the Python interpreter ---------------------------------------------
if [ -z "${RRPC_PYTHON:-}" ]; then
  # Run by hand: found once here, and the test's children inherit it.
  RRPC_PYTHON=$("$rrpc_root/scripts/find-python.sh") || RRPC_PYTHON=
fi
export RRPC_PYTHON
PY=${RRPC_PYTHON:-python3}

# ---- reporting ------------------------------------------------------------
ok() {
  checks_passed=$((checks_passed + 1))
  echo "ok   $*"
}

fail() {
  checks_failed=$((checks_failed + 1))
  failed_checks+=("$*")
  echo "FAIL $*"
}

die() {
  echo "FAIL: $*" >&2
  local f
  for f in "$test_dir"/*.log; do
    [ -e "$f" ] || continue
    echo "---- $(basename "$f") (last lines)" >&2
    tail -15 "$f" >&2
  done
  exit 1
}

finish() {
  if [ "$checks_failed" != 0 ]; then
    echo "failed:"
    printf '  %s\n' "${failed_checks[@]}"
  fi
  echo "$checks_passed passed, $checks_failed failed"
  [ "$checks_failed" = 0 ] && exit 0
  exit 1
}

# ---- processes ------------------------------------------------------------
lib_cleanup() {
  local status=$? p left
  # The spawned processes and any other background job still running;
  # waited for one by one, which keeps bash from printing "Killed" notices.
  left=("${spawned_pids[@]}" $(jobs -p))
  for p in "${left[@]}"; do kill -9 "$p" 2>/dev/null; done
  for p in "${left[@]}"; do wait "$p" 2>/dev/null; done
  if grep -l 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:' \
    "$test_dir"/*.log 2>/dev/null; then
    grep -h -A20 'ERROR: \|runtime error:' "$test_dir"/*.log >&2
    status=1
  fi
  rm -rf "$test_dir"
  exit "$status"
}
trap lib_cleanup EXIT
trap 'exit 130' INT TERM

spawn() {
  local name=$1
  shift
  "$@" >"${spawn_dir:-$test_dir}/$name.log" 2>&1 &
  spawned=$!
  spawned_pids+=("$spawned")
}

# free_ports N [bus]: prints N distinct free loopback TCP ports, one per
# line.  The sockets stay bound until all are chosen, so no port comes
# twice.  With "bus" (Redis Cluster nodes, which also listen on port+10000)
# both a port and its bus port must be free, and they are picked below the
# kernel's ephemeral range (net.ipv4.ip_local_port_range), where no
# outgoing connection of a parallel test can take a bus port meanwhile.
free_ports() {
  "$PY" - "$1" "${2:-}" <<'PYEOF'
import random, socket, sys
want, bus = int(sys.argv[1]), sys.argv[2] == "bus"
socks, ports = [], []
def grab(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        return None
    socks.append(s)
    return s.getsockname()[1]
if bus:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    candidates = list(range(12000, max(12001, low - 10000)))
    random.shuffle(candidates)
    for p in candidates:
        if len(ports) == want:
            break
        if p in ports or p + 10000 in ports or any(q + 10000 == p for q in ports):
            continue
        if grab(p) is not None and grab(p + 10000) is not None:
            ports.append(p)
else:
    while len(ports) < want:
        ports.append(grab(0))
print("\n".join(map(str, ports)))
PYEOF
}

free_port() { free_ports 1; }

# redis_node NAME PORT [ARGS...]: starts a redis-server on 127.0.0.1:PORT
# (0: no TCP) without persistence, in its own sub-directory, logging to
# $test_dir/NAME.log.
redis_node() {
  local name=$1 port=$2
  shift 2
  mkdir -p "$test_dir/$name"
  spawn "$name" redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$test_dir/$name" --daemonize no --loglevel "${RRPC_SCALE_LOGLEVEL:-warning}" "$@"
}

redis_up() { [ "$(redis-cli "$@" ping 2>/dev/null)" = PONG ]; }

# wait_until SECONDS COMMAND...: retries COMMAND every 0.1 s until it
# succeeds (returns 0) or SECONDS have passed (returns 1).
wait_until() {
  local deadline=$(($(date +%s%N) + ${1%.*} * 1000000000))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s%N)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# ---- the Node peer ---------------------------------------------------------
node_ready() {
  [ -n "${NODE_PATH:-}" ] && [ -f "${NODE_PATH%%:*}/redis/package.json" ] && return 0
  "$rrpc_root/scripts/node-deps.sh" >/dev/null
}
