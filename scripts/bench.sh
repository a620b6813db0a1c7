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
LONG_SECONDS=${RRPC_BENCH_LONG_SECONDS:-60}
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib/bench-common.sh
. "$here/scripts/lib/bench-common.sh"

if [ -z "${RRPC_BENCH_INNER:-}" ]; then
  need rrpc calc-server floor/floor_server floor/floor_pipeclient
  mkdir -p "$out" || exit 1
  export RRPC_BENCH_INNER=1 RRPC_REDIS_TCP=1
  rerun_under with-redis.sh
fi

cd "$here" || exit 1
port=$RRPC_TEST_REDIS_PORT
clear_out
side_cpu=(redis_cpu "$port")
pipeclient_bin=$BUILD/floor/floor_pipeclient
kib() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$2/status"; }

say "Redis at $REDIS_URL; ${SECONDS_EACH}s per run, $ROUNDS rounds"
spawn seed "$PY" clients/python/seed_server.py --redis "$REDIS_URL" --service seed
seed_pid=$spawned
spawn floor "$BUILD/floor/floor_server" 127.0.0.1 "$port" floor
floor_pid=$spawned
spawn safe "$BUILD/floor/floor_server" --reply-script 127.0.0.1 "$port" safe
safe_pid=$spawned
spawn calc "$BUILD/calc-server" --redis "$REDIS_URL" --service calc
calc_pid=$spawned
spawn relcalc "$BUILD/calc-server" --redis "$REDIS_URL" --service relcalc --reliable
rel_pid=$spawned
for service in seed floor safe calc relcalc; do
  await_service "$service" "$BUILD/rrpc" --timeout 0.2
done
kib VmRSS "$calc_pid" >"$out/rss_idle.txt"

rrpc_bench seed_sync1 "$seed_pid" seed
rrpc_bench seed_sync32 "$seed_pid" --connections 32 seed
for r in $(seq 1 "$ROUNDS"); do
  rrpc_bench "floor_sync1.r$r" "$floor_pid" floor
  rrpc_bench "safe_sync1.r$r" "$safe_pid" safe
  rrpc_bench "calc_sync1.r$r" "$calc_pid" calc
  rrpc_bench "floor_sync32.r$r" "$floor_pid" --connections 32 floor
  rrpc_bench "safe_sync32.r$r" "$safe_pid" --connections 32 safe
  rrpc_bench "calc_sync32.r$r" "$calc_pid" --connections 32 calc
  rrpc_bench "rel_sync32.r$r" "$rel_pid" --connections 32 relcalc
  pipeclient "floor_pipe4.r$r" "$floor_pid" floor 4 256
  pipeclient "safe_pipe4.r$r" "$safe_pid" safe 4 256
  rrpc_bench "calc_async4.r$r" "$calc_pid" --async --connections 4 --window 256 calc
  rrpc_bench "rel_async4.r$r" "$rel_pid" --async --connections 4 --window 256 relcalc
done
pipeclient floor_pipe1 "$floor_pid" floor 1 256
pipeclient safe_pipe1 "$safe_pid" safe 1 256
rrpc_bench calc_async1 "$calc_pid" --async --connections 1 --window 256 calc
kib VmHWM "$calc_pid" >"$out/hwm.txt"

say "calc_long: rrpc bench --async --connections 4 --window 256 for ${LONG_SECONDS}s, sampling RSS"
"$BUILD/rrpc" bench --json --async --connections 4 --window 256 --duration "$LONG_SECONDS" calc \
  >"$out/calc_long.json" 2>"$out/calc_long.err" &
long_pid=$!
spawned_pids+=("$long_pid")
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

report <<'EOF'
import json, sys

from bench_report import Runs, listed, padded, rate, ratio, x

R = Runs(sys.argv[1], int(sys.argv[2]))
row = padded(3)  # vs floor, vs safe floor, target


def verdict(v, limit, higher_is_better):
    if v is None:
        return "n/a"
    return "met" if (v >= limit if higher_is_better else v <= limit) else "**not met**"


