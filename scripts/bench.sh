#!/usr/bin/env bash
# bench.sh -- measures rrpc against the floor and prints docs/PERFORMANCE.md's table.
#
# Takes the floor programs (bench/, built with everything else into
# BUILD_DIR/floor) and starts a private redis-server on loopback TCP, a
# seed-style Python worker, two floor_servers -- one pushing replies with
# RPUSH + EXPIRE (the floor), one with the reply script (--reply-script, the
# safe floor) -- and calc-server (default workers).
# Then, RRPC_BENCH_SECONDS (default 4) per run:
#   - the seed-style worker with `rrpc bench --sync`, 1 and 32 callers, once;
#   - RRPC_BENCH_ROUNDS (default 3) rounds of nine runs in threes: the floor,
#     the safe floor, then calc-server with 1 sync caller, with 32 sync
#     callers, and floor_pipeclient (against the two floors) then
#     `rrpc bench --async` (against calc-server) with 4 connections x 256
#     calls in flight.  Pairing each run with its floors' and taking the
#     median of the rounds keeps the ratios steady on a shared machine whose
#     speed drifts;
#     Each round also runs calc-server --reliable (service relcalc) with 32
#     sync callers and 4 x 256 async right after at-most-once's: the
#     reliable-mode table gives their paired ratios;
#   - the three 1 x 256 pipelines once, then a longer async run
#     (RRPC_BENCH_LONG_SECONDS, default 60) sampling calc-server's RSS.
# For every run it also accounts the CPU time of the caller, the worker and
# Redis per call.  It prints the markdown table on stdout and progress on
# stderr, keeps every raw output in BUILD_DIR/bench, and stops every process
# it started, whatever happens.
#
# Usage: scripts/bench.sh [BUILD_DIR]     (about 4 minutes)
# The Python interpreter is $RRPC_PYTHON, else scripts/find-python.sh's pick
# (the first python3 on PATH that has the redis module, else /usr/bin/python3).
set -u
BUILD=${1:-build}
here=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "$BUILD" && pwd)
SECONDS_EACH=${RRPC_BENCH_SECONDS:-4}
ROUNDS=${RRPC_BENCH_ROUNDS:-3}
LONG_SECONDS=${RRPC_BENCH_LONG_SECONDS:-60}
out="$BUILD/bench"

say() { printf 'bench: %s\n' "$*" >&2; }
die() {
  say "$*"
  exit 1
}

if [ -z "${RRPC_BENCH_INNER:-}" ]; then
  for f in rrpc calc-server floor/floor_server floor/floor_pipeclient; do
    [ -x "$BUILD/$f" ] || die "$BUILD/$f is missing; build first (make build)"
  done
  RRPC_PYTHON=$("$here/scripts/find-python.sh") || die "no Python to run the seed-style worker"
  mkdir -p "$out" || exit 1
  export RRPC_BENCH_INNER=1 RRPC_REDIS_TCP=1 RRPC_PYTHON
  exec "$here/tests/harness/with-redis.sh" "$0" "$BUILD"
fi

