# shellcheck shell=bash
# bench-common.sh -- the harness of scripts/bench*.sh.  Sourced, not run:
#     here=$(cd "$(dirname "$0")/.." && pwd)
#     . "$here/scripts/lib/bench-common.sh"      (with the script's "$@")
#
# Every benchmark starts servers of its own, runs loads against them,
# accounts the CPU time each run costs the caller, the worker and the
# broker (Redis, RabbitMQ), keeps every raw output, stops what it started
# whatever happens, and prints markdown tables from medians of paired
# rounds (scripts/lib/bench_report.py).  That bookkeeping lives here once,
# on top of the tests' own (tests/lib/common.sh: spawn, wait_until, free
# ports, redis_node, and the exit trap that kills what was spawned):
#   $bench_name        the script's name (bench-amqp): say's prefix
#   $BUILD $here $out  the build dir ($1, default build), the checkout,
#                      and BUILD/$bench_name, where the raw outputs go
#   $SECONDS_EACH $ROUNDS   $RRPC_BENCH_SECONDS (4), $RRPC_BENCH_ROUNDS (3)
#   $PY                the Python with redis-py (scripts/find-python.sh)
#   say MSG, die MSG   progress on stderr; die exits 1
#   need FILE..        dies unless each BUILD/FILE is executable
#   rerun_under HARNESS   runs this script again under tests/harness/HARNESS
#                      (which starts a private broker), in place of this shell
#   clear_out          makes $out and removes the last run's outputs
#   await_service SERVICE RRPC [ARGS..]   waits (10 s) until SERVICE answers
#                      `RRPC bench --calls 1 ARGS.. SERVICE`, else dies
#   cpu_of PID..       CPU seconds (user + system) of the processes, summed
#   redis_cpu PORT     the CPU seconds a redis-server reports it used
#   measure NAME WORKER_PIDS COMMAND..   runs COMMAND with its stdout in
#                      NAME.json (NAME.txt when NAME has "_pipe": the floor
#                      clients' text) and, in NAME.cpu, the caller's user and
#                      system seconds, then the workers' CPU before and after
#                      and the broker's (the command in the array $side_cpu)
#                      before and after -- the six numbers bench_report.py reads
#   rrpc_bench NAME WORKER_PIDS ARGS..   measure of `rrpc bench --json
#                      --duration SECONDS_EACH ARGS..` with $bench_rrpc
#                      (default BUILD/rrpc) and the options in $rrpc_args
#   pipeclient NAME WORKER_PID QUEUE CLIENTS WINDOW   measure of the floor
#                      client $pipeclient_bin against 127.0.0.1:$port
#   report ARGS.. <<EOF   runs the Python program on stdin with
#                      argv = out ROUNDS ARGS.., bench_report importable
# The servers are spawned (common.sh), their logs in $out (spawn_dir); on
# exit, whatever the cause, common.sh's trap kills them.

bench_name=$(basename "$0" .sh)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=tests/lib/common.sh
. "$here/tests/lib/common.sh"
BUILD=$(cd "${1:-build}" && pwd)
SECONDS_EACH=${RRPC_BENCH_SECONDS:-4}
ROUNDS=${RRPC_BENCH_ROUNDS:-3}
out="$BUILD/$bench_name"
spawn_dir=$out
bench_rrpc=
rrpc_args=()
pipeclient_bin= # the script sets these two when it runs floor clients
port=
side_cpu=(true)

say() { printf '%s: %s\n' "$bench_name" "$*" >&2; }
die() {
  say "$*"
  exit 1
}

[ -n "$RRPC_PYTHON" ] || die "no Python with redis-py (see scripts/find-python.sh)"

need() {
  local f
  for f in "$@"; do
    [ -x "$BUILD/$f" ] || die "$BUILD/$f is missing; build first (make build)"
  done
}

rerun_under() {
  rm -rf "$test_dir" # exec skips the exit trap
  exec "$here/tests/harness/$1" "$0" "$BUILD"
}

clear_out() {
  mkdir -p "$out" || exit 1
  rm -f "$out"/*.json "$out"/*.txt "$out"/*.cpu "$out"/*.err "$out"/*.log
}

# ---- servers -----------------------------------------------------------------
await_service() {
  local service=$1 rrpc=$2
  shift 2
  wait_until 10 "$rrpc" bench --calls 1 "$@" "$service" ||
    die "service $service does not answer (see $out/$service.log)"
}

# ---- CPU time ----------------------------------------------------------------
ticks=$(getconf CLK_TCK)
# /proc/PID/stat's fields after the command name (which may hold spaces):
# utime and stime are the 12th and 13th.  A process gone counts 0.
cpu_of() {
  local p
  for p in "$@"; do cat "/proc/$p/stat" 2>/dev/null; done |
    awk -v t="$ticks" '{ sub(/^.*\) /, ""); s += $12 + $13 } END { printf "%.2f", s / t }'
}
redis_cpu() {
  redis-cli -p "$1" info cpu |
    awk -F: '/^used_cpu_(sys|user):/ { s += $2 } END { printf "%.3f", s }'
}

# ---- runs --------------------------------------------------------------------
measure() {
  local name=$1 wpids=$2 file
  shift 2
  case $name in *_pipe*) file="$out/$name.txt" ;; *) file="$out/$name.json" ;; esac
  say "$name: ${*#"$BUILD/"}"
  local w0 s0 TIMEFORMAT='%U %S'
  # shellcheck disable=SC2086 # WORKER_PIDS is a list of pids
  w0=$(cpu_of $wpids)
  s0=$("${side_cpu[@]}")
  { time "$@" >"$file" 2>"$out/$name.err"; } 2>"$out/$name.time" ||
    say "$name: failed or had errors: $(head -c 300 "$out/$name.err")"
  # shellcheck disable=SC2086
  echo "$(cat "$out/$name.time") $w0 $(cpu_of $wpids) $s0 $("${side_cpu[@]}")" >"$out/$name.cpu"
  rm -f "$out/$name.time"
}

rrpc_bench() {
  local name=$1 wpids=$2
  shift 2
  measure "$name" "$wpids" "${bench_rrpc:-$BUILD/rrpc}" bench "${rrpc_args[@]}" --json \
    --duration "$SECONDS_EACH" "$@"
}

pipeclient() {
  measure "$1" "$2" "$pipeclient_bin" 127.0.0.1 "$port" "$3" "$4" "$5" "$SECONDS_EACH"
}

report() {
  PYTHONPATH="$here/scripts/lib${PYTHONPATH:+:$PYTHONPATH}" "$PY" - "$out" "$ROUNDS" "$@"
}
