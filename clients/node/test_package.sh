#!/usr/bin/env bash
# test_package.sh -- the Node peer as a package (ctest: node_package): a
# copy of this directory without node_modules, `npm ci` there from the
# lockfile (quiet; npm's cache serves it after the first time), then
# `npm test` (node --test) against the private Redis of with-redis.sh,
# including the conformance vectors and check_protocol.py against a Node
# calc server run by the suite.
#
# Needs REDIS_URL: tests/harness/with-redis.sh clients/node/test_package.sh [WORK_DIR]
# (WORK_DIR, default a temp dir, holds the copy; emptied first).
set -eu
: "${REDIS_URL:?run me under tests/harness/with-redis.sh}"
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export RRPC_PYTHON=${RRPC_PYTHON:-$("$root/scripts/find-python.sh")}
if [ $# -ge 1 ]; then
  work=$1
  rm -rf "$work"
  mkdir -p "$work"
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/rrpc-node-package.XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi
tar -C "$here" --exclude=node_modules -cf - . | tar -C "$work" -xf -
"$root/scripts/node-deps.sh" "$work" >/dev/null
echo "installed: rrpc $(node -p 'require(process.argv[1]).version' "$work/package.json"), redis" \
  "$(node -p 'require(process.argv[1]).version' "$work/node_modules/redis/package.json")"
cd "$work"
RRPC_ROOT=$root RRPC_VERSION_FILE=$root/VERSION npm test --silent
