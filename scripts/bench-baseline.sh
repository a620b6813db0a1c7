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
BUILD=${1:-build}
here=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "$BUILD" && pwd)
BASE=${RRPC_BENCH_BASELINE:-4aa7800}
SECONDS_EACH=${RRPC_BENCH_SECONDS:-4}
ROUNDS=${RRPC_BENCH_ROUNDS:-3}
out="$BUILD/bench-baseline"
bdir="$BUILD/baseline"

say() { printf 'bench-baseline: %s\n' "$*" >&2; }
die() {
  say "$*"
  exit 1
}

if [ -z "${RRPC_BENCH_INNER:-}" ]; then
  for f in rrpc calc-server; do
    [ -x "$BUILD/$f" ] || die "$BUILD/$f is missing; build first (make build)"
  done
  if ! commit=$(git -C "$here" rev-parse --verify -q "$BASE^{commit}"); then
    say "no commit $BASE in this checkout's history: the cost of unused features is not measured"
    exit 0
  fi
  mkdir -p "$out" "$bdir" || exit 1
  if [ "$(cat "$bdir/commit" 2>/dev/null)" != "$commit" ]; then
    say "building calc-server and rrpc of $BASE into $bdir"
    rm -rf "$bdir/src" "$bdir/build" && mkdir -p "$bdir/src" || exit 1
    git -C "$here" archive "$commit" | tar -x -C "$bdir/src" || die "cannot extract $BASE"
    cmake -S "$bdir/src" -B "$bdir/build" >"$out/build.log" 2>&1 &&
      cmake --build "$bdir/build" -j "$(nproc)" --target calc-server rrpc_cli >>"$out/build.log" 2>&1 ||
      die "cannot build $BASE (see $out/build.log)"
    echo "$commit" >"$bdir/commit"
  fi
  export RRPC_BENCH_INNER=1 RRPC_REDIS_TCP=1 RRPC_BENCH_BASE_COMMIT=$commit
  exec "$here/tests/harness/with-redis.sh" "$0" "$BUILD"
fi

cd "$here" || exit 1
PY=${RRPC_PYTHON:-$("$here/scripts/find-python.sh")}
rm -f "$out"/*.json "$out"/*.err
started=()
cleanup() {
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${started[@]}"; do wait "$pid" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# serve NAME BIN_DIR: calc-server of BIN_DIR as service NAME.
serve() {
  "$2/calc-server" --redis "$REDIS_URL" --service "$1" >"$out/$1.log" 2>&1 &
  started+=("$!")
  for _ in $(seq 100); do
    "$2/rrpc" bench --calls 1 --timeout 0.2 "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "service $1 does not answer (see $out/$1.log)"
}
# run NAME BIN_DIR ARGS...: BIN_DIR's rrpc bench, its JSON in NAME.json.
run() {
  local name=$1 dir=$2
  shift 2
  say "$name"
  "$dir/rrpc" bench --json --duration "$SECONDS_EACH" "$@" >"$out/$name.json" 2>"$out/$name.err" ||
    say "$name: failed or had errors: $(head -c 300 "$out/$name.err")"
}

serve today "$BUILD"
serve base "$bdir/build"
for r in $(seq 1 "$ROUNDS"); do
  for side in today base; do
    dir=$BUILD
    [ "$side" = base ] && dir=$bdir/build
    run "$side.sync1.r$r" "$dir" "$side"
    run "$side.sync32.r$r" "$dir" --connections 32 "$side"
    run "$side.async4.r$r" "$dir" --async --connections 4 --window 256 "$side"
  done
done

"$PY" - "$out" "$ROUNDS" "${RRPC_BENCH_BASE_COMMIT:0:7}" <<'PYEOF'
import json, os, statistics, sys

out, rounds, base = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def get(name):
    try:
        with open(os.path.join(out, name + ".json")) as f:
            j = json.load(f)
        return j if not j.get("errors") else None
    except (OSError, ValueError):
        return None


print(f"Today's calc-server and rrpc against those of {base} (before issue 14's call "
      "semantics), same Redis, same run; calls that use none of the newer features:")
print()
print("| setup | today calls/s | baseline calls/s | today / baseline (median) | per round |")
print("| --- | ---: | ---: | ---: | --- |")
for setup, key, what in (("1 sync caller (p50)", "sync1", "p50_us"),
                         ("32 sync callers", "sync32", "calls_per_s"),
                         ("rrpc bench --async, 4 x 256", "async4", "calls_per_s")):
    ratios, today, base_rates = [], [], []
    for r in range(1, rounds + 1):
        t, b = get(f"today.{key}.r{r}"), get(f"base.{key}.r{r}")
        if t is None or b is None:
            continue
        today.append(t["calls_per_s"])
        base_rates.append(b["calls_per_s"])
        # For latency, lower is better: report baseline / today so >1 is faster.
        ratios.append(b[what] / t[what] if what == "p50_us" else t[what] / b[what])
    if not ratios:
        print(f"| {setup} | (failed) | | | |")
        continue
    print(f"| {setup} | {statistics.median(today):,.0f} | {statistics.median(base_rates):,.0f} "
          f"| {statistics.median(ratios):.3f}x | {', '.join(f'{v:.3f}' for v in ratios)} |")
print()
print("Above 1 is faster than the baseline (for p50: baseline p50 / today's p50).")
PYEOF
