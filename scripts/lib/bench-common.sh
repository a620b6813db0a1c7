# shellcheck shell=bash
# bench-common.sh -- the harness of scripts/bench*.sh.  Sourced, not run:
#     here=$(cd "$(dirname "$0")/.." && pwd)
#     . "$here/scripts/lib/bench-common.sh"      (with the script's "$@")
#
# Every benchmark starts servers of its own, runs loads against them,
# accounts the CPU time each run costs the caller, the worker and the
# broker (Redis, RabbitMQ), keeps every raw output, stops what it started
# whatever happens, and prints markdown tables from medians of paired
# rounds (scripts/lib/bench_report.py).  That bookkeeping lives here once:
#   $bench_name        the script's name (bench-amqp): say's prefix
#   $BUILD $here $out  the build dir ($1, default build), the checkout,
#                      and BUILD/$bench_name, where the raw outputs go
#   $SECONDS_EACH $ROUNDS   $RRPC_BENCH_SECONDS (4), $RRPC_BENCH_ROUNDS (3)
#   $PY                the Python (scripts/find-python.sh's pick), exported
#                      as $RRPC_PYTHON
#   say MSG, die MSG   progress on stderr; die exits 1
#   need FILE..        dies unless each BUILD/FILE is executable
#   clear_out          makes $out and removes the last run's outputs
#   start NAME CMD..   runs CMD in the background, logging to $out/NAME.log;
#                      its pid is $server; it is stopped on exit
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
# On exit the processes started are stopped (SIGTERM, then waited for); a
# script that also sources tests/lib/common.sh (before this file) keeps
# that file's exit trap, which kills every background job, these included.

bench_name=$(basename "$0" .sh)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$(cd "${1:-build}" && pwd)
SECONDS_EACH=${RRPC_BENCH_SECONDS:-4}
ROUNDS=${RRPC_BENCH_ROUNDS:-3}
out="$BUILD/$bench_name"
bench_rrpc=
rrpc_args=()
pipeclient_bin= # the script sets these two when it runs floor clients
port=
side_cpu=(true)
started=()

say() { printf '%s: %s\n' "$bench_name" "$*" >&2; }
die() {
  say "$*"
  exit 1
}

PY=${RRPC_PYTHON:-$("$here/scripts/find-python.sh")} || die "no Python"
RRPC_PYTHON=$PY
export RRPC_PYTHON

need() {
  local f
  for f in "$@"; do
    [ -x "$BUILD/$f" ] || die "$BUILD/$f is missing; build first (make build)"
  done
}

clear_out() {
  mkdir -p "$out" || exit 1
  rm -f "$out"/*.json "$out"/*.txt "$out"/*.cpu "$out"/*.err "$out"/*.log
}

# ---- processes ---------------------------------------------------------------
bench_cleanup() {
  local pid
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${started[@]}"; do wait "$pid" 2>/dev/null; done
}
if ! declare -F lib_cleanup >/dev/null; then
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
fi

start() {
  local name=$1
  shift
  "$@" >"$out/$name.log" 2>&1 &
  server=$!
  started+=("$server")
}

await_service() {
  local service=$1 rrpc=$2
  shift 2
  for _ in $(seq 100); do
    "$rrpc" bench --calls 1 "$@" "$service" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
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
  redis-cli -p "$1" info cpu | awk -F: '/^used_cpu_(sys|user):/ { s += $2 } END { printf "%.3f", s }'
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
