#!/usr/bin/env bash
# bench-amqp.sh -- measures rrpc over RabbitMQ against the AMQP floor and
# prints docs/PERFORMANCE.md's AMQP table.
#
# Starts a private rabbitmq-server (tests/harness/with-rabbitmq.sh) and, on
# it, two AMQP floor workers (bench/amqp_floor_server.c, built into
# BUILD_DIR/floor): the floor (no-ack consumer) and the acked floor
# (--prefetch 1, acked on receipt: what rrpc's reliable worker and its
# at-most-once one before its window do), and
# calc-server --url amqp:// (default workers).  Then RRPC_BENCH_ROUNDS
# (default 3) rounds, RRPC_BENCH_SECONDS (default 4) per run, of:
#   - `rrpc bench --url amqp://` with 1 sync caller and with 32, against the
#     floor, the acked floor and calc-server;
#   - amqp_floor_pipeclient (4 connections x 256 calls in flight, direct
#     reply-to) against both floors, and `rrpc bench --async` against
#     calc-server when the AMQP transport has an async client (else its row
#     says so).
# Each rrpc run is paired with its floors' runs of the same round and the
# ratios are the medians of the per-round ratios (the machine's speed drifts).
# CPU time of caller, worker and broker (beam.smp) per call is accounted for
# every run.  Prints the markdown table on stdout, progress on stderr, keeps
# the raw output in BUILD_DIR/bench-amqp, stops what it started.
#
# Usage: scripts/bench-amqp.sh [BUILD_DIR]     (about 2 minutes)
set -u
BUILD=${1:-build}
here=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "$BUILD" && pwd)
SECONDS_EACH=${RRPC_BENCH_SECONDS:-4}
ROUNDS=${RRPC_BENCH_ROUNDS:-3}
out="$BUILD/bench-amqp"

say() { printf 'bench-amqp: %s\n' "$*" >&2; }
die() {
  say "$*"
  exit 1
}

if [ -z "${RRPC_TEST_AMQP_URL:-}" ]; then
  for f in rrpc calc-server floor/amqp_floor_server floor/amqp_floor_pipeclient; do
    [ -x "$BUILD/$f" ] || die "$BUILD/$f is missing; build first (make build)"
  done
  RRPC_PYTHON=${RRPC_PYTHON:-$("$here/scripts/find-python.sh")} || die "no Python"
  export RRPC_PYTHON
  mkdir -p "$out" || exit 1
  exec "$here/tests/harness/with-rabbitmq.sh" "$here/scripts/bench-amqp.sh" "$BUILD"
fi

