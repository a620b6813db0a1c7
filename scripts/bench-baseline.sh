#!/usr/bin/env bash
# bench-baseline.sh -- what newer features cost the calls that do not use them.
#
# A feature that a call does not use should cost it nothing measurable
# (issue 14's target).  Comparing today's ratios to the floor with an older
# run's does not show it: the machines are shared and their speed drifts.
# So this builds calc-server and rrpc of a baseline commit from this
# checkout's own history (RRPC_BENCH_BASELINE, default 4aa7800: main just
# before schemas, interceptors, progress, cancellation, priorities and
# limits landed) into BUILD_DIR/baseline, serves one service with each
# build on one private Redis, and runs each side's own `rrpc bench`, in
# alternation, RRPC_BENCH_ROUNDS (default 3) rounds of 1 sync caller, 32
# sync callers and 4 x 256 async, RRPC_BENCH_SECONDS (default 4) each.  It
# prints the medians of the per-round ratios today / baseline on stdout.
#
# Usage: scripts/bench-baseline.sh [BUILD_DIR]   (about 2 minutes, build included)
# Without git history (a source tarball) it says so and prints no table.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib/bench-common.sh
. "$here/scripts/lib/bench-common.sh"
BASE=${RRPC_BENCH_BASELINE:-4aa7800}
bdir="$BUILD/baseline"

if [ -z "${RRPC_BENCH_INNER:-}" ]; then
  need rrpc calc-server
  if ! commit=$(git -C "$here" rev-parse --verify -q "$BASE^{commit}"); then
    say "no commit $BASE in this checkout's history: the cost of unused features is not measured"
    exit 0
  fi
  mkdir -p "$out" "$bdir" || exit 1
  if [ "$(cat "$bdir/commit" 2>/dev/null)" != "$commit" ]; then
    say "building calc-server and rrpc of $BASE into $bdir"
    rm -rf "$bdir/src" "$bdir/build" && mkdir -p "$bdir/src" || exit 1
    git -C "$here" archive "$commit" | tar -x -C "$bdir/src" || die "cannot extract $BASE"
    log=$bdir/build.log
    cmake -S "$bdir/src" -B "$bdir/build" >"$log" 2>&1 &&
      cmake --build "$bdir/build" -j "$(nproc)" --target calc-server rrpc_cli >>"$log" 2>&1 ||
      die "cannot build $BASE (see $bdir/build.log)"
    echo "$commit" >"$bdir/commit"
  fi
  export RRPC_BENCH_INNER=1 RRPC_REDIS_TCP=1 RRPC_BENCH_BASE_COMMIT=$commit
  rerun_under with-redis.sh
fi

cd "$here" || exit 1
clear_out
side_cpu=(redis_cpu "$RRPC_TEST_REDIS_PORT")
declare -A server_pid
# serve NAME BIN_DIR: calc-server of BIN_DIR as service NAME.
serve() {
  spawn "$1" "$2/calc-server" --redis "$REDIS_URL" --service "$1"
  server_pid[$1]=$spawned
  await_service "$1" "$2/rrpc" --timeout 0.2
}

serve today "$BUILD"
serve base "$bdir/build"
for r in $(seq 1 "$ROUNDS"); do
  for side in today base; do
    # Each side's own rrpc bench.
    bench_rrpc=$BUILD/rrpc
    [ "$side" = base ] && bench_rrpc=$bdir/build/rrpc
    pid=${server_pid[$side]}
    rrpc_bench "$side.sync1.r$r" "$pid" "$side"
    rrpc_bench "$side.sync32.r$r" "$pid" --connections 32 "$side"
    rrpc_bench "$side.async4.r$r" "$pid" --async --connections 4 --window 256 "$side"
  done
done

report "${RRPC_BENCH_BASE_COMMIT:0:7}" <<'PYEOF'
import sys

from bench_report import Runs, listed, median

R = Runs(sys.argv[1], int(sys.argv[2]))
rounds, base = R.rounds, sys.argv[3]


def get(name):
    """The run NAME, or None when it failed or had errors."""
    r = R.run(name)
    return r if r and not r["errors"] else None


print(f"Today's calc-server and rrpc against those of {base} (before issue 14's call "
      "semantics), same Redis, same run; calls that use none of the newer features:")
print()
print("| setup | today calls/s | baseline calls/s | today / baseline (median) | per round |")
print("| --- | ---: | ---: | ---: | --- |")
for setup, key, what in (("1 sync caller (p50)", "sync1", "p50"),
                         ("32 sync callers", "sync32", "rate"),
                         ("rrpc bench --async, 4 x 256", "async4", "rate")):
    ratios, today, base_rates = [], [], []
    for r in range(1, rounds + 1):
        t, b = get(f"today.{key}.r{r}"), get(f"base.{key}.r{r}")
        if t is None or b is None:
            continue
        today.append(t["rate"])
        base_rates.append(b["rate"])
        # For latency, lower is better: report baseline / today so >1 is faster.
        ratios.append(b[what] / t[what] if what == "p50" else t[what] / b[what])
    if not ratios:
        print(f"| {setup} | (failed) | | | |")
        continue
    print(f"| {setup} | {median(today):,.0f} | {median(base_rates):,.0f} "
          f"| {median(ratios):.3f}x | {listed(ratios)} |")
print()
print("Above 1 is faster than the baseline (for p50: baseline p50 / today's p50).")
PYEOF