seed1, seed32 = R.run("seed_sync1"), R.run("seed_sync32")
f1, s1, c1 = (R.combined(f"{w}_sync1") for w in ("floor", "safe", "calc"))
f32, s32, c32 = (R.combined(f"{w}_sync32") for w in ("floor", "safe", "calc"))
p4, q4, a4 = (R.combined(n) for n in ("floor_pipe4", "safe_pipe4", "calc_async4"))
p1, q1, a1 = R.run("floor_pipe1"), R.run("safe_pipe1"), R.run("calc_async1")
# Paired per-round ratios: rrpc to the floor and to the safe floor, and the
# safe floor to the floor (what the reply script costs by itself).
r_p50, r_p50_all = R.paired("calc_sync1", "floor_sync1", "p50")
r_32, r_32_all = R.paired("calc_sync32", "floor_sync32", "rate")
r_a4, r_a4_all = R.paired("calc_async4", "floor_pipe4", "rate")
s_p50, s_p50_all = R.paired("calc_sync1", "safe_sync1", "p50")
s_32, s_32_all = R.paired("calc_sync32", "safe_sync32", "rate")
s_a4, s_a4_all = R.paired("calc_async4", "safe_pipe4", "rate")
k_p50, k_p50_all = R.paired("safe_sync1", "floor_sync1", "p50")
k_32, k_32_all = R.paired("safe_sync32", "floor_sync32", "rate")
k_a4, k_a4_all = R.paired("safe_pipe4", "floor_pipe4", "rate")

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
print(f"Rows in bold are medians of {R.rounds} rounds, each run paired with its two floor runs; "
      "the ratios are the medians of the per-round ratios. To the floor: "
      f"(2) {listed(r_p50_all)}; (1) {listed(r_32_all)}; (3) {listed(r_a4_all)}. "
      f"To the safe floor: (2) {listed(s_p50_all)}; (1) {listed(s_32_all)}; "
      f"(3) {listed(s_a4_all)}. The safe floor to the floor (what the reply script costs): "
      f"1 caller p50 {listed(k_p50_all)}; 32 callers {listed(k_32_all)}; "
      f"4 x 256 {listed(k_a4_all)}.")
print()
# Reliable mode against at-most-once, each pair measured one after the
# other in the same round.
l32, la4 = (R.combined(n) for n in ("rel_sync32", "rel_async4"))
l_32, l_32_all = R.paired("rel_sync32", "calc_sync32", "rate")
l_a4, l_a4_all = R.paired("rel_async4", "calc_async4", "rate")
print("Reliable mode (calc-server --reliable) against at-most-once (calc-server), same run:")
print()
print("| setup | calls/s | p50 | p99 | vs at-most-once | target "
      "| CPU us/call: caller / worker / Redis |")
print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
for name, r, v, limit in (("32 sync callers", l32, l_32, 0.9),
                          ("rrpc bench --async, 4 x 256", la4, l_a4, 0.8)):
    padded(2)(f"**reliable, {name}**", r, x(v, 3), f">= {limit}x: {verdict(v, limit, True)}")
print()
print(f"Per-round ratios: 32 sync callers {listed(l_32_all)}; 4 x 256 {listed(l_a4_all)}.")
print()
mib = lambda k: "-" if k is None else f"{k / 1024:.1f} MiB"
kib = lambda name: int(R.read(name).split()[0]) if (R.read(name) or "").strip() else None
hwm = kib("hwm.txt")
print(f"(4) calc-server peak RSS (VmHWM) over all of the runs above, (3) included: {mib(hwm)} "
      f"(idle at start: {mib(kib('rss_idle.txt'))}); target <= 16 MiB: "
      f"{verdict(hwm, 16 * 1024, False)}.")
samples = []
for line in (R.read("rss_long.txt") or "").splitlines():
    t, k = line.split()
    samples.append(f"{t}{'' if t == 'end' else ' s'} {mib(int(k))}")
text = R.read("calc_long.json")
if text:
    j = json.loads(text)
    print(f"RSS during a further {j['duration_s']:.0f} s async 4 x 256 run "
          f"({rate(j['calls_per_s'])} calls/s, {j['errors']} errors): " + ", ".join(samples) +
          f"; VmHWM after it: {mib(kib('hwm_long.txt'))}.")
EOF