cd "$here" || exit 1
url=$RRPC_TEST_AMQP_URL
port=${url##*:}
port=${port%/}
rm -f "$out"/*.json "$out"/*.txt "$out"/*.cpu "$out"/*.err "$out"/*.log
started=()
cleanup() {
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${started[@]}"; do wait "$pid" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_server() {
  local name=$1
  shift
  "$@" >"$out/$name.log" 2>&1 &
  server=$!
  started+=("$server")
}
await_service() {
  for _ in $(seq 100); do
    "$BUILD/rrpc" bench --url "$url" --calls 1 --timeout 0.5 "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "service $1 does not answer (see $out/*.log)"
}

ticks=$(getconf CLK_TCK)
proc_cpu() { awk -v t="$ticks" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat" 2>/dev/null || echo 0; }
broker_pid=$("$RRPC_TEST_AMQP_CTL" eval 'list_to_integer(os:getpid()).' 2>/dev/null | tr -dc 0-9)
[ -n "$broker_pid" ] && [ -r "/proc/$broker_pid/stat" ] || broker_pid=$$ # no broker CPU then
broker_cpu() { proc_cpu "$broker_pid"; }

# measure NAME SERVER_PID COMMAND...: stdout in NAME.json (NAME.txt for the
# floor client), CPU seconds of caller, worker and broker in NAME.cpu.
measure() {
  local name=$1 spid=$2 file
  shift 2
  case $name in *_pipe*) file="$out/$name.txt" ;; *) file="$out/$name.json" ;; esac
  say "$name: ${*#"$BUILD/"}"
  local s0 r0 TIMEFORMAT='%U %S'
  s0=$(proc_cpu "$spid")
  r0=$(broker_cpu)
  { time "$@" >"$file" 2>"$out/$name.err"; } 2>"$out/$name.time" ||
    say "$name: failed or had errors: $(head -c 300 "$out/$name.err")"
  echo "$(cat "$out/$name.time") $s0 $(proc_cpu "$spid") $r0 $(broker_cpu)" >"$out/$name.cpu"
  rm -f "$out/$name.time"
}
bench() {
  local name=$1 spid=$2
  shift 2
  measure "$name" "$spid" "$BUILD/rrpc" bench --url "$url" --json --duration "$SECONDS_EACH" "$@"
}
pipeclient() {
  measure "$1" "$2" "$BUILD/floor/amqp_floor_pipeclient" 127.0.0.1 "$port" "$3" "$4" "$5" \
    "$SECONDS_EACH"
}

say "RabbitMQ at $url; ${SECONDS_EACH}s per run, $ROUNDS rounds; load average $(cut -d' ' -f1-3 /proc/loadavg)"
start_server floor "$BUILD/floor/amqp_floor_server" 127.0.0.1 "$port" floor
floor_pid=$server
start_server acked "$BUILD/floor/amqp_floor_server" --prefetch 1 127.0.0.1 "$port" acked
acked_pid=$server
start_server calc "$BUILD/calc-server" --url "$url" --service calc
calc_pid=$server
for service in floor acked calc; do await_service "$service"; done
async=1
if ! "$BUILD/rrpc" bench --url "$url" --async --calls 10 calc >"$out/async_probe.txt" 2>&1; then
  async=0
  say "no async runs: $(tail -1 "$out/async_probe.txt")"
fi

for r in $(seq 1 "$ROUNDS"); do
  bench "floor_sync1.r$r" "$floor_pid" floor
  bench "acked_sync1.r$r" "$acked_pid" acked
  bench "calc_sync1.r$r" "$calc_pid" calc
  bench "floor_sync32.r$r" "$floor_pid" --connections 32 floor
  bench "acked_sync32.r$r" "$acked_pid" --connections 32 acked
  bench "calc_sync32.r$r" "$calc_pid" --connections 32 calc
  pipeclient "floor_pipe4.r$r" "$floor_pid" floor 4 256
  pipeclient "acked_pipe4.r$r" "$acked_pid" acked 4 256
  [ "$async" = 1 ] && bench "calc_async4.r$r" "$calc_pid" --async --connections 4 --window 256 calc
done
say "load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"

"$RRPC_PYTHON" - "$out" "$ROUNDS" "$async" "$(cat "$out/async_probe.txt" 2>/dev/null | tail -1)" <<'EOF'
import json, os, re, statistics, sys

out, rounds, async_on, async_why = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]


def read(name):
    try:
        with open(os.path.join(out, name)) as f:
            return f.read()
    except OSError:
        return None


def run(name):
    text = read(name + ".json")
    if text is not None:
        try:
            j = json.loads(text)
        except ValueError:
            return None
        r = dict(rate=j["calls_per_s"], p50=j["p50_us"], p99=j["p99_us"], errors=j["errors"],
                 calls=j["calls"])
    else:
        m = re.search(r"calls=(\d+) calls_per_s=([0-9.]+) errors=(\d+)", read(name + ".txt") or "")
        if not m:
            return None
        r = dict(rate=float(m.group(2)), p50=None, p99=None, errors=int(m.group(3)),
                 calls=int(m.group(1)))
    cpu = (read(name + ".cpu") or "").split()
    if len(cpu) == 6 and r["calls"]:
        u, s, w0, w1, b0, b1 = map(float, cpu)
        r["cpu"] = ((u + s) * 1e6 / r["calls"], (w1 - w0) * 1e6 / r["calls"],
                    (b1 - b0) * 1e6 / r["calls"])
    return r


def rounds_of(setup):
    return [run(f"{setup}.r{i}") for i in range(1, rounds + 1)]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def combine(setup):
    runs = [r for r in rounds_of(setup) if r]
    if not runs:
        return None
    c = dict(rate=median(r["rate"] for r in runs), p50=median(r["p50"] for r in runs),
             p99=median(r["p99"] for r in runs), errors=sum(r["errors"] for r in runs))
    with_cpu = [r for r in runs if "cpu" in r]
    if with_cpu:
        calls = sum(r["calls"] for r in with_cpu)
        c["cpu"] = tuple(sum(r["cpu"][k] * r["calls"] for r in with_cpu) / calls for k in range(3))
    return c


def paired(x, y, key):
    ratios = [a[key] / b[key] for a, b in zip(rounds_of(x), rounds_of(y))
              if a and b and a.get(key) and b.get(key)]
    return median(ratios), ratios


rate = lambda v: "-" if v is None else f"{v:,.0f}"
lat = lambda us: "-" if us is None else (f"{us:,.0f} us" if us < 1000 else f"{us / 1000:,.2f} ms")
x = lambda v: "-" if v is None else f"{v:.3f}x"
listed = lambda values: ", ".join(f"{v:.3f}" for v in values) or "-"


def cpu(r):
    return " / ".join(f"{v:.1f}" for v in r["cpu"]) if r and "cpu" in r else "-"


def row(setup, r, ratio="", acked=""):
    if r is None:
        print(f"| {setup} | (failed) | | | | | |")
        return
    errors = f" ({r['errors']} errors)" if r["errors"] else ""
    print(f"| {setup}{errors} | {rate(r['rate'])} | {lat(r['p50'])} | {lat(r['p99'])} | "
          f"{ratio} | {acked} | {cpu(r)} |")


print("| setup (AMQP, RabbitMQ) | calls/s | p50 | p99 | vs AMQP floor | vs acked floor "
      "| CPU us/call: caller / worker / broker |")
print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
r_p50, r_p50_all = paired("calc_sync1", "floor_sync1", "p50")
a_p50, a_p50_all = paired("calc_sync1", "acked_sync1", "p50")
k_p50, _ = paired("acked_sync1", "floor_sync1", "p50")
row("amqp_floor_server, 1 sync caller", combine("floor_sync1"), "1 (floor)")
row("amqp_floor_server --prefetch 1, 1 sync caller", combine("acked_sync1"), x(k_p50) + " p50",
    "1 (acked floor)")
row("**calc-server, 1 sync caller**", combine("calc_sync1"), x(r_p50) + " p50", x(a_p50) + " p50")
r_32, r_32_all = paired("calc_sync32", "floor_sync32", "rate")
a_32, a_32_all = paired("calc_sync32", "acked_sync32", "rate")
k_32, _ = paired("acked_sync32", "floor_sync32", "rate")
row("amqp_floor_server, 32 sync callers", combine("floor_sync32"), "1 (floor)")
row("amqp_floor_server --prefetch 1, 32 sync callers", combine("acked_sync32"), x(k_32),
    "1 (acked floor)")
row("**calc-server, 32 sync callers**", combine("calc_sync32"), x(r_32), x(a_32))
k_a4, _ = paired("acked_pipe4", "floor_pipe4", "rate")
row("amqp_floor_pipeclient + amqp_floor_server, 4 x 256", combine("floor_pipe4"), "1 (floor)")
row("amqp_floor_pipeclient + amqp_floor_server --prefetch 1, 4 x 256", combine("acked_pipe4"),
    x(k_a4), "1 (acked floor)")
r_a4 = a_a4 = None
r_a4_all = a_a4_all = []
if async_on:
    r_a4, r_a4_all = paired("calc_async4", "floor_pipe4", "rate")
    a_a4, a_a4_all = paired("calc_async4", "acked_pipe4", "rate")
    row("**rrpc bench --async + calc-server, 4 x 256**", combine("calc_async4"), x(r_a4), x(a_a4))
else:
    print(f"| rrpc bench --async + calc-server, 4 x 256 | (not run: {async_why.strip()}) "
          "| | | | | |")
print()
print(f"Rows in bold are medians of {rounds} rounds, each run paired with its floors' runs of "
      f"the same round; ratios are medians of the per-round ratios. To the floor: 1 caller p50 "
      f"{listed(r_p50_all)}; 32 callers {listed(r_32_all)}; async {listed(r_a4_all)}. To the "
      f"acked floor: 1 caller p50 {listed(a_p50_all)}; 32 callers {listed(a_32_all)}; async "
      f"{listed(a_a4_all)}.")
EOF
