#!/bin/sh
# node-deps.sh -- installs the Node peer's dependencies (clients/node) from
# its lockfile, quietly, and prints the node_modules directory.
#
# With no argument, into clients/node itself (node_modules there is ignored
# by git), and only if its `redis` or `amqplib` is missing; with DIR, into DIR (a copy of
# package.json and package-lock.json there, `npm ci` from them), as ctest's
# node_deps fixture does, so that the source tree stays untouched; the tests
# then find the modules through $NODE_PATH.  `npm ci` takes exactly what the
# lockfile says, from npm's cache when it has it; nothing is fetched at run
# time.
#
# Usage: scripts/node-deps.sh [DIR]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
src=$root/clients/node
dir=${1:-$src}
if [ "$dir" = "$src" ] && [ -f "$src/node_modules/redis/package.json" ] &&
  [ -f "$src/node_modules/amqplib/package.json" ]; then
  echo "$src/node_modules"
  exit 0
fi
command -v npm >/dev/null || {
  echo "node-deps.sh: npm is missing (apt-get install nodejs npm, or scripts/install-deps.sh)" >&2
  exit 1
}
mkdir -p "$dir"
if [ "$dir" != "$src" ]; then
  cp "$src/package.json" "$src/package-lock.json" "$dir/"
fi
log=$(mktemp "${TMPDIR:-/tmp}/rrpc-npm-ci.XXXXXX")
if ! (cd "$dir" && npm ci --prefer-offline --no-audit --no-fund --ignore-scripts --loglevel=error) >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  echo "node-deps.sh: npm ci failed in $dir" >&2
  exit 1
fi
rm -f "$log"
echo "$dir/node_modules"
