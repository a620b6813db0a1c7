# lib.sh -- shared helpers of the scale-out tests (Sentinel, Cluster).
#
# These tests start whole Redis deployments of their own (several
# redis-server and redis-sentinel processes on free loopback ports in a temp
# dir), so the helpers here keep the bookkeeping in one place: picking free
# ports, starting and always stopping processes, and waiting for a condition
# with a deadline instead of sleeping a fixed time.  Sourced, not run.

PY=/usr/bin/python3
scale_dir=$(mktemp -d "${TMPDIR:-/tmp}/rrpc-scale.XXXXXX")
scale_pids=()

scale_cleanup() {
  local status=$?
  for p in "${scale_pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  # In a sanitizer build a report in any log fails the test.
  if grep -l 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:' \
       "$scale_dir"/*.log 2>/dev/null; then
    grep -h -A20 'ERROR: \|runtime error:' "$scale_dir"/*.log >&2
    status=1
  fi
  rm -rf "$scale_dir"
  exit "$status"
}
trap scale_cleanup EXIT
trap 'exit 130' INT TERM

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

# spawn NAME COMMAND...: runs COMMAND in the background, logging to
# $scale_dir/NAME.log; its pid is in $spawned and is killed on exit.
spawn() {
  local name=$1; shift
  "$@" >"$scale_dir/$name.log" 2>&1 &
  spawned=$!
  scale_pids+=("$spawned")
}

# wait_until SECONDS COMMAND...: retries COMMAND every 0.1 s until it
# succeeds (returns 0) or SECONDS have passed (returns 1).
wait_until() {
  local deadline=$(( $(date +%s%N) + ${1%.*} * 1000000000 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s%N)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# redis_node NAME PORT [ARGS...]: starts a redis-server on 127.0.0.1:PORT
# without persistence, in its own sub-directory.
redis_node() {
  local name=$1 port=$2; shift 2
  mkdir -p "$scale_dir/$name"
  spawn "$name" redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$scale_dir/$name" --daemonize no --loglevel "${RRPC_SCALE_LOGLEVEL:-warning}" "$@"
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

fail() {
  echo "FAIL: $*" >&2
  for f in "$scale_dir"/*.log; do
    echo "---- $(basename "$f") (last lines)" >&2; tail -15 "$f" >&2
  done
  exit 1
}
