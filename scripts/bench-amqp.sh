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
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib/bench-common.sh
. "$here/scripts/lib/bench-common.sh"

if [ -z "${RRPC_TEST_AMQP_URL:-}" ]; then
  need rrpc calc-server floor/amqp_floor_server floor/amqp_floor_pipeclient
  mkdir -p "$out" || exit 1
  rerun_under with-rabbitmq.sh
fi

cd "$here" || exit 1
url=$RRPC_TEST_AMQP_URL
port=${url##*:}
port=${port%/}
clear_out
rrpc_args=(--url "$url")
pipeclient_bin=$BUILD/floor/amqp_floor_pipeclient
broker_pid=$("$RRPC_TEST_AMQP_CTL" eval 'list_to_integer(os:getpid()).' 2>/dev/null | tr -dc 0-9)
[ -n "$broker_pid" ] && [ -r "/proc/$broker_pid/stat" ] || broker_pid=$$ # no broker CPU then
side_cpu=(cpu_of "$broker_pid")

say "RabbitMQ at $url; ${SECONDS_EACH}s per run, $ROUNDS rounds; load average $(cut -d' ' -f1-3 /proc/loadavg)"
spawn floor "$BUILD/floor/amqp_floor_server" 127.0.0.1 "$port" floor
floor_pid=$spawned
spawn acked "$BUILD/floor/amqp_floor_server" --prefetch 1 127.0.0.1 "$port" acked
acked_pid=$spawned
spawn calc "$BUILD/calc-server" --url "$url" --service calc
calc_pid=$spawned
for service in floor acked calc; do
  await_service "$service" "$BUILD/rrpc" --url "$url" --timeout 0.5
done
async=1
if ! "$BUILD/rrpc" bench --url "$url" --async --calls 10 calc >"$out/async_probe.txt" 2>&1; then
  async=0
  say "no async runs: $(tail -1 "$out/async_probe.txt")"
fi

for r in $(seq 1 "$ROUNDS"); do
  rrpc_bench "floor_sync1.r$r" "$floor_pid" floor
  rrpc_bench "acked_sync1.r$r" "$acked_pid" acked
  rrpc_bench "calc_sync1.r$r" "$calc_pid" calc
  rrpc_bench "floor_sync32.r$r" "$floor_pid" --connections 32 floor
  rrpc_bench "acked_sync32.r$r" "$acked_pid" --connections 32 acked
  rrpc_bench "calc_sync32.r$r" "$calc_pid" --connections 32 calc
  pipeclient "floor_pipe4.r$r" "$floor_pid" floor 4 256
  pipeclient "acked_pipe4.r$r" "$acked_pid" acked 4 256
  [ "$async" = 1 ] && rrpc_bench "calc_async4.r$r" "$calc_pid" --async --connections 4 --window 256 calc
done
say "load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"

report "$async" "$(cat "$out/async_probe.txt" 2>/dev/null | tail -1)" <<'EOF'
import sys

from bench_report import Runs, listed, padded, x

R = Runs(sys.argv[1], int(sys.argv[2]))
async_on, async_why = sys.argv[3] == "1", sys.argv[4]
row = padded(2)  # vs AMQP floor, vs acked floor

print("| setup (AMQP, RabbitMQ) | calls/s | p50 | p99 | vs AMQP floor | vs acked floor "
      "| CPU us/call: caller / worker / broker |")
print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
r_p50, r_p50_all = R.paired("calc_sync1", "floor_sync1", "p50")
a_p50, a_p50_all = R.paired("calc_sync1", "acked_sync1", "p50")
k_p50, _ = R.paired("acked_sync1", "floor_sync1", "p50")
row("amqp_floor_server, 1 sync caller", R.combined("floor_sync1"), "1 (floor)")
row("amqp_floor_server --prefetch 1, 1 sync caller", R.combined("acked_sync1"),
    x(k_p50, 3) + " p50", "1 (acked floor)")
row("**calc-server, 1 sync caller**", R.combined("calc_sync1"), x(r_p50, 3) + " p50",
    x(a_p50, 3) + " p50")
r_32, r_32_all = R.paired("calc_sync32", "floor_sync32", "rate")
a_32, a_32_all = R.paired("calc_sync32", "acked_sync32", "rate")
k_32, _ = R.paired("acked_sync32", "floor_sync32", "rate")
row("amqp_floor_server, 32 sync callers", R.combined("floor_sync32"), "1 (floor)")
row("amqp_floor_server --prefetch 1, 32 sync callers", R.combined("acked_sync32"), x(k_32, 3),
    "1 (acked floor)")
row("**calc-server, 32 sync callers**", R.combined("calc_sync32"), x(r_32, 3), x(a_32, 3))
k_a4, _ = R.paired("acked_pipe4", "floor_pipe4", "rate")
row("amqp_floor_pipeclient + amqp_floor_server, 4 x 256", R.combined("floor_pipe4"), "1 (floor)")
row("amqp_floor_pipeclient + amqp_floor_server --prefetch 1, 4 x 256", R.combined("acked_pipe4"),
    x(k_a4, 3), "1 (acked floor)")
r_a4 = a_a4 = None
r_a4_all = a_a4_all = []
if async_on:
    r_a4, r_a4_all = R.paired("calc_async4", "floor_pipe4", "rate")
    a_a4, a_a4_all = R.paired("calc_async4", "acked_pipe4", "rate")
    row("**rrpc bench --async + calc-server, 4 x 256**", R.combined("calc_async4"), x(r_a4, 3),
        x(a_a4, 3))
else:
    print(f"| rrpc bench --async + calc-server, 4 x 256 | (not run: {async_why.strip()}) "
          "| | | | | |")
print()
print(f"Rows in bold are medians of {R.rounds} rounds, each run paired with its floors' runs of "
      f"the same round; ratios are medians of the per-round ratios. To the floor: 1 caller p50 "
      f"{listed(r_p50_all)}; 32 callers {listed(r_32_all)}; async {listed(r_a4_all)}. To the "
      f"acked floor: 1 caller p50 {listed(a_p50_all)}; 32 callers {listed(a_32_all)}; async "
      f"{listed(a_a4_all)}.")
EOF