cd "$here" || exit 1
port=$RRPC_TEST_REDIS_PORT
PY=$RRPC_PYTHON
rm -f "$out"/*.json "$out"/*.txt "$out"/*.cpu "$out"/*.err "$out"/*.log
started=()
cleanup() {
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${started[@]}"; do wait "$pid" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server NAME COMMAND...: runs it in the background; sets $server.
start_server() {
  local name=$1
  shift
  "$@" >"$out/$name.log" 2>&1 &
  server=$!
  started+=("$server")
}
# Waits until SERVICE answers add [1, 2].
await_service() {
  for _ in $(seq 100); do
    "$BUILD/rrpc" bench --calls 1 --timeout 0.2 "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "service $1 does not answer (see $out/*.log)"
}

ticks=$(getconf CLK_TCK)
proc_cpu() { awk -v t="$ticks" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; }
redis_cpu() {
  redis-cli -p "$port" info cpu | awk -F: '/^used_cpu_(sys|user):/ { s += $2 } END { printf "%.3f", s }'
}
kib() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$2/status"; }

# measure NAME SERVER_PID COMMAND...: runs COMMAND with its stdout in NAME.json
# (or NAME.txt for the floor client) and the CPU seconds of caller, worker and
# Redis in NAME.cpu.
measure() {
  local name=$1 spid=$2 file
  shift 2
  case $name in *_pipe*) file="$out/$name.txt" ;; *) file="$out/$name.json" ;; esac
  say "$name: ${*#"$BUILD/"}"
  local s0 r0 TIMEFORMAT='%U %S'
  s0=$(proc_cpu "$spid")
  r0=$(redis_cpu)
  { time "$@" >"$file" 2>"$out/$name.err"; } 2>"$out/$name.time" ||
    say "$name: failed or had errors: $(head -c 300 "$out/$name.err")"
  echo "$(cat "$out/$name.time") $s0 $(proc_cpu "$spid") $r0 $(redis_cpu)" >"$out/$name.cpu"
  rm -f "$out/$name.time"
}
bench() {
  local name=$1 spid=$2
  shift 2
  measure "$name" "$spid" "$BUILD/rrpc" bench --json --duration "$SECONDS_EACH" "$@"
}
# pipeclient NAME SERVER_PID QUEUE CLIENTS WINDOW
pipeclient() {
  measure "$1" "$2" "$BUILD/floor/floor_pipeclient" 127.0.0.1 "$port" "$3" "$4" "$5" "$SECONDS_EACH"
}

say "Redis at $REDIS_URL; ${SECONDS_EACH}s per run, $ROUNDS rounds"
start_server seed "$PY" clients/python/seed_server.py --redis "$REDIS_URL" --service seed
seed_pid=$server
start_server floor "$BUILD/floor/floor_server" 127.0.0.1 "$port" floor
floor_pid=$server
start_server safe "$BUILD/floor/floor_server" --reply-script 127.0.0.1 "$port" safe
safe_pid=$server
start_server calc "$BUILD/calc-server" --redis "$REDIS_URL" --service calc
calc_pid=$server
start_server relcalc "$BUILD/calc-server" --redis "$REDIS_URL" --service relcalc --reliable
rel_pid=$server
for service in seed floor safe calc relcalc; do await_service "$service"; done
kib VmRSS "$calc_pid" >"$out/rss_idle.txt"

bench seed_sync1 "$seed_pid" seed
bench seed_sync32 "$seed_pid" --connections 32 seed
for r in $(seq 1 "$ROUNDS"); do
  bench "floor_sync1.r$r" "$floor_pid" floor
  bench "safe_sync1.r$r" "$safe_pid" safe
  bench "calc_sync1.r$r" "$calc_pid" calc
  bench "floor_sync32.r$r" "$floor_pid" --connections 32 floor
  bench "safe_sync32.r$r" "$safe_pid" --connections 32 safe
  bench "calc_sync32.r$r" "$calc_pid" --connections 32 calc
  bench "rel_sync32.r$r" "$rel_pid" --connections 32 relcalc
  pipeclient "floor_pipe4.r$r" "$floor_pid" floor 4 256
  pipeclient "safe_pipe4.r$r" "$safe_pid" safe 4 256
  bench "calc_async4.r$r" "$calc_pid" --async --connections 4 --window 256 calc
  bench "rel_async4.r$r" "$rel_pid" --async --connections 4 --window 256 relcalc
done
pipeclient floor_pipe1 "$floor_pid" floor 1 256
pipeclient safe_pipe1 "$safe_pid" safe 1 256
bench calc_async1 "$calc_pid" --async --connections 1 --window 256 calc
kib VmHWM "$calc_pid" >"$out/hwm.txt"

say "calc_long: rrpc bench --async --connections 4 --window 256 for ${LONG_SECONDS}s, sampling RSS"
"$BUILD/rrpc" bench --json --async --connections 4 --window 256 --duration "$LONG_SECONDS" calc \
  >"$out/calc_long.json" 2>"$out/calc_long.err" &
long_pid=$!
started+=("$long_pid")
: >"$out/rss_long.txt"
for t in $(seq 1 $((LONG_SECONDS - 1))); do
  sleep 1
  kill -0 "$long_pid" 2>/dev/null || break
  if [ "$t" = 1 ] || [ $((t % 5)) = 0 ] || [ "$t" = $((LONG_SECONDS - 1)) ]; then
    echo "$t $(kib VmRSS "$calc_pid")" >>"$out/rss_long.txt"
  fi
done
wait "$long_pid" || say "calc_long: failed or had errors"
echo "end $(kib VmRSS "$calc_pid")" >>"$out/rss_long.txt"
kib VmHWM "$calc_pid" >"$out/hwm_long.txt"

"$PY" - "$out" "$ROUNDS" <<'EOF'
import json, os, re, statistics, sys

out, rounds = sys.argv[1], int(sys.argv[2])


def read(name):
    try:
        with open(os.path.join(out, name)) as f:
            return f.read()
    except OSError:
        return None


def run(name):
    """calls_per_s, p50_us, p99_us, errors, calls, cpu per call (client, worker, redis) in us."""
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
        u, s, w0, w1, r0, r1 = map(float, cpu)
        r["cpu"] = ((u + s) * 1e6 / r["calls"], (w1 - w0) * 1e6 / r["calls"],
                    (r1 - r0) * 1e6 / r["calls"])
    return r


def rounds_of(setup):
    return [run(f"{setup}.r{i}") for i in range(1, rounds + 1)]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def combine(runs):
    """The median of each measure over the rounds; CPU summed over them."""
    runs = [r for r in runs if r]
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
    """Per-round ratios x/y of KEY and their median."""
    ratios = [a[key] / b[key] for a, b in zip(rounds_of(x), rounds_of(y))
              if a and b and a.get(key) and b.get(key)]
    return median(ratios), ratios


def rate(v):
    return "-" if v is None else f"{v:,.0f}"


def lat(us):
    if us is None:
        return "-"
    return f"{us:,.0f} us" if us < 1000 else f"{us / 1000:,.2f} ms"


def cpu(r):
    if not r or "cpu" not in r:
        return "-"
    return " / ".join(f"{v:.1f}" for v in r["cpu"])


def x(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}x"


def verdict(v, limit, higher_is_better):
    if v is None:
        return "n/a"
    return "met" if (v >= limit if higher_is_better else v <= limit) else "**not met**"


def row(setup, r, ratio="", safe="", target=""):
    if r is None:
        print(f"| {setup} | (failed) | | | | | | |")
        return
    errors = f" ({r['errors']} errors)" if r["errors"] else ""
    print(f"| {setup}{errors} | {rate(r['rate'])} | {lat(r['p50'])} | {lat(r['p99'])} | "
          f"{ratio} | {safe} | {target} | {cpu(r)} |")


def listed(values):
    return ", ".join(f"{v:.3f}" for v in values)


seed1, seed32 = run("seed_sync1"), run("seed_sync32")
f1, s1, c1 = (combine(rounds_of(f"{w}_sync1")) for w in ("floor", "safe", "calc"))
f32, s32, c32 = (combine(rounds_of(f"{w}_sync32")) for w in ("floor", "safe", "calc"))
p4, q4, a4 = (combine(rounds_of(n)) for n in ("floor_pipe4", "safe_pipe4", "calc_async4"))
p1, q1, a1 = run("floor_pipe1"), run("safe_pipe1"), run("calc_async1")
# Paired per-round ratios: rrpc to the floor and to the safe floor, and the
# safe floor to the floor (what the reply script costs by itself).
r_p50, r_p50_all = paired("calc_sync1", "floor_sync1", "p50")
r_32, r_32_all = paired("calc_sync32", "floor_sync32", "rate")
r_a4, r_a4_all = paired("calc_async4", "floor_pipe4", "rate")
s_p50, s_p50_all = paired("calc_sync1", "safe_sync1", "p50")
s_32, s_32_all = paired("calc_sync32", "safe_sync32", "rate")
s_a4, s_a4_all = paired("calc_async4", "safe_pipe4", "rate")
k_p50, k_p50_all = paired("safe_sync1", "floor_sync1", "p50")
k_32, k_32_all = paired("safe_sync32", "floor_sync32", "rate")
k_a4, k_a4_all = paired("safe_pipe4", "floor_pipe4", "rate")
ratio = lambda a, b, k: a[k] / b[k] if a and b and a.get(k) and b.get(k) else None

print("| setup | calls/s | p50 | p99 | vs floor | vs safe floor | target "
      "| CPU us/call: caller / worker / Redis |")
print("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
row("seed-style Python worker, 1 sync caller", seed1, x(ratio(seed1, f1, "p50")) + " p50",
    x(ratio(seed1, s1, "p50")) + " p50")
row("seed-style Python worker, 32 sync callers", seed32, x(ratio(seed32, f32, "rate")),
    x(ratio(seed32, s32, "rate")))
row("floor_server, 1 sync caller", f1, "1 (floor)")
row("floor_server --reply-script, 1 sync caller", s1, x(k_p50, 3) + " p50", "1 (safe floor)")
row("**calc-server, 1 sync caller**", c1, x(r_p50, 3) + " p50", x(s_p50, 3) + " p50",
    "(2) p50 <= 1.15x: " + verdict(r_p50, 1.15, False))
row("floor_server, 32 sync callers", f32, "1 (floor)")
row("floor_server --reply-script, 32 sync callers", s32, x(k_32, 3), "1 (safe floor)")
row("**calc-server, 32 sync callers**", c32, x(r_32, 3), x(s_32, 3),
    "(1) >= 0.85x: " + verdict(r_32, 0.85, True))
row("floor_pipeclient + floor_server, 4 x 256", p4, "1 (floor)")
row("floor_pipeclient + floor_server --reply-script, 4 x 256", q4, x(k_a4, 3), "1 (safe floor)")
row("**rrpc bench --async + calc-server, 4 x 256**", a4, x(r_a4, 3), x(s_a4, 3),
    "(3) >= 0.9x: " + verdict(r_a4, 0.9, True))
row("floor_pipeclient + floor_server, 1 x 256", p1, "1 (floor)")
row("floor_pipeclient + floor_server --reply-script, 1 x 256", q1, x(ratio(q1, p1, "rate")),
    "1 (safe floor)")
row("rrpc bench --async + calc-server, 1 x 256", a1, x(ratio(a1, p1, "rate")),
    x(ratio(a1, q1, "rate")))

print()
print(f"Rows in bold are medians of {rounds} rounds, each run paired with its two floor runs; "
      "the ratios are the medians of the per-round ratios. To the floor: "
      f"(2) {listed(r_p50_all)}; (1) {listed(r_32_all)}; (3) {listed(r_a4_all)}. "
      f"To the safe floor: (2) {listed(s_p50_all)}; (1) {listed(s_32_all)}; "
      f"(3) {listed(s_a4_all)}. The safe floor to the floor (what the reply script costs): "
      f"1 caller p50 {listed(k_p50_all)}; 32 callers {listed(k_32_all)}; "
      f"4 x 256 {listed(k_a4_all)}.")
print()
# Reliable mode against at-most-once, each pair measured one after the
# other in the same round.
l32, la4 = (combine(rounds_of(n)) for n in ("rel_sync32", "rel_async4"))
l_32, l_32_all = paired("rel_sync32", "calc_sync32", "rate")
l_a4, l_a4_all = paired("rel_async4", "calc_async4", "rate")
print("Reliable mode (calc-server --reliable) against at-most-once (calc-server), same run:")
print()
print("| setup | calls/s | p50 | p99 | vs at-most-once | target "
      "| CPU us/call: caller / worker / Redis |")
print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
for name, r, v, limit in (("32 sync callers", l32, l_32, 0.9),
                          ("rrpc bench --async, 4 x 256", la4, l_a4, 0.8)):
    if r is None:
        print(f"| reliable, {name} | (failed) | | | | | |")
        continue
    errors = f" ({r['errors']} errors)" if r["errors"] else ""
    print(f"| **reliable, {name}**{errors} | {rate(r['rate'])} | {lat(r['p50'])} | "
          f"{lat(r['p99'])} | {x(v, 3)} | >= {limit}x: {verdict(v, limit, True)} | {cpu(r)} |")
print()
print(f"Per-round ratios: 32 sync callers {listed(l_32_all)}; 4 x 256 {listed(l_a4_all)}.")
print()
mib = lambda k: "-" if k is None else f"{k / 1024:.1f} MiB"
kib = lambda name: int(read(name).split()[0]) if (read(name) or "").strip() else None
hwm = kib("hwm.txt")
print(f"(4) calc-server peak RSS (VmHWM) over all of the runs above, (3) included: {mib(hwm)} "
      f"(idle at start: {mib(kib('rss_idle.txt'))}); target <= 16 MiB: "
      f"{verdict(hwm, 16 * 1024, False)}.")
samples = []
for line in (read("rss_long.txt") or "").splitlines():
    t, k = line.split()
    samples.append(f"{t}{'' if t == 'end' else ' s'} {mib(int(k))}")
text = read("calc_long.json")
if text:
    j = json.loads(text)
    print(f"RSS during a further {j['duration_s']:.0f} s async 4 x 256 run "
          f"({rate(j['calls_per_s'])} calls/s, {j['errors']} errors): " + ", ".join(samples) +
          f"; VmHWM after it: {mib(kib('hwm_long.txt'))}.")
EOF
